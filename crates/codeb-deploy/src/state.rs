//! What codeb remembers about a target, beside its units in `<quadlet-dir>/.codeb/`:
//! `<unit>.json` (the active release and the history, newest first) and `<unit>.lock` (one
//! deploy at a time; the kernel drops the lock when its holder dies, even by SIGKILL).

use crate::error::DeployError;
use serde::{Deserialize, Serialize};
use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How many releases the history keeps.
pub const KEEP: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Slot {
    Blue,
    Green,
}

impl Slot {
    pub fn other(self) -> Self {
        match self {
            Slot::Blue => Slot::Green,
            Slot::Green => Slot::Blue,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Slot::Blue => "blue",
            Slot::Green => "green",
        }
    }
    /// The slot's internal port behind public port `public`.
    pub fn port(self, public: u16) -> Option<u16> {
        let (blue, green) = codeb_core::ports::slot_ports(public)?;
        Some(match self {
            Slot::Blue => blue,
            Slot::Green => green,
        })
    }
    /// Which slot an internal port belongs to.
    pub fn of_port(public: u16, port: u16) -> Option<Self> {
        [Slot::Blue, Slot::Green]
            .into_iter()
            .find(|s| s.port(public) == Some(port))
    }
}

/// How a release was run, so that a rollback or restore runs it the same way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Settings {
    pub container_port: u16,
    pub health_path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_cmd: Option<String>,
}

/// The release that serves traffic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Active {
    pub slot: Slot,
    pub image: String,
    pub digest: String,
    pub sha: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<Settings>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReleaseOutcome {
    /// Started, not yet decided (a deploy that died midway leaves this).
    Deploying,
    /// Serving traffic.
    Active,
    /// Served, then replaced by a newer release.
    Superseded,
    /// Failed its health check; traffic stayed on (or went back to) the previous release.
    RolledBack,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    pub time: String,
    pub image: String,
    pub digest: String,
    pub sha: String,
    pub actor: String,
    pub slot: Slot,
    pub strategy: String,
    /// `deploy` or `rollback`.
    pub kind: String,
    pub outcome: ReleaseOutcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<Settings>,
}

/// The Caddy front of a target as the last deploy left it: what a restore rebuilds after
/// Caddy lost its configuration (a reload with another config, a restart).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Front {
    pub listen_host: String,
    pub public: u16,
    /// The slot port traffic goes to.
    pub upstream: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    pub target: String,
    pub active: Option<Active>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub front: Option<Front>,
    /// Newest first.
    pub releases: Vec<Release>,
}

impl History {
    pub fn empty(target: &str) -> Self {
        Self {
            target: target.to_owned(),
            active: None,
            front: None,
            releases: Vec::new(),
        }
    }

    pub fn path(state_dir: &Path, unit: &str) -> PathBuf {
        state_dir.join(format!("{unit}.json"))
    }

    pub fn load(state_dir: &Path, unit: &str) -> Result<Self, DeployError> {
        let path = Self::path(state_dir, unit);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                DeployError::Input(format!(
                    "history {} is not valid ({e}); move it aside to start a fresh history",
                    path.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::empty(unit)),
            Err(source) => Err(DeployError::Io { path, source }),
        }
    }

    pub fn save(&self, state_dir: &Path) -> Result<(), DeployError> {
        let path = Self::path(state_dir, &self.target);
        let mut text = serde_json::to_string_pretty(self)
            .map_err(|e| DeployError::Input(format!("cannot encode history: {e}")))?;
        text.push('\n');
        codeb_host::atomic::write(&path, text.as_bytes(), 0o644)
            .map_err(|source| DeployError::Io { path, source })
    }

    /// Adds the newest release and keeps the `keep` newest (at least 2); returns the ones that
    /// fell out (their images may be pruned).
    pub fn push(&mut self, release: Release, keep: usize) -> Vec<Release> {
        self.releases.insert(0, release);
        let keep = keep.max(2);
        if self.releases.len() > keep {
            self.releases.split_off(keep)
        } else {
            Vec::new()
        }
    }

    /// Every digest this history still refers to (its releases and the active one).
    pub fn digests(&self) -> impl Iterator<Item = &str> {
        self.releases
            .iter()
            .map(|r| r.digest.as_str())
            .chain(self.active.iter().map(|a| a.digest.as_str()))
    }

    /// The newest release whose outcome is `Deploying` and which used `slot`.
    pub fn pending_mut(&mut self) -> Option<&mut Release> {
        self.releases
            .iter_mut()
            .find(|r| r.outcome == ReleaseOutcome::Deploying)
    }

    /// The newest release that served traffic and is not the active one: where a rollback goes.
    pub fn previous_good(&self) -> Option<&Release> {
        let active = self.active.as_ref().map(|a| a.digest.as_str());
        self.releases
            .iter()
            .find(|r| r.outcome == ReleaseOutcome::Superseded && Some(r.digest.as_str()) != active)
    }
}

/// Exclusive right to deploy one target; released on drop (or when the process dies).
/// The lock file `<unit>.lock` is opened read-only without following symlinks and is never
/// written; the holder's description goes to `<unit>.holder`, replaced atomically.
#[derive(Debug)]
pub struct TargetLock {
    _file: File,
}

/// Creates (`0700`) or checks codeb's state directory `<quadlet-dir>/.codeb`.
pub fn state_dir(dir: &Path) -> Result<(), DeployError> {
    codeb_host::lockfile::private_dir(dir).map_err(|source| DeployError::Io {
        path: dir.to_owned(),
        source,
    })
}

impl TargetLock {
    /// Waits up to `timeout` for the lock, then fails naming the holder.
    pub async fn acquire(
        state_dir: &Path,
        unit: &str,
        timeout: Duration,
        holder: &str,
    ) -> Result<Self, DeployError> {
        let path = state_dir.join(format!("{unit}.lock"));
        let holder_path = state_dir.join(format!("{unit}.holder"));
        let io = |path: &Path, source| DeployError::Io {
            path: path.to_owned(),
            source,
        };
        let file = codeb_host::lockfile::open_lock(&path, 0o600).map_err(|e| io(&path, e))?;
        let start = Instant::now();
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) => {
                    if start.elapsed() >= timeout {
                        let who = std::fs::read_to_string(&holder_path).unwrap_or_default();
                        return Err(DeployError::Locked {
                            target: unit.to_owned(),
                            holder: if who.trim().is_empty() {
                                "unknown holder".into()
                            } else {
                                who.trim().to_owned()
                            },
                            waited: humantime::format_duration(Duration::from_secs(
                                start.elapsed().as_secs(),
                            ))
                            .to_string(),
                        });
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(TryLockError::Error(e)) => return Err(io(&path, e)),
            }
        }
        codeb_host::atomic::write(&holder_path, holder.as_bytes(), 0o600)
            .map_err(|e| io(&holder_path, e))?;
        Ok(Self { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release(digest: &str, outcome: ReleaseOutcome) -> Release {
        Release {
            time: "2026-11-26T00:00:00Z".into(),
            image: "r/x:1".into(),
            digest: digest.into(),
            sha: String::new(),
            actor: "a".into(),
            slot: Slot::Blue,
            strategy: "blue-green".into(),
            kind: "deploy".into(),
            outcome,
            reason: None,
            settings: None,
        }
    }

    #[test]
    fn previous_good_skips_failed_and_active() {
        let mut h = History::empty("t");
        h.push(release("d1", ReleaseOutcome::Superseded), KEEP);
        h.push(release("d2", ReleaseOutcome::Active), KEEP);
        h.push(release("d3", ReleaseOutcome::RolledBack), KEEP);
        h.active = Some(Active {
            slot: Slot::Green,
            image: "r/x:2".into(),
            digest: "d2".into(),
            sha: String::new(),
            settings: None,
        });
        assert_eq!(h.previous_good().map(|r| r.digest.as_str()), Some("d1"));
    }

    #[test]
    fn history_is_bounded_and_roundtrips() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut h = History::empty("t");
        let mut dropped = Vec::new();
        for i in 0..30 {
            dropped.extend(h.push(release(&format!("d{i}"), ReleaseOutcome::Superseded), KEEP));
        }
        assert_eq!(dropped.len(), 30 - KEEP);
        assert_eq!(dropped[0].digest, "d0");
        assert_eq!(h.releases.len(), KEEP);
        assert_eq!(h.releases[0].digest, "d29");
        h.save(dir.path()).expect("save");
        assert_eq!(History::load(dir.path(), "t").expect("load"), h);
    }

    #[tokio::test]
    async fn lock_names_its_holder() {
        let dir = tempfile::tempdir().expect("tempdir");
        let held = TargetLock::acquire(
            dir.path(),
            "t",
            Duration::ZERO,
            "pid 42 (deploy of sha abc)",
        )
        .await
        .expect("first");
        let err = TargetLock::acquire(dir.path(), "t", Duration::from_millis(200), "pid 43")
            .await
            .expect_err("held");
        assert!(
            err.to_string().contains("pid 42 (deploy of sha abc)"),
            "{err}"
        );
        drop(held);
        TargetLock::acquire(dir.path(), "t", Duration::ZERO, "pid 43")
            .await
            .expect("free again");
    }

    /// Issue 9 #8: the lock followed a symlink and truncated whatever it pointed at.
    #[tokio::test]
    async fn target_lock_refuses_a_symlink_and_never_truncates_its_target() {
        let dir = tempfile::tempdir().expect("tempdir");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").expect("write");
        std::os::unix::fs::symlink(&victim, dir.path().join("t.lock")).expect("symlink");
        let err = TargetLock::acquire(dir.path(), "t", Duration::ZERO, "pid 1")
            .await
            .expect_err("a symlinked lock is refused");
        assert!(err.to_string().contains("symlink"), "{err}");
        assert_eq!(std::fs::read_to_string(&victim).expect("read"), "precious");
    }

    /// Issue 9 #8: the holder info was written into the lock file itself (truncate + write);
    /// it goes to its own file, replaced atomically, and the lock file stays empty.
    #[tokio::test]
    async fn target_lock_writes_holder_info_to_a_separate_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let _held = TargetLock::acquire(dir.path(), "t", Duration::ZERO, "pid 7 (deploy)")
            .await
            .expect("lock");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("t.lock")).expect("lock file"),
            ""
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("t.holder")).expect("holder file"),
            "pid 7 (deploy)"
        );
    }

    /// Issue 9 #8: `.codeb/` was created with the umask's mode (world-readable).
    #[test]
    fn state_dir_is_created_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().join(".codeb");
        state_dir(&d).expect("create");
        let mode = std::fs::metadata(&d).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }
}
