//! `codeb-quadlet-update`: deploys a release as a digest-pinned Quadlet unit, proves it
//! healthy, moves traffic to it (blue-green through Caddy, or restart), and rolls back by
//! itself when the new release is not healthy.
//!
//! Exit codes: 0 deployed; 1 the new release failed (and was rolled back) or the deploy failed
//! after it began changing the host; 2 usage or input error (nothing on the host changed).

use clap::{Args as ClapArgs, Parser, Subcommand, ValueEnum};
use codeb_actions::{Annotation, Exit, Level, Step, md_cell};
use codeb_core::manifest::Target;
use codeb_core::{Environment, ProjectName, vars};
use codeb_deploy::{
    DeployOptions, DeployReport, Engine, Outcome, RollbackOptions, RuntimeChoice, Strategy,
    TargetLocation,
};
use codeb_health::Expectation;
use codeb_host::ManifestStore;
use std::path::PathBuf;
use std::process::ExitCode;

mod delegated;
use std::time::Duration;

const AFTER_HELP: &str = "\
How a deploy goes:
  1. resolve --image to its digest in the registry (nothing changes if that fails);
  2. write <quadlet-dir>/<project>-<env>-<slot>.container with Image=<repo>@sha256:... pinned;
  3. start it (systemd + Quadlet where systemd runs, else `podman run` with the same meaning);
  4. probe its health endpoint until --successes healthy answers in a row;
  5. move traffic: Caddy listens on the manifest port and proxies to the active slot
     (blue = port+10000, green = port+20000); the old slot drains for --drain, then stops.
  If the new release is not healthy by --health-deadline, traffic never leaves the old one,
  the step fails with the health checker's last failure, and the history says rolled-back.

Examples:
  codeb-quadlet-update deploy --project myapp --environment production \\
      --image ghcr.io/acme/myapp:sha-1a2b3c --expect version=1a2b3c
  codeb-quadlet-update history --project myapp --environment production
  codeb-quadlet-update rollback --project myapp --environment production
  codeb-quadlet-update podman-args /etc/containers/systemd/myapp-production-blue.container
  codeb-quadlet-update restore-routes --caddy-admin unix//run/caddy/admin.sock --wait 30s

Caddy keeps routes added through its admin API in memory only: after `caddy reload` or a
restart, `restore-routes` (templates/systemd/codeb-restore-routes.service at boot) rebuilds
every front and preview route from <quadlet-dir>/.codeb; routes that exist are left alone.

Registry auth: ghcr.io uses CODEB_REGISTRY_TOKEN or GITHUB_TOKEN; other registries
CODEB_REGISTRY_USERNAME + CODEB_REGISTRY_PASSWORD. Plain HTTP only for loopback registries.
Every flag can also come from its action input (INPUT_<NAME>).
Exit codes: 0 deployed, 1 rolled back or failed after changes began, 2 usage or input error.";

#[derive(Debug, Parser)]
#[command(
    name = "codeb-quadlet-update",
    version,
    args_override_self = true,
    about = "Deploy a release as a digest-pinned Quadlet unit, health-gated, with automatic rollback",
    after_help = AFTER_HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Deploy an image (resolve, pin, start, health-check, switch, drain)
    Deploy(Box<DeployArgs>),
    /// Go back to the previous good release
    Rollback(Box<DeployArgs>),
    /// Show the releases of a target (digest, time, sha, result)
    History(HistoryArgs),
    /// Rebuild every codeb Caddy front and preview route from <quadlet-dir>/.codeb (after a
    /// Caddy reload or restart); routes that exist are left alone, so it is safe to repeat
    RestoreRoutes(RestoreArgs),
    /// Print the podman run arguments of a .container file, one per line
    #[command(after_help = podman_args_help())]
    PodmanArgs {
        /// The .container unit file
        file: PathBuf,
        /// Refuse keys (and values) that this podman's Quadlet generator lacks or translates
        /// differently, naming the versions that accept them and the PodmanArgs= equivalent
        #[arg(long, value_name = "X.Y", value_parser = parse_podman_version)]
        podman_version: Option<codeb_quadlet::PodmanVersion>,
    },
}

#[derive(Debug, Clone, ClapArgs)]
struct Where {
    /// Project name (a DNS label)
    #[arg(long, value_name = "NAME", value_parser = parse_project)]
    project: ProjectName,
    /// production, staging (or preview with --pr)
    #[arg(long, value_name = "ENV", value_parser = parse_env)]
    environment: Environment,
    /// Pull request number (preview environment only)
    #[arg(long, value_name = "N")]
    pr: Option<u64>,
    /// The port manifest [default: $CODEB_MANIFEST, else /home/codeb/config/port-manifest.yaml]
    #[arg(long, value_name = "PATH")]
    manifest: Option<PathBuf>,
    /// Where Quadlet units (and codeb's state in .codeb/) live
    #[arg(
        long,
        value_name = "DIR",
        env = vars::CODEB_QUADLET_DIR,
        default_value = "/etc/containers/systemd"
    )]
    quadlet_dir: PathBuf,
}

#[derive(Debug, ClapArgs)]
struct DeployArgs {
    #[command(flatten)]
    at: Where,
    /// Image to deploy, e.g. ghcr.io/acme/myapp:sha-1a2b3c (rollback: ignored)
    #[arg(long, value_name = "REF", default_value = "")]
    image: String,
    /// The port the app listens on inside the container
    #[arg(long, value_name = "PORT", default_value_t = 3000)]
    container_port: u16,
    /// Environment file for the container (absolute path, not world-readable)
    #[arg(long, value_name = "PATH")]
    env_file: Option<PathBuf>,
    /// Health endpoint path
    #[arg(long, value_name = "PATH", default_value = "/api/health")]
    health_path: String,
    /// auto: systemd where it is PID 1 and podman has Quadlet (>= 4.4), else podman
    #[arg(long, value_enum, env = vars::CODEB_RUNTIME, default_value_t = RuntimeArg::Auto)]
    runtime: RuntimeArg,
    /// blue-green (zero downtime) or restart [default: blue-green for production, else restart]
    #[arg(long, value_enum)]
    strategy: Option<StrategyArg>,
    /// Give up on an unhealthy release after this long
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = codeb_actions::parse_duration)]
    health_deadline: Duration,
    /// Time between health probes
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = codeb_actions::parse_duration)]
    health_interval: Duration,
    /// Consecutive healthy probes needed
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=100))]
    successes: u32,
    /// Require a field of the health answer, e.g. version=<git sha> (repeatable)
    #[arg(long, value_name = "KEY=VALUE", action = clap::ArgAction::Append)]
    expect: Vec<String>,
    /// The unit's HealthCmd (inside the container), or `none`
    #[arg(long, value_name = "CMD")]
    health_cmd: Option<String>,
    #[command(flatten)]
    admin: AdminArgs,
    /// How long the old release keeps serving requests in flight after the switch
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = codeb_actions::parse_duration)]
    drain: Duration,
    /// Wait this long for another deploy of the same target
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = codeb_actions::parse_duration)]
    lock_timeout: Duration,
    /// Git sha of the release [default: $GITHUB_SHA]
    #[arg(long, value_name = "SHA")]
    sha: Option<String>,
    /// Who deploys [default: $GITHUB_ACTOR, else $USER]
    #[arg(long, value_name = "NAME")]
    actor: Option<String>,
    /// How many releases the history keeps; older releases' images are pruned from the host
    /// (unless another target still uses them)
    #[arg(long, value_name = "N", default_value_t = codeb_deploy::KEEP_RELEASES, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(2..=1000))]
    keep_releases: usize,
    /// Directory with an app.container.tera overriding the embedded unit template
    #[arg(long, value_name = "DIR")]
    templates: Option<PathBuf>,
}

#[derive(Debug, ClapArgs)]
struct AdminArgs {
    /// Caddy admin API: its unix socket (recommended), e.g. unix//run/caddy/admin.sock, or a
    /// loopback URL; `none`: no Caddy front (restart only)
    #[arg(
        long,
        value_name = "ADDRESS",
        env = vars::CODEB_CADDY_ADMIN,
        default_value = "http://127.0.0.1:2019"
    )]
    caddy_admin: String,
    /// Accept a Caddy admin URL that is not on loopback (its API has no authentication)
    #[arg(long)]
    allow_remote_caddy_admin: bool,
}

#[derive(Debug, ClapArgs)]
struct RestoreArgs {
    /// Where Quadlet units (and codeb's state in .codeb/) live
    #[arg(
        long,
        value_name = "DIR",
        env = vars::CODEB_QUADLET_DIR,
        default_value = "/etc/containers/systemd"
    )]
    quadlet_dir: PathBuf,
    #[command(flatten)]
    admin: AdminArgs,
    /// Wait up to this long for Caddy's admin API to answer (Caddy may still be starting)
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = codeb_actions::parse_duration)]
    wait: Duration,
}

#[derive(Debug, ClapArgs)]
struct HistoryArgs {
    #[command(flatten)]
    at: Where,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum RuntimeArg {
    Auto,
    Systemd,
    Podman,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum StrategyArg {
    BlueGreen,
    Restart,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Text,
    Json,
}

fn parse_project(s: &str) -> Result<ProjectName, String> {
    ProjectName::new(s).map_err(|e| e.to_string())
}

fn parse_env(s: &str) -> Result<Environment, String> {
    s.parse()
        .map_err(|e: codeb_core::names::UnknownEnvironment| e.to_string())
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn error(step: &Step, title: &str, message: &str) {
    step.annotate(
        Level::Error,
        &Annotation {
            title: Some(title.to_owned()),
            message: message.to_owned(),
            ..Annotation::default()
        },
    );
}

pub fn main() -> ExitCode {
    let step = Step::from_env();
    let cli: Cli = match codeb_actions::parse_args(&step, "codeb-quadlet-update") {
        Ok(a) => a,
        Err(code) => return code,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            error(
                &step,
                "codeb-quadlet-update",
                &format!("cannot start the async runtime: {e}"),
            );
            return Exit::Usage.into();
        }
    };
    runtime.block_on(run(&step, cli)).into()
}

fn parse_podman_version(s: &str) -> Result<codeb_quadlet::PodmanVersion, String> {
    s.parse()
        .map_err(|e: codeb_quadlet::InvalidVersion| e.to_string())
}

/// Which podman versions accept which keys (from codeb-quadlet's table, checked against
/// podman's own generators).
fn podman_args_help() -> String {
    let checked: Vec<String> = codeb_quadlet::CHECKED_GENERATORS
        .iter()
        .map(ToString::to_string)
        .collect();
    let mut help = format!(
        "Podman versions: every supported [Container] key is accepted by podman {} and later, except:\n",
        checked[0]
    );
    for (key, _) in codeb_quadlet::newer_keys() {
        help.push_str(&format!("  {}\n", codeb_quadlet::describe(key)));
    }
    help.push_str(&format!(
        "(checked against the Quadlet generators of podman {}; deploys write the PodmanArgs= \
         equivalent for the host's podman)",
        checked.join(", ")
    ));
    help
}

async fn run(step: &Step, cli: Cli) -> Exit {
    match cli.command {
        Command::PodmanArgs {
            file,
            podman_version,
        } => match codeb_quadlet::ContainerUnit::load(&file).and_then(|unit| {
            podman_version
                .map_or(Ok(()), |v| unit.check_podman_version(v))
                .map(|()| unit)
        }) {
            Ok(unit) => {
                for a in unit.podman_run_args() {
                    step.result(&a);
                }
                Exit::Success
            }
            Err(e) => {
                error(step, "codeb-quadlet-update", &e.to_string());
                Exit::Usage
            }
        },
        Command::History(h) => history(step, &h).await,
        Command::RestoreRoutes(r) => restore_routes(step, &r).await,
        Command::Deploy(mut d) => deploy(step, &mut d, false).await,
        Command::Rollback(mut d) => deploy(step, &mut d, true).await,
    }
}

fn location(
    at: &Where,
    caddy: Option<String>,
    allow_remote_admin: bool,
    runtime: RuntimeChoice,
    templates: Option<PathBuf>,
) -> TargetLocation {
    TargetLocation {
        manifest: ManifestStore::resolve(at.manifest.clone()),
        quadlet_dir: at.quadlet_dir.clone(),
        caddy_admin: caddy,
        allow_remote_admin,
        runtime,
        templates,
    }
}

async fn restore_routes(step: &Step, r: &RestoreArgs) -> Exit {
    let title = "Route restore failed";
    let admin = r.admin.caddy_admin.as_str();
    if matches!(admin, "" | "none") {
        error(
            step,
            title,
            "restore-routes needs Caddy's admin API: give --caddy-admin",
        );
        return Exit::Usage;
    }
    let caddy = if r.admin.allow_remote_caddy_admin {
        codeb_deploy::Caddy::new_allowing_remote(admin)
    } else {
        codeb_deploy::Caddy::new(admin)
    };
    let state_dir = r.quadlet_dir.join(".codeb");
    let caddy = match caddy {
        Ok(c) => c.with_lock_file(state_dir.join("caddy.lock")),
        Err(e) => {
            error(step, title, &e.to_string());
            return Exit::Usage;
        }
    };
    let deadline = std::time::Instant::now() + r.wait;
    while let Err(e) = caddy.check().await {
        if std::time::Instant::now() >= deadline {
            error(step, title, &e.to_string());
            return Exit::Usage;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    match codeb_deploy::restore_routes(&state_dir, &caddy).await {
        Ok(report) => {
            for name in &report.restored {
                step.result(&format!("restored {name}"));
            }
            for name in &report.present {
                step.result(&format!("present  {name}"));
            }
            for (name, why) in &report.skipped {
                step.annotate(
                    Level::Warning,
                    &Annotation {
                        title: Some("route not restored".into()),
                        message: format!("{name}: {why}"),
                        ..Annotation::default()
                    },
                );
            }
            step.result(&format!(
                "{} restored, {} already there, {} skipped",
                report.restored.len(),
                report.present.len(),
                report.skipped.len()
            ));
            Exit::Success
        }
        Err(e) => {
            error(step, title, &e.to_string());
            if e.changed_host() {
                Exit::Failure
            } else {
                Exit::Usage
            }
        }
    }
}

async fn history(step: &Step, h: &HistoryArgs) -> Exit {
    let target = match Target::new(h.at.project.clone(), h.at.environment, h.at.pr) {
        Ok(t) => t,
        Err(e) => {
            error(step, "codeb-quadlet-update", &e.to_string());
            return Exit::Usage;
        }
    };
    let engine = match Engine::new(location(&h.at, None, false, RuntimeChoice::Podman, None)).await
    {
        Ok(e) => e,
        Err(e) => {
            error(step, "codeb-quadlet-update", &e.to_string());
            return Exit::Usage;
        }
    };
    let hist = match engine.history(&target) {
        Ok(x) => x,
        Err(e) => {
            error(step, "codeb-quadlet-update", &e.to_string());
            return Exit::Usage;
        }
    };
    match h.format {
        Format::Json => match serde_json::to_string_pretty(&hist) {
            Ok(s) => step.result(&s),
            Err(e) => {
                error(step, "codeb-quadlet-update", &e.to_string());
                return Exit::Usage;
            }
        },
        Format::Text => {
            if hist.releases.is_empty() {
                step.result(&format!("{target}: no releases yet"));
                return Exit::Success;
            }
            // The actor column is as wide as its longest entry ("alice via the API, job 12").
            let aw = hist
                .releases
                .iter()
                .map(|r| r.actor.chars().count())
                .max()
                .unwrap_or(0)
                .max(5);
            step.result(&format!(
                "{:<21} {:<11} {:<6} {:<19} {:<10} {:<aw$} image",
                "time", "outcome", "slot", "digest", "sha", "actor"
            ));
            for r in &hist.releases {
                let outcome = serde_json::to_value(r.outcome)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                let digest: String = r.digest.chars().take(19).collect();
                let sha: String = r.sha.chars().take(10).collect();
                step.result(&format!(
                    "{:<21} {:<11} {:<6} {:<19} {:<10} {:<aw$} {}{}",
                    r.time,
                    outcome,
                    r.slot.as_str(),
                    digest,
                    sha,
                    r.actor,
                    r.image,
                    r.reason
                        .as_ref()
                        .map(|x| format!("  ({x})"))
                        .unwrap_or_default()
                ));
            }
        }
    }
    Exit::Success
}

async fn deploy(step: &Step, d: &mut DeployArgs, rollback: bool) -> Exit {
    let title = if rollback {
        "Rollback failed"
    } else {
        "Deploy failed"
    };
    let expect = match Expectation::parse_all(&d.expect) {
        Ok(e) => e,
        Err(e) => {
            error(step, title, &e.to_string());
            return Exit::Usage;
        }
    };
    if !rollback && d.image.trim().is_empty() {
        error(
            step,
            title,
            "--image is required: the image to deploy, e.g. ghcr.io/acme/myapp:sha-1a2b3c",
        );
        return Exit::Usage;
    }
    // Run through sudo (the runner's jobs): only what the caller could do itself.
    if let Some(caller) = codeb_actions::sudo::Caller::from_env()
        && let Err(e) = delegated::check(&caller, d)
    {
        error(step, title, &e);
        return Exit::Usage;
    }
    let caddy = match d.admin.caddy_admin.as_str() {
        "none" | "" => None,
        url => Some(url.to_owned()),
    };
    let runtime = match d.runtime {
        RuntimeArg::Auto => RuntimeChoice::Auto,
        RuntimeArg::Systemd => RuntimeChoice::Systemd,
        RuntimeArg::Podman => RuntimeChoice::Podman,
    };
    let opts = DeployOptions {
        project: d.at.project.clone(),
        environment: d.at.environment,
        pr: d.at.pr,
        image: d.image.clone(),
        container_port: d.container_port,
        env_file: d.env_file.clone(),
        health_path: if d.health_path.starts_with('/') {
            d.health_path.clone()
        } else {
            format!("/{}", d.health_path)
        },
        strategy: d.strategy.map(|s| match s {
            StrategyArg::BlueGreen => Strategy::BlueGreen,
            StrategyArg::Restart => Strategy::Restart,
        }),
        health_deadline: d.health_deadline,
        health_interval: d.health_interval,
        successes: d.successes,
        expect,
        health_cmd: match d.health_cmd.as_deref() {
            Some("none") | Some("") => None,
            Some(c) => Some(c.to_owned()),
            None => Some(codeb_deploy::DEFAULT_HEALTH_CMD.to_owned()),
        },
        drain: d.drain,
        lock_timeout: d.lock_timeout,
        sha: d
            .sha
            .clone()
            .or_else(|| env(vars::GITHUB_SHA))
            .unwrap_or_default(),
        actor: d
            .actor
            .clone()
            .or_else(|| env(vars::GITHUB_ACTOR))
            .or_else(|| env("USER"))
            .or_else(|| env("LOGNAME"))
            .unwrap_or_else(|| "unknown".into()),
        listen_host: "127.0.0.1".into(),
        keep_releases: d.keep_releases,
        container_keys: Vec::new(),
    };
    let engine = match Engine::new(location(
        &d.at,
        caddy,
        d.admin.allow_remote_caddy_admin,
        runtime,
        d.templates.clone(),
    ))
    .await
    {
        Ok(e) => e,
        Err(e) => {
            error(step, title, &e.to_string());
            return Exit::Usage;
        }
    };
    let progress = |line: &str| step.log(line);
    let group = step.group(if rollback {
        "codeb rollback"
    } else {
        "codeb deploy"
    });
    let result = if rollback {
        engine
            .rollback(
                &RollbackOptions {
                    project: d.at.project.clone(),
                    environment: d.at.environment,
                    pr: d.at.pr,
                    template: opts,
                },
                &progress,
            )
            .await
    } else {
        engine.deploy(&opts, &progress).await
    };
    drop(group);
    match result {
        Ok(report) => finish(step, &report),
        Err(e) => {
            error(step, title, &e.to_string());
            let _ = step.set_output("result", "failed");
            let _ = step.append_summary(&format!("### {title}\n\n{}\n", md_cell(&e.to_string())));
            if e.changed_host() {
                Exit::Failure
            } else {
                Exit::Usage
            }
        }
    }
}

fn finish(step: &Step, r: &DeployReport) -> Exit {
    for w in &r.warnings {
        step.annotate(
            Level::Warning,
            &Annotation {
                title: Some("codeb host setting".into()),
                message: w.clone(),
                ..Annotation::default()
            },
        );
    }
    let result = match &r.outcome {
        Outcome::Deployed => "deployed",
        Outcome::RolledBack { .. } => "rolled-back",
    };
    for (k, v) in [
        ("digest", r.digest.as_str()),
        ("port", &r.port.to_string()),
        ("url", r.url.as_str()),
        (
            "previous-digest",
            r.previous_digest.as_deref().unwrap_or(""),
        ),
        ("result", result),
    ] {
        if let Err(e) = step.set_output(k, v) {
            step.log(&format!("warning: cannot write $GITHUB_OUTPUT: {e}"));
        }
    }
    match &r.outcome {
        Outcome::Deployed => {
            step.result(&format!(
                "deployed {} to {} ({} slot)",
                r.digest,
                r.url,
                r.slot.as_str()
            ));
            let _ = step.append_summary(&format!(
                "### Deployed\n\n| | |\n|---|---|\n| URL | {} |\n| digest | `{}` |\n| previous | `{}` |\n| slot | {} |\n",
                r.url,
                r.digest,
                r.previous_digest.as_deref().unwrap_or("none"),
                r.slot.as_str()
            ));
            Exit::Success
        }
        Outcome::RolledBack { reason } => {
            let msg = format!(
                "the new release {} was not healthy, so traffic stayed on the previous release ({}): {reason}",
                r.digest,
                r.previous_digest.as_deref().unwrap_or("none")
            );
            error(step, "Deploy rolled back", &msg);
            let _ = step.append_summary(&format!("### Deploy rolled back\n\n{}\n", md_cell(&msg)));
            Exit::Failure
        }
    }
}
