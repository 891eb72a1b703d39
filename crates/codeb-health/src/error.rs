//! Errors in the *configuration* of a health check (bad URL, bad
//! `--expect`, unusable client settings). A probe that runs and fails is not
//! an error here: it is a [`Failure`](crate::Failure).

/// A health check could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    /// The health URL is unusable.
    #[error("health URL '{input}' {reason}")]
    InvalidUrl {
        /// The URL as given.
        input: String,
        /// What is wrong with it, phrased to follow the URL.
        reason: String,
    },
    /// An expectation is not of the form `KEY=VALUE` with a usable key.
    #[error("--expect '{input}' must be KEY=VALUE{hint}")]
    InvalidExpectation {
        /// The expectation as given.
        input: String,
        /// Extra explanation, empty or starting with a separator.
        hint: String,
    },
    /// A timing setting is unusable (e.g. a zero probe timeout).
    #[error("invalid health check setting: {0}")]
    InvalidSetting(String),
    /// The HTTP client could not be built.
    #[error("could not build the health check HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}
