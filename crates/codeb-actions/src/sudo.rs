//! A step run through sudo: the runner's jobs run as an unprivileged user, and the few steps
//! that need root (a deploy) run through the sudoers rule `codeb-install` writes
//! (`/etc/sudoers.d/codeb-runner`). Such a run acts for the calling user and must not let that
//! user reach further than the rule means: its outputs go only to files the caller owns.

use codeb_core::vars;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// The sudoers drop-in that lets the runner's user run the deploy steps as root.
pub const SUDOERS_FILE: &str = "/etc/sudoers.d/codeb-runner";

/// The user who ran `sudo`, when this process runs as root through sudo for someone else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    pub user: String,
}

impl Caller {
    /// `Some` when the effective user is root and sudo says another user asked (`SUDO_UID`,
    /// which sudo sets itself and the sudoers rule does not let the caller pass).
    pub fn from_env() -> Option<Self> {
        if !rustix::process::geteuid().is_root() {
            return None;
        }
        Self::from_vars(
            std::env::var(vars::SUDO_UID).ok().as_deref(),
            std::env::var(vars::SUDO_USER).ok().as_deref(),
        )
    }

    fn from_vars(uid: Option<&str>, user: Option<&str>) -> Option<Self> {
        let uid: u32 = uid?.trim().parse().ok()?;
        if uid == 0 {
            return None;
        }
        Some(Self {
            uid,
            user: user
                .filter(|u| !u.is_empty())
                .map_or_else(|| format!("uid {uid}"), str::to_owned),
        })
    }
}

/// Opens `path` for appending on behalf of the user `uid`: an existing regular file of that
/// user's, not through a symbolic link (so a root process never appends to a file the caller
/// could not write itself). The check is made on the open file, not on the name.
pub fn open_append_as(path: &Path, uid: u32) -> io::Result<File> {
    let f = OpenOptions::new()
        .append(true)
        .custom_flags((rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK).bits() as i32)
        .open(path)
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "{}: {e} (run through sudo, a step appends only to an existing file of \
                     the calling user's, never through a symbolic link)",
                    path.display()
                ),
            )
        })?;
    let m = f.metadata()?;
    if !m.is_file() || m.uid() != uid {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is not a regular file of the calling user (uid {uid}): run through sudo, a \
                 step appends only to the runner's own files",
                path.display()
            ),
        ));
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn caller_comes_from_sudo_uid_and_root_itself_is_no_caller() {
        assert_eq!(
            Caller::from_vars(Some("998"), Some("codeb-runner")),
            Some(Caller {
                uid: 998,
                user: "codeb-runner".into()
            })
        );
        assert_eq!(Caller::from_vars(Some("0"), Some("root")), None);
        assert_eq!(Caller::from_vars(None, Some("x")), None);
        assert_eq!(Caller::from_vars(Some("x"), None), None);
        assert_eq!(
            Caller::from_vars(Some("7"), None).map(|c| c.user),
            Some("uid 7".into())
        );
    }

    #[test]
    fn appends_only_to_the_callers_own_regular_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let me = std::fs::metadata(dir.path()).expect("meta").uid();
        let own = dir.path().join("output");
        std::fs::write(&own, "").expect("write");
        open_append_as(&own, me)
            .expect("own file")
            .write_all(b"a=1\n")
            .expect("append");
        assert_eq!(std::fs::read_to_string(&own).expect("read"), "a=1\n");

        let e = open_append_as(&own, me + 1).expect_err("someone else's file");
        assert!(
            e.to_string()
                .contains("not a regular file of the calling user"),
            "{e}"
        );

        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&own, &link).expect("symlink");
        let e = open_append_as(&link, me).expect_err("a symbolic link");
        assert!(
            e.to_string().contains("never through a symbolic link"),
            "{e}"
        );

        let missing = dir.path().join("missing");
        open_append_as(&missing, me).expect_err("not created");
        assert!(!missing.exists(), "nothing is created for the caller");
    }
}
