//! `codeb-healthcheck`: proves a release healthy by probing its health endpoint until
//! `--successes` consecutive healthy answers, or fails when `--deadline` passes.
//!
//! Exit codes: 0 healthy, 1 not healthy by the deadline, 2 usage error.

use clap::Parser;
use codeb_actions::{Annotation, Exit, Level, Secret, Step};
use codeb_health::{Attempt, Expectation, Policy, Probe, Prober, Report, format_secs};
use std::process::ExitCode;
use std::time::Duration;

const AFTER_HELP: &str = "\
Healthy means: a 2xx answer and, when the body is JSON with a `status` field, status == \"ok\"
(the /api/health contract: {\"status\":\"ok\",\"timestamp\":...,\"uptime\":...}; a sick app
answers 503 with {\"status\":\"error\",\"error\":...}).

Examples:
  # Wait up to a minute for the app on port 4001.
  codeb-healthcheck --url http://127.0.0.1:4001/api/health

  # Prove that the new release (not the old one) answers, three times in a row.
  codeb-healthcheck --url http://127.0.0.1:4001/api/health --expect version=$GITHUB_SHA --successes 3

Durations: 500ms, 2s, 1m30s (a bare number is seconds). Every flag can also come from its
action input (INPUT_<NAME>); --expect takes one KEY=VALUE per line there.
Outputs (in Actions): healthy, attempts, latency_ms.
Exit codes: 0 healthy, 1 not healthy by the deadline, 2 usage error.";

#[derive(Debug, Parser)]
#[command(
    name = "codeb-healthcheck",
    args_override_self = true,
    version,
    about = "Probe a release's health endpoint until it proves healthy",
    after_help = AFTER_HELP
)]
struct Args {
    /// The health endpoint, e.g. http://127.0.0.1:4001/api/health
    #[arg(long, value_name = "URL")]
    url: String,

    /// Time between the starts of two probes
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = codeb_actions::parse_duration)]
    interval: Duration,

    /// Time one probe may take
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = codeb_actions::parse_duration)]
    timeout: Duration,

    /// Give up when the release is not healthy this long after the start
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = codeb_actions::parse_duration)]
    deadline: Duration,

    /// Failures in this first stretch are expected (the app is booting) and not reported
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = codeb_actions::parse_duration)]
    start_period: Duration,

    /// Consecutive healthy probes needed
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    successes: u32,

    /// Require a field of the JSON body to have this value, e.g. version=<git sha> (repeatable)
    #[arg(long, value_name = "KEY=VALUE", action = clap::ArgAction::Append)]
    expect: Vec<String>,
}

pub fn main() -> ExitCode {
    let step = Step::from_env();
    let usage = |step: &Step, message: &str| {
        step.annotate(
            Level::Error,
            &Annotation {
                title: Some("codeb-healthcheck".into()),
                message: message.to_owned(),
                ..Annotation::default()
            },
        );
        Exit::Usage.into()
    };
    let args: Args = match codeb_actions::parse_args(&step, "codeb-healthcheck") {
        Ok(a) => a,
        Err(code) => return code,
    };
    let probe = match Expectation::parse_all(&args.expect).and_then(|expect| {
        Ok(Probe::new(&args.url)?
            .with_timeout(args.timeout)
            .with_expectations(expect))
    }) {
        Ok(p) => p,
        Err(e) => return usage(&step, &e.to_string()),
    };
    if let Some(password) = probe.url().password() {
        step.mask(&Secret::new(password));
    }
    let prober = match Prober::new(probe) {
        Ok(p) => p,
        Err(e) => return usage(&step, &e.to_string()),
    };
    let policy = Policy {
        interval: args.interval,
        deadline: args.deadline,
        start_period: args.start_period,
        successes: args.successes,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return usage(&step, &format!("cannot start the async runtime: {e}")),
    };
    let shown = redact(prober.probe().url());
    let report = runtime.block_on(prober.wait_healthy(&policy, |a| on_probe(&step, a)));
    finish(&step, &shown, &policy, &report)
}

/// The URL as it may appear in logs (no password).
fn redact(url: &codeb_health::Url) -> String {
    let mut u = url.clone();
    if u.password().is_some() {
        let _ = u.set_password(Some("***"));
    }
    u.to_string()
}

fn on_probe(step: &Step, a: &Attempt) {
    match &a.result {
        Ok(ok) => step.log(&format!(
            "probe {}: healthy (HTTP {}, {} ms){}",
            a.number,
            ok.status,
            ok.latency.as_millis(),
            ok.version
                .as_ref()
                .map(|v| format!(", version {v}"))
                .unwrap_or_default()
        )),
        Err(_) if a.in_start_period => {}
        Err(f) => step.log(&format!("probe {}: {f}", a.number)),
    }
}

fn finish(step: &Step, url: &str, policy: &Policy, r: &Report) -> ExitCode {
    let latency = r
        .latency
        .map(|l| l.as_millis().to_string())
        .unwrap_or_default();
    for (k, v) in [
        ("healthy", if r.healthy { "true" } else { "false" }),
        ("attempts", &r.attempts.to_string()),
        ("latency_ms", &latency),
    ] {
        if let Err(e) = step.set_output(k, v) {
            step.log(&format!("warning: cannot write $GITHUB_OUTPUT: {e}"));
        }
    }
    if r.healthy {
        step.result(&format!(
            "healthy: {url} after {} probe{} in {}",
            r.attempts,
            if r.attempts == 1 { "" } else { "s" },
            format_secs(r.elapsed)
        ));
        let _ = step.append_summary(&format!(
            "### Health check passed\n\n`{url}` answered healthy {} time{} in a row after {} probe{} ({} ms).\n",
            policy.successes,
            if policy.successes == 1 { "" } else { "s" },
            r.attempts,
            if r.attempts == 1 { "" } else { "s" },
            latency
        ));
        Exit::Success.into()
    } else {
        let why = match &r.last_failure {
            Some(f) => f.to_string(),
            None => format!("never {} healthy probes in a row", policy.successes),
        };
        let message = format!(
            "{url} was not healthy within {} ({} probes); last: {why}",
            format_secs(policy.deadline),
            r.attempts
        );
        step.annotate(
            Level::Error,
            &Annotation {
                title: Some("Health check failed".into()),
                message: message.clone(),
                ..Annotation::default()
            },
        );
        let _ = step.append_summary(&format!("### Health check failed\n\n{message}\n"));
        Exit::Failure.into()
    }
}
