//! `/etc/codeb/backup.toml`: where the cluster, the pgBackRest repository (the backup host
//! n4, mounted) and the dumps live, retention and how old each kind of backup may get.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::Error;

/// The default config path.
pub const DEFAULT_PATH: &str = "/etc/codeb/backup.toml";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// pgBackRest stanza (one per cluster).
    #[serde(default = "d_stanza")]
    pub stanza: String,
    /// The cluster's data directory.
    pub pg_data: PathBuf,
    #[serde(default = "d_port")]
    pub pg_port: u16,
    /// Unix socket directory of the cluster.
    #[serde(default = "d_socket")]
    pub pg_socket: PathBuf,
    /// PostgreSQL's binaries (pg_dump, pg_restore, psql, pg_ctl, postgres).
    #[serde(default = "d_bin")]
    pub pg_bin: PathBuf,
    /// The OS user PostgreSQL and pgBackRest run as; when codeb-backup runs as root it runs
    /// them through `runuser -u <os_user>` (both refuse root).
    #[serde(default = "d_user")]
    pub os_user: String,
    /// The pgBackRest repository: a directory on the backup host n4.
    pub repo_path: PathBuf,
    /// Where daily dumps go (on n4): `<dump_dir>/<database>/<database>-<stamp>.dump`.
    pub dump_dir: PathBuf,
    /// Where weekly file-system backups of codeb's state go (on n4).
    pub files_dir: PathBuf,
    /// The run catalog (SQLite), local to the host so a dead backup host is still recorded.
    pub catalog: PathBuf,
    /// pgBackRest's config file, written by `codeb-backup setup`.
    #[serde(default = "d_pgbr_conf")]
    pub pgbackrest_conf: PathBuf,
    /// pgBackRest's log, lock and spool directories live under this (owned by `os_user`).
    #[serde(default = "d_pgbr_var")]
    pub pgbackrest_var: PathBuf,
    /// Where restore scratch clusters are made (a temp dir inside, removed afterwards).
    #[serde(default = "d_scratch")]
    pub scratch_dir: PathBuf,
    /// Full backups kept (pgBackRest `repo1-retention-full`).
    #[serde(default = "d_retention_full")]
    pub retention_full: u32,
    /// Dumps kept per database.
    #[serde(default = "d_dump_retention")]
    pub dump_retention: u32,
    /// File-system backups kept.
    #[serde(default = "d_files_retention")]
    pub files_retention: u32,
    /// `archive_timeout`: the longest a written WAL segment waits to be archived.
    #[serde(default = "d_archive_timeout")]
    pub archive_timeout: String,
    /// Projects whose databases the daily dump covers (each `<project>_db`).
    #[serde(default)]
    pub projects: Vec<String>,
    /// codeb state for the weekly file-system backup.
    #[serde(default)]
    pub state: StateConfig,
    /// How old the last good backup of each kind may be before health fails.
    #[serde(default)]
    pub max_age: MaxAge,
    /// Where the deploy engine keeps its state: a restore takes the same per-target lock
    /// and proves the running release healthy through its health endpoint.
    #[serde(default)]
    pub deploy: DeployConfig,
}

/// The deploy engine's side of a restore.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeployConfig {
    /// Where Quadlet units live; codeb's deploy state (the `<unit>.lock` deploys take, the
    /// `<unit>.json` history with the active release) is in `<quadlet_dir>/.codeb`.
    pub quadlet_dir: PathBuf,
    /// The port manifest: the release's public port when no Caddy front is recorded.
    pub manifest: PathBuf,
    /// How long a restore waits for a deploy of the project to finish ("30s").
    pub lock_timeout: String,
    /// How long a restore that replaced the live database waits for the running release to
    /// answer healthy before it puts the old database back ("60s").
    pub health_deadline: String,
}

impl Default for DeployConfig {
    fn default() -> Self {
        Self {
            quadlet_dir: "/etc/containers/systemd".into(),
            manifest: "/home/codeb/config/port-manifest.yaml".into(),
            lock_timeout: "30s".into(),
            health_deadline: "60s".into(),
        }
    }
}

impl DeployConfig {
    /// `<quadlet_dir>/.codeb`.
    pub fn state_dir(&self) -> PathBuf {
        self.quadlet_dir.join(".codeb")
    }
}

/// What the weekly file-system backup copies.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    /// The daemon's SQLite database (projects registry, tokens, audit): copied with SQLite's
    /// online backup API, so a running daemon is never paused or torn.
    pub registry_db: Option<PathBuf>,
    /// Directories and files copied as they are (`/etc/codeb`, the manifest, `.codeb/`
    /// state).
    pub paths: Vec<PathBuf>,
    /// Back up the project volumes podman knows (`podman volume ls`): every volume labelled
    /// `codeb.project`, and every volume mounted by a container labelled `codeb.project`,
    /// each with `podman volume export`. Default true.
    pub volumes: bool,
}

impl Default for StateConfig {
    fn default() -> Self {
        Self {
            registry_db: Some("/var/lib/codeb/daemon.sqlite3".into()),
            paths: vec!["/etc/codeb".into()],
            volumes: true,
        }
    }
}

/// Maximum ages (humantime strings in the file: "26h", "8d").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MaxAge {
    pub wal: String,
    pub full: String,
    pub diff: String,
    pub dump: String,
    pub files: String,
}

impl Default for MaxAge {
    fn default() -> Self {
        // The schedule plus slack: WAL checked hourly, full weekly, diff/dump daily, files weekly.
        Self {
            wal: "2h".into(),
            full: "8d".into(),
            diff: "26h".into(),
            dump: "26h".into(),
            files: "8d".into(),
        }
    }
}

fn d_stanza() -> String {
    "main".into()
}
fn d_port() -> u16 {
    5432
}
fn d_socket() -> PathBuf {
    "/var/run/postgresql".into()
}
fn d_bin() -> PathBuf {
    "/usr/lib/postgresql/15/bin".into()
}
fn d_user() -> String {
    "postgres".into()
}
fn d_pgbr_conf() -> PathBuf {
    "/etc/pgbackrest/pgbackrest.conf".into()
}
fn d_pgbr_var() -> PathBuf {
    "/var/lib/pgbackrest-codeb".into()
}
fn d_scratch() -> PathBuf {
    "/var/tmp".into()
}
fn d_retention_full() -> u32 {
    4
}
fn d_dump_retention() -> u32 {
    7
}
fn d_files_retention() -> u32 {
    4
}
fn d_archive_timeout() -> String {
    "1h".into()
}

/// Backup kinds, each with its own schedule and age limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Continuous WAL archiving (checked hourly with `pgbackrest check`).
    Wal,
    Full,
    Diff,
    Dump,
    Files,
    Restore,
}

impl Kind {
    /// The kinds health looks at.
    pub const SCHEDULED: [Kind; 5] = [Kind::Wal, Kind::Full, Kind::Diff, Kind::Dump, Kind::Files];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Wal => "wal",
            Kind::Full => "full",
            Kind::Diff => "diff",
            Kind::Dump => "dump",
            Kind::Files => "files",
            Kind::Restore => "restore",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "wal" => Kind::Wal,
            "full" => Kind::Full,
            "diff" => Kind::Diff,
            "dump" => Kind::Dump,
            "files" => Kind::Files,
            "restore" => Kind::Restore,
            _ => return None,
        })
    }
}

impl Config {
    /// Reads and checks the config; errors name the file, the key and a fix.
    pub fn load(path: &Path) -> Result<Config, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::Config(format!(
                "cannot read {} ({e}); write it (see templates/systemd/backup.toml) or pass --config",
                path.display()
            ))
        })?;
        Self::parse(&text).map_err(|m| Error::Config(format!("{}: {m}", path.display())))
    }

    pub fn parse(text: &str) -> Result<Config, String> {
        let c: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        c.validate()?;
        Ok(c)
    }

    fn validate(&self) -> Result<(), String> {
        if self.stanza.is_empty()
            || !self
                .stanza
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(format!(
                "stanza = {:?}: use letters, digits, `-` and `_`",
                self.stanza
            ));
        }
        if !(1..=100).contains(&self.retention_full) {
            return Err("retention_full must be 1 to 100 (default 4)".into());
        }
        if !(1..=1000).contains(&self.dump_retention) {
            return Err("dump_retention must be 1 to 1000 (default 7)".into());
        }
        if !(1..=1000).contains(&self.files_retention) {
            return Err("files_retention must be 1 to 1000 (default 4)".into());
        }
        for p in &self.projects {
            crate::pg::check_project(p).map_err(|e| format!("projects: {e}"))?;
        }
        for k in Kind::SCHEDULED {
            self.max_age(k)?;
        }
        parse_duration("archive_timeout", &self.archive_timeout)?;
        parse_wait("deploy.lock_timeout", &self.deploy.lock_timeout)?;
        parse_duration("deploy.health_deadline", &self.deploy.health_deadline)?;
        for (k, p) in [
            ("pg_data", &self.pg_data),
            ("repo_path", &self.repo_path),
            ("dump_dir", &self.dump_dir),
            ("files_dir", &self.files_dir),
            ("catalog", &self.catalog),
        ] {
            if !p.is_absolute() {
                return Err(format!("{k} = {:?} must be an absolute path", p.display()));
            }
        }
        Ok(())
    }

    /// The age limit of `kind`.
    pub fn max_age(&self, kind: Kind) -> Result<Duration, String> {
        let (key, v) = match kind {
            Kind::Wal => ("max_age.wal", &self.max_age.wal),
            Kind::Full => ("max_age.full", &self.max_age.full),
            Kind::Diff => ("max_age.diff", &self.max_age.diff),
            Kind::Dump => ("max_age.dump", &self.max_age.dump),
            Kind::Files => ("max_age.files", &self.max_age.files),
            Kind::Restore => return Ok(Duration::MAX),
        };
        parse_duration(key, v)
    }

    /// `deploy.lock_timeout`.
    pub fn lock_timeout(&self) -> Duration {
        parse_wait("deploy.lock_timeout", &self.deploy.lock_timeout)
            .unwrap_or(Duration::from_secs(30))
    }

    /// `deploy.health_deadline`.
    pub fn health_deadline(&self) -> Duration {
        parse_duration("deploy.health_deadline", &self.deploy.health_deadline)
            .unwrap_or(Duration::from_secs(60))
    }

    /// `archive_command` as PostgreSQL runs it.
    pub fn archive_command(&self) -> String {
        format!(
            "pgbackrest --config={} --stanza={} archive-push %p",
            self.pgbackrest_conf.display(),
            self.stanza
        )
    }

    /// pgBackRest's config file for this host.
    pub fn pgbackrest_conf_text(&self) -> String {
        let var = &self.pgbackrest_var;
        format!(
            "# Written by codeb-backup setup from {}; edits are replaced.\n\
             [global]\n\
             repo1-path={}\n\
             repo1-retention-full={}\n\
             log-path={}/log\n\
             lock-path={}/lock\n\
             spool-path={}/spool\n\
             log-level-console=warn\n\
             log-level-file=info\n\
             start-fast=y\n\
             \n\
             [global:archive-push]\n\
             compress-level=3\n\
             \n\
             [{}]\n\
             pg1-path={}\n\
             pg1-port={}\n\
             pg1-socket-path={}\n",
            DEFAULT_PATH,
            self.repo_path.display(),
            self.retention_full,
            var.display(),
            var.display(),
            var.display(),
            self.stanza,
            self.pg_data.display(),
            self.pg_port,
            self.pg_socket.display(),
        )
    }

    /// The PostgreSQL settings codeb applies (with `ALTER SYSTEM`).
    pub fn pg_settings(&self) -> Vec<(&'static str, String)> {
        vec![
            ("wal_level", "replica".into()),
            ("archive_mode", "on".into()),
            ("archive_command", self.archive_command()),
            ("archive_timeout", self.archive_timeout.clone()),
        ]
    }
}

/// Parses a duration flag or setting (`"30s"`, `"5m"`, `"2h"`, `"1d"`).
pub fn parse_duration(key: &str, v: &str) -> Result<Duration, String> {
    humantime_like(v).ok_or_else(|| {
        format!("{key} = {v:?} is not a duration: write e.g. \"26h\", \"8d\", \"30m\"")
    })
}

/// A wait (`"0s"` allowed: try once), e.g. `--lock-timeout`.
pub fn parse_wait(key: &str, v: &str) -> Result<Duration, String> {
    if v.trim().trim_end_matches(['s', 'm', 'h', 'd']) == "0" {
        return Ok(Duration::ZERO);
    }
    parse_duration(key, v)
}

/// `<n>s|m|h|d` (one unit; enough for schedules).
fn humantime_like(v: &str) -> Option<Duration> {
    let v = v.trim();
    let split = v.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = v.split_at(split);
    let n: u64 = n.parse().ok()?;
    let secs = match unit {
        "s" => n,
        "min" | "m" => n.checked_mul(60)?,
        "h" => n.checked_mul(3600)?,
        "d" => n.checked_mul(86400)?,
        _ => return None,
    };
    (secs > 0).then(|| Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = "pg_data = \"/d\"\nrepo_path = \"/r\"\ndump_dir = \"/x\"\nfiles_dir = \"/f\"\ncatalog = \"/c.sqlite\"\n";

    #[test]
    fn defaults_are_the_issue_s() {
        let c = Config::parse(MIN).expect("parse");
        assert_eq!(c.retention_full, 4);
        assert_eq!(c.dump_retention, 7);
        assert_eq!(c.archive_timeout, "1h");
        assert_eq!(c.max_age(Kind::Full), Ok(Duration::from_secs(8 * 86400)));
        assert!(
            c.pgbackrest_conf_text()
                .contains("repo1-retention-full=4\n")
        );
        assert_eq!(
            c.archive_command(),
            "pgbackrest --config=/etc/pgbackrest/pgbackrest.conf --stanza=main archive-push %p"
        );
    }

    #[test]
    fn the_shipped_template_parses() {
        let c = Config::parse(include_str!("../../../templates/systemd/backup.toml"))
            .expect("templates/systemd/backup.toml");
        assert_eq!(c.retention_full, 4);
        assert_eq!(c.pg_settings().len(), 4);
    }

    #[test]
    fn bad_values_are_named() {
        let e = Config::parse(&format!("{MIN}retention_full = 0\n")).expect_err("zero");
        assert!(e.contains("retention_full"), "{e}");
        let e = Config::parse(&format!("{MIN}[max_age]\nfull = \"soon\"\n")).expect_err("dur");
        assert!(e.contains("max_age.full") && e.contains("8d"), "{e}");
        let e = Config::parse(&format!("{MIN}projects = [\"Bad_Name\"]\n")).expect_err("p");
        assert!(e.contains("Bad_Name"), "{e}");
        let e = Config::parse(&MIN.replace("/r", "r")).expect_err("relative");
        assert!(e.contains("repo_path"), "{e}");
        let e = Config::parse(&format!("{MIN}[deploy]\nhealth_deadline = \"soon\"\n"))
            .expect_err("deadline");
        assert!(e.contains("deploy.health_deadline"), "{e}");
    }

    #[test]
    fn the_deploy_side_defaults_to_the_engine_s_paths() {
        let c = Config::parse(MIN).expect("parse");
        assert_eq!(
            c.deploy.state_dir(),
            PathBuf::from("/etc/containers/systemd/.codeb")
        );
        assert_eq!(c.lock_timeout(), Duration::from_secs(30));
        assert_eq!(c.health_deadline(), Duration::from_secs(60));
        assert!(c.state.volumes);
        assert_eq!(parse_wait("--lock-timeout", "0s"), Ok(Duration::ZERO));
        assert_eq!(
            parse_wait("--lock-timeout", "2m"),
            Ok(Duration::from_secs(120))
        );
        assert!(parse_wait("--lock-timeout", "later").is_err());
    }
}
