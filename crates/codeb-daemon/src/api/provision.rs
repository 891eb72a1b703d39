//! Provisioning: `POST /api/v1/projects/{name}/init` (`we workflow init`) and
//! `POST /api/v1/projects/{name}/remove` (`we project remove`).
//!
//! Init registers the project, allocates its production and staging ports in the manifest
//! (the manifest library's allocator and lock), creates on the storage server
//! (`codeb_provision`) a PostgreSQL role and database and a Redis ACL user for each of
//! production and staging (staging's role owns only staging's database, its user reaches only
//! `<project>:staging:*`), and writes the server-side env files (0600, atomically) that the
//! deploy engine reads.
//!
//! All or nothing: a failure the daemon sees undoes what that run created ([`Undo`]), so a
//! first init that fails leaves nothing. Against a crash, by completion: before changing
//! anything the plan is recorded in
//! `api_provision` (state `provisioning`, the Redis DB index claimed by a UNIQUE column);
//! every step is create-if-absent and recognises what is codeb's (PostgreSQL objects by the
//! `codeb:<project>` comment, a database owned by codeb's role as an interrupted creation, the
//! Redis user by the recorded plan), so running init again after any interruption completes
//! the project, and `we ssot validate` names a project whose init did not finish. Secrets
//! live in `<env_dir>/<project>.secrets` (0600) and are written before any role gets them; a
//! re-run rotates nothing (the SHA-256 of what was set on each role and ACL user is
//! recorded) unless `rotate_secrets`, which rotates both environments'. A project provisioned
//! before staging had its own role and user gets them on a re-run (staging's database and its
//! contents are moved to staging's role; production is not changed).

use std::collections::BTreeMap;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use codeb_api::{
    Action, InitReport, InitRequest, InitStep, ProjectEnvironment, ProjectSpec, RemoveReport,
    RemoveRequest, ValidateProblem, codes,
};
use codeb_core::{Environment, ProjectName};
use codeb_provision::pg::Pg;
use codeb_provision::redis::Redis;
use codeb_provision::{Names, marker};
use codeb_secret::Secret;
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::db::{self, DbError};
use super::{Api, ApiError, Caller, parse_body, project_name};
use crate::store::now_ms;

/// `[api.provision]`: the storage server and where env files go.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvisionConfig {
    /// A file (mode 0600, owned by the daemon's user) holding the PostgreSQL admin URL,
    /// `postgresql://ADMIN:PASSWORD@HOST:5432/postgres`. Without it `--database` is refused.
    #[serde(default)]
    pub postgres_admin_url_file: Option<PathBuf>,
    /// The host apps reach PostgreSQL at, in the generated `DATABASE_URL` [default: the
    /// admin URL's host].
    #[serde(default)]
    pub storage_host: Option<String>,
    /// The port in the generated `DATABASE_URL` [default: the admin URL's port].
    #[serde(default)]
    pub postgres_port: Option<u16>,
    /// A file (0600) holding the Redis admin URL, `redis://default:PASSWORD@HOST:6379`.
    #[serde(default)]
    pub redis_admin_url_file: Option<PathBuf>,
    /// The host in the generated `REDIS_URL` [default: the admin URL's host].
    #[serde(default)]
    pub redis_host: Option<String>,
    #[serde(default)]
    pub redis_port: Option<u16>,
    /// `CENTRIFUGO_URL` of every project (the websocket endpoint apps' clients use).
    #[serde(default = "default_centrifugo_url")]
    pub centrifugo_url: String,
    /// `CENTRIFUGO_API_URL` (the server API apps publish through).
    #[serde(default = "default_centrifugo_api_url")]
    pub centrifugo_api_url: String,
    /// Where the server-side env files (`<project>-<env>.env`) and secrets are written.
    #[serde(default = "default_env_dir")]
    pub env_dir: PathBuf,
    /// Where `project remove` writes the final dumps.
    #[serde(default = "default_backup_dir")]
    pub backup_dir: PathBuf,
    /// The `pg_dump` to run for the final dump.
    #[serde(default = "default_pg_dump")]
    pub pg_dump: String,
    /// The image registry of generated image names (`ghcr.io/<owner>/<repo>`).
    #[serde(default = "default_registry")]
    pub image_registry: String,
}

fn default_centrifugo_url() -> String {
    "ws://127.0.0.1:8000/connection/websocket".into()
}
fn default_centrifugo_api_url() -> String {
    "http://127.0.0.1:8000/api".into()
}
fn default_env_dir() -> PathBuf {
    "/etc/codeb/env".into()
}
fn default_backup_dir() -> PathBuf {
    "/var/lib/codeb/backups".into()
}
fn default_pg_dump() -> String {
    "pg_dump".into()
}
fn default_registry() -> String {
    "ghcr.io".into()
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS api_provision (
    project     TEXT PRIMARY KEY,
    state       TEXT NOT NULL CHECK (state IN ('provisioning', 'done', 'removing')),
    plan        TEXT NOT NULL,
    redis_db    INTEGER UNIQUE CHECK (redis_db BETWEEN 0 AND 15),
    pg_secret   TEXT,
    redis_secret TEXT,
    staging_pg_secret TEXT,
    staging_redis_secret TEXT,
    created_ms  INTEGER NOT NULL,
    updated_ms  INTEGER NOT NULL
);
";

/// Redis DB indexes a project can hold.
pub const REDIS_DBS: u8 = 16;

/// The recorded plan of a project's provisioning.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub kind: String,
    pub database: bool,
    pub redis: bool,
    pub redis_prefix: bool,
}

/// One `api_provision` row.
#[derive(Debug, Clone)]
pub struct Row {
    pub project: String,
    pub state: String,
    pub plan: Plan,
    pub redis_db: Option<u8>,
    /// SHA-256 of the password last set on the role / the ACL user.
    pub pg_secret: Option<String>,
    pub redis_secret: Option<String>,
    /// The same for staging's role and ACL user.
    pub staging_pg_secret: Option<String>,
    pub staging_redis_secret: Option<String>,
}

fn schema(c: &Connection) -> Result<(), DbError> {
    c.execute_batch(SCHEMA)?;
    // A store made before staging had a role and ACL user of its own.
    let has = c
        .prepare(
            "SELECT 1 FROM pragma_table_info('api_provision') WHERE name = 'staging_pg_secret'",
        )?
        .exists([])?;
    if !has {
        c.execute_batch(
            "ALTER TABLE api_provision ADD COLUMN staging_pg_secret TEXT;
             ALTER TABLE api_provision ADD COLUMN staging_redis_secret TEXT;",
        )?;
    }
    Ok(())
}

fn row(c: &Connection, project: &str) -> Result<Option<Row>, DbError> {
    schema(c)?;
    let r = c
        .query_row(
            "SELECT project, state, plan, redis_db, pg_secret, redis_secret, staging_pg_secret, staging_redis_secret FROM api_provision WHERE project = ?1",
            [project],
            |r| {
                let plan: String = r.get(2)?;
                let db: Option<i64> = r.get(3)?;
                Ok((
                    Row {
                        project: r.get(0)?,
                        state: r.get(1)?,
                        plan: Plan {
                            kind: String::new(),
                            database: false,
                            redis: false,
                            redis_prefix: false,
                        },
                        redis_db: db.and_then(|d| u8::try_from(d).ok()),
                        pg_secret: r.get(4)?,
                        redis_secret: r.get(5)?,
                        staging_pg_secret: r.get(6)?,
                        staging_redis_secret: r.get(7)?,
                    },
                    plan,
                ))
            },
        )
        .optional()?;
    match r {
        None => Ok(None),
        Some((mut row, plan)) => {
            row.plan = serde_json::from_str(&plan)?;
            Ok(Some(row))
        }
    }
}

fn rows(c: &Connection) -> Result<Vec<Row>, DbError> {
    schema(c)?;
    let names: Vec<String> = c
        .prepare("SELECT project FROM api_provision ORDER BY project")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut out = Vec::new();
    for n in names {
        if let Some(r) = row(c, &n)? {
            out.push(r);
        }
    }
    Ok(out)
}

/// Which Redis DB indexes are held, by whom.
fn held_dbs(c: &Connection) -> Result<BTreeMap<u8, String>, DbError> {
    Ok(rows(c)?
        .into_iter()
        .filter_map(|r| r.redis_db.map(|d| (d, r.project)))
        .collect())
}

fn set_secret_hash(c: &Connection, project: &str, column: &str, hash: &str) -> Result<(), DbError> {
    let sql = match column {
        "pg" => "UPDATE api_provision SET pg_secret = ?2, updated_ms = ?3 WHERE project = ?1",
        "staging_pg" => {
            "UPDATE api_provision SET staging_pg_secret = ?2, updated_ms = ?3 WHERE project = ?1"
        }
        "staging_redis" => {
            "UPDATE api_provision SET staging_redis_secret = ?2, updated_ms = ?3 WHERE project = ?1"
        }
        _ => "UPDATE api_provision SET redis_secret = ?2, updated_ms = ?3 WHERE project = ?1",
    };
    c.execute(sql, params![project, hash, now_ms()])?;
    Ok(())
}

fn set_state(c: &Connection, project: &str, state: &str) -> Result<(), DbError> {
    c.execute(
        "UPDATE api_provision SET state = ?2, updated_ms = ?3 WHERE project = ?1",
        params![project, state, now_ms()],
    )?;
    Ok(())
}

fn sha256_hex(s: &str) -> String {
    codeb_provision::redis::password_hash(&Secret::new(s))
}

// ---------------------------------------------------------------------------------------
// Secrets and env files

/// The generated secrets of one project, kept in `<env_dir>/<project>.secrets` (0600).
/// `pg_password`/`redis_password` are production's role's and ACL user's, the `staging_`
/// ones staging's (empty in a file written before staging had its own).
#[derive(Clone, Serialize, Deserialize)]
struct Secrets {
    pg_password: String,
    redis_password: String,
    centrifugo_api_key: String,
    centrifugo_secret: String,
    #[serde(default)]
    staging_pg_password: String,
    #[serde(default)]
    staging_redis_password: String,
}

fn new_secret() -> String {
    codeb_provision::generate().expose().to_owned()
}

impl Secrets {
    fn generate() -> Secrets {
        Secrets {
            pg_password: new_secret(),
            redis_password: new_secret(),
            centrifugo_api_key: new_secret(),
            centrifugo_secret: new_secret(),
            staging_pg_password: new_secret(),
            staging_redis_password: new_secret(),
        }
    }

    /// Generates what a file of an older codeb lacks (staging's passwords); true if any.
    fn complete(&mut self) -> bool {
        let mut changed = false;
        for v in [
            &mut self.staging_pg_password,
            &mut self.staging_redis_password,
        ] {
            if v.is_empty() {
                *v = new_secret();
                changed = true;
            }
        }
        changed
    }

    /// The PostgreSQL and Redis passwords of production (`staging == false`) or staging.
    fn of(&self, staging: bool) -> (&str, &str) {
        if staging {
            (&self.staging_pg_password, &self.staging_redis_password)
        } else {
            (&self.pg_password, &self.redis_password)
        }
    }

    fn values(&self) -> Vec<&str> {
        [
            self.pg_password.as_str(),
            &self.redis_password,
            &self.centrifugo_api_key,
            &self.centrifugo_secret,
            &self.staging_pg_password,
            &self.staging_redis_password,
        ]
        .into_iter()
        .filter(|v| !v.is_empty())
        .collect()
    }
}

fn secrets_path(cfg: &ProvisionConfig, project: &str) -> PathBuf {
    cfg.env_dir.join(format!("{project}.secrets"))
}

/// The env file the deploy engine reads for `project`'s `env`.
pub fn env_file_path(cfg: &ProvisionConfig, project: &str, env: &str) -> PathBuf {
    cfg.env_dir.join(format!("{project}-{env}.env"))
}

fn read_secrets(path: &FsPath) -> Result<Option<Secrets>, String> {
    match std::fs::read_to_string(path) {
        Ok(t) => serde_json::from_str(&t)
            .map(Some)
            .map_err(|e| format!("{} is not codeb's secrets file: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Writes `text` to `path` atomically with mode 0600 (the directory 0700 when created).
fn write_private(path: &FsPath, text: &str) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let dir = path.parent().unwrap_or(FsPath::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    codeb_host::atomic::write(path, text.as_bytes(), 0o600)
        .and_then(|()| std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)))
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::StorageFull {
                format!(
                    "cannot write {}: {e} (ENOSPC: the filesystem of {} is full; free space on it)",
                    path.display(),
                    dir.display()
                )
            } else {
                format!("cannot write {}: {e}", path.display())
            }
        })
}

/// The one place a secret is read from a file codeb's config names: mode must keep others out.
fn read_secret_file(what: &str, path: &FsPath) -> Result<Secret, ApiError> {
    use std::os::unix::fs::PermissionsExt;
    let unprocessable =
        |m: String| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, codes::UNPROCESSABLE, m);
    let meta = std::fs::metadata(path)
        .map_err(|e| unprocessable(format!("[api.provision] {what} {}: {e}", path.display())))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(unprocessable(format!(
            "[api.provision] {what} {} has mode {mode:04o}: others could read the admin password; run `chmod 600 {}`",
            path.display(),
            path.display()
        )));
    }
    let t = std::fs::read_to_string(path)
        .map_err(|e| unprocessable(format!("[api.provision] {what} {}: {e}", path.display())))?;
    let t = t.trim();
    if t.is_empty() {
        return Err(unprocessable(format!(
            "[api.provision] {what} {} is empty: put the admin URL in it",
            path.display()
        )));
    }
    Ok(Secret::new(t))
}

/// Where apps reach PostgreSQL and Redis, from the config and the admin URLs.
struct Endpoints {
    pg: Option<(String, u16)>,
    redis: Option<(String, u16)>,
}

fn split_target(t: &str, default_port: u16) -> (String, u16) {
    match t.rsplit_once(':') {
        Some((h, p)) => (h.to_owned(), p.parse().unwrap_or(default_port)),
        None => (t.to_owned(), default_port),
    }
}

fn endpoints(
    cfg: &ProvisionConfig,
    pg_url: Option<&Secret>,
    redis_url: Option<&Secret>,
) -> Endpoints {
    Endpoints {
        pg: pg_url.map(|u| {
            let (h, p) = split_target(&codeb_provision::pg::url_target(u.expose()), 5432);
            (
                cfg.storage_host.clone().unwrap_or(h),
                cfg.postgres_port.unwrap_or(p),
            )
        }),
        redis: redis_url.map(|u| {
            let (h, p) = split_target(&codeb_provision::redis::url_target(u.expose()), 6379);
            (
                cfg.redis_host.clone().unwrap_or(h),
                cfg.redis_port.unwrap_or(p),
            )
        }),
    }
}

/// The codeb-managed keys of one environment's env file, in the manual's order.
#[allow(clippy::too_many_arguments)]
fn env_values(
    cfg: &ProvisionConfig,
    names: &Names,
    env: Environment,
    plan: &Plan,
    container_port: u16,
    redis_db: Option<u8>,
    ep: &Endpoints,
    s: &Secrets,
) -> Vec<(String, String)> {
    let staging = env == Environment::Staging;
    let en = names.env(staging);
    let (pg_pw, redis_pw) = s.of(staging);
    let mut v = vec![
        ("NODE_ENV".to_owned(), "production".to_owned()),
        ("PORT".to_owned(), container_port.to_string()),
    ];
    if plan.database
        && let Some((h, p)) = &ep.pg
    {
        v.push((
            "DATABASE_URL".into(),
            format!(
                "postgresql://{}:{pg_pw}@{h}:{p}/{}?schema=public",
                en.role, en.db
            ),
        ));
    }
    if plan.redis
        && let Some((h, p)) = &ep.redis
    {
        v.push((
            "REDIS_URL".into(),
            format!(
                "redis://{}:{redis_pw}@{h}:{p}/{}",
                en.redis_user,
                redis_db.unwrap_or(0)
            ),
        ));
        v.push(("REDIS_PREFIX".into(), en.redis_prefix.to_owned()));
    }
    v.push(("CENTRIFUGO_URL".into(), cfg.centrifugo_url.clone()));
    v.push(("CENTRIFUGO_API_URL".into(), cfg.centrifugo_api_url.clone()));
    v.push(("CENTRIFUGO_API_KEY".into(), s.centrifugo_api_key.clone()));
    v.push(("CENTRIFUGO_SECRET".into(), s.centrifugo_secret.clone()));
    v
}

fn env_text(values: &[(String, String)]) -> String {
    let mut t = String::from("# Written by codeb (we workflow init); codeb updates these keys.\n");
    for (k, v) in values {
        t.push_str(&format!("{k}={v}\n"));
    }
    t
}

/// The default container port and health path of a project type.
fn type_defaults(kind: &str) -> (u16, &'static str) {
    match kind {
        "nextjs" | "node" => (3000, "/api/health"),
        "static" => (8080, "/health"),
        _ => (8080, "/health"),
    }
}

// ---------------------------------------------------------------------------------------
// Errors

fn unprocessable(m: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, codes::UNPROCESSABLE, m)
}

fn failed_step(step: &str, e: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        codes::INTERNAL,
        format!(
            "{step} failed: {e}. What was done so far is recorded; run the same command again to complete it (`we ssot validate` lists unfinished projects)"
        ),
    )
}

/// A failed init step; init adds what became of the run (undone, or recorded to complete).
fn init_failed(step: &str, e: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        codes::INTERNAL,
        format!("{step} failed: {e}"),
    )
}

fn step(step: &str, target: impl Into<String>, state: &str) -> InitStep {
    InitStep {
        step: step.to_owned(),
        target: target.into(),
        state: state.to_owned(),
    }
}

fn config(api: &Api) -> Result<&ProvisionConfig, ApiError> {
    api.cfg.provision.as_ref().ok_or_else(|| {
        unprocessable(
            "provisioning is not configured on this server: add [api.provision] to the daemon's config (see templates/systemd/daemon.toml)",
        )
    })
}

fn environments(kind: &str) -> Vec<Environment> {
    let _ = kind;
    vec![Environment::Production, Environment::Staging]
}

// ---------------------------------------------------------------------------------------
// Init

/// What is found on the storage server before anything changes.
#[derive(Default)]
struct Found {
    roles: BTreeMap<String, Option<codeb_provision::pg::RoleFacts>>,
    dbs: BTreeMap<String, Option<codeb_provision::pg::DbFacts>>,
    redis_users: BTreeMap<String, Option<codeb_provision::redis::UserFacts>>,
}

impl Found {
    fn role(&self, name: &str) -> Option<&codeb_provision::pg::RoleFacts> {
        self.roles.get(name).and_then(Option::as_ref)
    }
    fn redis_user(&self, name: &str) -> Option<&codeb_provision::redis::UserFacts> {
        self.redis_users.get(name).and_then(Option::as_ref)
    }
}

pub async fn init(
    State(api): State<Arc<Api>>,
    h: HeaderMap,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<InitReport>, ApiError> {
    let project = project_name(&name)?;
    let caller = api.authorize(&h, Action::ProjectInit, Some(&name)).await?;
    let req: InitRequest = parse_body(&body)?;
    let params = serde_json::to_value(&req).unwrap_or_default();
    let target = format!("project:{name}");
    let r = init_inner(&api, &project, &req).await;
    if !req.dry_run {
        let result = match &r {
            Ok(rep) if rep.changed() => "ok".to_owned(),
            Ok(_) => "ok: nothing to change".to_owned(),
            Err(e) => format!("failed: {}", e.message),
        };
        audit(
            &api,
            &caller,
            Action::ProjectInit,
            &target,
            &name,
            &params,
            &result,
        )
        .await;
    }
    r.map(Json)
}

async fn audit(
    api: &Api,
    caller: &Caller,
    action: Action,
    target: &str,
    project: &str,
    params: &serde_json::Value,
    result: &str,
) {
    api.audit(caller, action, target, Some(project), params, result)
        .await;
}

async fn init_inner(
    api: &Api,
    project: &ProjectName,
    req: &InitRequest,
) -> Result<InitReport, ApiError> {
    let cfg = config(api)?.clone();
    let name = project.as_str().to_owned();
    let names = Names::new(project)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, codes::INVALID_NAME, e.to_string()))?;
    // The type must be one the workflow generator knows.
    let set = codeb_workflow_gen::TemplateSet::embedded().map_err(ApiError::internal)?;
    if set.type_spec(&req.kind).is_none() {
        let known: Vec<&str> = set.types().map(|(k, _)| k).collect();
        return Err(ApiError::bad(format!(
            "type {:?} is not one the workflow generator knows; use one of: {}",
            codeb_health::one_line(&req.kind, 40),
            known.join(", ")
        )));
    }
    if req.redis_prefix && !req.redis {
        return Err(ApiError::bad("--redis-prefix needs --redis"));
    }
    let (default_port, default_health) = type_defaults(&req.kind);
    let container_port = req.container_port.unwrap_or(default_port);
    if container_port == 0 {
        return Err(ApiError::bad("container_port must be 1-65535"));
    }
    let health_path = req
        .health_path
        .clone()
        .unwrap_or_else(|| default_health.to_owned());
    let plan = Plan {
        kind: req.kind.clone(),
        database: req.database,
        redis: req.redis,
        redis_prefix: req.redis_prefix,
    };
    let pg_url = if req.database {
        Some(read_secret_file(
            "postgres_admin_url_file",
            cfg.postgres_admin_url_file.as_deref().ok_or_else(|| {
                unprocessable("--database needs [api.provision] postgres_admin_url_file in the daemon's config")
            })?,
        )?)
    } else {
        None
    };
    let redis_url = if req.redis {
        Some(read_secret_file(
            "redis_admin_url_file",
            cfg.redis_admin_url_file.as_deref().ok_or_else(|| {
                unprocessable(
                    "--redis needs [api.provision] redis_admin_url_file in the daemon's config",
                )
            })?,
        )?)
    } else {
        None
    };
    let n = name.clone();
    let existing = api
        .db
        .run(move |c| {
            Ok((
                row(c, &n)?,
                held_dbs(c)?,
                db::project(c, &n)?.map(|r| r.spec),
            ))
        })
        .await
        .map_err(ApiError::internal)?;
    let (prow, held, registered) = existing;
    if let Some(r) = &prow
        && r.state == "removing"
    {
        return Err(ApiError::conflict(format!(
            "project `{name}` is being removed; finish with `we project remove {name} --yes` first"
        )));
    }
    // A re-run may add to what the project has, never take away silently.
    let plan = match &prow {
        Some(r) => Plan {
            kind: plan.kind,
            database: plan.database || r.plan.database,
            redis: plan.redis || r.plan.redis,
            redis_prefix: if r.plan.redis {
                r.plan.redis_prefix
            } else {
                plan.redis_prefix
            },
        },
        None => plan,
    };
    if (plan.database && pg_url.is_none()) || (plan.redis && redis_url.is_none()) {
        return Err(ApiError::bad(format!(
            "project `{name}` was provisioned with{}{}: pass the same flags again",
            if plan.database { " --database" } else { "" },
            if plan.redis { " --redis" } else { "" }
        )));
    }
    let claimed = prow.is_some();
    let mut found = Found::default();
    let marker = marker(&name);
    // Inspect: refuse what is not codeb's before anything changes.
    let pg = match &pg_url {
        Some(u) => Some(
            Pg::connect(u)
                .await
                .map_err(|e| unprocessable(e.to_string()))?,
        ),
        None => None,
    };
    if let Some(pg) = &pg {
        for staging in [false, true] {
            let rn = names.env(staging).role;
            let role = pg
                .role(rn)
                .await
                .map_err(|e| unprocessable(e.to_string()))?;
            if let Some(r) = &role
                && r.comment.as_deref() != Some(marker.as_str())
            {
                let whose = match r.comment.as_deref().and_then(|c| c.strip_prefix("codeb:")) {
                    Some(other) => format!(" (it is codeb's for the project `{other}`)"),
                    None => format!(" (it lacks the comment `{marker}`)"),
                };
                return Err(ApiError::conflict(format!(
                    "PostgreSQL role `{rn}` exists and is not codeb's for `{name}`{whose}; nothing was changed: drop or rename that role, or choose another project name"
                )));
            }
            found.roles.insert(rn.to_owned(), role);
        }
        for staging in [false, true] {
            let en = names.env(staging);
            let dbn = en.db;
            let d = pg
                .database(dbn)
                .await
                .map_err(|e| unprocessable(e.to_string()))?;
            if let Some(f) = &d {
                let has_role = |r: &str| found.roles.get(r).is_some_and(Option::is_some);
                // Staging's database of a project provisioned before staging had a role
                // of its own is owned by production's role: init moves it.
                let owner_ok = f.owner == en.role || (staging && f.owner == names.role);
                let ours = match f.comment.as_deref() {
                    Some(c) => c == marker && owner_ok,
                    // An interrupted creation: owned by codeb's marked role of a recorded plan.
                    None => owner_ok && has_role(&f.owner) && claimed,
                };
                if !ours {
                    let why = match f.comment.as_deref() {
                        Some(c) if c == marker => format!(
                            "it has codeb's comment `{marker}` but is owned by `{}`, not `{}`",
                            f.owner, en.role
                        ),
                        Some(c) if c.starts_with("codeb:") => format!(
                            "it is codeb's for another project (comment `{c}`, owner `{}`)",
                            f.owner
                        ),
                        _ => format!("owner `{}`, no comment `{marker}`", f.owner),
                    };
                    return Err(ApiError::conflict(format!(
                        "PostgreSQL database `{dbn}` exists and is not codeb's for `{name}` ({why}); nothing was changed: drop or rename that database, or choose another project name"
                    )));
                }
            }
            found.dbs.insert(dbn.to_owned(), d);
        }
    }
    let mut redis = match &redis_url {
        Some(u) => Some(
            Redis::connect(u)
                .await
                .map_err(|e| unprocessable(e.to_string()))?,
        ),
        None => None,
    };
    if let Some(r) = redis.as_mut() {
        r.check_acl()
            .await
            .map_err(|e| unprocessable(e.to_string()))?;
        let ours_recorded = prow.as_ref().is_some_and(|p| p.plan.redis);
        for staging in [false, true] {
            let un = names.env(staging).redis_user;
            let u = r.user(un).await.map_err(|e| unprocessable(e.to_string()))?;
            if u.is_some() && !ours_recorded {
                return Err(ApiError::conflict(format!(
                    "the Redis ACL user `{un}` exists and codeb did not create it; nothing was changed: delete it (`ACL DELUSER {un}`) or choose another project name"
                )));
            }
            found.redis_users.insert(un.to_owned(), u);
        }
    }
    // The Redis DB index: the one held, or the lowest free one.
    let redis_db = if plan.redis && !plan.redis_prefix {
        match prow.as_ref().and_then(|r| r.redis_db) {
            Some(d) => Some(d),
            None => match (0..REDIS_DBS).find(|d| !held.contains_key(d)) {
                Some(d) => Some(d),
                None => {
                    return Err(ApiError::conflict(format!(
                        "all {REDIS_DBS} Redis DB indexes (0-15) are held by projects ({}); nothing was changed: use --redis-prefix to share DB 0 under the key prefix `{}`",
                        held.values().cloned().collect::<Vec<_>>().join(", "),
                        names.redis_prefix
                    )));
                }
            },
        }
    } else {
        None
    };
    let envs = environments(&req.kind);
    // Ports already assigned.
    let doc = match api.loc.manifest.load() {
        Ok(d) => Some(d),
        Err(codeb_host::StoreError::NotFound(_)) => None,
        Err(e) => return Err(unprocessable(e.to_string())),
    };
    let mut ports = BTreeMap::new();
    for e in &envs {
        if let Some(a) = doc
            .as_ref()
            .and_then(|d| d.manifest.assignment(&super::registry::target(project, *e)))
        {
            ports.insert(e.as_str().to_owned(), a.port);
        }
    }
    let old_secrets = read_secrets(&secrets_path(&cfg, &name)).map_err(unprocessable)?;
    let repository = req.repository.clone().unwrap_or_default();
    let mut warnings = Vec::new();
    if repository.is_empty() {
        warnings.push(format!(
            "the repository of `{name}` is unknown (not a git repository with a GitHub remote): the registry has none; set it later with `we` or PUT /api/v1/projects/{name}"
        ));
    }
    let spec = ProjectSpec {
        name: name.clone(),
        kind: req.kind.clone(),
        repository: repository.clone(),
        image: image_of(&cfg, &repository, &name),
        container_port,
        health_path,
        environments: envs
            .iter()
            .map(|e| ProjectEnvironment {
                name: e.as_str().to_owned(),
                env_file: Some(env_file_path(&cfg, &name, e.as_str()).display().to_string()),
                branch: None,
            })
            .collect(),
        owners: registered
            .as_ref()
            .map(|s| s.owners.clone())
            .unwrap_or_default(),
        kubernetes: registered.as_ref().and_then(|s| s.kubernetes.clone()),
    };

    if req.dry_run {
        let mut steps = Vec::new();
        let st = |exists: bool| if exists { "exists" } else { "create" };
        steps.push(step(
            "registry",
            format!("project:{name}"),
            st(registered.as_ref() == Some(&spec)),
        ));
        for e in &envs {
            steps.push(step(
                &format!("port:{e}"),
                ports
                    .get(e.as_str())
                    .map_or_else(|| "next free".to_owned(), u16::to_string),
                st(ports.contains_key(e.as_str())),
            ));
        }
        steps.push(step(
            "secrets",
            secrets_path(&cfg, &name).display().to_string(),
            if req.rotate_secrets {
                "update"
            } else {
                st(old_secrets.is_some())
            },
        ));
        if plan.database {
            for staging in [false, true] {
                let en = names.env(staging);
                steps.push(step(
                    "postgres:role",
                    en.role,
                    st(found.role(en.role).is_some() && !req.rotate_secrets),
                ));
            }
            for staging in [false, true] {
                let en = names.env(staging);
                let f = found.dbs.get(en.db).and_then(Option::as_ref);
                steps.push(step(
                    "postgres:database",
                    en.db,
                    match f {
                        Some(f) if f.owner != en.role => "update",
                        Some(_) => "exists",
                        None => "create",
                    },
                ));
            }
        }
        if plan.redis {
            for staging in [false, true] {
                let un = names.env(staging).redis_user;
                steps.push(step(
                    "redis:user",
                    un,
                    st(found.redis_user(un).is_some() && !req.rotate_secrets),
                ));
            }
            if let Some(d) = redis_db {
                steps.push(step(
                    "redis:index",
                    d.to_string(),
                    st(prow.as_ref().and_then(|r| r.redis_db).is_some()),
                ));
            }
        }
        for e in &envs {
            steps.push(step(
                &format!("env-file:{e}"),
                env_file_path(&cfg, &name, e.as_str()).display().to_string(),
                st(old_secrets.is_some() && !req.rotate_secrets),
            ));
        }
        return Ok(InitReport {
            project: name,
            dry_run: true,
            steps,
            ports,
            redis_db,
            redis_prefix: plan.redis.then(|| names.redis_prefix.clone()),
            env: BTreeMap::new(),
            warnings,
        });
    }

    // Record the plan before acting (claims the Redis DB index atomically).
    let n = name.clone();
    let plan_json = serde_json::to_string(&plan).map_err(ApiError::internal)?;
    let recorded = api
        .db
        .run(move |c| {
            schema(c)?;
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let now = now_ms();
            let r = tx.execute(
                "INSERT INTO api_provision (project, state, plan, redis_db, created_ms, updated_ms)
                 VALUES (?1, 'provisioning', ?2, ?3, ?4, ?4)
                 ON CONFLICT (project) DO UPDATE SET plan = excluded.plan,
                    redis_db = excluded.redis_db, updated_ms = excluded.updated_ms,
                    state = 'provisioning'",
                params![n, plan_json, redis_db.map(i64::from), now],
            );
            match r {
                Ok(_) => {
                    tx.commit()?;
                    Ok(true)
                }
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::ConstraintViolation =>
                {
                    Ok(false)
                }
                Err(e) => Err(e.into()),
            }
        })
        .await
        .map_err(ApiError::internal)?;
    if !recorded {
        return Err(ApiError::conflict(format!(
            "Redis DB index {} was just taken by another project; run init again",
            redis_db.unwrap_or(0)
        )));
    }
    // What this run created: undone when a later step fails, so a failure the daemon sees
    // (a server refusing, disk full) leaves the project as it was before this run: nothing,
    // for a first init. A crash cannot undo; the recorded plan lets the next run complete.
    let mut undo = Undo::default();
    let applied: Result<Applied, ApiError> = async {
        let mut steps = Vec::new();

        // 1. Secrets (written before any role or user gets them).
        let spath = secrets_path(&cfg, &name);
        let secrets = match (&old_secrets, req.rotate_secrets) {
            (Some(s), false) => {
                let mut s = s.clone();
                if s.complete() {
                    // A file from before staging had its own role and user.
                    let text = serde_json::to_string(&s).map_err(ApiError::internal)?;
                    write_private(&spath, &text)
                        .map_err(|e| init_failed("writing the secrets", e))?;
                    steps.push(step("secrets", spath.display().to_string(), "updated"));
                } else {
                    steps.push(step("secrets", spath.display().to_string(), "exists"));
                }
                s
            }
            (old, _) => {
                let s = Secrets::generate();
                let text = serde_json::to_string(&s).map_err(ApiError::internal)?;
                write_private(&spath, &text).map_err(|e| init_failed("writing the secrets", e))?;
                if old.is_none() {
                    undo.secrets_file = Some(spath.clone());
                }
                steps.push(step(
                    "secrets",
                    spath.display().to_string(),
                    if old.is_some() { "updated" } else { "created" },
                ));
                s
            }
        };

        // 2. Ports (the manifest's allocator, under its lock), skipping ports in use.
        let host = if envs.iter().all(|e| ports.contains_key(e.as_str())) {
            None
        } else {
            tokio::task::spawn_blocking(|| codeb_host::HostPorts::read().ok())
                .await
                .map_err(ApiError::internal)?
                .map(Arc::new)
        };
        for e in &envs {
            let t = super::registry::target(project, *e);
            let store = api.loc.manifest.clone();
            let host = host.clone();
            let (doc, got) =
                tokio::task::spawn_blocking(move || store.allocate(&t, host.as_deref()))
                    .await
                    .map_err(ApiError::internal)?
                    .map_err(|e2| init_failed(&format!("allocating the {e} port"), e2))?;
            if got.is_some() {
                undo.ports.push(*e);
            }
            let port = got.or_else(|| {
                doc.manifest
                    .assignment(&super::registry::target(project, *e))
                    .map(|a| a.port)
            });
            if let Some(p) = port {
                ports.insert(e.as_str().to_owned(), p);
            }
            steps.push(step(
                &format!("port:{e}"),
                port.map_or_else(String::new, |p| p.to_string()),
                if got.is_some() { "created" } else { "exists" },
            ));
        }

        // 3. PostgreSQL: production's role owns only `<p>_db`, staging's only
        // `<p>_staging_db`. The SHA-256 of what was set is recorded with the final commit: a
        // crash before it makes the next run set the same password again, which is harmless.
        if let Some(pg) = &pg {
            for staging in [false, true] {
                let en = names.env(staging);
                let pw = Secret::new(secrets.of(staging).0.to_owned());
                let want = sha256_hex(pw.expose());
                let applied = prow.as_ref().and_then(|r| {
                    if staging {
                        r.staging_pg_secret.clone()
                    } else {
                        r.pg_secret.clone()
                    }
                });
                match found.role(en.role) {
                    None => {
                        pg.create_role(en.role, &pw, &marker).await.map_err(|e| {
                            init_failed(&format!("creating the PostgreSQL role {}", en.role), e)
                        })?;
                        undo.roles.push(en.role.to_owned());
                        steps.push(step("postgres:role", en.role, "created"));
                    }
                    Some(r) => {
                        let attrs_ok = r.login && !r.superuser && !r.createdb && !r.createrole;
                        if applied.as_deref() != Some(want.as_str()) || !attrs_ok {
                            pg.set_password(en.role, &pw).await.map_err(|e| {
                                init_failed(
                                    &format!(
                                        "setting the password of the PostgreSQL role {}",
                                        en.role
                                    ),
                                    e,
                                )
                            })?;
                            steps.push(step("postgres:role", en.role, "updated"));
                        } else {
                            steps.push(step("postgres:role", en.role, "exists"));
                        }
                    }
                }
                undo.hashes
                    .push((if staging { "staging_pg" } else { "pg" }, want));
            }
            for staging in [false, true] {
                let en = names.env(staging);
                let d = en.db;
                let f = found.dbs.get(d).cloned().flatten();
                let create = f.is_none();
                let mark = f
                    .as_ref()
                    .is_some_and(|f| f.comment.as_deref() != Some(marker.as_str()));
                let restrict = f.as_ref().is_some_and(|f| f.public_connect);
                // The owner it has (an existing database keeps it until it is moved below).
                let owner = f.as_ref().map_or(en.role, |f| f.owner.as_str());
                pg.ensure_database(d, owner, &marker, create, mark, restrict)
                    .await
                    .map_err(|e| init_failed(&format!("creating the database {d}"), e))?;
                if create {
                    undo.dbs.push(d.to_owned());
                }
                let mut state = if create {
                    "created"
                } else if mark || restrict {
                    "updated"
                } else {
                    "exists"
                };
                if owner != en.role {
                    // Staging's database of a project provisioned before staging had a role
                    // of its own: it and everything in it go to staging's role, in one
                    // transaction that leaves production as it was.
                    let url = pg_url
                        .as_ref()
                        .ok_or_else(|| ApiError::internal("no admin URL"))?;
                    let in_db = Pg::connect_to(url, d)
                        .await
                        .map_err(|e| init_failed(&format!("connecting to {d}"), e))?;
                    in_db
                        .move_staging_database(d, en.role, &names.db, &names.role)
                        .await
                        .map_err(|e| {
                            init_failed(&format!("giving {d} to the role {}", en.role), e)
                        })?;
                    // The role now owns a database: it is kept whatever fails later.
                    undo.roles.retain(|r| r != en.role);
                    state = "updated";
                }
                steps.push(step("postgres:database", d, state));
            }
        }

        // 4. Redis: production's user on `<project>:*`, staging's on `<project>:staging:*`.
        if let Some(r) = redis.as_mut() {
            for staging in [false, true] {
                let en = names.env(staging);
                let pw = Secret::new(secrets.of(staging).1.to_owned());
                let want = sha256_hex(pw.expose());
                let applied = prow.as_ref().and_then(|p| {
                    if staging {
                        p.staging_redis_secret.clone()
                    } else {
                        p.redis_secret.clone()
                    }
                });
                let had = found.redis_user(en.redis_user);
                let keys_ok =
                    had.is_some_and(|u| u.enabled && u.keys == format!("~{}*", en.redis_prefix));
                if !keys_ok || applied.as_deref() != Some(want.as_str()) {
                    r.set_user(en.redis_user, &pw, en.redis_prefix)
                        .await
                        .map_err(|e| {
                            init_failed(
                                &format!("creating the Redis ACL user {}", en.redis_user),
                                e,
                            )
                        })?;
                    if had.is_none() {
                        undo.redis_users.push(en.redis_user.to_owned());
                    }
                    steps.push(step(
                        "redis:user",
                        en.redis_user,
                        if had.is_some() { "updated" } else { "created" },
                    ));
                } else {
                    steps.push(step("redis:user", en.redis_user, "exists"));
                }
                undo.hashes
                    .push((if staging { "staging_redis" } else { "redis" }, want));
            }
            if let Some(d) = redis_db {
                let had = prow.as_ref().and_then(|p| p.redis_db).is_some();
                steps.push(step(
                    "redis:index",
                    d.to_string(),
                    if had { "exists" } else { "created" },
                ));
            }
        }

        // 5. Server-side env files.
        let ep = endpoints(&cfg, pg_url.as_ref(), redis_url.as_ref());
        let mut local = BTreeMap::new();
        for e in &envs {
            let values = env_values(
                &cfg,
                &names,
                *e,
                &plan,
                container_port,
                redis_db,
                &ep,
                &secrets,
            );
            let path = env_file_path(&cfg, &name, e.as_str());
            let text = env_text(&values);
            let same = std::fs::read_to_string(&path).is_ok_and(|t| t == text);
            if !same {
                let existed = path.exists();
                write_private(&path, &text)
                    .map_err(|m| init_failed(&format!("writing the {e} env file"), m))?;
                if !existed {
                    undo.env_files.push(path.clone());
                }
                steps.push(step(
                    &format!("env-file:{e}"),
                    path.display().to_string(),
                    if existed { "updated" } else { "created" },
                ));
            } else {
                steps.push(step(
                    &format!("env-file:{e}"),
                    path.display().to_string(),
                    "exists",
                ));
            }
            if *e == Environment::Production {
                local = values.into_iter().collect();
            }
        }

        // 6. The registry row, then done.
        let same = registered.as_ref() == Some(&spec);
        let s = spec.clone();
        let n = name.clone();
        let hashes = undo.hashes.clone();
        api.db
            .run(move |c| {
                let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                if !same {
                    let owners: Vec<i64> = s
                        .owners
                        .iter()
                        .filter_map(|o| db::user_by_name(&tx, o).ok().flatten().map(|u| u.id))
                        .collect();
                    db::put_project(&tx, &s, &owners, now_ms())?;
                }
                for (column, h) in &hashes {
                    set_secret_hash(&tx, &n, column, h)?;
                }
                set_state(&tx, &n, "done")?;
                tx.commit()?;
                Ok(())
            })
            .await
            .map_err(|e| init_failed("recording the project in the registry", e))?;
        steps.insert(
            0,
            step(
                "registry",
                format!("project:{name}"),
                if same {
                    "exists"
                } else if registered.is_some() {
                    "updated"
                } else {
                    "created"
                },
            ),
        );
        Ok((steps, local, secrets))
    }
    .await;
    let (steps, local, secrets) = match applied {
        Ok(v) => v,
        Err(mut e) => {
            let left = undo
                .run(api, project, pg.as_ref(), redis.as_mut(), prow.is_none())
                .await;
            e.message = match left {
                Ok(true) => format!(
                    "{}. Nothing of `{name}` was kept (what this run made is undone); fix the cause and run the same init again",
                    e.message
                ),
                Ok(false) => format!(
                    "{}. What this run made is undone, what earlier runs made is recorded; run the same init again to complete it (`we ssot validate` lists unfinished projects)",
                    e.message
                ),
                Err(u) => format!(
                    "{}. Undoing this run failed too ({u}); what was done is recorded: run the same init again to complete it, or `we project remove {name} --yes` (`we ssot validate` lists unfinished projects)",
                    e.message
                ),
            };
            return Err(e);
        }
    };
    // Never let a secret reach a warning.
    for w in &mut warnings {
        for v in secrets.values() {
            *w = w.replace(v, "***");
        }
    }
    Ok(InitReport {
        project: name,
        dry_run: false,
        steps,
        ports,
        redis_db,
        redis_prefix: plan.redis.then(|| names.redis_prefix.clone()),
        env: local,
        warnings,
    })
}

/// What the steps of an init give back: the steps, production's env values (for `.env`)
/// and the secrets (to keep them out of warnings).
type Applied = (Vec<InitStep>, BTreeMap<String, String>, Secrets);

/// What one init run created, in the order it is undone.
#[derive(Default)]
struct Undo {
    secrets_file: Option<PathBuf>,
    ports: Vec<Environment>,
    roles: Vec<String>,
    dbs: Vec<String>,
    redis_users: Vec<String>,
    env_files: Vec<PathBuf>,
    /// The SHA-256 of each password set (`api_provision` column, hash), for the final commit.
    hashes: Vec<(&'static str, String)>,
}

impl Undo {
    /// Removes what the run created; for a first init (`fresh`) also the recorded plan.
    /// `Ok(true)`: nothing of the project is left.
    async fn run(
        &self,
        api: &Api,
        project: &ProjectName,
        pg: Option<&Pg>,
        redis: Option<&mut Redis>,
        fresh: bool,
    ) -> Result<bool, String> {
        let mut failed = Vec::new();
        for f in &self.env_files {
            if let Err(e) = std::fs::remove_file(f)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                failed.push(format!("removing {}: {e}", f.display()));
            }
        }
        if let Some(r) = redis {
            for u in &self.redis_users {
                if let Err(e) = r.delete_user(u).await {
                    failed.push(format!("deleting the ACL user {u}: {e}"));
                }
            }
        }
        if let Some(pg) = pg {
            for d in &self.dbs {
                if let Err(e) = pg.drop_database(d).await {
                    failed.push(format!("dropping {d}: {e}"));
                }
            }
            for r in &self.roles {
                if let Err(e) = pg.drop_role(r).await {
                    failed.push(format!("dropping the role {r}: {e}"));
                }
            }
        }
        for e in &self.ports {
            let t = super::registry::target(project, *e);
            let store = api.loc.manifest.clone();
            match tokio::task::spawn_blocking(move || store.release(&t)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e2)) => failed.push(format!("freeing the {e} port: {e2}")),
                Err(e2) => failed.push(format!("freeing the {e} port: {e2}")),
            }
        }
        if let Some(f) = &self.secrets_file
            && let Err(e) = std::fs::remove_file(f)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            failed.push(format!("removing {}: {e}", f.display()));
        }
        if !failed.is_empty() {
            return Err(failed.join("; "));
        }
        if !fresh {
            return Ok(false);
        }
        let n = project.as_str().to_owned();
        api.db
            .run(move |c| {
                c.execute(
                    "DELETE FROM api_provision WHERE project = ?1 AND state = 'provisioning'",
                    [&n],
                )?;
                Ok(())
            })
            .await
            .map_err(|e| format!("forgetting the recorded plan: {e}"))?;
        Ok(true)
    }
}

/// `ghcr.io/<owner>/<repo>` (lowercased), or `ghcr.io/codeb/<project>` without a repository.
fn image_of(cfg: &ProvisionConfig, repository: &str, project: &str) -> String {
    let reg = cfg.image_registry.trim_end_matches('/');
    if repository.is_empty() {
        format!("{reg}/codeb/{project}")
    } else {
        format!("{reg}/{}", repository.to_ascii_lowercase())
    }
}

// ---------------------------------------------------------------------------------------
// Previews' own data

/// What previews ask of provisioning: the project's recorded plan (`api_provision`, done
/// projects only) and the storage servers of `[api.provision]` (admin URL files read at
/// each use, as init reads them).
pub struct PreviewData {
    db_path: PathBuf,
    cfg: ProvisionConfig,
}

impl PreviewData {
    pub fn new(db_path: PathBuf, cfg: ProvisionConfig) -> Self {
        Self { db_path, cfg }
    }
}

impl codeb_previews::DataSource for PreviewData {
    fn plan(&self, project: &ProjectName) -> Result<Option<codeb_previews::DataPlan>, String> {
        if !self.db_path.exists() {
            return Ok(None);
        }
        let c = Connection::open(&self.db_path).map_err(|e| e.to_string())?;
        c.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(|e| e.to_string())?;
        let Some(r) = row(&c, project.as_str()).map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        match r.state.as_str() {
            "done" => Ok(Some(codeb_previews::DataPlan {
                database: r.plan.database,
                redis: r.plan.redis,
                redis_db: r.redis_db.unwrap_or(0),
            })),
            "removing" => Ok(None),
            _ => Err(format!(
                "the init of project `{project}` has not finished, so its previews cannot get their data yet: run `we workflow init {project}` again"
            )),
        }
    }

    fn stores(&self) -> Result<codeb_previews::Stores, String> {
        let pg_url = match &self.cfg.postgres_admin_url_file {
            Some(f) => Some(read_secret_file("postgres_admin_url_file", f).map_err(|e| e.message)?),
            None => None,
        };
        let redis_url = match &self.cfg.redis_admin_url_file {
            Some(f) => Some(read_secret_file("redis_admin_url_file", f).map_err(|e| e.message)?),
            None => None,
        };
        let ep = endpoints(&self.cfg, pg_url.as_ref(), redis_url.as_ref());
        Ok(codeb_previews::Stores {
            pg: pg_url
                .zip(ep.pg)
                .map(|(admin, (host, port))| codeb_previews::PgAccess {
                    admin,
                    host,
                    port,
                    pg_dump: self.cfg.pg_dump.clone(),
                }),
            redis: redis_url
                .zip(ep.redis)
                .map(|(admin, (host, port))| codeb_previews::RedisAccess { admin, host, port }),
        })
    }

    fn env_dir(&self) -> PathBuf {
        self.cfg.env_dir.clone()
    }
}

// ---------------------------------------------------------------------------------------
// Validate

/// Problems `we ssot validate` reports: projects whose init did not finish, with the pieces
/// that exist of them.
pub async fn problems(api: &Api) -> Result<Vec<ValidateProblem>, ApiError> {
    let all = api.db.run(|c| rows(c)).await.map_err(ApiError::internal)?;
    let mut out = Vec::new();
    // One connection each, opened when a project needs it (None inside: unreachable).
    let mut pg: Option<Option<Pg>> = None;
    let mut rc: Option<Option<Redis>> = None;
    for r in &all {
        let Ok(p) = ProjectName::new(&r.project) else {
            continue;
        };
        let Ok(names) = Names::new(&p) else { continue };
        let cfg = api.cfg.provision.as_ref();
        if r.plan.database && pg.is_none() {
            let mut c = None;
            if let Some(f) = cfg.and_then(|c| c.postgres_admin_url_file.as_ref())
                && let Ok(u) = read_secret_file("postgres_admin_url_file", f)
            {
                c = Pg::connect(&u).await.ok();
            }
            pg = Some(c);
        }
        if r.plan.redis && rc.is_none() {
            let mut c = None;
            if let Some(f) = cfg.and_then(|c| c.redis_admin_url_file.as_ref())
                && let Ok(u) = read_secret_file("redis_admin_url_file", f)
            {
                c = Redis::connect(&u).await.ok();
            }
            rc = Some(c);
        }
        let pgc = pg
            .as_ref()
            .and_then(Option::as_ref)
            .filter(|_| r.plan.database);
        let mut rcc = rc
            .as_mut()
            .and_then(Option::as_mut)
            .filter(|_| r.plan.redis);
        if r.state == "done" {
            // A complete project whose staging lacks its own role, database or ACL user
            // (provisioned before staging had them, or changed by hand).
            let mut missing = Vec::new();
            if let Some(pg) = pgc {
                if pg.role(&names.staging_role).await.ok().flatten().is_none() {
                    missing.push(format!("no role {}", names.staging_role));
                }
                match pg.database(&names.staging_db).await.ok().flatten() {
                    None => missing.push(format!("no database {}", names.staging_db)),
                    Some(d) if d.owner != names.staging_role => missing.push(format!(
                        "{} is owned by {}, not {}",
                        names.staging_db, d.owner, names.staging_role
                    )),
                    Some(_) => {}
                }
            }
            if let Some(c) = rcc.as_mut()
                && c.user(&names.staging_redis_user)
                    .await
                    .ok()
                    .flatten()
                    .is_none()
            {
                missing.push(format!("no ACL user {}", names.staging_redis_user));
            }
            if !missing.is_empty() {
                out.push(ValidateProblem {
                    project: r.project.clone(),
                    field: "provisioning".into(),
                    message: format!(
                        "staging of `{}` does not have its own data: {}; run `we workflow init {}` again with the same flags to make them (production is not changed)",
                        r.project,
                        missing.join(", "),
                        r.project
                    ),
                    fix: None,
                    fixed: false,
                });
            }
            continue;
        }
        let mut pieces = Vec::new();
        if let Some(pg) = pgc {
            for role in [&names.role, &names.staging_role] {
                if pg.role(role).await.ok().flatten().is_some() {
                    pieces.push(format!("role {role}"));
                }
            }
            for d in [&names.db, &names.staging_db] {
                if pg.database(d).await.ok().flatten().is_some() {
                    pieces.push(format!("database {d}"));
                }
            }
        }
        if let Some(c) = rcc.as_mut() {
            for u in [&names.redis_user, &names.staging_redis_user] {
                if c.user(u).await.ok().flatten().is_some() {
                    pieces.push(format!("ACL user {u}"));
                }
            }
        }
        if let Some(d) = r.redis_db {
            pieces.push(format!("Redis DB index {d}"));
        }
        if let Ok(doc) = api.loc.manifest.load() {
            for e in [Environment::Production, Environment::Staging] {
                if let Some(a) = doc.manifest.assignment(&super::registry::target(&p, e)) {
                    pieces.push(format!("{e} port {}", a.port));
                }
            }
        }
        let what = if r.state == "removing" {
            "removal"
        } else {
            "init"
        };
        out.push(ValidateProblem {
            project: r.project.clone(),
            field: "provisioning".into(),
            message: format!(
                "the {what} of `{}` did not finish; half-made: {}; run `we {}` again to complete it",
                r.project,
                if pieces.is_empty() { "nothing on the servers yet".to_owned() } else { pieces.join(", ") },
                if r.state == "removing" {
                    format!("project remove {} --yes", r.project)
                } else {
                    format!("workflow init {}", r.project)
                }
            ),
            fix: None,
            fixed: false,
        });
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Remove

pub async fn remove(
    State(api): State<Arc<Api>>,
    h: HeaderMap,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<RemoveReport>, ApiError> {
    let project = project_name(&name)?;
    let caller = api
        .authorize(&h, Action::ProjectRemove, Some(&name))
        .await?;
    let req: RemoveRequest = if body.is_empty() {
        RemoveRequest { yes: false }
    } else {
        parse_body(&body)?
    };
    let target = format!("project:{name}");
    let params = json!({"yes": req.yes});
    let r = remove_inner(&api, &project, &req).await;
    if req.yes || r.is_ok() {
        let result = match &r {
            Ok(_) => "ok".to_owned(),
            Err(e) => format!("failed: {}", e.message),
        };
        audit(
            &api,
            &caller,
            Action::ProjectRemove,
            &target,
            &name,
            &params,
            &result,
        )
        .await;
    }
    r.map(Json)
}

async fn remove_inner(
    api: &Api,
    project: &ProjectName,
    req: &RemoveRequest,
) -> Result<RemoveReport, ApiError> {
    let name = project.as_str().to_owned();
    let n = name.clone();
    let (prow, registered) = api
        .db
        .run(move |c| Ok((row(c, &n)?, db::project(c, &n)?.is_some())))
        .await
        .map_err(ApiError::internal)?;
    if prow.is_none() && !registered {
        return Err(ApiError::not_found(format!(
            "project `{name}` is not in the registry"
        )));
    }
    if !req.yes {
        return Err(ApiError::bad(format!(
            "removing `{name}` drops its databases, role and Redis user after a final dump: pass --yes to do it"
        )));
    }
    let cfg = config(api)?.clone();
    let names = Names::new(project)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, codes::INVALID_NAME, e.to_string()))?;
    let marker = marker(&name);
    let n = name.clone();
    api.db
        .run(move |c| {
            schema(c)?;
            c.execute(
                "UPDATE api_provision SET state = 'removing', updated_ms = ?2 WHERE project = ?1",
                params![n, now_ms()],
            )?;
            Ok(())
        })
        .await
        .map_err(ApiError::internal)?;
    let mut steps = Vec::new();
    let mut dumps = Vec::new();
    let plan = prow.as_ref().map(|r| r.plan.clone());
    if plan.as_ref().is_some_and(|p| p.database) {
        let url = read_secret_file(
            "postgres_admin_url_file",
            cfg.postgres_admin_url_file.as_deref().ok_or_else(|| {
                unprocessable("[api.provision] postgres_admin_url_file is not set")
            })?,
        )?;
        let pg = Pg::connect(&url)
            .await
            .map_err(|e| unprocessable(e.to_string()))?;
        // Final dumps first; nothing is dropped unless every dump succeeded.
        let mut ours = Vec::new();
        for d in [&names.db, &names.staging_db] {
            if let Some(f) = pg
                .database(d)
                .await
                .map_err(|e| unprocessable(e.to_string()))?
            {
                if f.comment.as_deref() != Some(marker.as_str())
                    && f.owner != names.role
                    && f.owner != names.staging_role
                {
                    steps.push(step(
                        "postgres:database",
                        d.as_str(),
                        "not codeb's: left alone",
                    ));
                    continue;
                }
                let file = dump(&cfg, &url, d).await?;
                dumps.push(file.display().to_string());
                steps.push(step("dump", file.display().to_string(), "created"));
                ours.push(d.clone());
            }
        }
        for d in ours {
            pg.drop_database(&d)
                .await
                .map_err(|e| failed_step(&format!("dropping {d}"), e))?;
            steps.push(step("postgres:database", d, "dropped"));
        }
        for role in [&names.role, &names.staging_role] {
            if let Some(r) = pg
                .role(role)
                .await
                .map_err(|e| unprocessable(e.to_string()))?
                && r.comment.as_deref() == Some(marker.as_str())
            {
                pg.drop_role(role)
                    .await
                    .map_err(|e| failed_step(&format!("dropping the role {role}"), e))?;
                steps.push(step("postgres:role", role.as_str(), "dropped"));
            }
        }
    }
    if plan.as_ref().is_some_and(|p| p.redis) {
        let url = read_secret_file(
            "redis_admin_url_file",
            cfg.redis_admin_url_file
                .as_deref()
                .ok_or_else(|| unprocessable("[api.provision] redis_admin_url_file is not set"))?,
        )?;
        let mut r = Redis::connect(&url)
            .await
            .map_err(|e| unprocessable(e.to_string()))?;
        let db = prow.as_ref().and_then(|p| p.redis_db).unwrap_or(0);
        let n = r
            .delete_prefix(db, &names.redis_prefix)
            .await
            .map_err(|e| failed_step("deleting the project's Redis keys", e))?;
        steps.push(step(
            "redis:keys",
            format!("{} in DB {db}", names.redis_prefix),
            &format!("deleted {n}"),
        ));
        for u in [&names.redis_user, &names.staging_redis_user] {
            r.delete_user(u)
                .await
                .map_err(|e| failed_step(&format!("deleting the Redis ACL user {u}"), e))?;
            steps.push(step("redis:user", u.as_str(), "deleted"));
        }
    }
    for e in [Environment::Production, Environment::Staging] {
        let t = super::registry::target(project, e);
        let store = api.loc.manifest.clone();
        let freed = tokio::task::spawn_blocking(move || store.release(&t))
            .await
            .map_err(ApiError::internal)?
            .map_err(|e2| failed_step(&format!("freeing the {e} port"), e2))?;
        if freed {
            steps.push(step(&format!("port:{e}"), "", "freed"));
        }
        let f = env_file_path(&cfg, &name, e.as_str());
        if std::fs::remove_file(&f).is_ok() {
            steps.push(step(
                &format!("env-file:{e}"),
                f.display().to_string(),
                "removed",
            ));
        }
    }
    let _ = std::fs::remove_file(secrets_path(&cfg, &name));
    let n = name.clone();
    api.db
        .run(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            db::delete_project(&tx, &n)?;
            tx.execute("DELETE FROM api_provision WHERE project = ?1", [&n])?;
            tx.commit()?;
            Ok(())
        })
        .await
        .map_err(ApiError::internal)?;
    steps.push(step("registry", format!("project:{name}"), "removed"));
    Ok(RemoveReport {
        project: name,
        steps,
        dumps,
    })
}

/// `pg_dump -Fc` of `db` into `<backup_dir>/<db>-<ms>.dump` (0600); the admin password
/// reaches pg_dump through its environment, never its arguments.
async fn dump(cfg: &ProvisionConfig, admin: &Secret, db: &str) -> Result<PathBuf, ApiError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let c: tokio_postgres::Config = admin
        .expose()
        .parse()
        .map_err(|e: tokio_postgres::Error| unprocessable(e.to_string()))?;
    let (host, port) = split_target(&codeb_provision::pg::url_target(admin.expose()), 5432);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&cfg.backup_dir)
        .map_err(|e| failed_step("creating the backup directory", e))?;
    let file = cfg.backup_dir.join(format!("{db}-{}.dump", now_ms()));
    let tmp = cfg.backup_dir.join(format!(".{db}-{}.dump.tmp", now_ms()));
    let mut cmd = codeb_runtime::Cmd::new(cfg.pg_dump.clone())
        .env_clear()
        .env("PATH", "/usr/bin:/bin:/usr/lib/postgresql/15/bin")
        .arg("--format=custom")
        .arg("--no-password")
        .arg(format!("--host={host}"))
        .arg(format!("--port={port}"))
        .arg(format!("--username={}", c.get_user().unwrap_or("postgres")))
        .arg(format!("--file={}", tmp.display()))
        .arg(db)
        .timeout(std::time::Duration::from_secs(3600));
    if let Some(pw) = c.get_password() {
        cmd = cmd.env("PGPASSWORD", String::from_utf8_lossy(pw).into_owned());
    }
    cmd.output()
        .await
        .map_err(|e| failed_step(&format!("the final dump of {db} (nothing was dropped)"), e))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
        .and_then(|()| std::fs::rename(&tmp, &file))
        .map_err(|e| failed_step(&format!("keeping the dump of {db}"), e))?;
    Ok(file)
}
