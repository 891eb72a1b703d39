//! Several app hosts behind a balancer (issue 14, phase 1): the host registry
//! (`/api/v1/scale/hosts`, `we scale app --add/--remove`, the hosts part of `we scale status`),
//! the balancer on this control plane's Caddy ([`codeb_deploy::BalancerPolicy`]) and the
//! rolling deploy of a project over its hosts ([`rolling`]).
//!
//! A host runs `codeb-daemon agent` ([`crate::agent`]); the control plane reaches it over
//! HTTP with the host's token, read from `<state_dir>/hosts/<host>.token` (0600; never in a
//! request, a log or the audit). Each host deploys blue-green behind its own Caddy front on
//! `<host address>:<public port>`; the balancer's upstreams are those fronts.
//!
//! Invariants (ARCHITECTURE.md): a host is in a balancer only while the release it serves is
//! the project's current release and healthy; an add that fails on any project leaves the
//! host unregistered with nothing running there; a roll that fails on any host puts every
//! host it moved back on the previous release, so the previous release serves everywhere.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use codeb_api::scale::{
    BalancerUpstream, BalancerView, HostAdd, HostChange, HostRelease, HostView, HostsReport,
};
use codeb_api::{Action, JobKind, codes};
use codeb_deploy::{BalancerPolicy, Caddy, History};
use rusqlite::{Connection, params};

use super::db::DbError;
use super::{Api, ApiError, parse_body};
use crate::agent::{AgentAnswer, AgentDeploy, AgentPing, AgentRelease, AgentTarget};
use crate::store::now_ms;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS scale_hosts (
    name TEXT PRIMARY KEY,
    agent_url TEXT NOT NULL,
    address TEXT NOT NULL,
    added_ms INTEGER NOT NULL,
    added_by TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS scale_releases (
    unit TEXT PRIMARY KEY,
    image TEXT NOT NULL,
    digest TEXT NOT NULL,
    sha TEXT NOT NULL,
    updated_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS scale_rolls (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    unit TEXT NOT NULL,
    image TEXT NOT NULL,
    digest TEXT NOT NULL,
    sha TEXT NOT NULL,
    kind TEXT NOT NULL,
    rolled_back INTEGER NOT NULL DEFAULT 0,
    done_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS scale_rolls_unit ON scale_rolls (unit, id);
";

pub fn migrate(c: &Connection) -> Result<(), DbError> {
    c.execute_batch(SCHEMA)?;
    Ok(())
}

/// A registered host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub name: String,
    pub agent_url: String,
    pub address: String,
    pub added_ms: i64,
    pub added_by: String,
}

pub fn hosts(c: &Connection) -> Result<Vec<Host>, DbError> {
    let mut st = c.prepare(
        "SELECT name, agent_url, address, added_ms, added_by FROM scale_hosts ORDER BY name",
    )?;
    let rows = st
        .query_map([], |r| {
            Ok(Host {
                name: r.get(0)?,
                agent_url: r.get(1)?,
                address: r.get(2)?,
                added_ms: r.get(3)?,
                added_by: r.get(4)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// The release a project environment runs on its hosts (what a new host gets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentRelease {
    pub image: String,
    pub digest: String,
    pub sha: String,
}

/// A `SELECT image, digest, sha` row.
fn release_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<CurrentRelease> {
    Ok(CurrentRelease {
        image: r.get(0)?,
        digest: r.get(1)?,
        sha: r.get(2)?,
    })
}

fn stored_release(c: &Connection, unit: &str) -> Result<Option<CurrentRelease>, DbError> {
    let mut st = c.prepare("SELECT image, digest, sha FROM scale_releases WHERE unit = ?1")?;
    let mut rows = st.query_map([unit], release_row)?;
    Ok(rows.next().transpose()?)
}

/// The release a rolling rollback of `unit` goes back to: the newest release the hosts served
/// (`scale_rolls`) that differs from `current` and was not itself rolled back.
fn rollback_target(
    c: &Connection,
    unit: &str,
    current: &str,
) -> Result<Option<CurrentRelease>, DbError> {
    let mut st = c.prepare(
        "SELECT image, digest, sha FROM scale_rolls
         WHERE unit = ?1 AND digest != ?2 AND rolled_back = 0 ORDER BY id DESC LIMIT 1",
    )?;
    let mut rows = st.query_map([unit, current], release_row)?;
    Ok(rows.next().transpose()?)
}

/// Records a finished roll of `unit` to `release`: the hosts' current release, and a row of
/// the roll history. The release that served before is recorded first when the history does
/// not know it yet (a release adopted from this host's own deploys), so it can be rolled
/// back to; a rollback marks the release it left as rolled back (not a target again).
fn record_roll(
    c: &mut Connection,
    unit: &str,
    before: Option<&CurrentRelease>,
    release: &CurrentRelease,
    kind: JobKind,
) -> Result<(), DbError> {
    let now = now_ms();
    let tx = c.transaction()?;
    let known: i64 = tx.query_row(
        "SELECT COUNT(*) FROM scale_rolls WHERE unit = ?1",
        [unit],
        |r| r.get(0),
    )?;
    if let Some(b) = before
        && known == 0
        && b.digest != release.digest
    {
        tx.execute(
            "INSERT INTO scale_rolls (unit, image, digest, sha, kind, done_ms) VALUES (?1, ?2, ?3, ?4, 'adopted', ?5)",
            params![unit, b.image, b.digest, b.sha, now],
        )?;
    }
    if kind == JobKind::Rollback
        && let Some(b) = before
    {
        tx.execute(
            "UPDATE scale_rolls SET rolled_back = 1 WHERE unit = ?1 AND digest = ?2",
            params![unit, b.digest],
        )?;
    }
    let kind = match kind {
        JobKind::Deploy => "deploy",
        JobKind::Rollback => "rollback",
    };
    tx.execute(
        "INSERT INTO scale_rolls (unit, image, digest, sha, kind, done_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![unit, release.image, release.digest, release.sha, kind, now],
    )?;
    tx.execute(
        "INSERT INTO scale_releases (unit, image, digest, sha, updated_ms) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT(unit) DO UPDATE SET image = ?2, digest = ?3, sha = ?4, updated_ms = ?5",
        params![unit, release.image, release.digest, release.sha, now],
    )?;
    tx.commit()?;
    Ok(())
}

/// What a rolling rollback of `unit` would do: the release serving on the hosts now and the
/// one it goes back to (`None` when there is none to go back to).
pub async fn rollback_plan(
    api: &Api,
    unit: &str,
) -> Result<(Option<CurrentRelease>, Option<CurrentRelease>), ApiError> {
    let current = current_release(api, unit).await?;
    let (u, cur) = (
        unit.to_owned(),
        current
            .as_ref()
            .map(|c| c.digest.clone())
            .unwrap_or_default(),
    );
    let target = api
        .db
        .run(move |c| rollback_target(c, &u, &cur))
        .await
        .map_err(ApiError::internal)?;
    Ok((current, target))
}

fn hosts_dir(api: &Api) -> PathBuf {
    api.hosts_dir.clone()
}

fn token_path(api: &Api, host: &str) -> PathBuf {
    hosts_dir(api).join(format!("{host}.token"))
}

/// Reads a host's token: the file must be a regular file of mode 0600 (or stricter).
pub fn read_token(path: &std::path::Path) -> Result<String, String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::symlink_metadata(path).map_err(|e| {
        format!(
            "host token {}: {e}; mint it with `codeb-daemon agent-token --out {}` and give the printed SHA-256 to the host's agent",
            path.display(),
            path.display()
        )
    })?;
    if !meta.is_file() {
        return Err(format!(
            "host token {} is not a regular file",
            path.display()
        ));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "host token {} is readable by others (mode {mode:o}); it is a secret: chmod 600 {}",
            path.display(),
            path.display()
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    codeb_api::Token::parse(&text)
        .map(|t| t.expose().to_owned())
        .map_err(|e| format!("host token {}: {e}", path.display()))
}

fn valid_host_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad(format!(
            "host name {name:?}: use 1-63 characters a-z, 0-9 and '-' (like n1-2)"
        )))
    }
}

/// `http://<ip or name>:<port>` → the address part (the balancer's upstream host).
fn agent_address(url: &str) -> Result<String, ApiError> {
    let bad = |why: &str| {
        ApiError::bad(format!(
            "agent_url {url:?} {why}; use http://<host address>:<port> as the agent listens"
        ))
    };
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| bad("is not an http:// URL"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    let (host, port) = authority
        .rsplit_once(':')
        .ok_or_else(|| bad("has no port"))?;
    port.parse::<u16>().map_err(|_| bad("has a bad port"))?;
    if host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
    {
        return Err(bad("has no usable host"));
    }
    Ok(host.to_owned())
}

/// A client of one host's agent.
pub struct AgentClient {
    url: String,
    token: String,
    http: reqwest::Client,
}

impl AgentClient {
    pub fn new(url: &str, token: String) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(900))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            url: url.trim_end_matches('/').to_owned(),
            token,
            http,
        })
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
        timeout: Duration,
    ) -> Result<T, String> {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .timeout(timeout);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| format!("agent {} {method} {path}: {e}", self.url))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            return Err(format!(
                "agent {} {method} {path} answered {status}: {}",
                self.url,
                text.trim()
            ));
        }
        serde_json::from_str(&text)
            .map_err(|e| format!("agent {} {method} {path}: unreadable answer: {e}", self.url))
    }

    pub async fn ping(&self) -> Result<AgentPing, String> {
        self.call(
            reqwest::Method::GET,
            "/agent/v1/ping",
            None,
            Duration::from_secs(5),
        )
        .await
    }

    pub async fn deploy(&self, req: &AgentDeploy) -> Result<AgentAnswer, String> {
        let body = serde_json::to_value(req).map_err(|e| e.to_string())?;
        self.call(
            reqwest::Method::POST,
            "/agent/v1/deploy",
            Some(body),
            Duration::from_secs(900),
        )
        .await
    }

    pub async fn stop(&self, project: &str, environment: &str) -> Result<(), String> {
        let body = serde_json::to_value(AgentTarget {
            project: project.into(),
            environment: environment.into(),
        })
        .map_err(|e| e.to_string())?;
        self.call::<serde_json::Value>(
            reqwest::Method::POST,
            "/agent/v1/stop",
            Some(body),
            Duration::from_secs(300),
        )
        .await
        .map(drop)
    }

    pub async fn status(&self) -> Result<Vec<AgentRelease>, String> {
        self.call(
            reqwest::Method::GET,
            "/agent/v1/status",
            None,
            Duration::from_secs(15),
        )
        .await
    }
}

fn client_for(api: &Api, host: &Host) -> Result<AgentClient, String> {
    let token = read_token(&token_path(api, &host.name))?;
    AgentClient::new(&host.agent_url, token)
}

fn balancer_caddy(api: &Api) -> Result<Caddy, String> {
    let admin = api.loc.caddy_admin.as_deref().ok_or(
        "the balancer lives on this host's Caddy: set [previews] caddy_admin in the daemon's config",
    )?;
    Caddy::new(admin)
        .map(|c| c.with_lock_file(api.state_dir().join("caddy.lock")))
        .map_err(|e| e.to_string())
}

fn upstream_of(host: &Host, public: u16) -> String {
    format!("{}:{public}", host.address)
}

/// One environment of one project that runs on the hosts.
#[derive(Debug, Clone)]
struct Deployable {
    project: String,
    environment: String,
    unit: String,
    public: u16,
    container_port: u16,
    health_path: String,
    env_file: Option<String>,
}

fn deployables(project: &codeb_api::Project) -> Vec<Deployable> {
    project
        .spec
        .environments
        .iter()
        .filter_map(|e| {
            let public = *project.ports.get(&e.name)?;
            Some(Deployable {
                project: project.spec.name.clone(),
                environment: e.name.clone(),
                unit: format!("{}-{}", project.spec.name, e.name),
                public,
                container_port: project.spec.container_port,
                health_path: project.spec.health_path.clone(),
                env_file: e.env_file.clone(),
            })
        })
        .collect()
}

fn agent_request(
    api: &Api,
    d: &Deployable,
    release: &CurrentRelease,
    actor: &str,
    rollback: bool,
) -> Result<AgentDeploy, String> {
    let env = match &d.env_file {
        Some(path) => Some(std::fs::read_to_string(path).map_err(|e| {
            format!(
                "env file {path} of {}: {e}; create it or drop env_file from the project",
                d.unit
            )
        })?),
        None => None,
    };
    let pinned = match codeb_registry::ImageRef::parse(&release.image)
        .and_then(|i| Ok(i.pinned(&codeb_registry::Digest::parse(&release.digest)?)))
    {
        Ok(p) => p,
        Err(e) => return Err(format!("release {}: {e}", release.image)),
    };
    Ok(AgentDeploy {
        project: d.project.clone(),
        environment: d.environment.clone(),
        image: pinned,
        public_port: d.public,
        container_port: d.container_port,
        health_path: d.health_path.clone(),
        env,
        sha: release.sha.clone(),
        actor: actor.to_owned(),
        drain_ms: u64::try_from(api.cfg.drain.as_millis()).unwrap_or(u64::MAX),
        health_deadline_ms: u64::try_from(api.cfg.health_deadline.as_millis()).unwrap_or(u64::MAX),
        health_interval_ms: u64::try_from(api.cfg.health_interval.as_millis()).unwrap_or(u64::MAX),
        successes: api.cfg.health_successes,
        rollback,
    })
}

/// The current release of `unit`: the last roll's, else this host's own active release.
async fn current_release(api: &Api, unit: &str) -> Result<Option<CurrentRelease>, ApiError> {
    let u = unit.to_owned();
    if let Some(r) = api
        .db
        .run(move |c| stored_release(c, &u))
        .await
        .map_err(ApiError::internal)?
    {
        return Ok(Some(r));
    }
    Ok(History::load(&api.state_dir(), unit)
        .ok()
        .and_then(|h| h.active)
        .map(|a| CurrentRelease {
            image: a.image,
            digest: a.digest,
            sha: a.sha,
        }))
}

/// Proves a host's front serves `d` healthy, from here (the balancer's side).
async fn probe_front(host: &Host, d: &Deployable) -> Result<(), String> {
    let url = format!("http://{}:{}{}", host.address, d.public, d.health_path);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .map_err(|e| e.to_string())?;
    let mut last = String::new();
    for _ in 0..10 {
        match client.get(&url).send().await {
            Ok(r) if r.status().as_u16() == 200 => return Ok(()),
            Ok(r) => last = format!("answered {}", r.status()),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Err(format!("{url} is not healthy from the balancer: {last}"))
}

/// Sets the balancer of `d` to `members` (hosts), removing it when none is left.
async fn set_balancer(
    api: &Api,
    caddy: &Caddy,
    d: &Deployable,
    members: &[&Host],
) -> Result<(), String> {
    if members.is_empty() {
        return caddy
            .remove_balancer(&d.unit)
            .await
            .map_err(|e| e.to_string());
    }
    let ups: Vec<String> = members.iter().map(|h| upstream_of(h, d.public)).collect();
    caddy
        .balance(
            &d.unit,
            &api.cfg.listen_host,
            d.public,
            &ups,
            &BalancerPolicy::new(&d.health_path),
        )
        .await
        .map_err(|e| e.to_string())
}

fn upstream_err(message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_GATEWAY, codes::UPSTREAM, message)
}

/// `POST /api/v1/scale/hosts`.
pub async fn add(
    State(api): State<Arc<Api>>,
    h: HeaderMap,
    body: Bytes,
) -> Result<Json<HostChange>, ApiError> {
    let caller = api.authorize(&h, Action::ScaleHostAdd, None).await?;
    let req: HostAdd = parse_body(&body)?;
    let params = serde_json::to_value(&req).unwrap_or_default();
    let result = add_host(&api, &caller.name, &req).await;
    let outcome = match &result {
        Ok(c) => format!("added: {}", c.steps.join("; ")),
        Err(e) => format!("refused: {}", e.message),
    };
    api.audit(
        &caller,
        Action::ScaleHostAdd,
        &format!("host/{}", req.host),
        None,
        &params,
        &outcome,
    )
    .await;
    result.map(Json)
}

async fn add_host(api: &Arc<Api>, actor: &str, req: &HostAdd) -> Result<HostChange, ApiError> {
    valid_host_name(&req.host)?;
    let address = agent_address(&req.agent_url)?;
    let name = req.host.clone();
    let known = api.db.run(|c| hosts(c)).await.map_err(ApiError::internal)?;
    if known.iter().any(|h| h.name == name) {
        return Err(ApiError::conflict(format!(
            "host {name} is registered already; remove it first (we scale app --remove {name})"
        )));
    }
    let token = read_token(&token_path(api, &name))
        .map_err(|m| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, codes::UNPROCESSABLE, m))?;
    let caddy = balancer_caddy(api)
        .map_err(|m| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, codes::UNPROCESSABLE, m))?;
    let agent = AgentClient::new(&req.agent_url, token).map_err(ApiError::internal)?;
    let ping = agent.ping().await.map_err(|m| {
        upstream_err(format!(
            "{m}; is `codeb-daemon agent` running on {name} with this host's token hash?"
        ))
    })?;
    if ping.host != name {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            codes::UNPROCESSABLE,
            format!(
                "the agent at {} calls itself {:?}, not {name}; start it with --host {name}",
                req.agent_url, ping.host
            ),
        ));
    }
    let host = Host {
        name: name.clone(),
        agent_url: req.agent_url.clone(),
        address,
        added_ms: now_ms(),
        added_by: actor.to_owned(),
    };
    let mut steps = vec![format!(
        "agent {} answered (codeb {})",
        req.agent_url, ping.version
    )];
    // Deploy every project's current release there and prove it healthy, before the host is
    // registered or balanced: a failure undoes what this add started.
    let projects = super::registry::list_projects(api).await?;
    let mut done: Vec<Deployable> = Vec::new();
    let mut work: Vec<(Deployable, CurrentRelease)> = Vec::new();
    for p in &projects {
        for d in deployables(p) {
            if let Some(r) = current_release(api, &d.unit).await? {
                work.push((d, r));
            }
        }
    }
    for (d, release) in &work {
        if caddy
            .balancer_upstreams(&d.unit)
            .await
            .ok()
            .flatten()
            .is_none()
            && caddy.upstream(&d.unit).await.ok().flatten().is_some()
        {
            let msg = format!(
                "{} is served by this host's own front on port {}, which its balancer would take over; deploy it through the hosts instead (add this host's agent as a host)",
                d.unit, d.public
            );
            undo_add(&agent, &done).await;
            return Err(ApiError::new(StatusCode::CONFLICT, codes::CONFLICT, msg));
        }
        let r = match agent_request(
            api,
            d,
            release,
            &format!("{actor} via we scale app --add"),
            false,
        ) {
            Ok(r) => r,
            Err(m) => {
                undo_add(&agent, &done).await;
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    codes::UNPROCESSABLE,
                    m,
                ));
            }
        };
        done.push(d.clone());
        let answer = agent.deploy(&r).await;
        let proven = match answer {
            Ok(a) if a.outcome == "deployed" => probe_front(&host, d).await,
            Ok(a) => Err(format!("{} on {name}: {}", d.unit, a.message)),
            Err(m) => Err(m),
        };
        if let Err(m) = proven {
            undo_add(&agent, &done).await;
            return Err(upstream_err(format!(
                "{m}; {name} was not added and runs nothing of this add"
            )));
        }
        steps.push(format!(
            "deployed {} {} on {name}, healthy on {}:{}",
            d.unit, release.digest, host.address, d.public
        ));
    }
    let h2 = host.clone();
    api.db
        .run(move |c| {
            c.execute(
                "INSERT INTO scale_hosts (name, agent_url, address, added_ms, added_by) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![h2.name, h2.agent_url, h2.address, h2.added_ms, h2.added_by],
            )?;
            Ok(())
        })
        .await
        .map_err(ApiError::internal)?;
    for (d, _) in &work {
        let mut members: Vec<&Host> = known.iter().collect();
        members.push(&host);
        if let Err(m) = set_balancer(api, &caddy, d, &members).await {
            return Err(upstream_err(format!(
                "{name} serves {} but the balancer refused it: {m}; retry with we scale app --remove {name} then --add",
                d.unit
            )));
        }
        steps.push(format!(
            "balancer of {} on {}:{} now has {} upstream(s)",
            d.unit,
            api.cfg.listen_host,
            d.public,
            members.len()
        ));
    }
    Ok(HostChange { host: name, steps })
}

async fn undo_add(agent: &AgentClient, done: &[Deployable]) {
    for d in done.iter().rev() {
        if let Err(e) = agent.stop(&d.project, &d.environment).await {
            tracing::warn!(unit = %d.unit, error = %e, "could not stop a release of a failed host add");
        }
    }
}

/// `DELETE /api/v1/scale/hosts/{host}`.
pub async fn remove(
    State(api): State<Arc<Api>>,
    h: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<HostChange>, ApiError> {
    let caller = api.authorize(&h, Action::ScaleHostRemove, None).await?;
    let result = remove_host(&api, &name).await;
    let outcome = match &result {
        Ok(c) => format!("removed: {}", c.steps.join("; ")),
        Err(e) => format!("refused: {}", e.message),
    };
    api.audit(
        &caller,
        Action::ScaleHostRemove,
        &format!("host/{name}"),
        None,
        &serde_json::json!({ "host": name }),
        &outcome,
    )
    .await;
    result.map(Json)
}

async fn remove_host(api: &Arc<Api>, name: &str) -> Result<HostChange, ApiError> {
    valid_host_name(name)?;
    let known = api.db.run(|c| hosts(c)).await.map_err(ApiError::internal)?;
    let Some(host) = known.iter().find(|h| h.name == name).cloned() else {
        return Err(ApiError::not_found(format!(
            "host {name} is not registered; see we scale status"
        )));
    };
    let caddy = balancer_caddy(api)
        .map_err(|m| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, codes::UNPROCESSABLE, m))?;
    let others: Vec<&Host> = known.iter().filter(|h| h.name != name).collect();
    let projects = super::registry::list_projects(api).await?;
    let mut steps = Vec::new();
    let all: Vec<Deployable> = projects.iter().flat_map(deployables).collect();
    // Drain first: out of every balancer, then wait for requests in flight to finish.
    for d in &all {
        let ups = caddy
            .balancer_upstreams(&d.unit)
            .await
            .map_err(|e| upstream_err(e.to_string()))?;
        if ups.is_some_and(|u| u.contains(&upstream_of(&host, d.public))) {
            set_balancer(api, &caddy, d, &others)
                .await
                .map_err(upstream_err)?;
            steps.push(format!("drained {name} out of the balancer of {}", d.unit));
        }
    }
    tokio::time::sleep(api.cfg.drain.min(Duration::from_secs(5))).await;
    let agent = client_for(api, &host)
        .map_err(|m| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, codes::UNPROCESSABLE, m))?;
    let running = agent.status().await.map_err(upstream_err)?;
    for d in &all {
        if running.iter().any(|r| r.unit == d.unit) {
            agent
                .stop(&d.project, &d.environment)
                .await
                .map_err(upstream_err)?;
            steps.push(format!("stopped {} on {name}", d.unit));
        }
    }
    let n = name.to_owned();
    api.db
        .run(move |c| {
            c.execute("DELETE FROM scale_hosts WHERE name = ?1", [n])?;
            Ok(())
        })
        .await
        .map_err(ApiError::internal)?;
    steps.push(format!("{name} is no longer registered"));
    Ok(HostChange {
        host: name.to_owned(),
        steps,
    })
}

/// `GET /api/v1/scale/hosts`.
pub async fn list(
    State(api): State<Arc<Api>>,
    h: HeaderMap,
) -> Result<Json<HostsReport>, ApiError> {
    api.authorize(&h, Action::ScaleHostList, None).await?;
    let known = api.db.run(|c| hosts(c)).await.map_err(ApiError::internal)?;
    let mut notes = Vec::new();
    let mut views = Vec::new();
    for host in &known {
        let (reachable, releases, error) = match client_for(&api, host) {
            Ok(agent) => match agent.status().await {
                Ok(rs) => (
                    true,
                    rs.into_iter()
                        .map(|r| HostRelease {
                            unit: r.unit,
                            digest: r.digest,
                            slot: r.slot,
                            public_port: r.public_port,
                            healthy: r.healthy,
                        })
                        .collect(),
                    None,
                ),
                Err(e) => (false, Vec::new(), Some(e)),
            },
            Err(e) => (false, Vec::new(), Some(e)),
        };
        views.push(HostView {
            host: host.name.clone(),
            agent_url: host.agent_url.clone(),
            address: host.address.clone(),
            added_ms: host.added_ms,
            added_by: host.added_by.clone(),
            reachable,
            releases,
            error,
        });
    }
    let mut balancers = Vec::new();
    match balancer_caddy(&api) {
        Ok(caddy) => {
            let seen = caddy.upstream_views().await.unwrap_or_default();
            let health = match caddy.metrics().await {
                Ok(text) => upstream_health(&text),
                Err(e) => {
                    notes.push(format!("Caddy's metrics: {e}"));
                    Vec::new()
                }
            };
            let projects = super::registry::list_projects(&api).await?;
            for d in projects.iter().flat_map(deployables) {
                if let Ok(Some(ups)) = caddy.balancer_upstreams(&d.unit).await {
                    balancers.push(BalancerView {
                        unit: d.unit.clone(),
                        listen: format!("{}:{}", api.cfg.listen_host, d.public),
                        upstreams: ups
                            .into_iter()
                            .map(|u| {
                                let v = seen.iter().find(|s| s.address == u);
                                BalancerUpstream {
                                    in_flight: v.map(|v| v.num_requests),
                                    fails: v.map(|v| v.fails),
                                    healthy: health.iter().find(|(a, _)| *a == u).map(|(_, h)| *h),
                                    address: u,
                                }
                            })
                            .collect(),
                    });
                }
            }
        }
        Err(e) => notes.push(e),
    }
    Ok(Json(HostsReport {
        hosts: views,
        balancers,
        notes,
    }))
}

/// `caddy_reverse_proxy_upstreams_healthy{upstream="A"}` samples of Caddy's metrics text:
/// the active health checks' verdict per upstream address.
pub fn upstream_health(text: &str) -> Vec<(String, bool)> {
    let Ok(scrape) = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))) else {
        return Vec::new();
    };
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == "caddy_reverse_proxy_upstreams_healthy")
        .filter_map(|s| {
            let v = match s.value {
                prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => v,
                _ => return None,
            };
            Some((s.labels.get("upstream")?.to_owned(), v >= 1.0))
        })
        .collect()
}

/// Whether `project` runs on registered hosts (its deploys are then rolling deploys).
pub async fn has_hosts(api: &Api) -> bool {
    api.db.run(|c| hosts(c)).await.is_ok_and(|h| !h.is_empty())
}

/// A rolling deploy of `d` to `release` over every registered host, one at a time: drain the
/// host out of the balancer, deploy blue-green there, prove it healthy from here, put it
/// back. A failure on any host stops the roll and rolls back the hosts already moved (each
/// drained while it switches back); the previous release then serves everywhere.
///
/// A rolling rollback (`kind` [`JobKind::Rollback`], `release` from [`rollback_plan`]) is the
/// same roll to the release that served before: each host deploys that pinned digest
/// blue-green, and a failure puts the hosts already moved back on the release serving now.
pub async fn rolling(
    api: &Api,
    d_project: &codeb_api::Project,
    environment: &str,
    release: &CurrentRelease,
    kind: JobKind,
    actor: &str,
    progress: &(dyn Fn(String) + Sync),
) -> Result<String, String> {
    let Some(d) = deployables(d_project)
        .into_iter()
        .find(|d| d.environment == environment)
    else {
        return Err(format!(
            "{} {environment} has no port in the manifest; allocate one first",
            d_project.spec.name
        ));
    };
    let known = api.db.run(|c| hosts(c)).await.map_err(|e| e.to_string())?;
    let caddy = balancer_caddy(api)?;
    let mut clients = Vec::new();
    for h in &known {
        clients.push(client_for(api, h)?);
    }
    let before = current_release(api, &d.unit).await.map_err(|e| e.message)?;
    let verb = match kind {
        JobKind::Deploy => "deploying",
        JobKind::Rollback => "rolling back to",
    };
    let req = agent_request(api, &d, release, actor, false)?;
    let back = AgentDeploy {
        rollback: true,
        ..req.clone()
    };
    // Hosts that serve now (the balancer's members); a host not in it is not drained back in.
    let mut moved: Vec<usize> = Vec::new();
    let mut failure: Option<String> = None;
    for (i, host) in known.iter().enumerate() {
        progress(format!(
            "{}: draining {} out of the balancer",
            d.unit, host.name
        ));
        let rest: Vec<&Host> = known.iter().filter(|h| h.name != host.name).collect();
        if !rest.is_empty()
            && let Err(e) = set_balancer(api, &caddy, &d, &rest).await
        {
            failure = Some(format!("draining {}: {e}", host.name));
            break;
        }
        progress(format!(
            "{}: {verb} {} on {} (blue-green)",
            d.unit, release.digest, host.name
        ));
        let result = match clients[i].deploy(&req).await {
            Ok(a) if a.outcome == "deployed" => probe_front(host, &d).await,
            Ok(a) if a.outcome == "rolled_back" => {
                Err(format!("{} on {}: {}", d.unit, host.name, a.message))
            }
            Ok(a) => {
                // The engine guarantees the previous release serves; count the host as moved
                // only when it reports a new slot.
                Err(format!("{} on {}: {}", d.unit, host.name, a.message))
            }
            Err(e) => Err(e),
        };
        let all: Vec<&Host> = known.iter().collect();
        if let Err(e) = set_balancer(api, &caddy, &d, &all).await {
            failure = Some(format!("putting {} back into the balancer: {e}", host.name));
            if result.is_ok() {
                moved.push(i);
            }
            break;
        }
        match result {
            Ok(()) => {
                progress(format!(
                    "{}: {} serves {} and is back in the balancer",
                    d.unit, host.name, release.digest
                ));
                moved.push(i);
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    let Some(why) = failure else {
        let (u, r) = (d.unit.clone(), release.clone());
        api.db
            .run(move |c| record_roll(c, &u, before.as_ref(), &r, kind))
            .await
            .map_err(|e| e.to_string())?;
        return Ok(format!(
            "{} {} {} on {} host(s): {}",
            d.unit,
            match kind {
                JobKind::Deploy => "serves",
                JobKind::Rollback => "rolled back: serves",
            },
            release.digest,
            known.len(),
            known
                .iter()
                .map(|h| h.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    };
    progress(format!(
        "{}: the roll stopped ({why}); rolling back {} host(s) already moved",
        d.unit,
        moved.len()
    ));
    let mut unrolled = Vec::new();
    for &i in moved.iter().rev() {
        let host = &known[i];
        let rest: Vec<&Host> = known.iter().filter(|h| h.name != host.name).collect();
        if !rest.is_empty() {
            let _ = set_balancer(api, &caddy, &d, &rest).await;
        }
        let r = clients[i].deploy(&back).await;
        let all: Vec<&Host> = known.iter().collect();
        let _ = set_balancer(api, &caddy, &d, &all).await;
        match r {
            Ok(a) if a.outcome == "deployed" => progress(format!(
                "{}: {} is back on the previous release",
                d.unit, host.name
            )),
            Ok(a) => unrolled.push(format!("{}: {}", host.name, a.message)),
            Err(e) => unrolled.push(format!("{}: {e}", host.name)),
        }
    }
    if unrolled.is_empty() {
        Err(format!(
            "{why}; the hosts already moved were rolled back: the previous release serves everywhere"
        ))
    } else {
        Err(format!(
            "{why}; rolling back failed on {}",
            unrolled.join("; ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_and_agent_urls_are_checked() {
        assert!(valid_host_name("n1-2").is_ok());
        assert!(valid_host_name("N1").is_err());
        assert!(valid_host_name("").is_err());
        assert!(valid_host_name("a/b").is_err());
        assert_eq!(
            agent_address("http://10.201.3.2:7070").expect("url"),
            "10.201.3.2"
        );
        assert!(agent_address("https://10.0.0.1:7070").is_err());
        assert!(agent_address("http://10.0.0.1").is_err());
        assert!(agent_address("http://:7070").is_err());
    }

    #[test]
    fn the_balancers_health_verdicts_are_read_from_caddys_metrics() {
        let text = "# HELP caddy_reverse_proxy_upstreams_healthy Health status of reverse proxy upstreams.\n# TYPE caddy_reverse_proxy_upstreams_healthy gauge\ncaddy_reverse_proxy_upstreams_healthy{upstream=\"10.201.3.2:4100\"} 1\ncaddy_reverse_proxy_upstreams_healthy{upstream=\"10.201.3.3:4100\"} 0\n";
        assert_eq!(
            upstream_health(text),
            vec![
                ("10.201.3.2:4100".to_owned(), true),
                ("10.201.3.3:4100".to_owned(), false)
            ]
        );
        assert!(upstream_health("garbage{").is_empty());
    }

    #[test]
    fn a_rolling_rollback_goes_to_the_release_before_and_not_back_again() {
        let mut c = Connection::open_in_memory().expect("db");
        migrate(&c).expect("schema");
        let rel = |d: &str| CurrentRelease {
            image: format!("r/x:{d}"),
            digest: format!("sha256:{d}"),
            sha: String::new(),
        };
        let target = |c: &Connection, cur: &str| {
            rollback_target(c, "x-production", &format!("sha256:{cur}"))
                .expect("query")
                .map(|r| r.digest)
        };
        // Adopted: v0 served (this host's own deploy) before the first roll to v1.
        record_roll(
            &mut c,
            "x-production",
            Some(&rel("v0")),
            &rel("v1"),
            JobKind::Deploy,
        )
        .expect("roll");
        assert_eq!(target(&c, "v1").as_deref(), Some("sha256:v0"));
        record_roll(
            &mut c,
            "x-production",
            Some(&rel("v1")),
            &rel("v2"),
            JobKind::Deploy,
        )
        .expect("roll");
        assert_eq!(target(&c, "v2").as_deref(), Some("sha256:v1"));
        assert_eq!(
            stored_release(&c, "x-production")
                .expect("current")
                .map(|r| r.digest)
                .as_deref(),
            Some("sha256:v2")
        );
        // Back to v1; v2 is not a target of the next rollback, which goes to v0.
        record_roll(
            &mut c,
            "x-production",
            Some(&rel("v2")),
            &rel("v1"),
            JobKind::Rollback,
        )
        .expect("rollback");
        assert_eq!(target(&c, "v1").as_deref(), Some("sha256:v0"));
        record_roll(
            &mut c,
            "x-production",
            Some(&rel("v1")),
            &rel("v0"),
            JobKind::Rollback,
        )
        .expect("rollback");
        assert_eq!(target(&c, "v0"), None, "nothing left to go back to");
        // A new deploy of v2 makes v0 the target again.
        record_roll(
            &mut c,
            "x-production",
            Some(&rel("v0")),
            &rel("v2"),
            JobKind::Deploy,
        )
        .expect("roll");
        assert_eq!(target(&c, "v2").as_deref(), Some("sha256:v0"));
        // Another unit knows nothing.
        assert_eq!(
            rollback_target(&c, "y-production", "sha256:v2").expect("query"),
            None
        );
    }

    #[test]
    fn a_host_token_must_be_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("n1-2.token");
        assert!(read_token(&p).expect_err("missing").contains("agent-token"));
        crate::agent::mint_token(&p).expect("mint");
        assert!(read_token(&p).expect("token").starts_with("codeb_"));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(read_token(&p).expect_err("open").contains("chmod 600"));
    }
}
