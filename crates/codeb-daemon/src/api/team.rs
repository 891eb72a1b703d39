//! Whoami, the team, tokens, the audit log, and `bootstrap-admin`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use codeb_api::{
    Action, AuditEntry, AuditQuery, NewToken, NewUser, Ok as OkBody, ProjectAssignment, Role,
    RoleChange, TeamStatus, Token, TokenCreated, TokenInfo, User, UserCreated, Whoami,
};
use rand::TryRngCore;
use rusqlite::Connection;
use serde_json::json;

use super::db::{self, DbError, NewAudit};
use super::{Api, ApiError, parse_body, request_duration, user_name};
use crate::store::now_ms;

/// A fresh token from 32 bytes of the OS CSPRNG.
pub fn new_token() -> Result<Token, String> {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(|e| format!("the OS random number generator failed: {e}"))?;
    Ok(Token::from_random(bytes))
}

/// Creates a token for `user` in the open transaction; returns it (shown once).
fn mint(
    c: &Connection,
    user: i64,
    name: &str,
    ttl: Duration,
    now: i64,
) -> Result<TokenCreated, DbError> {
    let token = new_token().map_err(DbError::Task)?;
    let expires = now.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
    let id = db::insert_token(c, user, name, &token.hash(), &token.hint(), now, expires)?;
    let info = db::token_by_id(c, id)?.ok_or_else(|| DbError::Task("token vanished".into()))?;
    Ok(TokenCreated {
        token: token.expose().to_owned(),
        info,
    })
}

pub async fn whoami(State(api): State<Arc<Api>>, h: HeaderMap) -> Result<Json<Whoami>, ApiError> {
    let c = api.authorize(&h, Action::Whoami, None).await?;
    Ok(Json(Whoami {
        user: c.user,
        token: c.token,
    }))
}

pub async fn logout(State(api): State<Arc<Api>>, h: HeaderMap) -> Result<Json<OkBody>, ApiError> {
    let c = api.authorize(&h, Action::Whoami, None).await?;
    let id = c.token_id;
    api.db
        .run(move |db| db::revoke_token(db, id, now_ms()))
        .await
        .map_err(ApiError::internal)?;
    api.audit(
        &c,
        Action::TokenRevoke,
        &format!("token:{id}"),
        None,
        &json!({"logout": true}),
        "ok",
    )
    .await;
    Ok(Json(OkBody { ok: true }))
}

pub async fn list(State(api): State<Arc<Api>>, h: HeaderMap) -> Result<Json<Vec<User>>, ApiError> {
    api.authorize(&h, Action::TeamList, None).await?;
    let users = api
        .db
        .run(|c| db::users(c))
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(users))
}

pub async fn status(
    State(api): State<Arc<Api>>,
    h: HeaderMap,
) -> Result<Json<TeamStatus>, ApiError> {
    let caller = api.authorize(&h, Action::TeamStatus, None).await?;
    let now = now_ms();
    let (users, tokens) = api
        .db
        .run(|c| Ok((db::users(c)?, db::tokens(c)?)))
        .await
        .map_err(ApiError::internal)?;
    let mut by_role = BTreeMap::new();
    for r in Role::ALL {
        by_role.insert(r, 0);
    }
    for u in users.iter().filter(|u| u.enabled) {
        *by_role.entry(u.role).or_insert(0) += 1;
    }
    let active: Vec<&TokenInfo> = tokens
        .iter()
        .filter(|t| t.revoked_ms.is_none() && t.expires_ms > now)
        .collect();
    Ok(Json(TeamStatus {
        me: caller.user,
        users: users.len(),
        enabled: users.iter().filter(|u| u.enabled).count(),
        by_role,
        active_tokens: active.len(),
        expiring_soon: active
            .iter()
            .filter(|t| t.expires_ms <= now + 7 * 86_400_000)
            .count(),
    }))
}

fn check_projects(c: &Connection, projects: &[String]) -> Result<Result<(), String>, DbError> {
    for p in projects {
        if db::project(c, p)?.is_none() {
            return Ok(Err(format!(
                "project `{p}` is not in the registry; create it first (POST /api/v1/projects)"
            )));
        }
    }
    Ok(Ok(()))
}

pub async fn add(
    State(api): State<Arc<Api>>,
    h: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let caller = api.authorize(&h, Action::TeamAdd, None).await?;
    let req: NewUser = parse_body(&body)?;
    let name = user_name(&req.name)?;
    for p in &req.projects {
        super::project_name(p)?;
    }
    let ttl = request_duration(
        "token_expires_in",
        req.token_expires_in.as_deref(),
        api.cfg.token_ttl,
    )?;
    if ttl.is_zero() || ttl > super::MAX_TOKEN_TTL {
        return Err(ApiError::bad(
            "token_expires_in must be between 1s and 366d",
        ));
    }
    let role = req.role;
    let projects = req.projects.clone();
    let n = name.clone();
    let out = api
        .db
        .run(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            if db::user_by_name(&tx, &n)?.is_some() {
                return Ok(Err(ApiError::conflict(format!(
                    "a user named `{n}` exists already; pick another name or change their role"
                ))));
            }
            if let Err(m) = check_projects(&tx, &projects)? {
                return Ok(Err(ApiError::bad(m)));
            }
            let now = now_ms();
            let id = db::insert_user(&tx, &n, role, now)?;
            db::set_owned_projects(&tx, id, &projects)?;
            let token = mint(&tx, id, "initial", ttl, now)?;
            let user =
                db::user_by_id(&tx, id)?.ok_or_else(|| DbError::Task("user vanished".into()))?;
            tx.commit()?;
            Ok(Ok(UserCreated { user, token }))
        })
        .await
        .map_err(ApiError::internal)?;
    let params = serde_json::to_value(&req).unwrap_or_default();
    match out {
        Ok(created) => {
            api.audit(
                &caller,
                Action::TeamAdd,
                &format!("user:{}", created.user.id),
                None,
                &params,
                "ok",
            )
            .await;
            Ok((StatusCode::CREATED, Json(created)).into_response())
        }
        Err(e) => {
            api.audit(
                &caller,
                Action::TeamAdd,
                &format!("user:{name}"),
                None,
                &params,
                &format!("failed: {}", e.message),
            )
            .await;
            Err(e)
        }
    }
}

fn user_id(raw: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>().ok().filter(|i| *i > 0).ok_or_else(|| {
        ApiError::bad(format!(
            "user id {:?} is not a positive number; see `we team list`",
            codeb_health::one_line(raw, 30)
        ))
    })
}

/// Applies `change` to user `id` unless it would leave no enabled admin.
async fn change_user(
    api: &Api,
    id: i64,
    change: impl FnOnce(&Connection, &User) -> Result<Result<(), ApiError>, DbError> + Send + 'static,
) -> Result<User, ApiError> {
    api.db
        .run(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let Some(before) = db::user_by_id(&tx, id)? else {
                return Ok(Err(ApiError::not_found(format!(
                    "no user with id {id}; see `we team list`"
                ))));
            };
            if let Err(e) = change(&tx, &before)? {
                return Ok(Err(e));
            }
            if db::enabled_admins(&tx)? == 0 {
                return Ok(Err(ApiError::conflict(
                    "that would leave the team without an enabled admin; make someone else admin first",
                )));
            }
            let after = db::user_by_id(&tx, id)?.ok_or_else(|| DbError::Task("user vanished".into()))?;
            tx.commit()?;
            Ok(Ok(after))
        })
        .await
        .map_err(ApiError::internal)?
}

async fn audited_change(
    api: &Api,
    caller: &super::Caller,
    action: Action,
    id: i64,
    params: serde_json::Value,
    result: Result<User, ApiError>,
) -> Result<Json<User>, ApiError> {
    let outcome = match &result {
        Ok(_) => "ok".to_owned(),
        Err(e) => format!("failed: {}", e.message),
    };
    api.audit(
        caller,
        action,
        &format!("user:{id}"),
        None,
        &params,
        &outcome,
    )
    .await;
    result.map(Json)
}

pub async fn role(
    State(api): State<Arc<Api>>,
    h: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<User>, ApiError> {
    let caller = api.authorize(&h, Action::TeamRole, None).await?;
    let id = user_id(&id)?;
    let req: RoleChange = parse_body(&body)?;
    let role = req.role;
    let r = change_user(&api, id, move |c, _| {
        db::set_role(c, id, role)?;
        Ok(Ok(()))
    })
    .await;
    audited_change(
        &api,
        &caller,
        Action::TeamRole,
        id,
        json!({"role": role}),
        r,
    )
    .await
}

pub async fn toggle(
    State(api): State<Arc<Api>>,
    h: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<User>, ApiError> {
    let caller = api.authorize(&h, Action::TeamToggle, None).await?;
    let id = user_id(&id)?;
    let r = change_user(&api, id, move |c, u| {
        db::set_enabled(c, id, !u.enabled)?;
        Ok(Ok(()))
    })
    .await;
    let params = json!({"enabled": r.as_ref().map(|u| u.enabled).ok()});
    audited_change(&api, &caller, Action::TeamToggle, id, params, r).await
}

pub async fn assign(
    State(api): State<Arc<Api>>,
    h: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<User>, ApiError> {
    let caller = api.authorize(&h, Action::TeamProjects, None).await?;
    let id = user_id(&id)?;
    let req: ProjectAssignment = parse_body(&body)?;
    for p in &req.projects {
        super::project_name(p)?;
    }
    let projects = req.projects.clone();
    let r = change_user(&api, id, move |c, _| {
        if let Err(m) = check_projects(c, &projects)? {
            return Ok(Err(ApiError::bad(m)));
        }
        db::set_owned_projects(c, id, &projects)?;
        Ok(Ok(()))
    })
    .await;
    audited_change(
        &api,
        &caller,
        Action::TeamProjects,
        id,
        json!({"projects": req.projects}),
        r,
    )
    .await
}

pub async fn tokens(
    State(api): State<Arc<Api>>,
    h: HeaderMap,
) -> Result<Json<Vec<TokenInfo>>, ApiError> {
    api.authorize(&h, Action::TokenList, None).await?;
    Ok(Json(
        api.db
            .run(|c| db::tokens(c))
            .await
            .map_err(ApiError::internal)?,
    ))
}

pub async fn create_token(
    State(api): State<Arc<Api>>,
    h: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let caller = api.authorize(&h, Action::TokenCreate, None).await?;
    let req: NewToken = parse_body(&body)?;
    if req.name.is_empty() || req.name.len() > 64 || req.name.chars().any(char::is_control) {
        return Err(ApiError::bad(
            "token name must be 1-64 printable characters (e.g. \"laptop\", \"ci\")",
        ));
    }
    let ttl = request_duration("expires_in", req.expires_in.as_deref(), api.cfg.token_ttl)?;
    if ttl.is_zero() || ttl > super::MAX_TOKEN_TTL {
        return Err(ApiError::bad("expires_in must be between 1s and 366d"));
    }
    let (uid, name) = (req.user_id, req.name.clone());
    let out = api
        .db
        .run(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            if db::user_by_id(&tx, uid)?.is_none() {
                return Ok(Err(ApiError::not_found(format!(
                    "no user with id {uid}; see `we team list`"
                ))));
            }
            let t = mint(&tx, uid, &name, ttl, now_ms())?;
            tx.commit()?;
            Ok(Ok(t))
        })
        .await
        .map_err(ApiError::internal)??;
    let params = serde_json::to_value(&req).unwrap_or_default();
    api.audit(
        &caller,
        Action::TokenCreate,
        &format!("token:{}", out.info.id),
        None,
        &params,
        "ok",
    )
    .await;
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

pub async fn revoke_token(
    State(api): State<Arc<Api>>,
    h: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<TokenInfo>, ApiError> {
    let caller = api.authorize(&h, Action::TokenRevoke, None).await?;
    let id = id
        .parse::<i64>()
        .map_err(|_| ApiError::bad("token id is not a number; see GET /api/v1/tokens"))?;
    let out = api
        .db
        .run(move |c| {
            if db::token_by_id(c, id)?.is_none() {
                return Ok(None);
            }
            db::revoke_token(c, id, now_ms())?;
            db::token_by_id(c, id)
        })
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::not_found(format!("no token with id {id}")))?;
    api.audit(
        &caller,
        Action::TokenRevoke,
        &format!("token:{id}"),
        None,
        &json!({}),
        "ok",
    )
    .await;
    Ok(Json(out))
}

pub async fn audit(
    State(api): State<Arc<Api>>,
    h: HeaderMap,
    Query(q): Query<AuditQuery>,
) -> Result<Json<Vec<AuditEntry>>, ApiError> {
    api.authorize(&h, Action::AuditList, None).await?;
    if let Some(p) = &q.project {
        super::project_name(p)?;
    }
    let since = match q.since.as_deref() {
        None => None,
        Some(s) => {
            let d = request_duration("since", Some(s), Duration::ZERO)?;
            Some(now_ms() - i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2))
        }
    };
    let limit = q.limit.unwrap_or(1000).min(100_000);
    let project = q.project.clone();
    Ok(Json(
        api.db
            .run(move |c| db::audit_list(c, project.as_deref(), since, limit))
            .await
            .map_err(ApiError::internal)?,
    ))
}

/// `codeb-daemon bootstrap-admin`: creates the first admin (or, with `force`, another
/// admin token for the named admin) and returns the token, audited as `bootstrap`.
pub fn bootstrap_admin(
    db: &db::Db,
    name: &str,
    ttl: Duration,
    force: bool,
) -> Result<TokenCreated, String> {
    let name = user_name(name).map_err(|e| e.message)?;
    db.blocking(|c| {
        let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let admins = db::enabled_admins(&tx)?;
        let existing = db::user_by_name(&tx, &name)?;
        if admins > 0 && !force {
            return Ok(Err(format!(
                "the team has {admins} enabled admin(s) already; an admin makes tokens with `we team add`, \
                 or run bootstrap-admin --force to mint another token for `{name}`"
            )));
        }
        let now = now_ms();
        let id = match existing {
            Some(u) => {
                db::set_role(&tx, u.id, Role::Admin)?;
                db::set_enabled(&tx, u.id, true)?;
                u.id
            }
            None => db::insert_user(&tx, &name, Role::Admin, now)?,
        };
        let t = mint(&tx, id, "bootstrap", ttl, now)?;
        db::audit(
            &tx,
            &NewAudit {
                actor: "bootstrap",
                token_id: None,
                action: Action::TokenCreate.as_str(),
                target: &format!("token:{}", t.info.id),
                project: None,
                params: &json!({"user": name, "force": force}),
                result: "ok",
            },
            now,
        )?;
        tx.commit()?;
        Ok(Ok(t))
    })
    .map_err(|e| e.to_string())?
}
