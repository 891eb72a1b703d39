//! Every environment variable codeb reads, in one place (as uv's `EnvVars`).
//!
//! Product crates name environment variables only through these constants; the tidy test
//! (`tests/integration/tidy.rs`) fails on a string literal that looks like one anywhere else.
//! Add a constant here (with a line saying who reads it) before reading a new variable.

// --- codeb's own settings -------------------------------------------------------------------

/// Path of the port manifest (overridden by `--manifest`).
pub const CODEB_MANIFEST: &str = "CODEB_MANIFEST";
/// `codeb-backup`'s config file (default `/etc/codeb/backup.toml`).
pub const CODEB_BACKUP_CONFIG: &str = "CODEB_BACKUP_CONFIG";
/// Quadlet directory of `codeb-quadlet-update` (overridden by `--quadlet-dir`).
pub const CODEB_QUADLET_DIR: &str = "CODEB_QUADLET_DIR";
/// Runtime of `codeb-quadlet-update`: auto, systemd or podman (`--runtime`).
pub const CODEB_RUNTIME: &str = "CODEB_RUNTIME";
/// Caddy admin API of `codeb-quadlet-update` (`--caddy-admin`).
pub const CODEB_CADDY_ADMIN: &str = "CODEB_CADDY_ADMIN";
/// How long the old release drains after a switch (`--drain`; the generated workflows pass it).
pub const CODEB_DRAIN: &str = "CODEB_DRAIN";
/// Registry token (bearer) for pulling images; preferred over `GITHUB_TOKEN` (codeb-registry).
pub const CODEB_REGISTRY_TOKEN: &str = "CODEB_REGISTRY_TOKEN";
/// Registry basic-auth user name (codeb-registry).
pub const CODEB_REGISTRY_USERNAME: &str = "CODEB_REGISTRY_USERNAME";
/// Registry basic-auth password (codeb-registry).
pub const CODEB_REGISTRY_PASSWORD: &str = "CODEB_REGISTRY_PASSWORD";
/// Webhook secrets of codeb-daemon, comma-separated (several for rotation).
pub const CODEB_WEBHOOK_SECRET: &str = "CODEB_WEBHOOK_SECRET";
/// Configuration file of codeb-daemon (`--config`).
pub const CODEB_DAEMON_CONFIG: &str = "CODEB_DAEMON_CONFIG";
/// Log filter of codeb-daemon (tracing's env-filter syntax).
pub const CODEB_LOG: &str = "CODEB_LOG";
/// Log format of codeb-daemon: `text` or `json`.
pub const CODEB_LOG_FORMAT: &str = "CODEB_LOG_FORMAT";
/// A GitHub token for codeb's own API calls (daemon, `codeb-workflow-gen doctor`); preferred
/// over `GITHUB_TOKEN`.
pub const CODEB_GITHUB_TOKEN: &str = "CODEB_GITHUB_TOKEN";

// --- set by GitHub Actions (and act) --------------------------------------------------------

/// Set to `true` by GitHub Actions (and act) in every step.
pub const GITHUB_ACTIONS: &str = "GITHUB_ACTIONS";
/// File that step outputs are appended to.
pub const GITHUB_OUTPUT: &str = "GITHUB_OUTPUT";
/// File that the job summary (Markdown) is appended to.
pub const GITHUB_STEP_SUMMARY: &str = "GITHUB_STEP_SUMMARY";
/// The commit the workflow run is for (recorded in a deploy's history).
pub const GITHUB_SHA: &str = "GITHUB_SHA";
/// Who started the workflow run (recorded in a deploy's history).
pub const GITHUB_ACTOR: &str = "GITHUB_ACTOR";
/// The workflow's token (registry pulls from ghcr.io, GitHub API calls).
pub const GITHUB_TOKEN: &str = "GITHUB_TOKEN";
/// Base URL of GitHub's REST API (`https://api.github.com`, or GitHub Enterprise Server's
/// `https://HOST/api/v3`); tests point it at the fake GitHub.
pub const GITHUB_API_URL: &str = "GITHUB_API_URL";
/// Prefix of action inputs as the runner exports them (`INPUT_<NAME>`).
pub const INPUT_PREFIX: &str = "INPUT_";

// --- set by sudo -------------------------------------------------------------------------------

/// The uid of the user who ran `sudo` (codeb-actions: a step run through the runner's sudoers
/// rule writes outputs only to that user's files; codeb-quadlet-update checks its inputs).
pub const SUDO_UID: &str = "SUDO_UID";
/// The name of the user who ran `sudo` (for messages).
pub const SUDO_USER: &str = "SUDO_USER";

// --- `we` (crates/codeb-we), the command line of the control plane ---------------------------

/// Token of `we`; overrides the stored credentials (CI).
pub const CODEB_TOKEN: &str = "CODEB_TOKEN";
/// Control plane URL of `we`; overrides the stored server (CI).
pub const CODEB_SERVER: &str = "CODEB_SERVER";
/// Base directory of user configuration (XDG): `we` keeps its credentials below it, rootless
/// podman its containers.conf (read by the deploy preflight).
pub const XDG_CONFIG_HOME: &str = "XDG_CONFIG_HOME";
/// The user's home directory (`$HOME/.config` when `XDG_CONFIG_HOME` is unset; also set by
/// `codeb-install` for the runner's scripts).
pub const HOME: &str = "HOME";
/// Set (to anything non-empty) to turn colour off (no-color.org).
pub const NO_COLOR: &str = "NO_COLOR";

/// The default of [`GITHUB_API_URL`].
pub const DEFAULT_GITHUB_API_URL: &str = "https://api.github.com";

/// Every variable above (for documentation and the tidy test).
pub const ALL: &[&str] = &[
    CODEB_MANIFEST,
    CODEB_QUADLET_DIR,
    CODEB_RUNTIME,
    CODEB_CADDY_ADMIN,
    CODEB_DRAIN,
    CODEB_REGISTRY_TOKEN,
    CODEB_REGISTRY_USERNAME,
    CODEB_REGISTRY_PASSWORD,
    CODEB_WEBHOOK_SECRET,
    CODEB_DAEMON_CONFIG,
    CODEB_LOG,
    CODEB_LOG_FORMAT,
    CODEB_GITHUB_TOKEN,
    GITHUB_ACTIONS,
    GITHUB_OUTPUT,
    GITHUB_STEP_SUMMARY,
    GITHUB_SHA,
    GITHUB_ACTOR,
    GITHUB_TOKEN,
    GITHUB_API_URL,
    SUDO_UID,
    SUDO_USER,
    CONTAINERS_CONF,
    XDG_CONFIG_HOME,
    HOME,
    CODEB_RUNNER_TOKEN,
    USER,
    PATH,
    CODEB_TOKEN,
    CODEB_SERVER,
    NO_COLOR,
];

// --- read by the deploy preflight ------------------------------------------------------------

/// podman's containers.conf override (read by the deploy preflight to find the init binary).
pub const CONTAINERS_CONF: &str = "CONTAINERS_CONF";
/// Registration token of the self-hosted runner for `codeb-install` (else `--runner-token-file`).
pub const CODEB_RUNNER_TOKEN: &str = "CODEB_RUNNER_TOKEN";
/// Set by `codeb-install` for the runner's scripts.
pub const USER: &str = "USER";
/// Set by `codeb-install` for the runner's scripts.
pub const PATH: &str = "PATH";
