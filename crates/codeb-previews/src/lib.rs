//! Pull request preview environments. The daemon turns webhook deliveries into [`Intent`]s and
//! calls [`Previews::apply`] for each (in order per pull request, newest head only) and
//! [`Previews::reconcile`] at start and periodically.
//!
//! A preview of PR `N` of a configured repository is the project's manifest target
//! `<project>-pr-<N>`: a port from 5000-5999 (allocated through the manifest library), a unit
//! deployed by the deploy engine (image `<image>:pr-<N>`, restart strategy), a Caddy host route
//! `pr-<N>.<domain>` to that port, a GitHub Deployment for environment `pr-<N>` with statuses,
//! and one PR comment edited in place. Everything here is idempotent: applying the same intent
//! twice leaves the same state.

mod github;

pub use codeb_github::Intent;
pub use github::{COMMENT_MARKER, GitHub, PullInfo};

use codeb_core::manifest::Target;
use codeb_core::{Environment, ProjectName};
use codeb_deploy::{DeployOptions, Engine, Outcome, RuntimeChoice, Strategy, TargetLocation};
use codeb_host::{AllocateError, HostPorts, ManifestStore};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

/// The `[previews]` section of the daemon's config.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PreviewConfig {
    /// `owner/name` of a GitHub repository -> how its previews are built.
    pub repos: BTreeMap<String, RepoConfig>,
    /// Host name of a preview; `{pr}` and `{project}` are replaced.
    pub domain_pattern: String,
    /// Scheme of preview URLs told to GitHub (`https` behind a TLS-terminating Caddy).
    pub url_scheme: String,
    /// GitHub REST API base URL.
    pub github_api_url: String,
    /// File holding the GitHub token (else $GITHUB_TOKEN).
    pub github_token_file: Option<PathBuf>,
    /// Previews idle longer than this are removed (humantime, e.g. "7d").
    pub ttl: String,
    pub caddy_admin: String,
    /// Address Caddy serves preview host names on, e.g. ":80" or "127.0.0.1:8080".
    pub routes_listen: String,
    /// The port manifest [default: $CODEB_MANIFEST, else /home/codeb/config/port-manifest.yaml].
    pub manifest: Option<PathBuf>,
    pub quadlet_dir: PathBuf,
    /// Where preview bookkeeping (deployment and comment ids, last activity) is kept.
    pub state_dir: PathBuf,
    /// auto, systemd or podman.
    pub runtime: String,
    /// Label a maintainer puts on a fork's PR to allow its preview.
    pub approve_label: String,
    pub health_deadline: String,
    /// Environment file given to every preview container (absolute, not world-readable).
    pub env_file: Option<PathBuf>,
}

impl Default for PreviewConfig {
    fn default() -> Self {
        Self {
            repos: BTreeMap::new(),
            domain_pattern: "pr-{pr}.preview.localhost".into(),
            url_scheme: "http".into(),
            github_api_url: "https://api.github.com".into(),
            github_token_file: None,
            ttl: "7d".into(),
            caddy_admin: "http://127.0.0.1:2019".into(),
            routes_listen: ":80".into(),
            manifest: None,
            quadlet_dir: PathBuf::from("/etc/containers/systemd"),
            state_dir: PathBuf::from("/var/lib/codeb/previews"),
            runtime: "auto".into(),
            approve_label: "preview".into(),
            health_deadline: "120s".into(),
            env_file: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RepoConfig {
    /// Project name in the port manifest.
    pub project: String,
    /// Image repository the workflows push to, e.g. ghcr.io/acme/myapp (tag pr-<N>).
    pub image: String,
    #[serde(default = "default_container_port")]
    pub container_port: u16,
    #[serde(default = "default_health_path")]
    pub health_path: String,
}

fn default_container_port() -> u16 {
    3000
}
fn default_health_path() -> String {
    "/api/health".into()
}

#[derive(Debug, thiserror::Error)]
pub enum PreviewError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("GitHub API: {0}")]
    GitHub(String),
    #[error("the preview port pool is exhausted: {0}")]
    PoolExhausted(String),
    #[error("{0}")]
    Failed(String),
}

/// What applying an intent did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    Deployed { url: String, port: u16 },
    Destroyed,
    Pulled,
    Skipped(String),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    pub destroyed: Vec<String>,
    pub expired: Vec<String>,
    pub orphans_removed: Vec<String>,
}

/// What codeb remembers about one preview, beside the engine's own history.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Record {
    repo: String,
    pr: u64,
    deployment_id: Option<u64>,
    deployment_sha: Option<String>,
    comment_id: Option<u64>,
    /// Unix seconds of the last deploy or refresh.
    last_activity: u64,
    url: Option<String>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

pub struct Previews {
    config: PreviewConfig,
    github: GitHub,
    store: ManifestStore,
    ttl: Duration,
    health_deadline: Duration,
    runtime: RuntimeChoice,
}

fn progress_log(line: &str) {
    tracing::info!(target: "codeb_previews::deploy", "{line}");
}

impl PreviewConfig {
    /// Checks everything that can be checked without the network: durations, runtime, names,
    /// the domain pattern, and the token file (readable, not readable by everyone). Returns
    /// the token, the TTL, the health deadline and the runtime.
    fn checked(&self) -> Result<(Option<String>, Duration, Duration, RuntimeChoice), PreviewError> {
        let token = match &self.github_token_file {
            Some(f) => {
                use std::os::unix::fs::PermissionsExt;
                let meta = std::fs::metadata(f).map_err(|e| {
                    PreviewError::Config(format!("github_token_file {}: {e}", f.display()))
                })?;
                if meta.permissions().mode() & 0o004 != 0 {
                    return Err(PreviewError::Config(format!(
                        "github_token_file {} is readable by everyone; it holds a secret: chmod 600 {}",
                        f.display(),
                        f.display()
                    )));
                }
                Some(
                    std::fs::read_to_string(f)
                        .map_err(|e| {
                            PreviewError::Config(format!("github_token_file {}: {e}", f.display()))
                        })?
                        .trim()
                        .to_owned(),
                )
            }
            None => std::env::var("GITHUB_TOKEN").ok().filter(|t| !t.is_empty()),
        };
        let ttl = humantime::parse_duration(&self.ttl).map_err(|e| {
            PreviewError::Config(format!("ttl `{}`: {e}; write e.g. \"7d\"", self.ttl))
        })?;
        let health_deadline = humantime::parse_duration(&self.health_deadline).map_err(|e| {
            PreviewError::Config(format!(
                "health_deadline `{}`: {e}; write e.g. \"120s\"",
                self.health_deadline
            ))
        })?;
        let runtime = match self.runtime.as_str() {
            "auto" => RuntimeChoice::Auto,
            "systemd" => RuntimeChoice::Systemd,
            "podman" => RuntimeChoice::Podman,
            other => {
                return Err(PreviewError::Config(format!(
                    "runtime `{other}`: expected auto, systemd or podman"
                )));
            }
        };
        for (repo, rc) in &self.repos {
            if repo.split('/').count() != 2 || repo.starts_with('/') || repo.ends_with('/') {
                return Err(PreviewError::Config(format!(
                    "repos.\"{repo}\": write the repository as owner/name"
                )));
            }
            ProjectName::new(&rc.project)
                .map_err(|e| PreviewError::Config(format!("repos.\"{repo}\".project: {e}")))?;
            codeb_registry::ImageRef::parse(&format!("{}:pr-1", rc.image))
                .map_err(|e| PreviewError::Config(format!("repos.\"{repo}\".image: {e}")))?;
        }
        if !self.domain_pattern.contains("{pr}") {
            return Err(PreviewError::Config(
                "domain_pattern must contain {pr}, e.g. \"pr-{pr}.preview.example.com\"".into(),
            ));
        }
        Ok((token, ttl, health_deadline, runtime))
    }

    /// Checks the section (what `codeb-daemon check-config` reports).
    pub fn validate(&self) -> Result<(), PreviewError> {
        self.checked().map(drop)
    }
}

impl Previews {
    pub fn new(config: PreviewConfig) -> Result<Self, PreviewError> {
        let (token, ttl, health_deadline, runtime) = config.checked()?;
        let github = GitHub::new(&config.github_api_url, token)?;
        let store = ManifestStore::resolve(config.manifest.clone());
        Ok(Self {
            config,
            github,
            store,
            ttl,
            health_deadline,
            runtime,
        })
    }

    pub fn config(&self) -> &PreviewConfig {
        &self.config
    }

    async fn engine(&self) -> Result<Engine, PreviewError> {
        Engine::new(TargetLocation {
            manifest: self.store.clone(),
            quadlet_dir: self.config.quadlet_dir.clone(),
            caddy_admin: Some(self.config.caddy_admin.clone()),
            allow_remote_admin: false,
            runtime: self.runtime,
            templates: None,
        })
        .await
        .map_err(|e| PreviewError::Failed(e.to_string()))
    }

    fn domain(&self, project: &str, pr: u64) -> String {
        self.config
            .domain_pattern
            .replace("{pr}", &pr.to_string())
            .replace("{project}", project)
    }

    fn record_path(&self, repo: &str, pr: u64) -> PathBuf {
        self.config
            .state_dir
            .join(format!("{}-pr-{pr}.json", repo.replace('/', "__")))
    }

    fn load_record(&self, repo: &str, pr: u64) -> Record {
        std::fs::read(self.record_path(repo, pr))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_else(|| Record {
                repo: repo.to_owned(),
                pr,
                ..Record::default()
            })
    }

    fn save_record(&self, r: &Record) -> Result<(), PreviewError> {
        std::fs::create_dir_all(&self.config.state_dir).map_err(|e| {
            PreviewError::Failed(format!(
                "state_dir {}: {e}",
                self.config.state_dir.display()
            ))
        })?;
        let text = serde_json::to_vec_pretty(r).map_err(|e| PreviewError::Failed(e.to_string()))?;
        codeb_host::atomic::write(&self.record_path(&r.repo, r.pr), &text, 0o600).map_err(|e| {
            PreviewError::Failed(format!(
                "state_dir {}: {e}",
                self.config.state_dir.display()
            ))
        })
    }

    fn target(&self, rc: &RepoConfig, pr: u64) -> Result<Target, PreviewError> {
        let project =
            ProjectName::new(&rc.project).map_err(|e| PreviewError::Config(e.to_string()))?;
        Target::new(project, Environment::Preview, Some(pr))
            .map_err(|e| PreviewError::Failed(e.to_string()))
    }

    /// Applies one intent. Safe to call again with the same intent (idempotent).
    pub async fn apply(&self, intent: &Intent) -> Result<Applied, PreviewError> {
        match intent {
            Intent::PullImage { image } => {
                self.engine()
                    .await?
                    .pull(image)
                    .await
                    .map_err(|e| PreviewError::Failed(e.to_string()))?;
                Ok(Applied::Pulled)
            }
            Intent::DestroyPreview { repo, pr } => {
                self.destroy(repo, *pr, "the pull request was closed").await
            }
            Intent::EnsurePreview {
                repo,
                pr,
                head_sha,
                fork,
                labels,
                image_tag,
            } => {
                self.ensure(repo, *pr, head_sha, *fork, labels, image_tag.as_deref())
                    .await
            }
        }
    }

    async fn ensure(
        &self,
        repo: &str,
        pr: u64,
        head_sha: &str,
        fork: bool,
        labels: &[String],
        image_tag: Option<&str>,
    ) -> Result<Applied, PreviewError> {
        let Some(rc) = self.config.repos.get(repo) else {
            return Ok(Applied::Skipped(format!(
                "repository {repo} is not configured"
            )));
        };
        // The webhook may be old news (redelivered, or a package event without the PR's
        // state): the API says what the PR is now.
        let info = self.github.pull(repo, pr).await?;
        if !info.open {
            return self.destroy(repo, pr, "the pull request is closed").await;
        }
        let head_sha = if info.head_sha.is_empty() {
            head_sha.to_owned()
        } else {
            info.head_sha.clone()
        };
        let labels: Vec<String> = if info.labels.is_empty() {
            labels.to_vec()
        } else {
            info.labels.clone()
        };
        let mut record = self.load_record(repo, pr);
        if (info.fork || fork) && !labels.iter().any(|l| l == &self.config.approve_label) {
            let text = format!(
                "**Preview not deployed.** This pull request comes from a fork, and previews run on the app server, which holds secrets. A maintainer can approve it by adding the `{}` label.",
                self.config.approve_label
            );
            record.comment_id = Some(
                self.github
                    .upsert_comment(repo, pr, record.comment_id, &text)
                    .await?,
            );
            self.save_record(&record)?;
            return Ok(Applied::Skipped(
                "fork pull request without the approval label".into(),
            ));
        }
        let target = self.target(rc, pr)?;
        let environment = format!("pr-{pr}");
        let domain = self.domain(&rc.project, pr);
        let url = format!("{}://{domain}", self.config.url_scheme);
        let log_url = if info.html_url.is_empty() {
            None
        } else {
            Some(format!("{}/checks", info.html_url))
        };

        if record.deployment_sha.as_deref() != Some(head_sha.as_str())
            || record.deployment_id.is_none()
        {
            let id = self
                .github
                .create_deployment(
                    repo,
                    &head_sha,
                    &environment,
                    &format!("codeb preview of PR #{pr}"),
                )
                .await?;
            record.deployment_id = Some(id);
            record.deployment_sha = Some(head_sha.clone());
            self.save_record(&record)?;
        }
        let dep = record.deployment_id.unwrap_or_default();
        self.github
            .deployment_status(
                repo,
                dep,
                "in_progress",
                None,
                log_url.as_deref(),
                "deploying the preview",
            )
            .await?;

        // A port from 5000-5999.
        let host = HostPorts::read().ok();
        let port = match self.store.allocate(&target, host.as_ref()) {
            Ok((doc, _)) => doc
                .manifest
                .assignment(&target)
                .map(|a| a.port)
                .unwrap_or_default(),
            Err(AllocateError::Pool(e)) => {
                let msg = e.to_string();
                self.github
                    .deployment_status(
                        repo,
                        dep,
                        "failure",
                        None,
                        log_url.as_deref(),
                        "preview port pool exhausted",
                    )
                    .await?;
                let text = format!("**Preview failed:** {msg}");
                record.comment_id = Some(
                    self.github
                        .upsert_comment(repo, pr, record.comment_id, &text)
                        .await?,
                );
                self.save_record(&record)?;
                return Err(PreviewError::PoolExhausted(msg));
            }
            Err(AllocateError::Store(e)) => return Err(PreviewError::Failed(e.to_string())),
        };

        let tag = image_tag
            .map(str::to_owned)
            .unwrap_or_else(|| format!("pr-{pr}"));
        let image = format!("{}:{tag}", rc.image);
        let opts = DeployOptions {
            project: target.project.clone(),
            environment: Environment::Preview,
            pr: Some(pr),
            image: image.clone(),
            container_port: rc.container_port,
            env_file: self.config.env_file.clone(),
            health_path: rc.health_path.clone(),
            strategy: Some(Strategy::Restart),
            health_deadline: self.health_deadline,
            health_interval: Duration::from_millis(500),
            successes: 1,
            expect: Vec::new(),
            health_cmd: None,
            drain: Duration::ZERO,
            lock_timeout: Duration::from_secs(600),
            sha: head_sha.clone(),
            actor: "codeb-daemon".into(),
            listen_host: "127.0.0.1".into(),
        };
        let engine = self.engine().await?;
        let result = engine.deploy(&opts, &progress_log).await;
        let short: String = head_sha.chars().take(7).collect();
        let failure = match result {
            Ok(report) => match report.outcome {
                Outcome::Deployed => None,
                Outcome::RolledBack { reason } => Some(format!(
                    "the new version of the preview was not healthy: {reason}"
                )),
            },
            Err(codeb_deploy::DeployError::Registry(
                codeb_registry::RegistryError::TagNotFound { .. }
                | codeb_registry::RegistryError::RepositoryNotFound { .. },
            )) => {
                self.github
                    .deployment_status(
                        repo,
                        dep,
                        "queued",
                        None,
                        log_url.as_deref(),
                        &format!("waiting for image {image}"),
                    )
                    .await?;
                let text = format!(
                    "**Preview waiting** for the image `{image}` of {short} to be published by the build."
                );
                record.comment_id = Some(
                    self.github
                        .upsert_comment(repo, pr, record.comment_id, &text)
                        .await?,
                );
                record.last_activity = unix_now();
                self.save_record(&record)?;
                return Ok(Applied::Skipped(format!(
                    "image {image} is not published yet"
                )));
            }
            Err(e) => Some(e.to_string()),
        };
        if let Some(reason) = failure {
            self.github
                .deployment_status(repo, dep, "failure", None, log_url.as_deref(), &reason)
                .await?;
            let text = format!("**Preview of {short} failed:** {reason}");
            record.comment_id = Some(
                self.github
                    .upsert_comment(repo, pr, record.comment_id, &text)
                    .await?,
            );
            record.last_activity = unix_now();
            self.save_record(&record)?;
            return Err(PreviewError::Failed(reason));
        }
        if engine.caddy().is_some() {
            engine
                .add_host_route(&codeb_deploy::HostRoute {
                    server: "codeb-previews".into(),
                    listen: self.config.routes_listen.clone(),
                    id: route_id(&target),
                    host: domain.clone(),
                    upstream: port,
                })
                .await
                .map_err(|e| PreviewError::Failed(e.to_string()))?;
        }
        self.github
            .deployment_status(
                repo,
                dep,
                "success",
                Some(&url),
                log_url.as_deref(),
                "preview is live",
            )
            .await?;
        let text =
            format!("**Preview ready:** {url}\n\nCommit {short}, image `{image}`, port {port}.");
        record.comment_id = Some(
            self.github
                .upsert_comment(repo, pr, record.comment_id, &text)
                .await?,
        );
        record.last_activity = unix_now();
        record.url = Some(url.clone());
        self.save_record(&record)?;
        Ok(Applied::Deployed { url, port })
    }

    async fn destroy(&self, repo: &str, pr: u64, why: &str) -> Result<Applied, PreviewError> {
        let Some(rc) = self.config.repos.get(repo) else {
            return Ok(Applied::Skipped(format!(
                "repository {repo} is not configured"
            )));
        };
        let target = self.target(rc, pr)?;
        let engine = self.engine().await?;
        engine
            .remove(&target, &progress_log)
            .await
            .map_err(|e| PreviewError::Failed(e.to_string()))?;
        engine
            .remove_host_route(&route_id(&target))
            .await
            .map_err(|e| PreviewError::Failed(e.to_string()))?;
        self.store
            .release(&target)
            .map_err(|e| PreviewError::Failed(e.to_string()))?;
        let record = self.load_record(repo, pr);
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
            self.github
                .upsert_comment(
                    repo,
                    pr,
                    record.comment_id,
                    &format!("**Preview removed:** {why}."),
                )
                .await?;
        }
        let _ = std::fs::remove_file(self.record_path(repo, pr));
        Ok(Applied::Destroyed)
    }

    /// Compares open PRs with previews; removes what should not be there: previews of closed
    /// PRs, previews idle longer than the TTL, and containers or routes of no preview.
    pub async fn reconcile(&self) -> Result<ReconcileReport, PreviewError> {
        let mut report = ReconcileReport::default();
        let doc = match self.store.load() {
            Ok(d) => Some(d),
            Err(codeb_host::StoreError::NotFound(_)) => None,
            Err(e) => return Err(PreviewError::Failed(e.to_string())),
        };
        let previews: Vec<(String, u64)> = doc
            .as_ref()
            .map(|d| {
                d.manifest
                    .previews
                    .values()
                    .map(|p| (p.project.to_string(), p.pr))
                    .collect()
            })
            .unwrap_or_default();
        let now = unix_now();
        for (repo, rc) in &self.config.repos {
            let open = self.github.open_pulls(repo).await?;
            for (_, pr) in previews.iter().filter(|(p, _)| p == &rc.project) {
                let key = format!("{repo}#{pr}");
                if !open.contains(pr) {
                    self.destroy(repo, *pr, "the pull request was closed")
                        .await?;
                    report.destroyed.push(key);
                    continue;
                }
                let record = self.load_record(repo, *pr);
                if record.last_activity > 0
                    && now.saturating_sub(record.last_activity) > self.ttl.as_secs()
                {
                    let why = format!(
                        "it was idle for more than {}; push a commit to bring it back",
                        humantime::format_duration(self.ttl)
                    );
                    self.destroy(repo, *pr, &why).await?;
                    report.expired.push(key);
                }
            }
        }
        // Containers and routes that belong to no preview in the manifest.
        let doc = match self.store.load() {
            Ok(d) => Some(d),
            Err(codeb_host::StoreError::NotFound(_)) => None,
            Err(e) => return Err(PreviewError::Failed(e.to_string())),
        };
        let known: Vec<String> = doc
            .as_ref()
            .map(|d| {
                d.manifest
                    .previews
                    .values()
                    .map(|p| Target::preview_key(&p.project, p.pr))
                    .collect()
            })
            .unwrap_or_default();
        let engine = self.engine().await?;
        for name in engine
            .preview_containers()
            .await
            .map_err(|e| PreviewError::Failed(e.to_string()))?
        {
            let unit = name.trim_end_matches("-blue").trim_end_matches("-green");
            if !known.iter().any(|k| k == unit) {
                engine
                    .remove_container(&name)
                    .await
                    .map_err(|e| PreviewError::Failed(e.to_string()))?;
                report.orphans_removed.push(name);
            }
        }
        if let Some(c) = engine.caddy() {
            for id in c
                .ids_with_prefix("codeb-route-")
                .await
                .map_err(|e| PreviewError::Failed(e.to_string()))?
            {
                let unit = id.trim_start_matches("codeb-route-");
                if !known.iter().any(|k| k == unit) {
                    c.remove_id(&id)
                        .await
                        .map_err(|e| PreviewError::Failed(e.to_string()))?;
                    report.orphans_removed.push(id);
                }
            }
            for id in c
                .ids_with_prefix("codeb-")
                .await
                .map_err(|e| PreviewError::Failed(e.to_string()))?
            {
                // Fronts of previews: codeb-<project>-pr-<N>.
                if id.starts_with("codeb-route-") {
                    continue;
                }
                let Some(unit) = id.strip_prefix("codeb-") else {
                    continue;
                };
                if unit.contains("-pr-")
                    && !unit.ends_with("-proxy")
                    && !known.iter().any(|k| k == unit)
                {
                    c.remove(unit)
                        .await
                        .map_err(|e| PreviewError::Failed(e.to_string()))?;
                    report.orphans_removed.push(id);
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
