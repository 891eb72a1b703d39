//! The daemon in process: requests through the router with `oneshot` (axum's testing
//! pattern), jobs through the real store and dispatcher, `apply` recorded by a fake.
//!
//! Bad input tried (each answered as listed, and the daemon keeps serving): wrong secret,
//! truncated signature, non-hex signature, `sha1=` as the 256 header, the SHA-1 header
//! only, no signature header, empty body, a 26 MB body, invalid UTF-8, JSON of the wrong
//! shape, PR numbers 0 / 2^32 / 2^64-1 / 10^23, unknown actions, unknown events, missing
//! and malformed X-GitHub-Event / X-GitHub-Delivery / X-GitHub-Hook-ID, duplicate delivery
//! ids, and a flood of deliveries for one PR (coalesced, nothing lost).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use codeb_daemon::config::{self, Config};
use codeb_daemon::store::{JobRow, list_deliveries, list_jobs};
use codeb_daemon::worker::Applier;
use codeb_github::{Intent, WebhookSecret, sign};
use codeb_previews::{Applied, PreviewError, ReconcileReport};
use tokio::sync::Semaphore;
use tower::ServiceExt;

const SECRET: &str = "test-secret";

/// Records every `apply`; can hold calls at a gate and fail the first N calls.
#[derive(Default)]
struct Fake {
    calls: Mutex<Vec<Intent>>,
    gate: Option<Arc<Semaphore>>,
    fail_first: AtomicU32,
    running: AtomicUsize,
    max_running: AtomicUsize,
    reconciles: AtomicUsize,
}

impl Fake {
    fn calls(&self) -> Vec<Intent> {
        self.calls.lock().expect("lock").clone()
    }
}

impl Applier for Fake {
    async fn apply(&self, intent: &Intent) -> Result<Applied, PreviewError> {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_running.fetch_max(now, Ordering::SeqCst);
        self.calls.lock().expect("lock").push(intent.clone());
        if let Some(g) = &self.gate {
            g.acquire().await.expect("gate").forget();
        }
        self.running.fetch_sub(1, Ordering::SeqCst);
        let fail = self
            .fail_first
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if fail {
            Err(PreviewError::Unhealthy("injected failure".into()))
        } else {
            Ok(Applied::Skipped("fake".into()))
        }
    }
    async fn reconcile(&self) -> Result<ReconcileReport, PreviewError> {
        self.reconciles.fetch_add(1, Ordering::SeqCst);
        Ok(ReconcileReport::default())
    }
    fn pool_usage(&self) -> (usize, usize) {
        (3, 1000)
    }
}

struct Daemon {
    app: Router,
    db: PathBuf,
    fake: Arc<Fake>,
    _dir: tempfile::TempDir,
    _shutdown: tokio::sync::watch::Sender<bool>,
}

fn config(dir: &Path, extra: &str, secrets: &str) -> Config {
    let text = format!(
        r#"
listen = "127.0.0.1:0"
state_dir = "state"
retry_backoff = "10ms"
{extra}
[previews.repos."Codertocat/Hello-World"]
project = "hello"
image = "ghcr.io/codertocat/hello-world"
[previews.repos."acme/shop"]
project = "shop"
image = "ghcr.io/acme/shop"
"#
    );
    let secrets = secrets.to_owned();
    config::parse(&dir.join("daemon.toml"), &text, &move |k| {
        (k == config::vars::CODEB_WEBHOOK_SECRET).then(|| secrets.clone())
    })
    .expect("test config")
}

fn daemon_with(extra: &str, fake: Fake) -> Daemon {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), extra, &format!("{SECRET},older-secret"));
    let fake = Arc::new(fake);
    let (app, shutdown) = codeb_daemon::app_for_tests(&cfg, fake.clone()).expect("app");
    Daemon {
        app,
        db: cfg.db_path(),
        fake,
        _dir: dir,
        _shutdown: shutdown,
    }
}

fn daemon() -> Daemon {
    daemon_with("", Fake::default())
}

fn corpus() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/corpora/github-webhooks");
    assert!(
        p.is_dir(),
        "the webhook corpus is missing at {}",
        p.display()
    );
    p
}

fn fixture(name: &str) -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../codeb-github/tests/fixtures")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

struct Post<'a> {
    event: Option<&'a str>,
    delivery: Option<&'a str>,
    hook: Option<&'a str>,
    signature: Sig,
    body: Vec<u8>,
}

enum Sig {
    /// Signed with this secret.
    With(&'static str),
    /// This exact X-Hub-Signature-256 value.
    Header(String),
    /// Only the legacy X-Hub-Signature header.
    Sha1Only,
    None,
}

impl<'a> Post<'a> {
    fn new(event: &'a str, delivery: &'a str, body: Vec<u8>) -> Self {
        Self {
            event: Some(event),
            delivery: Some(delivery),
            hook: Some("123"),
            signature: Sig::With(SECRET),
            body,
        }
    }
}

async fn send(app: &Router, p: Post<'_>) -> (StatusCode, serde_json::Value) {
    let mut req = Request::post("/webhook/github").header("content-type", "application/json");
    if let Some(e) = p.event {
        req = req.header("x-github-event", e);
    }
    if let Some(d) = p.delivery {
        req = req.header("x-github-delivery", d);
    }
    if let Some(h) = p.hook {
        req = req.header("x-github-hook-id", h);
    }
    match &p.signature {
        Sig::With(s) => {
            req = req.header(
                "x-hub-signature-256",
                sign(&WebhookSecret::new(*s), &p.body),
            );
        }
        Sig::Header(h) => req = req.header("x-hub-signature-256", h.as_str()),
        Sig::Sha1Only => {
            req = req.header(
                "x-hub-signature",
                "sha1=01dc10d0c83e72ed246219cdd91669667fe2ca59",
            )
        }
        Sig::None => {}
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::from(p.body)).expect("request"))
        .await
        .expect("infallible");
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .expect("body");
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (status, json)
}

async fn get(app: &Router, path: &str) -> (StatusCode, String) {
    let resp = app
        .clone()
        .oneshot(Request::get(path).body(Body::empty()).expect("request"))
        .await
        .expect("infallible");
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 24)
        .await
        .expect("body");
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// Waits until no job is queued or running.
async fn settle(db: &Path) -> Vec<JobRow> {
    for _ in 0..500 {
        let jobs = list_jobs(db, None, 100_000).expect("list jobs");
        if jobs
            .iter()
            .all(|j| !matches!(j.state.as_str(), "queued" | "running"))
        {
            return jobs;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("jobs did not settle: {:?}", list_jobs(db, None, 100));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_corpus_payload_is_answered_as_specified() {
    let d = daemon();
    let mut n = 0;
    let mut queued = 0;
    for event in [
        "pull_request",
        "package",
        "registry_package",
        "workflow_run",
        "push",
        "ping",
    ] {
        let mut files: Vec<_> = std::fs::read_dir(corpus().join(event))
            .expect("corpus dir")
            .map(|e| e.expect("entry").path())
            .collect();
        files.sort();
        for f in files {
            let name = f.file_name().expect("name").to_string_lossy().into_owned();
            let action = name.split('.').next().unwrap_or_default().to_owned();
            let id = format!("corpus-{n}");
            n += 1;
            let (status, body) = send(
                &d.app,
                Post::new(event, &id, std::fs::read(&f).expect("read")),
            )
            .await;
            let acts = event == "pull_request"
                && matches!(
                    action.as_str(),
                    "opened" | "reopened" | "synchronize" | "ready_for_review" | "closed"
                );
            if acts {
                assert_eq!(status, StatusCode::ACCEPTED, "{event}/{name}: {body}");
                assert_eq!(body["status"], "queued", "{event}/{name}");
                queued += 1;
            } else {
                assert_eq!(status, StatusCode::OK, "{event}/{name}: {body}");
                let want = if event == "ping" { "pong" } else { "ignored" };
                assert_eq!(body["status"], want, "{event}/{name}: {body}");
                assert!(body["reason"].is_string(), "{event}/{name}: {body}");
            }
        }
    }
    assert!(n >= 40, "{n} payloads");
    // Realistic ghcr.io publishes and a successful PR workflow run.
    let (s, b) = send(
        &d.app,
        Post::new(
            "package",
            "ghcr-1",
            fixture("ghcr-package-published-pr-42.json"),
        ),
    )
    .await;
    assert_eq!(
        (s, b["jobs"].as_array().map(Vec::len)),
        (StatusCode::ACCEPTED, Some(2))
    );
    let (s, _) = send(
        &d.app,
        Post::new(
            "registry_package",
            "ghcr-2",
            fixture("ghcr-registry_package-published-main.json"),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let (s, _) = send(
        &d.app,
        Post::new(
            "workflow_run",
            "run-1",
            fixture("workflow_run-completed-pull_request.json"),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED);

    let jobs = settle(&d.db).await;
    let done = jobs.iter().filter(|j| j.state == "done").count();
    let superseded = jobs.iter().filter(|j| j.state == "superseded").count();
    assert_eq!(done + superseded, jobs.len(), "{jobs:?}");
    assert_eq!(jobs.len(), queued + 4);
    assert_eq!(d.fake.calls().len(), done);
    assert!(d.fake.calls().contains(&Intent::PullImage {
        image: "ghcr.io/acme/shop:pr-42".into()
    }));
    assert_eq!(
        list_deliveries(&d.db, 1000).expect("deliveries").len(),
        n + 3
    );
    assert!(
        d.fake.reconciles.load(Ordering::SeqCst) >= 1,
        "reconcile runs at start"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signature_vectors_over_the_router() {
    // GitHub's documented vector: the signature is accepted (so the daemon goes on to
    // parse "Hello, World!", which is not JSON: 400, not 401).
    let v: serde_json::Value = serde_json::from_slice(
        &std::fs::read(corpus().join("signature/github-docs-vector.json")).expect("read"),
    )
    .expect("json");
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), "", v["secret"].as_str().expect("secret"));
    let (app, _stop) = codeb_daemon::app_for_tests(&cfg, Arc::new(Fake::default())).expect("app");
    let body = v["payload"].as_str().expect("payload").as_bytes().to_vec();
    let header = v["x_hub_signature_256"]
        .as_str()
        .expect("header")
        .to_owned();
    let mut p = Post::new("push", "docs-1", body.clone());
    p.signature = Sig::Header(header.clone());
    let (s, b) = send(&app, p).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert_eq!(b["reason"], "not_json");
    let mut p = Post::new("push", "docs-2", body);
    p.signature = Sig::Header(header.replace("757107", "757108"));
    assert_eq!(send(&app, p).await.0, StatusCode::UNAUTHORIZED);

    // The further vectors: positive ones are accepted (push is not acted on: 200),
    // negative ones are refused.
    let vectors: Vec<serde_json::Value> = serde_json::from_slice(
        &std::fs::read(corpus().join("signature/vectors.json")).expect("read"),
    )
    .expect("json");
    for (i, v) in vectors.iter().enumerate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = config(dir.path(), "", v["secret"].as_str().expect("secret"));
        let (app, _stop) =
            codeb_daemon::app_for_tests(&cfg, Arc::new(Fake::default())).expect("app");
        let payload = v["payload"].as_str().expect("payload").as_bytes().to_vec();
        let id = format!("vec-{i}");
        let (header, want) = match (
            v["expected"].as_str(),
            v["expected_invalid_signature"].as_str(),
        ) {
            (Some(h), _) if payload.starts_with(b"{") => (h, StatusCode::OK),
            (Some(h), _) => (h, StatusCode::BAD_REQUEST),
            (None, Some(h)) => (h, StatusCode::UNAUTHORIZED),
            _ => panic!("vector {i} has no signature"),
        };
        let mut p = Post::new("push", &id, payload);
        p.signature = Sig::Header(header.to_owned());
        let (s, b) = send(&app, p).await;
        assert_eq!(s, want, "vector {i} ({}): {b}", v["source"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_the_daemon_keeps_serving() {
    let d = daemon();
    let opened = std::fs::read(corpus().join("pull_request/opened.payload.json")).expect("read");
    let good = sign(&WebhookSecret::new(SECRET), &opened);
    let cases: Vec<(&str, Post, StatusCode, &str)> = vec![
        (
            "wrong secret",
            Post {
                signature: Sig::With("wrong"),
                ..Post::new("pull_request", "b1", opened.clone())
            },
            StatusCode::UNAUTHORIZED,
            "signature_mismatch",
        ),
        (
            "truncated signature",
            Post {
                signature: Sig::Header(good[..40].to_owned()),
                ..Post::new("pull_request", "b2", opened.clone())
            },
            StatusCode::UNAUTHORIZED,
            "signature_malformed",
        ),
        (
            "non-hex signature",
            Post {
                signature: Sig::Header(format!("sha256={}", "g".repeat(64))),
                ..Post::new("pull_request", "b3", opened.clone())
            },
            StatusCode::UNAUTHORIZED,
            "signature_malformed",
        ),
        (
            "sha1= in the 256 header",
            Post {
                signature: Sig::Header("sha1=01dc10d0c83e72ed246219cdd91669667fe2ca59".into()),
                ..Post::new("pull_request", "b4", opened.clone())
            },
            StatusCode::UNAUTHORIZED,
            "signature_malformed",
        ),
        (
            "SHA-1 header only",
            Post {
                signature: Sig::Sha1Only,
                ..Post::new("pull_request", "b5", opened.clone())
            },
            StatusCode::UNAUTHORIZED,
            "signature_sha1_only",
        ),
        (
            "no signature",
            Post {
                signature: Sig::None,
                ..Post::new("pull_request", "b6", opened.clone())
            },
            StatusCode::UNAUTHORIZED,
            "signature_missing",
        ),
        (
            "signature of another body",
            Post {
                signature: Sig::Header(sign(&WebhookSecret::new(SECRET), b"{}")),
                ..Post::new("pull_request", "b7", opened.clone())
            },
            StatusCode::UNAUTHORIZED,
            "signature_mismatch",
        ),
        (
            "empty body",
            Post::new("pull_request", "b8", Vec::new()),
            StatusCode::BAD_REQUEST,
            "not_json",
        ),
        (
            "invalid UTF-8",
            Post::new("pull_request", "b9", b"{\"action\": \"\xff\xfe\"}".to_vec()),
            StatusCode::BAD_REQUEST,
            "not_json",
        ),
        (
            "form-encoded",
            Post::new("pull_request", "b10", b"payload=%7B%7D".to_vec()),
            StatusCode::BAD_REQUEST,
            "not_json",
        ),
        (
            "JSON array",
            Post::new("pull_request", "b11", b"[1,2]".to_vec()),
            StatusCode::BAD_REQUEST,
            "wrong_shape",
        ),
        (
            "JSON of the wrong shape",
            Post::new(
                "pull_request",
                "b12",
                b"{\"action\": \"opened\", \"number\": \"two\"}".to_vec(),
            ),
            StatusCode::BAD_REQUEST,
            "wrong_shape",
        ),
        (
            "no event header",
            Post {
                event: None,
                ..Post::new("pull_request", "b13", opened.clone())
            },
            StatusCode::BAD_REQUEST,
            "bad_header",
        ),
        (
            "no delivery header",
            Post {
                delivery: None,
                ..Post::new("pull_request", "b14", opened.clone())
            },
            StatusCode::BAD_REQUEST,
            "bad_header",
        ),
        (
            "malformed delivery header",
            Post::new("pull_request", "a b\"c", opened.clone()),
            StatusCode::BAD_REQUEST,
            "bad_header",
        ),
        (
            "malformed hook id",
            Post {
                hook: Some("1;2"),
                ..Post::new("pull_request", "b16", opened.clone())
            },
            StatusCode::BAD_REQUEST,
            "bad_header",
        ),
        (
            "malformed event",
            Post::new("Pull Request", "b17", opened.clone()),
            StatusCode::BAD_REQUEST,
            "bad_header",
        ),
    ];
    for (what, post, want, reason) in cases {
        let (s, b) = send(&d.app, post).await;
        assert_eq!(s, want, "{what}: {b}");
        assert_eq!(b["reason"], reason, "{what}: {b}");
    }
    // Huge PR numbers.
    let text = String::from_utf8(opened.clone()).expect("utf-8");
    for (i, n) in [
        "0",
        "4294967296",
        "18446744073709551615",
        "100000000000000000000000",
    ]
    .iter()
    .enumerate()
    {
        let body = text.replacen("\"number\": 2,", &format!("\"number\": {n},"), 1);
        assert_ne!(body, text, "the corpus layout changed");
        let id = format!("huge-{i}");
        let (s, b) = send(&d.app, Post::new("pull_request", &id, body.into_bytes())).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "number {n}: {b}");
    }
    // 26 MB: refused before anything else (no signature is even computed).
    let big = vec![b' '; 26 * 1024 * 1024];
    let (s, b) = send(&d.app, Post::new("pull_request", "big", big)).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{b}");
    // Unknown actions and events: acknowledged, ignored.
    let body = text.replacen("\"action\": \"opened\"", "\"action\": \"teleported\"", 1);
    let (s, b) = send(
        &d.app,
        Post::new("pull_request", "unknown-action", body.into_bytes()),
    )
    .await;
    assert_eq!((s, b["status"].as_str()), (StatusCode::OK, Some("ignored")));
    let (s, b) = send(&d.app, Post::new("star", "unknown-event", b"{}".to_vec())).await;
    assert_eq!((s, b["status"].as_str()), (StatusCode::OK, Some("ignored")));
    // The older of two rotated secrets is still accepted.
    let p = Post {
        signature: Sig::With("older-secret"),
        ..Post::new("pull_request", "rotated", opened.clone())
    };
    assert_eq!(send(&d.app, p).await.0, StatusCode::ACCEPTED);

    // Still serving; every refusal counted by reason.
    assert_eq!(get(&d.app, "/healthz").await.0, StatusCode::OK);
    let (s, m) = get(&d.app, "/metrics").await;
    assert_eq!(s, StatusCode::OK);
    for line in [
        "codeb_daemon_deliveries_total{result=\"rejected\",reason=\"signature_mismatch\"} 2",
        "codeb_daemon_deliveries_total{result=\"rejected\",reason=\"too_large\"} 1",
        "codeb_daemon_deliveries_total{result=\"rejected\",reason=\"signature_sha1_only\"} 1",
        "codeb_daemon_deliveries_total{result=\"accepted\",reason=\"pull_request\"} 1",
        "codeb_daemon_preview_ports_used 3",
    ] {
        assert!(m.contains(line), "{line} missing from\n{m}");
    }
    assert!(
        m.contains("codeb_daemon_ack_duration_seconds_count{status=\"202\"} 1"),
        "{m}"
    );
    // Nothing refused reached the store.
    let ids: Vec<String> = list_deliveries(&d.db, 1000)
        .expect("deliveries")
        .into_iter()
        .map(|r| r.delivery_id)
        .collect();
    assert_eq!(ids.len(), 3, "{ids:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_are_acknowledged_and_run_once() {
    let d = daemon();
    let body = std::fs::read(corpus().join("pull_request/opened.payload.json")).expect("read");
    let (s, _) = send(&d.app, Post::new("pull_request", "dup", body.clone())).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    settle(&d.db).await;
    for _ in 0..3 {
        let (s, b) = send(&d.app, Post::new("pull_request", "dup", body.clone())).await;
        assert_eq!(
            (s, b["status"].as_str()),
            (StatusCode::OK, Some("duplicate"))
        );
    }
    // The same delivery id from another hook is another delivery.
    let p = Post {
        hook: Some("456"),
        ..Post::new("pull_request", "dup", body)
    };
    assert_eq!(send(&d.app, p).await.0, StatusCode::ACCEPTED);
    settle(&d.db).await;
    assert_eq!(d.fake.calls().len(), 2);
}

fn pr_body(pr: u64, sha: &str, action: &str) -> Vec<u8> {
    serde_json::json!({
        "action": action,
        "number": pr,
        "pull_request": {"head": {"sha": sha, "repo": {"full_name": "acme/shop"}}, "labels": []},
        "repository": {"full_name": "acme/shop"}
    })
    .to_string()
    .into_bytes()
}

fn sha(i: usize) -> String {
    format!("{i:040x}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_for_one_pr_is_coalesced_and_nothing_is_lost() {
    let gate = Arc::new(Semaphore::new(0));
    let d = daemon_with(
        "",
        Fake {
            gate: Some(gate.clone()),
            ..Fake::default()
        },
    );
    let n = 200;
    for i in 0..n {
        let id = format!("flood-{i}");
        let (s, _) = send(
            &d.app,
            Post::new("pull_request", &id, pr_body(7, &sha(i), "synchronize")),
        )
        .await;
        assert_eq!(s, StatusCode::ACCEPTED, "delivery {i}");
        if i == 0 {
            // Let the first job start and hold it, so the rest queue up behind it.
            for _ in 0..200 {
                if !d.fake.calls().is_empty() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
    gate.add_permits(1000);
    let jobs = settle(&d.db).await;
    assert_eq!(jobs.len(), n);
    assert_eq!(list_deliveries(&d.db, 1000).expect("deliveries").len(), n);
    let calls = d.fake.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    let Intent::EnsurePreview { head_sha, .. } = &calls[1] else {
        panic!("{calls:?}");
    };
    assert_eq!(head_sha, &sha(n - 1), "the newest push is the one built");
    assert_eq!(
        jobs.iter().filter(|j| j.state == "superseded").count(),
        n - 2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroy_supersedes_queued_ensures_and_prs_run_in_parallel() {
    let gate = Arc::new(Semaphore::new(0));
    let d = daemon_with(
        "max_concurrency = 3",
        Fake {
            gate: Some(gate.clone()),
            ..Fake::default()
        },
    );
    for pr in 1..=5u64 {
        let id = format!("open-{pr}");
        let (s, _) = send(
            &d.app,
            Post::new("pull_request", &id, pr_body(pr, &sha(1), "opened")),
        )
        .await;
        assert_eq!(s, StatusCode::ACCEPTED);
    }
    // PR 1: two more pushes, then closed, while its first job is held.
    for (i, action) in ["synchronize", "synchronize", "closed"].iter().enumerate() {
        let id = format!("pr1-{i}");
        let (s, _) = send(
            &d.app,
            Post::new("pull_request", &id, pr_body(1, &sha(2 + i), action)),
        )
        .await;
        assert_eq!(s, StatusCode::ACCEPTED);
    }
    for _ in 0..200 {
        if d.fake.calls().len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        d.fake.max_running.load(Ordering::SeqCst),
        3,
        "max_concurrency = 3"
    );
    gate.add_permits(1000);
    settle(&d.db).await;
    let pr1: Vec<&'static str> = d
        .fake
        .calls()
        .iter()
        .filter(|i| i.pull_request().is_some_and(|(_, pr)| pr == 1))
        .map(Intent::kind)
        .collect();
    assert_eq!(pr1, ["ensure_preview", "destroy_preview"]);
    assert_eq!(d.fake.calls().len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_retried_with_backoff_then_given_up() {
    let d = daemon_with(
        "max_attempts = 3",
        Fake {
            fail_first: AtomicU32::new(2),
            ..Fake::default()
        },
    );
    let (s, _) = send(
        &d.app,
        Post::new("pull_request", "r1", pr_body(9, &sha(1), "opened")),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let jobs = settle(&d.db).await;
    assert_eq!(jobs.len(), 1);
    assert_eq!(
        (jobs[0].state.as_str(), jobs[0].attempts, jobs[0].runs),
        ("done", 3, 3)
    );
    assert_eq!(jobs[0].last_error.as_deref(), Some("injected failure"));

    let d = daemon_with(
        "max_attempts = 2",
        Fake {
            fail_first: AtomicU32::new(5),
            ..Fake::default()
        },
    );
    let (s, _) = send(
        &d.app,
        Post::new("pull_request", "r2", pr_body(9, &sha(1), "opened")),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let jobs = settle(&d.db).await;
    assert_eq!((jobs[0].state.as_str(), jobs[0].attempts), ("failed", 2));
    let (_, m) = get(&d.app, "/metrics").await;
    assert!(
        m.contains("codeb_daemon_jobs_total{kind=\"ensure_preview\",result=\"retry\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("codeb_daemon_jobs_total{kind=\"ensure_preview\",result=\"failed\"} 1"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unconfigured_repositories_and_events_are_ignored() {
    let d = daemon_with("events = [\"pull_request\"]", Fake::default());
    let mut other =
        serde_json::from_slice::<serde_json::Value>(&pr_body(1, &sha(1), "opened")).expect("json");
    other["repository"]["full_name"] = "someone/else".into();
    let (s, b) = send(
        &d.app,
        Post::new("pull_request", "o1", other.to_string().into_bytes()),
    )
    .await;
    assert_eq!(
        (s, b["status"].as_str()),
        (StatusCode::OK, Some("ignored")),
        "{b}"
    );
    assert!(
        b["reason"]
            .as_str()
            .is_some_and(|r| r.contains("someone/else")),
        "{b}"
    );
    let (s, b) = send(
        &d.app,
        Post::new(
            "workflow_run",
            "o2",
            fixture("workflow_run-completed-pull_request.json"),
        ),
    )
    .await;
    assert_eq!(
        (s, b["status"].as_str()),
        (StatusCode::OK, Some("ignored")),
        "{b}"
    );
    // Names are case-insensitive on GitHub; the configured spelling is used.
    let mut upper =
        serde_json::from_slice::<serde_json::Value>(&pr_body(1, &sha(1), "opened")).expect("json");
    upper["repository"]["full_name"] = "ACME/Shop".into();
    let (s, _) = send(
        &d.app,
        Post::new("pull_request", "o3", upper.to_string().into_bytes()),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    settle(&d.db).await;
    assert_eq!(d.fake.calls().len(), 1);
    assert!(
        matches!(&d.fake.calls()[0], Intent::EnsurePreview { repo, .. } if repo == "acme/shop")
    );
}
