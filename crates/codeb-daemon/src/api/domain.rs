//! `we domain`: DNS records in PowerDNS and an HTTPS route in Caddy for a project, set up
//! by one request (`POST /api/v1/domains`), listed, removed, and the zones codeb manages.
//!
//! The order makes a setup all-or-nothing:
//! 1. every check that can refuse it (name, managed zone, project, its production port in
//!    the manifest, a domain owned by another project, Caddy configured), before anything
//!    changes;
//! 2. DNS first: the name's A (and AAAA) rrsets are replaced through PowerDNS's API. When
//!    PowerDNS is down or answers 401/422, nothing else happens: no Caddy route is left
//!    pointing at a name without DNS;
//! 3. then the route: recorded in `.codeb/routes/` (so every route restore rebuilds it) and
//!    added to Caddy on the `codeb-domains` server (automatic HTTPS on). When Caddy fails,
//!    the record is forgotten and the DNS change is rolled back to what PowerDNS held
//!    before; if that rollback fails too, the domain is registered half-done and the answer
//!    names the command that finishes it (`we domain setup ...`) and the one that undoes it
//!    (`we domain remove ...`);
//! 4. the registry row (`api_domains`) and the audit entry.
//!
//! Re-running a setup that is in place changes nothing (`changed: false`). A remove takes
//! the route away first, then the records, then the row.
//!
//! Caddy's on-demand TLS, when the operator enables it, asks `GET /api/v1/tls/ask?domain=D`
//! (no token): 200 only for a domain in the registry, 404 otherwise (an `ask` that approves
//! everything lets anyone make Caddy exhaust the ACME rate limit).
//!
//! Routes are rebuilt from the registry at the daemon's start and every minute
//! ([`restore`]), and from their `.codeb/routes/` records by every route restore
//! (`codeb-quadlet-update restore-routes`, the boot unit, the preview reconcile).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use codeb_api::domain::{
    Domain, DomainRemoveQuery, DomainRemoved, DomainSetup, DomainSetupResult, DomainStatus, Zone,
};
use codeb_api::{Action, codes};
use codeb_dns::{DomainName, Pdns, PdnsError};
use codeb_secret::Secret;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::watch;

use super::db::DbError;
use super::{Api, ApiError, Caller, parse_body, project_name};
use crate::store::now_ms;

/// The Caddy server that holds every domain route.
pub const SERVER: &str = "codeb-domains";

/// `[domains]` in the daemon's config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainConfig {
    /// PowerDNS's webserver (`http://127.0.0.1:8081`).
    pub pdns_url: String,
    #[serde(default = "default_server_id")]
    pub pdns_server_id: String,
    /// A file (mode 0600) holding PowerDNS's `api-key`; relative to the config file.
    pub pdns_key_file: PathBuf,
    /// The zones codeb manages (`we domain zones`); a domain must lie in one.
    pub zones: Vec<String>,
    /// The app server's address for A records.
    pub ipv4: Option<Ipv4Addr>,
    /// And for AAAA records, when it has one.
    pub ipv6: Option<Ipv6Addr>,
    #[serde(default = "default_ttl")]
    pub ttl: u32,
    /// Where Caddy serves the domains over HTTPS.
    #[serde(default = "default_https_listen")]
    pub https_listen: String,
    /// Where a TLS handshake reaches that listener from this host, for the certificate
    /// expiry in `we domain list` [default: 127.0.0.1 and the port of https_listen].
    pub https_probe: Option<String>,
}

fn default_server_id() -> String {
    "localhost".into()
}
fn default_ttl() -> u32 {
    300
}
fn default_https_listen() -> String {
    ":443".into()
}

/// `[domains]` resolved: the key read, the zones parsed.
#[derive(Debug, Clone)]
pub struct DomainSettings {
    pub pdns_url: String,
    pub pdns_server_id: String,
    pub pdns_key_file: PathBuf,
    pub key: Secret,
    pub zones: Vec<DomainName>,
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
    pub ttl: u32,
    pub https_listen: String,
    pub https_probe: String,
}

impl DomainConfig {
    /// Reads the key file (refused unless only its owner may read it) and checks the
    /// rest; the message names the key and the fix.
    pub fn resolve(self, base: &Path) -> Result<DomainSettings, String> {
        use std::os::unix::fs::PermissionsExt;
        let key_file = base.join(&self.pdns_key_file);
        let meta = std::fs::metadata(&key_file).map_err(|e| {
            format!(
                "pdns_key_file {}: {e}; write PowerDNS's api-key there (mode 0600)",
                key_file.display()
            )
        })?;
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(format!(
                "pdns_key_file {} has mode {mode:04o}; it holds a secret: chmod 600 {}",
                key_file.display(),
                key_file.display()
            ));
        }
        let key = std::fs::read_to_string(&key_file)
            .map_err(|e| format!("pdns_key_file {}: {e}", key_file.display()))?
            .trim()
            .to_owned();
        if key.is_empty() {
            return Err(format!(
                "pdns_key_file {} is empty; write PowerDNS's api-key there",
                key_file.display()
            ));
        }
        if !(self.pdns_url.starts_with("http://") || self.pdns_url.starts_with("https://")) {
            return Err(format!(
                "pdns_url {:?} is not an http(s) URL; write e.g. \"http://127.0.0.1:8081\"",
                self.pdns_url
            ));
        }
        if self.zones.is_empty() {
            return Err(
                "zones is empty; list the zones codeb manages, e.g. zones = [\"codeb.kr\"]".into(),
            );
        }
        let zones = self
            .zones
            .iter()
            .map(|z| codeb_dns::name::parse_zone(z).map_err(|e| format!("zones: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        if self.ipv4.is_none() && self.ipv6.is_none() {
            return Err(
                "give the app server's address: ipv4 = \"203.0.113.10\" (and ipv6 when it has one)"
                    .into(),
            );
        }
        let port = self
            .https_listen
            .rsplit(':')
            .next()
            .and_then(|p| p.parse::<u16>().ok())
            .ok_or_else(|| {
                format!(
                    "https_listen {:?} has no port; write e.g. \":443\"",
                    self.https_listen
                )
            })?;
        Ok(DomainSettings {
            pdns_url: self.pdns_url,
            pdns_server_id: self.pdns_server_id,
            pdns_key_file: key_file,
            key: Secret::new(key),
            zones,
            ipv4: self.ipv4,
            ipv6: self.ipv6,
            ttl: self.ttl.max(1),
            https_listen: self.https_listen,
            https_probe: self
                .https_probe
                .unwrap_or_else(|| format!("127.0.0.1:{port}")),
        })
    }
}

/// What the handlers share.
pub struct Domains {
    pub settings: DomainSettings,
    pub pdns: Pdns,
    /// Setups and removes run one at a time (two setups of one name for two projects must
    /// not both pass the ownership check).
    lock: tokio::sync::Mutex<()>,
}

impl Domains {
    pub fn new(settings: DomainSettings) -> Result<Self, String> {
        let pdns = Pdns::new(
            &settings.pdns_url,
            &settings.pdns_server_id,
            settings.key.clone(),
        )?;
        Ok(Self {
            settings,
            pdns,
            lock: tokio::sync::Mutex::new(()),
        })
    }

    fn want_a(&self) -> Vec<String> {
        self.settings.ipv4.iter().map(ToString::to_string).collect()
    }

    fn want_aaaa(&self) -> Vec<String> {
        self.settings.ipv6.iter().map(ToString::to_string).collect()
    }
}

/// The DNS of preview host names, when `[previews] domain_pattern`'s zone part (after the
/// last placeholder) lies in a managed zone: `pr-<N>.<zone part>` records are then written
/// with each preview and removed with it.
pub fn preview_dns(
    d: &DomainSettings,
    previews: &codeb_previews::PreviewConfig,
) -> Result<Option<codeb_previews::PreviewDns>, String> {
    let Some(suffix) = previews
        .domain_pattern
        .rsplit_once('}')
        .map(|(_, rest)| rest.trim_start_matches('.'))
        .filter(|s| !s.is_empty())
    else {
        return Ok(None);
    };
    let Ok(suffix) = DomainName::parse(suffix) else {
        return Ok(None);
    };
    let Some(zone) = suffix.zone_in(&d.zones) else {
        return Ok(None);
    };
    Ok(Some(codeb_previews::PreviewDns {
        pdns: Pdns::new(&d.pdns_url, &d.pdns_server_id, d.key.clone())?,
        zone: zone.clone(),
        ipv4: d.ipv4,
        ipv6: d.ipv6,
        ttl: d.ttl,
    }))
}

// ---------------------------------------------------------------------------------------
// The registry table

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS api_domains (
    domain     TEXT PRIMARY KEY,
    project    TEXT NOT NULL,
    zone       TEXT NOT NULL,
    addresses  TEXT NOT NULL,
    upstream   INTEGER NOT NULL,
    route_id   TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    created_by TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS api_domains_project ON api_domains(project);
";

/// Creates `api_domains` when missing.
pub fn migrate(c: &Connection) -> Result<(), DbError> {
    c.execute_batch(SCHEMA)?;
    Ok(())
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Domain> {
    let addresses: String = r.get(3)?;
    Ok(Domain {
        domain: r.get(0)?,
        project: r.get(1)?,
        zone: r.get(2)?,
        addresses: serde_json::from_str(&addresses).unwrap_or_default(),
        upstream_port: r.get(4)?,
        route_id: r.get(5)?,
        created_ms: r.get(6)?,
        created_by: r.get(7)?,
    })
}

const COLUMNS: &str =
    "domain, project, zone, addresses, upstream, route_id, created_ms, created_by";

pub fn get(c: &Connection, domain: &str) -> Result<Option<Domain>, DbError> {
    Ok(c.query_row(
        &format!("SELECT {COLUMNS} FROM api_domains WHERE domain = ?1"),
        [domain],
        row,
    )
    .optional()?)
}

pub fn all(c: &Connection) -> Result<Vec<Domain>, DbError> {
    let mut s = c.prepare(&format!(
        "SELECT {COLUMNS} FROM api_domains ORDER BY domain"
    ))?;
    let rows = s.query_map([], row)?.collect::<Result<_, _>>()?;
    Ok(rows)
}

fn put(c: &Connection, d: &Domain) -> Result<(), DbError> {
    c.execute(
        "INSERT INTO api_domains (domain, project, zone, addresses, upstream, route_id, created_ms, created_by)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (domain) DO UPDATE SET project = excluded.project, zone = excluded.zone,
             addresses = excluded.addresses, upstream = excluded.upstream, route_id = excluded.route_id",
        params![
            d.domain,
            d.project,
            d.zone,
            serde_json::to_string(&d.addresses)?,
            d.upstream_port,
            d.route_id,
            d.created_ms,
            d.created_by
        ],
    )?;
    Ok(())
}

fn delete(c: &Connection, domain: &str) -> Result<(), DbError> {
    c.execute("DELETE FROM api_domains WHERE domain = ?1", [domain])?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Helpers

fn not_configured() -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        codes::UNPROCESSABLE,
        "domains are not configured on this server: add a [domains] section to the daemon's config \
         (pdns_url, pdns_key_file, zones, ipv4) and restart codeb-daemon",
    )
}

fn domains(api: &Api) -> Result<&Domains, ApiError> {
    api.domains.as_deref().ok_or_else(not_configured)
}

fn upstream(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_GATEWAY, codes::UPSTREAM, message)
}

fn name(input: &str) -> Result<DomainName, ApiError> {
    DomainName::parse(input)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, codes::INVALID_NAME, e.to_string()))
}

fn caddy(api: &Api) -> Result<codeb_deploy::Caddy, ApiError> {
    let Some(admin) = api.loc.caddy_admin.as_deref() else {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            codes::UNPROCESSABLE,
            "domain routes need Caddy's admin API: set [previews] caddy_admin in the daemon's config (unix//run/caddy/admin.sock)",
        ));
    };
    codeb_deploy::Caddy::new(admin)
        .map(|c| c.with_lock_file(api.state_dir().join("caddy.lock")))
        .map_err(|e| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                codes::UNPROCESSABLE,
                e.to_string(),
            )
        })
}

/// The route id of a domain: `codeb-domain-<name>`.
pub fn route_id(name: &DomainName) -> String {
    format!("codeb-domain-{name}")
}

fn host_route(d: &Domains, domain: &Domain) -> codeb_deploy::HostRoute {
    codeb_deploy::HostRoute {
        server: SERVER.into(),
        listen: d.settings.https_listen.clone(),
        id: domain.route_id.clone(),
        host: domain.domain.clone(),
        upstream: domain.upstream_port,
        tls: true,
    }
}

/// The loopback port the route `id` proxies to, if the route exists.
async fn route_upstream(
    caddy: &codeb_deploy::Caddy,
    id: &str,
) -> Result<Option<u16>, codeb_deploy::DeployError> {
    Ok(caddy.get_id(id).await?.map(|v| {
        v.pointer("/handle/0/upstreams/0/dial")
            .and_then(Value::as_str)
            .and_then(|d| d.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or(0)
    }))
}

fn one_line(s: &str) -> String {
    codeb_health::one_line(s, 300)
}

// ---------------------------------------------------------------------------------------
// Setup

pub async fn setup(
    State(api): State<Arc<Api>>,
    h: HeaderMap,
    body: Bytes,
) -> Result<Json<DomainSetupResult>, ApiError> {
    let req: DomainSetup = parse_body(&body)?;
    project_name(&req.project)?;
    let caller = api
        .authorize(&h, Action::DomainSetup, Some(&req.project))
        .await?;
    let params = json!({ "project": req.project, "domain": req.domain });
    let r = setup_inner(&api, &caller, &req).await;
    let (target, result) = match &r {
        Ok(done) => (
            format!("domain:{}", done.domain.domain),
            if done.changed { "ok" } else { "unchanged" }.to_owned(),
        ),
        Err(e) => (
            format!("domain:{}", one_line(&req.domain)),
            format!("failed: {}", one_line(&e.message)),
        ),
    };
    api.audit(
        &caller,
        Action::DomainSetup,
        &target,
        Some(&req.project),
        &params,
        &result,
    )
    .await;
    r.map(Json)
}

async fn setup_inner(
    api: &Api,
    caller: &Caller,
    req: &DomainSetup,
) -> Result<DomainSetupResult, ApiError> {
    let d = domains(api)?;
    let name = name(&req.domain)?;
    let zone = name.zone_in(&d.settings.zones).ok_or_else(|| {
        ApiError::bad(format!(
            "domain {name} is outside every zone codeb manages ({}; see `we domain zones`): use a name in one of them, or add its zone to [domains] zones in the daemon's config",
            d.settings
                .zones
                .iter()
                .map(DomainName::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })?;
    let project = super::registry::load_project(api, &req.project).await?;
    let Some(&port) = project.ports.get("production") else {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            codes::UNPROCESSABLE,
            format!(
                "project `{p}` has no production port in the port manifest, so there is nothing to route {name} to; allocate one: codeb-port-validate --project {p} --environment production --allocate",
                p = req.project
            ),
        ));
    };
    let caddy = caddy(api)?;
    let _serial = d.lock.lock().await;
    let key = name.as_str().to_owned();
    let existing = api
        .db
        .run(move |c| get(c, &key))
        .await
        .map_err(ApiError::internal)?;
    if let Some(e) = &existing
        && e.project != req.project
    {
        return Err(ApiError::conflict(format!(
            "domain {name} belongs to project `{}`; nothing was changed. Remove it from that project first (`we domain remove {name} --project {}`) or pick another name",
            e.project, e.project
        )));
    }
    let want_a = d.want_a();
    let want_aaaa = d.want_aaaa();
    let domain = Domain {
        domain: name.as_str().to_owned(),
        project: req.project.clone(),
        zone: zone.as_str().to_owned(),
        addresses: want_a.iter().chain(&want_aaaa).cloned().collect(),
        upstream_port: port,
        route_id: route_id(&name),
        created_ms: existing.as_ref().map_or_else(now_ms, |e| e.created_ms),
        created_by: existing
            .as_ref()
            .map_or_else(|| caller.name.clone(), |e| e.created_by.clone()),
    };
    let pdns_failed = |e: PdnsError| {
        upstream(format!(
            "{e}. Nothing was changed: no DNS record was written and no Caddy route was added"
        ))
    };
    // What PowerDNS holds now (also what a rollback puts back).
    let zone_s = zone.as_str();
    let had_a = d
        .pdns
        .rrset(zone_s, name.as_str(), "A")
        .await
        .map_err(pdns_failed)?;
    let had_aaaa = d
        .pdns
        .rrset(zone_s, name.as_str(), "AAAA")
        .await
        .map_err(pdns_failed)?;
    let had_route = route_upstream(&caddy, &domain.route_id)
        .await
        .map_err(|e| {
            upstream(format!(
                "{e}. Nothing was changed: no DNS record was written and no Caddy route was added"
            ))
        })?;
    let mut steps = Vec::new();
    let dns_same = sorted(&want_a) == had_a && sorted(&want_aaaa) == had_aaaa;
    let route_same = had_route == Some(port);
    if dns_same && route_same && existing.as_ref() == Some(&domain) {
        // Keep the restore's record in step (a no-op when it is).
        host_route(d, &domain)
            .save(&api.state_dir())
            .map_err(ApiError::internal)?;
        return Ok(DomainSetupResult {
            domain,
            changed: false,
            steps: vec!["dns: in place".into(), "route: in place".into()],
        });
    }

    // 1. DNS.
    let mut written: Vec<(&str, Vec<String>)> = Vec::new();
    for (kind, want, had) in [("A", &want_a, &had_a), ("AAAA", &want_aaaa, &had_aaaa)] {
        if sorted(want) == *had {
            continue;
        }
        if let Err(e) = d
            .pdns
            .replace(zone_s, name.as_str(), kind, d.settings.ttl, want)
            .await
        {
            let undo = rollback_dns(d, zone_s, &name, &written).await;
            return Err(upstream(format!(
                "{e}. No Caddy route was added{}",
                match undo {
                    Ok(()) if written.is_empty() => String::new(),
                    Ok(()) => "; the records already written were rolled back".into(),
                    Err(u) => format!(
                        "; rolling back the records already written failed too ({u}): run `we domain remove {name}` once PowerDNS answers"
                    ),
                }
            )));
        }
        steps.push(if want.is_empty() {
            format!("dns: removed {kind} of {name}")
        } else {
            format!("dns: {kind} {name} -> {}", want.join(", "))
        });
        written.push((kind, had.clone()));
    }
    if written.is_empty() {
        steps.push("dns: in place".into());
    }

    // 2. The route (recorded first, so that a restore can rebuild it).
    let record = host_route(d, &domain);
    let state = api.state_dir();
    let added = match record.save(&state) {
        Ok(()) => {
            caddy
                .host_route(
                    &record.server,
                    &record.listen,
                    &record.id,
                    &record.host,
                    record.upstream,
                    true,
                )
                .await
        }
        Err(e) => Err(e),
    };
    if let Err(e) = added {
        if existing.is_none() {
            let _ = codeb_deploy::HostRoute::forget(&state, &record.id);
            if had_route.is_none() {
                let _ = caddy.remove_id(&record.id).await;
            }
        }
        return match rollback_dns(d, zone_s, &name, &written).await {
            Ok(()) => Err(upstream(format!(
                "{e}. The DNS change was rolled back{}: nothing is left half-done. Start Caddy (or fix [previews] caddy_admin) and run `we domain setup {} --domain {name}` again",
                if written.is_empty() {
                    " (there was none)"
                } else {
                    ""
                },
                req.project
            ))),
            Err(u) => {
                // Registered so that `we domain remove` can clean up.
                let row = domain.clone();
                let _ = api.db.run(move |c| put(c, &row)).await;
                Err(upstream(format!(
                    "half-done: PowerDNS has the records of {name} but Caddy has no route for it ({e}), and rolling the records back failed ({u}). Finish with `we domain setup {} --domain {name}` once Caddy answers, or undo with `we domain remove {name}`",
                    req.project
                )))
            }
        };
    }
    steps.push(if route_same {
        "route: in place".into()
    } else {
        format!(
            "route: https://{name} -> 127.0.0.1:{port} (Caddy {} on {})",
            SERVER, d.settings.https_listen
        )
    });

    // 3. The registry.
    let row = domain.clone();
    api.db
        .run(move |c| put(c, &row))
        .await
        .map_err(ApiError::internal)?;
    Ok(DomainSetupResult {
        domain,
        changed: true,
        steps,
    })
}

fn sorted(v: &[String]) -> Vec<String> {
    let mut v = v.to_vec();
    v.sort();
    v
}

/// Puts back what PowerDNS held before (`written`: each rrset changed, with its old contents).
async fn rollback_dns(
    d: &Domains,
    zone: &str,
    name: &DomainName,
    written: &[(&str, Vec<String>)],
) -> Result<(), PdnsError> {
    for (kind, old) in written.iter().rev() {
        d.pdns
            .replace(zone, name.as_str(), kind, d.settings.ttl, old)
            .await?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Remove

pub async fn remove(
    State(api): State<Arc<Api>>,
    h: HeaderMap,
    UrlPath(domain): UrlPath<String>,
    Query(q): Query<DomainRemoveQuery>,
) -> Result<Json<DomainRemoved>, ApiError> {
    if let Some(p) = &q.project {
        project_name(p)?;
    }
    let caller = api
        .authorize(&h, Action::DomainRemove, q.project.as_deref())
        .await?;
    let params = json!({ "domain": domain, "project": q.project });
    let r = remove_inner(&api, &domain, q.project.as_deref()).await;
    let (project, result) = match &r {
        Ok(done) => (Some(done.domain.project.clone()), "ok".to_owned()),
        Err(e) => (
            q.project.clone(),
            format!("failed: {}", one_line(&e.message)),
        ),
    };
    api.audit(
        &caller,
        Action::DomainRemove,
        &format!("domain:{}", one_line(&domain)),
        project.as_deref(),
        &params,
        &result,
    )
    .await;
    r.map(Json)
}

async fn remove_inner(
    api: &Api,
    input: &str,
    project: Option<&str>,
) -> Result<DomainRemoved, ApiError> {
    let d = domains(api)?;
    let name = name(input)?;
    let caddy = caddy(api)?;
    let _serial = d.lock.lock().await;
    let key = name.as_str().to_owned();
    let Some(domain) = api
        .db
        .run(move |c| get(c, &key))
        .await
        .map_err(ApiError::internal)?
    else {
        return Err(ApiError::not_found(format!(
            "domain {name} is not in the registry; see `we domain list`"
        )));
    };
    if let Some(p) = project
        && p != domain.project
    {
        return Err(ApiError::conflict(format!(
            "domain {name} belongs to project `{}`, not `{p}`; nothing was removed",
            domain.project
        )));
    }
    let mut steps = Vec::new();
    // 1. The route: its record first (so no restore brings it back), then Caddy's route.
    let state = api.state_dir();
    codeb_deploy::HostRoute::forget(&state, &domain.route_id).map_err(ApiError::internal)?;
    if let Err(e) = caddy.remove_id(&domain.route_id).await {
        let _ = host_route(d, &domain).save(&state);
        return Err(upstream(format!(
            "{e}. Nothing was removed (the route and the records stay); start Caddy and run `we domain remove {name}` again"
        )));
    }
    steps.push(format!("route: removed {}", domain.route_id));
    // 2. The records.
    for kind in ["A", "AAAA"] {
        if let Err(e) = d
            .pdns
            .replace(&domain.zone, name.as_str(), kind, d.settings.ttl, &[])
            .await
        {
            return Err(upstream(format!(
                "{e}. The Caddy route is removed but the DNS records of {name} remain; run `we domain remove {name}` again once PowerDNS answers"
            )));
        }
    }
    steps.push(format!("dns: removed A/AAAA of {name}"));
    // 3. The registry.
    let key = name.as_str().to_owned();
    api.db
        .run(move |c| delete(c, &key))
        .await
        .map_err(ApiError::internal)?;
    steps.push("registry: removed".into());
    Ok(DomainRemoved { domain, steps })
}

// ---------------------------------------------------------------------------------------
// List and zones

pub async fn list(
    State(api): State<Arc<Api>>,
    h: HeaderMap,
) -> Result<Json<Vec<DomainStatus>>, ApiError> {
    api.authorize(&h, Action::DomainList, None).await?;
    let Some(d) = api.domains.as_deref() else {
        return Ok(Json(Vec::new()));
    };
    let rows = api.db.run(|c| all(c)).await.map_err(ApiError::internal)?;
    let caddy = caddy(&api).ok();
    let mut out = Vec::with_capacity(rows.len());
    for domain in rows {
        let mut answer = Vec::new();
        let mut dns_err = None;
        for kind in ["A", "AAAA"] {
            match d.pdns.rrset(&domain.zone, &domain.domain, kind).await {
                Ok(v) => answer.extend(v),
                Err(e) => dns_err = Some(e.to_string()),
            }
        }
        answer.sort();
        let dns = match dns_err {
            Some(e) => format!("error: {e}"),
            None if answer.is_empty() => "missing".into(),
            None if answer == sorted(&domain.addresses) => "ok".into(),
            None => format!("differs: the registry has {}", domain.addresses.join(", ")),
        };
        let route = match &caddy {
            None => "error: no Caddy admin API configured".into(),
            Some(c) => match route_upstream(c, &domain.route_id).await {
                Ok(Some(p)) if p == domain.upstream_port => "present".into(),
                Ok(Some(p)) => format!("differs: proxies to port {p}"),
                Ok(None) => "missing".into(),
                Err(e) => format!("error: {e}"),
            },
        };
        let (cert_expires_ms, cert) =
            match codeb_dns::cert::served_expiry(&d.settings.https_probe, &domain.domain).await {
                Ok(ms) => (Some(ms), "ok".to_owned()),
                Err(e) => (None, format!("no certificate: {e}")),
            };
        out.push(DomainStatus {
            domain,
            dns,
            dns_answer: answer,
            route,
            cert_expires_ms,
            cert,
        });
    }
    Ok(Json(out))
}

pub async fn zones(State(api): State<Arc<Api>>, h: HeaderMap) -> Result<Json<Vec<Zone>>, ApiError> {
    api.authorize(&h, Action::DomainZones, None).await?;
    let Some(d) = api.domains.as_deref() else {
        return Ok(Json(Vec::new()));
    };
    let rows = api.db.run(|c| all(c)).await.map_err(ApiError::internal)?;
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for r in &rows {
        *counts.entry(r.zone.clone()).or_default() += 1;
    }
    let (held, error) = match d.pdns.zones().await {
        Ok(z) => (Some(z), None),
        Err(e) => (None, Some(e.to_string())),
    };
    let preview_suffix = api.preview_domain_suffix.clone();
    Ok(Json(
        d.settings
            .zones
            .iter()
            .map(|z| {
                let found = held.as_ref().and_then(|h| {
                    h.iter().find(|s| {
                        s.name
                            .trim_end_matches('.')
                            .eq_ignore_ascii_case(z.as_str())
                    })
                });
                Zone {
                    name: z.as_str().to_owned(),
                    in_pdns: found.is_some(),
                    serial: found.map(|s| s.serial),
                    previews: preview_suffix
                        .as_deref()
                        .and_then(|s| DomainName::parse(s).ok())
                        .is_some_and(|s| s.zone_in(std::slice::from_ref(z)).is_some()),
                    domains: counts.get(z.as_str()).copied().unwrap_or(0),
                    error: error.clone(),
                }
            })
            .collect(),
    ))
}

// ---------------------------------------------------------------------------------------
// On-demand TLS: Caddy's `ask`

#[derive(Debug, Deserialize)]
pub struct AskQuery {
    pub domain: Option<String>,
}

/// `GET /api/v1/tls/ask?domain=D`: 200 only when D is in the registry. No token: Caddy
/// asks, from this host.
pub async fn ask(State(api): State<Arc<Api>>, Query(q): Query<AskQuery>) -> Response {
    let Some(input) = q.domain else {
        return (StatusCode::BAD_REQUEST, "no domain: ?domain=NAME\n").into_response();
    };
    let Ok(name) = DomainName::parse(&input) else {
        return (StatusCode::BAD_REQUEST, "not a valid domain name\n").into_response();
    };
    let key = name.as_str().to_owned();
    match api.db.run(move |c| get(c, &key)).await {
        Ok(Some(_)) => (StatusCode::OK, "ok\n").into_response(),
        Ok(None) => (StatusCode::NOT_FOUND, "not a codeb domain\n").into_response(),
        Err(e) => {
            tracing::error!(error = %e, "tls ask: cannot read the domain registry");
            (StatusCode::SERVICE_UNAVAILABLE, "registry unavailable\n").into_response()
        }
    }
}

// ---------------------------------------------------------------------------------------
// Restore from the registry

/// Records and adds the route of every registry domain that Caddy lacks; present routes are
/// left alone. Returns the ids added.
pub async fn restore(api: &Api) -> Result<Vec<String>, String> {
    let Some(d) = api.domains.as_deref() else {
        return Ok(Vec::new());
    };
    let caddy = caddy(api).map_err(|e| e.message)?;
    let rows = api.db.run(|c| all(c)).await.map_err(|e| e.to_string())?;
    let state = api.state_dir();
    let mut added = Vec::new();
    for domain in rows {
        let r = host_route(d, &domain);
        r.save(&state).map_err(|e| e.to_string())?;
        if caddy
            .ensure_host_route(&r.server, &r.listen, &r.id, &r.host, r.upstream, true)
            .await
            .map_err(|e| e.to_string())?
        {
            added.push(r.id);
        }
    }
    Ok(added)
}

/// Runs [`restore`] at start and every minute until shutdown.
pub async fn restore_loop(api: Arc<Api>, mut shutdown: watch::Receiver<bool>) {
    if api.domains.is_none() {
        return;
    }
    loop {
        match restore(&api).await {
            Ok(added) if !added.is_empty() => {
                tracing::info!(routes = ?added, "domain routes restored from the registry");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot restore domain routes"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(60)) => {}
            _ = shutdown.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn config(key_file: &str) -> DomainConfig {
        DomainConfig {
            pdns_url: "http://127.0.0.1:8081".into(),
            pdns_server_id: default_server_id(),
            pdns_key_file: key_file.into(),
            zones: vec!["Codeb.KR".into()],
            ipv4: Some(Ipv4Addr::new(203, 0, 113, 10)),
            ipv6: None,
            ttl: 300,
            https_listen: ":443".into(),
            https_probe: None,
        }
    }

    #[test]
    fn the_key_file_must_be_private_and_is_never_printed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("pdns.key");
        std::fs::write(&key, "s3cret-key\n").expect("write");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = config("pdns.key").resolve(dir.path()).expect_err("0644");
        assert!(err.contains("chmod 600"), "{err}");
        assert!(!err.contains("s3cret-key"), "{err}");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let s = config("pdns.key").resolve(dir.path()).expect("0600");
        assert_eq!(s.key.expose(), "s3cret-key");
        assert_eq!(s.zones[0].as_str(), "codeb.kr");
        assert_eq!(s.https_probe, "127.0.0.1:443");
        assert!(!format!("{s:?}").contains("s3cret-key"));
        let missing = config("absent.key")
            .resolve(dir.path())
            .expect_err("missing");
        assert!(missing.contains("pdns_key_file"), "{missing}");
        let mut no_addr = config("pdns.key");
        no_addr.ipv4 = None;
        assert!(
            no_addr
                .resolve(dir.path())
                .expect_err("no address")
                .contains("ipv4")
        );
    }
}
