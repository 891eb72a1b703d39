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
/// Quadlet directory of `codeb-quadlet-update` (overridden by `--quadlet-dir`).
pub const CODEB_QUADLET_DIR: &str = "CODEB_QUADLET_DIR";
/// Runtime of `codeb-quadlet-update`: auto, systemd or podman (`--runtime`).
pub const CODEB_RUNTIME: &str = "CODEB_RUNTIME";
/// Caddy admin API of `codeb-quadlet-update` (`--caddy-admin`).
pub const CODEB_CADDY_ADMIN: &str = "CODEB_CADDY_ADMIN";
/// Registry credentials (see codeb-registry).
pub const CODEB_REGISTRY_TOKEN: &str = "CODEB_REGISTRY_TOKEN";
/// Webhook secrets of codeb-daemon, comma-separated.
pub const CODEB_WEBHOOK_SECRET: &str = "CODEB_WEBHOOK_SECRET";
/// Registration token of the self-hosted runner for `codeb-install` (else `--runner-token-file`).
pub const CODEB_RUNNER_TOKEN: &str = "CODEB_RUNNER_TOKEN";
/// Set by `codeb-install` for the runner's scripts (their environment is otherwise empty).
pub const HOME: &str = "HOME";
/// Set by `codeb-install` for the runner's scripts.
pub const USER: &str = "USER";
/// Set by `codeb-install` for the runner's scripts.
pub const PATH: &str = "PATH";
