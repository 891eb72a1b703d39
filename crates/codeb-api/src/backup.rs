//! Backups: `GET /api/v1/backups` (`we env backups`) and
//! `POST /api/v1/projects/{name}/restore` (`we env restore`), and the backup part of
//! `GET /api/v1/health`.

use serde::{Deserialize, Serialize};

/// `GET /api/v1/backups?project=P&limit=N`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupsQuery {
    #[serde(default)]
    pub project: Option<String>,
    #[serde(default)]
    pub limit: Option<usize>,
}

/// The recorded backup runs (newest first) and the health of each kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupsReport {
    /// `false` when the daemon has no backup config (`[api] backup_config`).
    pub configured: bool,
    pub runs: Vec<BackupRun>,
    pub kinds: Vec<BackupKindHealth>,
}

/// One run: a WAL check, full/diff backup, dump, file-system backup or restore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupRun {
    pub id: i64,
    /// `wal`, `full`, `diff`, `dump`, `files`, `restore`.
    pub kind: String,
    /// The stanza, database, `state` or project.
    pub target: String,
    pub started_ms: i64,
    pub ended_ms: Option<i64>,
    /// `running`, `ok`, `failed`.
    pub result: String,
    pub size_bytes: Option<i64>,
    pub sha256: Option<String>,
    pub location: Option<String>,
    pub message: Option<String>,
}

/// The age of the last good backup of a kind against what its schedule allows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupKindHealth {
    pub kind: String,
    pub age_seconds: Option<i64>,
    pub max_age_seconds: i64,
    pub last_result: Option<String>,
    pub ok: bool,
    pub problem: Option<String>,
}

/// `POST /api/v1/projects/{name}/restore`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreRequest {
    /// `YYYY-MM-DD` (UTC); alone: the latest point of that day.
    pub date: String,
    /// `HH:MM` (UTC).
    #[serde(default)]
    pub time: Option<String>,
    /// The database to restore into; the project's own with `yes` replaces it.
    #[serde(default)]
    pub into: Option<String>,
    #[serde(default)]
    pub dry_run: bool,
    #[serde(default)]
    pub yes: bool,
    /// `pitr` (default) or `dump`.
    #[serde(default)]
    pub from: Option<String>,
    /// How long to wait for the project's deploy lock (humantime; default `30s`).
    #[serde(default)]
    pub lock_timeout: Option<String>,
}

/// The lines of the restore's NDJSON answer: progress, keepalives, then `done` or `failed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum RestoreEvent {
    Progress {
        message: String,
    },
    Keepalive,
    Done {
        report: serde_json::Value,
    },
    /// `code` is one of [`crate::codes`]: `bad_request` for input outside what the backups
    /// cover, `lock_timeout`, `unprocessable` for a failed restore.
    Failed {
        code: String,
        message: String,
    },
}
