//! The manifest file on disk: where it is, reading it with errors that name the file, and
//! changing it under an exclusive lock with an atomic replace.

use crate::HostPorts;
use crate::atomic;
use codeb_core::manifest::{AllocError, DEFAULT_PATH, Document, ParseError, Target};
use codeb_core::vars;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "manifest {0} does not exist; create it (see README) or point --manifest / {cm} at it",
        cm = vars::CODEB_MANIFEST
    )]
    NotFound(PathBuf),
    #[error("manifest {0} is a directory; pass the path of the YAML file itself")]
    IsDirectory(PathBuf),
    #[error("cannot read manifest {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("manifest {0} is not UTF-8 text")]
    NotUtf8(PathBuf),
    #[error("manifest {path} is malformed:\n{}", list(errors))]
    Parse {
        path: PathBuf,
        errors: Vec<ParseError>,
    },
    #[error("the manifest's directory {0} does not exist; create it first (mkdir -p)")]
    NoDirectory(PathBuf),
    #[error("cannot lock manifest {path} (lock file {lock}): {source}")]
    Lock {
        path: PathBuf,
        lock: PathBuf,
        source: io::Error,
    },
    #[error("cannot write manifest {path}: {source}; the file was left as it was")]
    Write { path: PathBuf, source: io::Error },
}

/// Why an allocation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum AllocateError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Pool(#[from] AllocError),
}

fn list(errors: &[ParseError]) -> String {
    errors
        .iter()
        .map(|e| format!("  {e}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[derive(Debug, Clone)]
pub struct ManifestStore {
    path: PathBuf,
}

/// Holds the manifest's exclusive lock until dropped.
#[derive(Debug)]
pub struct ManifestLock {
    _file: File,
}

impl ManifestStore {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// `--manifest` if given, else `$CODEB_MANIFEST`, else [`DEFAULT_PATH`].
    pub fn resolve(flag: Option<PathBuf>) -> Self {
        let path = flag
            .or_else(|| {
                std::env::var_os(vars::CODEB_MANIFEST)
                    .filter(|v| !v.is_empty())
                    .map(PathBuf::from)
            })
            .unwrap_or_else(|| PathBuf::from(DEFAULT_PATH));
        Self::new(path)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock_path(&self) -> PathBuf {
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "manifest".into());
        self.path.with_file_name(format!(".{name}.lock"))
    }

    /// Reads and parses the manifest.
    pub fn load(&self) -> Result<Document, StoreError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::NotFound(self.path.clone()));
            }
            Err(e) if e.kind() == io::ErrorKind::IsADirectory || self.path.is_dir() => {
                return Err(StoreError::IsDirectory(self.path.clone()));
            }
            Err(source) => {
                return Err(StoreError::Read {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        let text = String::from_utf8(bytes).map_err(|_| StoreError::NotUtf8(self.path.clone()))?;
        Document::parse(&text).map_err(|errors| StoreError::Parse {
            path: self.path.clone(),
            errors,
        })
    }

    /// Like [`Self::load`], but a missing file is an empty manifest (for `--allocate`).
    pub fn load_or_empty(&self) -> Result<Document, StoreError> {
        match self.load() {
            Err(StoreError::NotFound(_)) => Ok(Document::empty()),
            other => other,
        }
    }

    /// Takes the manifest's exclusive lock (a `.NAME.lock` file beside it), waiting for it.
    /// The lock file is shared by every user that edits the manifest (root's daemon, the
    /// runner's user): it is opened read-only (flock needs no more), never through a symlink,
    /// and created group-writable with the manifest's owner and group, so that whoever comes
    /// first does not lock the others out.
    pub fn lock(&self) -> Result<ManifestLock, StoreError> {
        let lock = self.lock_path();
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty())
            && !dir.is_dir()
        {
            return Err(StoreError::NoDirectory(dir.to_owned()));
        }
        let err = |source| StoreError::Lock {
            path: self.path.clone(),
            lock: lock.clone(),
            source,
        };
        let file = open_shared_lock(&lock, &self.path).map_err(err)?;
        file.lock().map_err(err)?;
        Ok(ManifestLock { _file: file })
    }

    /// Under the manifest lock: re-reads the file and, if `target` has no port, takes the
    /// lowest free one of its range (skipping assigned and reserved ports, and ports `host`
    /// says are listening) and writes the manifest. Returns the manifest as it now is and the
    /// port when one was taken. A missing manifest file is created.
    pub fn allocate(
        &self,
        target: &Target,
        host: Option<&HostPorts>,
    ) -> Result<(Document, Option<u16>), AllocateError> {
        let lock = self.lock()?;
        let doc = self.load_or_empty()?;
        if doc.manifest.assignment(target).is_some() {
            return Ok((doc, None));
        }
        // A port is free when nothing listens on it nor on its two slot ports.
        let mut free = |p: u16| {
            host.is_none_or(|h| {
                !h.is_listening(p)
                    && codeb_core::ports::slot_ports(p)
                        .is_none_or(|(b, g)| !h.is_listening(b) && !h.is_listening(g))
            })
        };
        let port = doc.manifest.allocate(target, &mut free)?;
        let text = doc
            .with_port(target, port)
            .map_err(|e| self.edit_error(e))?;
        self.save(&lock, &text)?;
        let doc = Document::parse(&text).map_err(|errors| StoreError::Parse {
            path: self.path.clone(),
            errors,
        })?;
        Ok((doc, Some(port)))
    }

    /// Under the manifest lock: removes `target`'s port from the manifest. Returns whether
    /// there was one.
    pub fn release(&self, target: &Target) -> Result<bool, StoreError> {
        let lock = self.lock()?;
        let doc = match self.load() {
            Err(StoreError::NotFound(_)) => return Ok(false),
            other => other?,
        };
        match doc.without(target).map_err(|e| self.edit_error(e))? {
            Some(text) => {
                self.save(&lock, &text)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn edit_error(&self, e: codeb_core::manifest::EditError) -> StoreError {
        StoreError::Write {
            path: self.path.clone(),
            source: io::Error::other(e.to_string()),
        }
    }

    /// Replaces the manifest with `text`. Call it while holding [`Self::lock`].
    pub fn save(&self, _lock: &ManifestLock, text: &str) -> Result<(), StoreError> {
        atomic::write(&self.path, text.as_bytes(), 0o644).map_err(|source| StoreError::Write {
            path: self.path.clone(),
            source,
        })
    }
}

/// Mode of a new manifest lock file: readable and writable by the manifest's group.
pub const LOCK_MODE: u32 = 0o660;

/// Opens the manifest's lock file read-only (no symlink followed), creating it as
/// [`LOCK_MODE`] with the owner and group of the manifest (or of its directory when the
/// manifest does not exist yet). A lock file this user owns (or any, for root) that an older
/// codeb created private is opened up the same way.
fn open_shared_lock(lock: &Path, manifest: &Path) -> io::Result<File> {
    use rustix::fs::{Mode, OFlags};
    use std::os::unix::fs::MetadataExt;
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY;
    let owner = || {
        std::fs::metadata(manifest)
            .or_else(|_| std::fs::metadata(manifest.parent().unwrap_or(Path::new("."))))
            .map(|m| (m.uid(), m.gid()))
            .ok()
    };
    let share = |file: &File| {
        let me = crate::lockfile::euid();
        let Ok(meta) = file.metadata() else { return };
        if me != 0 && meta.uid() != me {
            return;
        }
        if meta.mode() & 0o060 != 0o060 {
            let _ = rustix::fs::fchmod(file, Mode::from_raw_mode(LOCK_MODE));
        }
        if let Some((uid, gid)) = owner()
            && (meta.uid(), meta.gid()) != (uid, gid)
        {
            let (u, g) = (
                rustix::fs::Uid::from_raw(uid),
                rustix::fs::Gid::from_raw(gid),
            );
            // Only root may give the file away; anyone may pass it to a group they are in.
            if rustix::fs::fchown(file, Some(u), Some(g)).is_err() {
                let _ = rustix::fs::fchown(file, None, Some(g));
            }
        }
    };
    for _ in 0..2 {
        match rustix::fs::open(lock, flags, Mode::empty()) {
            Ok(fd) => {
                let file = File::from(fd);
                share(&file);
                return Ok(file);
            }
            Err(rustix::io::Errno::NOENT) => {}
            Err(e) => return Err(e.into()),
        }
        match rustix::fs::open(
            lock,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | flags.difference(OFlags::RDONLY),
            Mode::from_raw_mode(LOCK_MODE),
        ) {
            Ok(fd) => share(&File::from(fd)),
            Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(e.into()),
        }
    }
    rustix::fs::open(lock, flags, Mode::empty())
        .map(File::from)
        .map_err(Into::into)
}

#[cfg(test)]
mod tests {
    use super::*;
    use codeb_core::{Environment, ProjectName};

    #[test]
    fn the_preview_pool_gives_distinct_ports_until_exhausted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ManifestStore::new(dir.path().join("m.yaml"));
        let project = ProjectName::new("app").expect("name");
        let mut ports = std::collections::BTreeSet::new();
        // 1,000 ports in 5000-5999, less 5432 (PostgreSQL), which is always reserved.
        for pr in 1..=999u64 {
            let t = Target::new(project.clone(), Environment::Preview, Some(pr)).expect("target");
            let (_, port) = store.allocate(&t, None).expect("a free port");
            assert!(ports.insert(port.expect("newly allocated")), "distinct");
        }
        assert_eq!(ports.len(), 999);
        assert!(!ports.contains(&5432));
        let next = Target::new(project, Environment::Preview, Some(1000)).expect("target");
        let err = store.allocate(&next, None).expect_err("exhausted");
        assert!(
            err.to_string().contains("pool 5000-5999 is exhausted"),
            "{err}"
        );
        // Releasing one frees its port for the next.
        let first = Target::new(
            ProjectName::new("app").expect("name"),
            Environment::Preview,
            Some(1),
        )
        .expect("t");
        assert!(store.release(&first).expect("release"));
        assert_eq!(
            store.allocate(&next, None).expect("free again").1,
            Some(5000)
        );
    }
}
