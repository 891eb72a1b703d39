//! Deploys and rollbacks requested through the API: stored as jobs (`api_jobs`), run by the
//! job runner through `codeb_deploy::Engine` (the library the runner's
//! `codeb-quadlet-update` uses), under the same per-target lock file. Progress is stored as
//! job events and streamed as NDJSON.
//!
//! Before the engine takes the lock, the runner looks at it: while another process (a runner
//! deploy, another job) holds it, the job reports `waiting` with the holder the lock file
//! names, up to the request's lock timeout (then `failed` with `lock_timeout`). A job left
//! `running` by a killed daemon is `interrupted` at the next start and never run again.

use std::collections::HashSet;
use std::fs::TryLockError;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use codeb_api::{
    Action, DeployPlan, DeployRequest, Job, JobEventKind, JobKind, JobState, JobsQuery,
    RollbackRequest, codes,
};
use codeb_core::Environment;
use codeb_deploy::{
    DeployError, DeployOptions, Engine, History, Outcome, RollbackOptions, Strategy,
};
use codeb_health::Expectation;
use codeb_registry::{Auth, ImageRef, Resolver};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use super::db;
use super::registry::{active_release, load_project, next_slot};
use super::{Api, ApiError, environment, parse_body, project_name, request_duration};
use crate::store::now_ms;

/// What a job runs, stored with it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Stored {
    kind: JobKind,
    environment: String,
    image: Option<String>,
    sha: Option<String>,
    lock_timeout_ms: u64,
    actor: String,
}

/// An image tag from a branch name, as the generated workflow makes it.
fn branch_tag(branch: &str) -> String {
    branch
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(128)
        .collect()
}

async fn plan(
    api: &Api,
    project: &codeb_api::Project,
    env: Environment,
    kind: JobKind,
    image: &str,
) -> Result<DeployPlan, ApiError> {
    let name = &project.spec.name;
    let Some(port) = project.ports.get(env.as_str()).copied() else {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            codes::UNPROCESSABLE,
            format!(
                "{name} {env} has no port in the manifest {}; allocate one: codeb-port-validate --project {name} --environment {env} --allocate",
                api.loc.manifest.path().display()
            ),
        ));
    };
    let hist = History::load(&api.state_dir(), &format!("{name}-{env}")).ok();
    let (image, digest) = match kind {
        JobKind::Deploy => {
            let r = ImageRef::parse(image).map_err(|e| ApiError::bad(format!("image: {e}")))?;
            let digest = match r.digest() {
                Some(d) => d.to_string(),
                None => Resolver::new()
                    .resolve(&r, &Auth::from_env(&r))
                    .await
                    .map_err(|e| {
                        ApiError::new(
                            StatusCode::UNPROCESSABLE_ENTITY,
                            codes::UNPROCESSABLE,
                            format!("cannot resolve {r} to a digest: {e}"),
                        )
                    })?
                    .digest
                    .to_string(),
            };
            (r.to_string(), digest)
        }
        JobKind::Rollback if super::hosts::has_hosts(api).await => {
            let unit = format!("{name}-{env}");
            let (_, target) = super::hosts::rollback_plan(api, &unit).await?;
            let prev = target.ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    codes::UNPROCESSABLE,
                    no_host_rollback(name, env),
                )
            })?;
            (prev.image, prev.digest)
        }
        JobKind::Rollback => {
            let prev = hist
                .as_ref()
                .and_then(History::previous_good)
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        codes::UNPROCESSABLE,
                        format!("{name} {env} has no earlier good release to roll back to"),
                    )
                })?;
            (prev.image.clone(), prev.digest.clone())
        }
    };
    let blue_green =
        api.loc.caddy_admin.is_some() && Strategy::default_for(env) == Strategy::BlueGreen;
    let slot = next_slot(blue_green, hist.as_ref());
    let slot_port = if api.loc.caddy_admin.is_some() {
        slot.port(port).unwrap_or(port)
    } else {
        port
    };
    Ok(DeployPlan {
        project: name.clone(),
        environment: env.to_string(),
        kind,
        image,
        digest,
        slot: slot.as_str().into(),
        port,
        slot_port,
        health_url: format!("http://127.0.0.1:{slot_port}{}", project.spec.health_path),
        current: active_release(api, name, env.as_str()).map(|(r, _)| r),
    })
}

/// A deploy or rollback as asked.
struct Ask<'a> {
    kind: JobKind,
    env_name: &'a str,
    image: Option<String>,
    sha: Option<String>,
    dry_run: bool,
    lock_timeout: Option<&'a str>,
    params: serde_json::Value,
}

async fn request_job(
    api: &Arc<Api>,
    headers: &HeaderMap,
    name: &str,
    ask: Ask<'_>,
) -> Result<Response, ApiError> {
    let Ask {
        kind,
        env_name,
        image,
        sha,
        dry_run,
        lock_timeout,
        params,
    } = ask;
    project_name(name)?;
    let action = match kind {
        JobKind::Deploy => Action::Deploy,
        JobKind::Rollback => Action::Rollback,
    };
    let caller = api.authorize(headers, action, Some(name)).await?;
    let env = environment(env_name)?;
    let lock_timeout = request_duration("lock_timeout", lock_timeout, api.cfg.lock_timeout)?;
    if lock_timeout > Duration::from_secs(3600) {
        return Err(ApiError::bad("lock_timeout must be at most 1h"));
    }
    if let Some(s) = &sha
        && (s.is_empty() || s.len() > 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Err(ApiError::bad("sha must be a hexadecimal commit id"));
    }
    let project = load_project(api, name).await?;
    let Some(penv) = project
        .spec
        .environments
        .iter()
        .find(|e| e.name == env.as_str())
    else {
        return Err(ApiError::bad(format!(
            "project `{name}` has no {env} environment in the registry"
        )));
    };
    let image = match (kind, image) {
        (JobKind::Deploy, Some(i)) => Some(i),
        (JobKind::Deploy, None) => Some(format!(
            "{}:{}",
            project.spec.image,
            branch_tag(penv.effective_branch())
        )),
        (JobKind::Rollback, _) => None,
    };
    let target = format!("{name}/{env}");
    // A rolling rollback with nothing to go back to is refused now, not as a failed job.
    if kind == JobKind::Rollback && !dry_run && super::hosts::has_hosts(api).await {
        let unit = format!("{name}-{env}");
        if super::hosts::rollback_plan(api, &unit).await?.1.is_none() {
            let e = ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                codes::UNPROCESSABLE,
                no_host_rollback(name, env),
            );
            api.audit(
                &caller,
                action,
                &target,
                Some(name),
                &params,
                &format!("refused: {}", e.message),
            )
            .await;
            return Err(e);
        }
    }
    if dry_run {
        let p = plan(api, &project, env, kind, image.as_deref().unwrap_or("")).await?;
        return Ok(Json(p).into_response());
    }
    if let Some(i) = &image {
        ImageRef::parse(i).map_err(|e| ApiError::bad(format!("image: {e}")))?;
    }
    let stored = Stored {
        kind,
        environment: env.to_string(),
        image: image.clone(),
        sha,
        lock_timeout_ms: u64::try_from(lock_timeout.as_millis()).unwrap_or(u64::MAX),
        actor: caller.name.clone(),
    };
    let request = serde_json::to_value(&stored).map_err(ApiError::internal)?;
    let (n, e, who) = (name.to_owned(), env.to_string(), caller.name.clone());
    let job = api
        .db
        .run(move |c| {
            let id = db::insert_job(
                c,
                &db::NewJob {
                    kind,
                    project: &n,
                    environment: &e,
                    requested_by: &who,
                    request: &request,
                    image: image.as_deref(),
                },
                now_ms(),
            )?;
            db::job(c, id)
        })
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::internal("job vanished"))?;
    api.bump();
    api.wake.notify_one();
    api.audit(
        &caller,
        action,
        &target,
        Some(name),
        &params,
        &format!("queued job {}", job.id),
    )
    .await;
    Ok((StatusCode::ACCEPTED, Json(job)).into_response())
}

pub async fn deploy(
    State(api): State<Arc<Api>>,
    h: HeaderMap,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    project_name(&name)?;
    let req: DeployRequest = parse_body(&body)?;
    let params = serde_json::to_value(&req).unwrap_or_default();
    request_job(
        &api,
        &h,
        &name,
        Ask {
            kind: JobKind::Deploy,
            env_name: &req.environment,
            image: req.image.clone(),
            sha: req.sha.clone(),
            dry_run: req.dry_run,
            lock_timeout: req.lock_timeout.as_deref(),
            params,
        },
    )
    .await
}

pub async fn rollback(
    State(api): State<Arc<Api>>,
    h: HeaderMap,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    project_name(&name)?;
    let req: RollbackRequest = parse_body(&body)?;
    let params = serde_json::to_value(&req).unwrap_or_default();
    request_job(
        &api,
        &h,
        &name,
        Ask {
            kind: JobKind::Rollback,
            env_name: &req.environment,
            image: None,
            sha: None,
            dry_run: req.dry_run,
            lock_timeout: req.lock_timeout.as_deref(),
            params,
        },
    )
    .await
}

pub async fn list(
    State(api): State<Arc<Api>>,
    h: HeaderMap,
    Query(q): Query<JobsQuery>,
) -> Result<Json<Vec<Job>>, ApiError> {
    if let Some(p) = &q.project {
        project_name(p)?;
    }
    api.authorize(&h, Action::JobList, q.project.as_deref())
        .await?;
    let limit = q.limit.unwrap_or(100).min(10_000);
    Ok(Json(
        api.db
            .run(move |c| db::jobs(c, q.project.as_deref(), limit))
            .await
            .map_err(ApiError::internal)?,
    ))
}

fn job_id(raw: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>()
        .ok()
        .filter(|i| *i > 0)
        .ok_or_else(|| ApiError::bad("job id is not a positive number; see `GET /api/v1/jobs`"))
}

async fn find(api: &Api, id: i64) -> Result<Job, ApiError> {
    api.db
        .run(move |c| db::job(c, id))
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::not_found(format!("no job {id}")))
}

pub async fn get(
    State(api): State<Arc<Api>>,
    h: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Job>, ApiError> {
    let id = job_id(&id)?;
    api.authorize(&h, Action::JobGet, None).await?;
    Ok(Json(find(&api, id).await?))
}

/// NDJSON of the job's events from the first; ends after the terminal one.
pub async fn events(
    State(api): State<Arc<Api>>,
    h: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = job_id(&id)?;
    api.authorize(&h, Action::JobGet, None).await?;
    find(&api, id).await?;
    let permit = api.stream_permit()?;
    let mut rx = api.events.subscribe();
    let (tx, out) = mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    let api2 = api.clone();
    tokio::spawn(async move {
        let _permit = permit;
        let mut last = 0;
        loop {
            rx.borrow_and_update();
            let evs = match api2.db.run(move |c| db::events_after(c, id, last)).await {
                Ok(e) => e,
                Err(e) => {
                    tracing::error!(error = %e, job = id, "cannot read job events");
                    return;
                }
            };
            for e in evs {
                last = e.seq;
                let terminal = e.kind.is_terminal();
                let mut line = serde_json::to_vec(&e).unwrap_or_default();
                line.push(b'\n');
                if tx.send(Ok(Bytes::from(line))).await.is_err() || terminal {
                    return;
                }
            }
            tokio::select! {
                r = rx.changed() => if r.is_err() { return },
                () = tx.closed() => return,
                () = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
        }
    });
    Ok(ndjson(out))
}

/// A streamed NDJSON response from a channel of chunks.
pub fn ndjson(rx: mpsc::Receiver<Result<Bytes, std::io::Error>>) -> Response {
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let mut r = Response::new(Body::from_stream(stream));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(codeb_api::NDJSON),
    );
    r
}

// ---------------------------------------------------------------------------------------
// The runner

/// Runs queued jobs until `shutdown`; at most `job_concurrency` at once.
pub async fn run_queue(api: Arc<Api>, mut shutdown: watch::Receiver<bool>) {
    let mut running: HashSet<i64> = HashSet::new();
    let mut tasks: JoinSet<i64> = JoinSet::new();
    loop {
        if *shutdown.borrow() {
            break;
        }
        match api.db.run(|c| db::queued_jobs(c)).await {
            Ok(ids) => {
                for id in ids {
                    if running.len() >= api.cfg.job_concurrency {
                        break;
                    }
                    if running.contains(&id) {
                        continue;
                    }
                    let claimed = api
                        .db
                        .run(move |c| db::start_job(c, id, now_ms()))
                        .await
                        .unwrap_or(false);
                    if !claimed {
                        continue;
                    }
                    api.bump();
                    running.insert(id);
                    let a = api.clone();
                    tasks.spawn(async move {
                        run_job(&a, id).await;
                        id
                    });
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot read queued API jobs"),
        }
        tokio::select! {
            () = api.wake.notified() => {}
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                if let Ok(id) = done { running.remove(&id); }
            }
            _ = shutdown.changed() => {}
            () = tokio::time::sleep(Duration::from_secs(30)) => {}
        }
    }
    // Jobs still running are left `running`: the next start reports them interrupted.
    tasks.abort_all();
}

async fn event(api: &Api, id: i64, kind: JobEventKind) {
    let r = api
        .db
        .run(move |c| db::push_event(c, id, now_ms(), &kind).map_err(Into::into))
        .await;
    if let Err(e) = r {
        tracing::error!(error = %e, job = id, "cannot store a job event");
    }
    api.bump();
}

async fn finish(api: &Api, id: i64, state: JobState, digest: Option<String>, ev: JobEventKind) {
    let message = match &ev {
        JobEventKind::Done { message, .. }
        | JobEventKind::Failed { message, .. }
        | JobEventKind::Interrupted { message } => message.clone(),
        _ => String::new(),
    };
    let r = api
        .db
        .run(move |c| db::finish_job(c, id, state, digest.as_deref(), &message, &ev, now_ms()))
        .await;
    if let Err(e) = r {
        tracing::error!(error = %e, job = id, "cannot record the end of a job");
    }
    api.bump();
}

/// Waits while another process holds the target's lock, reporting the holder; returns an
/// error message when `timeout` passes first.
async fn wait_for_lock(api: &Api, id: i64, unit: &str, timeout: Duration) -> Result<(), String> {
    let state_dir = api.state_dir();
    // The lock file exactly as the engine (and `codeb-quadlet-update`) opens it: created
    // 0600 in the private state dir, never written; the holder names itself in `.holder`.
    if codeb_host::lockfile::private_dir(&state_dir).is_err() {
        return Ok(()); // the engine reports it properly
    }
    let path = state_dir.join(format!("{unit}.lock"));
    let holder_path = state_dir.join(format!("{unit}.holder"));
    let Ok(file) = codeb_host::lockfile::open_lock(&path, 0o600) else {
        return Ok(());
    };
    let start = Instant::now();
    let mut told: Option<String> = None;
    loop {
        match file.try_lock() {
            Ok(()) => {
                let _ = file.unlock();
                return Ok(());
            }
            Err(TryLockError::WouldBlock) => {
                let who = std::fs::read_to_string(&holder_path).unwrap_or_default();
                let who = if who.trim().is_empty() {
                    "unknown holder".to_owned()
                } else {
                    who.trim().to_owned()
                };
                if told.as_deref() != Some(&who) {
                    event(
                        api,
                        id,
                        JobEventKind::Waiting {
                            holder: who.clone(),
                        },
                    )
                    .await;
                    told = Some(who.clone());
                }
                if start.elapsed() >= timeout {
                    return Err(format!(
                        "another deploy of {unit} holds the lock ({who}); waited {}; try again later or raise lock_timeout",
                        humantime::format_duration(Duration::from_secs(start.elapsed().as_secs()))
                    ));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(TryLockError::Error(_)) => return Ok(()),
        }
    }
}

async fn run_job(api: &Arc<Api>, id: i64) {
    let fail = |code: &str, message: String| JobEventKind::Failed {
        code: code.to_owned(),
        message,
    };
    let loaded = api
        .db
        .run(move |c| Ok((db::job(c, id)?, db::job_request(c, id)?)))
        .await;
    let (job, stored) = match loaded {
        Ok((Some(j), Some(r))) => match serde_json::from_value::<Stored>(r) {
            Ok(s) => (j, s),
            Err(e) => {
                finish(
                    api,
                    id,
                    JobState::Failed,
                    None,
                    fail(codes::INTERNAL, format!("unreadable job: {e}")),
                )
                .await;
                return;
            }
        },
        _ => return,
    };
    let (project, env) = match (
        project_name(&job.project),
        environment(&stored.environment),
        load_project(api, &job.project).await,
    ) {
        (Ok(p), Ok(e), Ok(spec)) => ((p, spec), e),
        (_, _, Err(e)) | (Err(e), _, _) | (_, Err(e), _) => {
            finish(api, id, JobState::Failed, None, fail(e.code, e.message)).await;
            return;
        }
    };
    let (name, spec) = project;
    let unit = format!("{name}-{env}");
    let lock_timeout = Duration::from_millis(stored.lock_timeout_ms);
    if super::hosts::has_hosts(api).await {
        roll(api, id, &spec, env, &stored, &unit, lock_timeout).await;
        return;
    }
    if let Err(m) = wait_for_lock(api, id, &unit, lock_timeout).await {
        finish(
            api,
            id,
            JobState::Failed,
            None,
            fail(codes::LOCK_TIMEOUT, m),
        )
        .await;
        return;
    }
    let engine = match Engine::new(api.loc.clone()).await {
        Ok(e) => e,
        Err(e) => {
            finish(
                api,
                id,
                JobState::Failed,
                None,
                fail(codes::INTERNAL, e.to_string()),
            )
            .await;
            return;
        }
    };
    let penv = spec
        .spec
        .environments
        .iter()
        .find(|e| e.name == env.as_str());
    let expect: Vec<Expectation> = stored
        .sha
        .as_deref()
        .and_then(|s| Expectation::new("version", s).ok())
        .into_iter()
        .collect();
    let opts = DeployOptions {
        project: name.clone(),
        environment: env,
        pr: None,
        image: stored.image.clone().unwrap_or_default(),
        container_port: spec.spec.container_port,
        env_file: penv.and_then(|e| e.env_file.as_ref()).map(Into::into),
        health_path: spec.spec.health_path.clone(),
        strategy: None,
        health_deadline: api.cfg.health_deadline,
        health_interval: api.cfg.health_interval,
        successes: api.cfg.health_successes,
        expect,
        health_cmd: api.cfg.health_cmd.clone(),
        drain: api.cfg.drain,
        lock_timeout,
        sha: stored.sha.clone().unwrap_or_default(),
        actor: format!("{} via the API, job {id}", stored.actor),
        listen_host: api.cfg.listen_host.clone(),
        keep_releases: codeb_deploy::KEEP_RELEASES,
        container_keys: Vec::new(),
    };
    // The engine reports progress synchronously; a task stores it.
    let (ptx, mut prx) = mpsc::unbounded_channel::<String>();
    let a2 = api.clone();
    let pump = tokio::spawn(async move {
        while let Some(m) = prx.recv().await {
            event(&a2, id, JobEventKind::Progress { message: m }).await;
        }
    });
    let progress = move |m: &str| {
        let _ = ptx.send(m.to_owned());
    };
    let result = match stored.kind {
        JobKind::Deploy => engine.deploy(&opts, &progress).await,
        JobKind::Rollback => {
            let r = RollbackOptions {
                project: name.clone(),
                environment: env,
                pr: None,
                template: opts.clone(),
            };
            engine.rollback(&r, &progress).await
        }
    };
    drop(progress);
    let _ = pump.await;
    match result {
        Ok(report) => match report.outcome {
            Outcome::Deployed => {
                let msg = format!(
                    "{unit} serves {} on port {} ({} slot)",
                    report.digest,
                    report.port,
                    report.slot.as_str()
                );
                finish(
                    api,
                    id,
                    JobState::Done,
                    Some(report.digest.clone()),
                    JobEventKind::Done {
                        message: msg,
                        digest: Some(report.digest),
                    },
                )
                .await;
            }
            Outcome::RolledBack { reason } => {
                let msg = format!(
                    "the new release was not healthy ({reason}); traffic stayed on the previous release"
                );
                finish(
                    api,
                    id,
                    JobState::Failed,
                    Some(report.digest),
                    fail("unhealthy", msg),
                )
                .await;
            }
        },
        Err(e) => {
            let code = match &e {
                DeployError::Locked { .. } => codes::LOCK_TIMEOUT,
                DeployError::Input(_) | DeployError::NothingToRollBack(_) => codes::UNPROCESSABLE,
                _ => "deploy_failed",
            };
            finish(api, id, JobState::Failed, None, fail(code, e.to_string())).await;
        }
    }
}

/// A deploy or rollback of a project that runs on app hosts: a rolling deploy
/// ([`super::hosts::rolling`]) under the target's deploy lock on this host, of the resolved
/// image, or for a rollback of the release served before the current one
/// ([`super::hosts::rollback_plan`], read under the lock).
async fn roll(
    api: &Arc<Api>,
    id: i64,
    spec: &codeb_api::Project,
    env: Environment,
    stored: &Stored,
    unit: &str,
    lock_timeout: Duration,
) {
    let fail = |code: &str, message: String| JobEventKind::Failed {
        code: code.to_owned(),
        message,
    };
    // A deploy resolves its tag before the lock; a rollback learns its release under it.
    let resolved = if stored.kind == JobKind::Deploy {
        let image = stored.image.clone().unwrap_or_default();
        let r = match ImageRef::parse(&image) {
            Ok(r) => match r.digest() {
                Some(d) => Ok((r.clone(), d.to_string())),
                None => Resolver::new()
                    .resolve(&r, &Auth::from_env(&r))
                    .await
                    .map(|x| (r.clone(), x.digest.to_string()))
                    .map_err(|e| format!("cannot resolve {r} to a digest: {e}")),
            },
            Err(e) => Err(format!("image: {e}")),
        };
        match r {
            Ok((image_ref, digest)) => Some(super::hosts::CurrentRelease {
                image: image_ref.to_string(),
                digest,
                sha: stored.sha.clone().unwrap_or_default(),
            }),
            Err(m) => {
                finish(
                    api,
                    id,
                    JobState::Failed,
                    None,
                    fail(codes::UNPROCESSABLE, m),
                )
                .await;
                return;
            }
        }
    } else {
        None
    };
    let state_dir = api.state_dir();
    let _ = codeb_host::lockfile::private_dir(&state_dir);
    let holder = format!("pid {} (rolling deploy, job {id})", std::process::id());
    let _lock =
        match codeb_deploy::TargetLock::acquire(&state_dir, unit, lock_timeout, &holder).await {
            Ok(l) => l,
            Err(e) => {
                finish(
                    api,
                    id,
                    JobState::Failed,
                    None,
                    fail(codes::LOCK_TIMEOUT, e.to_string()),
                )
                .await;
                return;
            }
        };
    let release = match resolved {
        Some(r) => r,
        None => match super::hosts::rollback_plan(api, unit).await {
            Ok((current, Some(target))) => {
                event(
                    api,
                    id,
                    JobEventKind::Progress {
                        message: format!(
                            "{unit}: rolling back from {} to {} ({}), one host at a time",
                            current.map_or_else(|| "nothing".to_owned(), |c| c.digest),
                            target.digest,
                            target.image
                        ),
                    },
                )
                .await;
                target
            }
            Ok((_, None)) => {
                finish(
                    api,
                    id,
                    JobState::Failed,
                    None,
                    fail(codes::UNPROCESSABLE, no_host_rollback(&spec.spec.name, env)),
                )
                .await;
                return;
            }
            Err(e) => {
                finish(api, id, JobState::Failed, None, fail(e.code, e.message)).await;
                return;
            }
        },
    };
    let digest = release.digest.clone();
    let (ptx, mut prx) = mpsc::unbounded_channel::<String>();
    let a2 = api.clone();
    let pump = tokio::spawn(async move {
        while let Some(m) = prx.recv().await {
            event(&a2, id, JobEventKind::Progress { message: m }).await;
        }
    });
    let progress = move |m: String| {
        let _ = ptx.send(m);
    };
    let actor = format!("{} via the API, job {id}", stored.actor);
    let result = super::hosts::rolling(
        api,
        spec,
        env.as_str(),
        &release,
        stored.kind,
        &actor,
        &progress,
    )
    .await;
    drop(progress);
    let _ = pump.await;
    match result {
        Ok(msg) => {
            finish(
                api,
                id,
                JobState::Done,
                Some(digest.clone()),
                JobEventKind::Done {
                    message: msg,
                    digest: Some(digest),
                },
            )
            .await;
        }
        Err(m) => finish(api, id, JobState::Failed, None, fail("deploy_failed", m)).await,
    }
}

/// Why a rolling rollback of `unit` cannot run, and what to do instead.
fn no_host_rollback(project: &str, env: Environment) -> String {
    format!(
        "{project} {env} runs on app hosts and they have served no earlier release to roll back to; deploy the release you want instead: we deploy {project} --environment {env} --image IMAGE"
    )
}
