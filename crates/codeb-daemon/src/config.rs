//! The daemon's config file (TOML) and its webhook secrets.
//!
//! Only `listen` and `state_dir` are required; everything else has a default (see
//! `templates/systemd/daemon.toml` for a commented example). The `[previews]` table is
//! [`codeb_previews::PreviewConfig`]. The webhook secret comes from `CODEB_WEBHOOK_SECRET`
//! (comma-separated, for rotation) or from `secret_file` (one secret per line; the file must
//! not be readable or writable by others), never from the config file itself.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use codeb_github::{SUPPORTED_EVENTS, WebhookSecret};
use codeb_previews::PreviewConfig;
use serde::Deserialize;

/// Every environment variable the daemon reads (the names live in `codeb_core::vars`).
pub mod vars {
    pub use codeb_core::vars::{
        CODEB_DAEMON_CONFIG, CODEB_LOG, CODEB_LOG_FORMAT, CODEB_WEBHOOK_SECRET,
    };
}

/// Where the config file is unless `--config` or `CODEB_DAEMON_CONFIG` says otherwise.
pub const DEFAULT_CONFIG: &str = "/etc/codeb/daemon.toml";

/// The database file inside `state_dir`.
pub const DB_FILE: &str = "daemon.sqlite3";

/// The daemon's configuration, validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to serve HTTP on, e.g. `127.0.0.1:3102` (behind Caddy).
    pub listen: SocketAddr,
    /// Directory of the SQLite database (deliveries and jobs).
    pub state_dir: PathBuf,
    /// Accepted webhook secrets, in order (the index of the one that matched is logged).
    pub secrets: Vec<WebhookSecret>,
    /// Jobs of different PRs run in parallel up to this many; one PR's jobs run in order.
    pub max_concurrency: usize,
    /// How often `reconcile()` runs (it also runs at start).
    pub reconcile_interval: Duration,
    /// Bound on waiting for in-flight requests and jobs at SIGTERM.
    pub shutdown_grace: Duration,
    /// A failing job is tried this many times in all before it is marked failed.
    pub max_attempts: u32,
    /// Delay before the first retry; doubled for each further one (at most 1 h).
    pub retry_backoff: Duration,
    /// Finished jobs and remembered delivery ids older than this are deleted.
    pub retention: Duration,
    /// Events acted on; others are acknowledged and ignored.
    pub events: BTreeSet<String>,
    /// Bounds on what one client may hold of the HTTP intake.
    pub limits: Limits,
    pub previews: PreviewConfig,
    /// The control plane (`/api/v1`): [`crate::api::ApiConfig`].
    pub api: crate::api::ApiConfig,
}

/// What one client may take of the intake (slowloris, slow uploads, floods).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// A connection must deliver a request's complete headers within this, or is closed.
    pub header_read_timeout: Duration,
    /// A webhook's body must arrive completely within this (408 otherwise).
    pub body_timeout: Duration,
    /// A webhook request is answered within this, waiting for a slot included (503 otherwise).
    pub request_timeout: Duration,
    /// Webhook requests read and handled at once; more wait (bodies unread) for a slot.
    pub max_webhooks_in_flight: usize,
    /// Open connections; one over this is closed at once.
    pub max_connections: usize,
    /// Largest body accepted (413 above).
    pub max_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(20),
            max_webhooks_in_flight: 32,
            max_connections: 1024,
            max_body_bytes: codeb_github::MAX_ACTED_ON_PAYLOAD_BYTES,
        }
    }
}

impl Config {
    pub fn db_path(&self) -> PathBuf {
        self.state_dir.join(DB_FILE)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: SocketAddr,
    state_dir: PathBuf,
    #[serde(default)]
    secret_file: Option<PathBuf>,
    #[serde(default = "default_max_concurrency")]
    max_concurrency: usize,
    #[serde(default = "default_reconcile_interval", deserialize_with = "duration")]
    reconcile_interval: Duration,
    #[serde(default = "default_shutdown_grace", deserialize_with = "duration")]
    shutdown_grace: Duration,
    #[serde(default = "default_max_attempts")]
    max_attempts: u32,
    #[serde(default = "default_retry_backoff", deserialize_with = "duration")]
    retry_backoff: Duration,
    #[serde(default = "default_retention", deserialize_with = "duration")]
    retention: Duration,
    #[serde(default = "default_events")]
    events: Vec<String>,
    #[serde(default)]
    intake: RawLimits,
    #[serde(default)]
    previews: PreviewConfig,
    #[serde(default)]
    api: crate::api::ApiConfig,
    /// `we domain`: [`crate::api::domain::DomainConfig`].
    #[serde(default)]
    domains: Option<crate::api::domain::DomainConfig>,
}

/// `[intake]`: the HTTP limits (all optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    #[serde(default, deserialize_with = "opt_duration")]
    header_read_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "opt_duration")]
    body_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "opt_duration")]
    request_timeout: Option<Duration>,
    #[serde(default)]
    max_webhooks_in_flight: Option<usize>,
    #[serde(default)]
    max_connections: Option<usize>,
    #[serde(default)]
    max_body_bytes: Option<usize>,
}

fn opt_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

fn default_max_concurrency() -> usize {
    4
}
fn default_reconcile_interval() -> Duration {
    Duration::from_secs(600)
}
fn default_shutdown_grace() -> Duration {
    Duration::from_secs(30)
}
fn default_max_attempts() -> u32 {
    5
}
fn default_retry_backoff() -> Duration {
    Duration::from_secs(30)
}
fn default_retention() -> Duration {
    Duration::from_secs(30 * 24 * 3600)
}
fn default_events() -> Vec<String> {
    SUPPORTED_EVENTS.iter().map(|e| (*e).to_owned()).collect()
}

fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map_err(|e| {
        serde::de::Error::custom(format!(
            "invalid duration {s:?} ({e}); write e.g. \"30s\", \"10m\", \"1h 30m\""
        ))
    })
}

/// Why the config could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the config file {path}: {source}; pass another with --config")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error(
        "no webhook secret: set {var} (comma-separated for rotation) or `secret_file` in {path}",
        var = vars::CODEB_WEBHOOK_SECRET
    )]
    NoSecret { path: PathBuf },
    #[error(
        "both {var} and `secret_file` ({file}) are set; keep one so it is clear which secrets \
         are accepted",
        var = vars::CODEB_WEBHOOK_SECRET
    )]
    TwoSecretSources { file: PathBuf },
    #[error("cannot read the secret file {path}: {source}")]
    SecretRead {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the secret file {path} has mode {mode:04o}, so other users can read or change it; \
         run `chmod o-rwx {path}` (and give it to the daemon's user)"
    )]
    SecretMode { path: PathBuf, mode: u32 },
    #[error("the secret file {path} holds no secret (one per line)")]
    SecretEmpty { path: PathBuf },
}

impl ConfigError {
    /// I/O errors are exit code 2; a config that is wrong is exit code 1.
    pub fn is_io(&self) -> bool {
        matches!(
            self,
            ConfigError::Read { .. } | ConfigError::SecretRead { .. }
        )
    }
}

/// Reads and validates the config at `path`; `env` looks environment variables up (the
/// process environment in production, a map in tests).
pub fn load(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(path, &text, env)
}

/// Parses and validates config `text` (read from `path`, which is used in messages and to
/// resolve a relative `secret_file`).
pub fn parse(
    path: &Path,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string().trim_end().to_owned(),
    })?;
    let invalid = |message: String| ConfigError::Invalid {
        path: path.to_owned(),
        message,
    };
    if raw.max_concurrency == 0 || raw.max_concurrency > 256 {
        return Err(invalid(format!(
            "max_concurrency = {} is out of range: use 1 to 256",
            raw.max_concurrency
        )));
    }
    if raw.max_attempts == 0 {
        return Err(invalid("max_attempts = 0: use at least 1".into()));
    }
    if raw.reconcile_interval < Duration::from_secs(1) {
        return Err(invalid(
            "reconcile_interval is below 1s: use e.g. \"10m\"".into(),
        ));
    }
    if raw.state_dir.as_os_str().is_empty() {
        return Err(invalid(
            "state_dir is empty: name a directory, e.g. \"/var/lib/codeb\"".into(),
        ));
    }
    let mut events = BTreeSet::new();
    for e in raw.events {
        if !SUPPORTED_EVENTS.contains(&e.as_str()) {
            return Err(invalid(format!(
                "events: codeb does not act on {e:?}; supported: {}",
                SUPPORTED_EVENTS.join(", ")
            )));
        }
        events.insert(e);
    }
    let def = Limits::default();
    let l = raw.intake;
    let limits = Limits {
        header_read_timeout: l.header_read_timeout.unwrap_or(def.header_read_timeout),
        body_timeout: l.body_timeout.unwrap_or(def.body_timeout),
        request_timeout: l.request_timeout.unwrap_or(def.request_timeout),
        max_webhooks_in_flight: l
            .max_webhooks_in_flight
            .unwrap_or(def.max_webhooks_in_flight),
        max_connections: l.max_connections.unwrap_or(def.max_connections),
        max_body_bytes: l.max_body_bytes.unwrap_or(def.max_body_bytes),
    };
    for (name, d) in [
        ("header_read_timeout", limits.header_read_timeout),
        ("body_timeout", limits.body_timeout),
        ("request_timeout", limits.request_timeout),
    ] {
        if d < Duration::from_millis(100) || d > Duration::from_secs(300) {
            return Err(invalid(format!(
                "[intake] {name} = {} is out of range: use 100ms to 5m (GitHub waits 10s)",
                humantime::format_duration(d)
            )));
        }
    }
    if limits.max_webhooks_in_flight == 0 || limits.max_webhooks_in_flight > 4096 {
        return Err(invalid(format!(
            "[intake] max_webhooks_in_flight = {} is out of range: use 1 to 4096",
            limits.max_webhooks_in_flight
        )));
    }
    if limits.max_connections < limits.max_webhooks_in_flight {
        return Err(invalid(format!(
            "[intake] max_connections = {} is below max_webhooks_in_flight = {}",
            limits.max_connections, limits.max_webhooks_in_flight
        )));
    }
    if !(1024..=codeb_github::MAX_PAYLOAD_BYTES).contains(&limits.max_body_bytes) {
        return Err(invalid(format!(
            "[intake] max_body_bytes = {} is out of range: use 1024 to {} (GitHub's own cap)",
            limits.max_body_bytes,
            codeb_github::MAX_PAYLOAD_BYTES
        )));
    }
    let base = path.parent().unwrap_or(Path::new("."));
    let secrets = secrets(path, raw.secret_file.map(|f| base.join(f)), env)?;
    Ok(Config {
        listen: raw.listen,
        state_dir: base.join(raw.state_dir),
        secrets,
        max_concurrency: raw.max_concurrency,
        reconcile_interval: raw.reconcile_interval,
        shutdown_grace: raw.shutdown_grace,
        max_attempts: raw.max_attempts,
        retry_backoff: raw.retry_backoff,
        retention: raw.retention,
        events,
        limits,
        previews: raw.previews,
        api: crate::api::ApiConfig {
            domains: raw
                .domains
                .map(|d| d.resolve(base))
                .transpose()
                .map_err(|m| invalid(format!("[domains] {m}")))?,
            ..raw
                .api
                .validated()
                .map_err(|m| invalid(format!("[api] {m}")))?
        },
    })
}

fn secrets(
    config: &Path,
    file: Option<PathBuf>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<WebhookSecret>, ConfigError> {
    let from_env = env(vars::CODEB_WEBHOOK_SECRET)
        .map(|v| WebhookSecret::parse_list(&v))
        .filter(|v| !v.is_empty());
    match (file, from_env) {
        (Some(file), Some(_)) => Err(ConfigError::TwoSecretSources { file }),
        (None, Some(list)) => Ok(list),
        (None, None) => Err(ConfigError::NoSecret {
            path: config.to_owned(),
        }),
        (Some(path), None) => {
            use std::os::unix::fs::PermissionsExt;
            let meta = std::fs::metadata(&path).map_err(|source| ConfigError::SecretRead {
                path: path.clone(),
                source,
            })?;
            let mode = meta.permissions().mode() & 0o7777;
            if mode & 0o007 != 0 {
                return Err(ConfigError::SecretMode { path, mode });
            }
            let text =
                std::fs::read_to_string(&path).map_err(|source| ConfigError::SecretRead {
                    path: path.clone(),
                    source,
                })?;
            let list: Vec<WebhookSecret> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(WebhookSecret::new)
                .collect();
            if list.is_empty() {
                return Err(ConfigError::SecretEmpty { path });
            }
            Ok(list)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn env_with(secret: Option<&str>) -> impl Fn(&str) -> Option<String> {
        let s = secret.map(str::to_owned);
        move |k: &str| {
            (k == vars::CODEB_WEBHOOK_SECRET)
                .then(|| s.clone())
                .flatten()
        }
    }

    #[test]
    fn minimal_config_has_defaults() {
        let c = parse(
            Path::new("/etc/codeb/daemon.toml"),
            "listen = \"127.0.0.1:3102\"\nstate_dir = \"/var/lib/codeb\"\n",
            &env_with(Some("new, old")),
        )
        .expect("valid");
        assert_eq!(c.listen.to_string(), "127.0.0.1:3102");
        assert_eq!(c.secrets.len(), 2);
        assert_eq!(c.max_concurrency, 4);
        assert_eq!(c.reconcile_interval, Duration::from_secs(600));
        assert_eq!(c.events.len(), SUPPORTED_EVENTS.len());
        assert_eq!(c.previews.approve_label, "preview");
        assert_eq!(c.db_path(), Path::new("/var/lib/codeb/daemon.sqlite3"));
    }

    #[test]
    fn previews_table_and_durations() {
        let text = r#"
listen = "127.0.0.1:3102"
state_dir = "state"
reconcile_interval = "90s"
max_concurrency = 2
events = ["pull_request"]
[previews]
approve_label = "safe-to-preview"
[previews.repos."acme/shop"]
project = "shop"
image = "ghcr.io/acme/shop"
"#;
        let c = parse(Path::new("/srv/daemon.toml"), text, &env_with(Some("s"))).expect("valid");
        assert_eq!(c.reconcile_interval, Duration::from_secs(90));
        assert_eq!(c.state_dir, Path::new("/srv/state"));
        assert_eq!(c.previews.approve_label, "safe-to-preview");
        assert!(c.previews.repos.contains_key("acme/shop"));
    }

    #[test]
    fn mistakes_are_named() {
        let p = Path::new("d.toml");
        let env = env_with(Some("s"));
        let cases = [
            ("state_dir = \"x\"\n", "listen"),
            (
                "listen = \"nope\"\nstate_dir = \"x\"\n",
                "invalid socket address",
            ),
            (
                "listen = \"127.0.0.1:1\"\nstate_dir = \"x\"\nlisten_typo = 1\n",
                "listen_typo",
            ),
            (
                "listen = \"127.0.0.1:1\"\nstate_dir = \"x\"\nreconcile_interval = \"soon\"\n",
                "invalid duration",
            ),
            (
                "listen = \"127.0.0.1:1\"\nstate_dir = \"x\"\nmax_concurrency = 0\n",
                "1 to 256",
            ),
            (
                "listen = \"127.0.0.1:1\"\nstate_dir = \"x\"\nevents = [\"push\"]\n",
                "push",
            ),
            (
                "listen = \"127.0.0.1:1\"\nstate_dir = \"x\"\n[previews]\nbogus = 1\n",
                "bogus",
            ),
        ];
        for (text, needle) in cases {
            let err = parse(p, text, &env).expect_err(text).to_string();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
        let err = parse(
            p,
            "listen = \"127.0.0.1:1\"\nstate_dir = \"x\"\n",
            &env_with(None),
        )
        .expect_err("no secret");
        assert!(err.to_string().contains("CODEB_WEBHOOK_SECRET"), "{err}");
    }

    #[test]
    fn the_shipped_example_config_is_valid_and_states_the_defaults() {
        let text = include_str!("../../../templates/systemd/daemon.toml")
            .replace("secret_file = \"/etc/codeb/webhook-secret\"\n", "");
        let c = parse(
            Path::new("/etc/codeb/daemon.toml"),
            &text,
            &env_with(Some("s")),
        )
        .expect("the example parses");
        assert_eq!(c.limits, Limits::default());
        c.previews.validate().expect("its [previews] is valid");
    }

    #[test]
    fn intake_limits_out_of_range_are_named() {
        let base = "listen = \"127.0.0.1:1\"\nstate_dir = \"x\"\n[intake]\n";
        for (extra, needle) in [
            ("header_read_timeout = \"0s\"\n", "header_read_timeout"),
            ("max_webhooks_in_flight = 0\n", "max_webhooks_in_flight"),
            ("max_body_bytes = 10\n", "max_body_bytes"),
            ("max_body_bytes = 99999999999\n", "max_body_bytes"),
            ("bogus = 1\n", "bogus"),
        ] {
            let text = format!("{base}{extra}");
            let err = parse(Path::new("d.toml"), &text, &env_with(Some("s")))
                .expect_err(extra)
                .to_string();
            assert!(err.contains(needle), "{extra}: {err}");
        }
    }

    #[test]
    fn secret_file_must_be_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "first\n\nsecond\n").expect("write");
        let text = format!(
            "listen = \"127.0.0.1:1\"\nstate_dir = \"x\"\nsecret_file = {:?}\n",
            secret.display().to_string()
        );
        let p = dir.path().join("d.toml");
        for mode in [0o644, 0o604, 0o602] {
            std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(mode))
                .expect("chmod");
            let err = parse(&p, &text, &env_with(None)).expect_err("world-readable");
            assert!(err.to_string().contains("chmod o-rwx"), "{err}");
        }
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        let c = parse(&p, &text, &env_with(None)).expect("private file");
        assert_eq!(
            c.secrets,
            vec![WebhookSecret::new("first"), WebhookSecret::new("second")]
        );
        let err = parse(&p, &text, &env_with(Some("s"))).expect_err("two sources");
        assert!(matches!(err, ConfigError::TwoSecretSources { .. }));
    }
}
