//! Weekly file-system backup of codeb's own state and the project volumes: the daemon's
//! SQLite database (projects registry, tokens, audit) through SQLite's online backup API, the
//! configured paths (`/etc/codeb`, the manifest, `.codeb/` state) copied as they are, and
//! every project volume podman knows (labelled `codeb.project`, or mounted by a container
//! labelled `codeb.project`), each as `volumes/<name>.tar` from `podman volume export`
//! (owners, modes, links kept) with `volumes.json` naming its project and labels. Built in
//! `<files_dir>/.partial-<stamp>`, then renamed to `<files_dir>/<stamp>`; a `SHA256SUMS`
//! lists every file, and the run records the SHA-256 of that list.
//!
//! [`restore_volume`] puts a volume back with `podman volume import`, after checking its
//! tar against `SHA256SUMS`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use codeb_runtime::Cmd;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::Error;
use crate::catalog::{Catalog, Outcome};
use crate::config::{Config, Kind};
use crate::pitr::{hex, sha256_file};

pub fn backup(cfg: &Config, catalog: &Catalog) -> Result<Outcome, Error> {
    let id = catalog.start(Kind::Files, "state")?;
    let r = run(cfg);
    match r {
        Ok(o) => {
            catalog.finish(id, true, &o)?;
            prune(cfg, catalog)?;
            Ok(o)
        }
        Err(e) => {
            catalog.finish(
                id,
                false,
                &Outcome {
                    message: Some(e.to_string()),
                    ..Outcome::default()
                },
            )?;
            Err(e)
        }
    }
}

fn run(cfg: &Config) -> Result<Outcome, Error> {
    std::fs::create_dir_all(&cfg.files_dir)?;
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ").to_string();
    let partial = cfg.files_dir.join(format!(".partial-{stamp}"));
    let done = cfg.files_dir.join(&stamp);
    let r = (|| -> Result<Outcome, Error> {
        std::fs::create_dir(&partial)?;
        if let Some(db) = &cfg.state.registry_db {
            if db.exists() {
                let src = rusqlite::Connection::open_with_flags(
                    db,
                    rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
                )?;
                let mut dst = rusqlite::Connection::open(partial.join("registry.sqlite"))?;
                let b = rusqlite::backup::Backup::new(&src, &mut dst)?;
                b.run_to_completion(256, std::time::Duration::from_millis(5), None)?;
            } else {
                return Err(Error::Failed(format!(
                    "the registry database {} does not exist (state.registry_db)",
                    db.display()
                )));
            }
        }
        let volumes = if cfg.state.volumes {
            export_volumes(&partial.join("volumes"))?
        } else {
            Vec::new()
        };
        for p in &cfg.state.paths {
            if !p.exists() {
                return Err(Error::Failed(format!(
                    "{} does not exist (state.paths); remove it from the config or create it",
                    p.display()
                )));
            }
            let rel = p.strip_prefix("/").unwrap_or(p);
            copy_tree(p, &partial.join("root").join(rel))?;
        }
        let mut files = Vec::new();
        list(&partial, &partial, &mut files)?;
        files.sort();
        let mut sums = String::new();
        let mut size = 0u64;
        for f in &files {
            let full = partial.join(f);
            size += std::fs::metadata(&full)?.len();
            sums.push_str(&format!("{}  {}\n", sha256_file(&full)?, f.display()));
        }
        codeb_host::atomic::write(&partial.join("SHA256SUMS"), sums.as_bytes(), 0o600)?;
        std::fs::File::open(&partial)?.sync_all()?;
        std::fs::rename(&partial, &done)?;
        std::fs::File::open(&cfg.files_dir)?.sync_all()?;
        Ok(Outcome {
            size_bytes: i64::try_from(size).ok(),
            sha256: Some(hex(&Sha256::digest(sums.as_bytes()))),
            location: Some(done.display().to_string()),
            message: Some(if volumes.is_empty() {
                format!("{} files, no project volumes", files.len())
            } else {
                format!(
                    "{} files, volumes {}",
                    files.len(),
                    volumes
                        .iter()
                        .map(|v| v.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }),
        })
    })();
    if r.is_err() {
        let _ = std::fs::remove_dir_all(&partial);
    }
    r
}

fn copy_tree(src: &Path, dst: &Path) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::symlink_metadata(src)?;
    if let Some(parent) = dst.parent() {
        std::fs::create_dir_all(parent)?;
    }
    if meta.is_dir() {
        std::fs::create_dir_all(dst)?;
        std::fs::set_permissions(
            dst,
            std::fs::Permissions::from_mode(meta.permissions().mode() & 0o7777),
        )?;
        for e in std::fs::read_dir(src)? {
            let e = e?;
            copy_tree(&e.path(), &dst.join(e.file_name()))?;
        }
    } else if meta.file_type().is_symlink() {
        std::os::unix::fs::symlink(std::fs::read_link(src)?, dst)?;
    } else if meta.is_file() {
        // std::fs::copy keeps the permission bits (secrets stay 0600).
        std::fs::copy(src, dst)?;
        std::fs::File::open(dst)?.sync_all()?;
    }
    Ok(())
}

fn list(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), Error> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let t = e.file_type()?;
        if t.is_dir() {
            list(root, &e.path(), out)?;
        } else if t.is_file() {
            out.push(
                e.path()
                    .strip_prefix(root)
                    .map(Path::to_owned)
                    .unwrap_or_else(|_| e.path()),
            );
        }
    }
    Ok(())
}

fn prune(cfg: &Config, catalog: &Catalog) -> Result<(), Error> {
    let runs = catalog.list(Some(Kind::Files), None, 10_000)?;
    let keep = usize::try_from(cfg.files_retention).unwrap_or(usize::MAX);
    for r in runs
        .iter()
        .filter(|r| r.result == "ok" && r.location.is_some())
        .skip(keep)
    {
        if let Some(loc) = &r.location {
            let _ = std::fs::remove_dir_all(loc);
        }
        catalog.pruned(r.id)?;
    }
    Ok(())
}

/// A project volume in a file-system backup (`volumes.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeEntry {
    pub name: String,
    /// The `codeb.project` of the volume or of a container mounting it.
    pub project: String,
    pub labels: BTreeMap<String, String>,
    /// `volumes/<name>.tar`, relative to the backup.
    pub file: String,
}

fn podman() -> Cmd {
    Cmd::new("podman").timeout(Duration::from_secs(12 * 3600))
}

fn podman_json(what: &str, args: &[&str]) -> Result<serde_json::Value, Error> {
    let out = crate::pg::run(what, podman().args(args.iter().copied()))?;
    if out.trim().is_empty() {
        return Ok(serde_json::Value::Array(Vec::new()));
    }
    serde_json::from_str(&out).map_err(|e| Error::Tool {
        what: what.into(),
        message: format!("unexpected output ({e})"),
    })
}

fn labels_of(v: &serde_json::Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// The project volumes podman knows: labelled `codeb.project`, or mounted by a container
/// labelled `codeb.project` (any state). Sorted by name.
pub fn project_volumes() -> Result<Vec<VolumeEntry>, Error> {
    let vols = podman_json("podman volume ls", &["volume", "ls", "--format", "json"])?;
    let mut known: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for v in vols.as_array().into_iter().flatten() {
        if let Some(n) = v["Name"].as_str() {
            known.insert(n.to_owned(), labels_of(&v["Labels"]));
        }
    }
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for (name, labels) in &known {
        if let Some(p) = labels.get("codeb.project").filter(|p| !p.is_empty()) {
            out.insert(name.clone(), p.clone());
        }
    }
    let ids = crate::pg::run(
        "podman ps",
        podman().args([
            "ps",
            "-a",
            "--filter",
            "label=codeb.project",
            "--format",
            "{{.ID}}",
        ]),
    )?;
    // One at a time: a container removed meanwhile (a deploy replacing its release) is
    // skipped, not a failed backup.
    for id in ids.split_whitespace() {
        let c = match podman_json(
            "podman container inspect",
            &["container", "inspect", "--format", "json", id],
        ) {
            Ok(c) => c,
            Err(e) if e.to_string().contains("no such container") => continue,
            Err(e) => return Err(e),
        };
        for c in c.as_array().into_iter().flatten() {
            let project = labels_of(&c["Config"]["Labels"])
                .get("codeb.project")
                .cloned()
                .unwrap_or_default();
            if project.is_empty() {
                continue;
            }
            for m in c["Mounts"].as_array().into_iter().flatten() {
                if m["Type"] == "volume"
                    && let Some(n) = m["Name"].as_str()
                    && known.contains_key(n)
                {
                    out.entry(n.to_owned()).or_insert_with(|| project.clone());
                }
            }
        }
    }
    Ok(out
        .into_iter()
        .map(|(name, project)| VolumeEntry {
            labels: known.get(&name).cloned().unwrap_or_default(),
            file: format!("volumes/{name}.tar"),
            name,
            project,
        })
        .collect())
}

/// `podman volume export` of every project volume into `dir`, with `volumes.json` beside it.
fn export_volumes(dir: &Path) -> Result<Vec<VolumeEntry>, Error> {
    let vols = project_volumes()?;
    if vols.is_empty() {
        return Ok(vols);
    }
    std::fs::create_dir_all(dir)?;
    for v in &vols {
        let tar = dir.join(format!("{}.tar", v.name));
        crate::pg::run(
            &format!("podman volume export {}", v.name),
            podman()
                .args(["volume", "export", "--output"])
                .arg(&tar)
                .arg(&v.name),
        )?;
        std::fs::File::open(&tar)?.sync_all()?;
    }
    let text = serde_json::to_string_pretty(&vols).unwrap_or_default();
    let parent = dir.parent().unwrap_or(dir);
    codeb_host::atomic::write(&parent.join("volumes.json"), text.as_bytes(), 0o600)?;
    Ok(vols)
}

/// What [`restore_volume`] did.
#[derive(Debug, Clone, Serialize)]
pub struct VolumeRestore {
    pub volume: String,
    pub into: String,
    pub backup: String,
    pub sha256: String,
    pub size_bytes: u64,
}

/// Puts volume `name` from a file-system backup (`from`: its directory; default the newest
/// good one) into volume `into` (default `name`): checked against `SHA256SUMS` first, then
/// `podman volume import` into a new (created with the original labels) or empty volume. A
/// volume holding data is never overwritten or removed.
pub fn restore_volume(
    catalog: &Catalog,
    name: &str,
    from: Option<&Path>,
    into: Option<&str>,
) -> Result<VolumeRestore, Error> {
    let backup = match from {
        Some(p) => p.to_owned(),
        None => catalog
            .list(Some(Kind::Files), None, 10_000)?
            .into_iter()
            .find(|r| r.result == "ok" && r.location.is_some())
            .and_then(|r| r.location)
            .map(PathBuf::from)
            .ok_or_else(|| {
                Error::OutOfRange("no good file-system backup is recorded: run `codeb-backup files` first, or pass --from <backup dir>".into())
            })?,
    };
    let entries: Vec<VolumeEntry> = std::fs::read(backup.join("volumes.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let entry = entries.iter().find(|e| e.name == name).ok_or_else(|| {
        Error::Usage(format!(
            "the backup {} holds no volume {name:?}; it holds: {}",
            backup.display(),
            if entries.is_empty() {
                "none".to_owned()
            } else {
                entries
                    .iter()
                    .map(|e| e.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        ))
    })?;
    let into = into.unwrap_or(name);
    if into.is_empty()
        || !into
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
    {
        return Err(Error::Usage(format!(
            "--into {into:?} is not a volume name: letters, digits, `_`, `.`, `-`"
        )));
    }
    // The tar must be the one SHA256SUMS lists.
    let tar = backup.join(&entry.file);
    let sums = std::fs::read_to_string(backup.join("SHA256SUMS")).map_err(|e| {
        Error::Failed(format!(
            "{}/SHA256SUMS: {e}; not a complete file-system backup",
            backup.display()
        ))
    })?;
    let want = sums
        .lines()
        .find_map(|l| {
            l.split_once("  ")
                .filter(|(_, f)| *f == entry.file)
                .map(|(h, _)| h.to_owned())
        })
        .ok_or_else(|| {
            Error::Failed(format!(
                "{}/SHA256SUMS does not list {}; refusing to restore from it",
                backup.display(),
                entry.file
            ))
        })?;
    let got = sha256_file(&tar)?;
    if got != want {
        return Err(Error::Checksum {
            path: tar,
            want,
            got,
        });
    }
    let id = catalog.start(Kind::Restore, &format!("volume:{into}"))?;
    let r = (|| -> Result<(), Error> {
        let exists = crate::pg::run(
            "podman volume exists",
            podman().args(["volume", "ls", "--format", "{{.Name}}"]),
        )?
        .lines()
        .any(|l| l.trim() == into);
        if exists {
            let mp = crate::pg::run(
                "podman volume inspect",
                podman().args(["volume", "inspect", "--format", "{{.Mountpoint}}", into]),
            )?;
            let has_data = std::fs::read_dir(mp.trim())
                .map(|mut d| d.next().is_some())
                .unwrap_or(true);
            if has_data {
                // Never removed here: a failed import would lose both copies.
                return Err(Error::Usage(format!(
                    "volume {into} exists and holds data; restore --into <new volume> (and point the app at it), or remove it first (`podman volume rm {into}`, after stopping what uses it) to replace it"
                )));
            }
        }
        if !exists {
            let mut c = podman().args(["volume", "create"]);
            for (k, v) in &entry.labels {
                c = c.arg("--label").arg(format!("{k}={v}"));
            }
            crate::pg::run(&format!("podman volume create {into}"), c.arg(into))?;
        }
        crate::pg::run(
            &format!("podman volume import {into}"),
            podman().args(["volume", "import", into]).arg(&tar),
        )?;
        Ok(())
    })();
    let size = std::fs::metadata(&tar).map(|m| m.len()).unwrap_or(0);
    match r {
        Ok(()) => {
            catalog.finish(
                id,
                true,
                &Outcome {
                    size_bytes: i64::try_from(size).ok(),
                    sha256: Some(got.clone()),
                    location: Some(into.to_owned()),
                    message: Some(format!("volume {name} from {}", backup.display())),
                },
            )?;
            Ok(VolumeRestore {
                volume: name.to_owned(),
                into: into.to_owned(),
                backup: backup.display().to_string(),
                sha256: got,
                size_bytes: size,
            })
        }
        Err(e) => {
            catalog.finish(
                id,
                false,
                &Outcome {
                    message: Some(e.to_string()),
                    ..Outcome::default()
                },
            )?;
            Err(e)
        }
    }
}
