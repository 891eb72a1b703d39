//! Rebuilding codeb's Caddy routes from the state in `<quadlet-dir>/.codeb/`.
//!
//! Caddy keeps routes added through its admin API only in memory: `caddy reload` with another
//! config or a restart of Caddy drops every front and preview route. Everything needed to
//! build them again is on disk: each target's history records its front (`front`: listen
//! address, public port, active slot port), and each preview host route has a record in
//! `.codeb/routes/<id>.json`, written before the route is added and removed before it is
//! deleted. [`restore_routes`] adds what is missing and leaves every route that exists alone
//! (no gap, no change to a route a deploy may be moving), so it can run at any time, as often
//! as wanted: at boot (`templates/systemd/codeb-restore-routes.service`), from the daemon at
//! start and in each reconcile, or by hand (`codeb-quadlet-update restore-routes`).

use crate::caddy::Caddy;
use crate::error::DeployError;
use crate::state::History;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A host-name route on a shared server (a preview's `pr-<N>.<domain>`), as recorded in
/// `.codeb/routes/<id>.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRoute {
    /// The Caddy server that holds the route (created when missing), e.g. `codeb-previews`.
    pub server: String,
    /// That server's listen address, e.g. `:80`.
    pub listen: String,
    /// The route's `@id`.
    pub id: String,
    /// The host name it matches.
    pub host: String,
    /// The loopback port it proxies to.
    pub upstream: u16,
    /// Served over HTTPS: the server is created with Caddy's automatic HTTPS on (a `we
    /// domain` route); preview routes are plain HTTP behind the operator's front.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tls: bool,
}

fn routes_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("routes")
}

fn valid_id(id: &str) -> Result<(), DeployError> {
    if id.is_empty()
        || id.len() > 200
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        || id.starts_with('.')
    {
        return Err(DeployError::Input(format!(
            "route id {id:?} must be letters, digits, '-', '_' or '.' (not leading)"
        )));
    }
    Ok(())
}

impl HostRoute {
    fn path(state_dir: &Path, id: &str) -> PathBuf {
        routes_dir(state_dir).join(format!("{id}.json"))
    }

    /// Records the route (atomically) so that a restore can add it again.
    pub fn save(&self, state_dir: &Path) -> Result<(), DeployError> {
        valid_id(&self.id)?;
        let dir = routes_dir(state_dir);
        crate::state::state_dir(state_dir)?;
        crate::state::state_dir(&dir)?;
        let path = Self::path(state_dir, &self.id);
        let mut text = serde_json::to_string_pretty(self)
            .map_err(|e| DeployError::Input(format!("cannot encode route {}: {e}", self.id)))?;
        text.push('\n');
        codeb_host::atomic::write(&path, text.as_bytes(), 0o644)
            .map_err(|source| DeployError::Io { path, source })
    }

    /// Forgets the route `id` (a missing record is fine).
    pub fn forget(state_dir: &Path, id: &str) -> Result<(), DeployError> {
        valid_id(id)?;
        let path = Self::path(state_dir, id);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(DeployError::Io { path, source }),
        }
    }

    /// Every recorded host route, by id.
    pub fn load_all(state_dir: &Path) -> Result<Vec<Self>, DeployError> {
        let mut out = Vec::new();
        for path in json_files(&routes_dir(state_dir))? {
            let bytes = std::fs::read(&path).map_err(|source| DeployError::Io {
                path: path.clone(),
                source,
            })?;
            let route: Self = serde_json::from_slice(&bytes).map_err(|e| {
                DeployError::Input(format!(
                    "route record {} is not valid ({e}); remove it, the next preview deploy writes it again",
                    path.display()
                ))
            })?;
            out.push(route);
        }
        Ok(out)
    }
}

/// `*.json` files directly in `dir`, sorted; a missing directory has none.
fn json_files(dir: &Path) -> Result<Vec<PathBuf>, DeployError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(DeployError::Io {
                path: dir.to_owned(),
                source,
            });
        }
    };
    let mut out: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|x| x == "json")
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    out.sort();
    Ok(out)
}

/// What a restore did, route by route.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// Routes that were missing and have been added (front `codeb-<unit>` or host route id).
    pub restored: Vec<String>,
    /// Routes that were there and were left alone.
    pub present: Vec<String>,
    /// Targets that serve but whose front cannot be rebuilt, with the reason.
    pub skipped: Vec<(String, String)>,
}

impl RestoreReport {
    /// Whether the restore changed Caddy's configuration.
    pub fn changed(&self) -> bool {
        !self.restored.is_empty()
    }
}

/// Adds every codeb front and preview host route recorded under `state_dir` that Caddy does
/// not have; leaves the ones it has alone. Idempotent.
pub async fn restore_routes(state_dir: &Path, caddy: &Caddy) -> Result<RestoreReport, DeployError> {
    let mut report = RestoreReport::default();
    caddy.check().await?;
    for path in json_files(state_dir)? {
        let Some(unit) = path.file_stem().map(|s| s.to_string_lossy().into_owned()) else {
            continue;
        };
        let history = History::load(state_dir, &unit)?;
        if history.active.is_none() {
            continue;
        }
        let name = format!("codeb-{unit}");
        let Some(front) = history.front else {
            // A restart deploy without Caddy publishes the public port itself; a history
            // written by an older codeb has no front recorded until its next deploy.
            report.skipped.push((
                name,
                "no Caddy front recorded (deployed without Caddy, or by an older codeb: the next deploy records it)".into(),
            ));
            continue;
        };
        if caddy
            .ensure_front(&unit, &front.listen_host, front.public, front.upstream)
            .await?
        {
            report.restored.push(name);
        } else {
            report.present.push(name);
        }
    }
    for route in HostRoute::load_all(state_dir)? {
        if caddy
            .ensure_host_route(
                &route.server,
                &route.listen,
                &route.id,
                &route.host,
                route.upstream,
                route.tls,
            )
            .await?
        {
            report.restored.push(route.id);
        } else {
            report.present.push(route.id);
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_routes_roundtrip_and_forget() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join(".codeb");
        let r = HostRoute {
            server: "codeb-previews".into(),
            listen: ":80".into(),
            id: "codeb-route-app-pr-7".into(),
            host: "pr-7.example.com".into(),
            upstream: 5007,
            tls: false,
        };
        r.save(&state).expect("save");
        assert_eq!(HostRoute::load_all(&state).expect("load"), vec![r.clone()]);
        HostRoute::forget(&state, &r.id).expect("forget");
        HostRoute::forget(&state, &r.id).expect("forget twice");
        assert!(HostRoute::load_all(&state).expect("load").is_empty());
    }

    #[test]
    fn route_ids_cannot_escape_the_routes_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        for id in ["../x", "a/b", "", ".hidden"] {
            assert!(HostRoute::forget(dir.path(), id).is_err(), "{id:?}");
        }
    }
}
