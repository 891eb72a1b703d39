//! Every environment variable codeb reads, in one place.

/// Path of the port manifest (overridden by `--manifest`).
pub const CODEB_MANIFEST: &str = "CODEB_MANIFEST";
/// Set to `true` by GitHub Actions (and act) in every step.
pub const GITHUB_ACTIONS: &str = "GITHUB_ACTIONS";
/// File that step outputs are appended to.
pub const GITHUB_OUTPUT: &str = "GITHUB_OUTPUT";
/// File that the job summary (Markdown) is appended to.
pub const GITHUB_STEP_SUMMARY: &str = "GITHUB_STEP_SUMMARY";
/// Prefix of action inputs as the runner exports them (`INPUT_<NAME>`).
pub const INPUT_PREFIX: &str = "INPUT_";
