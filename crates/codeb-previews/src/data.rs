//! A preview's own data and DNS records.
//!
//! Data: when the project was provisioned with a database and/or Redis (`we workflow init`,
//! asked of a [`DataSource`] the daemon gives), PR `N`'s preview gets a PostgreSQL role and
//! database `<p>_pr_<N>` made from the staging database's schema plus the repository's
//! `codeb/seed.sql` at the PR's head (`codeb_provision::preview`), a Redis ACL user
//! `<project>.pr-<N>` limited to `<project>:pr-<N>:`, and its own env file
//! `<env_dir>/<project>-pr-<N>.env` (0600: the preview-only `env_file` of `[previews]`, if
//! any, with `DATABASE_URL`, `REDIS_URL` and `REDIS_PREFIX` pointing at that data). Its
//! passwords are kept in `<env_dir>/<project>-pr-<N>.secrets` (0600), written before any
//! role or user gets them, so a re-run sets the same ones.
//!
//! DNS: when the preview host names lie in a zone codeb manages ([`PreviewDns`]), the
//! preview's `A`/`AAAA` records are written before its Caddy route and removed with it.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use codeb_core::ProjectName;
use codeb_dns::{DomainName, Pdns};
use codeb_provision::preview::{self as pd, PreviewDataError, SchemaSource};
use codeb_provision::{Names, PreviewNames};
use codeb_secret::Secret;
use serde::{Deserialize, Serialize};

use crate::{PreviewError, Previews, Repo};

/// What a project was provisioned with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataPlan {
    pub database: bool,
    pub redis: bool,
    /// The project's Redis DB index (0 in prefix mode).
    pub redis_db: u8,
}

/// The admin access to PostgreSQL and where apps reach it.
#[derive(Debug, Clone)]
pub struct PgAccess {
    pub admin: Secret,
    pub host: String,
    pub port: u16,
    pub pg_dump: String,
}

/// The admin access to Redis and where apps reach it.
#[derive(Debug, Clone)]
pub struct RedisAccess {
    pub admin: Secret,
    pub host: String,
    pub port: u16,
}

/// The storage servers that are configured.
#[derive(Debug, Clone, Default)]
pub struct Stores {
    pub pg: Option<PgAccess>,
    pub redis: Option<RedisAccess>,
}

/// What previews need to know of provisioning (the daemon's `[api.provision]` and its
/// `api_provision` table). Calls may block briefly (a file, a SQLite row).
pub trait DataSource: Send + Sync + 'static {
    /// What `project` was provisioned with; `None` when it was not (no data for previews).
    fn plan(&self, project: &ProjectName) -> Result<Option<DataPlan>, String>;
    /// The configured storage servers.
    fn stores(&self) -> Result<Stores, String>;
    /// Where env files and secrets are written.
    fn env_dir(&self) -> PathBuf;
}

/// The zone preview host names lie in, managed by codeb in PowerDNS.
#[derive(Clone)]
pub struct PreviewDns {
    pub pdns: Pdns,
    pub zone: DomainName,
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
    pub ttl: u32,
}

#[derive(Serialize, Deserialize)]
struct PreviewSecrets {
    pg_password: String,
    redis_password: String,
    #[serde(default)]
    redis_db: Option<u8>,
}

/// The keys codeb writes into a preview's env file.
const DATA_KEYS: [&str; 3] = ["DATABASE_URL", "REDIS_URL", "REDIS_PREFIX"];

fn data_err(e: PreviewDataError) -> PreviewError {
    if e.is_permanent() {
        PreviewError::DataRefused(e.to_string())
    } else {
        PreviewError::Data(e.to_string())
    }
}

fn names(project: &ProjectName, pr: u64) -> Result<PreviewNames, PreviewError> {
    Names::new(project)
        .and_then(|n| n.preview(pr))
        .map_err(|e| PreviewError::DataRefused(e.to_string()))
}

fn write_private(path: &Path, text: &str) -> Result<(), PreviewError> {
    use std::os::unix::fs::DirBuilderExt;
    let state = |source| PreviewError::State {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(state)?;
    }
    codeb_host::atomic::write(path, text.as_bytes(), 0o600).map_err(state)
}

fn remove_file(path: &Path) -> Result<bool, PreviewError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(PreviewError::State {
            path: path.to_owned(),
            source,
        }),
    }
}

/// `<env_dir>/<project>-pr-<N>.<ext>`.
pub fn preview_file(env_dir: &Path, project: &str, pr: u64, ext: &str) -> PathBuf {
    env_dir.join(format!("{project}-pr-{pr}.{ext}"))
}

impl Previews {
    /// Gives the preview data from a [`DataSource`] (the daemon's provisioning).
    pub fn with_data(mut self, source: Arc<dyn DataSource>) -> Self {
        self.data = Some(source);
        self
    }

    /// Gives previews DNS records in a managed zone.
    pub fn with_dns(mut self, dns: PreviewDns) -> Self {
        self.dns = Some(dns);
        self
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn DataSource) -> Result<T, String> + Send + 'static,
    ) -> Result<Option<T>, PreviewError> {
        let Some(src) = self.data.clone() else {
            return Ok(None);
        };
        tokio::task::spawn_blocking(move || f(src.as_ref()))
            .await
            .map_err(|e| PreviewError::Data(e.to_string()))?
            .map(Some)
            .map_err(PreviewError::Data)
    }

    /// Makes (or finds) the preview's data and writes its env file; `None` when the
    /// project has no data (the preview gets `[previews] env_file` as before). A failure
    /// removes what this call created.
    pub(crate) async fn ensure_data(
        &self,
        rc: &Repo,
        pr: u64,
        head: &str,
    ) -> Result<Option<PathBuf>, PreviewError> {
        let project = rc.project.clone();
        let Some((plan, stores, env_dir)) = self
            .blocking(move |s| Ok((s.plan(&project)?, s.stores()?, s.env_dir())))
            .await?
        else {
            return Ok(None);
        };
        let Some(plan) = plan.filter(|p| p.database || p.redis) else {
            return Ok(None);
        };
        let n = names(&rc.project, pr)?;
        let pg = match (plan.database, &stores.pg) {
            (true, None) => {
                return Err(PreviewError::Config(format!(
                    "project `{}` has a database, so its previews get one, but [api.provision] postgres_admin_url_file is not set",
                    rc.project
                )));
            }
            (true, Some(p)) => Some(p),
            (false, _) => None,
        };
        let redis = match (plan.redis, &stores.redis) {
            (true, None) => {
                return Err(PreviewError::Config(format!(
                    "project `{}` has Redis, so its previews get a user of their own, but [api.provision] redis_admin_url_file is not set",
                    rc.project
                )));
            }
            (true, Some(r)) => Some(r),
            (false, _) => None,
        };
        // The seed is read before anything changes.
        let seed = match pg {
            Some(_) => self.github.file(&rc.name, "codeb/seed.sql", head).await?,
            None => None,
        };
        let secrets_path = preview_file(&env_dir, rc.project.as_str(), pr, "secrets");
        let (secrets, new_secrets) = match std::fs::read_to_string(&secrets_path) {
            Ok(t) => (
                serde_json::from_str::<PreviewSecrets>(&t).map_err(|e| PreviewError::BadState {
                    path: secrets_path.clone(),
                    detail: e.to_string(),
                })?,
                false,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let s = PreviewSecrets {
                    pg_password: codeb_provision::generate().expose().to_owned(),
                    redis_password: codeb_provision::generate().expose().to_owned(),
                    redis_db: plan.redis.then_some(plan.redis_db),
                };
                let text = serde_json::to_string(&s).map_err(|e| PreviewError::BadState {
                    path: secrets_path.clone(),
                    detail: e.to_string(),
                })?;
                write_private(&secrets_path, &text)?;
                (s, true)
            }
            Err(source) => {
                return Err(PreviewError::State {
                    path: secrets_path,
                    source,
                });
            }
        };
        let pg_pw = Secret::new(secrets.pg_password.clone());
        let redis_pw = Secret::new(secrets.redis_password.clone());
        let undo_secrets = || {
            if new_secrets {
                let _ = std::fs::remove_file(&secrets_path);
            }
        };
        let mut made = pd::PgDone::default();
        if let Some(p) = pg {
            let staging = Names::new(&rc.project)
                .map_err(|e| PreviewError::DataRefused(e.to_string()))?
                .staging_db;
            let source = SchemaSource {
                pg_dump: p.pg_dump.clone(),
                db: staging,
            };
            match pd::ensure_pg(&p.admin, &n, &pg_pw, &source, seed.as_deref()).await {
                Ok(d) => made = d,
                Err(e) => {
                    undo_secrets();
                    return Err(data_err(e));
                }
            }
        }
        if let Some(r) = redis
            && let Err(e) = pd::ensure_redis(&r.admin, &n, &redis_pw).await
        {
            if let Some(p) = pg
                && (made.created_db || made.created_role)
            {
                let _ = pd::remove_pg(&p.admin, &n).await;
            }
            undo_secrets();
            return Err(data_err(e));
        }
        // The env file: the preview-only base file without codeb's keys, then codeb's.
        let mut text = String::from(
            "# Written by codeb for this preview; codeb replaces it at every deploy.\n",
        );
        if let Some(base) = &self.settings.env_file {
            let b = std::fs::read_to_string(base).map_err(|source| PreviewError::State {
                path: base.clone(),
                source,
            })?;
            for line in b.lines() {
                let key = line.split_once('=').map(|(k, _)| k.trim());
                if key.is_some_and(|k| DATA_KEYS.contains(&k)) {
                    continue;
                }
                text.push_str(line);
                text.push('\n');
            }
        }
        if let Some(p) = pg {
            text.push_str(&format!(
                "DATABASE_URL=postgresql://{u}:{pw}@{h}:{port}/{db}?schema=public\n",
                u = n.pg,
                pw = secrets.pg_password,
                h = p.host,
                port = p.port,
                db = n.pg
            ));
        }
        if let Some(r) = redis {
            text.push_str(&format!(
                "REDIS_URL=redis://{u}:{pw}@{h}:{port}/{db}\nREDIS_PREFIX={prefix}\n",
                u = n.redis_user,
                pw = secrets.redis_password,
                h = r.host,
                port = r.port,
                db = plan.redis_db,
                prefix = n.redis_prefix
            ));
        }
        let env_path = preview_file(&env_dir, rc.project.as_str(), pr, "env");
        write_private(&env_path, &text)?;
        Ok(Some(env_path))
    }

    /// Removes the preview's data, env file and secrets. Without `force` the servers are
    /// asked only when the project has data or the preview has a secrets file; with it
    /// (leftovers) every configured server is. Idempotent; returns what was removed.
    pub(crate) async fn remove_data(
        &self,
        project: &ProjectName,
        pr: u64,
        force: bool,
    ) -> Result<Vec<String>, PreviewError> {
        let p = project.clone();
        let Some((plan, stores, env_dir)) = self
            .blocking(move |s| Ok((s.plan(&p)?, s.stores()?, s.env_dir())))
            .await?
        else {
            return Ok(Vec::new());
        };
        let secrets_path = preview_file(&env_dir, project.as_str(), pr, "secrets");
        let secrets: Option<PreviewSecrets> = std::fs::read_to_string(&secrets_path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
        let has = |f: fn(&DataPlan) -> bool| plan.as_ref().is_some_and(f);
        let mut gone = Vec::new();
        let n = names(project, pr)?;
        if let Some(pg) = &stores.pg
            && (force || secrets.is_some() || has(|p| p.database))
        {
            gone.extend(pd::remove_pg(&pg.admin, &n).await.map_err(data_err)?);
        }
        if let Some(r) = &stores.redis
            && (force || secrets.is_some() || has(|p| p.redis))
        {
            let dbs: Vec<u8> = match (
                secrets.as_ref().and_then(|s| s.redis_db),
                plan.as_ref().filter(|p| p.redis),
            ) {
                (Some(d), _) => vec![d],
                (None, Some(p)) => vec![p.redis_db],
                (None, None) => (0..16).collect(),
            };
            gone.extend(
                pd::remove_redis(&r.admin, &n, &dbs)
                    .await
                    .map_err(data_err)?,
            );
        }
        for ext in ["env", "secrets"] {
            let f = preview_file(&env_dir, project.as_str(), pr, ext);
            if remove_file(&f)? {
                gone.push(f.display().to_string());
            }
        }
        Ok(gone)
    }

    /// Previews of `projects` that have data (a marked role, an ACL user, a secrets or env
    /// file), whether or not they still exist.
    pub(crate) async fn data_previews(
        &self,
        projects: &[ProjectName],
    ) -> Result<Vec<(String, u64)>, PreviewError> {
        let Some((stores, env_dir)) = self.blocking(|s| Ok((s.stores()?, s.env_dir()))).await?
        else {
            return Ok(Vec::new());
        };
        let names: Vec<String> = projects.iter().map(ToString::to_string).collect();
        let mut out = Vec::new();
        if let Some(pg) = &stores.pg {
            out.extend(
                pd::pg_previews(&pg.admin)
                    .await
                    .map_err(data_err)?
                    .into_iter()
                    .filter(|(p, _)| names.contains(p)),
            );
        }
        if let Some(r) = &stores.redis {
            out.extend(
                pd::redis_previews(&r.admin, &names)
                    .await
                    .map_err(data_err)?,
            );
        }
        if let Ok(dir) = std::fs::read_dir(&env_dir) {
            for e in dir.flatten() {
                let f = e.file_name().to_string_lossy().into_owned();
                let Some(stem) = f
                    .strip_suffix(".secrets")
                    .or_else(|| f.strip_suffix(".env"))
                else {
                    continue;
                };
                if let Some(hit) = names.iter().find_map(|p| {
                    let n = stem.strip_prefix(p.as_str())?.strip_prefix("-pr-")?;
                    (!n.is_empty() && !n.starts_with('0') && n.bytes().all(|b| b.is_ascii_digit()))
                        .then(|| n.parse().ok().map(|n: u64| (p.clone(), n)))
                        .flatten()
                }) {
                    out.push(hit);
                }
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// The managed name of a preview host, if it lies in the preview zone.
    fn dns_name(&self, host: &str) -> Option<(&PreviewDns, DomainName)> {
        let dns = self.dns.as_ref()?;
        let name = DomainName::parse(host).ok()?;
        name.zone_in(std::slice::from_ref(&dns.zone))?;
        Some((dns, name))
    }

    /// Writes the preview host's A/AAAA records (idempotent: PowerDNS's REPLACE).
    pub(crate) async fn ensure_dns(&self, host: &str) -> Result<bool, PreviewError> {
        let Some((dns, name)) = self.dns_name(host) else {
            return Ok(false);
        };
        for (kind, want) in [
            ("A", dns.ipv4.map(|a| a.to_string())),
            ("AAAA", dns.ipv6.map(|a| a.to_string())),
        ] {
            let want: Vec<String> = want.into_iter().collect();
            dns.pdns
                .replace(dns.zone.as_str(), name.as_str(), kind, dns.ttl, &want)
                .await
                .map_err(|e| PreviewError::Dns(e.to_string()))?;
        }
        Ok(true)
    }

    /// Removes the preview host's A/AAAA records (idempotent).
    pub(crate) async fn remove_dns(&self, host: &str) -> Result<bool, PreviewError> {
        let Some((dns, name)) = self.dns_name(host) else {
            return Ok(false);
        };
        for kind in ["A", "AAAA"] {
            dns.pdns
                .replace(dns.zone.as_str(), name.as_str(), kind, dns.ttl, &[])
                .await
                .map_err(|e| PreviewError::Dns(e.to_string()))?;
        }
        Ok(true)
    }

    /// Previews of `projects` whose host has records in the preview zone.
    pub(crate) async fn dns_previews(
        &self,
        projects: &[ProjectName],
    ) -> Result<Vec<(String, u64)>, PreviewError> {
        let Some(dns) = &self.dns else {
            return Ok(Vec::new());
        };
        let rrsets = dns
            .pdns
            .rrsets(dns.zone.as_str())
            .await
            .map_err(|e| PreviewError::Dns(e.to_string()))?;
        let mut out = Vec::new();
        for r in rrsets.iter().filter(|r| r.kind == "A" || r.kind == "AAAA") {
            let host = r.name.trim_end_matches('.').to_ascii_lowercase();
            for p in projects {
                let pattern = self
                    .settings
                    .domain_pattern
                    .replace("{project}", p.as_str())
                    .to_ascii_lowercase();
                let Some((pre, post)) = pattern.split_once("{pr}") else {
                    continue;
                };
                if let Some(n) = host.strip_prefix(pre).and_then(|h| h.strip_suffix(post))
                    && !n.is_empty()
                    && !n.starts_with('0')
                    && n.bytes().all(|b| b.is_ascii_digit())
                    && let Ok(n) = n.parse()
                {
                    out.push((p.to_string(), n));
                }
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }
}
