//! Pull request preview environments. The daemon turns webhook deliveries into [`Intent`]s and
//! calls [`Previews::apply`] for each (in order per pull request, newest head only) and
//! [`Previews::reconcile`] at start and periodically.
//!
//! A preview of PR `N` of a configured repository is the project's manifest target
//! `<project>-pr-<N>`: a port from 5000-5999 (allocated through the manifest library), a unit
//! deployed by the deploy engine (the image `<image>:pr-<N>` pinned by digest once its
//! revision label says it was built from the PR's head commit; restart strategy; confined by
//! the repository's sandbox), a Caddy host route `pr-<N>.<domain>` to that port, a GitHub
//! Deployment for environment `pr-<N>` with statuses, and one PR comment edited in place.
//! A preview of a provisioned project also gets its own data and env file, and `A`/`AAAA`
//! records when its host lies in a managed zone (`data.rs`); they go with the preview.
//! Everything here is idempotent: applying the same intent twice leaves the same state.
//!
//! What GitHub's API says is the truth, not the webhook: whether the PR is open or closed,
//! its head commit, its labels, whether it comes from a fork. A fork's preview runs only for
//! the head commit a maintainer approved (the approve label added while that commit was the
//! head); a later push needs a fresh approval, and removing the label (or turning the PR into
//! a draft) takes the preview down.

mod config;
mod data;
mod error;
mod github;

pub use codeb_github::Intent;
pub use config::{PreviewConfig, Repo, RepoConfig, SandboxConfig, Settings};
pub use data::{DataPlan, DataSource, PgAccess, PreviewDns, RedisAccess, Stores, preview_file};
pub use error::PreviewError;
pub use github::{COMMENT_MARKER, GitHub, PullInfo};

use codeb_core::manifest::Target;
use codeb_core::{Environment, ProjectName};
use codeb_deploy::{DeployOptions, Engine, Outcome, Strategy, TargetLocation};
use codeb_health::Expectation;
use codeb_host::{AllocateError, HostPorts, ManifestStore};
use codeb_registry::{Auth, ImageRef, RegistryError, Resolver};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// What applying an intent did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    Deployed { url: String, port: u16 },
    Destroyed,
    Pulled,
    Skipped(String),
}

/// What a reconcile found. It removes only orphans itself (containers and routes of codeb's
/// previews that have no port in the manifest); previews to take down are returned as
/// [`Intent::ExpirePreview`]s for the daemon to run in each pull request's queue, where they
/// are checked again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Previews of closed pull requests or idle past the TTL.
    pub expire: Vec<Intent>,
    pub orphans_removed: Vec<String>,
    /// Caddy fronts and routes that were missing and were put back from `.codeb/`.
    pub restored: Vec<String>,
    /// Repositories (or steps) that failed; the others were reconciled all the same.
    pub errors: Vec<String>,
}

/// What codeb remembers about one preview, beside the engine's own history.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Record {
    repo: String,
    pr: u64,
    deployment_id: Option<u64>,
    deployment_sha: Option<String>,
    comment_id: Option<u64>,
    /// Unix seconds of the last ensure that started (a push, a label, an image).
    last_activity: u64,
    url: Option<String>,
    /// For a fork: the head commit the approve label was added on.
    #[serde(default)]
    approved_sha: Option<String>,
    /// The commit the preview serves now.
    #[serde(default)]
    served_sha: Option<String>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

pub(crate) fn short(sha: &str) -> String {
    sha.chars().take(7).collect()
}

/// The revision label of an image: the commit it was built from.
pub const REVISION_LABEL: &str = "org.opencontainers.image.revision";

pub struct Previews {
    settings: Settings,
    github: GitHub,
    store: ManifestStore,
    resolver: Resolver,
    /// Provisioning, for previews' own data (none: previews get `env_file` only).
    data: Option<Arc<dyn DataSource>>,
    /// The managed zone of preview host names (none: no DNS records).
    dns: Option<PreviewDns>,
}

fn progress_log(line: &str) {
    tracing::info!(target: "codeb_previews::deploy", "{line}");
}

/// Why a preview is being taken down, for the comment and the deployment status.
enum Gone<'a> {
    Closed,
    Idle(Duration),
    Gate(&'a str),
}

impl Gone<'_> {
    fn text(&self) -> String {
        match self {
            Gone::Closed => "the pull request was closed".into(),
            Gone::Idle(ttl) => format!(
                "it was idle for more than {}; push a commit to bring it back",
                humantime::format_duration(*ttl)
            ),
            Gone::Gate(why) => (*why).to_owned(),
        }
    }
}

impl Previews {
    pub fn new(config: PreviewConfig) -> Result<Self, PreviewError> {
        Self::with_settings(config.settings()?)
    }

    pub fn with_settings(settings: Settings) -> Result<Self, PreviewError> {
        let github = GitHub::new(
            &settings.github_api_url,
            settings.token.clone(),
            settings.bot_login.clone(),
        )?;
        let store = ManifestStore::resolve(settings.manifest.clone());
        Ok(Self {
            settings,
            github,
            store,
            resolver: Resolver::new(),
            data: None,
            dns: None,
        })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    async fn engine(&self) -> Result<Engine, PreviewError> {
        Ok(Engine::new(TargetLocation {
            manifest: self.store.clone(),
            quadlet_dir: self.settings.quadlet_dir.clone(),
            caddy_admin: Some(self.settings.caddy_admin.clone()),
            allow_remote_admin: false,
            runtime: self.settings.runtime,
            templates: None,
        })
        .await?)
    }

    fn domain(&self, project: &ProjectName, pr: u64) -> String {
        self.settings
            .domain_pattern
            .replace("{pr}", &pr.to_string())
            .replace("{project}", project.as_str())
    }

    fn record_path(&self, repo: &str, pr: u64) -> PathBuf {
        self.settings
            .state_dir
            .join(format!("{}-pr-{pr}.json", repo.replace('/', "__")))
    }

    fn load_record(&self, repo: &str, pr: u64) -> Result<Record, PreviewError> {
        let path = self.record_path(repo, pr);
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| PreviewError::BadState {
                path,
                detail: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Record {
                repo: repo.to_owned(),
                pr,
                ..Record::default()
            }),
            Err(source) => Err(PreviewError::State { path, source }),
        }
    }

    fn save_record(&self, r: &Record) -> Result<(), PreviewError> {
        let dir = &self.settings.state_dir;
        std::fs::create_dir_all(dir).map_err(|source| PreviewError::State {
            path: dir.clone(),
            source,
        })?;
        let path = self.record_path(&r.repo, r.pr);
        let text = serde_json::to_vec_pretty(r).map_err(|e| PreviewError::BadState {
            path: path.clone(),
            detail: e.to_string(),
        })?;
        codeb_host::atomic::write(&path, &text, 0o600)
            .map_err(|source| PreviewError::State { path, source })
    }

    fn target(&self, rc: &Repo, pr: u64) -> Result<Target, PreviewError> {
        Target::new(rc.project.clone(), Environment::Preview, Some(pr))
            .map_err(|e| PreviewError::Config(format!("{}#{pr}: {e}", rc.name)))
    }

    /// Whether the manifest holds a port for the preview (it exists, or is being made).
    fn has_preview(&self, target: &Target) -> Result<bool, PreviewError> {
        match self.store.load() {
            Ok(d) => Ok(d.manifest.assignment(target).is_some()),
            Err(codeb_host::StoreError::NotFound(_)) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    async fn comment(&self, record: &mut Record, text: &str) -> Result<(), PreviewError> {
        record.comment_id = Some(
            self.github
                .upsert_comment(&record.repo, record.pr, record.comment_id, text)
                .await?,
        );
        self.save_record(record)
    }

    /// Applies one intent. Safe to call again with the same intent (idempotent).
    pub async fn apply(&self, intent: &Intent) -> Result<Applied, PreviewError> {
        match intent {
            Intent::PullImage { image } => {
                self.engine().await?.pull(image).await?;
                Ok(Applied::Pulled)
            }
            Intent::DestroyPreview { repo, pr } => self.destroy(repo, *pr).await,
            Intent::ExpirePreview { repo, pr } => self.expire(repo, *pr).await,
            Intent::EnsurePreview {
                repo,
                pr,
                head_sha,
                fork,
                image_tag,
                approves,
                ..
            } => {
                self.ensure(repo, *pr, head_sha, *fork, *approves, image_tag.as_deref())
                    .await
            }
        }
    }

    async fn ensure(
        &self,
        repo: &str,
        pr: u64,
        intent_sha: &str,
        fork_hint: bool,
        approves: bool,
        image_tag: Option<&str>,
    ) -> Result<Applied, PreviewError> {
        let Some(rc) = self.settings.repos.get(repo) else {
            return Ok(Applied::Skipped(format!(
                "repository {repo} is not configured"
            )));
        };
        // The webhook may be old news (queued, redelivered, or a package event without the
        // PR's state): the API says what the PR is now, labels included.
        let info = self.github.pull(repo, pr).await?;
        if !info.open {
            return self.teardown(rc, pr, Gone::Closed, true).await;
        }
        let head = info.head_sha.clone();
        let mut record = self.load_record(repo, pr)?;
        // Activity counts from the start, so a preview being (re)deployed is never expired
        // meanwhile, and one whose first deploy failed still expires later.
        record.last_activity = unix_now();
        self.save_record(&record)?;

        if info.fork || fork_hint {
            let label = &self.settings.approve_label;
            let labelled = info.labels.iter().any(|l| l == label);
            if info.draft || !labelled {
                record.approved_sha = None;
                self.save_record(&record)?;
                let why = if info.draft {
                    "the fork's pull request is a draft".to_owned()
                } else {
                    format!("the `{label}` label is not on the fork's pull request")
                };
                let target = self.target(rc, pr)?;
                if self.has_preview(&target)? {
                    self.teardown(rc, pr, Gone::Gate(&why), false).await?;
                    record = self.load_record(repo, pr)?;
                }
                let text = format!(
                    "**Preview not deployed.** This pull request comes from a fork, and previews run on the app server. A maintainer approves its current commit {} by adding the `{label}` label{}.",
                    short(&head),
                    if info.draft {
                        " once it is ready for review"
                    } else {
                        ""
                    }
                );
                self.comment(&mut record, &text).await?;
                return Ok(Applied::Skipped(format!(
                    "fork pull request not approved: {why}"
                )));
            }
            if approves && !intent_sha.is_empty() {
                // The approval is for the commit that was the head when the label was added.
                record.approved_sha = Some(intent_sha.to_ascii_lowercase());
                self.save_record(&record)?;
            }
            if record.approved_sha.as_deref() != Some(head.as_str()) {
                let stays = match (&record.served_sha, &record.approved_sha) {
                    (Some(s), Some(a)) if s == a => {
                        format!("The preview stays on the approved commit {}.", short(a))
                    }
                    _ => "No preview is deployed.".to_owned(),
                };
                let text = format!(
                    "**Preview not updated.** Commit {} of this fork's pull request has not been approved. {stays} A maintainer approves the new commit by removing the `{label}` label and adding it again.",
                    short(&head)
                );
                self.comment(&mut record, &text).await?;
                return Ok(Applied::Skipped(format!(
                    "fork commit {} is not approved",
                    short(&head)
                )));
            }
        }
        self.deploy(rc, pr, &head, image_tag, &info, record).await
    }

    async fn deploy(
        &self,
        rc: &Repo,
        pr: u64,
        head: &str,
        image_tag: Option<&str>,
        info: &PullInfo,
        mut record: Record,
    ) -> Result<Applied, PreviewError> {
        let repo = rc.name.as_str();
        let target = self.target(rc, pr)?;
        let environment = format!("pr-{pr}");
        let domain = self.domain(&rc.project, pr);
        let url = format!("{}://{domain}", self.settings.url_scheme);
        let log_url = (!info.html_url.is_empty()).then(|| format!("{}/checks", info.html_url));
        let log_url = log_url.as_deref();

        if record.deployment_sha.as_deref() != Some(head) || record.deployment_id.is_none() {
            let id = self
                .github
                .create_deployment(
                    repo,
                    head,
                    &environment,
                    &format!("codeb preview of PR #{pr}"),
                )
                .await?;
            record.deployment_id = Some(id);
            record.deployment_sha = Some(head.to_owned());
            self.save_record(&record)?;
        }
        let dep = record
            .deployment_id
            .ok_or_else(|| PreviewError::NoPort(format!("deployment of {repo}#{pr}")))?;
        self.github
            .deployment_status(
                repo,
                dep,
                "in_progress",
                None,
                log_url,
                "deploying the preview",
            )
            .await?;

        // The image of this very commit: the moving tag may still hold an older build.
        let tag = image_tag
            .map(str::to_owned)
            .unwrap_or_else(|| format!("pr-{pr}"));
        let image = ImageRef::parse(&format!("{}:{tag}", rc.image))?;
        let auth = Auth::from_env(&image);
        let resolved = match self.resolver.resolve(&image, &auth).await {
            Ok(r) => r,
            Err(RegistryError::TagNotFound { .. } | RegistryError::RepositoryNotFound { .. }) => {
                let why = format!("the image `{image}` of {} to be published", short(head));
                return self.waiting(&mut record, dep, log_url, &why).await;
            }
            Err(e) => return Err(e.into()),
        };
        let revision = self
            .resolver
            .revision(&image, &resolved.digest, &auth)
            .await?;
        let expect = match revision.as_deref() {
            Some(r) if r == head => Vec::new(),
            Some(r) => {
                let why = format!(
                    "the build of {}: `{image}` is still the image of {}",
                    short(head),
                    short(r)
                );
                return self.waiting(&mut record, dep, log_url, &why).await;
            }
            // No revision label: the release must say which commit it is.
            None => vec![
                Expectation::new("version", head)
                    .map_err(|e| PreviewError::Config(format!("version expectation: {e}")))?,
            ],
        };
        let pinned = image.pinned(&resolved.digest);

        // A port from 5000-5999; the host check must see the host, or it could hand out a
        // port something listens on.
        let host = HostPorts::read().map_err(|e| PreviewError::HostPorts(e.to_string()))?;
        let port = match self.store.allocate(&target, Some(&host)) {
            Ok((doc, _)) => doc
                .manifest
                .assignment(&target)
                .map(|a| a.port)
                .ok_or_else(|| PreviewError::NoPort(target.to_string()))?,
            Err(AllocateError::Pool(e)) => {
                self.github
                    .deployment_status(
                        repo,
                        dep,
                        "failure",
                        None,
                        log_url,
                        "preview port pool exhausted",
                    )
                    .await?;
                let text = format!("**Preview failed:** {e}");
                self.comment(&mut record, &text).await?;
                return Err(PreviewError::PoolExhausted(e));
            }
            Err(AllocateError::Store(e)) => return Err(e.into()),
        };

        // Its own data (after the port: the reconciler reads what exists before the
        // manifest, so data it sees of a preview being made already has its port).
        let env_file = match self.ensure_data(rc, pr, head).await {
            Ok(Some(f)) => Some(f),
            Ok(None) => self.settings.env_file.clone(),
            Err(e) => {
                let reason = e.to_string();
                self.github
                    .deployment_status(repo, dep, "failure", None, log_url, &reason)
                    .await?;
                let text = format!("**Preview of {} failed:** {reason}", short(head));
                self.comment(&mut record, &text).await?;
                return Err(e);
            }
        };

        let opts = DeployOptions {
            project: target.project.clone(),
            environment: Environment::Preview,
            pr: Some(pr),
            image: pinned.clone(),
            container_port: rc.container_port,
            env_file,
            health_path: rc.health_path.clone(),
            strategy: Some(Strategy::Restart),
            health_deadline: self.settings.health_deadline,
            health_interval: Duration::from_millis(200),
            successes: 1,
            expect,
            health_cmd: None,
            drain: Duration::ZERO,
            lock_timeout: Duration::from_secs(600),
            sha: head.to_owned(),
            actor: "codeb-daemon".into(),
            listen_host: "127.0.0.1".into(),
            keep_releases: codeb_deploy::KEEP_RELEASES,
            container_keys: rc.sandbox.clone(),
        };
        let engine = self.engine().await?;
        let failure = match engine.deploy(&opts, &progress_log).await {
            Ok(report) => match report.outcome {
                Outcome::Deployed => None,
                Outcome::RolledBack { reason } => Some(PreviewError::Unhealthy(format!(
                    "the new version of the preview was not healthy: {reason}"
                ))),
            },
            Err(e) => Some(PreviewError::from(e)),
        };
        if let Some(e) = failure {
            let reason = e.to_string();
            self.github
                .deployment_status(repo, dep, "failure", None, log_url, &reason)
                .await?;
            let text = format!("**Preview of {} failed:** {reason}", short(head));
            self.comment(&mut record, &text).await?;
            return Err(e);
        }
        // DNS before the route, as `we domain setup` does.
        self.ensure_dns(&domain).await?;
        if engine.caddy().is_some() {
            // Recorded in `.codeb/` too, so a Caddy reload or restart does not lose it.
            engine
                .add_host_route(&codeb_deploy::HostRoute {
                    server: "codeb-previews".into(),
                    listen: self.settings.routes_listen.clone(),
                    id: route_id(&target),
                    host: domain.clone(),
                    upstream: port,
                    tls: false,
                })
                .await?;
        }
        self.github
            .deployment_status(repo, dep, "success", Some(&url), log_url, "preview is live")
            .await?;
        let text = format!(
            "**Preview ready:** {url}\n\nCommit {}, image `{image}` ({}), port {port}.",
            short(head),
            resolved.digest
        );
        record.served_sha = Some(head.to_owned());
        record.url = Some(url.clone());
        self.comment(&mut record, &text).await?;
        Ok(Applied::Deployed { url, port })
    }

    /// The right image is not there yet: say so and wait for its `package` event.
    async fn waiting(
        &self,
        record: &mut Record,
        dep: u64,
        log_url: Option<&str>,
        why: &str,
    ) -> Result<Applied, PreviewError> {
        self.github
            .deployment_status(
                &record.repo,
                dep,
                "queued",
                None,
                log_url,
                &format!("waiting for {why}"),
            )
            .await?;
        let text = format!("**Preview waiting** for {why}.");
        self.comment(record, &text).await?;
        Ok(Applied::Skipped(format!("waiting for {why}")))
    }

    /// The webhook says closed: believe it only when the API agrees (a redelivered or stale
    /// `closed` of a reopened PR must not take its preview).
    async fn destroy(&self, repo: &str, pr: u64) -> Result<Applied, PreviewError> {
        let Some(rc) = self.settings.repos.get(repo) else {
            return Ok(Applied::Skipped(format!(
                "repository {repo} is not configured"
            )));
        };
        let info = self.github.pull(repo, pr).await?;
        if info.open {
            return Ok(Applied::Skipped(
                "GitHub says the pull request is open: the preview stays".into(),
            ));
        }
        self.teardown(rc, pr, Gone::Closed, true).await
    }

    /// The reconciler's decision, checked again inside the pull request's queue.
    async fn expire(&self, repo: &str, pr: u64) -> Result<Applied, PreviewError> {
        let Some(rc) = self.settings.repos.get(repo) else {
            return Ok(Applied::Skipped(format!(
                "repository {repo} is not configured"
            )));
        };
        let target = self.target(rc, pr)?;
        if !self.has_preview(&target)? {
            // No preview: what the reconciler found left of one (data, records) goes.
            let mut gone = self.remove_data(&rc.project, pr, true).await?;
            if self.remove_dns(&self.domain(&rc.project, pr)).await? {
                gone.push(format!("DNS records of {}", self.domain(&rc.project, pr)));
            }
            return Ok(Applied::Skipped(if gone.is_empty() {
                "no preview to expire".into()
            } else {
                format!("no preview; removed its leftovers: {}", gone.join(", "))
            }));
        }
        let info = self.github.pull(repo, pr).await?;
        if !info.open {
            return self.teardown(rc, pr, Gone::Closed, true).await;
        }
        let record = self.load_record(repo, pr)?;
        let ttl = self.settings.ttl;
        if unix_now().saturating_sub(record.last_activity) > ttl.as_secs() {
            return self.teardown(rc, pr, Gone::Idle(ttl), true).await;
        }
        Ok(Applied::Skipped(
            "active again since the reconciler looked".into(),
        ))
    }

    /// Takes the preview away: containers and units, its Caddy front and host route, its
    /// port; marks the deployment inactive and says why in the comment. `forget` also drops
    /// the record (not for a fork gate, which keeps the comment for the next approval).
    async fn teardown(
        &self,
        rc: &Repo,
        pr: u64,
        why: Gone<'_>,
        forget: bool,
    ) -> Result<Applied, PreviewError> {
        let repo = rc.name.as_str();
        let target = self.target(rc, pr)?;
        let engine = self.engine().await?;
        engine.remove(&target, &progress_log).await?;
        engine.remove_host_route(&route_id(&target)).await?;
        self.remove_dns(&self.domain(&rc.project, pr)).await?;
        // The data before the port: while anything of it is left, the preview is known.
        self.remove_data(&rc.project, pr, false).await?;
        self.store.release(&target)?;
        let mut record = self.load_record(repo, pr)?;
        let why = why.text();
        if let Some(dep) = record.deployment_id {
            self.github
                .deployment_status(
                    repo,
                    dep,
                    "inactive",
                    None,
                    None,
                    &format!("preview removed: {why}"),
                )
                .await?;
        }
        if record.comment_id.is_some() || record.deployment_id.is_some() {
            self.comment(&mut record, &format!("**Preview removed:** {why}."))
                .await?;
        }
        if forget {
            let path = self.record_path(repo, pr);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(PreviewError::State { path, source }),
            }
        } else {
            record.served_sha = None;
            record.url = None;
            record.deployment_id = None;
            record.deployment_sha = None;
            self.save_record(&record)?;
        }
        Ok(Applied::Destroyed)
    }

    /// Compares what runs with what should. Removes orphans itself: containers and Caddy
    /// objects that codeb made for a preview of a configured project (by label, and by the
    /// exact id pattern) and that have no port in the manifest. Returns the previews of closed
    /// pull requests and the idle ones as [`Intent::ExpirePreview`]s. A repository that fails
    /// (GitHub down, a bad record) is reported in `errors`; the others go on.
    pub async fn reconcile(&self) -> Result<ReconcileReport, PreviewError> {
        let mut report = ReconcileReport::default();
        let projects = self.settings.projects();
        let engine = self.engine().await?;
        // Caddy may have been reloaded or restarted since: put back every front and preview
        // route recorded in `.codeb/` that it lacks (idempotent; present routes stay).
        match engine.restore_routes().await {
            Ok(r) => {
                report.restored = r.restored;
                for (what, why) in r.skipped {
                    report.errors.push(format!("cannot restore {what}: {why}"));
                }
            }
            Err(e) => report.errors.push(format!("restoring Caddy routes: {e}")),
        }
        // What runs first, the manifest second: a preview's port is written before its
        // container starts, its data is made and its route is added, so anything listed
        // here that belongs to a preview being made is already in the manifest read below.
        let containers = engine.preview_containers(&projects).await?;
        let mut with_data = Vec::new();
        match self.data_previews(&projects).await {
            Ok(v) => with_data.extend(v),
            Err(e) => report.errors.push(format!("listing previews' data: {e}")),
        }
        match self.dns_previews(&projects).await {
            Ok(v) => with_data.extend(v),
            Err(e) => report
                .errors
                .push(format!("listing previews' DNS records: {e}")),
        }
        let ids = match engine.caddy() {
            Some(c) => c.ids_with_prefix("codeb-").await?,
            None => Vec::new(),
        };
        let doc = match self.store.load() {
            Ok(d) => Some(d),
            Err(codeb_host::StoreError::NotFound(_)) => None,
            Err(e) => return Err(e.into()),
        };
        let known: HashSet<(String, u64)> = doc
            .as_ref()
            .map(|d| {
                d.manifest
                    .previews
                    .values()
                    .map(|p| (p.project.to_string(), p.pr))
                    .collect()
            })
            .unwrap_or_default();
        for c in containers {
            if !known.contains(&(c.project.to_string(), c.pr)) {
                match engine.remove_container(&c.name).await {
                    Ok(()) => report.orphans_removed.push(c.name),
                    Err(e) => report
                        .errors
                        .push(format!("removing orphan container {}: {e}", c.name)),
                }
            }
        }
        if let Some(c) = engine.caddy() {
            for id in ids {
                let Some((project, pr)) = preview_object(&id, &projects) else {
                    continue;
                };
                if !known.contains(&(project, pr)) {
                    match c.remove_id(&id).await {
                        Ok(()) => report.orphans_removed.push(id),
                        Err(e) => report.errors.push(format!("removing orphan {id}: {e}")),
                    }
                }
            }
        }
        // Data or records of a preview that no longer exists: removed in its PR's queue.
        with_data.sort();
        with_data.dedup();
        for (project, pr) in with_data {
            if known.contains(&(project.clone(), pr)) {
                continue;
            }
            if let Some(repo) = self
                .settings
                .repos
                .values()
                .find(|r| r.project.as_str() == project)
            {
                report.expire.push(Intent::ExpirePreview {
                    repo: repo.name.clone(),
                    pr,
                });
            }
        }
        let now = unix_now();
        for (repo, rc) in &self.settings.repos {
            let prs: Vec<u64> = known
                .iter()
                .filter(|(p, _)| p == rc.project.as_str())
                .map(|(_, n)| *n)
                .collect();
            if prs.is_empty() {
                continue;
            }
            let open = match self.github.open_pulls(repo).await {
                Ok(o) => o,
                Err(e) => {
                    report.errors.push(format!("{repo}: {e}"));
                    continue;
                }
            };
            for pr in prs {
                let stale = !open.contains(&pr)
                    || match self.load_record(repo, pr) {
                        Ok(r) => now.saturating_sub(r.last_activity) > self.settings.ttl.as_secs(),
                        Err(e) => {
                            report.errors.push(format!("{repo}#{pr}: {e}"));
                            false
                        }
                    };
                if stale {
                    report.expire.push(Intent::ExpirePreview {
                        repo: repo.clone(),
                        pr,
                    });
                }
            }
        }
        Ok(report)
    }

    /// Ports in use by previews and the size of the pool, for metrics.
    pub fn pool_usage(&self) -> (usize, usize) {
        let used = self
            .store
            .load()
            .map(|d| d.manifest.previews.len())
            .unwrap_or(0);
        (used, codeb_core::ports::PREVIEW.len())
    }
}

fn route_id(target: &Target) -> String {
    format!("codeb-route-{}", target.unit_name())
}

/// The preview a Caddy `@id` belongs to, if it is one codeb makes for a preview of one of
/// `projects`: exactly `codeb-route-<project>-pr-<N>` (the host route) or
/// `codeb-<project>-pr-<N>` (the front). Anything else, a production front of a project
/// whose name contains `-pr-` included, is not a preview.
pub fn preview_object(id: &str, projects: &[ProjectName]) -> Option<(String, u64)> {
    let rest = id.strip_prefix("codeb-")?;
    let rest = rest.strip_prefix("route-").unwrap_or(rest);
    let mut found = None;
    for p in projects {
        let Some(n) = rest
            .strip_prefix(p.as_str())
            .and_then(|r| r.strip_prefix("-pr-"))
        else {
            continue;
        };
        if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) && !n.starts_with('0') {
            found = n.parse().ok().map(|n| (p.to_string(), n));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<ProjectName> {
        v.iter()
            .map(|n| ProjectName::new(n).expect("name"))
            .collect()
    }

    #[test]
    fn reconcile_keeps_project_named_my_pr_tool() {
        // `my-pr-tool` is a project with a production front; `my` has previews.
        let projects = names(&["my", "app"]);
        for id in [
            "codeb-my-pr-tool-production",
            "codeb-my-pr-tool-production-proxy",
            "codeb-route-my-pr-tool",
            "codeb-my-pr-7-proxy",
            "codeb-other-pr-7",
            "codeb-route-other-pr-7",
            "codeb-my-pr-",
            "codeb-my-pr-07",
            "codeb-previews",
        ] {
            assert_eq!(preview_object(id, &projects), None, "{id}");
        }
        assert_eq!(
            preview_object("codeb-my-pr-7", &projects),
            Some(("my".into(), 7))
        );
        assert_eq!(
            preview_object("codeb-route-app-pr-12", &projects),
            Some(("app".into(), 12))
        );
        // Even when `my-pr-tool` itself has previews, its production front is not one.
        let projects = names(&["my-pr-tool"]);
        assert_eq!(
            preview_object("codeb-my-pr-tool-production", &projects),
            None
        );
        assert_eq!(
            preview_object("codeb-my-pr-tool-pr-3", &projects),
            Some(("my-pr-tool".into(), 3))
        );
    }
}
