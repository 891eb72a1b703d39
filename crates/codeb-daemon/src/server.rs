//! HTTP: `POST /webhook/github`, `GET /healthz`, `GET /metrics`.
//!
//! A delivery is checked in this order, and answered as soon as one check decides:
//!
//! | check | answer |
//! |---|---|
//! | no webhook slot free within `request_timeout` (`max_webhooks_in_flight` busy) | 503 |
//! | body over `max_body_bytes` (1 MiB; by `Content-Length` before reading, or while reading) | 413 |
//! | body not complete within `body_timeout` (a slow upload) | 408 |
//! | `X-Hub-Signature-256` missing, malformed, SHA-1 only, or matching no secret | 401 |
//! | `X-GitHub-Event` or `X-GitHub-Delivery` missing or malformed | 400 |
//! | body not JSON, or JSON of the wrong shape for its event | 400 |
//! | (hook id, delivery id) seen before | 200 `duplicate`, nothing done |
//! | `ping`; event or repository not configured; nothing to do | 200 `ignored` (recorded) |
//! | intents | 202 `queued`, after the delivery and its jobs are committed |
//! | the store cannot commit | 503 (GitHub shows the failure; redeliver it from there) |
//!
//! Work is never done while GitHub waits: the worker picks the jobs up afterwards. The
//! connection-level bounds (headers within `header_read_timeout`, at most `max_connections`)
//! are in [`serve`].

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use codeb_github::{Intent, WebhookSecret, headers as gh};
use http_body_util::BodyExt;
use serde_json::json;
use tokio::sync::{Notify, Semaphore};
use tracing::{error, info, warn};

use crate::config::Limits;
use crate::metrics::{Metrics, Snapshot};
use crate::store::{Accepted, NewDelivery, Store, now_ms};

/// Everything the HTTP handlers share.
pub struct Intake {
    pub store: Store,
    pub secrets: Vec<WebhookSecret>,
    /// Events acted on.
    pub events: BTreeSet<String>,
    /// Configured repositories: lower-case `owner/name` → the spelling in the config.
    pub repos: HashMap<String, String>,
    pub approve_label: String,
    pub metrics: Arc<Metrics>,
    /// Wakes the dispatcher when jobs were stored.
    pub wake: Arc<Notify>,
    /// Preview ports (used, pool size), for `/metrics`.
    pub pool: Arc<dyn Fn() -> (usize, usize) + Send + Sync>,
    /// Jobs running now, for `/metrics`.
    pub in_flight: Arc<AtomicUsize>,
    pub limits: Limits,
    /// `limits.max_webhooks_in_flight` permits.
    pub webhook_slots: Arc<Semaphore>,
    /// `[api] backup_config`, for the backup ages in `/metrics`.
    pub backup_config: Option<std::path::PathBuf>,
}

impl Intake {
    /// The configured spelling of `repo`, if it is configured (GitHub names are
    /// case-insensitive).
    fn configured(&self, repo: &str) -> Option<&str> {
        self.repos
            .get(&repo.to_ascii_lowercase())
            .map(String::as_str)
    }
}

/// The daemon's routes.
pub fn router(intake: Arc<Intake>) -> Router {
    Router::new()
        .route("/webhook/github", post(webhook))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(intake.limits.max_body_bytes))
        .with_state(intake)
}

struct Answer {
    status: StatusCode,
    body: serde_json::Value,
}

impl Answer {
    fn new(status: StatusCode, body: serde_json::Value) -> Self {
        Self { status, body }
    }
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body)).into_response()
    }
}

async fn webhook(State(st): State<Arc<Intake>>, headers: HeaderMap, body: Body) -> Answer {
    let start = Instant::now();
    let limits = st.limits;
    let answer = match tokio::time::timeout(limits.request_timeout, async {
        // Waiting for a slot leaves the body unread in the kernel's buffers: many slow
        // clients cost a connection each, not their bodies.
        let Ok(_slot) = st.webhook_slots.acquire().await else {
            return rejected(
                &st,
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "the daemon is stopping; redeliver later".into(),
            );
        };
        let body = read_body(&st, &headers, body).await;
        match body {
            Ok(b) => handle(&st, &headers, b).await,
            Err(a) => a,
        }
    })
    .await
    {
        Ok(a) => a,
        Err(_) => {
            warn!(
                timeout = ?limits.request_timeout,
                "delivery refused: not handled within the request timeout"
            );
            rejected(
                &st,
                StatusCode::SERVICE_UNAVAILABLE,
                "request_timeout",
                format!(
                    "the delivery was not handled within {}; redeliver it from GitHub",
                    humantime::format_duration(limits.request_timeout)
                ),
            )
        }
    };
    st.metrics.ack(answer.status.as_u16(), start.elapsed());
    answer
}

/// Reads the whole body, at most `max_body_bytes` of it, within `body_timeout`.
async fn read_body(st: &Intake, headers: &HeaderMap, body: Body) -> Result<Bytes, Answer> {
    let cap = st.limits.max_body_bytes;
    let too_large = |st: &Intake| {
        warn!("delivery refused: body over {cap} bytes");
        rejected(
            st,
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!(
                "the body is over {cap} bytes; no event codeb acts on is that large (`[intake] max_body_bytes`)"
            ),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > cap as u64) {
        return Err(too_large(st));
    }
    let limited = http_body_util::Limited::new(body, cap);
    match tokio::time::timeout(st.limits.body_timeout, limited.collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e))
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(too_large(st))
        }
        Ok(Err(e)) => {
            warn!(error = %e, "delivery refused: cannot read the body");
            Err(rejected(
                st,
                StatusCode::BAD_REQUEST,
                "unreadable_body",
                format!("cannot read the body: {e}"),
            ))
        }
        Err(_) => {
            warn!(
                timeout = ?st.limits.body_timeout,
                "delivery refused: the body did not arrive in time"
            );
            Err(rejected(
                st,
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                format!(
                    "the body did not arrive within {}",
                    humantime::format_duration(st.limits.body_timeout)
                ),
            ))
        }
    }
}

fn rejected(st: &Intake, status: StatusCode, reason: &str, message: String) -> Answer {
    st.metrics.delivery("rejected", reason);
    Answer::new(
        status,
        json!({"status": "rejected", "reason": reason, "message": message}),
    )
}

/// `X-GitHub-Delivery` is a GUID, `X-GitHub-Hook-ID` a number; accept a little more, but
/// nothing that could not be printed in a log line as is.
fn id_ok(v: &str) -> bool {
    (1..=128).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

async fn handle(st: &Intake, headers: &HeaderMap, body: Bytes) -> Answer {
    let h = |name: &str| headers.get(name).map(|v| v.as_bytes());
    let delivery_hdr = h(gh::DELIVERY).and_then(|v| std::str::from_utf8(v).ok());

    if let Err(e) = codeb_github::verify(
        &st.secrets,
        h(gh::SIGNATURE_256),
        h(gh::SIGNATURE_SHA1),
        &body,
    ) {
        warn!(
            delivery = delivery_hdr.unwrap_or("-"),
            reason = e.reason(),
            "delivery refused: {e}"
        );
        return rejected(
            st,
            StatusCode::UNAUTHORIZED,
            &format!("signature_{}", e.reason()),
            e.to_string(),
        );
    }

    let text = |name: &str| h(name).and_then(|v| std::str::from_utf8(v).ok());
    let Some(event) = text(gh::EVENT).filter(|e| {
        (1..=64).contains(&e.len()) && e.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
    }) else {
        warn!("delivery refused: missing or malformed X-GitHub-Event");
        return rejected(
            st,
            StatusCode::BAD_REQUEST,
            "bad_header",
            "X-GitHub-Event is missing or malformed (expected an event name such as pull_request)"
                .into(),
        );
    };
    let Some(delivery_id) = delivery_hdr.filter(|d| id_ok(d)) else {
        warn!(
            event,
            "delivery refused: missing or malformed X-GitHub-Delivery"
        );
        return rejected(
            st,
            StatusCode::BAD_REQUEST,
            "bad_header",
            "X-GitHub-Delivery is missing or malformed (expected the delivery's GUID)".into(),
        );
    };
    let hook_id = match text(gh::HOOK_ID) {
        None => "",
        Some(v) if id_ok(v) => v,
        Some(_) => {
            warn!(
                event,
                delivery = delivery_id,
                "delivery refused: malformed X-GitHub-Hook-ID"
            );
            return rejected(
                st,
                StatusCode::BAD_REQUEST,
                "bad_header",
                "X-GitHub-Hook-ID is malformed (expected the hook's numeric id)".into(),
            );
        }
    };

    let interpretation = match codeb_github::interpret(event, &body, &st.approve_label) {
        Ok(i) => i,
        Err(e) => {
            warn!(event, delivery = delivery_id, "delivery refused: {e}");
            return rejected(st, StatusCode::BAD_REQUEST, e.reason(), e.to_string());
        }
    };
    let repo_name = interpretation.repo.clone().unwrap_or_default();
    let pr = interpretation.pr.unwrap_or(0);

    // What to do with it.
    let (mut intents, ignored, reason): (Vec<Intent>, Option<String>, &str) = if event == "ping" {
        (Vec::new(), interpretation.ignored.clone(), "ping")
    } else if !st.events.contains(event) {
        (
            Vec::new(),
            Some(format!(
                "event `{event}` is not configured (`events` in the config)"
            )),
            "event_not_configured",
        )
    } else if let Some(why) = interpretation.ignored.clone() {
        (Vec::new(), Some(why), "nothing_to_do")
    } else {
        match interpretation
            .repo
            .as_deref()
            .and_then(|r| st.configured(r))
        {
            None => (
                Vec::new(),
                Some(format!(
                    "repository `{repo_name}` is not configured ([previews.repos] in the config)"
                )),
                "repo_not_configured",
            ),
            Some(_) => (interpretation.intents.clone(), None, event),
        }
    };
    // Use the configured spelling of the repository, so keys and lookups agree.
    for intent in &mut intents {
        if let Intent::EnsurePreview { repo, .. }
        | Intent::DestroyPreview { repo, .. }
        | Intent::ExpirePreview { repo, .. } = intent
            && let Some(c) = st.configured(repo)
        {
            *repo = c.to_owned();
        }
    }

    let record = NewDelivery {
        hook_id: hook_id.to_owned(),
        delivery_id: delivery_id.to_owned(),
        event: event.to_owned(),
        action: interpretation.action.clone(),
        repo: interpretation.repo.clone(),
        pr: interpretation.pr,
        outcome: if intents.is_empty() {
            "ignored"
        } else {
            "queued"
        },
        note: ignored.clone(),
        received_at: now_ms(),
    };
    let n = intents.len();
    match st.store.accept(record, intents).await {
        Ok(Accepted::Duplicate) => {
            st.metrics.delivery("duplicate", event);
            info!(
                event,
                delivery = delivery_id,
                hook = hook_id,
                repo = %repo_name,
                pr,
                "duplicate delivery acknowledged; already accepted"
            );
            Answer::new(
                StatusCode::OK,
                json!({"status": "duplicate", "delivery": delivery_id}),
            )
        }
        Ok(Accepted::Stored { jobs }) if n > 0 => {
            st.wake.notify_one();
            st.metrics.delivery("accepted", reason);
            info!(
                event,
                action = interpretation.action.as_deref().unwrap_or(""),
                delivery = delivery_id,
                hook = hook_id,
                repo = %repo_name,
                pr,
                jobs = ?jobs,
                "delivery accepted"
            );
            Answer::new(
                StatusCode::ACCEPTED,
                json!({"status": "queued", "delivery": delivery_id, "jobs": jobs}),
            )
        }
        Ok(Accepted::Stored { .. }) => {
            let why = ignored.unwrap_or_default();
            st.metrics.delivery("ignored", reason);
            info!(
                event,
                action = interpretation.action.as_deref().unwrap_or(""),
                delivery = delivery_id,
                hook = hook_id,
                repo = %repo_name,
                pr,
                "delivery ignored: {why}"
            );
            let status = if event == "ping" { "pong" } else { "ignored" };
            Answer::new(
                StatusCode::OK,
                json!({"status": status, "delivery": delivery_id, "reason": why}),
            )
        }
        Err(e) => {
            error!(event, delivery = delivery_id, error = %e, "cannot store the delivery");
            rejected(
                st,
                StatusCode::SERVICE_UNAVAILABLE,
                "store_error",
                format!("the delivery could not be stored ({e}); redeliver it from GitHub"),
            )
        }
    }
}

async fn healthz(State(st): State<Arc<Intake>>) -> Response {
    match tokio::time::timeout(Duration::from_secs(2), st.store.counts()).await {
        Ok(Ok(_)) => (StatusCode::OK, "ok\n").into_response(),
        Ok(Err(e)) => (StatusCode::SERVICE_UNAVAILABLE, format!("store: {e}\n")).into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "store: no answer in 2 s\n").into_response(),
    }
}

async fn metrics(State(st): State<Arc<Intake>>) -> Response {
    let jobs_by_state = match st.store.counts().await {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, "metrics: cannot count jobs");
            Vec::new()
        }
    };
    let snap = Snapshot {
        jobs_by_state,
        pool: (st.pool)(),
        in_flight: st.in_flight.load(Ordering::Relaxed),
    };
    let mut text = st.metrics.render(&snap);
    let backup_config = st.backup_config.clone();
    text.push_str(
        &tokio::task::spawn_blocking(move || {
            crate::api::backups::metrics_blocking(backup_config.as_deref())
        })
        .await
        .unwrap_or_default(),
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// Serves `app` on `listener` until `stop` resolves, then lets the connections finish for up
/// to `grace`. Each connection must send a request's headers within
/// `limits.header_read_timeout` (a slowloris client is cut off); a connection beyond
/// `limits.max_connections` is closed at once.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: Limits,
    stop: impl std::future::Future<Output = ()> + Send,
    grace: Duration,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    tokio::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and the like: back off rather than spin.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            warn!(%peer, max = limits.max_connections, "connection refused: too many open");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        warn!("connections still open after the shutdown grace; closing them");
    }
}
