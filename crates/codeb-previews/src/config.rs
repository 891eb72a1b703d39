//! The `[previews]` section of the daemon's config: [`PreviewConfig`] as written, parsed once
//! by [`PreviewConfig::settings`] into typed [`Settings`] that the rest of the crate uses.

use crate::PreviewError;
use codeb_core::ProjectName;
use codeb_deploy::RuntimeChoice;
use codeb_secret::Secret;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

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
    /// The login the token writes comments as; asked of `GET /user` when absent (a GitHub
    /// App's token cannot: write `<app-slug>[bot]`).
    pub bot_login: Option<String>,
    /// Previews idle longer than this are removed (humantime, e.g. "7d").
    pub ttl: String,
    pub caddy_admin: String,
    /// Address Caddy serves preview host names on, e.g. ":80" or "127.0.0.1:8080".
    pub routes_listen: String,
    /// The port manifest [default: $CODEB_MANIFEST, else /home/codeb/config/port-manifest.yaml].
    pub manifest: Option<PathBuf>,
    pub quadlet_dir: PathBuf,
    /// Where preview bookkeeping (deployment and comment ids, approvals, last activity) is kept.
    pub state_dir: PathBuf,
    /// auto, systemd or podman.
    pub runtime: String,
    /// Label a maintainer puts on a fork's PR to allow its preview (of that head commit).
    pub approve_label: String,
    pub health_deadline: String,
    /// A preview-only environment file given to every preview container (absolute, not
    /// world-readable). Never the production env file: previews run pull request code.
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
            bot_login: None,
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
    /// How the preview container is confined (safe defaults).
    #[serde(default)]
    pub sandbox: SandboxConfig,
}

/// The confinement of a preview container: pull request code runs on the app server.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxConfig {
    /// `auto`: a user namespace of its own (`UserNS=auto`, root inside is nobody outside).
    /// Otherwise a `uid[:gid]` or user name to run as (`User=`), in the host's namespace.
    pub user: String,
    /// Memory limit (podman `--memory` syntax: `512m`, `1g`).
    pub memory: String,
    /// Most processes and threads the container may have.
    pub pids_limit: u32,
    /// Capabilities given back after all are dropped (`CAP_` prefix optional), e.g.
    /// `["NET_BIND_SERVICE"]` for an app that binds a port below 1024 inside the container.
    pub add_capabilities: Vec<String>,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            user: "auto".into(),
            memory: "512m".into(),
            pids_limit: 256,
            add_capabilities: Vec::new(),
        }
    }
}

fn default_container_port() -> u16 {
    3000
}
fn default_health_path() -> String {
    "/api/health".into()
}

/// A repository's preview settings, checked.
#[derive(Debug, Clone)]
pub struct Repo {
    pub name: String,
    pub project: ProjectName,
    /// Image repository without tag.
    pub image: String,
    pub container_port: u16,
    pub health_path: String,
    /// The `[Container]` keys that confine the preview (see [`SandboxConfig`]).
    pub sandbox: Vec<(String, String)>,
}

/// `[previews]`, parsed once.
#[derive(Debug, Clone)]
pub struct Settings {
    pub repos: BTreeMap<String, Repo>,
    pub domain_pattern: String,
    pub url_scheme: String,
    pub github_api_url: String,
    /// The GitHub token (a `Secret`: `Settings` derives `Debug`).
    pub token: Option<Secret>,
    pub bot_login: Option<String>,
    pub ttl: Duration,
    pub caddy_admin: String,
    pub routes_listen: String,
    pub manifest: Option<PathBuf>,
    pub quadlet_dir: PathBuf,
    pub state_dir: PathBuf,
    pub runtime: RuntimeChoice,
    pub approve_label: String,
    pub health_deadline: Duration,
    pub env_file: Option<PathBuf>,
}

impl Settings {
    /// The projects previews are made for (the reconciler touches only these).
    pub fn projects(&self) -> Vec<ProjectName> {
        self.repos.values().map(|r| r.project.clone()).collect()
    }
}

fn config(msg: impl Into<String>) -> PreviewError {
    PreviewError::Config(msg.into())
}

/// `512m`, `1g`, `1048576`: what podman's `--memory` takes, at least 6 MiB (podman's floor).
fn memory_bytes(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, ""),
    };
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult).filter(|b| *b >= 6 << 20)
}

impl SandboxConfig {
    fn keys(&self, repo: &str) -> Result<Vec<(String, String)>, PreviewError> {
        let mut keys = Vec::new();
        let user = self.user.trim();
        if user == "auto" {
            keys.push(("UserNS".into(), "auto".into()));
        } else if !user.is_empty()
            && user
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b':' || b == b'_' || b == b'-')
            && user != "root"
            && !user.starts_with("0:")
            && user != "0"
        {
            keys.push(("User".into(), user.into()));
        } else {
            return Err(config(format!(
                "repos.\"{repo}\".sandbox.user `{user}`: write \"auto\" (a user namespace of its own) or a non-root uid[:gid] or user name"
            )));
        }
        keys.push(("NoNewPrivileges".into(), "true".into()));
        keys.push(("DropCapability".into(), "all".into()));
        for cap in &self.add_capabilities {
            let c = cap.trim().to_ascii_uppercase();
            let c = c.strip_prefix("CAP_").unwrap_or(&c);
            if c.is_empty() || !c.bytes().all(|b| b.is_ascii_uppercase() || b == b'_') {
                return Err(config(format!(
                    "repos.\"{repo}\".sandbox.add_capabilities: `{cap}` is not a capability name (e.g. NET_BIND_SERVICE)"
                )));
            }
            if c == "SYS_ADMIN" || c == "ALL" {
                return Err(config(format!(
                    "repos.\"{repo}\".sandbox.add_capabilities: `{cap}` would undo the sandbox; previews run pull request code"
                )));
            }
            keys.push(("AddCapability".into(), format!("CAP_{c}")));
        }
        if self.pids_limit == 0 {
            return Err(config(format!(
                "repos.\"{repo}\".sandbox.pids_limit = 0: give a limit, e.g. 256"
            )));
        }
        keys.push(("PidsLimit".into(), self.pids_limit.to_string()));
        if memory_bytes(&self.memory).is_none() {
            return Err(config(format!(
                "repos.\"{repo}\".sandbox.memory `{}`: write e.g. \"512m\" or \"1g\" (at least 6m)",
                self.memory
            )));
        }
        // Not `Memory=`: podman 5.4's Quadlet rejects that key; every podman takes the flag.
        keys.push((
            "PodmanArgs".into(),
            format!("--memory={}", self.memory.trim()),
        ));
        Ok(keys)
    }
}

impl PreviewConfig {
    /// Checks everything that can be checked without the network and returns the typed
    /// settings: durations, runtime, names, the domain pattern, the sandbox, the token file
    /// (readable, not readable by everyone), and that no two repositories share a project
    /// (their previews would take each other's ports and containers).
    pub fn settings(&self) -> Result<Settings, PreviewError> {
        self.settings_with(&|k| std::env::var(k).ok())
    }

    /// [`Self::settings`] with `env` looking environment variables up.
    pub fn settings_with(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Settings, PreviewError> {
        let token = match &self.github_token_file {
            Some(f) => {
                use std::os::unix::fs::PermissionsExt;
                let meta = std::fs::metadata(f)
                    .map_err(|e| config(format!("github_token_file {}: {e}", f.display())))?;
                if meta.permissions().mode() & 0o004 != 0 {
                    return Err(config(format!(
                        "github_token_file {} is readable by everyone; it holds a secret: chmod 600 {}",
                        f.display(),
                        f.display()
                    )));
                }
                Some(Secret::new(
                    std::fs::read_to_string(f)
                        .map_err(|e| config(format!("github_token_file {}: {e}", f.display())))?
                        .trim(),
                ))
            }
            None => env(codeb_core::vars::GITHUB_TOKEN)
                .filter(|t| !t.is_empty())
                .map(Secret::new),
        };
        let ttl = humantime::parse_duration(&self.ttl)
            .map_err(|e| config(format!("ttl `{}`: {e}; write e.g. \"7d\"", self.ttl)))?;
        let health_deadline = humantime::parse_duration(&self.health_deadline).map_err(|e| {
            config(format!(
                "health_deadline `{}`: {e}; write e.g. \"120s\"",
                self.health_deadline
            ))
        })?;
        let runtime = match self.runtime.as_str() {
            "auto" => RuntimeChoice::Auto,
            "systemd" => RuntimeChoice::Systemd,
            "podman" => RuntimeChoice::Podman,
            other => {
                return Err(config(format!(
                    "runtime `{other}`: expected auto, systemd or podman"
                )));
            }
        };
        let mut repos = BTreeMap::new();
        let mut by_project: BTreeMap<String, &str> = BTreeMap::new();
        for (repo, rc) in &self.repos {
            if repo.split('/').count() != 2 || repo.starts_with('/') || repo.ends_with('/') {
                return Err(config(format!(
                    "repos.\"{repo}\": write the repository as owner/name"
                )));
            }
            let project = ProjectName::new(&rc.project)
                .map_err(|e| config(format!("repos.\"{repo}\".project: {e}")))?;
            if let Some(other) = by_project.insert(project.to_string(), repo) {
                return Err(config(format!(
                    "repos.\"{other}\" and repos.\"{repo}\" both use project `{project}`: their previews would share pr-<N> names, ports and containers; give each repository its own project"
                )));
            }
            codeb_registry::ImageRef::parse(&format!("{}:pr-1", rc.image))
                .map_err(|e| config(format!("repos.\"{repo}\".image: {e}")))?;
            if !rc.health_path.starts_with('/') {
                return Err(config(format!(
                    "repos.\"{repo}\".health_path `{}` must start with /",
                    rc.health_path
                )));
            }
            repos.insert(
                repo.clone(),
                Repo {
                    name: repo.clone(),
                    project,
                    image: rc.image.clone(),
                    container_port: rc.container_port,
                    health_path: rc.health_path.clone(),
                    sandbox: rc.sandbox.keys(repo)?,
                },
            );
        }
        if !self.domain_pattern.contains("{pr}") {
            return Err(config(
                "domain_pattern must contain {pr}, e.g. \"pr-{pr}.preview.example.com\"",
            ));
        }
        if let Some(f) = &self.env_file
            && f.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.contains("production"))
        {
            return Err(config(format!(
                "env_file {}: looks like a production env file; previews run pull request code, so give them a preview-only file (or none)",
                f.display()
            )));
        }
        if let Some(l) = &self.bot_login
            && (l.is_empty() || l.contains(char::is_whitespace))
        {
            return Err(config(format!(
                "bot_login `{l}`: write the login codeb's comments are posted as, e.g. \"codeb[bot]\""
            )));
        }
        Ok(Settings {
            repos,
            domain_pattern: self.domain_pattern.clone(),
            url_scheme: self.url_scheme.clone(),
            github_api_url: self.github_api_url.clone(),
            token,
            bot_login: self.bot_login.clone(),
            ttl,
            caddy_admin: self.caddy_admin.clone(),
            routes_listen: self.routes_listen.clone(),
            manifest: self.manifest.clone(),
            quadlet_dir: self.quadlet_dir.clone(),
            state_dir: self.state_dir.clone(),
            runtime,
            approve_label: self.approve_label.clone(),
            health_deadline,
            env_file: self.env_file.clone(),
        })
    }

    /// Checks the section (what `codeb-daemon check-config` reports).
    pub fn validate(&self) -> Result<(), PreviewError> {
        self.settings_with(&|_| None).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(project: &str) -> RepoConfig {
        RepoConfig {
            project: project.into(),
            image: "ghcr.io/acme/app".into(),
            container_port: 3000,
            health_path: "/api/health".into(),
            sandbox: SandboxConfig::default(),
        }
    }

    #[test]
    fn check_config_refuses_two_repositories_mapped_to_one_project() {
        let mut c = PreviewConfig::default();
        c.repos.insert("acme/shop".into(), repo("shop"));
        c.repos.insert("acme/shop-fork".into(), repo("shop"));
        let err = c
            .validate()
            .expect_err("two repos, one project")
            .to_string();
        assert!(
            err.contains("acme/shop") && err.contains("acme/shop-fork") && err.contains("`shop`"),
            "{err}"
        );
        c.repos.insert("acme/shop-fork".into(), repo("shop2"));
        c.validate().expect("distinct projects");
    }

    #[test]
    fn preview_sandbox_defaults_are_safe() {
        let mut c = PreviewConfig::default();
        c.repos.insert("acme/shop".into(), repo("shop"));
        let s = c.settings_with(&|_| None).expect("valid");
        let keys = &s.repos["acme/shop"].sandbox;
        let has = |k: &str, v: &str| keys.iter().any(|(a, b)| a == k && b == v);
        assert!(has("UserNS", "auto"), "{keys:?}");
        assert!(has("NoNewPrivileges", "true"));
        assert!(has("DropCapability", "all"));
        assert!(has("PidsLimit", "256"));
        assert!(has("PodmanArgs", "--memory=512m"));
        assert!(
            !keys.iter().any(|(k, _)| k == "Memory"),
            "podman 5.4 rejects Memory="
        );
    }

    #[test]
    fn sandbox_mistakes_are_named() {
        for (edit, needle) in [
            (
                (|s: &mut SandboxConfig| s.user = "root".into()) as fn(&mut SandboxConfig),
                "sandbox.user",
            ),
            (|s| s.memory = "lots".into(), "sandbox.memory"),
            (|s| s.memory = "1k".into(), "sandbox.memory"),
            (|s| s.pids_limit = 0, "pids_limit"),
            (
                |s| s.add_capabilities = vec!["SYS_ADMIN".into()],
                "undo the sandbox",
            ),
            (
                |s| s.add_capabilities = vec!["net bind".into()],
                "not a capability",
            ),
        ] {
            let mut r = repo("shop");
            edit(&mut r.sandbox);
            let mut c = PreviewConfig::default();
            c.repos.insert("acme/shop".into(), r);
            let err = c.validate().expect_err(needle).to_string();
            assert!(err.contains(needle), "{err}");
        }
        let mut r = repo("shop");
        r.sandbox.user = "1000:1000".into();
        r.sandbox.add_capabilities = vec!["cap_net_bind_service".into()];
        let mut c = PreviewConfig::default();
        c.repos.insert("acme/shop".into(), r);
        let s = c.settings_with(&|_| None).expect("valid");
        let keys = &s.repos["acme/shop"].sandbox;
        assert!(keys.contains(&("User".into(), "1000:1000".into())));
        assert!(keys.contains(&("AddCapability".into(), "CAP_NET_BIND_SERVICE".into())));
    }

    #[test]
    fn the_production_env_file_is_refused_for_previews() {
        let c = PreviewConfig {
            env_file: Some("/home/codeb/env/shop-production.env".into()),
            ..PreviewConfig::default()
        };
        assert!(c.validate().is_err());
    }
}
