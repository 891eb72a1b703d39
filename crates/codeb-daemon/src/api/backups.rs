//! Backups through the control plane: `GET /api/v1/backups` (the run catalog and the age of
//! the last good backup per kind) and `POST /api/v1/projects/{name}/restore` (a project's
//! database to a point in time, streamed as NDJSON progress). The work itself is
//! `codeb_backup`'s; the daemon reads `[api] backup_config` (`/etc/codeb/backup.toml`).
//!
//! A restore holds the project's production deploy lock (the same `<unit>.lock` deploys take)
//! for its whole run: it waits up to `lock_timeout` (default 30 s), then refuses naming the
//! holder. It is admin-only and audited (`restore`, with the date, time, target database).
//! The restore's deploy side (the history's running release whose health proves a replaced
//! database, the manifest) is this daemon's quadlet dir and manifest, whatever the backup
//! config says.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use codeb_api::{
    Action, BackupKindHealth, BackupRun, BackupsQuery, BackupsReport, RestoreEvent, RestoreRequest,
    codes,
};
use tokio::sync::mpsc;

use super::{Api, ApiError, parse_body, project_name, request_duration};

fn load(path: &std::path::Path) -> Result<(codeb_backup::Config, codeb_backup::Catalog), String> {
    let cfg = codeb_backup::Config::load(path).map_err(|e| e.to_string())?;
    let cat = codeb_backup::Catalog::open(&cfg.catalog).map_err(|e| e.to_string())?;
    Ok((cfg, cat))
}

fn kind_health(k: codeb_backup::health::KindStatus) -> BackupKindHealth {
    BackupKindHealth {
        kind: k.kind,
        age_seconds: k.age_seconds,
        max_age_seconds: k.max_age_seconds,
        last_result: k.last_result,
        ok: k.ok,
        problem: k.problem,
    }
}

/// The backup kinds' health for `path` (blocking: SQLite). An unreadable config or catalog
/// is itself a failing entry, never silence.
pub fn kinds_blocking(path: &std::path::Path) -> Vec<BackupKindHealth> {
    let broken = |problem: String| {
        vec![BackupKindHealth {
            kind: "config".into(),
            age_seconds: None,
            max_age_seconds: 0,
            last_result: None,
            ok: false,
            problem: Some(problem),
        }]
    };
    match load(path) {
        Err(e) => broken(e),
        Ok((cfg, cat)) => match codeb_backup::health::status(&cfg, &cat) {
            Ok(st) => st.into_iter().map(kind_health).collect(),
            Err(e) => broken(e.to_string()),
        },
    }
}

/// For `/api/v1/health`: empty when backups are not configured.
pub async fn kinds(api: &Api) -> Vec<BackupKindHealth> {
    let Some(path) = api.cfg.backup_config.clone() else {
        return Vec::new();
    };
    tokio::task::spawn_blocking(move || kinds_blocking(&path))
        .await
        .unwrap_or_default()
}

/// Prometheus lines for `/metrics` (empty when not configured).
pub fn metrics_blocking(path: Option<&std::path::Path>) -> String {
    let Some(path) = path else {
        return String::new();
    };
    let kinds = kinds_blocking(path);
    let st: Vec<codeb_backup::health::KindStatus> = kinds
        .into_iter()
        .map(|k| codeb_backup::health::KindStatus {
            kind: k.kind,
            age_seconds: k.age_seconds,
            max_age_seconds: k.max_age_seconds,
            last_result: k.last_result,
            ok: k.ok,
            problem: k.problem,
        })
        .collect();
    codeb_backup::health::metrics(&st)
}

fn config_path(api: &Api) -> Result<PathBuf, ApiError> {
    api.cfg.backup_config.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            codes::UNPROCESSABLE,
            "backups are not configured on this server: set [api] backup_config in the daemon's config (see templates/systemd/backup.toml)",
        )
    })
}

pub async fn list(
    State(api): State<Arc<Api>>,
    h: HeaderMap,
    Query(q): Query<BackupsQuery>,
) -> Result<Json<BackupsReport>, ApiError> {
    if let Some(p) = &q.project {
        project_name(p)?;
    }
    api.authorize(&h, Action::BackupList, q.project.as_deref())
        .await?;
    let Some(path) = api.cfg.backup_config.clone() else {
        return Ok(Json(BackupsReport {
            configured: false,
            runs: Vec::new(),
            kinds: Vec::new(),
        }));
    };
    let limit = q.limit.unwrap_or(100).clamp(1, 10_000);
    let project = q.project.clone();
    let r = tokio::task::spawn_blocking(move || -> Result<BackupsReport, String> {
        let (cfg, cat) = load(&path)?;
        let mut runs = cat.list(None, None, 10_000).map_err(|e| e.to_string())?;
        if let Some(p) = &project {
            let db = codeb_backup::pg::project_database(p);
            runs.retain(|r| r.target == db || r.target == *p);
        }
        runs.truncate(limit);
        let kinds = codeb_backup::health::status(&cfg, &cat)
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(kind_health)
            .collect();
        Ok(BackupsReport {
            configured: true,
            runs: runs
                .into_iter()
                .map(|r| BackupRun {
                    id: r.id,
                    kind: r.kind,
                    target: r.target,
                    started_ms: r.started_ms,
                    ended_ms: r.ended_ms,
                    result: r.result,
                    size_bytes: r.size_bytes,
                    sha256: r.sha256,
                    location: r.location,
                    message: r.message,
                })
                .collect(),
            kinds,
        })
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)?;
    Ok(Json(r))
}

struct Channel(mpsc::Sender<RestoreEvent>);

impl codeb_backup::Progress for Channel {
    fn step(&self, what: &str) {
        let _ = self.0.blocking_send(RestoreEvent::Progress {
            message: what.to_owned(),
        });
    }
}

pub async fn restore(
    State(api): State<Arc<Api>>,
    h: HeaderMap,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let project = project_name(&name)?;
    let caller = api
        .authorize(&h, Action::Restore, Some(project.as_str()))
        .await?;
    let req: RestoreRequest = parse_body(&body)?;
    codeb_backup::restore::parse_when(&req.date, req.time.as_deref())
        .map_err(|e| ApiError::bad(e.to_string()))?;
    let source = match req.from.as_deref() {
        None | Some("pitr") => codeb_backup::restore::Source::Pitr,
        Some("dump") => codeb_backup::restore::Source::Dump,
        Some(other) => {
            return Err(ApiError::bad(format!(
                "from = {:?}: use \"pitr\" (the WAL archive, default) or \"dump\" (the daily dump)",
                codeb_health::one_line(other, 20)
            )));
        }
    };
    let lock_timeout = request_duration(
        "lock_timeout",
        req.lock_timeout.as_deref(),
        Duration::from_secs(30),
    )?;
    if lock_timeout > Duration::from_secs(3600) {
        return Err(ApiError::bad("lock_timeout must be at most 1h"));
    }
    super::registry::load_project(&api, project.as_str()).await?;
    let path = config_path(&api)?;
    let params = serde_json::json!({
        "date": req.date, "time": req.time, "into": req.into, "dry_run": req.dry_run,
        "yes": req.yes, "from": req.from,
    });
    let permit = api.stream_permit()?;
    let (tx, mut rx) = mpsc::channel::<RestoreEvent>(64);
    let (out_tx, out) = mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    // Forwards events as NDJSON lines, with a keepalive line every 20 s of silence.
    tokio::spawn(async move {
        let _permit = permit;
        loop {
            let ev = match tokio::time::timeout(Duration::from_secs(20), rx.recv()).await {
                Ok(Some(ev)) => ev,
                Ok(None) => return,
                Err(_) => RestoreEvent::Keepalive,
            };
            let mut line = serde_json::to_vec(&ev).unwrap_or_default();
            line.push(b'\n');
            if out_tx.send(Ok(Bytes::from(line))).await.is_err() {
                // The client went away; the restore itself runs to its end.
                while rx.recv().await.is_some() {}
                return;
            }
        }
    });
    let api2 = api.clone();
    tokio::spawn(async move {
        let unit = format!("{}-production", project.as_str());
        let state_dir = api2.state_dir();
        let _ = tx
            .send(RestoreEvent::Progress {
                message: format!(
                    "taking the deploy lock of {unit} (waiting up to {}s)",
                    lock_timeout.as_secs()
                ),
            })
            .await;
        let target = format!("project:{}", project.as_str());
        let _ = codeb_host::lockfile::private_dir(&state_dir);
        let lock = match codeb_deploy::TargetLock::acquire(
            &state_dir,
            &unit,
            lock_timeout,
            &format!(
                "restore by {} (codeb-daemon pid {})",
                caller.name,
                std::process::id()
            ),
        )
        .await
        {
            Ok(l) => l,
            Err(e) => {
                let code = if matches!(e, codeb_deploy::DeployError::Locked { .. }) {
                    codes::LOCK_TIMEOUT
                } else {
                    codes::INTERNAL
                };
                api2.audit(
                    &caller,
                    Action::Restore,
                    &target,
                    Some(project.as_str()),
                    &params,
                    "failed",
                )
                .await;
                let _ = tx
                    .send(RestoreEvent::Failed {
                        code: code.into(),
                        message: format!("{e}; no restore was made"),
                    })
                    .await;
                return;
            }
        };
        let breq = codeb_backup::restore::Request {
            project: project.as_str().to_owned(),
            date: req.date.clone(),
            time: req.time.clone(),
            into: req.into.clone(),
            dry_run: req.dry_run,
            yes: req.yes,
            source,
        };
        let ptx = tx.clone();
        // The deploy side (lock, history, manifest) is this daemon's own.
        let (quadlet_dir, manifest) = (
            api2.loc.quadlet_dir.clone(),
            api2.loc.manifest.path().to_owned(),
        );
        let r = tokio::task::spawn_blocking(move || {
            let (mut cfg, cat) = load(&path).map_err(codeb_backup::Error::Config)?;
            cfg.deploy.quadlet_dir = quadlet_dir;
            cfg.deploy.manifest = manifest;
            codeb_backup::restore::restore(&cfg, &cat, &breq, &Channel(ptx))
        })
        .await;
        drop(lock);
        let (result, ev) = match r {
            Ok(Ok(report)) => (
                if report.dry_run { "dry-run" } else { "ok" },
                RestoreEvent::Done {
                    report: serde_json::to_value(&report).unwrap_or_default(),
                },
            ),
            Ok(Err(e)) => (
                "failed",
                RestoreEvent::Failed {
                    code: if e.is_usage() {
                        codes::BAD_REQUEST
                    } else {
                        codes::UNPROCESSABLE
                    }
                    .into(),
                    message: e.to_string(),
                },
            ),
            Err(e) => (
                "failed",
                RestoreEvent::Failed {
                    code: codes::INTERNAL.into(),
                    message: format!("the restore task failed: {e}"),
                },
            ),
        };
        api2.audit(
            &caller,
            Action::Restore,
            &target,
            Some(project.as_str()),
            &params,
            result,
        )
        .await;
        let _ = tx.send(ev).await;
    });
    Ok(super::jobs::ndjson(out))
}
