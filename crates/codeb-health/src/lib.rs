//! `codeb-health` owns the post-deploy health check: proving that a freshly
//! deployed release answers its `GET /api/health` correctly.
//!
//! The contract checked: a healthy app answers 2xx with JSON
//! `{"status":"ok","timestamp":...,"uptime":...}` (often with
//! `"version":"<git sha>"`); a sick one answers 503 with
//! `{"status":"error","error":"..."}`.
//!
//! - [`verdict`] holds the rules, with no I/O: status + body + expectations
//!   in, healthy or one [`Failure`] out.
//! - [`Probe`] says what to check; [`Prober`] runs it over HTTP, once
//!   ([`Prober::probe_once`]) or until healthy ([`Prober::wait_healthy`]
//!   under a [`Policy`], giving a [`Report`]).
//! - [`Failure`] is the one typed reason a probe failed; its `Display` is a
//!   single line naming the key facts.
//!
//! This library never prints: callers render [`Attempt`]s and [`Report`]s.

mod classify;
mod error;
mod expect;
mod failure;
mod probe;
pub mod verdict;

pub use error::HealthError;
pub use expect::Expectation;
pub use failure::{EXCERPT_CHARS, Failure, excerpt, format_secs, one_line};
pub use probe::{
    Attempt, MAX_BODY_BYTES, MAX_REDIRECTS, Policy, Probe, ProbeResult, ProbeSuccess, Prober,
    Report, USER_AGENT, parse_url,
};
pub use reqwest::Url;
