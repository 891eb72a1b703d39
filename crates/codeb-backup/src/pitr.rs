//! pgBackRest: setup (its config, PostgreSQL's archive settings, `stanza-create`, `check`),
//! full/differential backups, the WAL check, and `pgbackrest info`.

use std::path::Path;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::catalog::{Catalog, Outcome};
use crate::config::{Config, Kind};
use crate::pg::{self, Conn, Tools, literal};
use crate::{Error, Progress};

/// The live cluster's connection.
pub fn live(cfg: &Config) -> Conn {
    Conn {
        socket: cfg.pg_socket.clone(),
        port: cfg.pg_port,
    }
}

/// Writes pgBackRest's config, applies the archive settings (`ALTER SYSTEM`), restarts the
/// cluster when `archive_mode` needs it and `restart` allows it, then `stanza-create` and
/// `check`.
pub fn setup(cfg: &Config, restart: bool, progress: &dyn Progress) -> Result<(), Error> {
    let tools = Tools::new(cfg);
    for d in ["log", "lock", "spool"] {
        let p = cfg.pgbackrest_var.join(d);
        std::fs::create_dir_all(&p)?;
        pg::chown_to(&tools, &p)?;
    }
    std::fs::create_dir_all(&cfg.repo_path)?;
    pg::chown_to(&tools, &cfg.repo_path)?;
    if let Some(dir) = cfg.pgbackrest_conf.parent() {
        std::fs::create_dir_all(dir)?;
    }
    codeb_host::atomic::write(
        &cfg.pgbackrest_conf,
        cfg.pgbackrest_conf_text().as_bytes(),
        0o644,
    )?;
    progress.step(&format!("wrote {}", cfg.pgbackrest_conf.display()));

    let conn = live(cfg);
    for (k, v) in cfg.pg_settings() {
        conn.psql(
            &tools,
            "postgres",
            &format!("ALTER SYSTEM SET {k} = {}", literal(&v)),
        )?;
    }
    conn.psql(&tools, "postgres", "SELECT pg_reload_conf()")?;
    let pending = conn.psql(
        &tools,
        "postgres",
        "SELECT string_agg(name, ',') FROM pg_settings WHERE pending_restart",
    )?;
    if !pending.trim().is_empty() {
        if !restart {
            return Err(Error::Usage(format!(
                "PostgreSQL needs a restart to apply {} (archive settings written with ALTER SYSTEM): restart it (systemctl restart postgresql) and run setup again, or pass --restart",
                pending.trim()
            )));
        }
        progress.step("restarting PostgreSQL to turn archive_mode on");
        pg::run(
            "pg_ctl restart",
            tools
                .command("pg_ctl")
                .arg("-D")
                .arg(&cfg.pg_data)
                .args(["-w", "-t", "300", "-m", "fast", "restart"])
                .arg("-l")
                .arg(
                    cfg.pgbackrest_var
                        .join("log")
                        .join("postgresql-restart.log"),
                ),
        )?;
    }
    pg::run(
        "pgbackrest stanza-create",
        tools.pgbackrest().arg("stanza-create"),
    )?;
    progress.step(&format!("stanza {} created", cfg.stanza));
    pg::run("pgbackrest check", tools.pgbackrest().arg("check"))?;
    progress.step("pgbackrest check passed: WAL reaches the repository");
    Ok(())
}

/// `pgbackrest check` (a WAL switch archived end to end), recorded as a `wal` run with the
/// cluster's archiver counters.
pub fn check(cfg: &Config, catalog: &Catalog) -> Result<(), Error> {
    let tools = Tools::new(cfg);
    let id = catalog.start(Kind::Wal, &cfg.stanza)?;
    let r = pg::run(
        "pgbackrest check",
        tools.pgbackrest().args(["--archive-timeout=30", "check"]),
    );
    let archiver = live(cfg)
        .psql(
            &tools,
            "postgres",
            "SELECT coalesce(last_archived_wal,'-'), archived_count, failed_count, coalesce(last_failed_wal,'-'),
               (SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready')
             FROM pg_stat_archiver",
        )
        .map(|s| {
            let f: Vec<&str> = s.split('\t').collect();
            format!(
                "last archived {}, archived {}, failed {}, last failed {}, waiting to be archived {}",
                f.first().unwrap_or(&"?"),
                f.get(1).unwrap_or(&"?"),
                f.get(2).unwrap_or(&"?"),
                f.get(3).unwrap_or(&"?"),
                f.get(4).unwrap_or(&"?")
            )
        })
        .unwrap_or_else(|e| format!("pg_stat_archiver unreadable: {e}"));
    match r {
        Ok(_) => {
            catalog.finish(
                id,
                true,
                &Outcome {
                    location: Some(cfg.repo_path.display().to_string()),
                    message: Some(archiver),
                    ..Outcome::default()
                },
            )?;
            Ok(())
        }
        Err(e) => {
            let message = format!("WAL archiving is failing: {e}; {archiver}");
            catalog.finish(
                id,
                false,
                &Outcome {
                    message: Some(message.clone()),
                    ..Outcome::default()
                },
            )?;
            Err(Error::Failed(message))
        }
    }
}

/// A full or differential backup, recorded with its label, size and the SHA-256 of its
/// pgBackRest manifest (which itself holds every file's checksum).
pub fn backup(cfg: &Config, catalog: &Catalog, kind: Kind) -> Result<Outcome, Error> {
    let ty = match kind {
        Kind::Full => "full",
        Kind::Diff => "diff",
        _ => return Err(Error::Usage("backup kinds are full and diff".into())),
    };
    let tools = Tools::new(cfg);
    let id = catalog.start(kind, &cfg.stanza)?;
    let r = pg::run(
        &format!("pgbackrest backup --type={ty}"),
        tools.pgbackrest().arg(format!("--type={ty}")).arg("backup"),
    )
    .and_then(|_| info(cfg))
    .and_then(|info| {
        let b = info.backup.last().ok_or_else(|| {
            Error::Failed("pgbackrest info lists no backup after a backup".into())
        })?;
        let manifest = cfg
            .repo_path
            .join("backup")
            .join(&cfg.stanza)
            .join(&b.label)
            .join("backup.manifest");
        let sha = sha256_file(&manifest)?;
        Ok(Outcome {
            size_bytes: i64::try_from(b.info.repository.delta).ok(),
            sha256: Some(sha),
            location: Some(format!("pgbackrest:{}", b.label)),
            message: Some(format!(
                "{} backup {}, database size {} bytes",
                b.kind, b.label, b.info.size
            )),
        })
    });
    match r {
        Ok(o) => {
            catalog.finish(id, true, &o)?;
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

/// `pgbackrest info --output=json` for the stanza.
#[derive(Debug, Clone, Deserialize)]
pub struct StanzaInfo {
    pub name: String,
    #[serde(default)]
    pub backup: Vec<BackupInfo>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct BackupInfo {
    pub label: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub timestamp: Timestamps,
    pub info: SizeInfo,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Timestamps {
    pub start: i64,
    pub stop: i64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SizeInfo {
    pub size: u64,
    pub repository: RepoSize,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RepoSize {
    pub delta: u64,
}

pub fn info(cfg: &Config) -> Result<StanzaInfo, Error> {
    let tools = Tools::new(cfg);
    let out = pg::run(
        "pgbackrest info",
        tools.pgbackrest().args(["--output=json", "info"]),
    )?;
    let all: Vec<StanzaInfo> = serde_json::from_str(&out)
        .map_err(|e| Error::Failed(format!("pgbackrest info printed JSON we cannot read: {e}")))?;
    all.into_iter()
        .find(|s| s.name == cfg.stanza)
        .ok_or_else(|| Error::Failed(format!("pgbackrest knows no stanza {}", cfg.stanza)))
}

pub fn sha256_file(path: &Path) -> Result<String, Error> {
    let mut f = std::fs::File::open(path)
        .map_err(|e| Error::Failed(format!("cannot read {}: {e}", path.display())))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(hex(&h.finalize()))
}

pub fn hex(b: &[u8]) -> String {
    use std::fmt::Write;
    b.iter()
        .fold(String::with_capacity(b.len() * 2), |mut s, x| {
            let _ = write!(s, "{x:02x}");
            s
        })
}

/// `pgbackrest restore` of the stanza into `data` (an empty directory owned by the
/// cluster's user), to `target` (`None`: the end of the archive), without archiving from
/// the restored copy (`--archive-mode=off`: a scratch instance never writes into the
/// repository).
pub fn restore_into(
    tools: &Tools,
    data: &Path,
    target: Option<&str>,
    delta: bool,
) -> Result<(), Error> {
    let mut c = tools
        .pgbackrest()
        .arg(format!("--pg1-path={}", data.display()))
        .arg("--archive-mode=off")
        .arg("--log-level-console=warn");
    if delta {
        c = c.arg("--delta");
    }
    c = match target {
        Some(t) => c
            .arg("--type=time")
            .arg(format!("--target={t}"))
            .arg("--target-action=promote"),
        None => c.arg("--type=default"),
    };
    c = c.arg("restore");
    pg::run("pgbackrest restore", c).map(drop)
}
