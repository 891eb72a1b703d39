//! codeb-healthcheck against real HTTP servers, one case per failure mode.

use crate::util::{HttpServer, Reply, codeb, dead_port, output, run, tempdir};
use std::process::Command;

fn hc(url: &str) -> Command {
    let mut c = codeb("codeb-healthcheck");
    c.args([
        "--url",
        url,
        "--interval",
        "100ms",
        "--timeout",
        "1s",
        "--deadline",
        "2s",
    ]);
    c
}

#[test]
fn healthy_app_sets_outputs() {
    let s = HttpServer::start(|_| {
        Some(Reply::json(
            200,
            r#"{"status":"ok","timestamp":"2026-11-26T00:00:00Z","uptime":12,"version":"abc123"}"#,
        ))
    });
    let dir = tempdir();
    let out = dir.path().join("out");
    let r = run(hc(&s.url("/api/health"))
        .args(["--expect", "version=abc123", "--successes", "3"])
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_OUTPUT", &out));
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(output(&out, "healthy").as_deref(), Some("true"));
    assert_eq!(output(&out, "attempts").as_deref(), Some("3"));
    let latency: u64 = output(&out, "latency_ms")
        .and_then(|l| l.parse().ok())
        .expect("latency_ms is a number");
    assert!(latency < 2000);
    assert!(r.stdout.contains("version abc123"), "{}", r.all());
}

#[test]
fn becomes_healthy_after_booting() {
    let s = HttpServer::start(|n| {
        Some(if n < 3 {
            Reply::json(503, r#"{"status":"error","error":"booting"}"#)
        } else {
            Reply::json(200, r#"{"status":"ok"}"#)
        })
    });
    let r = run(&mut hc(&s.url("/api/health")));
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(
        r.stderr.matches("HTTP 503").count(),
        3,
        "one line per failing probe: {}",
        r.all()
    );
    assert!(r.stdout.contains("after 4 probes"), "{}", r.all());
    assert_eq!(
        s.hits.load(std::sync::atomic::Ordering::SeqCst),
        4,
        "one request per probe"
    );
}

/// Each failure mode ends in exit 1 with a one-line reason naming the key facts.
#[test]
fn each_failure_mode_says_why() {
    let sick = HttpServer::start(|_| {
        Some(Reply::json(
            503,
            r#"{"status":"error","error":"database unreachable"}"#,
        ))
    });
    let degraded = HttpServer::start(|_| Some(Reply::json(200, r#"{"status":"degraded"}"#)));
    let html = HttpServer::start(|_| Some(Reply::text(200, "<html>hello</html>")));
    let old =
        HttpServer::start(|_| Some(Reply::json(200, r#"{"status":"ok","version":"old111"}"#)));
    let hung = HttpServer::start(|_| None);
    let refused = format!("http://127.0.0.1:{}/api/health", dead_port());
    let cases: Vec<(String, Vec<&str>, &str)> = vec![
        (refused, vec![], "connection refused"),
        (
            "http://codeb-test.invalid/api/health".into(),
            vec![],
            "DNS failure",
        ),
        (
            hung.url("/api/health"),
            vec!["--timeout", "300ms"],
            "timed out after 0.3s",
        ),
        (sick.url("/api/health"), vec![], "HTTP 503"),
        (
            html.url("/api/health"),
            vec!["--expect", "version=x"],
            "invalid JSON",
        ),
        (
            degraded.url("/api/health"),
            vec![],
            "status is \"degraded\"",
        ),
        (
            old.url("/api/health"),
            vec!["--expect", "version=new222"],
            "expected \"new222\", got \"old111\"",
        ),
        (old.url("/api/health"), vec!["--expect", "build=7"], "build"),
    ];
    for (url, extra, needle) in cases {
        let dir = tempdir();
        let out = dir.path().join("out");
        let r = run(hc(&url)
            .args(&extra)
            .env("GITHUB_ACTIONS", "true")
            .env("GITHUB_OUTPUT", &out));
        assert_eq!(r.code, 1, "{url} {extra:?}: {}", r.all());
        let probe_line = r
            .stdout
            .lines()
            .find(|l| l.starts_with("probe 1: "))
            .unwrap_or_default();
        assert!(
            probe_line.contains(needle),
            "{url}: probe line {probe_line:?} lacks {needle:?}\n{}",
            r.all()
        );
        assert!(
            r.stdout.contains("::error title=Health check failed::"),
            "{}",
            r.all()
        );
        assert_eq!(output(&out, "healthy").as_deref(), Some("false"));
    }
    // The body excerpt of a failing answer is shown.
    let r = run(&mut hc(&sick.url("/api/health")));
    assert!(r.all().contains("database unreachable"), "{}", r.all());
}

#[test]
fn a_plain_2xx_without_json_is_healthy() {
    let s = HttpServer::start(|_| Some(Reply::text(204, "")));
    let r = run(&mut hc(&s.url("/")));
    assert_eq!(r.code, 0, "{}", r.all());
}

#[test]
fn usage_errors_exit_2() {
    for (args, needle) in [
        (vec!["--url", "ftp://x/"], "http or https"),
        (
            vec!["--url", "http://127.0.0.1:1/", "--interval", "soon"],
            "not a duration",
        ),
        (
            vec!["--url", "http://127.0.0.1:1/", "--expect", "novalue"],
            "KEY=VALUE",
        ),
        (
            vec!["--url", "http://127.0.0.1:1/", "--successes", "0"],
            "successes",
        ),
        (vec![], "--url"),
    ] {
        let r = run(codeb("codeb-healthcheck").args(&args));
        assert_eq!(r.code, 2, "{args:?}: {}", r.all());
        assert!(
            r.all().contains(needle),
            "{args:?} lacks {needle:?}: {}",
            r.all()
        );
    }
}

#[test]
fn a_password_in_the_url_is_masked() {
    let s = HttpServer::start(|_| Some(Reply::json(503, r#"{"status":"error"}"#)));
    let url = format!("http://user:s3cr3tpw@127.0.0.1:{}/api/health", s.port);
    let r = run(codeb("codeb-healthcheck")
        .args(["--url", &url, "--deadline", "300ms", "--interval", "100ms"])
        .env("GITHUB_ACTIONS", "true"));
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stdout.starts_with("::add-mask::s3cr3tpw\n"),
        "{}",
        r.all()
    );
    assert_eq!(
        r.all().matches("s3cr3tpw").count(),
        1,
        "only the mask command carries it: {}",
        r.all()
    );
}
