//! One deploy, start to finish. Every check that can refuse the deploy runs before anything on
//! the host changes; from the first change on, a failure puts the previous release back.

use crate::caddy::Caddy;
use crate::error::DeployError;
use crate::restore::{HostRoute, RestoreReport};
use crate::state::{Active, Front, History, Release, ReleaseOutcome, Settings, Slot, TargetLock};
use crate::template::{UnitContext, render_unit};
use codeb_core::manifest::{Assignment, Owner, PortUse, Scope, Target};
use codeb_core::{Environment, ProjectName};
use codeb_health::{Expectation, Policy, Probe, Prober};
use codeb_host::{HostPorts, ManifestStore};
use codeb_registry::{Auth, Digest, ImageRef, Resolver};
use codeb_runtime::{Podman, Systemd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// The default health command of a unit: works in any Node.js 18+ image (Next.js apps).
pub const DEFAULT_HEALTH_CMD: &str = "node -e \"fetch('http://127.0.0.1:'+(process.env.PORT||3000)+'/api/health').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))\"";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Start beside the old release, prove healthy, move traffic, drain, stop the old one.
    BlueGreen,
    /// Stop the old release, start the new one in its place (brief downtime).
    Restart,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::BlueGreen => "blue-green",
            Strategy::Restart => "restart",
        }
    }
    /// Blue-green for production; restart elsewhere.
    pub fn default_for(env: Environment) -> Self {
        match env {
            Environment::Production => Strategy::BlueGreen,
            _ => Strategy::Restart,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeChoice {
    Auto,
    Systemd,
    Podman,
}

/// Where a target's pieces live on the host.
#[derive(Debug, Clone)]
pub struct TargetLocation {
    pub manifest: ManifestStore,
    pub quadlet_dir: PathBuf,
    /// `None`: no Caddy front; the container publishes the public port itself (restart only).
    /// `unix//path` (Caddy's admin socket, recommended) or a loopback URL.
    pub caddy_admin: Option<String>,
    /// Accept a `caddy_admin` URL that is not on loopback (Caddy's admin API has no
    /// authentication; only for a network the operator controls).
    pub allow_remote_admin: bool,
    pub runtime: RuntimeChoice,
    pub templates: Option<PathBuf>,
}

impl TargetLocation {
    pub fn state_dir(&self) -> PathBuf {
        self.quadlet_dir.join(".codeb")
    }
}

#[derive(Debug, Clone)]
pub struct DeployOptions {
    pub project: ProjectName,
    pub environment: Environment,
    pub pr: Option<u64>,
    pub image: String,
    pub container_port: u16,
    pub env_file: Option<PathBuf>,
    pub health_path: String,
    pub strategy: Option<Strategy>,
    pub health_deadline: Duration,
    pub health_interval: Duration,
    pub successes: u32,
    pub expect: Vec<Expectation>,
    pub health_cmd: Option<String>,
    pub drain: Duration,
    pub lock_timeout: Duration,
    pub sha: String,
    pub actor: String,
    pub listen_host: String,
    /// How many releases the history keeps ([`crate::state::KEEP`] by default); the images
    /// of releases that fall out are removed from the host unless another target uses them.
    pub keep_releases: usize,
    /// More `[Container]` keys for the unit, in order (the preview daemon's hardening:
    /// `UserNS`, `NoNewPrivileges`, `DropCapability`, `PidsLimit`, `PodmanArgs`, ...). The
    /// rendered unit is parsed back, so a key codeb's Quadlet model does not know is refused.
    pub container_keys: Vec<(String, String)>,
}

/// A preview container codeb created (see [`Engine::preview_containers`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviewContainer {
    pub name: String,
    pub project: ProjectName,
    pub pr: u64,
}

#[derive(Debug, Clone)]
pub struct RollbackOptions {
    pub project: ProjectName,
    pub environment: Environment,
    pub pr: Option<u64>,
    pub template: DeployOptions,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Deployed,
    /// The new release failed its health check; the previous one serves. The reason is the
    /// health checker's last failure.
    RolledBack {
        reason: String,
    },
}

#[derive(Debug, Clone)]
pub struct DeployReport {
    pub outcome: Outcome,
    /// Things the operator should fix on this host (they did not stop the deploy).
    pub warnings: Vec<String>,
    pub digest: String,
    pub port: u16,
    pub url: String,
    pub previous_digest: Option<String>,
    pub slot: Slot,
    pub unit_file: PathBuf,
}

/// Progress lines for the log (the binary prints them; the engine never does).
pub type Progress<'a> = &'a (dyn Fn(&str) + Sync);

/// What [`Engine::preflight`] decided; [`Engine::apply`] carries it out. Holds the target's
/// deploy lock.
struct Plan {
    _lock: TargetLock,
    started: Instant,
    kind: String,
    shown_image: Option<String>,
    target: Target,
    unit: String,
    strategy: Strategy,
    image: ImageRef,
    digest: Digest,
    public: u16,
    state_dir: PathBuf,
    history: History,
    previous: Option<Active>,
    new_slot: Slot,
    host_port: u16,
    container: String,
    unit_file: PathBuf,
    text: String,
    parsed: codeb_quadlet::ContainerUnit,
}

pub struct Engine {
    loc: TargetLocation,
    podman: Podman,
    systemd: Option<Systemd>,
    caddy: Option<Caddy>,
    resolver: Resolver,
    compat: crate::compat::HostPodman,
}

fn settings_of(opts: &DeployOptions) -> Settings {
    Settings {
        container_port: opts.container_port,
        health_path: opts.health_path.clone(),
        env_file: opts.env_file.as_ref().map(|p| p.display().to_string()),
        health_cmd: opts.health_cmd.clone(),
    }
}

/// `opts` with the run settings of an earlier release (rollbacks and restores run a release
/// the way it ran before).
fn with_settings(opts: &DeployOptions, s: Option<&Settings>) -> DeployOptions {
    let mut o = opts.clone();
    if let Some(s) = s {
        o.container_port = s.container_port;
        o.health_path = s.health_path.clone();
        o.env_file = s.env_file.as_ref().map(PathBuf::from);
        o.health_cmd = s.health_cmd.clone();
    }
    o
}

fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

fn input(msg: impl Into<String>) -> DeployError {
    DeployError::Input(msg.into())
}

impl Engine {
    pub async fn new(loc: TargetLocation) -> Result<Self, DeployError> {
        let podman = Podman::new();
        let systemd = match loc.runtime {
            RuntimeChoice::Podman => None,
            RuntimeChoice::Systemd => Some(Systemd::default()),
            RuntimeChoice::Auto => {
                let quadlet = matches!(podman.version().await, Ok((major, minor)) if (major, minor) >= (4, 4));
                (Systemd::is_running() && quadlet).then(Systemd::default)
            }
        };
        let caddy = loc
            .caddy_admin
            .as_deref()
            .map(|url| {
                let caddy = if loc.allow_remote_admin {
                    Caddy::new_allowing_remote(url)
                } else {
                    Caddy::new(url)
                };
                caddy.map(|c| c.with_lock_file(loc.state_dir().join("caddy.lock")))
            })
            .transpose()?;
        let compat = crate::compat::HostPodman::detect(&podman).await;
        Ok(Self {
            compat,
            loc,
            podman,
            systemd,
            caddy,
            resolver: Resolver::new(),
        })
    }

    pub fn location(&self) -> &TargetLocation {
        &self.loc
    }

    /// The history of a target (read-only, no lock).
    pub fn history(&self, target: &Target) -> Result<History, DeployError> {
        History::load(&self.loc.state_dir(), &target.unit_name())
    }

    /// Takes a target away entirely: both slots' containers and units, its Caddy front and its
    /// history. The manifest entry is the caller's (it may keep the port).
    pub async fn remove(&self, target: &Target, progress: Progress<'_>) -> Result<(), DeployError> {
        let unit = target.unit_name();
        let state_dir = self.loc.state_dir();
        crate::state::state_dir(&state_dir)?;
        let _lock = TargetLock::acquire(
            &state_dir,
            &unit,
            Duration::from_secs(600),
            &format!("pid {} (removal)", std::process::id()),
        )
        .await?;
        for slot in [Slot::Blue, Slot::Green] {
            let container = format!("{unit}-{}", slot.as_str());
            progress(&format!("removing {container}"));
            self.stop(&container, true).await?;
            remove_file(&self.loc.quadlet_dir.join(format!("{container}.container")));
        }
        if let Some(s) = &self.systemd {
            s.daemon_reload().await?;
        }
        if let Some(c) = &self.caddy {
            c.remove(&unit).await?;
        }
        remove_file(&History::path(&state_dir, &unit));
        Ok(())
    }

    /// Pulls an image (credentials from the environment, plain HTTP only for loopback
    /// registries), so that a later deploy finds it locally.
    pub async fn pull(&self, image: &str) -> Result<(), DeployError> {
        let image = ImageRef::parse(image)?;
        let authfile = AuthFile::new(&image, &self.loc.state_dir())?;
        self.podman
            .pull(&image.to_string(), !image.is_loopback(), authfile.path())
            .await
            .map_err(|source| DeployError::Pull {
                image: image.to_string(),
                source,
            })
    }

    /// The preview containers on this host that codeb created: labelled
    /// `codeb.environment=pr-<N>` and `codeb.project=<project>` with `project` one of
    /// `projects`, and named `<project>-pr-<N>-<slot>` as codeb names them. A container
    /// without these labels is never listed, whatever its name.
    pub async fn preview_containers(
        &self,
        projects: &[ProjectName],
    ) -> Result<Vec<PreviewContainer>, DeployError> {
        let rows = self
            .podman
            .containers_labelled("codeb.slot", &["codeb.project", "codeb.environment"])
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(name, labels)| {
                let [project, environment] = labels.as_slice() else {
                    return None;
                };
                let project = projects.iter().find(|p| p.as_str() == project)?;
                let pr: u64 = environment
                    .strip_prefix("pr-")
                    .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))?
                    .parse()
                    .ok()?;
                let unit = Target::preview_key(project, pr);
                let ours = [Slot::Blue, Slot::Green]
                    .iter()
                    .any(|s| name == format!("{unit}-{}", s.as_str()));
                ours.then(|| PreviewContainer {
                    name,
                    project: project.clone(),
                    pr,
                })
            })
            .collect())
    }

    /// Stops and removes one container (and its unit file) by name.
    pub async fn remove_container(&self, name: &str) -> Result<(), DeployError> {
        self.stop(name, true).await?;
        remove_file(&self.loc.quadlet_dir.join(format!("{name}.container")));
        Ok(())
    }

    pub fn caddy(&self) -> Option<&Caddy> {
        self.caddy.as_ref()
    }

    /// Adds (or updates) a host-name route, recording it in `.codeb/routes/` first so that
    /// [`Self::restore_routes`] can rebuild it after Caddy lost its configuration.
    pub async fn add_host_route(&self, route: &HostRoute) -> Result<(), DeployError> {
        let caddy = self.require_caddy()?;
        route.save(&self.loc.state_dir())?;
        caddy
            .host_route(
                &route.server,
                &route.listen,
                &route.id,
                &route.host,
                route.upstream,
                route.tls,
            )
            .await
    }

    /// Removes a host-name route: first its record (so that no restore brings it back), then
    /// the route in Caddy.
    pub async fn remove_host_route(&self, id: &str) -> Result<(), DeployError> {
        HostRoute::forget(&self.loc.state_dir(), id)?;
        match &self.caddy {
            Some(c) => c.remove_id(id).await,
            None => Ok(()),
        }
    }

    /// Rebuilds every front and host route recorded in `.codeb/` that Caddy lacks (see
    /// [`crate::restore`]); routes that exist are left alone.
    pub async fn restore_routes(&self) -> Result<RestoreReport, DeployError> {
        crate::restore::restore_routes(&self.loc.state_dir(), self.require_caddy()?).await
    }

    fn require_caddy(&self) -> Result<&Caddy, DeployError> {
        self.caddy.as_ref().ok_or_else(|| {
            input("Caddy routes need the Caddy admin API: give --caddy-admin (unix//run/caddy/admin.sock)")
        })
    }

    /// Rolls back to the newest release that served before the active one.
    pub async fn rollback(
        &self,
        opts: &RollbackOptions,
        progress: Progress<'_>,
    ) -> Result<DeployReport, DeployError> {
        let target = Target::new(opts.project.clone(), opts.environment, opts.pr)
            .map_err(|e| input(e.to_string()))?;
        let history = self.history(&target)?;
        let Some(prev) = history.previous_good() else {
            return Err(DeployError::NothingToRollBack(format!(
                "{target} has no earlier good release to roll back to (see `codeb-quadlet-update history`)"
            )));
        };
        let image = ImageRef::parse(&prev.image)?;
        let digest = Digest::parse(&prev.digest)?;
        progress(&format!(
            "rolling back {target} to {} ({})",
            prev.image, prev.digest
        ));
        let mut d = with_settings(&opts.template, prev.settings.as_ref());
        d.image = image.pinned(&digest);
        d.sha = prev.sha.clone();
        d.expect.retain(|e| e.key() != "version");
        self.run(&d, "rollback", Some(prev.image.clone()), progress)
            .await
    }

    pub async fn deploy(
        &self,
        opts: &DeployOptions,
        progress: Progress<'_>,
    ) -> Result<DeployReport, DeployError> {
        self.run(opts, "deploy", None, progress).await
    }

    /// A deploy in two phases: [`Self::preflight`] makes every check that can refuse it and
    /// returns a [`Plan`] without changing the host (a refusal exits 2); [`Self::apply`]
    /// carries the plan out and, on any failure, puts the previous release back (exit 1).
    async fn run(
        &self,
        opts: &DeployOptions,
        kind: &str,
        shown_image: Option<String>,
        progress: Progress<'_>,
    ) -> Result<DeployReport, DeployError> {
        let plan = self.preflight(opts, kind, shown_image, progress).await?;
        self.apply(opts, plan, progress)
            .await
            .map_err(|e| DeployError::Applied(Box::new(e)))
    }

    /// Everything that can refuse the deploy, before anything on the host changes: arguments,
    /// manifest and ports, env file, Quadlet directory, Caddy, what the host's podman can
    /// run, the lock, the registry (tag → digest, pull). Returns what [`Self::apply`] does.
    async fn preflight(
        &self,
        opts: &DeployOptions,
        kind: &str,
        shown_image: Option<String>,
        progress: Progress<'_>,
    ) -> Result<Plan, DeployError> {
        let target = Target::new(opts.project.clone(), opts.environment, opts.pr)
            .map_err(|e| input(e.to_string()))?;
        let unit = target.unit_name();
        let strategy = opts
            .strategy
            .unwrap_or(Strategy::default_for(opts.environment));
        if self.caddy.is_none() && strategy == Strategy::BlueGreen {
            return Err(input(
                "the blue-green strategy moves traffic through Caddy: give --caddy-admin, or use --strategy restart",
            ));
        }
        let image = ImageRef::parse(&opts.image)?;
        if let Some(f) = &opts.env_file {
            check_env_file(f)?;
        }
        let doc = self.loc.manifest.load()?;
        let Some(assignment) = doc.manifest.assignment(&target) else {
            return Err(input(format!(
                "{target} has no port in {}; allocate one first: codeb-port-validate --project {} --environment {} --allocate",
                self.loc.manifest.path().display(),
                target.project,
                target.environment
            )));
        };
        let public = assignment.port;
        let host = HostPorts::read()
            .map_err(|e| input(format!("cannot read the host's listening ports: {e}")))?;
        let mut use_of = |a: &Assignment| host.use_of(a);
        let problems = doc.manifest.validate(Scope::Target(&target), &mut use_of);
        if !problems.is_empty() {
            let lines: Vec<String> = problems
                .iter()
                .map(|p| format!("line {}: {}", p.line, p.message))
                .collect();
            return Err(input(format!(
                "the port of {target} in {} is not usable:\n  {}",
                self.loc.manifest.path().display(),
                lines.join("\n  ")
            )));
        }
        let (blue, green) = codeb_core::ports::slot_ports(public)
            .ok_or_else(|| input(format!("port {public} leaves no room for slot ports")))?;
        if self.caddy.is_some() {
            for port in [blue, green] {
                let owner = match target.pr {
                    Some(pr) => Owner::Preview {
                        key: Target::preview_key(&target.project, pr),
                        project: target.project.clone(),
                        pr,
                    },
                    None => Owner::Slot(target.project.clone(), target.environment),
                };
                let a = Assignment {
                    owner,
                    port,
                    line: assignment.line,
                };
                if let PortUse::Busy(by) = host.use_of(&a) {
                    return Err(input(format!(
                        "slot port {port} of {target} (public port {public} + 10000/20000) is taken by {by}; free it first"
                    )));
                }
                // A container whose conmon died (killed with its process group, OOM) stays
                // "running" in podman's records with its port forwarding in place, though no
                // socket holds the port: traffic for the port goes to it and is refused.
                let ours = [format!("{unit}-blue"), format!("{unit}-green")];
                let publishers = self.podman.publishers_of(port).await.map_err(|e| {
                    input(format!(
                        "cannot list the containers publishing port {port}: {e}"
                    ))
                })?;
                if let Some((name, state)) = publishers.iter().find(|(n, _)| !ours.contains(n)) {
                    return Err(input(format!(
                        "slot port {port} of {target} (public port {public} + 10000/20000) is published by container {name} ({state}), which is not {target}'s: its port forwarding would take the new release's traffic. Remove it (podman rm -f {name}) or free the port"
                    )));
                }
            }
        }
        let state_dir = self.loc.state_dir();
        writable_dir(&self.loc.quadlet_dir)?;
        crate::state::state_dir(&state_dir).map_err(|e| input(e.to_string()))?;
        if let Some(c) = &self.caddy {
            c.check().await.map_err(|e| input(e.to_string()))?;
        }
        // The unit must be expressible for the host's podman (compat.rs): render it once now.
        let probe = Digest::parse(&format!("sha256:{}", "0".repeat(64)))?;
        self.render(
            opts,
            &target,
            Slot::Blue,
            &image,
            &image.pinned(&probe),
            &probe,
            public,
        )?;

        // One deploy of this target at a time.
        let holder = format!(
            "pid {} ({kind} of {} by {})",
            std::process::id(),
            opts.image,
            opts.actor
        );
        progress(&format!("taking the deploy lock of {unit}"));
        let lock = TargetLock::acquire(&state_dir, &unit, opts.lock_timeout, &holder).await?;

        // Where traffic goes now; Caddy's route is the truth, the history follows it.
        let mut history = History::load(&state_dir, &unit)?;
        let routed = match &self.caddy {
            Some(c) => c
                .upstream(&unit)
                .await
                .map_err(|e| input(e.to_string()))?
                .and_then(|p| Slot::of_port(public, p)),
            None => history.active.as_ref().map(|a| a.slot),
        };
        reconcile(&mut history, routed);
        let previous = history.active.clone();
        let new_slot = match (strategy, previous.as_ref()) {
            (Strategy::BlueGreen, Some(a)) => a.slot.other(),
            (Strategy::Restart, Some(a)) => a.slot,
            (_, None) => Slot::Blue,
        };
        let host_port = match &self.caddy {
            Some(_) => new_slot.port(public).ok_or_else(|| input("no slot port"))?,
            None => public,
        };

        // Pin the image (the digest is what the unit runs).
        let local_first = image.digest().is_some()
            && self
                .podman
                .image_exists(&image.to_string())
                .await
                .unwrap_or(false);
        let digest = if local_first {
            image
                .digest()
                .cloned()
                .ok_or_else(|| input("digest vanished"))?
        } else {
            let auth = Auth::from_env(&image);
            progress(&format!("resolving {image} ({})", auth.describe()));
            self.resolver.resolve(&image, &auth).await?.digest
        };
        let pinned = image.pinned(&digest);
        progress(&format!("{image} is {digest}"));

        // Render the unit and check, in this one place, that it is valid Quadlet and that
        // this host's podman can run what it asks for.
        let container = format!("{unit}-{}", new_slot.as_str());
        let unit_file = self.loc.quadlet_dir.join(format!("{container}.container"));
        let text = self.render(opts, &target, new_slot, &image, &pinned, &digest, host_port)?;
        let parsed = codeb_quadlet::ContainerUnit::parse(&unit_file, &text)
            .map_err(|e| input(format!("the rendered unit is not valid Quadlet: {e}")))?;
        crate::hostcheck::can_run(&parsed, self.systemd.is_some(), &self.podman)
            .await
            .map_err(input)?;

        if !local_first {
            let authfile = AuthFile::new(&image, &state_dir)?;
            self.podman
                .pull(&pinned, !image.is_loopback(), authfile.path())
                .await
                .map_err(|source| DeployError::Pull {
                    image: pinned.clone(),
                    source,
                })?;
        }
        Ok(Plan {
            _lock: lock,
            started: Instant::now(),
            kind: kind.to_owned(),
            shown_image,
            target,
            unit,
            strategy,
            image,
            digest,
            public,
            state_dir,
            history,
            previous,
            new_slot,
            host_port,
            container,
            unit_file,
            text,
            parsed,
        })
    }

    /// Carries out a [`Plan`]. Every failure after the first change puts the previous
    /// release back: blue-green never moved traffic before the new release was healthy; the
    /// restart strategy writes the new unit before it stops the old release and starts the
    /// old release again from its pinned digest when anything after that fails.
    async fn apply(
        &self,
        opts: &DeployOptions,
        plan: Plan,
        progress: Progress<'_>,
    ) -> Result<DeployReport, DeployError> {
        let Plan {
            _lock,
            started,
            kind,
            shown_image,
            target,
            unit,
            strategy,
            image,
            digest,
            public,
            state_dir,
            mut history,
            previous,
            new_slot,
            host_port,
            container,
            unit_file,
            text,
            parsed,
        } = plan;
        let dropped = history.push(
            Release {
                time: now(),
                image: shown_image.unwrap_or_else(|| image.to_string()),
                digest: digest.to_string(),
                sha: opts.sha.clone(),
                actor: opts.actor.clone(),
                slot: new_slot,
                strategy: strategy.as_str().into(),
                kind,
                outcome: ReleaseOutcome::Deploying,
                reason: None,
                settings: Some(settings_of(opts)),
            },
            opts.keep_releases,
        );
        history.save(&state_dir)?;

        // The new unit first: if it cannot be written, nothing else has changed and the old
        // release keeps running.
        if let Err(source) = codeb_host::atomic::write(&unit_file, text.as_bytes(), 0o644) {
            let e = DeployError::Io {
                path: unit_file.clone(),
                source,
            };
            if let Some(r) = history.pending_mut() {
                r.outcome = ReleaseOutcome::RolledBack;
                r.reason = Some(e.to_string());
            }
            history.save(&state_dir).ok();
            return Err(e);
        }
        // Then (restart strategy) stop the old release, and start the new one.
        let begun: Result<(), DeployError> = async {
            if strategy == Strategy::Restart
                && let Some(p) = &previous
            {
                progress(&format!(
                    "stopping {unit}-{} (restart strategy)",
                    p.slot.as_str()
                ));
                self.stop(&format!("{unit}-{}", p.slot.as_str()), false)
                    .await?;
            }
            progress(&format!("starting {container} on 127.0.0.1:{host_port}"));
            self.start(&container, &parsed).await
        }
        .await;

        // Prove it healthy.
        let url = format!("http://127.0.0.1:{host_port}{}", opts.health_path);
        let verdict = match begun {
            Ok(()) => match self.wait_healthy(&url, opts, progress).await {
                // Say what the container was doing: "connection refused" alone does not tell
                // a crashed process from a slow start or a port it does not listen on.
                Err(reason) => Err(match self.podman.describe(&container, 5).await {
                    Some(state) => format!("{reason} ({state})"),
                    None => reason,
                }),
                ok => ok,
            },
            Err(e) => Err(e.to_string()),
        };
        if let Err(reason) = verdict {
            progress(&format!(
                "{container} is not healthy: {reason}; rolling back"
            ));
            self.stop(&container, true).await.ok();
            remove_file(&unit_file);
            if let (Strategy::Restart, Some(p)) = (strategy, &previous) {
                self.restore(opts, &target, p, public, progress).await?;
            }
            if let Some(r) = history.pending_mut() {
                r.outcome = ReleaseOutcome::RolledBack;
                r.reason = Some(reason.clone());
            }
            history.save(&state_dir)?;
            return Ok(DeployReport {
                warnings: host_warnings(self.caddy.is_some()),
                outcome: Outcome::RolledBack { reason },
                digest: digest.to_string(),
                port: public,
                url: format!("http://{}:{public}", opts.listen_host),
                previous_digest: previous.map(|p| p.digest),
                slot: new_slot,
                unit_file,
            });
        }

        // Move traffic. If Caddy refuses, the previous release still serves (blue-green) or
        // is started again (restart).
        if let Some(c) = &self.caddy {
            progress(&format!(
                "routing 127.0.0.1:{public} to the {} slot",
                new_slot.as_str()
            ));
            if let Err(e) = c.route(&unit, &opts.listen_host, public, host_port).await {
                progress(&format!("moving traffic failed: {e}; rolling back"));
                if c.upstream(&unit).await.ok().flatten() != Some(host_port) {
                    if strategy == Strategy::BlueGreen || previous.is_none() {
                        self.stop(&container, true).await.ok();
                        remove_file(&unit_file);
                    } else if let Some(p) = &previous {
                        self.stop(&container, true).await.ok();
                        self.restore(opts, &target, p, public, progress).await.ok();
                    }
                    if let Some(r) = history.pending_mut() {
                        r.outcome = ReleaseOutcome::RolledBack;
                        r.reason = Some(format!("moving traffic failed: {e}"));
                    }
                    history.save(&state_dir).ok();
                }
                return Err(e);
            }
            history.front = Some(Front {
                listen_host: opts.listen_host.clone(),
                public,
                upstream: host_port,
            });
        }
        for r in history.releases.iter_mut() {
            if r.outcome == ReleaseOutcome::Active {
                r.outcome = ReleaseOutcome::Superseded;
            }
        }
        if let Some(r) = history.pending_mut() {
            r.outcome = ReleaseOutcome::Active;
        }
        history.active = Some(Active {
            slot: new_slot,
            image: image.to_string(),
            digest: digest.to_string(),
            sha: opts.sha.clone(),
            settings: Some(settings_of(opts)),
        });
        history.save(&state_dir)?;
        progress(&format!(
            "{target} serves {digest} on 127.0.0.1:{public} ({} after start)",
            humantime::format_duration(Duration::from_millis(started.elapsed().as_millis() as u64))
        ));

        // Drain and stop the old release.
        if let (Strategy::BlueGreen, Some(p)) = (strategy, &previous)
            && p.slot != new_slot
        {
            progress(&format!(
                "draining the {} slot for {}",
                p.slot.as_str(),
                humantime::format_duration(opts.drain)
            ));
            tokio::time::sleep(opts.drain).await;
            let old = format!("{unit}-{}", p.slot.as_str());
            self.stop(&old, true).await?;
            remove_file(&self.loc.quadlet_dir.join(format!("{old}.container")));
            if let Some(s) = &self.systemd {
                s.daemon_reload().await?;
            }
        }
        self.prune(&state_dir, &dropped, progress).await;
        Ok(DeployReport {
            warnings: host_warnings(self.caddy.is_some()),
            outcome: Outcome::Deployed,
            digest: digest.to_string(),
            port: public,
            url: format!("http://{}:{public}", opts.listen_host),
            previous_digest: previous.map(|p| p.digest),
            slot: new_slot,
            unit_file,
        })
    }

    /// Removes the images of releases that fell out of the history, unless a history in this
    /// state directory still refers to them; images a container uses are kept by podman
    /// itself (`podman rmi` without force). Never fails the deploy.
    async fn prune(&self, state_dir: &Path, dropped: &[Release], progress: Progress<'_>) {
        if dropped.is_empty() {
            return;
        }
        let mut kept = std::collections::BTreeSet::new();
        if let Ok(entries) = std::fs::read_dir(state_dir) {
            for e in entries.flatten() {
                let p = e.path();
                if p.extension().is_some_and(|x| x == "json")
                    && let Some(unit) = p.file_stem().map(|s| s.to_string_lossy().into_owned())
                    && let Ok(h) = History::load(state_dir, &unit)
                {
                    kept.extend(h.digests().map(str::to_owned));
                }
            }
        }
        let mut done = std::collections::BTreeSet::new();
        for r in dropped {
            if kept.contains(&r.digest) || !done.insert(r.digest.clone()) {
                continue;
            }
            let (Ok(image), Ok(digest)) = (ImageRef::parse(&r.image), Digest::parse(&r.digest))
            else {
                continue;
            };
            let pinned = image.pinned(&digest);
            match self.podman.remove_image(&pinned).await {
                Ok(()) => progress(&format!("pruned the old image {pinned}")),
                Err(e) => progress(&format!("kept the old image {pinned}: {e}")),
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn render(
        &self,
        opts: &DeployOptions,
        target: &Target,
        slot: Slot,
        image: &ImageRef,
        pinned: &str,
        digest: &Digest,
        host_port: u16,
    ) -> Result<String, DeployError> {
        let unit = target.unit_name();
        let ctx = UnitContext {
            codeb_version: env!("CARGO_PKG_VERSION").into(),
            project: target.project.to_string(),
            environment: match target.pr {
                Some(pr) => format!("pr-{pr}"),
                None => target.environment.to_string(),
            },
            slot: slot.as_str().into(),
            image: image.to_string(),
            pinned: pinned.to_owned(),
            digest: digest.to_string(),
            sha: opts.sha.clone(),
            container_name: format!("{unit}-{}", slot.as_str()),
            publish_host: "127.0.0.1".into(),
            host_port,
            container_port: opts.container_port,
            env_file: opts.env_file.as_ref().map(|p| p.display().to_string()),
            health_cmd: opts.health_cmd.clone(),
            extra: opts
                .container_keys
                .iter()
                .map(|(key, value)| crate::template::KeyValue {
                    key: key.clone(),
                    value: value.clone(),
                })
                .collect(),
        };
        let file = self
            .loc
            .quadlet_dir
            .join(format!("{}.container", ctx.container_name));
        self.compat
            .adapt(&file, render_unit(&ctx, self.loc.templates.as_deref())?)
    }

    async fn start(
        &self,
        container: &str,
        unit: &codeb_quadlet::ContainerUnit,
    ) -> Result<(), DeployError> {
        match &self.systemd {
            Some(s) => {
                s.daemon_reload().await?;
                s.restart(&format!("{container}.service")).await?;
            }
            None => {
                // A leftover of an interrupted deploy goes quickly (--replace would wait 10 s).
                self.podman
                    .remove(container, Duration::from_secs(2))
                    .await?;
                self.podman
                    .run_detached(container, &unit.podman_run_args())
                    .await?;
            }
        }
        Ok(())
    }

    async fn stop(&self, container: &str, quick: bool) -> Result<(), DeployError> {
        match &self.systemd {
            Some(s) => s.stop(&format!("{container}.service")).await?,
            None => {
                let grace = if quick {
                    Duration::from_secs(2)
                } else {
                    Duration::from_secs(10)
                };
                self.podman.remove(container, grace).await?;
            }
        }
        Ok(())
    }

    async fn wait_healthy(
        &self,
        url: &str,
        opts: &DeployOptions,
        progress: Progress<'_>,
    ) -> Result<(), String> {
        let probe = Probe::new(url)
            .map_err(|e| e.to_string())?
            .with_timeout(
                Duration::from_secs(5).min(opts.health_deadline.max(Duration::from_millis(500))),
            )
            .with_expectations(opts.expect.clone());
        let prober = Prober::new(probe).map_err(|e| e.to_string())?;
        let policy = Policy {
            interval: opts.health_interval,
            deadline: opts.health_deadline,
            start_period: Duration::ZERO,
            successes: opts.successes,
        };
        let report = prober
            .wait_healthy(&policy, |a| {
                if let Err(f) = &a.result {
                    progress(&format!("  probe {}: {f}", a.number));
                }
            })
            .await;
        if report.healthy {
            Ok(())
        } else {
            Err(match report.last_failure {
                Some(f) => format!(
                    "not healthy within {}: {f}",
                    humantime::format_duration(opts.health_deadline)
                ),
                None => format!(
                    "never {} healthy probes in a row within the deadline",
                    opts.successes
                ),
            })
        }
    }

    /// Restart strategy: the new release failed after the old one was stopped; start the old
    /// one again from its pinned digest.
    async fn restore(
        &self,
        opts: &DeployOptions,
        target: &Target,
        prev: &Active,
        public: u16,
        progress: Progress<'_>,
    ) -> Result<(), DeployError> {
        let image = ImageRef::parse(&prev.image)?;
        let digest = Digest::parse(&prev.digest)?;
        let host_port = match &self.caddy {
            Some(_) => prev.slot.port(public).unwrap_or(public),
            None => public,
        };
        let pinned = image.pinned(&digest);
        let mut o = with_settings(opts, prev.settings.as_ref());
        o.sha = prev.sha.clone();
        let text = self.render(&o, target, prev.slot, &image, &pinned, &digest, host_port)?;
        let container = format!("{}-{}", target.unit_name(), prev.slot.as_str());
        let unit_file = self.loc.quadlet_dir.join(format!("{container}.container"));
        let parsed = codeb_quadlet::ContainerUnit::parse(&unit_file, &text)
            .map_err(|e| DeployError::Template(e.to_string()))?;
        codeb_host::atomic::write(&unit_file, text.as_bytes(), 0o644).map_err(|source| {
            DeployError::Io {
                path: unit_file.clone(),
                source,
            }
        })?;
        progress(&format!(
            "restarting the previous release {} in {container}",
            prev.digest
        ));
        self.start(&container, &parsed).await?;
        o.expect.clear();
        if let Err(e) = self
            .wait_healthy(
                &format!("http://127.0.0.1:{host_port}{}", o.health_path),
                &o,
                progress,
            )
            .await
        {
            progress(&format!(
                "warning: the previous release is not healthy either: {e}"
            ));
        }
        Ok(())
    }
}

/// Brings the history in line with where traffic really goes (a deploy killed between moving
/// traffic and writing the history leaves them apart), and closes releases left `deploying`.
fn reconcile(history: &mut History, routed: Option<Slot>) {
    let active_slot = history.active.as_ref().map(|a| a.slot);
    if let (Some(slot), true) = (routed, routed != active_slot)
        && let Some(r) = history
            .releases
            .iter_mut()
            .find(|r| r.outcome == ReleaseOutcome::Deploying && r.slot == slot)
    {
        r.outcome = ReleaseOutcome::Active;
        let active = Active {
            slot,
            image: r.image.clone(),
            digest: r.digest.clone(),
            sha: r.sha.clone(),
            settings: r.settings.clone(),
        };
        let promoted = r.time.clone();
        for o in history.releases.iter_mut() {
            if o.outcome == ReleaseOutcome::Active && o.time != promoted {
                o.outcome = ReleaseOutcome::Superseded;
            }
        }
        history.active = Some(active);
    }
    for r in history.releases.iter_mut() {
        if r.outcome == ReleaseOutcome::Deploying {
            r.outcome = ReleaseOutcome::RolledBack;
            r.reason = Some("the deploy was interrupted before it finished".into());
        }
    }
}

/// The kernel setting that makes Caddy's reloads lossless.
pub const TCP_MIGRATE_REQ: &str = "/proc/sys/net/ipv4/tcp_migrate_req";

/// Host settings that zero-downtime switching needs. Caddy (2.6+) reloads its configuration
/// by opening new SO_REUSEPORT listeners and closing the old ones; unless
/// `net.ipv4.tcp_migrate_req` is 1, connections still queued on a closed listener are reset.
fn host_warnings(caddy: bool) -> Vec<String> {
    let mut out = Vec::new();
    if caddy && std::fs::read_to_string(TCP_MIGRATE_REQ).is_ok_and(|v| v.trim() == "0") {
        out.push(
            "net.ipv4.tcp_migrate_req is 0, so Caddy's config reload at the switch can reset a few connections queued at that moment; for zero downtime run `sysctl -w net.ipv4.tcp_migrate_req=1` and keep it in /etc/sysctl.d/90-codeb.conf (see templates/sysctl/)".into(),
        );
    }
    out
}

fn remove_file(p: &Path) {
    let _ = std::fs::remove_file(p);
}

/// Env files hold secrets: they must exist and must not be readable by everyone.
fn check_env_file(p: &Path) -> Result<(), DeployError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(p).map_err(|e| {
        input(format!(
            "env file {}: {e}; create it (mode 600) or drop --env-file",
            p.display()
        ))
    })?;
    if !meta.is_file() {
        return Err(input(format!(
            "env file {} is not a regular file",
            p.display()
        )));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o004 != 0 {
        return Err(input(format!(
            "env file {} is readable by everyone (mode {mode:o}); it holds secrets: chmod 600 {}",
            p.display(),
            p.display()
        )));
    }
    if !p.is_absolute() {
        return Err(input(format!(
            "env file {} must be an absolute path (systemd needs one)",
            p.display()
        )));
    }
    Ok(())
}

/// The Quadlet directory must be a directory we can write (checked with a real temp file).
fn writable_dir(dir: &Path) -> Result<(), DeployError> {
    if !dir.is_dir() {
        return Err(input(format!(
            "Quadlet directory {} does not exist or is not a directory; create it or pass --quadlet-dir",
            dir.display()
        )));
    }
    tempfile::Builder::new()
        .prefix(".codeb-write-test")
        .tempfile_in(dir)
        .map(drop)
        .map_err(|e| {
            input(format!(
                "Quadlet directory {} is not writable: {e}",
                dir.display()
            ))
        })
}

/// A podman auth file (mode 0600, removed on drop) holding the registry credentials, so that
/// they never appear on a command line. It lives in `.codeb/auth/` (mode 0700, like
/// `.codeb/`), never in a shared temp dir; files a killed deploy left there are removed
/// before a new one is written.
struct AuthFile {
    file: Option<tempfile::NamedTempFile>,
}

impl AuthFile {
    fn new(image: &ImageRef, state_dir: &Path) -> Result<Self, DeployError> {
        use base64::Engine as _;
        let (user, pass) = match Auth::from_env(image) {
            Auth::Anonymous => return Ok(Self { file: None }),
            Auth::Bearer(token) => (codeb_registry::TOKEN_USERNAME.to_owned(), token),
            Auth::Basic { username, password } => (username, password),
        };
        let dir = state_dir.join("auth");
        crate::state::state_dir(state_dir)?;
        crate::state::state_dir(&dir)?;
        clean_auth_dir(&dir);
        let auth =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{}", pass.expose()));
        let body = serde_json::json!({ "auths": { image.registry(): { "auth": auth } } });
        let mut file = tempfile::Builder::new()
            .prefix(&format!("codeb-auth-{}-", std::process::id()))
            .suffix(".json")
            .tempfile_in(&dir)
            .map_err(|source| DeployError::Io {
                path: dir.clone(),
                source,
            })?;
        use std::io::Write;
        file.write_all(body.to_string().as_bytes())
            .map_err(|source| DeployError::Io {
                path: file.path().to_owned(),
                source,
            })?;
        Ok(Self { file: Some(file) })
    }

    fn path(&self) -> Option<&Path> {
        self.file.as_ref().map(|f| f.path())
    }
}

/// Removes auth files of deploys that no longer run (killed before they could remove theirs).
fn clean_auth_dir(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let pid = name
            .strip_prefix("codeb-auth-")
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok());
        let alive = pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
        if !alive {
            remove_file(&e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 9 (low): the registry auth file lived in /tmp, where a SIGKILLed deploy left it.
    /// It lives in `.codeb/auth/` (0700) and files of dead deploys are removed at the next one.
    #[test]
    fn auth_files_of_killed_deploys_are_removed_and_live_in_a_private_dir() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join(".codeb");
        let auth = state.join("auth");
        crate::state::state_dir(&state).expect("state dir");
        crate::state::state_dir(&auth).expect("auth dir");
        // pid_max is at most 2^22, so this pid never runs.
        let dead = auth.join("codeb-auth-4194305-abc.json");
        let mine = auth.join(format!("codeb-auth-{}-def.json", std::process::id()));
        std::fs::write(&dead, "{}").expect("write");
        std::fs::write(&mine, "{}").expect("write");
        clean_auth_dir(&auth);
        assert!(!dead.exists(), "the killed deploy's credentials are gone");
        assert!(mine.exists(), "a running deploy's file is kept");
        let mode = std::fs::metadata(&auth).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let image = ImageRef::parse("127.0.0.1:5999/x/y:1").expect("image");
        // Anonymous registries need no file at all.
        assert!(
            AuthFile::new(&image, &state)
                .expect("auth")
                .path()
                .is_none()
        );
    }
}
