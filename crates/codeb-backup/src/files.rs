//! Weekly file-system backup of codeb's own state: the daemon's SQLite database (projects
//! registry, tokens, audit) through SQLite's online backup API, and the configured paths
//! (`/etc/codeb`, the manifest, `.codeb/` state, project volume directories) copied as they
//! are. Built in `<files_dir>/.partial-<stamp>`, then renamed to `<files_dir>/<stamp>`; a
//! `SHA256SUMS` lists every file, and the run records the SHA-256 of that list.

use std::path::{Path, PathBuf};

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
            message: Some(format!("{} files", files.len())),
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
