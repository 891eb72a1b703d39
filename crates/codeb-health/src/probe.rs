//! Probing over HTTP: one probe ([`Prober::probe_once`]) and the
//! wait-until-healthy loop ([`Prober::wait_healthy`]).

use std::net::IpAddr;
use std::time::Duration;

use reqwest::Url;
use reqwest::header::{self, HeaderMap, HeaderValue};
use tokio::time::Instant;

use crate::classify::{self, Hints};
use crate::{Expectation, Failure, HealthError, verdict};

/// The `User-Agent` every probe sends.
pub const USER_AGENT: &str = concat!("codeb-healthcheck/", env!("CARGO_PKG_VERSION"));

/// At most this many bytes of a health body are read; the rest is ignored
/// (a health body is tiny; this bounds memory against a misbehaving app).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// At most this many redirects are followed, and only to the same host.
pub const MAX_REDIRECTS: usize = 3;

/// Lower bound for a probe's timeout once it has been clamped to the time
/// left before the deadline, so the last probe still has a chance.
const MIN_CLAMPED_TIMEOUT: Duration = Duration::from_millis(50);

/// Parses and validates a health URL: absolute, `http` or `https`, with a
/// host.
///
/// # Errors
/// [`HealthError::InvalidUrl`] naming the input and saying what is wrong,
/// e.g. `health URL 'ftp://x/' must use http or https (got 'ftp')`.
pub fn parse_url(input: &str) -> Result<Url, HealthError> {
    let invalid = |reason: String| HealthError::InvalidUrl {
        input: input.to_owned(),
        reason,
    };
    let url = Url::parse(input.trim()).map_err(|e| {
        let hint = if input.contains("://") {
            ""
        } else {
            " (it must be absolute, e.g. http://127.0.0.1:3000/api/health)"
        };
        invalid(format!("is not a valid URL: {e}{hint}"))
    })?;
    check_url(&url).map_err(|reason| {
        let hint = if input.contains("://") {
            ""
        } else {
            " (did you mean http://...?)"
        };
        invalid(format!("{reason}{hint}"))
    })?;
    Ok(url)
}

fn check_url(url: &Url) -> Result<(), String> {
    match url.scheme() {
        "http" | "https" => {}
        other => return Err(format!("must use http or https (got '{other}')")),
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("has no host".to_owned());
    }
    Ok(())
}

/// What to probe and what counts as healthy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    url: Url,
    timeout: Duration,
    expect: Vec<Expectation>,
}

impl Probe {
    /// Default per-probe timeout.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

    /// A probe of `url` (validated by [`parse_url`]) with the default
    /// timeout and no expectations.
    ///
    /// # Errors
    /// [`HealthError::InvalidUrl`].
    pub fn new(url: &str) -> Result<Self, HealthError> {
        Ok(Self::from_valid_url(parse_url(url)?))
    }

    /// A probe of an already-parsed URL, validated like [`parse_url`].
    ///
    /// # Errors
    /// [`HealthError::InvalidUrl`].
    pub fn from_url(url: Url) -> Result<Self, HealthError> {
        check_url(&url).map_err(|reason| HealthError::InvalidUrl {
            input: url.to_string(),
            reason,
        })?;
        Ok(Self::from_valid_url(url))
    }

    fn from_valid_url(url: Url) -> Self {
        Self {
            url,
            timeout: Self::DEFAULT_TIMEOUT,
            expect: Vec::new(),
        }
    }

    /// Sets the per-probe timeout (connect + request + body). Must be
    /// non-zero; [`Prober::new`] rejects zero.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Adds expectations (see [`Expectation`]); with any, the body must be
    /// JSON.
    #[must_use]
    pub fn with_expectations(mut self, expect: impl IntoIterator<Item = Expectation>) -> Self {
        self.expect.extend(expect);
        self
    }

    /// The URL probed.
    #[must_use]
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The per-probe timeout.
    #[must_use]
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The expectations.
    #[must_use]
    pub fn expectations(&self) -> &[Expectation] {
        &self.expect
    }
}

/// How long and how often [`Prober::wait_healthy`] probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Time between the *starts* of consecutive probes. A probe that takes
    /// longer than this is followed immediately by the next.
    pub interval: Duration,
    /// Overall budget, measured from the start of `wait_healthy` and
    /// including `start_period`.
    pub deadline: Duration,
    /// Grace period at the start: probes run during it, but their failures
    /// are flagged [`Attempt::in_start_period`] so a caller can keep quiet
    /// about them. (A failure still breaks the streak, as any failure does.)
    pub start_period: Duration,
    /// Consecutive healthy probes required; `0` is treated as `1`.
    pub successes: u32,
}

impl Default for Policy {
    /// 1s interval, 60s deadline, no start period, 1 success.
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(1),
            deadline: Duration::from_secs(60),
            start_period: Duration::ZERO,
            successes: 1,
        }
    }
}

/// A probe that proved the app healthy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeSuccess {
    /// From sending the request to having read the body.
    pub latency: Duration,
    /// The (2xx) HTTP status code.
    pub status: u16,
    /// The body's `version` field, if any (e.g. the deployed git sha).
    pub version: Option<String>,
}

/// The outcome of one probe.
pub type ProbeResult = Result<ProbeSuccess, Failure>;

/// One attempt made by [`Prober::wait_healthy`], passed to its `on_probe`
/// callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// 1-based attempt number.
    pub number: u32,
    /// What the probe found.
    pub result: ProbeResult,
    /// Time since `wait_healthy` started, at the end of this attempt.
    pub elapsed: Duration,
    /// The attempt started inside the policy's start period; a caller
    /// typically does not report such failures.
    pub in_start_period: bool,
    /// Consecutive healthy probes so far, including this one (0 after a
    /// failure).
    pub streak: u32,
}

/// The outcome of [`Prober::wait_healthy`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The required streak of healthy probes was reached before the deadline.
    pub healthy: bool,
    /// Probes made.
    pub attempts: u32,
    /// Latency of the last successful probe.
    pub latency: Option<Duration>,
    /// The `version` reported by the last successful probe.
    pub version: Option<String>,
    /// The most recent failure, if any probe failed. May be `Some` even when
    /// `healthy` (a failure before the final streak), and may be `None` when
    /// not healthy (every probe passed but the streak could not complete
    /// before the deadline).
    pub last_failure: Option<Failure>,
    /// Time spent in `wait_healthy`.
    pub elapsed: Duration,
}

/// Probes one health URL. Cheap to keep around; reuses one HTTP client.
///
/// The client sends `User-Agent: codeb-healthcheck/<version>`, never retries
/// on its own (one probe = one request), follows at most
/// [`MAX_REDIRECTS`] redirects and only to the same host, opens a fresh
/// connection for every probe (a kept-alive connection could reach the
/// *previous* release after a port switch), and ignores proxy environment
/// variables when the URL's host is loopback.
#[derive(Debug, Clone)]
pub struct Prober {
    client: reqwest::Client,
    probe: Probe,
}

impl Prober {
    /// Builds the HTTP client for `probe`.
    ///
    /// # Errors
    /// [`HealthError::InvalidSetting`] for a zero timeout,
    /// [`HealthError::InvalidUrl`] for a non-http(s) URL,
    /// [`HealthError::Client`] if the TLS backend cannot be initialised.
    pub fn new(probe: Probe) -> Result<Self, HealthError> {
        if probe.timeout.is_zero() {
            return Err(HealthError::InvalidSetting(
                "the probe timeout must be greater than zero".to_owned(),
            ));
        }
        check_url(&probe.url).map_err(|reason| HealthError::InvalidUrl {
            input: probe.url.to_string(),
            reason,
        })?;

        let origin_host = probe.url.host_str().map(str::to_owned);
        let redirect = reqwest::redirect::Policy::custom(move |attempt| {
            // Stopping hands the 3xx back as the answer, which then fails as
            // an HTTP status naming the Location.
            if attempt.previous().len() > MAX_REDIRECTS
                || attempt.url().host_str().map(str::to_owned) != origin_host
                || !matches!(attempt.url().scheme(), "http" | "https")
            {
                attempt.stop()
            } else {
                attempt.follow()
            }
        });

        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/json, */*;q=0.5"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));

        let mut builder = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .default_headers(headers)
            .connect_timeout(probe.timeout)
            .read_timeout(probe.timeout)
            .redirect(redirect)
            .retry(reqwest::retry::never())
            .pool_max_idle_per_host(0);
        if is_loopback(&probe.url) {
            builder = builder.no_proxy();
        }
        let client = builder.build().map_err(HealthError::Client)?;
        Ok(Self { client, probe })
    }

    /// The probe this prober runs.
    #[must_use]
    pub fn probe(&self) -> &Probe {
        &self.probe
    }

    /// Runs one probe with the probe's own timeout.
    pub async fn probe_once(&self) -> ProbeResult {
        self.probe_within(self.probe.timeout).await
    }

    /// Runs one probe with `timeout` as its total budget (connect, request,
    /// body).
    async fn probe_within(&self, timeout: Duration) -> ProbeResult {
        let started = Instant::now();
        // reqwest's own timeout classifies nicely; the outer tokio timeout
        // is a backstop (e.g. a resolver that ignores cancellation) with a
        // small grace so reqwest's fires first.
        let outcome =
            tokio::time::timeout(timeout + Duration::from_millis(100), self.fetch(timeout)).await;
        let latency = started.elapsed();
        let (status, location, body) = match outcome {
            Err(_elapsed) => return Err(Failure::Timeout { after: timeout }),
            Ok(Err(e)) => {
                let failure =
                    classify::classify(&e, Hints::from_reqwest(&e), &self.probe.url, timeout);
                tracing::debug!(url = %self.probe.url, error = ?e, %failure, "health probe transport error");
                return Err(failure);
            }
            Ok(Ok(answer)) => answer,
        };

        match verdict::evaluate(status, &body, &self.probe.expect) {
            Ok(healthy) => Ok(ProbeSuccess {
                latency,
                status,
                version: healthy.version,
            }),
            Err(mut failure) => {
                match &mut failure {
                    Failure::HttpStatus { location: slot, .. } if (300..400).contains(&status) => {
                        *slot = location;
                    }
                    _ => {}
                }
                Err(failure)
            }
        }
    }

    /// Sends the request and reads at most [`MAX_BODY_BYTES`] of the body.
    async fn fetch(
        &self,
        timeout: Duration,
    ) -> Result<(u16, Option<String>, Vec<u8>), reqwest::Error> {
        let mut response = self
            .client
            .get(self.probe.url.clone())
            .timeout(timeout)
            .send()
            .await?;
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get(header::LOCATION)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let mut body = Vec::new();
        while body.len() < MAX_BODY_BYTES {
            match response.chunk().await? {
                Some(chunk) => {
                    let room = MAX_BODY_BYTES - body.len();
                    body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                }
                None => break,
            }
        }
        Ok((status, location, body))
    }

    /// Probes until `policy.successes` consecutive probes are healthy or
    /// `policy.deadline` (from the start of this call) passes.
    ///
    /// Probes start every `policy.interval`, including during
    /// `policy.start_period` (see [`Policy::start_period`]). Each probe's
    /// timeout is clamped to the time left before the deadline (but at least
    /// 50ms), so the call overruns the deadline by at most that much plus
    /// scheduling noise. At least one probe is always made. `on_probe` is
    /// called after every attempt.
    pub async fn wait_healthy(
        &self,
        policy: &Policy,
        mut on_probe: impl FnMut(&Attempt),
    ) -> Report {
        let started = Instant::now();
        let deadline_at = started + policy.deadline;
        let grace_until = started + policy.start_period;
        let needed = policy.successes.max(1);

        let mut report = Report {
            healthy: false,
            attempts: 0,
            latency: None,
            version: None,
            last_failure: None,
            elapsed: Duration::ZERO,
        };
        let mut streak = 0u32;

        loop {
            let attempt_start = Instant::now();
            let remaining = deadline_at.saturating_duration_since(attempt_start);
            let timeout = self.probe.timeout.min(remaining.max(MIN_CLAMPED_TIMEOUT));
            let result = self.probe_within(timeout).await;

            report.attempts += 1;
            match &result {
                Ok(ok) => {
                    streak += 1;
                    report.latency = Some(ok.latency);
                    report.version.clone_from(&ok.version);
                }
                Err(failure) => {
                    streak = 0;
                    report.last_failure = Some(failure.clone());
                }
            }
            let attempt = Attempt {
                number: report.attempts,
                result,
                elapsed: started.elapsed(),
                in_start_period: attempt_start < grace_until,
                streak,
            };
            tracing::debug!(
                number = attempt.number,
                streak,
                ok = attempt.result.is_ok(),
                "health probe"
            );
            on_probe(&attempt);

            if streak >= needed {
                report.healthy = true;
                break;
            }
            let next = attempt_start + policy.interval;
            if next >= deadline_at {
                break;
            }
            tokio::time::sleep_until(next).await;
        }

        report.elapsed = started.elapsed();
        report
    }
}

fn is_loopback(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return ip.is_loopback();
    }
    let domain = host.trim_end_matches('.').to_ascii_lowercase();
    domain == "localhost" || domain.ends_with(".localhost")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_validation_names_the_problem() {
        assert!(parse_url("http://127.0.0.1:3000/api/health").is_ok());
        assert!(parse_url("https://app.example/api/health").is_ok());
        let e = parse_url("ftp://x/").expect_err("ftp");
        assert_eq!(
            e.to_string(),
            "health URL 'ftp://x/' must use http or https (got 'ftp')"
        );
        let e = parse_url("localhost:3000/api/health").expect_err("no scheme");
        assert!(e.to_string().contains("http or https"), "{e}");
        assert!(e.to_string().contains("did you mean http://"), "{e}");
        let e = parse_url("/api/health").expect_err("relative");
        assert!(e.to_string().contains("not a valid URL"), "{e}");
        let e =
            Probe::from_url(Url::parse("file:///etc/passwd").expect("parses")).expect_err("file");
        assert!(e.to_string().contains("http or https"), "{e}");
    }

    #[test]
    fn loopback_detection() {
        for u in [
            "http://127.0.0.1/",
            "http://127.1.2.3:80/",
            "http://[::1]:3000/",
            "http://localhost:3000/",
            "http://LOCALHOST./",
            "http://app.localhost/",
        ] {
            assert!(is_loopback(&Url::parse(u).expect("valid")), "{u}");
        }
        for u in [
            "http://10.0.0.1/",
            "http://example.com/",
            "http://notlocalhost/",
        ] {
            assert!(!is_loopback(&Url::parse(u).expect("valid")), "{u}");
        }
    }

    #[test]
    fn zero_timeout_is_rejected() {
        let probe = Probe::new("http://127.0.0.1:1/")
            .expect("valid")
            .with_timeout(Duration::ZERO);
        let e = Prober::new(probe).expect_err("zero timeout");
        assert!(e.to_string().contains("timeout"), "{e}");
    }

    #[test]
    fn user_agent_names_the_tool() {
        assert!(USER_AGENT.starts_with("codeb-healthcheck/"));
    }
}
