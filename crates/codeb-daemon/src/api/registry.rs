//! The registry (projects), and what the host says about it: scan, ports, up, health, SSOT
//! status, sync and validate. Ports are always read from the port manifest at request time;
//! the registry never stores one.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path as FsPath;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use codeb_api::{
    Action, ContainerInfo, EnvironmentScan, HealthQuery, HealthReport, Listener, Ok as OkBody,
    PortConflict, PortEntry, PortsReport, Project, ProjectSpec, Release, ScanData, SsotProject,
    SsotStatus, SsotTarget, SyncFinding, SyncKind, SyncPlan, SyncRequest, TargetHealth, UpReport,
    ValidateProblem, ValidateReport, ValidateRequest,
};
use codeb_core::manifest::{Owner, PortUse, Target};
use codeb_core::{Environment, ProjectName};
use codeb_deploy::{Caddy, History, Slot};
use codeb_host::HostPorts;
use serde_json::json;

use super::db::{self, ProjectRow};
use super::{Api, ApiError, environment, parse_body, project_name, user_name};
use crate::store::now_ms;

/// Manifest ports by (project, environment); empty when the manifest is missing.
fn manifest_ports(api: &Api) -> Result<BTreeMap<(String, String), u16>, ApiError> {
    let doc = match api.loc.manifest.load() {
        Ok(d) => d,
        Err(codeb_host::StoreError::NotFound(_)) => return Ok(BTreeMap::new()),
        Err(e) => return Err(ApiError::internal(e)),
    };
    Ok(doc
        .manifest
        .assignments()
        .into_iter()
        .filter_map(|a| match a.owner {
            Owner::Slot(p, e) => Some(((p.to_string(), e.to_string()), a.port)),
            _ => None,
        })
        .collect())
}

fn to_project(row: ProjectRow, ports: &BTreeMap<(String, String), u16>) -> Project {
    let p = row
        .spec
        .environments
        .iter()
        .filter_map(|e| {
            ports
                .get(&(row.spec.name.clone(), e.name.clone()))
                .map(|port| (e.name.clone(), *port))
        })
        .collect();
    Project {
        spec: row.spec,
        ports: p,
        created_ms: row.created_ms,
        updated_ms: row.updated_ms,
    }
}

/// Every registry project with its manifest ports.
pub async fn list_projects(api: &Api) -> Result<Vec<Project>, ApiError> {
    let rows = api
        .db
        .run(|c| db::projects(c))
        .await
        .map_err(ApiError::internal)?;
    let ports = manifest_ports(api)?;
    Ok(rows.into_iter().map(|r| to_project(r, &ports)).collect())
}

pub async fn list(
    State(api): State<Arc<Api>>,
    h: HeaderMap,
) -> Result<Json<Vec<Project>>, ApiError> {
    api.authorize(&h, Action::ProjectList, None).await?;
    let rows = api
        .db
        .run(|c| db::projects(c))
        .await
        .map_err(ApiError::internal)?;
    let ports = manifest_ports(&api)?;
    Ok(Json(
        rows.into_iter().map(|r| to_project(r, &ports)).collect(),
    ))
}

pub async fn load_project(api: &Api, name: &str) -> Result<Project, ApiError> {
    let n = name.to_owned();
    let row = api
        .db
        .run(move |c| db::project(c, &n))
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "project `{name}` is not in the registry; see `we ssot projects`"
            ))
        })?;
    Ok(to_project(row, &manifest_ports(api)?))
}

pub async fn get(
    State(api): State<Arc<Api>>,
    h: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<Project>, ApiError> {
    project_name(&name)?;
    api.authorize(&h, Action::ProjectGet, Some(&name)).await?;
    Ok(Json(load_project(&api, &name).await?))
}

/// Checks a spec; the 400 names the field and the rule.
fn check_spec(spec: &ProjectSpec) -> Result<(), ApiError> {
    project_name(&spec.name)?;
    if spec.kind.is_empty()
        || spec.kind.len() > 32
        || !spec
            .kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(ApiError::bad(
            "type must be a workflow-gen project type such as `node` or `static` ([a-z0-9-], at most 32)",
        ));
    }
    // Empty: not known yet (`we workflow init` outside a git repository).
    let repo_ok = spec.repository.is_empty()
        || spec.repository.split_once('/').is_some_and(|(o, n)| {
            let part = |s: &str| {
                !s.is_empty()
                    && s.len() <= 100
                    && s != "."
                    && s != ".."
                    && s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            };
            part(o) && part(n)
        });
    if !repo_ok {
        return Err(ApiError::bad(format!(
            "repository {:?} is not a GitHub `owner/name`",
            codeb_health::one_line(&spec.repository, 80)
        )));
    }
    if spec.image.contains('@')
        || spec
            .image
            .rsplit('/')
            .next()
            .is_some_and(|l| l.contains(':'))
    {
        return Err(ApiError::bad(format!(
            "image {:?} has a tag or digest; give the repository only (e.g. ghcr.io/org/app): deploys add the tag",
            codeb_health::one_line(&spec.image, 80)
        )));
    }
    codeb_registry::ImageRef::parse(&format!("{}:tag", spec.image)).map_err(|e| {
        ApiError::bad(format!(
            "image: {e} (give the repository without a tag, e.g. ghcr.io/org/app)"
        ))
    })?;
    if spec.container_port == 0 {
        return Err(ApiError::bad("container_port must be 1-65535"));
    }
    if !spec.health_path.starts_with('/')
        || spec.health_path.len() > 200
        || spec
            .health_path
            .bytes()
            .any(|b| b.is_ascii_control() || b == b' ')
    {
        return Err(ApiError::bad(
            "health_path must start with `/` and hold no spaces or control characters (e.g. /health)",
        ));
    }
    if spec.environments.is_empty() {
        return Err(ApiError::bad(
            "environments is empty: give at least one of production, staging",
        ));
    }
    let mut seen = BTreeSet::new();
    for e in &spec.environments {
        let env = environment(&e.name)?;
        if !seen.insert(env) {
            return Err(ApiError::bad(format!(
                "environment {} is listed twice",
                e.name
            )));
        }
        if e.name != env.as_str() {
            return Err(ApiError::bad(format!(
                "environment {:?}: write it as `{env}`",
                e.name
            )));
        }
        if let Some(f) = &e.env_file
            && (!f.starts_with('/') || f.contains("/../") || f.ends_with("/..") || f.contains('\0'))
        {
            return Err(ApiError::bad(format!(
                "env_file of {} must be an absolute path without `..` components",
                e.name
            )));
        }
        if let Some(b) = &e.branch
            && (b.is_empty()
                || b.len() > 200
                || b.starts_with('-')
                || !b
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || b"-_./".contains(&c))
                || b.contains(".."))
        {
            return Err(ApiError::bad(format!(
                "branch of {} is not a plain git branch name ([A-Za-z0-9._/-], no `..`)",
                e.name
            )));
        }
    }
    for o in &spec.owners {
        user_name(o)?;
    }
    if let Some(k) = &spec.kubernetes {
        k.check().map_err(ApiError::bad)?;
    }
    Ok(())
}

async fn put(
    api: &Api,
    caller: &super::Caller,
    action: Action,
    spec: ProjectSpec,
    create: bool,
) -> Result<Project, ApiError> {
    check_spec(&spec)?;
    let s = spec.clone();
    let r = api
        .db
        .run(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let exists = db::project(&tx, &s.name)?.is_some();
            if create && exists {
                return Ok(Err(ApiError::conflict(format!(
                    "project `{}` exists already; change it with PUT /api/v1/projects/{}",
                    s.name, s.name
                ))));
            }
            if !create && !exists {
                return Ok(Err(ApiError::not_found(format!(
                    "project `{}` is not in the registry; create it with POST /api/v1/projects",
                    s.name
                ))));
            }
            let mut owners = Vec::new();
            for o in &s.owners {
                match db::user_by_name(&tx, o)? {
                    Some(u) => owners.push(u.id),
                    None => {
                        return Ok(Err(ApiError::bad(format!(
                            "owner `{o}` is not a team member; add them first (`we team add`)"
                        ))));
                    }
                }
            }
            db::put_project(&tx, &s, &owners, now_ms())?;
            let row = db::project(&tx, &s.name)?;
            tx.commit()?;
            Ok(Ok(row))
        })
        .await
        .map_err(ApiError::internal)?;
    let params = serde_json::to_value(&spec).unwrap_or_default();
    let target = format!("project:{}", spec.name);
    match r {
        Ok(Some(row)) => {
            api.audit(caller, action, &target, Some(&spec.name), &params, "ok")
                .await;
            Ok(to_project(row, &manifest_ports(api)?))
        }
        Ok(None) => Err(ApiError::internal("project vanished")),
        Err(e) => {
            api.audit(
                caller,
                action,
                &target,
                Some(&spec.name),
                &params,
                &format!("failed: {}", e.message),
            )
            .await;
            Err(e)
        }
    }
}

pub async fn create(
    State(api): State<Arc<Api>>,
    h: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let caller = api.authorize(&h, Action::ProjectCreate, None).await?;
    let spec: ProjectSpec = parse_body(&body)?;
    let p = put(&api, &caller, Action::ProjectCreate, spec, true).await?;
    Ok((StatusCode::CREATED, Json(p)).into_response())
}

pub async fn update(
    State(api): State<Arc<Api>>,
    h: HeaderMap,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Project>, ApiError> {
    project_name(&name)?;
    let caller = api
        .authorize(&h, Action::ProjectUpdate, Some(&name))
        .await?;
    let spec: ProjectSpec = parse_body(&body)?;
    if spec.name != name {
        return Err(ApiError::bad(format!(
            "the body names project {:?} but the path names `{name}`; renaming is not supported",
            codeb_health::one_line(&spec.name, 70)
        )));
    }
    Ok(Json(
        put(&api, &caller, Action::ProjectUpdate, spec, false).await?,
    ))
}

pub async fn remove(
    State(api): State<Arc<Api>>,
    h: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<OkBody>, ApiError> {
    project_name(&name)?;
    let caller = api
        .authorize(&h, Action::ProjectDelete, Some(&name))
        .await?;
    let n = name.clone();
    let gone = api
        .db
        .run(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let g = db::delete_project(&tx, &n)?;
            tx.commit()?;
            Ok(g)
        })
        .await
        .map_err(ApiError::internal)?;
    let target = format!("project:{name}");
    if !gone {
        api.audit(
            &caller,
            Action::ProjectDelete,
            &target,
            Some(&name),
            &json!({}),
            "failed: not found",
        )
        .await;
        return Err(ApiError::not_found(format!(
            "project `{name}` is not in the registry"
        )));
    }
    api.audit(
        &caller,
        Action::ProjectDelete,
        &target,
        Some(&name),
        &json!({}),
        "ok",
    )
    .await;
    Ok(Json(OkBody { ok: true }))
}

// ---------------------------------------------------------------------------------------
// Scan

/// The keys of an env file (`KEY=value` lines, `export` allowed, comments skipped).
fn env_keys(path: &FsPath) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut keys: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let l = l.strip_prefix("export ").unwrap_or(l);
            let (k, _) = l.split_once('=')?;
            let k = k.trim();
            (!k.is_empty()).then(|| k.to_owned())
        })
        .collect();
    keys.sort();
    keys.dedup();
    Ok(keys)
}

fn rfc3339_ms(s: &str) -> Option<i64> {
    let t = humantime::parse_rfc3339_weak(s).ok()?;
    let d = t.duration_since(std::time::UNIX_EPOCH).ok()?;
    i64::try_from(d.as_millis()).ok()
}

/// The release serving a target now, from its deploy state.
pub fn active_release(api: &Api, project: &str, env: &str) -> Option<(Release, History)> {
    let unit = format!("{project}-{env}");
    let h = History::load(&api.state_dir(), &unit).ok()?;
    let a = h.active.as_ref()?;
    let rel = h
        .releases
        .iter()
        .find(|r| r.digest == a.digest && r.outcome == codeb_deploy::ReleaseOutcome::Active);
    let release = Release {
        image: format!(
            "{}@{}",
            a.image.split('@').next().unwrap_or(&a.image),
            a.digest
        ),
        digest: Some(a.digest.clone()),
        sha: Some(a.sha.clone()).filter(|s| !s.is_empty()),
        slot: Some(a.slot.as_str().to_owned()),
        status: "active".into(),
        deployed_ms: rel.and_then(|r| rfc3339_ms(&r.time)),
    };
    Some((release, h))
}

pub async fn scan(
    State(api): State<Arc<Api>>,
    h: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<ScanData>, ApiError> {
    project_name(&name)?;
    api.authorize(&h, Action::Scan, Some(&name)).await?;
    let project = load_project(&api, &name).await?;
    let mut envs = Vec::new();
    for e in &project.spec.environments {
        let (env_keys, env_file_error) = match &e.env_file {
            None => (None, None),
            Some(f) => match env_keys(FsPath::new(f)) {
                Ok(k) => (Some(k), None),
                Err(m) => (None, Some(m)),
            },
        };
        envs.push(EnvironmentScan {
            environment: e.name.clone(),
            manifest_port: project.ports.get(&e.name).copied(),
            deployed: active_release(&api, &name, &e.name).map(|(r, _)| r),
            env_keys,
            env_file_error,
        });
    }
    Ok(Json(ScanData {
        project,
        environments: envs,
    }))
}

// ---------------------------------------------------------------------------------------
// Ports and up

fn ports_report(api: &Api) -> Result<PortsReport, ApiError> {
    let host = HostPorts::read()
        .map_err(|e| ApiError::internal(format!("cannot read listening sockets: {e}")))?;
    let doc = match api.loc.manifest.load() {
        Ok(d) => Some(d),
        Err(codeb_host::StoreError::NotFound(_)) => None,
        Err(e) => return Err(ApiError::internal(e)),
    };
    let mut entries = Vec::new();
    let mut conflicts = Vec::new();
    if let Some(doc) = &doc {
        for a in doc.manifest.assignments() {
            let (project, environment) = match &a.owner {
                Owner::Slot(p, e) => (p.to_string(), e.to_string()),
                Owner::Preview { project, pr, .. } => {
                    (project.to_string(), format!("preview #{pr}"))
                }
                Owner::Reserved(_) => continue,
            };
            let holder = host.holder(a.port).map(|h| h.describe());
            if let PortUse::Busy(by) = host.use_of(&a) {
                conflicts.push(PortConflict {
                    port: a.port,
                    message: format!("{} (line {}) is held by {by}", a.owner, a.line),
                });
            }
            entries.push(PortEntry {
                project,
                environment,
                port: a.port,
                listening: host.is_listening(a.port),
                holder,
            });
        }
    }
    let mut ports: Vec<u16> = host.ports().into_iter().collect();
    ports.sort_unstable();
    let listening = ports
        .into_iter()
        .map(|p| Listener {
            port: p,
            address: "*".into(),
            holder: host.holder(p).map(|h| h.describe()),
        })
        .collect();
    Ok(PortsReport {
        entries,
        listening,
        conflicts,
    })
}

pub async fn ports(
    State(api): State<Arc<Api>>,
    h: HeaderMap,
) -> Result<Json<PortsReport>, ApiError> {
    api.authorize(&h, Action::Up, None).await?;
    let a = api.clone();
    tokio::task::spawn_blocking(move || ports_report(&a))
        .await
        .map_err(ApiError::internal)?
        .map(Json)
}

async fn registry_targets(api: &Api) -> Result<BTreeSet<String>, ApiError> {
    let rows = api
        .db
        .run(|c| db::projects(c))
        .await
        .map_err(ApiError::internal)?;
    Ok(rows
        .iter()
        .flat_map(|r| {
            r.spec
                .environments
                .iter()
                .map(move |e| format!("{}-{}", r.spec.name, e.name))
        })
        .collect())
}

/// Whether a container or unit stem belongs to one of `units` (`<p>-<e>` or its slots).
fn claimed(units: &BTreeSet<String>, name: &str) -> bool {
    let base = name
        .strip_suffix("-blue")
        .or_else(|| name.strip_suffix("-green"))
        .unwrap_or(name);
    units.contains(base)
}

pub async fn up(State(api): State<Arc<Api>>, h: HeaderMap) -> Result<Json<UpReport>, ApiError> {
    api.authorize(&h, Action::Up, None).await?;
    let units = registry_targets(&api).await?;
    let containers = codeb_runtime::Podman::new()
        .codeb_containers()
        .await
        .map_err(ApiError::internal)?
        .into_iter()
        .map(|c| ContainerInfo {
            known: claimed(&units, &c.name),
            name: c.name,
            project: Some(c.project).filter(|s| !s.is_empty()),
            environment: Some(c.environment).filter(|s| !s.is_empty()),
            slot: Some(c.slot).filter(|s| !s.is_empty()),
            image: c.image,
            state: c.state,
        })
        .collect();
    let a = api.clone();
    let ports = tokio::task::spawn_blocking(move || ports_report(&a))
        .await
        .map_err(ApiError::internal)??;
    Ok(Json(UpReport { containers, ports }))
}

// ---------------------------------------------------------------------------------------
// Health

pub async fn health(
    State(api): State<Arc<Api>>,
    h: HeaderMap,
    Query(q): Query<HealthQuery>,
) -> Result<Json<HealthReport>, ApiError> {
    if let Some(p) = &q.project {
        project_name(p)?;
    }
    api.authorize(&h, Action::Health, q.project.as_deref())
        .await?;
    let projects = match &q.project {
        Some(p) => vec![load_project(&api, p).await?],
        None => {
            let rows = api
                .db
                .run(|c| db::projects(c))
                .await
                .map_err(ApiError::internal)?;
            let ports = manifest_ports(&api)?;
            rows.into_iter().map(|r| to_project(r, &ports)).collect()
        }
    };
    let checked = now_ms();
    let mut probes = Vec::new();
    for p in &projects {
        for e in &p.spec.environments {
            let port = p.ports.get(&e.name).copied();
            let url = port.map(|port| format!("http://127.0.0.1:{port}{}", p.spec.health_path));
            let deployed = active_release(&api, &p.spec.name, &e.name).map(|(r, _)| r);
            let (project, env) = (p.spec.name.clone(), e.name.clone());
            probes.push(async move {
                let mut t = TargetHealth {
                    project,
                    environment: env,
                    url: url.clone(),
                    healthy: false,
                    status: None,
                    failure: None,
                    latency_ms: None,
                    last_deploy_ms: deployed.as_ref().and_then(|d| d.deployed_ms),
                    last_deploy_age_s: deployed
                        .as_ref()
                        .and_then(|d| d.deployed_ms)
                        .map(|ms| u64::try_from((checked - ms).max(0) / 1000).unwrap_or(0)),
                    image: deployed.map(|d| d.image),
                };
                let Some(url) = url else {
                    t.failure = Some("no port in the manifest".into());
                    return t;
                };
                let prober = codeb_health::Probe::new(&url)
                    .map(|p| p.with_timeout(Duration::from_secs(5)))
                    .and_then(codeb_health::Prober::new);
                match prober {
                    Err(e) => t.failure = Some(e.to_string()),
                    Ok(pr) => match pr.probe_once().await {
                        Ok(s) => {
                            t.healthy = true;
                            t.status = Some(s.status);
                            t.latency_ms = u64::try_from(s.latency.as_millis()).ok();
                        }
                        Err(f) => t.failure = Some(f.to_string()),
                    },
                }
                t
            });
        }
    }
    let mut targets = Vec::with_capacity(probes.len());
    for p in probes {
        targets.push(p.await);
    }
    Ok(Json(HealthReport {
        checked_ms: checked,
        targets,
        backups: super::backups::kinds(&api).await,
    }))
}

// ---------------------------------------------------------------------------------------
// SSOT

async fn ssot_targets(api: &Api) -> Result<Vec<SsotProject>, ApiError> {
    let rows = api
        .db
        .run(|c| db::projects(c))
        .await
        .map_err(ApiError::internal)?;
    let ports = manifest_ports(api)?;
    let containers = codeb_runtime::Podman::new()
        .codeb_containers()
        .await
        .map_err(ApiError::internal)?;
    let units = unit_files(&api.loc.quadlet_dir);
    let caddy = caddy(api)?;
    let mut out = Vec::new();
    for r in rows {
        let mut envs = Vec::new();
        for e in &r.spec.environments {
            let unit = format!("{}-{}", r.spec.name, e.name);
            let mut only = BTreeSet::new();
            only.insert(unit.clone());
            let route = match &caddy {
                Some(c) => c
                    .upstream(&unit)
                    .await
                    .map_err(ApiError::internal)?
                    .is_some(),
                None => false,
            };
            envs.push(SsotTarget {
                environment: e.name.clone(),
                manifest_port: ports.get(&(r.spec.name.clone(), e.name.clone())).copied(),
                units: units
                    .iter()
                    .filter(|u| claimed(&only, u))
                    .cloned()
                    .collect(),
                containers: containers
                    .iter()
                    .filter(|c| claimed(&only, &c.name))
                    .map(|c| c.name.clone())
                    .collect(),
                route,
            });
        }
        out.push(SsotProject {
            name: r.spec.name.clone(),
            environments: envs,
        });
    }
    Ok(out)
}

fn caddy(api: &Api) -> Result<Option<Caddy>, ApiError> {
    api.loc
        .caddy_admin
        .as_deref()
        .map(|u| Caddy::new(u).map(|c| c.with_lock_file(api.state_dir().join("caddy.lock"))))
        .transpose()
        .map_err(ApiError::internal)
}

/// Stems of the `.container` files in the Quadlet directory.
fn unit_files(dir: &FsPath) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.strip_suffix(".container").map(str::to_owned)
        })
        .collect();
    v.sort();
    v
}

/// What sync finds (and, unless `dry_run`, repairs).
async fn sync(api: &Api, req: &SyncRequest) -> Result<SyncPlan, ApiError> {
    let rows = api
        .db
        .run(|c| db::projects(c))
        .await
        .map_err(ApiError::internal)?;
    let registry: BTreeSet<String> = rows.iter().map(|r| r.spec.name.clone()).collect();
    let units = registry_targets(api).await?;
    let ports = manifest_ports(api)?;
    let mut findings = Vec::new();
    // Manifest entries with no project; registry environments with no port.
    for (p, e) in ports.keys() {
        if !registry.contains(p) {
            findings.push(SyncFinding {
                kind: SyncKind::ManifestWithoutProject,
                target: format!("{p}/{e}"),
                detail: format!(
                    "the manifest gives {p} {e} port {} but the registry has no project `{p}`",
                    ports[&(p.clone(), e.clone())]
                ),
                repair: None,
                repaired: None,
                error: None,
            });
        }
    }
    for r in &rows {
        for e in &r.spec.environments {
            if !ports.contains_key(&(r.spec.name.clone(), e.name.clone())) {
                findings.push(SyncFinding {
                    kind: SyncKind::ProjectWithoutPort,
                    target: format!("{}/{}", r.spec.name, e.name),
                    detail: format!(
                        "no port in the manifest; allocate one: codeb-port-validate --project {} --environment {} --allocate",
                        r.spec.name, e.name
                    ),
                    repair: None,
                    repaired: None,
                    error: None,
                });
            }
        }
    }
    // Orphan containers (previews belong to the webhook side and are left alone).
    let podman = codeb_runtime::Podman::new();
    let containers = podman
        .codeb_containers()
        .await
        .map_err(ApiError::internal)?;
    for c in containers {
        if c.name.contains("-pr-") || claimed(&units, &c.name) {
            continue;
        }
        let running = c.state == "running";
        let remove = !running || req.force;
        let mut f = SyncFinding {
            kind: SyncKind::OrphanContainer,
            target: c.name.clone(),
            detail: format!(
                "container {} ({}, {}) carries codeb's labels but no registry project claims it",
                c.name, c.state, c.image
            ),
            repair: remove.then(|| "remove the container".to_owned()),
            repaired: None,
            error: None,
        };
        if running && !req.force {
            f.detail
                .push_str("; it is running: sync --force removes it");
        }
        if remove && !req.dry_run {
            match podman.remove(&c.name, Duration::from_secs(10)).await {
                Ok(()) => f.repaired = Some(true),
                Err(e) => {
                    f.repaired = Some(false);
                    f.error = Some(e.to_string());
                }
            }
        }
        findings.push(f);
    }
    for u in unit_files(&api.loc.quadlet_dir) {
        if !u.contains("-pr-") && !claimed(&units, &u) {
            findings.push(SyncFinding {
                kind: SyncKind::OrphanUnit,
                target: format!("{u}.container"),
                detail: format!(
                    "Quadlet unit {}/{u}.container belongs to no registry project",
                    api.loc.quadlet_dir.display()
                ),
                repair: None,
                repaired: None,
                error: None,
            });
        }
    }
    // Missing Caddy fronts of deployed targets.
    if let Some(caddy) = caddy(api)? {
        for r in &rows {
            for e in &r.spec.environments {
                let unit = format!("{}-{}", r.spec.name, e.name);
                let Some(public) = ports.get(&(r.spec.name.clone(), e.name.clone())).copied()
                else {
                    continue;
                };
                let Some((_, hist)) = active_release(api, &r.spec.name, &e.name) else {
                    continue;
                };
                let Some(active) = hist.active else { continue };
                let upstream = caddy.upstream(&unit).await.map_err(ApiError::internal)?;
                if upstream.is_some() {
                    continue;
                }
                let slot_port = active.slot.port(public).unwrap_or(public);
                let mut f = SyncFinding {
                    kind: SyncKind::MissingRoute,
                    target: format!("{}/{}", r.spec.name, e.name),
                    detail: format!(
                        "{unit} is deployed ({} slot) but Caddy has no front on port {public}",
                        active.slot.as_str()
                    ),
                    repair: Some(format!(
                        "recreate the front {}:{public} -> 127.0.0.1:{slot_port}",
                        api.cfg.listen_host
                    )),
                    repaired: None,
                    error: None,
                };
                if !req.dry_run {
                    match caddy
                        .route(&unit, &api.cfg.listen_host, public, slot_port)
                        .await
                    {
                        Ok(()) => f.repaired = Some(true),
                        Err(e) => {
                            f.repaired = Some(false);
                            f.error = Some(e.to_string());
                        }
                    }
                }
                findings.push(f);
            }
        }
    }
    Ok(SyncPlan {
        dry_run: req.dry_run,
        findings,
    })
}

pub async fn ssot_status(
    State(api): State<Arc<Api>>,
    h: HeaderMap,
) -> Result<Json<SsotStatus>, ApiError> {
    api.authorize(&h, Action::SsotStatus, None).await?;
    let plan = sync(
        &api,
        &SyncRequest {
            dry_run: true,
            force: false,
        },
    )
    .await?;
    let projects = api
        .db
        .run(|c| db::projects(c))
        .await
        .map_err(ApiError::internal)?
        .len();
    let last = api
        .db
        .run(|c| db::meta_get(c, "last_sync_ms"))
        .await
        .map_err(ApiError::internal)?
        .and_then(|v| v.parse().ok());
    Ok(Json(SsotStatus {
        projects,
        manifest_entries: manifest_ports(&api)?.len(),
        findings: plan.findings.len(),
        in_sync: plan.in_sync(),
        last_sync_ms: last,
    }))
}

pub async fn ssot_projects(
    State(api): State<Arc<Api>>,
    h: HeaderMap,
) -> Result<Json<Vec<SsotProject>>, ApiError> {
    api.authorize(&h, Action::SsotStatus, None).await?;
    Ok(Json(ssot_targets(&api).await?))
}

pub async fn ssot_sync(
    State(api): State<Arc<Api>>,
    h: HeaderMap,
    body: Bytes,
) -> Result<Json<SyncPlan>, ApiError> {
    let caller = api.authorize(&h, Action::SsotSync, None).await?;
    let req: SyncRequest = if body.is_empty() {
        SyncRequest::default()
    } else {
        parse_body(&body)?
    };
    let plan = sync(&api, &req).await?;
    if !req.dry_run {
        let now = now_ms().to_string();
        api.db
            .run(move |c| db::meta_set(c, "last_sync_ms", &now))
            .await
            .map_err(ApiError::internal)?;
        let repaired = plan
            .findings
            .iter()
            .filter(|f| f.repaired == Some(true))
            .count();
        api.audit(
            &caller,
            Action::SsotSync,
            "ssot",
            None,
            &serde_json::to_value(&req).unwrap_or_default(),
            &format!(
                "ok: {} finding(s), {repaired} repaired",
                plan.findings.len()
            ),
        )
        .await;
    }
    Ok(Json(plan))
}

/// Registry-side problems of one spec, with the fix `validate --fix` makes.
fn problems_of(
    spec: &ProjectSpec,
    users: &BTreeSet<String>,
) -> (Vec<ValidateProblem>, Option<ProjectSpec>) {
    let mut out = Vec::new();
    let mut fixed = spec.clone();
    let mut changed = false;
    let mut p = |field: &str, message: String, fix: Option<&str>| {
        out.push(ValidateProblem {
            project: spec.name.clone(),
            field: field.into(),
            message,
            fix: fix.map(str::to_owned),
            fixed: false,
        });
    };
    if !spec.health_path.starts_with('/') {
        p(
            "health_path",
            format!("{:?} does not start with `/`", spec.health_path),
            Some("prefix `/`"),
        );
        fixed.health_path = format!("/{}", spec.health_path);
        changed = true;
    }
    let mut seen = BTreeSet::new();
    let mut envs = Vec::new();
    for e in &spec.environments {
        match e.name.parse::<Environment>() {
            Ok(env @ (Environment::Production | Environment::Staging)) => {
                if env.as_str() != e.name {
                    p(
                        "environments",
                        format!("`{}` is spelled `{env}`", e.name),
                        Some("rename"),
                    );
                    changed = true;
                }
                if !seen.insert(env) {
                    p(
                        "environments",
                        format!("{env} is listed twice"),
                        Some("keep the first"),
                    );
                    changed = true;
                    continue;
                }
                let mut e2 = e.clone();
                e2.name = env.as_str().into();
                envs.push(e2);
            }
            _ => {
                p(
                    "environments",
                    format!("`{}` is not production or staging", e.name),
                    None,
                );
                envs.push(e.clone());
            }
        }
    }
    fixed.environments = envs;
    for o in &spec.owners {
        if !users.contains(o) {
            p(
                "owners",
                format!("owner `{o}` is not a team member"),
                Some("drop the owner"),
            );
        }
    }
    if codeb_registry::ImageRef::parse(&format!("{}:tag", spec.image)).is_err() {
        p(
            "image",
            format!("{:?} is not an image reference", spec.image),
            None,
        );
    }
    if ProjectName::new(&spec.name).is_err() {
        p("name", "not a DNS label".into(), None);
    }
    (out, changed.then_some(fixed))
}

pub async fn ssot_validate(
    State(api): State<Arc<Api>>,
    h: HeaderMap,
    body: Bytes,
) -> Result<Json<ValidateReport>, ApiError> {
    let req: ValidateRequest = if body.is_empty() {
        ValidateRequest::default()
    } else {
        parse_body(&body)?
    };
    let action = if req.fix {
        Action::SsotFix
    } else {
        Action::SsotValidate
    };
    let caller = api.authorize(&h, action, None).await?;
    let fix = req.fix;
    let problems = api
        .db
        .run(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let users: BTreeSet<String> = db::users(&tx)?.into_iter().map(|u| u.name).collect();
            let mut all = Vec::new();
            for row in db::projects(&tx)? {
                let (mut ps, fixed) = problems_of(&row.spec, &users);
                if fix {
                    if let Some(f) = fixed {
                        let owners: Vec<i64> = f
                            .owners
                            .iter()
                            .filter_map(|o| db::user_by_name(&tx, o).ok().flatten().map(|u| u.id))
                            .collect();
                        db::put_project(&tx, &f, &owners, now_ms())?;
                    }
                    for p in ps.iter_mut() {
                        p.fixed = p.fix.is_some();
                    }
                }
                all.extend(ps);
            }
            tx.commit()?;
            Ok(all)
        })
        .await
        .map_err(ApiError::internal)?;
    let mut problems = problems;
    problems.extend(super::provision::problems(&api).await?);
    if fix {
        let n = problems.iter().filter(|p| p.fixed).count();
        api.audit(
            &caller,
            Action::SsotFix,
            "registry",
            None,
            &json!({"fix": true}),
            &format!("ok: {n} fixed"),
        )
        .await;
    }
    Ok(Json(ValidateReport { problems }))
}

/// The manifest target for a project environment.
pub fn target(project: &ProjectName, env: Environment) -> Target {
    Target {
        project: project.clone(),
        environment: env,
        pr: None,
    }
}

/// The slot a deploy would start in, given the strategy and the target's history.
pub fn next_slot(blue_green: bool, hist: Option<&History>) -> Slot {
    match hist.and_then(|h| h.active.as_ref()) {
        Some(a) if blue_green => a.slot.other(),
        Some(a) => a.slot,
        None => Slot::Blue,
    }
}
