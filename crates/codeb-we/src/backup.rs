//! `we env backups` and `we env restore`: the backup catalog and point-in-time restores
//! through `/api/v1` (the server checks the role: restore is admin-only).

use codeb_api::{BackupKindHealth, BackupsReport, RestoreEvent, RestoreRequest, codes, paths};
use codeb_core::ProjectName;

use crate::cli::{EnvCommand, RestoreArgs, RestoreFrom};
use crate::client::{Api, StreamEnd};
use crate::commands::{age, when};
use crate::exit::{Exit, WeError};
use crate::output::{Cell, Out, Style};

pub async fn env(c: EnvCommand, api: &Api, out: &Out) -> Result<Exit, WeError> {
    match c {
        EnvCommand::Backups { project, limit } => backups(project, limit, api, out).await,
        EnvCommand::Restore(a) => restore(a, api, out).await,
    }
}

fn project_name(s: &str) -> Result<ProjectName, WeError> {
    ProjectName::new(s).map_err(|e| WeError::Usage(format!("project `{s}`: {e}")))
}

fn size(b: Option<i64>) -> String {
    match b {
        None => "-".into(),
        Some(b) if b < 1024 => format!("{b} B"),
        Some(b) if b < 1024 * 1024 => format!("{:.1} KiB", b as f64 / 1024.0),
        Some(b) if b < 1024 * 1024 * 1024 => format!("{:.1} MiB", b as f64 / 1048576.0),
        Some(b) => format!("{:.2} GiB", b as f64 / 1073741824.0),
    }
}

/// The backup kinds as table rows (also used by `we health`).
pub fn kind_rows(kinds: &[BackupKindHealth]) -> Vec<Vec<Cell>> {
    kinds
        .iter()
        .map(|k| {
            vec![
                k.kind.clone().into(),
                if k.ok {
                    Cell::new("ok", Style::Good)
                } else {
                    Cell::new("FAIL", Style::Bad)
                },
                k.age_seconds
                    .map_or_else(
                        || "never".into(),
                        |s| format!("{} ago", age(u64::try_from(s).unwrap_or(0))),
                    )
                    .into(),
                age(u64::try_from(k.max_age_seconds).unwrap_or(0)).into(),
                k.problem.clone().unwrap_or_default().into(),
            ]
        })
        .collect()
}

pub const KIND_HEADERS: [&str; 5] = ["backup", "state", "last good", "allowed", "problem"];

async fn backups(
    project: Option<String>,
    limit: Option<usize>,
    api: &Api,
    out: &Out,
) -> Result<Exit, WeError> {
    let mut q = Vec::new();
    if let Some(p) = &project {
        q.push(("project", project_name(p)?.as_str().to_owned()));
    }
    if let Some(l) = limit {
        q.push(("limit", l.to_string()));
    }
    let r: BackupsReport = api.get(paths::BACKUPS, &q).await?;
    if out.json {
        out.json_line(&r)?;
    } else if !r.configured {
        out.warn("backups are not configured on this server ([api] backup_config in the daemon's config)");
    } else {
        let rows: Vec<Vec<Cell>> = r
            .runs
            .iter()
            .map(|b| {
                vec![
                    b.kind.clone().into(),
                    b.target.clone().into(),
                    when(b.started_ms).into(),
                    match b.result.as_str() {
                        "ok" => Cell::new("ok", Style::Good),
                        "failed" => Cell::new("failed", Style::Bad),
                        other => Cell::new(other, Style::Warn),
                    },
                    size(b.size_bytes).into(),
                    b.sha256.clone().unwrap_or_else(|| "-".into()).into(),
                    b.location
                        .clone()
                        .or_else(|| b.message.clone())
                        .unwrap_or_else(|| "-".into())
                        .into(),
                ]
            })
            .collect();
        out.table(
            &[
                "kind", "target", "started", "result", "size", "sha256", "where",
            ],
            &rows,
        )?;
        out.line("")?;
        out.table(&KIND_HEADERS, &kind_rows(&r.kinds))?;
    }
    Ok(if r.kinds.iter().all(|k| k.ok) {
        Exit::Ok
    } else {
        Exit::Wrong
    })
}

async fn restore(a: RestoreArgs, api: &Api, out: &Out) -> Result<Exit, WeError> {
    let p = project_name(&a.project)?;
    let req = RestoreRequest {
        date: a.date,
        time: a.time,
        into: a.into,
        dry_run: a.dry_run,
        yes: a.yes,
        from: Some(
            match a.from {
                RestoreFrom::Pitr => "pitr",
                RestoreFrom::Dump => "dump",
            }
            .into(),
        ),
        lock_timeout: a.lock_timeout,
    };
    let mut lines = api.post_stream(&paths::restore(p.as_str()), &req).await?;
    loop {
        let ev: RestoreEvent = match lines.next().await? {
            Ok(ev) => ev,
            Err(StreamEnd::Closed) => {
                return Err(WeError::Server(
                    "the server ended the restore's answer without a result; see `we env backups` and `we audit`".into(),
                ));
            }
            Err(StreamEnd::Broken(e)) => {
                return Err(WeError::Server(format!(
                    "the connection broke during the restore ({e}); it goes on on the server: see `we env backups`"
                )));
            }
        };
        if out.json && !matches!(ev, RestoreEvent::Keepalive) {
            out.json_line(&ev)?;
        }
        match ev {
            RestoreEvent::Keepalive => {}
            RestoreEvent::Progress { message } => {
                if !out.json {
                    out.info(&format!("restore: {message}"));
                }
            }
            RestoreEvent::Done { report } => {
                if !out.json {
                    for w in report["warnings"].as_array().into_iter().flatten() {
                        out.warn(w.as_str().unwrap_or_default());
                    }
                    let dry = report["dry_run"].as_bool().unwrap_or(false);
                    let target = match report["target"]["kind"].as_str() {
                        Some("time") => {
                            format!("{} (UTC)", report["target"]["at"].as_str().unwrap_or("?"))
                        }
                        _ => "the latest point in the archive".into(),
                    };
                    out.pairs(&[
                        ("project", p.as_str().to_owned().into()),
                        ("target", target.into()),
                        (
                            "range",
                            format!(
                                "{} to {}",
                                report["range_from"].as_str().unwrap_or("?"),
                                report["range_to"].as_str().unwrap_or("?")
                            )
                            .into(),
                        ),
                        (
                            "from",
                            report["from"].as_str().unwrap_or("-").to_owned().into(),
                        ),
                        (
                            if dry {
                                "would restore into"
                            } else {
                                "restored into"
                            },
                            report["database"].as_str().unwrap_or("?").to_owned().into(),
                        ),
                        (
                            "owner",
                            report["owner"].as_str().unwrap_or("?").to_owned().into(),
                        ),
                        (
                            "old database kept as",
                            report["replaced"].as_str().unwrap_or("-").to_owned().into(),
                        ),
                        (
                            "dump sha256",
                            report["dump_sha256"]
                                .as_str()
                                .unwrap_or("-")
                                .to_owned()
                                .into(),
                        ),
                        (
                            "the running app",
                            match (
                                report["release"]["url"].as_str(),
                                report["health"]["healthy"].as_bool(),
                            ) {
                                (Some(url), Some(true)) => format!("healthy at {url}"),
                                (Some(url), Some(false)) => format!(
                                    "NOT healthy at {url}: {}",
                                    report["health"]["failure"].as_str().unwrap_or("?")
                                ),
                                (Some(url), None) => format!("would be probed at {url}"),
                                _ => "-".to_owned(),
                            }
                            .into(),
                        ),
                    ])?;
                    for t in report["tables"].as_array().into_iter().flatten() {
                        out.line(&format!(
                            "  {}: {} rows",
                            t[0].as_str().unwrap_or("?"),
                            t[1].as_i64().unwrap_or(0)
                        ))?;
                    }
                }
                return Ok(Exit::Ok);
            }
            RestoreEvent::Failed { code, message } => {
                return Err(if code == codes::BAD_REQUEST {
                    WeError::Usage(message)
                } else {
                    WeError::Failed(message)
                });
            }
        }
    }
}
