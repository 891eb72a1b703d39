//! `wait_healthy` against real HTTP servers on loopback: streaks, recovery,
//! deadlines. Timing asserts are deliberately loose (noisy machines).

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use codeb_health::{Attempt, Failure, Policy, Probe, Prober, Report};
use common::{Reply, Server};

/// Generous slack for wall-clock asserts.
const SLACK: Duration = Duration::from_secs(2);

fn prober(url: &str, timeout: Duration) -> Prober {
    let probe = Probe::new(url)
        .expect("test URL is valid")
        .with_timeout(timeout);
    Prober::new(probe).expect("client builds")
}

fn policy(successes: u32, deadline: Duration) -> Policy {
    Policy {
        interval: Duration::from_millis(20),
        deadline,
        start_period: Duration::ZERO,
        successes,
    }
}

/// Runs `wait_healthy`, collecting every attempt passed to `on_probe`.
async fn wait(prober: &Prober, policy: &Policy) -> (Report, Vec<Attempt>) {
    let mut seen = Vec::new();
    let report = prober
        .wait_healthy(policy, |a: &Attempt| seen.push(a.clone()))
        .await;
    (report, seen)
}

#[tokio::test]
async fn becomes_healthy_after_n_failures() {
    const N: usize = 3;
    let server = Server::start(|i, _| {
        if i < N {
            Reply::sick()
        } else {
            Reply::healthy()
        }
    })
    .await;
    let p = prober(&server.health_url(), Duration::from_secs(2));
    let (report, seen) = wait(&p, &policy(1, Duration::from_secs(20))).await;

    assert!(report.healthy, "{report:?}");
    assert_eq!(report.attempts, u32::try_from(N + 1).expect("small"));
    assert_eq!(server.hits(), N + 1);
    assert!(report.latency.is_some());
    assert_eq!(report.version.as_deref(), Some("abc123"));
    // The failures before recovery are remembered.
    let last = report.last_failure.as_ref().expect("there were failures");
    assert!(last.to_string().contains("db down"), "{last}");

    // on_probe saw every attempt, in order, with the right outcome.
    let numbers: Vec<u32> = seen.iter().map(|a| a.number).collect();
    assert_eq!(numbers, vec![1, 2, 3, 4]);
    assert!(seen[..N].iter().all(|a| a.result.is_err() && a.streak == 0));
    assert!(seen[N].result.is_ok());
    assert_eq!(seen[N].streak, 1);
    assert!(seen.iter().all(|a| !a.in_start_period));
}

#[tokio::test]
async fn alternating_server_never_reaches_a_streak_of_three() {
    let server = Server::start(|i, _| {
        if i % 2 == 0 {
            Reply::healthy()
        } else {
            Reply::sick()
        }
    })
    .await;
    let p = prober(&server.health_url(), Duration::from_secs(1));
    let deadline = Duration::from_millis(800);
    let (report, seen) = wait(&p, &policy(3, deadline)).await;

    assert!(!report.healthy, "{report:?}");
    assert!(report.attempts >= 3, "{report:?}");
    // Half the probes passed, but never three in a row.
    assert!(seen.iter().any(|a| a.result.is_ok()));
    assert!(seen.iter().all(|a| a.streak <= 1), "{seen:?}");
    assert!(matches!(
        report.last_failure,
        Some(Failure::HttpStatus { status: 503, .. })
    ));
}

#[tokio::test]
async fn a_failure_resets_the_streak() {
    // ok, FAIL, ok, ok, FAIL, ok, ok, ok → healthy on attempt 8, not before.
    let script = [true, false, true, true, false, true, true, true];
    let server = Server::start(move |i, _| {
        if script.get(i).copied().unwrap_or(true) {
            Reply::healthy()
        } else {
            Reply::sick()
        }
    })
    .await;
    let p = prober(&server.health_url(), Duration::from_secs(2));
    let (report, seen) = wait(&p, &policy(3, Duration::from_secs(20))).await;

    assert!(report.healthy, "{report:?}");
    assert_eq!(report.attempts, 8);
    let streaks: Vec<u32> = seen.iter().map(|a| a.streak).collect();
    assert_eq!(streaks, vec![1, 0, 1, 2, 0, 1, 2, 3]);
}

#[tokio::test]
async fn deadline_expiry_reports_the_last_failure() {
    let server = Server::always(Reply::sick()).await;
    let timeout = Duration::from_secs(1);
    let deadline = Duration::from_millis(700);
    let p = prober(&server.health_url(), timeout);
    let started = Instant::now();
    let (report, seen) = wait(
        &p,
        &Policy {
            interval: Duration::from_millis(100),
            ..policy(1, deadline)
        },
    )
    .await;
    let took = started.elapsed();

    assert!(!report.healthy, "{report:?}");
    assert!(report.attempts >= 2, "{report:?}");
    assert_eq!(report.attempts as usize, seen.len());
    assert_eq!(report.latency, None);
    let last = report
        .last_failure
        .as_ref()
        .expect("failed probes are reported");
    assert!(last.to_string().contains("503"), "{last}");
    assert!(report.elapsed < deadline + timeout + SLACK, "{report:?}");
    assert!(took < deadline + timeout + SLACK, "took {took:?}");
    // It kept probing until close to the deadline (no next probe fits).
    assert!(
        report.elapsed + Duration::from_millis(100) >= deadline - Duration::from_millis(50),
        "{report:?}"
    );
}

#[tokio::test]
async fn probe_timeout_is_clamped_to_the_deadline() {
    // Every probe hangs; the probe timeout alone (10s) would blow the 600ms
    // deadline, so it must be clamped.
    let server = Server::always(Reply::Hang).await;
    let deadline = Duration::from_millis(600);
    let p = prober(&server.health_url(), Duration::from_secs(10));
    let started = Instant::now();
    let (report, _) = wait(&p, &policy(1, deadline)).await;
    let took = started.elapsed();

    assert!(!report.healthy);
    assert!(
        matches!(report.last_failure, Some(Failure::Timeout { after }) if after <= deadline),
        "{report:?}"
    );
    assert!(took < deadline + SLACK, "took {took:?}");
}

#[tokio::test]
async fn refused_until_deadline() {
    let addr = common::refused_port().await;
    let p = prober(&format!("http://{addr}/api/health"), Duration::from_secs(1));
    let (report, seen) = wait(&p, &policy(1, Duration::from_secs(1))).await;
    assert!(!report.healthy);
    assert!(report.attempts >= 2, "{report:?}");
    assert!(
        seen.iter()
            .all(|a| matches!(a.result, Err(Failure::ConnectionRefused { .. })))
    );
}

#[tokio::test]
async fn start_period_failures_are_flagged_and_success_ends_the_wait() {
    let server = Server::start(|i, _| {
        if i < 2 {
            Reply::sick()
        } else {
            Reply::healthy()
        }
    })
    .await;
    let p = prober(&server.health_url(), Duration::from_secs(2));
    let (report, seen) = wait(
        &p,
        &Policy {
            interval: Duration::from_millis(50),
            deadline: Duration::from_secs(30),
            start_period: Duration::from_secs(10),
            successes: 1,
        },
    )
    .await;
    assert!(report.healthy);
    assert_eq!(report.attempts, 3);
    // All three attempts fell inside the (long) start period; the success
    // ended the wait without sitting out the rest of it.
    assert!(seen.iter().all(|a| a.in_start_period), "{seen:?}");
    assert!(report.elapsed < Duration::from_secs(10), "{report:?}");
}

#[tokio::test]
async fn at_least_one_probe_even_with_zero_deadline() {
    let server = Server::always(Reply::healthy()).await;
    let p = prober(&server.health_url(), Duration::from_secs(2));
    let calls = Arc::new(Mutex::new(0u32));
    let counter = Arc::clone(&calls);
    let report = p
        .wait_healthy(&policy(1, Duration::ZERO), move |_| {
            *counter.lock().expect("not poisoned") += 1;
        })
        .await;
    assert_eq!(report.attempts, 1);
    assert_eq!(*calls.lock().expect("not poisoned"), 1);
    // 50ms minimum clamp is usually enough on loopback, but this is a noisy
    // machine: only require that the one probe happened.
    assert!(
        report.healthy || report.last_failure.is_some(),
        "{report:?}"
    );
}
