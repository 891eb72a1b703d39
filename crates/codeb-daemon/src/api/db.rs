//! The control plane's tables, in the daemon's SQLite file beside deliveries and jobs, on a
//! connection of their own (WAL lets it write beside the intake's writer thread). The
//! migration here owns only `api_*` tables and its own version row in `api_meta`.
//!
//! Tokens are stored as SHA-256 only (`api_tokens.hash`), looked up by that hash. The audit
//! log is append-only: triggers refuse every UPDATE and DELETE on `api_audit`.

use std::path::Path;
use std::sync::{Arc, Mutex};

use codeb_api::{
    AuditEntry, Job, JobEvent, JobEventKind, JobKind, JobState, ProjectSpec, Role, TokenHash,
    TokenInfo, User,
};
use rusqlite::{Connection, OptionalExtension, params};

use crate::store::now_ms;

/// The version of the `api_*` schema this daemon writes.
pub const API_SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS api_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS api_users (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    name         TEXT NOT NULL UNIQUE,
    role         TEXT NOT NULL CHECK (role IN ('admin', 'developer', 'viewer')),
    enabled      INTEGER NOT NULL DEFAULT 1,
    created_ms   INTEGER NOT NULL,
    last_seen_ms INTEGER
);
CREATE TABLE IF NOT EXISTS api_tokens (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id      INTEGER NOT NULL REFERENCES api_users(id),
    name         TEXT NOT NULL,
    hash         BLOB NOT NULL UNIQUE CHECK (length(hash) = 32),
    hint         TEXT NOT NULL,
    created_ms   INTEGER NOT NULL,
    expires_ms   INTEGER NOT NULL,
    revoked_ms   INTEGER,
    last_used_ms INTEGER
);
CREATE TABLE IF NOT EXISTS api_projects (
    name       TEXT PRIMARY KEY,
    spec       TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS api_owners (
    project TEXT NOT NULL REFERENCES api_projects(name) ON DELETE CASCADE,
    user_id INTEGER NOT NULL REFERENCES api_users(id),
    PRIMARY KEY (project, user_id)
);
CREATE TABLE IF NOT EXISTS api_audit (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    time_ms  INTEGER NOT NULL,
    actor    TEXT NOT NULL,
    token_id INTEGER,
    action   TEXT NOT NULL,
    target   TEXT NOT NULL,
    project  TEXT,
    params   TEXT NOT NULL,
    result   TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS api_audit_time ON api_audit(time_ms);
CREATE TRIGGER IF NOT EXISTS api_audit_no_update BEFORE UPDATE ON api_audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS api_audit_no_delete BEFORE DELETE ON api_audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TABLE IF NOT EXISTS api_jobs (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    kind         TEXT NOT NULL CHECK (kind IN ('deploy', 'rollback')),
    project      TEXT NOT NULL,
    environment  TEXT NOT NULL,
    state        TEXT NOT NULL
                 CHECK (state IN ('queued', 'running', 'done', 'failed', 'interrupted')),
    requested_by TEXT NOT NULL,
    request      TEXT NOT NULL,
    image        TEXT,
    digest       TEXT,
    created_ms   INTEGER NOT NULL,
    started_ms   INTEGER,
    finished_ms  INTEGER,
    message      TEXT
);
CREATE INDEX IF NOT EXISTS api_jobs_state ON api_jobs(state, id);
CREATE TABLE IF NOT EXISTS api_job_events (
    job     INTEGER NOT NULL REFERENCES api_jobs(id),
    seq     INTEGER NOT NULL,
    time_ms INTEGER NOT NULL,
    event   TEXT NOT NULL,
    PRIMARY KEY (job, seq)
) WITHOUT ROWID;
";

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("control plane store {path}: {message}")]
    Open { path: String, message: String },
    #[error(
        "the control plane tables in {path} were written by a newer codeb-daemon (api schema {found}); upgrade codeb-daemon"
    )]
    Newer { path: String, found: i64 },
    #[error("control plane store: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("control plane store: stored JSON is unreadable: {0}")]
    Json(#[from] serde_json::Error),
    #[error("control plane store: {0}")]
    Task(String),
}

/// A handle on the control plane's connection; cheap to clone. Every call runs on the
/// blocking pool, so handlers never block the async runtime.
#[derive(Clone)]
pub struct Db {
    conn: Arc<Mutex<Connection>>,
}

/// What opening found.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Jobs that were running when the daemon stopped, now `interrupted`.
    pub interrupted: Vec<i64>,
}

impl Db {
    /// Opens the file, migrates the `api_*` tables and marks jobs a previous process left
    /// running as interrupted (they are never run again: the deploy engine closes their
    /// half-made release on the target's next deploy, and the kernel released their lock).
    pub fn open(path: &Path) -> Result<(Db, Recovered), DbError> {
        let open = |e: rusqlite::Error| DbError::Open {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        let mut conn = Connection::open(path).map_err(open)?;
        conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get::<_, String>(0))
            .map_err(open)?;
        conn.execute_batch(
            "PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=5000; PRAGMA foreign_keys=ON;",
        )
        .map_err(open)?;
        // Every hot statement stays compiled (rusqlite keeps 16 by default; the API has more).
        conn.set_prepared_statement_cache_capacity(64);
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(open)?;
        tx.execute_batch(SCHEMA).map_err(open)?;
        let found: Option<i64> = tx
            .query_row(
                "SELECT CAST(value AS INTEGER) FROM api_meta WHERE key = 'schema'",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(open)?;
        if let Some(found) = found
            && found > API_SCHEMA_VERSION
        {
            return Err(DbError::Newer {
                path: path.display().to_string(),
                found,
            });
        }
        tx.execute(
            "INSERT INTO api_meta (key, value) VALUES ('schema', ?1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [API_SCHEMA_VERSION.to_string()],
        )
        .map_err(open)?;
        let interrupted: Vec<i64> = {
            let mut s = tx
                .prepare("SELECT id FROM api_jobs WHERE state = 'running' ORDER BY id")
                .map_err(open)?;
            s.query_map([], |r| r.get(0))
                .map_err(open)?
                .collect::<Result<_, _>>()
                .map_err(open)?
        };
        let now = now_ms();
        for id in &interrupted {
            let message = "the daemon stopped during this job; it was not retried. Check \
                           `we health` and deploy again if needed";
            tx.execute(
                "UPDATE api_jobs SET state = 'interrupted', finished_ms = ?2, message = ?3 WHERE id = ?1",
                params![id, now, message],
            )
            .map_err(open)?;
            push_event(
                &tx,
                *id,
                now,
                &JobEventKind::Interrupted {
                    message: message.into(),
                },
            )
            .map_err(open)?;
        }
        tx.commit().map_err(open)?;
        Ok((
            Db {
                conn: Arc::new(Mutex::new(conn)),
            },
            Recovered { interrupted },
        ))
    }

    /// Runs `f` with the connection on the blocking pool.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, DbError> + Send + 'static,
    ) -> Result<T, DbError> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut c = conn
                .lock()
                .map_err(|_| DbError::Task("connection lock poisoned".into()))?;
            f(&mut c)
        })
        .await
        .map_err(|e| DbError::Task(e.to_string()))?
    }

    /// Synchronous access, for commands outside the runtime (`bootstrap-admin`).
    pub fn blocking<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        let mut c = self
            .conn
            .lock()
            .map_err(|_| DbError::Task("connection lock poisoned".into()))?;
        f(&mut c)
    }
}

// ---------------------------------------------------------------------------------------
// Users and tokens

fn role_of(s: &str) -> Role {
    s.parse().unwrap_or(Role::Viewer)
}

pub fn user_by_id(c: &Connection, id: i64) -> Result<Option<User>, DbError> {
    let row = c
        .prepare_cached(
            "SELECT id, name, role, enabled, created_ms, last_seen_ms FROM api_users WHERE id = ?1",
        )?
        .query_row([id], |r| {
            Ok(User {
                id: r.get(0)?,
                name: r.get(1)?,
                role: role_of(&r.get::<_, String>(2)?),
                enabled: r.get::<_, i64>(3)? != 0,
                created_ms: r.get(4)?,
                projects: Vec::new(),
                last_seen_ms: r.get(5)?,
            })
        })
        .optional()?;
    match row {
        Some(mut u) => {
            u.projects = owned_projects(c, u.id)?;
            Ok(Some(u))
        }
        None => Ok(None),
    }
}

pub fn user_by_name(c: &Connection, name: &str) -> Result<Option<User>, DbError> {
    let id: Option<i64> = c
        .query_row("SELECT id FROM api_users WHERE name = ?1", [name], |r| {
            r.get(0)
        })
        .optional()?;
    match id {
        Some(id) => user_by_id(c, id),
        None => Ok(None),
    }
}

pub fn owned_projects(c: &Connection, user: i64) -> Result<Vec<String>, DbError> {
    let mut s =
        c.prepare_cached("SELECT project FROM api_owners WHERE user_id = ?1 ORDER BY project")?;
    let v = s
        .query_map([user], |r| r.get(0))?
        .collect::<Result<Vec<String>, _>>()?;
    Ok(v)
}

pub fn users(c: &Connection) -> Result<Vec<User>, DbError> {
    let ids: Vec<i64> = {
        let mut s = c.prepare("SELECT id FROM api_users ORDER BY id")?;
        s.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?
    };
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(u) = user_by_id(c, id)? {
            out.push(u);
        }
    }
    Ok(out)
}

pub fn insert_user(c: &Connection, name: &str, role: Role, now: i64) -> Result<i64, DbError> {
    c.execute(
        "INSERT INTO api_users (name, role, enabled, created_ms) VALUES (?1, ?2, 1, ?3)",
        params![name, role.as_str(), now],
    )?;
    Ok(c.last_insert_rowid())
}

pub fn set_role(c: &Connection, id: i64, role: Role) -> Result<(), DbError> {
    c.execute(
        "UPDATE api_users SET role = ?2 WHERE id = ?1",
        params![id, role.as_str()],
    )?;
    Ok(())
}

pub fn set_enabled(c: &Connection, id: i64, enabled: bool) -> Result<(), DbError> {
    c.execute(
        "UPDATE api_users SET enabled = ?2 WHERE id = ?1",
        params![id, i64::from(enabled)],
    )?;
    Ok(())
}

pub fn enabled_admins(c: &Connection) -> Result<i64, DbError> {
    Ok(c.query_row(
        "SELECT count(*) FROM api_users WHERE role = 'admin' AND enabled = 1",
        [],
        |r| r.get(0),
    )?)
}

pub fn set_owned_projects(c: &Connection, user: i64, projects: &[String]) -> Result<(), DbError> {
    c.execute("DELETE FROM api_owners WHERE user_id = ?1", [user])?;
    for p in projects {
        c.execute(
            "INSERT OR IGNORE INTO api_owners (project, user_id) VALUES (?1, ?2)",
            params![p, user],
        )?;
    }
    Ok(())
}

/// A token row found by hash, with its user.
pub struct TokenRow {
    pub info: TokenInfo,
    pub user: User,
}

pub fn insert_token(
    c: &Connection,
    user: i64,
    name: &str,
    hash: &TokenHash,
    hint: &str,
    now: i64,
    expires: i64,
) -> Result<i64, DbError> {
    c.execute(
        "INSERT INTO api_tokens (user_id, name, hash, hint, created_ms, expires_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![user, name, &hash.0[..], hint, now, expires],
    )?;
    Ok(c.last_insert_rowid())
}

const TOKEN_COLUMNS: &str = "t.id, t.user_id, u.name, t.name, t.hint, t.created_ms, t.expires_ms, t.revoked_ms, t.last_used_ms";

fn token_info(r: &rusqlite::Row<'_>) -> rusqlite::Result<TokenInfo> {
    Ok(TokenInfo {
        id: r.get(0)?,
        user_id: r.get(1)?,
        user: r.get(2)?,
        name: r.get(3)?,
        hint: r.get(4)?,
        created_ms: r.get(5)?,
        expires_ms: r.get(6)?,
        revoked_ms: r.get(7)?,
        last_used_ms: r.get(8)?,
    })
}

/// The token with this hash (an indexed equality lookup: how much of a guessed token is
/// right changes nothing about the time it takes).
pub fn token_by_hash(c: &Connection, hash: &TokenHash) -> Result<Option<TokenRow>, DbError> {
    let info = c
        .prepare_cached(&format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens t JOIN api_users u ON u.id = t.user_id WHERE t.hash = ?1"
        ))?
        .query_row([&hash.0[..]], token_info)
        .optional()?;
    let Some(info) = info else { return Ok(None) };
    let Some(user) = user_by_id(c, info.user_id)? else {
        return Ok(None);
    };
    Ok(Some(TokenRow { info, user }))
}

pub fn token_by_id(c: &Connection, id: i64) -> Result<Option<TokenInfo>, DbError> {
    Ok(c
        .query_row(
            &format!(
                "SELECT {TOKEN_COLUMNS} FROM api_tokens t JOIN api_users u ON u.id = t.user_id WHERE t.id = ?1"
            ),
            [id],
            token_info,
        )
        .optional()?)
}

pub fn tokens(c: &Connection) -> Result<Vec<TokenInfo>, DbError> {
    let mut s = c.prepare(&format!(
        "SELECT {TOKEN_COLUMNS} FROM api_tokens t JOIN api_users u ON u.id = t.user_id ORDER BY t.id"
    ))?;
    let v = s.query_map([], token_info)?.collect::<Result<_, _>>()?;
    Ok(v)
}

pub fn revoke_token(c: &Connection, id: i64, now: i64) -> Result<(), DbError> {
    c.execute(
        "UPDATE api_tokens SET revoked_ms = coalesce(revoked_ms, ?2) WHERE id = ?1",
        params![id, now],
    )?;
    Ok(())
}

/// Records use, at most once a minute per token (so reads do not turn into writes).
pub fn touch_token(c: &Connection, token: i64, user: i64, now: i64) -> Result<(), DbError> {
    let n = c
        .prepare_cached(
            "UPDATE api_tokens SET last_used_ms = ?2 WHERE id = ?1 AND (last_used_ms IS NULL OR last_used_ms < ?2 - 60000)",
        )?
        .execute(params![token, now])?;
    if n > 0 {
        c.execute(
            "UPDATE api_users SET last_seen_ms = ?2 WHERE id = ?1",
            params![user, now],
        )?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Projects

/// A stored project: the spec (owners filled from `api_owners`) and its times.
pub struct ProjectRow {
    pub spec: ProjectSpec,
    pub created_ms: i64,
    pub updated_ms: i64,
}

fn owners_of(c: &Connection, project: &str) -> Result<Vec<String>, DbError> {
    let mut s = c.prepare_cached(
        "SELECT u.name FROM api_owners o JOIN api_users u ON u.id = o.user_id WHERE o.project = ?1 ORDER BY u.name",
    )?;
    let v = s
        .query_map([project], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(v)
}

pub fn project(c: &Connection, name: &str) -> Result<Option<ProjectRow>, DbError> {
    let row: Option<(String, i64, i64)> = c
        .prepare_cached("SELECT spec, created_ms, updated_ms FROM api_projects WHERE name = ?1")?
        .query_row([name], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    let Some((spec, created_ms, updated_ms)) = row else {
        return Ok(None);
    };
    let mut spec: ProjectSpec = serde_json::from_str(&spec)?;
    spec.owners = owners_of(c, name)?;
    Ok(Some(ProjectRow {
        spec,
        created_ms,
        updated_ms,
    }))
}

pub fn projects(c: &Connection) -> Result<Vec<ProjectRow>, DbError> {
    // Two statements whatever the number of projects: the list is the hot read of the API.
    let mut owners: std::collections::HashMap<String, Vec<String>> = Default::default();
    {
        let mut s = c.prepare_cached(
            "SELECT o.project, u.name FROM api_owners o JOIN api_users u ON u.id = o.user_id ORDER BY o.project, u.name",
        )?;
        let rows = s.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        for row in rows {
            let (project, user) = row?;
            owners.entry(project).or_default().push(user);
        }
    }
    let mut s = c.prepare_cached(
        "SELECT name, spec, created_ms, updated_ms FROM api_projects ORDER BY name",
    )?;
    let rows = s.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, i64>(3)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (name, spec, created_ms, updated_ms) = row?;
        let mut spec: ProjectSpec = serde_json::from_str(&spec)?;
        spec.owners = owners.remove(&name).unwrap_or_default();
        out.push(ProjectRow {
            spec,
            created_ms,
            updated_ms,
        });
    }
    Ok(out)
}

/// Inserts or replaces a project; `owners` are user ids.
pub fn put_project(
    c: &Connection,
    spec: &ProjectSpec,
    owners: &[i64],
    now: i64,
) -> Result<(), DbError> {
    let mut stored = spec.clone();
    stored.owners.clear();
    let json = serde_json::to_string(&stored)?;
    c.execute(
        "INSERT INTO api_projects (name, spec, created_ms, updated_ms) VALUES (?1, ?2, ?3, ?3)
         ON CONFLICT (name) DO UPDATE SET spec = excluded.spec, updated_ms = excluded.updated_ms",
        params![spec.name, json, now],
    )?;
    c.execute("DELETE FROM api_owners WHERE project = ?1", [&spec.name])?;
    for o in owners {
        c.execute(
            "INSERT OR IGNORE INTO api_owners (project, user_id) VALUES (?1, ?2)",
            params![spec.name, o],
        )?;
    }
    Ok(())
}

pub fn delete_project(c: &Connection, name: &str) -> Result<bool, DbError> {
    c.execute("DELETE FROM api_owners WHERE project = ?1", [name])?;
    Ok(c.execute("DELETE FROM api_projects WHERE name = ?1", [name])? > 0)
}

// ---------------------------------------------------------------------------------------
// Audit

/// One audit row to append.
pub struct NewAudit<'a> {
    pub actor: &'a str,
    pub token_id: Option<i64>,
    pub action: &'a str,
    pub target: &'a str,
    pub project: Option<&'a str>,
    pub params: &'a serde_json::Value,
    pub result: &'a str,
}

pub fn audit(c: &Connection, a: &NewAudit<'_>, now: i64) -> Result<(), DbError> {
    c.prepare_cached(
        "INSERT INTO api_audit (time_ms, actor, token_id, action, target, project, params, result)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        now,
        a.actor,
        a.token_id,
        a.action,
        a.target,
        a.project,
        a.params.to_string(),
        a.result
    ])?;
    Ok(())
}

pub fn audit_list(
    c: &Connection,
    project: Option<&str>,
    since_ms: Option<i64>,
    limit: usize,
) -> Result<Vec<AuditEntry>, DbError> {
    let mut s = c.prepare(
        "SELECT id, time_ms, actor, token_id, action, target, params, result FROM api_audit
         WHERE (?1 IS NULL OR project = ?1) AND (?2 IS NULL OR time_ms >= ?2)
         ORDER BY id DESC LIMIT ?3",
    )?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = s
        .query_map(params![project, since_ms, limit], |r| {
            let params: String = r.get(6)?;
            Ok(AuditEntry {
                id: r.get(0)?,
                time_ms: r.get(1)?,
                actor: r.get(2)?,
                token_id: r.get(3)?,
                action: r.get(4)?,
                target: r.get(5)?,
                params: serde_json::from_str(&params).unwrap_or(serde_json::Value::Null),
                result: r.get(7)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

// ---------------------------------------------------------------------------------------
// Jobs

fn kind_str(k: JobKind) -> &'static str {
    match k {
        JobKind::Deploy => "deploy",
        JobKind::Rollback => "rollback",
    }
}

fn state_of(s: &str) -> JobState {
    match s {
        "queued" => JobState::Queued,
        "running" => JobState::Running,
        "done" => JobState::Done,
        "failed" => JobState::Failed,
        _ => JobState::Interrupted,
    }
}

pub fn state_str(s: JobState) -> &'static str {
    match s {
        JobState::Queued => "queued",
        JobState::Running => "running",
        JobState::Done => "done",
        JobState::Failed => "failed",
        JobState::Interrupted => "interrupted",
    }
}

const JOB_COLUMNS: &str = "id, kind, project, environment, state, requested_by, image, digest, created_ms, started_ms, finished_ms, message";

fn job_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Job> {
    Ok(Job {
        id: r.get(0)?,
        kind: if r.get::<_, String>(1)? == "rollback" {
            JobKind::Rollback
        } else {
            JobKind::Deploy
        },
        project: r.get(2)?,
        environment: r.get(3)?,
        state: state_of(&r.get::<_, String>(4)?),
        requested_by: r.get(5)?,
        image: r.get(6)?,
        digest: r.get(7)?,
        created_ms: r.get(8)?,
        started_ms: r.get(9)?,
        finished_ms: r.get(10)?,
        message: r.get(11)?,
    })
}

/// A job to queue.
pub struct NewJob<'a> {
    pub kind: JobKind,
    pub project: &'a str,
    pub environment: &'a str,
    pub requested_by: &'a str,
    pub request: &'a serde_json::Value,
    pub image: Option<&'a str>,
}

pub fn insert_job(c: &Connection, j: &NewJob<'_>, now: i64) -> Result<i64, DbError> {
    let NewJob {
        kind,
        project,
        environment,
        requested_by,
        request,
        image,
    } = *j;
    c.execute(
        "INSERT INTO api_jobs (kind, project, environment, state, requested_by, request, image, created_ms)
         VALUES (?1, ?2, ?3, 'queued', ?4, ?5, ?6, ?7)",
        params![
            kind_str(kind),
            project,
            environment,
            requested_by,
            request.to_string(),
            image,
            now
        ],
    )?;
    let id = c.last_insert_rowid();
    push_event(c, id, now, &JobEventKind::Queued)?;
    Ok(id)
}

pub fn job(c: &Connection, id: i64) -> Result<Option<Job>, DbError> {
    Ok(c.query_row(
        &format!("SELECT {JOB_COLUMNS} FROM api_jobs WHERE id = ?1"),
        [id],
        job_row,
    )
    .optional()?)
}

pub fn job_request(c: &Connection, id: i64) -> Result<Option<serde_json::Value>, DbError> {
    let s: Option<String> = c
        .query_row("SELECT request FROM api_jobs WHERE id = ?1", [id], |r| {
            r.get(0)
        })
        .optional()?;
    Ok(match s {
        Some(s) => Some(serde_json::from_str(&s)?),
        None => None,
    })
}

pub fn jobs(c: &Connection, project: Option<&str>, limit: usize) -> Result<Vec<Job>, DbError> {
    let mut s = c.prepare(&format!(
        "SELECT {JOB_COLUMNS} FROM api_jobs WHERE (?1 IS NULL OR project = ?1) ORDER BY id DESC LIMIT ?2"
    ))?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let v = s
        .query_map(params![project, limit], job_row)?
        .collect::<Result<_, _>>()?;
    Ok(v)
}

/// Queued jobs, oldest first.
pub fn queued_jobs(c: &Connection) -> Result<Vec<i64>, DbError> {
    let mut s = c.prepare_cached("SELECT id FROM api_jobs WHERE state = 'queued' ORDER BY id")?;
    let v = s.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
    Ok(v)
}

/// Marks a queued job running; false when it was not queued any more.
pub fn start_job(c: &Connection, id: i64, now: i64) -> Result<bool, DbError> {
    let n = c.execute(
        "UPDATE api_jobs SET state = 'running', started_ms = ?2 WHERE id = ?1 AND state = 'queued'",
        params![id, now],
    )?;
    if n > 0 {
        push_event(c, id, now, &JobEventKind::Started)?;
    }
    Ok(n > 0)
}

pub fn finish_job(
    c: &Connection,
    id: i64,
    state: JobState,
    digest: Option<&str>,
    message: &str,
    event: &JobEventKind,
    now: i64,
) -> Result<(), DbError> {
    c.execute(
        "UPDATE api_jobs SET state = ?2, digest = coalesce(?3, digest), message = ?4, finished_ms = ?5 WHERE id = ?1",
        params![id, state_str(state), digest, message, now],
    )?;
    push_event(c, id, now, event)?;
    Ok(())
}

pub fn push_event(
    c: &Connection,
    job: i64,
    now: i64,
    kind: &JobEventKind,
) -> Result<(), rusqlite::Error> {
    let json = serde_json::to_string(kind)
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    c.prepare_cached(
        "INSERT INTO api_job_events (job, seq, time_ms, event)
         VALUES (?1, (SELECT coalesce(max(seq), 0) + 1 FROM api_job_events WHERE job = ?1), ?2, ?3)",
    )?
    .execute(params![job, now, json])?;
    Ok(())
}

pub fn events_after(c: &Connection, job: i64, after: i64) -> Result<Vec<JobEvent>, DbError> {
    let mut s = c.prepare_cached(
        "SELECT seq, time_ms, event FROM api_job_events WHERE job = ?1 AND seq > ?2 ORDER BY seq",
    )?;
    let rows: Vec<(i64, i64, String)> = s
        .query_map(params![job, after], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?
        .collect::<Result<_, _>>()?;
    let mut out = Vec::with_capacity(rows.len());
    for (seq, time_ms, event) in rows {
        out.push(JobEvent {
            job,
            seq,
            time_ms,
            kind: serde_json::from_str(&event)?,
        });
    }
    Ok(out)
}

/// The time of the last job that finished `done` for a target (the API's own record; the
/// deploy state is the host's).
pub fn meta_get(c: &Connection, key: &str) -> Result<Option<String>, DbError> {
    Ok(
        c.query_row("SELECT value FROM api_meta WHERE key = ?1", [key], |r| {
            r.get(0)
        })
        .optional()?,
    )
}

pub fn meta_set(c: &Connection, key: &str, value: &str) -> Result<(), DbError> {
    c.execute(
        "INSERT INTO api_meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![key, value],
    )?;
    Ok(())
}
