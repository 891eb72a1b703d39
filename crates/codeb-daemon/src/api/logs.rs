//! `GET /api/v1/projects/{name}/logs`: the serving container's output through
//! `codeb_runtime` (`podman logs [--follow]`), as NDJSON [`codeb_api::LogEvent`]s.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use codeb_api::{Action, LogEvent, LogStream, LogsQuery};
use codeb_deploy::History;
use tokio::sync::mpsc;

use super::jobs::ndjson;
use super::{Api, ApiError, environment, project_name};

fn line(e: &LogEvent) -> Bytes {
    let mut v = serde_json::to_vec(e).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

pub async fn logs(
    State(api): State<Arc<Api>>,
    h: HeaderMap,
    Path(name): Path<String>,
    Query(q): Query<LogsQuery>,
) -> Result<Response, ApiError> {
    project_name(&name)?;
    api.authorize(&h, Action::Logs, Some(&name)).await?;
    let env = environment(q.environment.as_deref().unwrap_or("production"))?;
    let tail = q.tail.unwrap_or(100);
    if tail > 10_000 {
        return Err(ApiError::bad("tail must be at most 10000 lines"));
    }
    let project = super::registry::load_project(&api, &name).await?;
    if !project
        .spec
        .environments
        .iter()
        .any(|e| e.name == env.as_str())
    {
        return Err(ApiError::bad(format!(
            "project `{name}` has no {env} environment in the registry"
        )));
    }
    let unit = format!("{name}-{env}");
    let hist = History::load(&api.state_dir(), &unit).ok();
    let podman = codeb_runtime::Podman::new();
    // The serving slot first, then whatever exists.
    let mut candidates = Vec::new();
    if let Some(a) = hist.as_ref().and_then(|h| h.active.as_ref()) {
        candidates.push((format!("{unit}-{}", a.slot.as_str()), Some(a.slot.as_str())));
    }
    candidates.push((format!("{unit}-blue"), Some("blue")));
    candidates.push((format!("{unit}-green"), Some("green")));
    candidates.push((unit.clone(), None));
    let mut chosen = None;
    for (c, slot) in candidates {
        if podman
            .container_exists(&c)
            .await
            .map_err(ApiError::internal)?
        {
            chosen = Some((c, slot));
            break;
        }
    }
    let Some((container, slot)) = chosen else {
        return Err(ApiError::not_found(format!(
            "{name} {env} has no container on this host; deploy it first (`we deploy {name} --environment {env}`)"
        )));
    };
    let permit = api.stream_permit()?;
    let mut child = podman
        .logs(&container, tail, q.follow)
        .await
        .map_err(ApiError::internal)?;
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(256);
    let first = LogEvent::Source {
        container: container.clone(),
        slot: slot.map(str::to_owned),
    };
    tokio::spawn(async move {
        let _permit = permit;
        if tx.send(Ok(line(&first))).await.is_err() {
            return;
        }
        loop {
            tokio::select! {
                next = child.next_line() => match next {
                    Some((s, text)) => {
                        let stream = match s {
                            codeb_runtime::LogStream::Stdout => LogStream::Stdout,
                            codeb_runtime::LogStream::Stderr => LogStream::Stderr,
                        };
                        if tx.send(Ok(line(&LogEvent::Line { stream, line: text }))).await.is_err() {
                            return; // the client went away; dropping `child` kills podman
                        }
                    }
                    None => break,
                },
                () = tx.closed() => return,
            }
        }
        let reason = if q.follow {
            "the container stopped"
        } else {
            "tail complete"
        };
        let _ = tx
            .send(Ok(line(&LogEvent::End {
                reason: reason.into(),
            })))
            .await;
    });
    Ok(ndjson(rx))
}
