//! `we scale k8s render|apply`: the Kubernetes target (scale-out phase 2).
//!
//! Rendering happens here, on the client, from what the control plane serves: the project
//! definition and its deployed release (`GET /projects/{name}/scan`) and, only when needed,
//! the env file's values (`GET /projects/{name}/env`, admins and owners). Why client side:
//! the kubeconfig and its credentials are the developer's, so `apply` runs here anyway, and
//! rendering beside it means the objects applied are exactly the objects `render` shows,
//! built by the same `codeb-k8s` version; the daemon stays free of the Kubernetes crates.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use codeb_api::{EnvValues, ScanData, paths};
use codeb_k8s::apply::{self as k8s_apply, ApplyError};
use codeb_k8s::{EnvSource, Input, Manifests, Secrets, yaml};
use serde::Serialize;

use crate::cli::EnvArg;
use crate::client::Api;
use crate::exit::{Exit, WeError};
use crate::output::Out;

pub const K8S_AFTER_HELP: &str = "\
Examples:
  we scale k8s render myapp                       # YAML on stdout; the Secret is left out
  we scale k8s render myapp -e staging -o json    # a v1 List
  we scale k8s render myapp --include-secrets > myapp.yaml   # with the Secret (base64 values)
  we scale k8s apply myapp --context prod-cluster --dry-run=server
  we scale k8s apply myapp --context prod-cluster # server-side apply, then wait for the rollout

The objects: Deployment (no replicas: the HPA owns them), Service, HorizontalPodAutoscaler
(autoscaling/v2; min 2, max 10, 70 % CPU unless the project's `kubernetes` section says
otherwise), PodDisruptionBudget, Ingress, and a Secret from the env file. They use the
Kubernetes 1.33 API and are validated against 1.33 to 1.37. The namespace must exist.

Secrets: `render` prints the Secret only with --include-secrets (admins and the project's
owners); without it the Secret is left out and a note on stderr names its keys. `apply`
always sends it. Values never reach stderr or --json summaries.";

#[derive(Debug, Subcommand)]
pub enum ScaleCommand {
    /// The Kubernetes target (phase 2): render the manifests, apply them to a cluster
    #[command(subcommand)]
    K8s(K8sCommand),
    /// The app hosts (their releases and health) and the balancers, then the manual's
    /// phase-2 thresholds measured on the server (requests in flight and request rate from
    /// Caddy's metrics, host CPU, deploys in 24 h) and whether phase 2 is due
    Status(StatusArgs),
    /// Add or remove an app host (phase 1; admins only)
    #[command(after_help = APP_AFTER_HELP)]
    App(AppArgs),
}

pub const APP_AFTER_HELP: &str = "\
Examples:
  we scale app --add n1-2 --agent-url http://10.0.1.2:7070
  we scale app --remove n1-2

Before --add: on the control plane, `codeb-daemon agent-token --out <state_dir>/hosts/n1-2.token`
(0600) prints a SHA-256; on the host, run `codeb-daemon agent --host n1-2 --listen
10.0.1.2:7070 --token-sha256-file FILE` (FILE holds that SHA-256) beside podman and Caddy.
--add deploys the current release of every project there, proves each healthy from the
balancer's side, then adds the host to each project's balancer; on any failure it stops what
it started and the host is not added. --remove drains the host out of the balancers first,
then stops its releases.";

#[derive(Debug, Args)]
pub struct AppArgs {
    /// Register a prepared host and put it into service
    #[arg(
        long,
        value_name = "HOST",
        required_unless_present = "remove",
        conflicts_with = "remove"
    )]
    pub add: Option<String>,
    /// Drain a host out of the balancers, then stop its releases
    #[arg(long, value_name = "HOST")]
    pub remove: Option<String>,
    /// The host's agent (`http://<address>:<port>`), with --add
    #[arg(long, value_name = "URL", requires = "add")]
    pub agent_url: Option<String>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// How long the server samples Caddy's counters and the CPU (1s-60s)
    #[arg(long, value_name = "DURATION", default_value = "5s")]
    pub window: String,
}

#[derive(Debug, Subcommand)]
pub enum K8sCommand {
    /// Print the manifests of a project environment (YAML or JSON) on stdout
    #[command(after_help = K8S_AFTER_HELP)]
    Render(RenderArgs),
    /// Server-side apply the manifests (field manager `codeb`) and wait for the rollout
    #[command(after_help = K8S_AFTER_HELP)]
    Apply(ApplyArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Yaml,
    Json,
}

#[derive(Debug, Args)]
pub struct Common {
    /// The registry project
    pub project: String,
    #[arg(long, short = 'e', value_enum, default_value_t = EnvArg::Production)]
    pub environment: EnvArg,
    /// The image the pods run [default: the release serving the environment now, else the
    /// image the workflow builds for the environment's branch]
    #[arg(long, value_name = "REF")]
    pub image: Option<String>,
}

#[derive(Debug, Args)]
pub struct RenderArgs {
    #[command(flatten)]
    pub common: Common,
    /// Output format (--json means json)
    #[arg(long, short = 'o', value_enum, default_value_t = Format::Yaml)]
    pub output: Format,
    /// Include the Secret with the env file's values (base64, as Kubernetes stores them)
    #[arg(long)]
    pub include_secrets: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DryRun {
    /// The API server validates and admits the objects, and stores nothing
    Server,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub common: Common,
    /// The kubeconfig context to apply to (`kubectl config get-contexts`)
    #[arg(long, value_name = "NAME")]
    pub context: String,
    /// The kubeconfig file [default: $KUBECONFIG, else ~/.kube/config]
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Send the apply as a dry run (`--dry-run=server`); no rollout to wait for
    #[arg(long, value_enum, value_name = "MODE", num_args = 0..=1, require_equals = true, default_missing_value = "server")]
    pub dry_run: Option<DryRun>,
    /// How long to wait for the rollout (humantime)
    #[arg(long, value_name = "DURATION", default_value = "10m")]
    pub timeout: String,
}

pub async fn scale(cmd: ScaleCommand, api: &Api, out: &Out) -> Result<Exit, WeError> {
    match cmd {
        ScaleCommand::K8s(K8sCommand::Render(a)) => render(a, api, out).await,
        ScaleCommand::K8s(K8sCommand::Apply(a)) => apply(a, api, out).await,
        ScaleCommand::Status(a) => status(a, api, out).await,
        ScaleCommand::App(a) => app(a, api, out).await,
    }
}

async fn app(a: AppArgs, api: &Api, out: &Out) -> Result<Exit, WeError> {
    let change: codeb_api::scale::HostChange = match (a.add, a.remove) {
        (Some(host), None) => {
            let agent_url = a.agent_url.ok_or_else(|| {
                WeError::Usage(format!(
                    "--add {host} needs --agent-url http://<address>:<port> of the host's agent"
                ))
            })?;
            let _p = out.progress(&format!("adding {host}"));
            api.send_json_slow(
                reqwest::Method::POST,
                paths::SCALE_HOSTS,
                Some(&codeb_api::scale::HostAdd { host, agent_url }),
                Duration::from_secs(1800),
            )
            .await?
        }
        (None, Some(host)) => {
            let _p = out.progress(&format!("removing {host}"));
            api.send_json_slow::<(), _>(
                reqwest::Method::DELETE,
                &paths::scale_host(&host),
                None,
                Duration::from_secs(900),
            )
            .await?
        }
        _ => return Err(WeError::Usage("give --add HOST or --remove HOST".into())),
    };
    if out.json {
        out.json_line(&change)?;
    } else {
        for s in &change.steps {
            out.line(s)?;
        }
    }
    Ok(Exit::Ok)
}

async fn hosts_part(
    api: &Api,
    out: &Out,
) -> Result<Option<codeb_api::scale::HostsReport>, WeError> {
    use crate::output::{Cell, Style};
    let r: codeb_api::scale::HostsReport = api.get(paths::SCALE_HOSTS, &[]).await?;
    if out.json {
        return Ok(Some(r));
    }
    if r.hosts.is_empty() {
        out.line("app hosts: none (one server; `we scale app --add` adds one)")?;
    } else {
        let mut rows = Vec::new();
        for h in &r.hosts {
            if h.releases.is_empty() {
                rows.push(vec![
                    Cell::from(h.host.clone()),
                    Cell::from(h.address.clone()),
                    if h.reachable {
                        Cell::new("reachable", Style::Good)
                    } else {
                        Cell::new("unreachable", Style::Bad)
                    },
                    Cell::from("-"),
                    Cell::new(h.error.clone().unwrap_or_default(), Style::Dim),
                ]);
            }
            for rel in &h.releases {
                rows.push(vec![
                    Cell::from(h.host.clone()),
                    Cell::from(h.address.clone()),
                    if rel.healthy {
                        Cell::new("healthy", Style::Good)
                    } else {
                        Cell::new("unhealthy", Style::Bad)
                    },
                    Cell::from(rel.unit.clone()),
                    Cell::new(
                        format!(
                            "{} ({} slot)",
                            rel.digest.clone().unwrap_or_default(),
                            rel.slot.clone().unwrap_or_default()
                        ),
                        Style::Dim,
                    ),
                ]);
            }
        }
        out.table(&["host", "address", "health", "release", "digest"], &rows)?;
    }
    for b in &r.balancers {
        let ups: Vec<String> = b
            .upstreams
            .iter()
            .map(|u| {
                format!(
                    "{} ({} in flight, {} fails)",
                    u.address,
                    u.in_flight.map_or("-".into(), |v| v.to_string()),
                    u.fails.map_or("-".into(), |v| v.to_string())
                )
            })
            .collect();
        out.line(&format!(
            "balancer {} on {}: {}",
            b.unit,
            b.listen,
            ups.join(", ")
        ))?;
    }
    for n in &r.notes {
        out.warn(n);
    }
    Ok(None)
}

fn num(v: Option<f64>) -> String {
    v.map_or_else(
        || "-".to_owned(),
        |v| {
            if (v - v.round()).abs() < f64::EPSILON {
                format!("{v:.0}")
            } else {
                format!("{v:.1}")
            }
        },
    )
}

async fn status(a: StatusArgs, api: &Api, out: &Out) -> Result<Exit, WeError> {
    let secs = humantime::parse_duration(a.window.trim())
        .ok()
        .filter(|d| (Duration::from_secs(1)..=Duration::from_secs(60)).contains(d))
        .ok_or_else(|| {
            WeError::Usage(format!(
                "--window `{}` is not a duration from 1s to 60s (e.g. 5s)",
                a.window
            ))
        })?;
    let hosts = hosts_part(api, out).await?;
    let s: codeb_api::ScaleStatus = {
        let _p = out.progress(&format!(
            "sampling for {}",
            humantime::format_duration(secs)
        ));
        api.get(
            codeb_api::paths::SCALE_STATUS,
            &[("window", a.window.trim().to_owned())],
        )
        .await?
    };
    if out.json {
        match hosts {
            Some(h) => {
                let mut v = serde_json::to_value(&s).map_err(|e| WeError::Server(e.to_string()))?;
                if let Some(m) = v.as_object_mut() {
                    m.insert(
                        "hosts".into(),
                        serde_json::to_value(&h).map_err(|e| WeError::Server(e.to_string()))?,
                    );
                }
                out.json_line(&v)?;
            }
            None => out.json_line(&s)?,
        }
        return Ok(Exit::Ok);
    }
    use crate::output::{Cell, Style};
    let rows: Vec<Vec<Cell>> = s
        .thresholds
        .iter()
        .map(|t| {
            let state = match t.exceeded {
                Some(true) => Cell::new("past the limit", Style::Bad),
                Some(false) => Cell::new("within", Style::Good),
                None => Cell::new("not measured", Style::Dim),
            };
            vec![
                Cell::from(t.name.clone()),
                Cell::from(num(t.measured)),
                Cell::from(
                    t.limit
                        .map_or_else(|| "-".to_owned(), |l| format!("{l:.0}")),
                ),
                state,
                Cell::new(t.note.clone(), Style::Dim),
            ]
        })
        .collect();
    out.table(
        &["threshold", "measured", "limit", "state", "source"],
        &rows,
    )?;
    out.pairs(&[
        ("requests/s", Cell::from(num(s.measured.requests_per_s))),
        ("requests total", Cell::from(num(s.measured.requests_total))),
    ])?;
    out.line(&s.verdict)?;
    for n in &s.notes {
        out.warn(n);
    }
    Ok(Exit::Ok)
}

/// Fetches what the render needs and renders; `with_values` asks the server for the env
/// file's values (else only its keys are known, and the Secret is withheld).
async fn build(c: &Common, with_values: bool, api: &Api) -> Result<Manifests, WeError> {
    let name = codeb_core::ProjectName::new(&c.project)
        .map_err(|e| WeError::Usage(format!("project `{}`: {e}", c.project)))?;
    let env = c.environment.as_str();
    let scan: ScanData = api.get(&paths::scan(name.as_str()), &[]).await?;
    let spec = &scan.project.spec;
    let penv = spec
        .environments
        .iter()
        .find(|e| e.name == env)
        .ok_or_else(|| {
            WeError::Usage(format!(
                "project `{name}` has no {env} environment in the registry (it has: {})",
                spec.environments
                    .iter()
                    .map(|e| e.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
    let escan = scan.environments.iter().find(|e| e.environment == env);
    let source = match (&penv.env_file, with_values) {
        (None, _) => EnvSource::None,
        (Some(_), false) => EnvSource::Withheld {
            keys: escan.and_then(|e| e.env_keys.clone()).unwrap_or_default(),
        },
        (Some(_), true) => {
            let v: EnvValues = api
                .get(
                    &paths::env(name.as_str()),
                    &[("environment", env.to_owned())],
                )
                .await?;
            v.values.map_or(EnvSource::None, EnvSource::Values)
        }
    };
    let deployed = escan
        .and_then(|e| e.deployed.as_ref())
        .map(|r| r.image.as_str());
    let image = c
        .image
        .clone()
        .unwrap_or_else(|| codeb_k8s::render::default_image(spec, env, deployed));
    let m = codeb_k8s::render(&Input {
        spec,
        environment: env,
        image,
        env: source,
    })
    .map_err(|e| WeError::Usage(e.to_string()))?;
    let problems = codeb_k8s::check::problems(&m, spec);
    if !problems.is_empty() {
        return Err(WeError::Failed(format!(
            "the rendered manifests fail codeb's checks (a bug in codeb-k8s; please report it): {}",
            problems.join("; ")
        )));
    }
    Ok(m)
}

async fn render(a: RenderArgs, api: &Api, out: &Out) -> Result<Exit, WeError> {
    let m = build(&a.common, a.include_secrets, api).await?;
    let secrets = if a.include_secrets {
        Secrets::Include
    } else {
        Secrets::Omit
    };
    let objects = m
        .objects(secrets)
        .map_err(|e| WeError::Io(format!("cannot encode the manifests: {e}")))?;
    let text = if a.output == Format::Json || out.json {
        yaml::json_list(&objects).map_err(|e| WeError::Io(format!("cannot encode JSON: {e}")))?
    } else {
        yaml::documents(&objects).map_err(|e| WeError::Io(format!("cannot encode YAML: {e}")))?
    };
    for n in &m.notes {
        out.info(&format!("note: {n}"));
    }
    write_stdout(&text)?;
    Ok(Exit::Ok)
}

fn write_stdout(text: &str) -> Result<(), WeError> {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    match o.write_all(text.as_bytes()).and_then(|()| o.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(WeError::Io(format!("cannot write to stdout: {e}"))),
    }
}

#[derive(Debug, Serialize)]
struct ApplyReport {
    context: String,
    namespace: String,
    dry_run: bool,
    applied: Vec<k8s_apply::Applied>,
    /// `complete`, or `skipped` for a dry run.
    rollout: &'static str,
}

fn apply_error(e: ApplyError) -> WeError {
    match e {
        ApplyError::Kubeconfig { .. }
        | ApplyError::NoContext { .. }
        | ApplyError::Client { .. } => WeError::Usage(e.to_string()),
        ApplyError::Unreachable { what, message } => WeError::Unreachable {
            server: format!("the Kubernetes API server ({what})"),
            reason: message,
        },
        ApplyError::Apply { .. } | ApplyError::Rollout { .. } | ApplyError::Timeout { .. } => {
            WeError::Failed(e.to_string())
        }
    }
}

async fn apply(a: ApplyArgs, api: &Api, out: &Out) -> Result<Exit, WeError> {
    let timeout: Duration = humantime::parse_duration(a.timeout.trim()).map_err(|e| {
        WeError::Usage(format!(
            "--timeout `{}` is not a duration ({e}); write e.g. 5m or 600s",
            a.timeout
        ))
    })?;
    // The kubeconfig first: a wrong context is found before anything is fetched.
    let client = k8s_apply::client(&a.context, a.kubeconfig.as_deref())
        .await
        .map_err(apply_error)?;
    let m = build(&a.common, true, api).await?;
    let dry_run = a.dry_run.is_some();
    let how = if dry_run { " (server dry run)" } else { "" };
    let applied = {
        let _p = out.progress(&format!(
            "applying {} objects to {}/{}{how}",
            5 + usize::from(m.secret.is_some()),
            a.context,
            m.namespace
        ));
        k8s_apply::apply(&client, &m, dry_run)
            .await
            .map_err(apply_error)?
    };
    if !out.json {
        for x in &applied {
            out.info(&format!(
                "applied {} {}/{}{how}",
                x.kind, x.namespace, x.name
            ));
        }
    }
    let mut rollout = "skipped";
    if !dry_run {
        let generation = applied
            .iter()
            .find(|x| x.kind == "Deployment")
            .and_then(|x| x.generation);
        let json = out.json;
        k8s_apply::wait_rollout(
            &client,
            &m.namespace,
            &m.name,
            generation,
            timeout,
            Duration::from_secs(2),
            |msg| {
                if !json {
                    out.info(&format!("rollout: {msg}"));
                }
            },
        )
        .await
        .map_err(apply_error)?;
        rollout = "complete";
        if !out.json {
            let (min, max) = m.replicas();
            out.info(&format!(
                "rollout of Deployment {}/{} complete ({min}-{max} pods under the HPA)",
                m.namespace, m.name
            ));
        }
    }
    if out.json {
        out.json_line(&ApplyReport {
            context: a.context,
            namespace: m.namespace.clone(),
            dry_run,
            applied,
            rollout,
        })?;
    }
    Ok(Exit::Ok)
}
