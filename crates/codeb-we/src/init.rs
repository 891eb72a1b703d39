//! `we workflow init` and `we project remove`: the server provisions (through
//! `POST /api/v1/projects/{name}/init`), then the local side is written in the project's
//! directory: the workflow through codeb-workflow-gen's library, and `.env` (0600, written
//! atomically) with codeb's keys updated in place, the user's own keys kept and the previous
//! file saved as `.env.bak` (0600). Secrets reach `.env` only: never stdout, stderr or
//! `--json`.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use codeb_api::{InitReport, InitRequest, RemoveReport, RemoveRequest, paths};
use codeb_core::ProjectName;
use codeb_workflow_gen::{OnDisk, Options, TemplateSet};
use serde::Serialize;

use crate::cli::InitArgs;
use crate::client::Api;
use crate::exit::{Exit, WeError};
use crate::output::{Cell, Out, Style};

/// Every key codeb writes into `.env` (the manual's list).
pub const ENV_KEYS: [&str; 9] = [
    "NODE_ENV",
    "PORT",
    "DATABASE_URL",
    "REDIS_URL",
    "REDIS_PREFIX",
    "CENTRIFUGO_URL",
    "CENTRIFUGO_API_URL",
    "CENTRIFUGO_API_KEY",
    "CENTRIFUGO_SECRET",
];

/// What `--json` prints: the report without the values of `.env`.
#[derive(Serialize)]
struct InitJson<'a> {
    project: &'a str,
    dry_run: bool,
    steps: &'a [codeb_api::InitStep],
    ports: &'a BTreeMap<String, u16>,
    redis_db: Option<u8>,
    redis_prefix: Option<&'a str>,
    /// The keys written into `.env` (never their values).
    env_keys: Vec<&'a str>,
    files: Vec<FileResult>,
    warnings: Vec<String>,
    next: &'a str,
}

#[derive(Serialize)]
struct FileResult {
    path: String,
    state: String,
}

/// The GitHub `owner/name` of `dir`'s `origin` remote, read from `.git/config` (no git
/// process); `Err` says why it is unknown.
pub fn repository(dir: &Path) -> Result<String, String> {
    let git = dir.join(".git");
    let config = if git.is_dir() {
        git.join("config")
    } else {
        return Err(format!("{} is not a git repository", dir.display()));
    };
    let text = fs::read_to_string(&config)
        .map_err(|e| format!("cannot read {}: {e}", config.display()))?;
    let mut in_origin = false;
    let mut url = None;
    for line in text.lines() {
        let l = line.trim();
        if l.starts_with('[') {
            in_origin = l == "[remote \"origin\"]";
            continue;
        }
        if in_origin
            && let Some((k, v)) = l.split_once('=')
            && k.trim() == "url"
        {
            url = Some(v.trim().to_owned());
        }
    }
    let url = url.ok_or_else(|| "the repository has no `origin` remote".to_owned())?;
    github_repo(&url).ok_or_else(|| format!("the origin remote {url} is not a GitHub repository"))
}

/// `owner/name` of a GitHub remote URL (https, ssh or scp-like).
pub fn github_repo(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("https://github.com/")
        .or_else(|| url.strip_prefix("http://github.com/"))
        .or_else(|| url.strip_prefix("ssh://git@github.com/"))
        .or_else(|| url.strip_prefix("git@github.com:"))
        .or_else(|| url.strip_prefix("git://github.com/"))?;
    let rest = rest.trim_end_matches('/');
    let rest = rest.strip_suffix(".git").unwrap_or(rest);
    let (o, n) = rest.split_once('/')?;
    let part = |s: &str| {
        !s.is_empty()
            && s.len() <= 100
            && s != "."
            && s != ".."
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    };
    (part(o) && part(n)).then(|| format!("{o}/{n}"))
}

/// `existing` (an env file's text) with codeb's `values` set: a key already there is
/// updated in place (`export KEY=` kept), the others are appended in order; every other
/// line, comments and the user's keys, stays as it was.
pub fn merge_env(existing: &str, values: &[(String, String)]) -> String {
    let mut done = vec![false; values.len()];
    let mut out = String::with_capacity(existing.len() + 512);
    for line in existing.split_inclusive('\n') {
        let body = line.trim_end_matches(['\n', '\r']);
        let t = body.trim_start();
        let (export, kv) = match t.strip_prefix("export ") {
            Some(r) => (true, r.trim_start()),
            None => (false, t),
        };
        let key = kv.split_once('=').map(|(k, _)| k.trim());
        match key.and_then(|k| values.iter().position(|(vk, _)| vk == k)) {
            Some(i) if !t.starts_with('#') => {
                if !done[i] {
                    let (k, v) = &values[i];
                    out.push_str(if export { "export " } else { "" });
                    out.push_str(&format!("{k}={v}\n"));
                    done[i] = true;
                }
                // A second line of the same key is dropped: one value per key.
            }
            _ => {
                out.push_str(body);
                out.push('\n');
            }
        }
    }
    for (i, (k, v)) in values.iter().enumerate() {
        if !done[i] {
            out.push_str(&format!("{k}={v}\n"));
        }
    }
    out
}

/// Writes `text` to `path` atomically with mode 0600.
fn write_private(path: &Path, text: &str, mode: u32) -> Result<(), WeError> {
    let io = |what: &str, e: std::io::Error| {
        WeError::Io(format!("cannot {what} {}: {e}", path.display()))
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&dir).map_err(|e| io("create the directory of", e))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".codeb-")
        .suffix(".tmp")
        .tempfile_in(&dir)
        .map_err(|e| io("create a temp file beside", e))?;
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(mode))
        .map_err(|e| io("set the mode of", e))?;
    tmp.write_all(text.as_bytes())
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| io("write", e))?;
    tmp.persist(path).map_err(|e| io("replace", e.error))?;
    fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("sync the directory of", e))
}

/// The project's `.env`: merged, the old one kept as `.env.bak`; returns the state.
fn write_env(dir: &Path, values: &[(String, String)]) -> Result<String, WeError> {
    let path = dir.join(".env");
    let old = match fs::read_to_string(&path) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(WeError::Io(format!("cannot read {}: {e}", path.display()))),
    };
    let new = merge_env(old.as_deref().unwrap_or(""), values);
    let mode_ok = fs::metadata(&path).is_ok_and(|m| m.permissions().mode() & 0o777 == 0o600);
    match &old {
        Some(o) if *o == new && mode_ok => return Ok("exists".into()),
        Some(o) => write_private(&dir.join(".env.bak"), o, 0o600)?,
        None => {}
    }
    write_private(&path, &new, 0o600)?;
    Ok(if old.is_some() { "updated" } else { "created" }.into())
}

/// The workflow through codeb-workflow-gen's library; a file edited by hand or not
/// generated is left alone (with a warning).
fn write_workflow(
    dir: &Path,
    opts: &Options,
    set: &TemplateSet,
    warnings: &mut Vec<String>,
) -> Result<FileResult, WeError> {
    let text = codeb_workflow_gen::render(opts, set)
        .map_err(|e| WeError::Usage(format!("cannot generate the workflow: {e}")))?;
    let rel = format!(".github/workflows/{}-deploy.yml", opts.project);
    let path = dir.join(&rel);
    let existing = fs::read_to_string(&path).ok();
    let state = match codeb_workflow_gen::inspect(existing.as_deref(), &text) {
        OnDisk::UpToDate => "exists",
        OnDisk::Missing | OnDisk::Stale => {
            write_private(&path, &text, 0o644)?;
            if existing.is_some() {
                "updated"
            } else {
                "created"
            }
        }
        d @ (OnDisk::HandEdited | OnDisk::NotGenerated) => {
            warnings.push(format!(
                "{rel} is {} and was left alone; regenerate it with `codeb-workflow-gen --project {} --type {} --force`",
                d.as_str(),
                opts.project,
                opts.kind
            ));
            "left alone"
        }
    };
    Ok(FileResult {
        path: rel,
        state: state.into(),
    })
}

pub async fn init(a: InitArgs, api: Result<Api, WeError>, out: &Out) -> Result<Exit, WeError> {
    let project = ProjectName::new(&a.project)
        .map_err(|e| WeError::Usage(format!("project `{}`: {e}", a.project)))?;
    let set = TemplateSet::embedded()
        .map_err(|e| WeError::Io(format!("the embedded workflow templates: {e}")))?;
    if set.type_spec(&a.kind).is_none() {
        let known: Vec<&str> = set.types().map(|(k, _)| k).collect();
        return Err(WeError::Usage(format!(
            "--type {:?} is not a type codeb-workflow-gen knows; use one of: {}",
            a.kind,
            known.join(", ")
        )));
    }
    let dir = match &a.dir {
        Some(d) => d.clone(),
        None => std::env::current_dir()
            .map_err(|e| WeError::Io(format!("cannot read the current directory: {e}")))?,
    };
    if !dir.is_dir() {
        return Err(WeError::Usage(format!(
            "--dir {} is not a directory",
            dir.display()
        )));
    }
    let mut warnings = Vec::new();
    let repository = match repository(&dir) {
        Ok(r) => Some(r),
        Err(why) => {
            warnings.push(format!(
                "{why}: the project's repository is unknown (init provisions anyway; deploys from GitHub need it)"
            ));
            None
        }
    };
    let redis = a.redis || a.redis_prefix;
    let req = InitRequest {
        kind: a.kind.clone(),
        repository,
        database: a.database,
        redis,
        redis_prefix: a.redis_prefix,
        container_port: a.container_port,
        health_path: a.health_path.clone(),
        dry_run: a.dry_run,
        rotate_secrets: a.rotate_secrets,
    };
    let api = api?;
    let report: InitReport = {
        let _p = out.progress(if a.dry_run {
            "planning"
        } else {
            "provisioning on the server"
        });
        api.post(&paths::init(project.as_str()), &req).await?
    };
    warnings.extend(report.warnings.iter().cloned());
    let mut files = Vec::new();
    if !a.dry_run {
        let mut opts = Options::new(project.clone(), &a.kind);
        opts.database = a.database;
        opts.redis = redis;
        files.push(write_workflow(&dir, &opts, &set, &mut warnings)?);
        let values: Vec<(String, String)> = ENV_KEYS
            .iter()
            .filter_map(|k| report.env.get(*k).map(|v| ((*k).to_owned(), v.clone())))
            .collect();
        let state = write_env(&dir, &values)?;
        files.push(FileResult {
            path: ".env".into(),
            state,
        });
    }
    let next = if a.dry_run {
        "run it again without --dry-run"
    } else {
        "commit the workflow and push: git push"
    };
    // Make sure no value of `.env` reaches the output, whatever the server put elsewhere.
    let scrub = |s: &str| {
        let mut s = s.to_owned();
        for v in report.env.values().filter(|v| v.len() >= 16) {
            s = s.replace(v.as_str(), "***");
        }
        s
    };
    let warnings: Vec<String> = warnings.iter().map(|w| scrub(w)).collect();
    if out.json {
        out.json_line(&InitJson {
            project: &report.project,
            dry_run: report.dry_run,
            steps: &report.steps,
            ports: &report.ports,
            redis_db: report.redis_db,
            redis_prefix: report.redis_prefix.as_deref(),
            env_keys: ENV_KEYS
                .iter()
                .copied()
                .filter(|k| report.env.contains_key(*k))
                .collect(),
            files,
            warnings,
            next,
        })?;
        return Ok(Exit::Ok);
    }
    for w in &warnings {
        out.warn(w);
    }
    let style = |s: &str| match s {
        "exists" => Style::Plain,
        "create" | "update" => Style::Warn,
        _ => Style::Good,
    };
    let mut rows: Vec<Vec<Cell>> = report
        .steps
        .iter()
        .map(|s| {
            vec![
                s.step.clone().into(),
                scrub(&s.target).into(),
                Cell::new(s.state.clone(), style(&s.state)),
            ]
        })
        .collect();
    for f in &files {
        rows.push(vec![
            "file".into(),
            f.path.clone().into(),
            Cell::new(f.state.clone(), style(&f.state)),
        ]);
    }
    out.table(&["step", "target", "state"], &rows)?;
    if !a.dry_run && !report.changed() && files.iter().all(|f| f.state == "exists") {
        out.info(&format!("`{project}` is set up already: nothing changed"));
    }
    out.info(&format!("next: {next}"));
    Ok(Exit::Ok)
}

pub async fn remove(
    project: &str,
    yes: bool,
    api: Result<Api, WeError>,
    out: &Out,
) -> Result<Exit, WeError> {
    let project = ProjectName::new(project)
        .map_err(|e| WeError::Usage(format!("project `{project}`: {e}")))?;
    if !yes {
        return Err(WeError::Usage(format!(
            "removing `{project}` drops its databases (after a final dump), role and Redis ACL user and frees its ports: pass --yes to do it"
        )));
    }
    let api = api?;
    let r: RemoveReport = {
        let _p = out.progress("dumping and removing");
        api.post(&paths::remove(project.as_str()), &RemoveRequest { yes })
            .await?
    };
    if out.json {
        out.json_line(&r)?;
        return Ok(Exit::Ok);
    }
    let rows: Vec<Vec<Cell>> = r
        .steps
        .iter()
        .map(|s| {
            vec![
                s.step.clone().into(),
                s.target.clone().into(),
                s.state.clone().into(),
            ]
        })
        .collect();
    out.table(&["step", "target", "state"], &rows)?;
    for d in &r.dumps {
        out.info(&format!("final dump: {d}"));
    }
    Ok(Exit::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn github_remotes_of_every_form() {
        for u in [
            "https://github.com/acme/shop.git",
            "https://github.com/acme/shop",
            "git@github.com:acme/shop.git",
            "ssh://git@github.com/acme/shop.git",
        ] {
            assert_eq!(github_repo(u).as_deref(), Some("acme/shop"), "{u}");
        }
        assert_eq!(github_repo("https://gitlab.com/acme/shop"), None);
        assert_eq!(github_repo("https://github.com/acme/../x"), None);
    }

    #[test]
    fn merge_keeps_user_keys_and_updates_codeb_keys_in_place() {
        let old =
            "# mine\nAPP_NAME=shop\nexport PORT=1\nDATABASE_URL=old\nDATABASE_URL=dup\nEXTRA=1\n";
        let v = vec![
            ("PORT".to_owned(), "3000".to_owned()),
            ("DATABASE_URL".to_owned(), "postgresql://x".to_owned()),
            ("REDIS_URL".to_owned(), "redis://y".to_owned()),
        ];
        let m = merge_env(old, &v);
        assert_eq!(
            m,
            "# mine\nAPP_NAME=shop\nexport PORT=3000\nDATABASE_URL=postgresql://x\nEXTRA=1\nREDIS_URL=redis://y\n"
        );
        assert_eq!(merge_env(&m, &v), m, "merging again changes nothing");
        assert_eq!(
            merge_env("", &v),
            "PORT=3000\nDATABASE_URL=postgresql://x\nREDIS_URL=redis://y\n"
        );
    }
}
