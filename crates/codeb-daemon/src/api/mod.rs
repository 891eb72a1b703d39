//! The control plane: `/api/v1`, authenticated with `codeb_` tokens, beside the webhook
//! intake in the same process and SQLite file. The contract (every endpoint, its action and
//! the roles allowed, the request and response types) is `codeb_api`'s crate docs; this
//! module serves it.
//!
//! Every handler starts with [`Api::authorize`], which checks the token and asks
//! [`codeb_api::perm::allowed`] (the one permission table) whether the caller's role may do
//! the endpoint's action, on the project when there is one. Writes and refusals of writes are
//! audited (`api_audit`, append-only) with secrets removed from the parameters.
//!
//! Modules: [`db`] (tables, migration, queries), [`team`] (whoami, users, tokens, audit,
//! bootstrap), [`registry`] (projects, scan, ports, up, health, SSOT), [`jobs`] (deploys
//! and rollbacks through `codeb_deploy::Engine`, progress streams), [`logs`].
//!
//! Requests to `/api/v1` share a concurrency limit of their own (`[api] max_concurrency`,
//! 503 `overloaded` beyond it), so a flood at the API never takes the webhook intake's
//! capacity; streams (job events, logs) have a second limit and do not count against it.

pub mod backups;
pub mod db;
pub mod domain;
pub mod env;
pub mod guard;
pub mod hosts;
pub mod jobs;
pub mod logs;
pub mod provision;
pub mod registry;
pub mod scale;
pub mod team;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use codeb_api::perm::{self, Access};
use codeb_api::{Action, ErrorBody, Role, Token, codes};
use codeb_core::ProjectName;
use codeb_deploy::{RuntimeChoice, TargetLocation};
use codeb_host::ManifestStore;
use serde::Deserialize;
use tokio::sync::{Notify, Semaphore, watch};

use crate::store::now_ms;
use db::{Db, DbError, NewAudit};

/// `[api]` in the daemon's config. Where targets live (manifest, Quadlet directory, Caddy,
/// runtime) comes from `[previews]`: one host, one set of places.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Serve `/api/v1` at all.
    pub enabled: bool,
    /// API requests handled at once; more get 503 `overloaded`.
    pub max_concurrency: usize,
    /// Streams (job events, logs) open at once.
    pub max_streams: usize,
    /// API deploys and rollbacks running at once (each target still one at a time).
    pub job_concurrency: usize,
    /// How long a deploy waits for another deploy's lock by default.
    #[serde(deserialize_with = "duration")]
    pub lock_timeout: Duration,
    #[serde(deserialize_with = "duration")]
    pub health_deadline: Duration,
    #[serde(deserialize_with = "duration")]
    pub health_interval: Duration,
    pub health_successes: u32,
    /// How long the old slot serves in-flight requests after a switch.
    #[serde(deserialize_with = "duration")]
    pub drain: Duration,
    /// The unit's container health command (`HealthCmd=`); none by default.
    pub health_cmd: Option<String>,
    /// Lifetime of new tokens unless the request says otherwise.
    #[serde(deserialize_with = "duration")]
    pub token_ttl: Duration,
    /// Address the Caddy fronts listen on (`127.0.0.1`).
    pub listen_host: String,
    /// `codeb-backup`'s config (`/etc/codeb/backup.toml`): enables `we env backups`,
    /// `we env restore`, and the backup ages in `we health` and `/metrics`.
    pub backup_config: Option<PathBuf>,
    /// `[api.provision]`: the storage server for `we workflow init` (none: init is refused).
    pub provision: Option<provision::ProvisionConfig>,
    /// `[domains]` of the daemon's config, resolved (`we domain`; none when absent).
    #[serde(skip)]
    pub domains: Option<domain::DomainSettings>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_concurrency: 64,
            max_streams: 32,
            job_concurrency: 4,
            lock_timeout: Duration::from_secs(600),
            health_deadline: Duration::from_secs(120),
            health_interval: Duration::from_secs(1),
            health_successes: 2,
            drain: Duration::from_secs(30),
            health_cmd: None,
            token_ttl: Duration::from_secs(90 * 86400),
            listen_host: "127.0.0.1".into(),
            backup_config: None,
            provision: None,
            domains: None,
        }
    }
}

/// The longest token lifetime accepted.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(366 * 86400);

impl ApiConfig {
    /// Checks ranges; the message names the key and a fix.
    pub fn validated(self) -> Result<Self, String> {
        if !(1..=4096).contains(&self.max_concurrency) {
            return Err(format!(
                "max_concurrency = {} is out of range: use 1 to 4096",
                self.max_concurrency
            ));
        }
        if !(1..=1024).contains(&self.max_streams) {
            return Err(format!(
                "max_streams = {} is out of range: use 1 to 1024",
                self.max_streams
            ));
        }
        if !(1..=64).contains(&self.job_concurrency) {
            return Err(format!(
                "job_concurrency = {} is out of range: use 1 to 64",
                self.job_concurrency
            ));
        }
        if self.token_ttl.is_zero() || self.token_ttl > MAX_TOKEN_TTL {
            return Err("token_ttl must be between 1s and 366d".into());
        }
        Ok(self)
    }
}

fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map_err(|e| {
        serde::de::Error::custom(format!(
            "invalid duration {s:?} ({e}); write e.g. \"30s\", \"10m\""
        ))
    })
}

/// Everything the API handlers share.
pub struct Api {
    pub db: Db,
    pub cfg: ApiConfig,
    pub loc: TargetLocation,
    limit: Arc<Semaphore>,
    streams: Arc<Semaphore>,
    /// Wakes the job runner.
    pub wake: Arc<Notify>,
    /// Bumped whenever a job event is stored; streams wait on it.
    pub events: watch::Sender<u64>,
    /// `we domain` (PowerDNS and the settings), when `[domains]` is configured.
    pub domains: Option<Arc<domain::Domains>>,
    /// The zone part of `[previews] domain_pattern` (after the last placeholder).
    pub preview_domain_suffix: Option<String>,
    /// The app hosts' tokens (`<state_dir>/hosts/<host>.token`, 0600).
    pub hosts_dir: PathBuf,
}

impl Api {
    /// Opens the control plane's tables in `db_path` (migrating them, reporting jobs a
    /// previous process left running as interrupted).
    pub fn open(
        db_path: &std::path::Path,
        cfg: ApiConfig,
        previews: &codeb_previews::PreviewConfig,
    ) -> Result<(Arc<Api>, db::Recovered), DbError> {
        let (db, recovered) = Db::open(db_path)?;
        db.blocking(|c| domain::migrate(c))?;
        db.blocking(|c| hosts::migrate(c))?;
        let domains = cfg
            .domains
            .clone()
            .map(domain::Domains::new)
            .transpose()
            .map_err(DbError::Task)?
            .map(Arc::new);
        let preview_domain_suffix = previews
            .domain_pattern
            .rsplit_once('}')
            .map(|(_, rest)| rest.trim_start_matches('.').to_owned())
            .filter(|s| !s.is_empty());
        let runtime = match previews.runtime.as_str() {
            "systemd" => RuntimeChoice::Systemd,
            "podman" => RuntimeChoice::Podman,
            _ => RuntimeChoice::Auto,
        };
        let loc = TargetLocation {
            manifest: ManifestStore::resolve(previews.manifest.clone()),
            quadlet_dir: previews.quadlet_dir.clone(),
            caddy_admin: Some(previews.caddy_admin.clone()).filter(|c| !c.is_empty()),
            allow_remote_admin: false,
            runtime,
            templates: None,
        };
        let (events, _) = watch::channel(0);
        Ok((
            Arc::new(Api {
                db,
                limit: Arc::new(Semaphore::new(cfg.max_concurrency)),
                streams: Arc::new(Semaphore::new(cfg.max_streams)),
                cfg,
                loc,
                wake: Arc::new(Notify::new()),
                events,
                domains,
                preview_domain_suffix,
                hosts_dir: db_path
                    .parent()
                    .unwrap_or(std::path::Path::new("."))
                    .join("hosts"),
            }),
            recovered,
        ))
    }

    pub fn state_dir(&self) -> PathBuf {
        self.loc.state_dir()
    }

    /// Tells streams that job events were stored.
    pub fn bump(&self) {
        self.events.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A stream slot, or 503.
    pub fn stream_permit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
        self.streams.clone().try_acquire_owned().map_err(|_| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                codes::OVERLOADED,
                format!(
                    "{} streams are open (the [api] max_streams limit); close one or retry later",
                    self.cfg.max_streams
                ),
            )
        })
    }

    /// Authenticates the request and checks the permission table for `action` (on
    /// `project`, when the action is about one). A refused write is audited.
    pub async fn authorize(
        &self,
        headers: &HeaderMap,
        action: Action,
        project: Option<&str>,
    ) -> Result<Caller, ApiError> {
        let caller = self.authenticate(headers).await?;
        let owns = match project {
            Some(p) => caller.projects.iter().any(|o| o == p),
            None => false,
        };
        if perm::allowed(caller.role, action, owns) {
            return Ok(caller);
        }
        let why = match perm::access(caller.role, action) {
            Access::Owner => format!(
                "{action} on project `{}` is allowed to its owners and admins; {} ({}) does not own it: ask an admin to add you (`we team ...`)",
                project.unwrap_or("?"),
                caller.name,
                caller.role
            ),
            _ => format!(
                "{action} needs a role that allows it; {} is {} (see the permission table: `we team status`)",
                caller.name, caller.role
            ),
        };
        if action.is_write() {
            let target =
                project.map_or_else(|| action.as_str().to_owned(), |p| format!("project:{p}"));
            self.audit(
                &caller,
                action,
                &target,
                project,
                &serde_json::Value::Null,
                "denied",
            )
            .await;
        }
        Err(ApiError::new(StatusCode::FORBIDDEN, codes::FORBIDDEN, why))
    }

    async fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        let unauthorized = |m: &str| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                codes::UNAUTHORIZED,
                format!("{m}; log in again with `we login` (or set CODEB_TOKEN)"),
            )
        };
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Err(unauthorized(
                "no token: send `Authorization: Bearer codeb_...`",
            ));
        };
        let Some(raw) = value
            .to_str()
            .ok()
            .and_then(codeb_api::token::from_authorization)
        else {
            return Err(unauthorized(
                "the Authorization header is not `Bearer codeb_...`",
            ));
        };
        let token = Token::parse(raw).map_err(|e| unauthorized(&e.to_string()))?;
        let hash = token.hash();
        let now = now_ms();
        let found = self
            .db
            .run(move |c| {
                let row = db::token_by_hash(c, &hash)?;
                if let Some(r) = &row
                    && r.info.revoked_ms.is_none()
                    && r.info.expires_ms > now
                    && r.user.enabled
                {
                    db::touch_token(c, r.info.id, r.user.id, now)?;
                }
                Ok(row)
            })
            .await
            .map_err(ApiError::internal)?;
        // Unknown, revoked and disabled answer alike; only expiry is told apart (the holder
        // of a real expired token learns nothing new).
        let Some(row) = found else {
            return Err(unauthorized("the token is not valid"));
        };
        if row.info.revoked_ms.is_some() || !row.user.enabled {
            return Err(unauthorized("the token is not valid"));
        }
        if row.info.expires_ms <= now {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                codes::TOKEN_EXPIRED,
                "the token has expired; ask an admin for a new one and run `we login`",
            ));
        }
        Ok(Caller {
            user_id: row.user.id,
            name: row.user.name.clone(),
            role: row.user.role,
            projects: row.user.projects.clone(),
            token_id: row.info.id,
            token: row.info,
            user: row.user,
        })
    }

    /// Appends an audit row; a failure to audit is logged (the action already happened or
    /// was refused).
    pub async fn audit(
        &self,
        caller: &Caller,
        action: Action,
        target: &str,
        project: Option<&str>,
        params: &serde_json::Value,
        result: &str,
    ) {
        let actor = caller.name.clone();
        let token_id = caller.token_id;
        let target = target.to_owned();
        let project = project.map(str::to_owned);
        let params = redact(params);
        let result = result.to_owned();
        let r = self
            .db
            .run(move |c| {
                db::audit(
                    c,
                    &NewAudit {
                        actor: &actor,
                        token_id: Some(token_id),
                        action: action.as_str(),
                        target: &target,
                        project: project.as_deref(),
                        params: &params,
                        result: &result,
                    },
                    now_ms(),
                )
            })
            .await;
        if let Err(e) = r {
            tracing::error!(error = %e, %action, "cannot write the audit log");
        }
    }
}

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user_id: i64,
    pub name: String,
    pub role: Role,
    pub projects: Vec<String>,
    pub token_id: i64,
    pub token: codeb_api::TokenInfo,
    pub user: codeb_api::User,
}

/// Parameter keys whose values never reach the audit log.
const SECRET_KEYS: &[&str] = &[
    "token",
    "secret",
    "password",
    "passwd",
    "authorization",
    "credential",
    "key",
];

/// `v` with the values of secret-looking keys and anything shaped like a codeb token
/// replaced by `"<redacted>"`.
pub fn redact(v: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| {
                    let lk = k.to_ascii_lowercase();
                    let secret = SECRET_KEYS.iter().any(|s| lk.contains(s)) && !v.is_null();
                    let keep_name = lk == "name" || lk.ends_with("_expires_in");
                    if secret && !keep_name {
                        (k.clone(), Value::String("<redacted>".into()))
                    } else {
                        (k.clone(), redact(v))
                    }
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(redact).collect()),
        Value::String(s) if s.contains(codeb_api::token::PREFIX) => {
            Value::String("<redacted>".into())
        }
        other => other.clone(),
    }
}

/// An error answer: `{"error": {"code", "message"}}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
    pub fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, codes::BAD_REQUEST, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, codes::NOT_FOUND, message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, codes::CONFLICT, message)
    }
    pub fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "control plane request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            codes::INTERNAL,
            format!("internal error: {e}"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            axum::Json(ErrorBody::new(self.code, self.message)),
        )
            .into_response()
    }
}

/// Parses a JSON body into `T`; the 400 names what is wrong.
pub fn parse_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad(format!(
            "the request body is not the JSON this endpoint takes: {e}"
        ))
    })
}

/// A project name from a path or body: a DNS label, else 400 naming the rule.
pub fn project_name(name: &str) -> Result<ProjectName, ApiError> {
    ProjectName::new(name).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            codes::INVALID_NAME,
            format!("{e} (the rule: project names are DNS labels, [a-z0-9-], 1-63 characters)"),
        )
    })
}

/// `production` or `staging` (the API does not deploy previews; the webhook does).
pub fn environment(name: &str) -> Result<codeb_core::Environment, ApiError> {
    let invalid = || {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            codes::INVALID_NAME,
            format!(
                "environment {:?} is not one of: production, staging",
                codeb_health::one_line(name, 40)
            ),
        )
    };
    match name.parse::<codeb_core::Environment>() {
        Ok(e @ (codeb_core::Environment::Production | codeb_core::Environment::Staging)) => Ok(e),
        _ => Err(invalid()),
    }
}

/// A user name: `[a-z0-9._-]`, 1-64, starting with a letter or digit; else 400.
pub fn user_name(name: &str) -> Result<String, ApiError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if ok && !name.contains("..") {
        Ok(name.to_owned())
    } else {
        Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            codes::INVALID_NAME,
            format!(
                "user name {:?} breaks the rule: [a-z0-9._-], 1-64 characters, starting with a letter or digit, no `..`",
                codeb_health::one_line(name, 70)
            ),
        ))
    }
}

/// A humantime duration from a request field.
pub fn request_duration(
    field: &str,
    v: Option<&str>,
    default: Duration,
) -> Result<Duration, ApiError> {
    match v {
        None => Ok(default),
        Some(s) => humantime::parse_duration(s).map_err(|e| {
            ApiError::bad(format!(
                "{field} = {:?} is not a duration ({e}); write e.g. \"90d\", \"10m\"",
                codeb_health::one_line(s, 40)
            ))
        }),
    }
}

/// The `/api/v1` routes with their concurrency limit; `None` when `[api] enabled = false`.
pub fn router(api: Arc<Api>) -> Router {
    Router::new()
        .route("/api/v1/whoami", get(team::whoami))
        .route("/api/v1/logout", post(team::logout))
        .route("/api/v1/team", get(team::list).post(team::add))
        .route("/api/v1/team/status", get(team::status))
        .route("/api/v1/team/{id}/role", post(team::role))
        .route("/api/v1/team/{id}/toggle", post(team::toggle))
        .route("/api/v1/team/{id}/projects", put(team::assign))
        .route("/api/v1/tokens", get(team::tokens).post(team::create_token))
        .route("/api/v1/tokens/{id}", delete(team::revoke_token))
        .route("/api/v1/audit", get(team::audit))
        .route(
            "/api/v1/projects",
            get(registry::list).post(registry::create),
        )
        .route(
            "/api/v1/projects/{name}",
            get(registry::get)
                .put(registry::update)
                .delete(registry::remove),
        )
        .route("/api/v1/projects/{name}/scan", get(registry::scan))
        .route("/api/v1/projects/{name}/deploy", post(jobs::deploy))
        .route("/api/v1/projects/{name}/rollback", post(jobs::rollback))
        .route("/api/v1/projects/{name}/logs", get(logs::logs))
        .route("/api/v1/projects/{name}/restore", post(backups::restore))
        .route("/api/v1/backups", get(backups::list))
        .route("/api/v1/projects/{name}/init", post(provision::init))
        .route("/api/v1/projects/{name}/remove", post(provision::remove))
        .route("/api/v1/projects/{name}/env", get(env::env_values))
        .route(
            "/api/v1/projects/{name}/{*rest}",
            get(unknown_under_project).post(unknown_under_project),
        )
        .route("/api/v1/jobs", get(jobs::list))
        .route("/api/v1/jobs/{id}", get(jobs::get))
        .route("/api/v1/jobs/{id}/events", get(jobs::events))
        .route("/api/v1/health", get(registry::health))
        .route("/api/v1/up", get(registry::up))
        .route("/api/v1/ports", get(registry::ports))
        .route("/api/v1/scale/status", get(scale::status))
        .route("/api/v1/scale/hosts", get(hosts::list).post(hosts::add))
        .route("/api/v1/scale/hosts/{host}", delete(hosts::remove))
        .route("/api/v1/ssot/status", get(registry::ssot_status))
        .route("/api/v1/ssot/projects", get(registry::ssot_projects))
        .route("/api/v1/ssot/sync", post(registry::ssot_sync))
        .route("/api/v1/ssot/validate", post(registry::ssot_validate))
        .route("/api/v1/domains", get(domain::list).post(domain::setup))
        .route("/api/v1/domains/zones", get(domain::zones))
        .route("/api/v1/domains/{domain}", delete(domain::remove))
        .route("/api/v1/tls/ask", get(domain::ask))
        .fallback(unknown)
        .layer(middleware::from_fn_with_state(api.clone(), limit))
        .layer(DefaultBodyLimit::max(1 << 20))
        .with_state(api)
}

async fn limit(State(api): State<Arc<Api>>, req: Request, next: Next) -> Response {
    let req = match guard::buffered(req, guard::BODY_TIMEOUT).await {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let Ok(_permit) = api.limit.clone().try_acquire_owned() else {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            codes::OVERLOADED,
            format!(
                "the API is handling {} requests (the [api] max_concurrency limit); retry shortly",
                api.cfg.max_concurrency
            ),
        )
        .into_response();
    };
    let mut r = next.run(req).await;
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    r
}

async fn unknown_under_project(
    axum::extract::Path((name, rest)): axum::extract::Path<(String, String)>,
) -> ApiError {
    if let Err(e) = project_name(&name) {
        return e;
    }
    ApiError::not_found(format!(
        "no endpoint {:?} under /api/v1/projects/{name}; see the endpoint table in `codeb_api`",
        codeb_health::one_line(&rest, 60)
    ))
}

async fn unknown(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!(
        "no endpoint {}; see the endpoint table in `codeb_api`",
        codeb_health::one_line(uri.path(), 80)
    ))
}

/// The tasks the control plane runs in the background (the job runner).
pub fn spawn(api: Arc<Api>, shutdown: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(domain::restore_loop(api.clone(), shutdown.clone()));
    tokio::spawn(jobs::run_queue(api, shutdown))
}
