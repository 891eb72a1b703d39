//! One deploy, start to finish. Every check that can refuse the deploy runs before anything on
//! the host changes; from the first change on, a failure puts the previous release back.

use crate::caddy::Caddy;
use crate::error::DeployError;
use crate::state::{Active, History, Release, ReleaseOutcome, Settings, Slot, TargetLock};
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
    pub caddy_admin: Option<String>,
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
                Caddy::new(url).map(|c| c.with_lock_file(loc.state_dir().join("caddy.lock")))
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
        std::fs::create_dir_all(&state_dir).map_err(|source| DeployError::Io {
            path: state_dir.clone(),
            source,
        })?;
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
        let authfile = AuthFile::new(&image)?;
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

    async fn run(
        &self,
        opts: &DeployOptions,
        kind: &str,
        shown_image: Option<String>,
        progress: Progress<'_>,
    ) -> Result<DeployReport, DeployError> {
        let started = Instant::now();
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

        // 1. Everything that can refuse the deploy, before anything changes.
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
        let mut use_of = |a: &Assignment| {
            // With no Caddy front the public port is our own container's.
            host.use_of(a)
        };
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
            }
        }
        let state_dir = self.loc.state_dir();
        writable_dir(&self.loc.quadlet_dir)?;
        std::fs::create_dir_all(&state_dir).map_err(|source| DeployError::Io {
            path: state_dir.clone(),
            source,
        })?;
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

        // 2. One deploy of this target at a time.
        let holder = format!(
            "pid {} ({kind} of {} by {})",
            std::process::id(),
            opts.image,
            opts.actor
        );
        progress(&format!("taking the deploy lock of {unit}"));
        let _lock = TargetLock::acquire(&state_dir, &unit, opts.lock_timeout, &holder).await?;

        // 3. Pin the image.
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
        if !local_first {
            let authfile = AuthFile::new(&image)?;
            self.podman
                .pull(&pinned, !image.is_loopback(), authfile.path())
                .await
                .map_err(|source| DeployError::Pull {
                    image: pinned.clone(),
                    source,
                })?;
        }

        // 4. Where traffic goes now; Caddy's route is the truth, the history follows it.
        let mut history = History::load(&state_dir, &unit)?;
        let routed = match &self.caddy {
            Some(c) => c
                .upstream(&unit)
                .await?
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

        // 5. Render and check the unit.
        let container = format!("{unit}-{}", new_slot.as_str());
        let unit_file = self.loc.quadlet_dir.join(format!("{container}.container"));
        let text = self.render(opts, &target, new_slot, &image, &pinned, &digest, host_port)?;
        let parsed = codeb_quadlet::ContainerUnit::parse(&unit_file, &text)
            .map_err(|e| DeployError::Template(e.to_string()))?;

        // From here on the host changes.
        history.push(Release {
            time: now(),
            image: shown_image.unwrap_or_else(|| image.to_string()),
            digest: digest.to_string(),
            sha: opts.sha.clone(),
            actor: opts.actor.clone(),
            slot: new_slot,
            strategy: strategy.as_str().into(),
            kind: kind.into(),
            outcome: ReleaseOutcome::Deploying,
            reason: None,
            settings: Some(settings_of(opts)),
        });
        history.save(&state_dir)?;
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
        codeb_host::atomic::write(&unit_file, text.as_bytes(), 0o644).map_err(|source| {
            DeployError::Io {
                path: unit_file.clone(),
                source,
            }
        })?;
        progress(&format!("starting {container} on 127.0.0.1:{host_port}"));
        let started_ok = self.start(&container, &parsed).await;

        // 6. Prove it healthy.
        let url = format!("http://127.0.0.1:{host_port}{}", opts.health_path);
        let verdict = match started_ok {
            Ok(()) => self.wait_healthy(&url, opts, progress).await,
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

        // 7. Move traffic.
        if let Some(c) = &self.caddy {
            progress(&format!(
                "routing 127.0.0.1:{public} to the {} slot",
                new_slot.as_str()
            ));
            c.route(&unit, &opts.listen_host, public, host_port).await?;
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

        // 8. Drain and stop the old release.
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

/// A temporary podman auth file (mode 0600, removed on drop) holding the registry credentials,
/// so that they never appear on a command line.
struct AuthFile {
    file: Option<tempfile::NamedTempFile>,
}

impl AuthFile {
    fn new(image: &ImageRef) -> Result<Self, DeployError> {
        use base64::Engine as _;
        let (user, pass) = match Auth::from_env(image) {
            Auth::Anonymous => return Ok(Self { file: None }),
            Auth::Bearer(token) => (codeb_registry::TOKEN_USERNAME.to_owned(), token),
            Auth::Basic { username, password } => (username, password),
        };
        let auth =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{}", pass.expose()));
        let body = serde_json::json!({ "auths": { image.registry(): { "auth": auth } } });
        let mut file = tempfile::Builder::new()
            .prefix("codeb-auth-")
            .suffix(".json")
            .tempfile()
            .map_err(|source| DeployError::Io {
                path: std::env::temp_dir(),
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
