//! `codeb-daemon`: receives GitHub webhooks for PR previews. A delivery is verified
//! (HMAC-SHA256), interpreted ([`codeb_github::interpret`]), stored with its jobs in SQLite
//! and acknowledged; workers then run each job through [`codeb_previews::Previews::apply`],
//! in order per pull request and in parallel across pull requests. Nothing accepted is lost
//! across a crash, and nothing finished runs twice.
//!
//! Modules: [`config`] (TOML + secrets), [`server`] (HTTP), [`store`] (SQLite, group
//! commit), [`worker`] (dispatcher, retries, reconciler), [`metrics`] (Prometheus text).
//!
//! Commands and exit codes:
//!
//! | command | does | exit codes |
//! |---|---|---|
//! | `serve --config FILE` | runs the daemon until SIGTERM/SIGINT | 0 clean stop, 1 invalid config, 2 I/O error (bind, state dir) |
//! | `check-config --config FILE` | validates the config and the secrets | 0 valid, 1 invalid, 2 unreadable |
//! | `jobs --config FILE [--state S] [--limit N]` | prints the job table as JSON | 0, 2 |
//! | `deliveries --config FILE [--limit N]` | prints the delivery records as JSON | 0, 2 |
//! | `sign [--config FILE] [BODY_FILE]` | prints the `X-Hub-Signature-256` of a body (stdin by default) | 0, 1, 2 |
//! | `bootstrap-admin --config FILE [--name N] [--expires-in D] [--force]` | creates the first admin and prints its token (once) | 0, 1 (an admin exists; `--force` mints another), 2 |
//! | `agent --host N --listen ADDR --token-sha256-file F --state-dir D --caddy-admin URL --front-host ADDR` | the app-host role ([`agent`]) until SIGTERM/SIGINT | 0, 1 (bad arguments), 2 (bind) |
//! | `agent-token --out FILE` | mints a host token into FILE (0600, for the control plane) and prints its SHA-256 (for the agent) | 0, 2 |
//!
//! The control plane (`/api/v1`, [`api`]) is served beside the intake; its contract is the
//! `codeb_api` crate.

pub mod agent;
pub mod api;
pub mod config;
pub mod metrics;
pub mod server;
pub mod store;
pub mod worker;

use codeb_actions::Exit;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use clap::{Parser, Subcommand};
use codeb_previews::Previews;
use tokio::sync::{Notify, watch};
use tracing::{error, info, warn};

use crate::config::{Config, ConfigError, vars};
use crate::metrics::Metrics;
use crate::server::Intake;
use crate::store::Store;
use crate::worker::{Applier, WorkerConfig};

#[derive(Debug, Parser)]
#[command(
    name = "codeb-daemon",
    version,
    about = "GitHub webhooks in, PR previews out."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Args)]
struct ConfigArg {
    /// The daemon's config file (TOML).
    #[arg(long, env = vars::CODEB_DAEMON_CONFIG, default_value = config::DEFAULT_CONFIG)]
    config: PathBuf,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve webhooks and run jobs until SIGTERM or SIGINT.
    Serve(ConfigArg),
    /// Check the config file and the webhook secrets, then exit.
    CheckConfig(ConfigArg),
    /// Print the job table (newest first) as JSON.
    Jobs {
        #[command(flatten)]
        config: ConfigArg,
        /// Only jobs in this state: queued, running, done, failed, superseded.
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// Print the delivery records (newest first) as JSON.
    Deliveries {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// Print the X-Hub-Signature-256 header value for a body, signed with the first webhook
    /// secret (from --config, else CODEB_WEBHOOK_SECRET): to replay a payload with curl.
    /// Create the first admin of the control plane and print its token (shown once). Run it
    /// on the server as root or the daemon's user.
    BootstrapAdmin {
        #[command(flatten)]
        config: ConfigArg,
        /// The admin's user name.
        #[arg(long, default_value = "admin")]
        name: String,
        /// Token lifetime (humantime).
        #[arg(long, default_value = "90d")]
        expires_in: humantime::Duration,
        /// Mint a token even though an admin exists (makes `name` an enabled admin).
        #[arg(long)]
        force: bool,
    },
    /// The app-host role: deploy, stop and list releases of this host for the control plane.
    Agent {
        /// This host's name (as registered with `we scale app --add`).
        #[arg(long)]
        host: String,
        /// Address to listen on (the host's address on the app network).
        #[arg(long)]
        listen: std::net::SocketAddr,
        /// File holding the SHA-256 (hex) that `codeb-daemon agent-token` printed.
        #[arg(long)]
        token_sha256_file: PathBuf,
        /// Manifest, Quadlet units, deploy state and env files of this host.
        #[arg(long, default_value = "/var/lib/codeb-agent")]
        state_dir: PathBuf,
        /// The host's Caddy admin API (its blue-green fronts).
        #[arg(long, default_value = "unix//run/caddy/admin.sock")]
        caddy_admin: String,
        /// Address the host's fronts listen on (the balancer's upstreams); the listen
        /// address's IP by default.
        #[arg(long)]
        front_host: Option<String>,
        /// podman, systemd or auto.
        #[arg(long, default_value = "auto")]
        runtime: String,
    },
    /// Mint a host token: written to --out (0600, kept by the control plane); its SHA-256 is
    /// printed for the agent's --token-sha256-file.
    AgentToken {
        #[arg(long)]
        out: PathBuf,
    },
    Sign {
        /// Take the secret from this config's secret source.
        #[arg(long)]
        config: Option<PathBuf>,
        /// The body to sign; standard input when absent.
        body: Option<PathBuf>,
    },
}

/// Why a command failed, and so its exit code.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The checked thing is wrong (exit 1).
    #[error("{0}")]
    Invalid(String),
    /// Usage or I/O error (exit 2).
    #[error("{0}")]
    Io(String),
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Self {
        if e.is_io() {
            Failure::Io(e.to_string())
        } else {
            Failure::Invalid(e.to_string())
        }
    }
}

impl Failure {
    /// The documented exit code of this failure.
    pub fn exit(&self) -> Exit {
        match self {
            Failure::Invalid(_) => Exit::Failure,
            Failure::Io(_) => Exit::Usage,
        }
    }
}

/// The binary's entry point.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let exit = if e.use_stderr() {
                Exit::Usage
            } else {
                Exit::Success
            };
            let _ = e.print();
            return exit.into();
        }
    };
    match run(cli) {
        Ok(()) => Exit::Success.into(),
        Err(f) => {
            // Logging may not be set up (config errors come first): write plainly too.
            error!("{f}");
            let _ = writeln!(std::io::stderr(), "codeb-daemon: {f}");
            f.exit().into()
        }
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn out(text: &str) -> Result<(), Failure> {
    let mut o = std::io::stdout().lock();
    o.write_all(text.as_bytes())
        .and_then(|()| o.write_all(b"\n"))
        .and_then(|()| o.flush())
        .map_err(|e| Failure::Io(format!("cannot write to standard output: {e}")))
}

fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Serve(c) => {
            let config = config::load(&c.config, &env)?;
            init_logging();
            serve(config)
        }
        Command::CheckConfig(c) => {
            let config = config::load(&c.config, &env)?;
            config
                .previews
                .validate()
                .map_err(|e| Failure::Invalid(format!("{}: [previews] {e}", c.config.display())))?;
            let repos: Vec<&String> = config.previews.repos.keys().collect();
            out(&format!(
                "{}: valid; listen {}, state {}, {} secret(s), events {:?}, repositories {:?}, \
                 max_concurrency {}, reconcile every {}",
                c.config.display(),
                config.listen,
                config.db_path().display(),
                config.secrets.len(),
                config.events,
                repos,
                config.max_concurrency,
                humantime::format_duration(config.reconcile_interval),
            ))
        }
        Command::Jobs {
            config: c,
            state,
            limit,
        } => {
            let config = config::load(&c.config, &env)?;
            let db = config.db_path();
            let rows = if store::exists(&db) {
                store::list_jobs(&db, state.as_deref(), limit)
                    .map_err(|e| Failure::Io(e.to_string()))?
            } else {
                Vec::new()
            };
            out(&serde_json::to_string_pretty(&rows).map_err(|e| Failure::Io(e.to_string()))?)
        }
        Command::Deliveries { config: c, limit } => {
            let config = config::load(&c.config, &env)?;
            let db = config.db_path();
            let rows = if store::exists(&db) {
                store::list_deliveries(&db, limit).map_err(|e| Failure::Io(e.to_string()))?
            } else {
                Vec::new()
            };
            out(&serde_json::to_string_pretty(&rows).map_err(|e| Failure::Io(e.to_string()))?)
        }
        Command::BootstrapAdmin {
            config: c,
            name,
            expires_in,
            force,
        } => {
            let config = config::load(&c.config, &env)?;
            std::fs::create_dir_all(&config.state_dir).map_err(|e| {
                Failure::Io(format!(
                    "cannot create state_dir {}: {e}",
                    config.state_dir.display()
                ))
            })?;
            let ttl: std::time::Duration = expires_in.into();
            if ttl.is_zero() || ttl > api::MAX_TOKEN_TTL {
                return Err(Failure::Invalid(
                    "--expires-in must be between 1s and 366d".into(),
                ));
            }
            let (db, _) =
                api::db::Db::open(&config.db_path()).map_err(|e| Failure::Io(e.to_string()))?;
            let t = api::team::bootstrap_admin(&db, &name, ttl, force).map_err(Failure::Invalid)?;
            let _ = writeln!(
                std::io::stderr(),
                "codeb-daemon: admin `{name}` (token id {}), expires {}; the token is shown once:",
                t.info.id,
                humantime::format_rfc3339_seconds(
                    std::time::UNIX_EPOCH
                        + std::time::Duration::from_millis(
                            u64::try_from(t.info.expires_ms).unwrap_or(0)
                        )
                )
            );
            out(&t.token)
        }
        Command::Agent {
            host,
            listen,
            token_sha256_file,
            state_dir,
            caddy_admin,
            front_host,
            runtime,
        } => {
            let runtime = match runtime.as_str() {
                "auto" => codeb_deploy::RuntimeChoice::Auto,
                "podman" => codeb_deploy::RuntimeChoice::Podman,
                "systemd" => codeb_deploy::RuntimeChoice::Systemd,
                other => {
                    return Err(Failure::Invalid(format!(
                        "--runtime {other:?}: use auto, podman or systemd"
                    )));
                }
            };
            let token_sha256 =
                agent::read_token_hash(&token_sha256_file).map_err(Failure::Invalid)?;
            std::fs::create_dir_all(&state_dir)
                .map_err(|e| Failure::Io(format!("cannot create {}: {e}", state_dir.display())))?;
            init_logging();
            let cfg = agent::AgentConfig {
                front_host: front_host.unwrap_or_else(|| listen.ip().to_string()),
                host,
                listen,
                token_sha256,
                state_dir,
                caddy_admin,
                runtime,
            };
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(|e| Failure::Io(format!("cannot start the async runtime: {e}")))?;
            rt.block_on(agent::serve(cfg)).map_err(Failure::Io)
        }
        Command::AgentToken { out: file } => {
            let hex = agent::mint_token(&file).map_err(Failure::Io)?;
            out(&hex)
        }
        Command::Sign { config: c, body } => {
            let secret = match c {
                Some(path) => config::load(&path, &env)?.secrets.into_iter().next(),
                None => env(vars::CODEB_WEBHOOK_SECRET).and_then(|v| {
                    codeb_github::WebhookSecret::parse_list(&v)
                        .into_iter()
                        .next()
                }),
            }
            .ok_or_else(|| {
                Failure::Invalid(format!(
                    "no webhook secret: set {} or pass --config",
                    vars::CODEB_WEBHOOK_SECRET
                ))
            })?;
            let data = match body {
                Some(p) => std::fs::read(&p)
                    .map_err(|e| Failure::Io(format!("cannot read {}: {e}", p.display())))?,
                None => {
                    let mut v = Vec::new();
                    std::io::stdin()
                        .read_to_end(&mut v)
                        .map_err(|e| Failure::Io(format!("cannot read standard input: {e}")))?;
                    v
                }
            };
            out(&codeb_github::sign(&secret, &data))
        }
    }
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_env(vars::CODEB_LOG).unwrap_or_else(|_| EnvFilter::new("info"));
    let json = env(vars::CODEB_LOG_FORMAT).is_some_and(|f| f.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().with_current_span(true).try_init()
    } else {
        builder.compact().try_init()
    };
}

fn serve(config: Config) -> Result<(), Failure> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("codeb-daemon")
        .build()
        .map_err(|e| Failure::Io(format!("cannot start the async runtime: {e}")))?;
    rt.block_on(async move {
        let mut previews = Previews::new(config.previews.clone())
            .map_err(|e| Failure::Invalid(format!("[previews] cannot be used: {e}")))?;
        if config.api.enabled
            && let Some(p) = config.api.provision.clone()
        {
            previews = previews.with_data(Arc::new(api::provision::PreviewData::new(
                config.db_path(),
                p,
            )));
        }
        if let Some(d) = &config.api.domains
            && let Some(dns) = api::domain::preview_dns(d, &config.previews)
                .map_err(|e| Failure::Invalid(format!("[domains] {e}")))?
        {
            previews = previews.with_dns(dns);
        }
        let daemon = Daemon::start(config, Arc::new(previews)).await?;
        daemon.run_until(shutdown_signal()).await
    })
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => info!("SIGTERM: stopping"),
                _ = int.recv() => info!("SIGINT: stopping"),
            }
        }
        _ => {
            warn!("cannot install signal handlers; stop with SIGKILL");
            std::future::pending::<()>().await;
        }
    }
}

/// A running daemon: listener bound, store open, workers started.
pub struct Daemon {
    listener: tokio::net::TcpListener,
    app: axum::Router,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    grace: std::time::Duration,
    limits: config::Limits,
}

impl Daemon {
    /// Opens the store in `state_dir`, binds `listen`, and starts the dispatcher and the
    /// reconciler over `applier`.
    pub async fn start<A: Applier>(config: Config, applier: Arc<A>) -> Result<Daemon, Failure> {
        std::fs::create_dir_all(&config.state_dir).map_err(|e| {
            Failure::Io(format!(
                "cannot create state_dir {}: {e}",
                config.state_dir.display()
            ))
        })?;
        let (store, opened) =
            Store::open(&config.db_path()).map_err(|e| Failure::Io(e.to_string()))?;
        if opened.requeued > 0 {
            warn!(
                jobs = opened.requeued,
                "jobs interrupted by the last stop are queued again"
            );
        }
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|e| {
                Failure::Io(format!(
                    "cannot listen on {}: {e}; is another daemon running, or change `listen`",
                    config.listen
                ))
            })?;
        let api = open_api(&config)?;
        let (app, shutdown, tasks) = wire(&config, store, applier, api);
        info!(
            listen = %config.listen,
            state = %config.db_path().display(),
            repos = config.previews.repos.len(),
            secrets = config.secrets.len(),
            "codeb-daemon serving"
        );
        Ok(Daemon {
            listener,
            app,
            shutdown,
            tasks,
            grace: config.shutdown_grace,
            limits: config.limits,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `stop` resolves, then stops accepting, lets requests and jobs in flight
    /// finish (each bounded by `shutdown_grace`), and returns.
    pub async fn run_until(
        self,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), Failure> {
        let Daemon {
            listener,
            app,
            shutdown,
            tasks,
            grace,
            limits,
        } = self;
        server::serve(listener, app, limits, stop, grace).await;
        let _ = shutdown.send(true);
        for t in tasks {
            // The dispatcher bounds its own wait by the grace; this bounds the reconciler.
            if tokio::time::timeout(grace, t).await.is_err() {
                warn!("a background task did not stop within the shutdown grace");
            }
        }
        info!("stopped");
        Ok(())
    }
}

/// Opens the control plane's tables (None when `[api] enabled = false`).
fn open_api(config: &Config) -> Result<Option<Arc<api::Api>>, Failure> {
    if !config.api.enabled {
        return Ok(None);
    }
    let (api, recovered) = api::Api::open(&config.db_path(), config.api.clone(), &config.previews)
        .map_err(|e| Failure::Io(e.to_string()))?;
    if !recovered.interrupted.is_empty() {
        warn!(jobs = ?recovered.interrupted, "API jobs interrupted by the last stop are reported interrupted (not rerun)");
    }
    Ok(Some(api))
}

/// Builds the router and starts the background tasks; returns the shutdown switch.
fn wire<A: Applier>(
    config: &Config,
    store: Store,
    applier: Arc<A>,
    api: Option<Arc<api::Api>>,
) -> (
    axum::Router,
    watch::Sender<bool>,
    Vec<tokio::task::JoinHandle<()>>,
) {
    let metrics = Arc::new(Metrics::new());
    let wake = Arc::new(Notify::new());
    let in_flight = Arc::new(AtomicUsize::new(0));
    let (shutdown, shutdown_rx) = watch::channel(false);
    let repos: HashMap<String, String> = config
        .previews
        .repos
        .keys()
        .map(|r| (r.to_ascii_lowercase(), r.clone()))
        .collect();
    let pool_applier = applier.clone();
    let wake_reconciler = wake.clone();
    let intake = Arc::new(Intake {
        store: store.clone(),
        secrets: config.secrets.clone(),
        events: config.events.clone(),
        repos,
        approve_label: config.previews.approve_label.clone(),
        metrics: metrics.clone(),
        wake: wake.clone(),
        pool: Arc::new(move || pool_applier.pool_usage()),
        in_flight: in_flight.clone(),
        limits: config.limits,
        webhook_slots: Arc::new(tokio::sync::Semaphore::new(
            config.limits.max_webhooks_in_flight,
        )),
        backup_config: config.api.backup_config.clone(),
    });
    let worker_cfg = WorkerConfig {
        max_concurrency: config.max_concurrency,
        max_attempts: config.max_attempts,
        retry_backoff: config.retry_backoff,
        shutdown_grace: config.shutdown_grace,
    };
    let dispatcher = tokio::spawn(worker::dispatch(
        store.clone(),
        applier.clone(),
        metrics.clone(),
        worker_cfg,
        wake,
        in_flight,
        shutdown_rx.clone(),
    ));
    let reconciler = tokio::spawn(worker::reconcile(
        applier,
        store,
        metrics,
        wake_reconciler,
        config.reconcile_interval,
        config.retention,
        shutdown_rx,
    ));
    let mut tasks = vec![dispatcher, reconciler];
    let mut router = server::router(intake);
    if let Some(api) = api {
        tasks.push(api::spawn(api.clone(), shutdown.subscribe()));
        router = router.merge(api::router(api));
    }
    (router, shutdown, tasks)
}

/// For in-process tests: the router and background tasks over `applier`, with the store at
/// `config.db_path()`; dropping nothing stops them (the runtime's end does).
pub fn app_for_tests<A: Applier>(
    config: &Config,
    applier: Arc<A>,
) -> Result<(axum::Router, watch::Sender<bool>), String> {
    std::fs::create_dir_all(&config.state_dir).map_err(|e| e.to_string())?;
    let (store, _) = Store::open(&config.db_path()).map_err(|e| e.to_string())?;
    let api = open_api(config).map_err(|e| e.to_string())?;
    let (app, shutdown, _tasks) = wire(config, store, applier, api);
    Ok((app, shutdown))
}
