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

// `we` (crates/codeb-we), the command line of the control plane.
/// Token of `we`; overrides the stored credentials (CI).
pub const CODEB_TOKEN: &str = "CODEB_TOKEN";
/// Control plane URL of `we`; overrides the stored server (CI).
pub const CODEB_SERVER: &str = "CODEB_SERVER";
/// Base directory of user configuration (XDG); `we` keeps its credentials below it.
pub const XDG_CONFIG_HOME: &str = "XDG_CONFIG_HOME";
/// The user's home directory (`$HOME/.config` when `XDG_CONFIG_HOME` is unset).
pub const HOME: &str = "HOME";
/// Set (to anything non-empty) to turn colour off (no-color.org).
pub const NO_COLOR: &str = "NO_COLOR";
