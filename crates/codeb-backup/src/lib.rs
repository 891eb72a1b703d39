//! codeb's backups, driving the well-kept tools (pgBackRest, pg_dump, pg_restore, SQLite's
//! online backup API) rather than reimplementing them:
//!
//! - [`pitr`]: pgBackRest's config and PostgreSQL's archive settings (`archive_mode=on`,
//!   `archive_command='pgbackrest ... archive-push %p'`, `archive_timeout=1h`),
//!   `stanza-create`, `check`, full/diff backups with retention (default 4 full);
//! - [`dump`]: daily `pg_dump -Fc` per project database with SHA-256 and size;
//! - [`files`]: weekly copy of codeb's state and the project volumes podman knows;
//! - [`restore`]: a project's database to a point in time through a scratch cluster;
//! - [`release`]: the deploy lock a restore shares with deploys, and the running release's
//!   health endpoint that proves the app answers after a restore;
//! - [`catalog`]: every run recorded (start, end, size, checksum, result);
//! - [`health`]: the age of the last good backup per kind against its schedule.
//!
//! The `codeb-backup` binary is what the systemd timers in `templates/systemd/` run; the
//! daemon links the library for `/api/v1` (`we env backups`, `we env restore`) and `/metrics`.

pub mod catalog;
pub mod config;
pub mod dump;
pub mod files;
pub mod health;
pub mod pg;
pub mod pitr;
pub mod release;
pub mod restore;

pub use catalog::Catalog;
pub use config::{Config, Kind};

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input (a flag, a name): exit 2.
    #[error("{0}")]
    Usage(String),
    /// The date or time lies outside what the backups cover: exit 2.
    #[error("{0}")]
    OutOfRange(String),
    #[error("config: {0}")]
    Config(String),
    #[error(
        "project {project} has no database {database} on the cluster (`we workflow init` creates it)"
    )]
    NoDatabase { project: String, database: String },
    #[error(
        "checksum mismatch on {path}: the catalog recorded sha256 {want}, the file has {got}; refusing to restore from it"
    )]
    Checksum {
        path: PathBuf,
        want: String,
        got: String,
    },
    #[error("{what} failed: {message}")]
    Tool { what: String, message: String },
    #[error("{0}")]
    Failed(String),
    /// Another deploy or restore of the project holds its deploy lock.
    #[error("{0}")]
    Locked(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the backup catalog: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

impl Error {
    /// Bad input rather than a failed check.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            Error::Usage(_) | Error::OutOfRange(_) | Error::Config(_)
        )
    }
}

/// Progress reports from long work (the CLI prints them to stderr; the daemon logs them).
pub trait Progress {
    fn step(&self, what: &str);
}

/// Discards progress.
pub struct Quiet;

impl Progress for Quiet {
    fn step(&self, _: &str) {}
}
