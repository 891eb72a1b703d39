//! Lock files and the private directories that hold them, opened so that nobody else on the
//! host can redirect them: never through a symlink (`O_NOFOLLOW`), only regular files owned
//! by this user or root, and private directories created `0700` and checked when they exist.
//! A lock file is only ever opened read-only (flock needs no write access) and never written:
//! whatever a holder wants to say goes to a separate file, replaced atomically.

use rustix::fs::{Mode, OFlags};
use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The effective user id of this process.
pub fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

fn refuse(path: &Path, why: String) -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!("{}: {why}", path.display()),
    )
}

/// `uid` may own codeb's state: this user or root.
fn trusted_owner(uid: u32) -> bool {
    uid == euid() || uid == 0
}

/// Creates `dir` with mode `0700` when it is missing (parents as needed); an existing one must
/// be a real directory (not a symlink) owned by this user or root.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(parent) = dir.parent() {
                std::fs::create_dir_all(parent)?;
            }
            match std::fs::DirBuilder::new().mode(0o700).create(dir) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
        Err(e) => return Err(e),
    }
    let meta = std::fs::symlink_metadata(dir)?;
    if meta.file_type().is_symlink() {
        return Err(refuse(
            dir,
            "is a symlink; codeb keeps its state only in a real directory: remove the link".into(),
        ));
    }
    if !meta.is_dir() {
        return Err(refuse(dir, "exists and is not a directory".into()));
    }
    if !trusted_owner(meta.uid()) {
        return Err(refuse(
            dir,
            format!(
                "is owned by uid {}, neither this user (uid {}) nor root; another user could replace codeb's state there: chown it or remove it",
                meta.uid(),
                euid()
            ),
        ));
    }
    Ok(())
}

/// Opens (creating with `mode` when missing) the lock file `path` read-only, without following
/// a symlink, and checks that it is a regular file owned by this user or root.
pub fn open_lock(path: &Path, mode: u32) -> io::Result<File> {
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::from_raw_mode(mode),
    )
    .map_err(|e| {
        let e = io::Error::from(e);
        if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
            refuse(
                path,
                "is a symlink; a lock file is never followed through one: remove the link".into(),
            )
        } else {
            e
        }
    })?;
    let file = File::from(fd);
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(refuse(path, "is not a regular file".into()));
    }
    if !trusted_owner(meta.uid()) {
        return Err(refuse(
            path,
            format!(
                "is owned by uid {}, neither this user (uid {}) nor root: remove it",
                meta.uid(),
                euid()
            ),
        ));
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn private_dir_is_created_0700() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().join("a/.codeb");
        private_dir(&d).expect("create");
        let mode = std::fs::metadata(&d).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        private_dir(&d).expect("exists already");
    }

    #[test]
    fn private_dir_refuses_a_symlink() {
        let dir = tempfile::tempdir().expect("tempdir");
        let elsewhere = dir.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).expect("mkdir");
        let link = dir.path().join(".codeb");
        std::os::unix::fs::symlink(&elsewhere, &link).expect("symlink");
        let err = private_dir(&link).expect_err("symlink");
        assert!(err.to_string().contains("is a symlink"), "{err}");
    }

    #[test]
    fn open_lock_never_follows_a_symlink() {
        let dir = tempfile::tempdir().expect("tempdir");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").expect("write");
        let link = dir.path().join("t.lock");
        std::os::unix::fs::symlink(&victim, &link).expect("symlink");
        let err = open_lock(&link, 0o600).expect_err("symlink");
        assert!(err.to_string().contains("is a symlink"), "{err}");
        assert_eq!(std::fs::read_to_string(&victim).expect("read"), "precious");
    }
}
