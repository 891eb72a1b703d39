//! `codeb-daemon` as a real process over loopback: GitHub's example payloads and signature
//! vectors, bad input, duplicate and flooded deliveries, SIGKILL at an arbitrary point
//! (nothing accepted is lost, nothing finished runs again) and SIGTERM (exit 0 promptly).
//!
//! Bodies are signed with `codeb-daemon sign`, itself checked against GitHub's documented
//! vector first. Jobs reach the real preview service, configured against dead local ports
//! with `max_attempts = 1`, so every job ends (done or failed) after exactly one run.
//!
//! Bad input tried: wrong secret, truncated signature, non-hex signature, `sha1=` in the 256
//! header, the SHA-1 header only, no signature header, empty body, a 26 MB body, invalid
//! UTF-8, JSON of the wrong shape, PR numbers 0 / 2^32 / 10^23, an unknown action, an
//! unknown event, a missing delivery id, duplicate delivery ids, 100 deliveries for one PR.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{codeb, dead_port, repo, run, tempdir};

const SECRET: &str = "integration-secret";

fn corpus() -> PathBuf {
    let p = repo().join("tests/corpora/github-webhooks");
    assert!(
        p.is_dir(),
        "the webhook corpus is missing at {}",
        p.display()
    );
    p
}

fn fixture(name: &str) -> Vec<u8> {
    let p = repo().join("crates/codeb-github/tests/fixtures").join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// `X-Hub-Signature-256` of `body` under `secret`, from `codeb-daemon sign`.
fn sign(secret: &str, body: &[u8]) -> String {
    let mut child = codeb("codeb-daemon")
        .arg("sign")
        .env("CODEB_WEBHOOK_SECRET", secret)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn codeb-daemon sign");
    let mut stdin = child.stdin.take().expect("stdin");
    let data = body.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().expect("codeb-daemon sign");
    writer.join().expect("writer").expect("write body");
    assert!(
        out.status.success(),
        "sign: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

/// One HTTP/1.1 request on a fresh connection; returns status and body.
///
/// Raw on purpose, not the test bed's client (`crate::infra::http_request`): the daemon may
/// answer 413 and close while a too-big body is still being written, and the test needs that
/// answer; an HTTP client reports the broken pipe of the unfinished upload instead.
fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the daemon");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    s.set_write_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).expect("write head");
    // The daemon may answer (413) and close before a big body is through: keep what it said.
    let _ = s.write_all(body);
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let text = String::from_utf8_lossy(&resp).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer to {method} {path}: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

struct Daemon {
    child: Child,
    port: u16,
    config: PathBuf,
    log: PathBuf,
    secrets: String,
}

impl Daemon {
    fn config(dir: &Path, port: u16) -> PathBuf {
        let dead = dead_port();
        std::fs::create_dir_all(dir.join("quadlet")).expect("quadlet dir");
        std::fs::write(
            dir.join("port-manifest.yaml"),
            "version: 1\nprojects:\n  hello-world: {}\n",
        )
        .expect("manifest");
        let text = format!(
            r#"listen = "127.0.0.1:{port}"
state_dir = "state"
max_attempts = 1
shutdown_grace = "5s"
[previews]
github_api_url = "http://127.0.0.1:{dead}"
caddy_admin = "http://127.0.0.1:{dead}"
quadlet_dir = "{quadlet}"
manifest = "{manifest}"
[previews.repos."Codertocat/Hello-World"]
project = "hello-world"
image = "ghcr.io/codertocat/hello-world"
"#,
            quadlet = dir.join("quadlet").display(),
            manifest = dir.join("port-manifest.yaml").display(),
        );
        let path = dir.join("daemon.toml");
        std::fs::write(&path, text).expect("config");
        path
    }

    fn start(dir: &Path, secrets: &str) -> Daemon {
        let port = dead_port();
        let config = Self::config(dir, port);
        Self::start_with(&config, port, secrets)
    }

    fn start_with(config: &Path, port: u16, secrets: &str) -> Daemon {
        let log = config.with_file_name(format!(
            "daemon-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        let child = codeb("codeb-daemon")
            .args(["serve", "--config"])
            .arg(config)
            .env("CODEB_WEBHOOK_SECRET", secrets)
            .env("CODEB_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn codeb-daemon serve");
        let mut d = Daemon {
            child,
            port,
            config: config.to_owned(),
            log,
            secrets: secrets.to_owned(),
        };
        d.wait_ready();
        d
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("codeb-daemon exited with {status}:\n{}", self.log_text());
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok()
                && http(self.port, "GET", "/healthz", &[], b"").0 == 200
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("codeb-daemon not ready in 15 s:\n{}", self.log_text());
    }

    fn post(
        &self,
        event: &str,
        delivery: &str,
        signature: Option<&str>,
        body: &[u8],
    ) -> (u16, Value) {
        let mut h = vec![
            ("content-type", "application/json"),
            ("x-github-event", event),
            ("x-github-delivery", delivery),
            ("x-github-hook-id", "4242"),
        ];
        if let Some(s) = signature {
            h.push(("x-hub-signature-256", s));
        }
        let (status, body) = http(self.port, "POST", "/webhook/github", &h, body);
        (status, serde_json::from_str(&body).unwrap_or(Value::Null))
    }

    fn list(&self, what: &str) -> Vec<Value> {
        let r = run(codeb("codeb-daemon")
            .args([what, "--limit", "100000", "--config"])
            .arg(&self.config)
            .env("CODEB_WEBHOOK_SECRET", &self.secrets));
        assert_eq!(r.code, 0, "codeb-daemon {what}: {}", r.all());
        serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{what} JSON: {e}: {}", r.stdout))
    }

    /// Waits until no job is queued or running; returns the jobs.
    fn settle(&self) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let jobs = self.list("jobs");
            if jobs
                .iter()
                .all(|j| j["state"] != "queued" && j["state"] != "running")
            {
                return jobs;
            }
            assert!(
                Instant::now() < deadline,
                "jobs did not settle: {jobs:#?}\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn terminate(mut self) -> (Option<i32>, Duration) {
        let pid = self.child.id().to_string();
        let start = Instant::now();
        let r = run(std::process::Command::new("kill").args(["-TERM", &pid]));
        assert_eq!(r.code, 0, "kill -TERM: {}", r.all());
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return (status.code(), start.elapsed());
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "no exit 20 s after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn kill9(mut self) {
        self.child.kill().expect("SIGKILL");
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn daemon_sign_matches_githubs_documented_vector() {
    let v: Value = serde_json::from_slice(
        &std::fs::read(corpus().join("signature/github-docs-vector.json")).expect("read"),
    )
    .expect("json");
    let got = sign(
        v["secret"].as_str().expect("secret"),
        v["payload"].as_str().expect("payload").as_bytes(),
    );
    assert_eq!(got, v["x_hub_signature_256"].as_str().expect("header"));
}

#[test]
fn daemon_answers_corpus_and_bad_input_and_keeps_serving() {
    let dir = tempdir();
    let d = Daemon::start(dir.path(), &format!("{SECRET},previous-secret"));
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
            let body = std::fs::read(&f).expect("read");
            let id = format!("corpus-{n}");
            n += 1;
            let (status, answer) = d.post(event, &id, Some(&sign(SECRET, &body)), &body);
            let acts = event == "pull_request"
                && [
                    "opened",
                    "reopened",
                    "synchronize",
                    "ready_for_review",
                    "closed",
                ]
                .contains(&action.as_str());
            if acts {
                assert_eq!(
                    (status, &answer["status"]),
                    (202, &Value::from("queued")),
                    "{event}/{name}"
                );
                queued += 1;
            } else {
                assert_eq!(status, 200, "{event}/{name}: {answer}");
                assert!(answer["reason"].is_string(), "{event}/{name}: {answer}");
            }
        }
    }
    assert!(n >= 40, "{n} corpus payloads");
    // A realistic ghcr.io publish for a repository this daemon does not serve: ignored.
    let ghcr = fixture("ghcr-package-published-pr-42.json");
    let (s, a) = d.post("package", "ghcr-1", Some(&sign(SECRET, &ghcr)), &ghcr);
    assert_eq!((s, &a["status"]), (200, &Value::from("ignored")), "{a}");

    // Bad input.
    let opened = std::fs::read(corpus().join("pull_request/opened.payload.json")).expect("read");
    let good = sign(SECRET, &opened);
    let sha1 = "sha1=01dc10d0c83e72ed246219cdd91669667fe2ca59";
    let nonhex = format!("sha256={}", "z".repeat(64));
    let wrong = sign("not-the-secret", &opened);
    let cases: Vec<(&str, Option<&str>, &[u8], u16)> = vec![
        ("wrong secret", Some(&wrong), &opened, 401),
        (
            "truncated signature",
            Some(&good[..good.len() - 1]),
            &opened,
            401,
        ),
        ("non-hex signature", Some(&nonhex), &opened, 401),
        ("sha1= only", Some(sha1), &opened, 401),
        ("no signature", None, &opened, 401),
    ];
    for (i, (what, sig, body, want)) in cases.into_iter().enumerate() {
        let (s, a) = d.post("pull_request", &format!("bad-{i}"), sig, body);
        assert_eq!(s, want, "{what}: {a}");
    }
    let (s, _) = http(
        d.port,
        "POST",
        "/webhook/github",
        &[
            ("x-github-event", "pull_request"),
            ("x-github-delivery", "sha1-header"),
            ("x-hub-signature", sha1),
        ],
        &opened,
    );
    assert_eq!(s, 401, "X-Hub-Signature (SHA-1) alone");
    let opened_text = String::from_utf8(opened.clone()).expect("utf-8");
    let edit = |from: &str, to: &str| {
        let out = opened_text.replacen(from, to, 1);
        assert_ne!(out, opened_text, "the corpus no longer has {from}");
        out.into_bytes()
    };
    let signed_bad: Vec<(&str, Vec<u8>, u16)> = vec![
        ("empty body", Vec::new(), 400),
        ("invalid UTF-8", b"{\"action\": \"\xc3\x28\"}".to_vec(), 400),
        (
            "wrong shape",
            b"{\"action\": \"opened\", \"pull_request\": []}".to_vec(),
            400,
        ),
        ("PR number 0", edit("\"number\": 2,", "\"number\": 0,"), 400),
        (
            "PR number 2^32",
            edit("\"number\": 2,", "\"number\": 4294967296,"),
            400,
        ),
        (
            "PR number 10^23",
            edit("\"number\": 2,", "\"number\": 100000000000000000000000,"),
            400,
        ),
        (
            "unknown action",
            edit("\"action\": \"opened\"", "\"action\": \"levitated\""),
            200,
        ),
    ];
    for (i, (what, body, want)) in signed_bad.into_iter().enumerate() {
        let (s, a) = d.post(
            "pull_request",
            &format!("signed-bad-{i}"),
            Some(&sign(SECRET, &body)),
            &body,
        );
        assert_eq!(s, want, "{what}: {a}");
    }
    let (s, _) = d.post(
        "sponsorship",
        "unknown-event",
        Some(&sign(SECRET, b"{}")),
        b"{}",
    );
    assert_eq!(s, 200, "unknown event");
    let (s, _) = http(
        d.port,
        "POST",
        "/webhook/github",
        &[
            ("x-github-event", "pull_request"),
            ("x-hub-signature-256", &good),
        ],
        &opened,
    );
    assert_eq!(s, 400, "no X-GitHub-Delivery");
    let big = vec![b'{'; 26 * 1024 * 1024];
    let (s, _) = d.post("pull_request", "big", Some(&good), &big);
    assert_eq!(s, 413, "26 MB body");

    // Duplicates: acknowledged, stored once.
    for _ in 0..3 {
        let (s, a) = d.post(
            "pull_request",
            "corpus-0",
            Some(&sign(SECRET, &opened)),
            &opened,
        );
        assert_eq!((s, &a["status"]), (200, &Value::from("duplicate")), "{a}");
    }
    // The previous secret still works (rotation).
    let (s, _) = d.post(
        "pull_request",
        "rotated",
        Some(&sign("previous-secret", &opened)),
        &opened,
    );
    assert_eq!(s, 202);
    queued += 1;

    // A flood for one PR from 4 connections at once: every delivery accepted and stored.
    let sync = std::fs::read(corpus().join("pull_request/synchronize.payload.json")).expect("read");
    let sig = sign(SECRET, &sync);
    let port = d.port;
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (sync, sig) = (sync.clone(), sig.clone());
            std::thread::spawn(move || {
                for i in 0..25 {
                    let id = format!("flood-{t}-{i}");
                    let h = [
                        ("x-github-event", "pull_request"),
                        ("x-github-delivery", id.as_str()),
                        ("x-hub-signature-256", sig.as_str()),
                    ];
                    let (s, b) = http(port, "POST", "/webhook/github", &h, &sync);
                    assert_eq!(s, 202, "{id}: {b}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("flood thread");
    }
    queued += 100;

    assert_eq!(
        http(d.port, "GET", "/healthz", &[], b"").0,
        200,
        "still serving"
    );
    let jobs = d.settle();
    assert_eq!(jobs.len(), queued, "one job per acting delivery");
    for j in &jobs {
        let state = j["state"].as_str().unwrap_or_default();
        match state {
            "superseded" => assert_eq!(j["runs"], 0, "{j}"),
            "done" | "failed" => assert_eq!(j["runs"], 1, "{j}"),
            other => panic!("job in state {other}: {j}"),
        }
    }
    assert!(
        jobs.iter().any(|j| j["state"] == "superseded"),
        "100 deliveries for one PR coalesce"
    );
    let deliveries = d.list("deliveries");
    let stored = deliveries.len();
    // Refused ones are not stored; duplicates are stored once.
    assert_eq!(stored, n + 1 + 1 + 1 + 1 + 100, "{deliveries:#?}");
    let (s, metrics) = http(d.port, "GET", "/metrics", &[], b"");
    assert_eq!(s, 200);
    for needle in [
        "codeb_daemon_deliveries_total{result=\"rejected\",reason=\"signature_mismatch\"}",
        "codeb_daemon_deliveries_total{result=\"rejected\",reason=\"too_large\"} 1",
        "codeb_daemon_deliveries_total{result=\"duplicate\",reason=\"pull_request\"} 3",
        "codeb_daemon_jobs_total{kind=\"ensure_preview\",result=\"superseded\"}",
        "codeb_daemon_ack_duration_seconds_bucket",
        "codeb_daemon_preview_ports_total",
    ] {
        assert!(metrics.contains(needle), "{needle} missing:\n{metrics}");
    }

    // SIGTERM: exits 0, promptly.
    let (code, took) = d.terminate();
    assert_eq!(code, Some(0));
    assert!(took < Duration::from_secs(10), "SIGTERM took {took:?}");
}

#[test]
fn signature_vectors_over_loopback() {
    let vectors: Vec<Value> = serde_json::from_slice(
        &std::fs::read(corpus().join("signature/vectors.json")).expect("read"),
    )
    .expect("json");
    let dir = tempdir();
    for (i, v) in vectors.iter().enumerate() {
        // One daemon per vector: a negative vector may be another vector's valid signature.
        let sub = dir.path().join(format!("v{i}"));
        std::fs::create_dir_all(&sub).expect("dir");
        let d = Daemon::start(&sub, v["secret"].as_str().expect("secret"));
        let payload = v["payload"].as_str().expect("payload").as_bytes();
        let (sig, want) = match (
            v["expected"].as_str(),
            v["expected_invalid_signature"].as_str(),
        ) {
            // "Hello, World!" is not JSON: accepted signature, then 400.
            (Some(s), _) if !payload.starts_with(b"{") => (s, 400),
            (Some(s), _) => (s, 200),
            (None, Some(s)) => (s, 401),
            _ => panic!("vector {i} has no signature"),
        };
        let (s, a) = d.post("push", &format!("v{i}"), Some(sig), payload);
        assert_eq!(s, want, "vector {i} ({}): {a}", v["source"]);
        let (code, _) = d.terminate();
        assert_eq!(code, Some(0));
    }
}

#[test]
fn sigkill_loses_nothing_accepted_and_reruns_nothing_finished() {
    let dir = tempdir();
    let d = Daemon::start(dir.path(), SECRET);
    let (config, port) = (d.config.clone(), d.port);
    let text = String::from_utf8(
        std::fs::read(corpus().join("pull_request/synchronize.payload.json")).expect("read"),
    )
    .expect("utf-8");
    let n = 60;
    // Six PRs, ten pushes each, interleaved; signed up front so they arrive back to back.
    let bodies: Vec<(Vec<u8>, String)> = (1..=6)
        .map(|pr| {
            let body = text
                .replacen("\"number\": 2,", &format!("\"number\": {pr},"), 1)
                .into_bytes();
            let sig = sign(SECRET, &body);
            (body, sig)
        })
        .collect();
    for i in 0..n {
        let (body, sig) = &bodies[i % 6];
        let (s, a) = d.post("pull_request", &format!("k-{i}"), Some(sig), body);
        assert_eq!(s, 202, "delivery {i}: {a}");
    }
    d.kill9();
    let pending = run(codeb("codeb-daemon")
        .args(["jobs", "--config"])
        .arg(&config)
        .env("CODEB_WEBHOOK_SECRET", SECRET));
    let pending: Vec<Value> = serde_json::from_str(&pending.stdout).expect("jobs JSON");
    eprintln!(
        "at SIGKILL: {} of {n} jobs queued or running",
        pending
            .iter()
            .filter(|j| j["state"] == "queued" || j["state"] == "running")
            .count()
    );

    let d = Daemon::start_with(&config, port, SECRET);
    let deliveries = d.list("deliveries");
    assert_eq!(
        deliveries.len(),
        n,
        "every acknowledged delivery survived SIGKILL"
    );
    let jobs = d.settle();
    assert_eq!(jobs.len(), n, "every job survived SIGKILL");
    let summary = |jobs: &[Value]| -> Vec<(i64, String, i64, Option<i64>)> {
        let mut v: Vec<_> = jobs
            .iter()
            .map(|j| {
                (
                    j["id"].as_i64().unwrap_or(-1),
                    j["state"].as_str().unwrap_or_default().to_owned(),
                    j["runs"].as_i64().unwrap_or(-1),
                    j["finished_at"].as_i64(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let before = summary(&jobs);
    for (id, state, runs, _) in &before {
        match state.as_str() {
            "done" | "failed" => assert_eq!(*runs, 1, "job {id} finished {runs} times"),
            "superseded" => assert_eq!(*runs, 0, "job {id}"),
            other => panic!("job {id} is {other}"),
        }
    }
    // Per PR, the newest push is never coalesced away.
    for pr in 1..=6 {
        let key = format!("Codertocat/Hello-World#{pr}");
        let newest = jobs
            .iter()
            .filter(|j| j["key"] == key.as_str())
            .max_by_key(|j| j["id"].as_i64())
            .expect("a job per PR");
        assert_ne!(newest["state"], "superseded", "{newest}");
    }
    // Another restart runs nothing again.
    let (code, _) = d.terminate();
    assert_eq!(code, Some(0));
    let d = Daemon::start_with(&config, port, SECRET);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        summary(&d.settle()),
        before,
        "finished jobs ran again after a restart"
    );
}

#[test]
fn check_config_validates_and_explains() {
    let dir = tempdir();
    let cfg = dir.path().join("d.toml");
    std::fs::write(&cfg, "listen = \"127.0.0.1:3102\"\nstate_dir = \"state\"\n").expect("write");
    let check = |secret: Option<&str>| {
        let mut c = codeb("codeb-daemon");
        c.args(["check-config", "--config"]).arg(&cfg);
        if let Some(s) = secret {
            c.env("CODEB_WEBHOOK_SECRET", s);
        }
        run(&mut c)
    };
    let r = check(Some("s"));
    assert_eq!(r.code, 0, "minimal config: {}", r.all());
    let r = check(None);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("CODEB_WEBHOOK_SECRET"), "{}", r.all());

    // The shipped example, with its secret file made real and private.
    let secret = dir.path().join("webhook-secret");
    std::fs::write(&secret, "abc\n").expect("write");
    let example =
        std::fs::read_to_string(repo().join("templates/systemd/daemon.toml")).expect("read");
    let example = example.replace("/etc/codeb/webhook-secret", &secret.display().to_string());
    assert!(
        example.contains(&secret.display().to_string()),
        "the example names its secret file"
    );
    std::fs::write(&cfg, &example).expect("write");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let r = check(None);
    assert_eq!(r.code, 1, "world-readable secret file: {}", r.all());
    assert!(r.stderr.contains("chmod o-rwx"), "{}", r.all());
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let r = check(None);
    assert_eq!(r.code, 0, "templates/systemd/daemon.toml: {}", r.all());

    let r = run(codeb("codeb-daemon")
        .args(["check-config", "--config"])
        .arg(dir.path().join("missing.toml"))
        .env("CODEB_WEBHOOK_SECRET", "s"));
    assert_eq!(r.code, 2, "unreadable config: {}", r.all());
    std::fs::write(
        &cfg,
        "listen = \"127.0.0.1:3102\"\nstate_dir = \"s\"\nmax_concurency = 3\n",
    )
    .expect("write");
    let r = check(Some("s"));
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stderr.contains("max_concurency"),
        "names the unknown key: {}",
        r.all()
    );

    // The [previews] section is checked too.
    let token = dir.path().join("gh-token");
    std::fs::write(&token, "t\n").expect("write");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let base = "listen = \"127.0.0.1:3102\"\nstate_dir = \"s\"\n[previews]\n";
    for (section, needle) in [
        ("ttl = \"soon\"\n", "ttl `soon`"),
        ("runtime = \"docker\"\n", "expected auto, systemd or podman"),
        (
            "domain_pattern = \"preview.example.com\"\n",
            "must contain {pr}",
        ),
        (
            &format!("github_token_file = \"{}\"\n", token.display()),
            "chmod 600",
        ),
        (
            "[previews.repos.\"acme\"]\nproject = \"shop\"\nimage = \"ghcr.io/acme/shop\"\n",
            "owner/name",
        ),
        (
            "[previews.repos.\"acme/shop\"]\nproject = \"Shop\"\nimage = \"ghcr.io/acme/shop\"\n",
            "DNS label",
        ),
    ] {
        std::fs::write(&cfg, format!("{base}{section}")).expect("write");
        let r = check(Some("s"));
        assert_eq!(r.code, 1, "{section}: {}", r.all());
        assert!(
            r.stderr.contains(needle),
            "{section}: expected {needle:?} in {}",
            r.all()
        );
    }
}

/// A daemon whose config has `intake` appended as its `[intake]` table.
fn daemon_with_intake(dir: &Path, intake: &str) -> Daemon {
    let port = dead_port();
    let config = Daemon::config(dir, port);
    let mut text = std::fs::read_to_string(&config).expect("config");
    text.push_str("[intake]\n");
    text.push_str(intake);
    std::fs::write(&config, text).expect("config");
    Daemon::start_with(&config, port, SECRET)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// How a hostile connection ended: closed by the daemon (with the status it answered, if
/// any) after this long, or still open when the client gave up.
fn ended(stream: &mut TcpStream, start: Instant, give_up: Duration) -> Option<(Duration, u16)> {
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while start.elapsed() < give_up {
        match stream.read(&mut buf) {
            Ok(0) => {
                let status = String::from_utf8_lossy(&got)
                    .split_whitespace()
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                return Some((start.elapsed(), status));
            }
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return Some((start.elapsed(), 0)),
        }
    }
    None
}

/// Issue 9 #6 (proved: headers held open 63 s). Clients that send their headers a byte at a
/// time, or their body slowly, are cut off by the header and body timeouts, and the daemon
/// keeps answering everyone else meanwhile.
#[test]
fn slowloris_clients_are_cut_off_by_the_header_and_body_timeouts() {
    let dir = tempdir();
    let d = daemon_with_intake(
        dir.path(),
        "header_read_timeout = \"1s\"\nbody_timeout = \"1s\"\nrequest_timeout = \"3s\"\n",
    );
    let port = d.port;
    let mut clients = Vec::new();
    for i in 0..40 {
        clients.push(std::thread::spawn(move || {
            let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
            let start = Instant::now();
            if i % 2 == 0 {
                // Headers that never end: one more header line every 200 ms.
                let _ = s.write_all(b"POST /webhook/github HTTP/1.1\r\nhost: x\r\n");
                let mut n = 0;
                let _ = s.set_nonblocking(false);
                loop {
                    if start.elapsed() > Duration::from_secs(12) {
                        return ("headers", None);
                    }
                    if s.write_all(format!("x-slow-{n}: y\r\n").as_bytes()).is_err() {
                        break;
                    }
                    n += 1;
                    if let Some(e) = ended(&mut s, Instant::now(), Duration::from_millis(200)) {
                        return ("headers", Some((start.elapsed(), e.1)));
                    }
                }
                ("headers", Some((start.elapsed(), 0)))
            } else {
                // Complete headers, then a body a byte every 200 ms.
                let _ = s.write_all(
                    b"POST /webhook/github HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nx-github-event: ping\r\ncontent-length: 1000\r\n\r\n",
                );
                loop {
                    if start.elapsed() > Duration::from_secs(12) {
                        return ("body", None);
                    }
                    if s.write_all(b" ").is_err() {
                        return ("body", Some((start.elapsed(), 0)));
                    }
                    if let Some(e) = ended(&mut s, Instant::now(), Duration::from_millis(200)) {
                        return ("body", Some((start.elapsed(), e.1)));
                    }
                }
            }
        }));
    }
    // Meanwhile the daemon answers.
    std::thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    assert_eq!(http(port, "GET", "/healthz", &[], b"").0, 200);
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "healthz took {:?}",
        t.elapsed()
    );
    for c in clients {
        let (kind, outcome) = c.join().expect("client thread");
        let (after, status) =
            outcome.unwrap_or_else(|| panic!("a slow {kind} client was never cut off"));
        assert!(
            after < Duration::from_secs(6),
            "a slow {kind} client held its connection for {after:?}"
        );
        if kind == "body" {
            assert!(status == 408 || status == 0, "slow body answered {status}");
        }
    }
    let (status, _) = d.post("ping", "after-slowloris", None, b"{}");
    assert_eq!(status, 401, "still serving");
}

/// Issue 9 #6: 200 clients upload 900 KiB bodies slowly at once. At most
/// `max_webhooks_in_flight` bodies are read at a time (the rest wait, unread, in the kernel),
/// each is cut off by the body timeout, and the daemon's RSS stays bounded (measured from
/// /proc; on a daemon that buffered every body it would grow by 200 × 900 KiB).
#[test]
fn two_hundred_slow_uploads_do_not_grow_memory_unboundedly() {
    let dir = tempdir();
    let d = daemon_with_intake(
        dir.path(),
        "body_timeout = \"2s\"\nrequest_timeout = \"5s\"\nmax_webhooks_in_flight = 16\n",
    );
    let port = d.port;
    let pid = d.child.id();
    let before = rss_kib(pid);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(rss_kib(pid));
                std::thread::sleep(Duration::from_millis(50));
            }
            peak
        })
    };
    const BODY: usize = 900 * 1024;
    let clients: Vec<_> = (0..200)
        .map(|_| {
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
                let _ = s.set_write_timeout(Some(Duration::from_secs(1)));
                let start = Instant::now();
                let head = format!(
                    "POST /webhook/github HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nx-github-event: ping\r\ncontent-length: {}\r\n\r\n",
                    BODY + 1
                );
                let _ = s.write_all(head.as_bytes());
                let chunk = vec![b' '; 64 * 1024];
                let mut sent = 0;
                while sent < BODY && start.elapsed() < Duration::from_secs(10) {
                    match s.write(&chunk[..chunk.len().min(BODY - sent)]) {
                        Ok(n) => sent += n,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
                            || e.kind() == std::io::ErrorKind::TimedOut => {}
                        Err(_) => break,
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                // The last byte never comes.
                ended(&mut s, start, Duration::from_secs(20))
            })
        })
        .collect();
    let outcomes: Vec<_> = clients
        .into_iter()
        .map(|c| c.join().expect("client"))
        .collect();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak = sampler.join().expect("sampler");
    let grew_mib = peak.saturating_sub(before) as f64 / 1024.0;
    eprintln!(
        "daemon RSS: {:.1} MiB before, {:.1} MiB peak during 200 slow 900 KiB uploads (+{grew_mib:.1} MiB; 200 buffered bodies would be +176 MiB)",
        before as f64 / 1024.0,
        peak as f64 / 1024.0
    );
    let never = outcomes.iter().filter(|o| o.is_none()).count();
    assert_eq!(never, 0, "{never} slow uploads were never cut off");
    let statuses: std::collections::BTreeMap<u16, usize> =
        outcomes
            .iter()
            .flatten()
            .fold(Default::default(), |mut m, (_, s)| {
                *m.entry(*s).or_default() += 1;
                m
            });
    assert!(
        statuses.keys().all(|s| [0, 408, 503].contains(s)),
        "answers: {statuses:?}"
    );
    assert!(
        grew_mib < 64.0,
        "RSS grew by {grew_mib:.1} MiB under 200 slow uploads (answers {statuses:?})"
    );
    assert_eq!(
        http(port, "GET", "/healthz", &[], b"").0,
        200,
        "still serving"
    );
}

/// Issue 9 #6: the body cap fits the events codeb acts on: the largest payload of those
/// events in GitHub's example corpus, with a wide margin, and a body over it is refused
/// with 413 before it is read.
#[test]
fn body_cap_fits_the_largest_payload_of_the_events_acted_on() {
    let mut largest = (0u64, PathBuf::new());
    for event in [
        "pull_request",
        "package",
        "registry_package",
        "workflow_run",
    ] {
        for e in std::fs::read_dir(corpus().join(event))
            .expect("corpus dir")
            .flatten()
        {
            let len = e.metadata().map(|m| m.len()).unwrap_or(0);
            if len > largest.0 {
                largest = (len, e.path());
            }
        }
    }
    let cap = 1024 * 1024u64;
    eprintln!(
        "largest acted-on payload in the corpus: {} bytes ({}); cap {cap} ({}x)",
        largest.0,
        largest.1.display(),
        cap / largest.0.max(1)
    );
    assert!(largest.0 > 10_000, "the corpus is there");
    assert!(largest.0 * 16 <= cap, "keep a margin of 16x: {largest:?}");
    assert!(cap * 8 < 25 * 1024 * 1024, "well below GitHub's 25 MB");
    let dir = tempdir();
    let d = Daemon::start(dir.path(), SECRET);
    let body = vec![b' '; cap as usize + 1];
    let sig = sign(SECRET, &body);
    let (status, v) = d.post("pull_request", "too-big-1", Some(&sig), &body);
    assert_eq!(status, 413, "{v}");
    let just = std::fs::read(&largest.1).expect("largest");
    let sig = sign(SECRET, &just);
    let (status, v) = d.post(
        largest
            .1
            .parent()
            .and_then(|p| p.file_name())
            .and_then(|n| n.to_str())
            .unwrap_or("pull_request"),
        "largest-1",
        Some(&sig),
        &just,
    );
    assert!(
        status < 300,
        "the largest corpus payload is accepted: {status} {v}"
    );
}
