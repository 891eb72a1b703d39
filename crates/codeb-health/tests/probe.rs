//! One probe against real HTTP servers on loopback: one test per failure
//! mode, plus the healthy paths.

mod common;

use std::time::{Duration, Instant};

use codeb_health::{Expectation, Failure, Probe, Prober, USER_AGENT};
use common::{Reply, Server};

fn prober(url: &str) -> Prober {
    prober_with(url, Duration::from_secs(5), &[])
}

fn prober_with(url: &str, timeout: Duration, expect: &[&str]) -> Prober {
    let expect = Expectation::parse_all(expect).expect("test expectations are valid");
    let probe = Probe::new(url)
        .expect("test URL is valid")
        .with_timeout(timeout)
        .with_expectations(expect);
    Prober::new(probe).expect("client builds")
}

#[tokio::test]
async fn healthy_contract_reports_status_latency_and_version() {
    let server = Server::always(Reply::healthy()).await;
    let ok = prober(&server.health_url())
        .probe_once()
        .await
        .expect("healthy");
    assert_eq!(ok.status, 200);
    assert_eq!(ok.version.as_deref(), Some("abc123"));
    assert!(ok.latency < Duration::from_secs(5));

    let heads = server.heads();
    assert_eq!(heads.len(), 1);
    assert!(
        heads[0].starts_with("GET /api/health HTTP/1.1"),
        "{}",
        heads[0]
    );
    assert!(
        heads[0]
            .to_ascii_lowercase()
            .contains(&format!("user-agent: {USER_AGENT}")),
        "{}",
        heads[0]
    );
}

#[tokio::test]
async fn connection_refused_names_the_address() {
    let addr = common::refused_port().await;
    let f = prober(&format!("http://{addr}/api/health"))
        .probe_once()
        .await
        .expect_err("nothing listens");
    assert_eq!(
        f,
        Failure::ConnectionRefused {
            addr: addr.to_string()
        }
    );
    let s = f.to_string();
    assert!(s.contains("connection refused"), "{s}");
    assert!(s.contains(&addr.to_string()), "{s}");
}

#[tokio::test]
async fn dns_failure_names_the_host() {
    let f = prober("http://codeb-health-test.invalid:3000/api/health")
        .probe_once()
        .await
        .expect_err(".invalid never resolves");
    assert!(
        matches!(&f, Failure::Dns { host, .. } if host == "codeb-health-test.invalid"),
        "{f:?}"
    );
    let s = f.to_string();
    assert!(s.contains("DNS"), "{s}");
    assert!(s.contains("codeb-health-test.invalid"), "{s}");
}

#[tokio::test]
async fn silent_server_times_out() {
    let server = Server::always(Reply::Hang).await;
    let timeout = Duration::from_millis(200);
    let started = Instant::now();
    let f = prober_with(&server.health_url(), timeout, &[])
        .probe_once()
        .await
        .expect_err("never answers");
    let took = started.elapsed();
    assert_eq!(f, Failure::Timeout { after: timeout });
    assert_eq!(f.to_string(), "timed out after 0.2s");
    assert!(took < Duration::from_secs(3), "took {took:?}");
}

#[tokio::test]
async fn sick_503_shows_status_and_body_excerpt() {
    let server = Server::always(Reply::sick()).await;
    let f = prober(&server.health_url())
        .probe_once()
        .await
        .expect_err("503");
    assert!(
        matches!(f, Failure::HttpStatus { status: 503, .. }),
        "{f:?}"
    );
    let s = f.to_string();
    assert!(s.contains("503"), "{s}");
    assert!(s.contains("db down"), "{s}");
    assert!(!s.contains('\n'));
}

#[tokio::test]
async fn long_error_page_excerpt_is_one_short_line() {
    let page = format!(
        "<html>\n<body>\n\t{}\u{1b}[31m</body></html>",
        "Internal Server Error ".repeat(50)
    );
    let server = Server::always(Reply::new(500, page)).await;
    let f = prober(&server.health_url())
        .probe_once()
        .await
        .expect_err("500");
    let Failure::HttpStatus { excerpt, .. } = &f else {
        panic!("expected HTTP status failure, got {f:?}");
    };
    assert!(excerpt.chars().count() <= 121, "{excerpt}");
    assert!(
        excerpt.starts_with("<html> <body> Internal Server Error"),
        "{excerpt}"
    );
    assert!(!f.to_string().chars().any(char::is_control), "{f}");
}

#[tokio::test]
async fn non_json_200_is_healthy_without_expectations() {
    let server = Server::always(Reply::new(200, "OK")).await;
    let ok = prober(&server.health_url())
        .probe_once()
        .await
        .expect("plain 200 is healthy");
    assert_eq!(ok.version, None);
}

#[tokio::test]
async fn non_json_200_is_invalid_json_with_expectations() {
    let server = Server::always(Reply::new(200, "OK")).await;
    let f = prober_with(
        &server.health_url(),
        Duration::from_secs(5),
        &["version=abc"],
    )
    .probe_once()
    .await
    .expect_err("expectations need JSON");
    assert!(matches!(f, Failure::InvalidJson { .. }), "{f:?}");
    assert!(f.to_string().contains("invalid JSON"), "{f}");
}

#[tokio::test]
async fn degraded_status_is_not_ok() {
    let server = Server::always(Reply::json(200, r#"{"status":"degraded"}"#)).await;
    let f = prober(&server.health_url())
        .probe_once()
        .await
        .expect_err("degraded");
    assert_eq!(
        f,
        Failure::StatusNotOk {
            status: "degraded".into(),
            error: None
        }
    );
    assert!(f.to_string().contains("degraded"), "{f}");
}

#[tokio::test]
async fn expectation_mismatch_and_missing_key() {
    let server = Server::always(Reply::json(
        200,
        r#"{"status":"ok","version":"abc","build":{"sha":"f00"}}"#,
    ))
    .await;

    let f = prober_with(
        &server.health_url(),
        Duration::from_secs(5),
        &["version=def"],
    )
    .probe_once()
    .await
    .expect_err("mismatch");
    assert_eq!(
        f,
        Failure::ExpectationMismatch {
            key: "version".into(),
            expected: "def".into(),
            actual: Some("abc".into()),
        }
    );
    let s = f.to_string();
    assert!(
        s.contains("version") && s.contains("def") && s.contains("abc"),
        "{s}"
    );

    let f = prober_with(
        &server.health_url(),
        Duration::from_secs(5),
        &["commit=abc"],
    )
    .probe_once()
    .await
    .expect_err("missing");
    assert!(
        matches!(&f, Failure::ExpectationMismatch { key, actual: None, .. } if key == "commit"),
        "{f:?}"
    );
    assert!(f.to_string().contains("missing"), "{f}");

    prober_with(
        &server.health_url(),
        Duration::from_secs(5),
        &["version=abc", "build.sha=f00"],
    )
    .probe_once()
    .await
    .expect("all expectations hold");
}

#[tokio::test]
async fn https_to_a_plain_server_is_a_tls_error() {
    let (addr, task) = common::not_tls_server().await;
    let f = prober(&format!("https://{addr}/api/health"))
        .probe_once()
        .await
        .expect_err("not TLS");
    task.abort();
    assert!(matches!(f, Failure::Tls { .. }), "{f:?}");
    assert!(f.to_string().starts_with("TLS error"), "{f}");
}

#[tokio::test]
async fn same_host_redirects_are_followed() {
    let server = Server::start(|_, path| match path {
        "/api/health" => Reply::redirect(307, "/api/health/"),
        "/api/health/" => Reply::healthy(),
        _ => Reply::new(404, "not found"),
    })
    .await;
    let ok = prober(&server.health_url())
        .probe_once()
        .await
        .expect("redirect followed");
    assert_eq!(ok.status, 200);
    assert_eq!(server.hits(), 2);
}

#[tokio::test]
async fn redirects_to_other_hosts_are_not_followed() {
    let server = Server::always(Reply::redirect(302, "http://elsewhere.invalid/api/health")).await;
    let f = prober(&server.health_url())
        .probe_once()
        .await
        .expect_err("other host");
    assert!(
        matches!(f, Failure::HttpStatus { status: 302, .. }),
        "{f:?}"
    );
    assert!(f.to_string().contains("elsewhere.invalid"), "{f}");
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn redirect_loops_stop_after_three() {
    let server = Server::always(Reply::redirect(302, "/api/health")).await;
    let f = prober(&server.health_url())
        .probe_once()
        .await
        .expect_err("loop");
    assert!(
        matches!(f, Failure::HttpStatus { status: 302, .. }),
        "{f:?}"
    );
    // The original request plus three followed redirects.
    assert_eq!(server.hits(), 4);
}
