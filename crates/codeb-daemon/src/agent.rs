//! `codeb-daemon agent`: the daemon in its app-host role (issue 14, phase 1). It listens on
//! the host's address and lets the control plane deploy, roll back, stop and list the
//! releases of this host through the deploy engine ([`codeb_deploy::Engine`], podman, the
//! host's own Caddy front for per-host blue-green). No SSH: the only way in is this HTTP API,
//! authenticated by a per-host bearer token of which the agent keeps only the SHA-256
//! (`--token-sha256-file`, hex); the control plane keeps the token itself in a 0600 file
//! (`codeb-daemon agent-token`).
//!
//! The state directory holds the host's port manifest (`manifest.yaml`, written from the
//! control plane's ports), the Quadlet directory (`quadlet/`, its `.codeb/` deploy state) and
//! the env files the control plane copied (`env/<project>-<environment>.env`, 0600).
//!
//! | endpoint | does |
//! |---|---|
//! | `GET /agent/v1/ping` | the host name and codeb version |
//! | `POST /agent/v1/deploy` | [`AgentDeploy`]: a blue-green deploy (or a rollback) of one release, answered when done: [`AgentAnswer`] |
//! | `POST /agent/v1/stop` | [`AgentTarget`]: stops and removes a target's releases, front, env file and port |
//! | `GET /agent/v1/status` | [`AgentRelease`] of every target on the host, each probed on its front |

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use codeb_core::manifest::Target;
use codeb_core::{Environment, ProjectName};
use codeb_deploy::{
    DeployError, DeployOptions, Engine, History, Outcome, RollbackOptions, RuntimeChoice, Strategy,
    TargetLocation,
};
use codeb_health::Expectation;
use codeb_host::ManifestStore;
use serde::{Deserialize, Serialize};

/// What the agent was started with.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub host: String,
    pub listen: SocketAddr,
    /// SHA-256 (lowercase hex) of the host token.
    pub token_sha256: String,
    pub state_dir: PathBuf,
    pub caddy_admin: String,
    /// Address the host's Caddy fronts listen on (the host's address on the app network).
    pub front_host: String,
    pub runtime: RuntimeChoice,
}

/// A deploy (or, with `rollback`, a rollback) of one target on this host.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentDeploy {
    pub project: String,
    pub environment: String,
    /// A digest-pinned image reference (the control plane resolved the tag once for all hosts).
    pub image: String,
    pub public_port: u16,
    pub container_port: u16,
    pub health_path: String,
    /// The env file's contents (secrets: never logged, written 0600).
    #[serde(default)]
    pub env: Option<String>,
    #[serde(default)]
    pub sha: String,
    pub actor: String,
    pub drain_ms: u64,
    pub health_deadline_ms: u64,
    pub health_interval_ms: u64,
    pub successes: u32,
    /// Roll back to the release that served before the active one instead of deploying.
    #[serde(default)]
    pub rollback: bool,
}

/// The target named by a stop.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentTarget {
    pub project: String,
    pub environment: String,
}

/// How a deploy on the host ended.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AgentAnswer {
    /// `deployed`, `rolled_back` (unhealthy: the previous release serves) or `failed`.
    pub outcome: String,
    pub digest: Option<String>,
    pub slot: Option<String>,
    pub message: String,
}

/// One target on the host, as `GET /agent/v1/status` reports it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AgentRelease {
    pub unit: String,
    pub public_port: Option<u16>,
    pub image: Option<String>,
    pub digest: Option<String>,
    pub slot: Option<String>,
    pub health_path: Option<String>,
    /// The front answered 200 on the health path just now.
    pub healthy: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AgentPing {
    pub host: String,
    pub version: String,
}

struct Agent {
    cfg: AgentConfig,
}

impl Agent {
    fn location(&self) -> TargetLocation {
        TargetLocation {
            manifest: ManifestStore::new(self.cfg.state_dir.join("manifest.yaml")),
            quadlet_dir: self.cfg.state_dir.join("quadlet"),
            caddy_admin: Some(self.cfg.caddy_admin.clone()),
            allow_remote_admin: false,
            runtime: self.cfg.runtime,
            templates: None,
        }
    }

    fn authorized(&self, h: &HeaderMap) -> bool {
        let Some(token) = h
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        else {
            return false;
        };
        let Ok(token) = codeb_api::Token::parse(token) else {
            return false;
        };
        constant_time_eq(
            token.hash().to_hex().as_bytes(),
            self.cfg.token_sha256.as_bytes(),
        )
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn refuse(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

fn unauthorized() -> Response {
    refuse(
        StatusCode::UNAUTHORIZED,
        "missing or wrong host token (Authorization: Bearer <token of `codeb-daemon agent-token`>)",
    )
}

fn target_of(
    project: &str,
    environment: &str,
) -> Result<(ProjectName, Environment, Target), String> {
    let p: ProjectName = project.parse().map_err(|e| format!("project: {e}"))?;
    let e: Environment = environment
        .parse()
        .map_err(|e| format!("environment: {e}"))?;
    let t = Target::new(p.clone(), e, None).map_err(|e| e.to_string())?;
    Ok((p, e, t))
}

/// Writes the target's port into the host's manifest (under its lock) unless it has it.
fn ensure_port(store: &ManifestStore, target: &Target, port: u16) -> Result<(), String> {
    let lock = store.lock().map_err(|e| e.to_string())?;
    let doc = store.load_or_empty().map_err(|e| e.to_string())?;
    match doc.manifest.assignment(target) {
        Some(a) if a.port == port => return Ok(()),
        Some(a) => {
            return Err(format!(
                "{target} has port {} on this host but the control plane says {port}; remove the host's entry first",
                a.port
            ));
        }
        None => {}
    }
    let text = doc.with_port(target, port).map_err(|e| e.to_string())?;
    store.save(&lock, &text).map_err(|e| e.to_string())
}

fn write_env(dir: &Path, unit: &str, text: &str) -> Result<PathBuf, String> {
    codeb_host::lockfile::private_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join(format!("{unit}.env"));
    codeb_host::atomic::write(&path, text.as_bytes(), 0o600)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

async fn ping(State(a): State<Arc<Agent>>, h: HeaderMap) -> Response {
    if !a.authorized(&h) {
        return unauthorized();
    }
    Json(AgentPing {
        host: a.cfg.host.clone(),
        version: env!("CARGO_PKG_VERSION").into(),
    })
    .into_response()
}

async fn deploy(State(a): State<Arc<Agent>>, h: HeaderMap, body: axum::body::Bytes) -> Response {
    if !a.authorized(&h) {
        return unauthorized();
    }
    let req: AgentDeploy = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, format!("deploy request: {e}")),
    };
    let (project, env, target) = match target_of(&req.project, &req.environment) {
        Ok(t) => t,
        Err(m) => return refuse(StatusCode::BAD_REQUEST, m),
    };
    let loc = a.location();
    for dir in [&a.cfg.state_dir, &loc.quadlet_dir] {
        if let Err(e) = std::fs::create_dir_all(dir) {
            return refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("{}: {e}", dir.display()),
            );
        }
    }
    if let Err(e) = ensure_port(&loc.manifest, &target, req.public_port) {
        return refuse(StatusCode::UNPROCESSABLE_ENTITY, e);
    }
    let env_file = match &req.env {
        Some(text) => match write_env(&a.cfg.state_dir.join("env"), &target.unit_name(), text) {
            Ok(p) => Some(p),
            Err(e) => return refuse(StatusCode::INTERNAL_SERVER_ERROR, e),
        },
        None => None,
    };
    let engine = match Engine::new(loc).await {
        Ok(e) => e,
        Err(e) => return refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let expect: Vec<Expectation> = Vec::new();
    let opts = DeployOptions {
        project: project.clone(),
        environment: env,
        pr: None,
        image: req.image.clone(),
        container_port: req.container_port,
        env_file,
        health_path: req.health_path.clone(),
        strategy: Some(Strategy::BlueGreen),
        health_deadline: Duration::from_millis(req.health_deadline_ms),
        health_interval: Duration::from_millis(req.health_interval_ms),
        successes: req.successes,
        expect,
        health_cmd: None,
        drain: Duration::from_millis(req.drain_ms),
        lock_timeout: Duration::from_secs(600),
        sha: req.sha.clone(),
        actor: req.actor.clone(),
        listen_host: a.cfg.front_host.clone(),
        keep_releases: codeb_deploy::KEEP_RELEASES,
        container_keys: Vec::new(),
    };
    let unit = target.unit_name();
    let progress = |m: &str| tracing::info!(unit = %unit, "{m}");
    let result = if req.rollback {
        let r = RollbackOptions {
            project,
            environment: env,
            pr: None,
            template: opts.clone(),
        };
        engine.rollback(&r, &progress).await
    } else {
        engine.deploy(&opts, &progress).await
    };
    Json(answer(result)).into_response()
}

fn answer(result: Result<codeb_deploy::DeployReport, DeployError>) -> AgentAnswer {
    match result {
        Ok(r) => match r.outcome {
            Outcome::Deployed => AgentAnswer {
                outcome: "deployed".into(),
                message: format!("serves {} ({} slot)", r.digest, r.slot.as_str()),
                digest: Some(r.digest),
                slot: Some(r.slot.as_str().into()),
            },
            Outcome::RolledBack { reason } => AgentAnswer {
                outcome: "rolled_back".into(),
                message: format!("not healthy ({reason}); the previous release serves"),
                digest: Some(r.digest),
                slot: None,
            },
        },
        Err(e) => AgentAnswer {
            outcome: "failed".into(),
            digest: None,
            slot: None,
            message: e.to_string(),
        },
    }
}

async fn stop(State(a): State<Arc<Agent>>, h: HeaderMap, body: axum::body::Bytes) -> Response {
    if !a.authorized(&h) {
        return unauthorized();
    }
    let req: AgentTarget = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, format!("stop request: {e}")),
    };
    let (_, _, target) = match target_of(&req.project, &req.environment) {
        Ok(t) => t,
        Err(m) => return refuse(StatusCode::BAD_REQUEST, m),
    };
    let loc = a.location();
    let engine = match Engine::new(loc.clone()).await {
        Ok(e) => e,
        Err(e) => return refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let unit = target.unit_name();
    let progress = |m: &str| tracing::info!(unit = %unit, "{m}");
    if let Err(e) = engine.remove(&target, &progress).await {
        return refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
    }
    let _ = std::fs::remove_file(a.cfg.state_dir.join("env").join(format!("{unit}.env")));
    if let Err(e) = loc.manifest.release(&target) {
        return refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
    }
    Json(serde_json::json!({ "stopped": unit })).into_response()
}

async fn status(State(a): State<Arc<Agent>>, h: HeaderMap) -> Response {
    if !a.authorized(&h) {
        return unauthorized();
    }
    let state = a.location().state_dir();
    let mut out = Vec::new();
    let mut units: Vec<String> = std::fs::read_dir(&state)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let p = e.path();
            (p.extension().is_some_and(|x| x == "json"))
                .then(|| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
                .flatten()
        })
        .collect();
    units.sort();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .ok();
    for unit in units {
        let Ok(hist) = History::load(&state, &unit) else {
            continue;
        };
        let Some(active) = hist.active.clone() else {
            continue;
        };
        let public = hist.front.as_ref().map(|f| f.public);
        let health_path = active.settings.as_ref().map(|s| s.health_path.clone());
        let healthy = match (&client, public, &health_path) {
            (Some(c), Some(p), Some(path)) => c
                .get(format!("http://{}:{p}{path}", a.cfg.front_host))
                .send()
                .await
                .is_ok_and(|r| r.status().as_u16() == 200),
            _ => false,
        };
        out.push(AgentRelease {
            unit,
            public_port: public,
            image: Some(active.image),
            digest: Some(active.digest),
            slot: Some(active.slot.as_str().into()),
            health_path,
            healthy,
        });
    }
    Json(out).into_response()
}

/// Serves the agent until SIGTERM or SIGINT.
pub async fn serve(cfg: AgentConfig) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", cfg.listen))?;
    tracing::info!(host = %cfg.host, listen = %cfg.listen, "agent listening");
    let app = Router::new()
        .route("/agent/v1/ping", get(ping))
        .route("/agent/v1/deploy", post(deploy))
        .route("/agent/v1/stop", post(stop))
        .route("/agent/v1/status", get(status))
        .with_state(Arc::new(Agent { cfg }));
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
            }
        })
        .await
        .map_err(|e| format!("agent server: {e}"))
}

/// Reads the agent's token hash file: 64 lowercase hex characters.
pub fn read_token_hash(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("token hash file {}: {e}", path.display()))?;
    let hex = text.trim().to_ascii_lowercase();
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "token hash file {} must hold the 64 hex characters `codeb-daemon agent-token` printed",
            path.display()
        ));
    }
    Ok(hex)
}

/// Mints a host token: writes it to `out` (0600, refusing to replace a file) and returns its
/// SHA-256 in hex for the agent's `--token-sha256-file`.
pub fn mint_token(out: &Path) -> Result<String, String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let token = crate::api::team::new_token()?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .map_err(|e| format!("{}: {e} (it must not exist yet)", out.display()))?;
    f.write_all(token.expose().as_bytes())
        .map_err(|e| format!("{}: {e}", out.display()))?;
    Ok(token.hash().to_hex())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minted_token_is_private_and_its_hash_authorizes_only_it() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("n1-2.token");
        let hex = mint_token(&file).expect("mint");
        assert_eq!(
            std::fs::metadata(&file).expect("meta").permissions().mode() & 0o777,
            0o600
        );
        assert!(mint_token(&file).is_err(), "an existing token file is kept");
        let hash_file = dir.path().join("hash");
        std::fs::write(&hash_file, format!("{hex}\n")).expect("write");
        let agent = Agent {
            cfg: AgentConfig {
                host: "n1-2".into(),
                listen: "127.0.0.1:1".parse().expect("addr"),
                token_sha256: read_token_hash(&hash_file).expect("hash"),
                state_dir: dir.path().into(),
                caddy_admin: "http://127.0.0.1:2019".into(),
                front_host: "127.0.0.1".into(),
                runtime: RuntimeChoice::Podman,
            },
        };
        let token = std::fs::read_to_string(&file).expect("token");
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            format!("Bearer {token}").parse().expect("header"),
        );
        assert!(agent.authorized(&h));
        let other = codeb_api::Token::from_random([7; 32]);
        h.insert(
            header::AUTHORIZATION,
            format!("Bearer {}", other.expose())
                .parse()
                .expect("header"),
        );
        assert!(
            !agent.authorized(&h),
            "another well-formed token is refused"
        );
        assert!(!agent.authorized(&HeaderMap::new()), "no token is refused");
        std::fs::write(&hash_file, "abc").expect("write");
        assert!(read_token_hash(&hash_file).is_err());
    }
}
