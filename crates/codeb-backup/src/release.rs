//! The deploy engine's side of a restore:
//!
//! - the per-target lock deploys take (`codeb_deploy::TargetLock` on
//!   `<quadlet_dir>/.codeb/<project>-production.lock`, holder in `.holder`), so a restore and
//!   a deploy of one project never overlap: the later one waits, then fails naming the holder;
//! - the running release (the history's active slot, its port and health path), probed with
//!   the deploy engine's health checker (`codeb_health::Prober`) before and after the live
//!   database is replaced: the proof that the app itself answers again.
//!
//! The engine's API is async; this crate is not, so each call runs on a thread of its own
//! with a current-thread runtime (never inside the caller's runtime: the daemon calls the
//! restore from `spawn_blocking`).

use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::Error;
use crate::config::Config;

/// The deploy unit whose lock and history a project's restore uses: `<project>-production`
/// (the database belongs to production).
pub fn unit(project: &str) -> String {
    format!("{project}-production")
}

/// Runs `f` to completion on a fresh thread with its own runtime.
fn block_on<F>(f: F) -> Result<F::Output, Error>
where
    F: std::future::Future + Send,
    F::Output: Send,
{
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map(|rt| rt.block_on(f))
        })
        .join()
        .map_err(|_| Error::Failed("the deploy-engine thread panicked".into()))?
        .map_err(Error::from)
    })
}

/// Takes the project's deploy lock (waiting up to `timeout`), as the deploy engine does.
pub fn lock(
    cfg: &Config,
    project: &str,
    timeout: Duration,
    holder: &str,
) -> Result<codeb_deploy::TargetLock, Error> {
    let state = cfg.deploy.state_dir();
    codeb_host::lockfile::private_dir(&state).map_err(|e| {
        Error::Failed(format!(
            "the deploy state directory {} (deploy.quadlet_dir): {e}",
            state.display()
        ))
    })?;
    let unit = unit(project);
    match block_on(codeb_deploy::TargetLock::acquire(
        &state, &unit, timeout, holder,
    ))? {
        Ok(l) => Ok(l),
        Err(e @ codeb_deploy::DeployError::Locked { .. }) => {
            Err(Error::Locked(format!("{e}; no restore was made")))
        }
        Err(e) => Err(Error::Failed(format!("the deploy lock of {unit}: {e}"))),
    }
}

/// The release serving a project's production, as the deploy history records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Running {
    pub image: String,
    pub slot: String,
    /// `http://127.0.0.1:<port><health_path>`: the slot's own port when a Caddy front is
    /// recorded, else the manifest's public port.
    pub url: String,
}

/// The running release of `project`'s production; `Ok(None)` when it has none (never
/// deployed, or removed). An active release whose port cannot be found is an error naming
/// the files.
pub fn running(cfg: &Config, project: &str) -> Result<Option<Running>, String> {
    let state = cfg.deploy.state_dir();
    let unit = unit(project);
    let history = codeb_deploy::History::load(&state, &unit).map_err(|e| e.to_string())?;
    let Some(active) = history.active else {
        return Ok(None);
    };
    let path = active
        .settings
        .as_ref()
        .map(|s| s.health_path.clone())
        .filter(|p| p.starts_with('/'))
        .unwrap_or_else(|| "/api/health".into());
    let port = match &history.front {
        Some(f) => f.upstream,
        None => manifest_port(&cfg.deploy.manifest, project)?.ok_or_else(|| {
            format!(
                "{unit} has an active release but neither a Caddy front in {} nor a production port in {}",
                codeb_deploy::History::path(&state, &unit).display(),
                cfg.deploy.manifest.display()
            )
        })?,
    };
    Ok(Some(Running {
        image: active.image,
        slot: active.slot.as_str().into(),
        url: format!("http://127.0.0.1:{port}{path}"),
    }))
}

fn manifest_port(path: &Path, project: &str) -> Result<Option<u16>, String> {
    let doc = match codeb_host::ManifestStore::new(path).load() {
        Ok(d) => d,
        Err(codeb_host::StoreError::NotFound(_)) => return Ok(None),
        Err(e) => return Err(format!("the port manifest {}: {e}", path.display())),
    };
    Ok(doc
        .manifest
        .assignments()
        .into_iter()
        .find_map(|a| match a.owner {
            codeb_core::manifest::Owner::Slot(p, e)
                if p.as_str() == project && e == codeb_core::Environment::Production =>
            {
                Some(a.port)
            }
            _ => None,
        }))
}

/// What the app's health endpoint said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Health {
    pub url: String,
    pub healthy: bool,
    pub status: Option<u16>,
    /// The answer's `version` field.
    pub version: Option<String>,
    pub attempts: u32,
    /// The health checker's last failure.
    pub failure: Option<String>,
}

/// One probe of `url` (what the app said before the restore).
pub fn probe_once(url: &str) -> Result<Health, Error> {
    probe(url, None)
}

/// Probes `url` until two answers in a row are healthy or `deadline` passes, as a deploy
/// proves a new release.
pub fn wait_healthy(url: &str, deadline: Duration) -> Result<Health, Error> {
    probe(url, Some(deadline))
}

fn probe(url: &str, deadline: Option<Duration>) -> Result<Health, Error> {
    let bad = |e: codeb_health::HealthError| Error::Failed(format!("health URL {url}: {e}"));
    let p = codeb_health::Probe::new(url)
        .map_err(bad)?
        .with_timeout(Duration::from_secs(5));
    let prober = codeb_health::Prober::new(p).map_err(bad)?;
    block_on(async move {
        match deadline {
            None => {
                let r = prober.probe_once().await;
                Health {
                    url: url.to_owned(),
                    healthy: r.is_ok(),
                    status: r.as_ref().ok().map(|s| s.status),
                    version: r.as_ref().ok().and_then(|s| s.version.clone()),
                    attempts: 1,
                    failure: r.err().map(|f| f.to_string()),
                }
            }
            Some(deadline) => {
                let policy = codeb_health::Policy {
                    interval: Duration::from_millis(500),
                    deadline,
                    start_period: Duration::ZERO,
                    successes: 2,
                };
                let last = std::sync::Mutex::new(None);
                let r = prober
                    .wait_healthy(&policy, |a| {
                        if let Ok(s) = &a.result
                            && let Ok(mut l) = last.lock()
                        {
                            *l = Some(s.status);
                        }
                    })
                    .await;
                Health {
                    url: url.to_owned(),
                    healthy: r.healthy,
                    status: last.lock().ok().and_then(|l| *l),
                    version: r.version,
                    attempts: r.attempts,
                    failure: if r.healthy {
                        None
                    } else {
                        Some(r.last_failure.map(|f| f.to_string()).unwrap_or_else(|| {
                            "never two healthy answers in a row within the deadline".into()
                        }))
                    },
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path) -> Config {
        let mut c = Config::parse(
            "pg_data = \"/d\"\nrepo_path = \"/r\"\ndump_dir = \"/x\"\nfiles_dir = \"/f\"\ncatalog = \"/c.sqlite\"\n",
        )
        .expect("config");
        c.deploy.quadlet_dir = dir.to_owned();
        c.deploy.manifest = dir.join("manifest.yaml");
        c
    }

    fn history(dir: &Path, front: Option<u16>) {
        let state = dir.join(".codeb");
        std::fs::create_dir_all(&state).expect("state");
        let mut h = codeb_deploy::History::empty("shop-production");
        h.active = Some(codeb_deploy::Active {
            slot: codeb_deploy::Slot::Green,
            image: "r/shop:2".into(),
            digest: "sha256:x".into(),
            sha: String::new(),
            settings: Some(codeb_deploy::Settings {
                container_port: 3000,
                health_path: "/healthz".into(),
                env_file: None,
                health_cmd: None,
            }),
        });
        h.front = front.map(|upstream| codeb_deploy::Front {
            listen_host: "127.0.0.1".into(),
            public: 4301,
            upstream,
        });
        h.save(&state).expect("save");
    }

    #[test]
    fn the_running_release_is_found_at_its_slot_or_the_manifest_port() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = config(dir.path());
        assert_eq!(running(&cfg, "shop"), Ok(None), "never deployed");
        history(dir.path(), Some(24301));
        let r = running(&cfg, "shop").expect("ok").expect("running");
        assert_eq!(r.url, "http://127.0.0.1:24301/healthz");
        assert_eq!((r.image.as_str(), r.slot.as_str()), ("r/shop:2", "green"));
        // No Caddy front: the manifest's public port, and a clear error without one.
        history(dir.path(), None);
        let e = running(&cfg, "shop").expect_err("no port");
        assert!(e.contains("manifest.yaml"), "{e}");
        std::fs::write(
            dir.path().join("manifest.yaml"),
            "version: 1\nprojects:\n  shop:\n    production: {port: 4301}\n",
        )
        .expect("manifest");
        let r = running(&cfg, "shop").expect("ok").expect("running");
        assert_eq!(r.url, "http://127.0.0.1:4301/healthz");
    }

    #[test]
    fn the_lock_is_the_deploy_engine_s_and_names_its_holder() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = config(dir.path());
        let held = lock(
            &cfg,
            "shop",
            Duration::ZERO,
            "pid 7 (deploy of r/shop:3 by ci)",
        )
        .expect("free");
        assert!(dir.path().join(".codeb/shop-production.lock").exists());
        let e = lock(&cfg, "shop", Duration::from_millis(300), "restore").expect_err("held");
        assert!(
            matches!(e, Error::Locked(_))
                && e.to_string().contains("pid 7 (deploy of r/shop:3 by ci)"),
            "{e}"
        );
        drop(held);
        lock(&cfg, "shop", Duration::ZERO, "restore").expect("free again");
    }
}
