//! Files and directories as they should be (content, mode, owner), what differs, and how to
//! make it so: atomically for files (temp file in the same directory with the final mode and
//! owner, fsync, rename, fsync the directory).

use crate::accounts::Accounts;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// `path` (absolute, as on the target) inside `root`.
pub fn under(root: &Path, path: &Path) -> PathBuf {
    let rel: PathBuf = path
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect();
    root.join(rel)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Dir,
    /// The installer owns the content: it is replaced when it differs.
    File(Vec<u8>),
    /// Written once with this content; afterwards only mode and owner are kept right (the
    /// administrator's configuration, a secret).
    Config(Vec<u8>),
}

/// A file or directory as it should be.
#[derive(Debug, Clone)]
pub struct Want {
    /// Where it is in the tree being installed (root applied).
    pub path: PathBuf,
    /// The same path as the target sees it (for messages).
    pub shown: String,
    pub kind: Kind,
    pub mode: u32,
    pub user: String,
    pub group: String,
}

impl Want {
    pub fn dir(path: PathBuf, shown: &str, mode: u32, user: &str, group: &str) -> Self {
        Self {
            path,
            shown: shown.to_owned(),
            kind: Kind::Dir,
            mode,
            user: user.to_owned(),
            group: group.to_owned(),
        }
    }

    pub fn file(
        path: PathBuf,
        shown: &str,
        contents: Vec<u8>,
        mode: u32,
        user: &str,
        group: &str,
    ) -> Self {
        Self {
            path,
            shown: shown.to_owned(),
            kind: Kind::File(contents),
            mode,
            user: user.to_owned(),
            group: group.to_owned(),
        }
    }

    /// Root's, written once.
    pub fn config(path: PathBuf, shown: &str, contents: Vec<u8>, mode: u32) -> Self {
        Self {
            path,
            shown: shown.to_owned(),
            kind: Kind::Config(contents),
            mode,
            user: "root".into(),
            group: "root".into(),
        }
    }

    fn what(&self) -> &'static str {
        match self.kind {
            Kind::Dir => "directory",
            _ => "file",
        }
    }
}

fn ids(acc: &Accounts, user: &str, group: &str) -> Option<(u32, u32)> {
    Some((acc.user(user)?.uid, acc.group(group)?.gid))
}

/// What has to change to make `want` true, in words, or `None` when it already is.
pub fn diff(want: &Want, acc: &Accounts) -> io::Result<Option<String>> {
    let owner = format!("{}:{}", want.user, want.group);
    let meta = match fs::symlink_metadata(&want.path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(Some(format!(
                "create {} {} ({owner}, {:04o})",
                want.what(),
                want.shown,
                want.mode
            )));
        }
        Err(e) => return Err(e),
    };
    let mut what = Vec::new();
    match &want.kind {
        Kind::Dir if !meta.is_dir() => {
            return Err(io::Error::other(format!(
                "{} exists and is not a directory: move it away and run codeb-install again",
                want.shown
            )));
        }
        Kind::File(_) | Kind::Config(_) if !meta.is_file() => {
            return Err(io::Error::other(format!(
                "{} exists and is not a regular file: move it away and run codeb-install again",
                want.shown
            )));
        }
        Kind::File(contents)
            if meta.len() != contents.len() as u64 || fs::read(&want.path)? != *contents =>
        {
            what.push("new content".to_owned());
        }
        _ => {}
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode != want.mode {
        what.push(format!("mode {mode:04o} -> {:04o}", want.mode));
    }
    let right_owner = ids(acc, &want.user, &want.group) == Some((meta.uid(), meta.gid()));
    if !right_owner {
        what.push(format!(
            "owner {}:{} -> {owner}",
            acc.user_name(meta.uid()),
            acc.group_name(meta.gid())
        ));
    }
    if what.is_empty() {
        Ok(None)
    } else {
        let verb = if matches!(want.kind, Kind::File(_)) && what[0] == "new content" {
            "update"
        } else {
            "fix"
        };
        Ok(Some(format!("{verb} {} ({})", want.shown, what.join(", "))))
    }
}

/// Makes `want` true (the accounts must exist by now).
pub fn apply(want: &Want, acc: &Accounts) -> io::Result<()> {
    let (uid, gid) = ids(acc, &want.user, &want.group).ok_or_else(|| {
        io::Error::other(format!(
            "user {} or group {} does not exist",
            want.user, want.group
        ))
    })?;
    let perms = fs::Permissions::from_mode(want.mode);
    match &want.kind {
        Kind::Dir => {
            if !want.path.is_dir() {
                fs::create_dir_all(&want.path)?;
            }
            std::os::unix::fs::chown(&want.path, Some(uid), Some(gid))?;
            // After chown: chown clears the setgid bit.
            fs::set_permissions(&want.path, perms)?;
        }
        Kind::File(contents) => write_atomic(&want.path, contents, want.mode, uid, gid)?,
        Kind::Config(contents) => {
            if want.path.exists() {
                std::os::unix::fs::chown(&want.path, Some(uid), Some(gid))?;
                fs::set_permissions(&want.path, perms)?;
            } else {
                write_atomic(&want.path, contents, want.mode, uid, gid)?;
            }
        }
    }
    Ok(())
}

/// Replaces `path` by a file that has `contents`, `mode` and owner from the first moment it
/// is visible.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32, uid: u32, gid: u32) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::other(format!("{} has no directory", path.display())))?;
    fs::create_dir_all(dir)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".codeb-install-")
        .suffix(".tmp")
        .permissions(fs::Permissions::from_mode(0o600))
        .tempfile_in(dir)?;
    tmp.write_all(contents)?;
    std::os::unix::fs::fchown(tmp.as_file(), Some(uid), Some(gid))?;
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(mode))?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    fs::File::open(dir)?.sync_all()
}

/// Gives a whole tree to `uid:gid` (symbolic links themselves, not what they point to).
pub fn chown_tree(dir: &Path, uid: u32, gid: u32) -> io::Result<()> {
    std::os::unix::fs::lchown(dir, Some(uid), Some(gid))?;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            chown_tree(&path, uid, gid)?;
        } else {
            std::os::unix::fs::lchown(&path, Some(uid), Some(gid))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root_accounts() -> Accounts {
        Accounts::parse("root:x:0:0:root:/root:/bin/bash\n", "root:x:0:\n")
    }

    #[test]
    fn under_keeps_absolute_paths_inside_the_root() {
        assert_eq!(
            under(Path::new("/tmp/r"), Path::new("/etc/codeb")),
            Path::new("/tmp/r/etc/codeb")
        );
        assert_eq!(
            under(Path::new("/tmp/r"), Path::new("/../etc")),
            Path::new("/tmp/r/etc")
        );
        assert_eq!(under(Path::new("/"), Path::new("/etc")), Path::new("/etc"));
    }

    #[test]
    fn a_file_is_written_whole_then_found_equal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let acc = root_accounts();
        let w = Want::file(
            dir.path().join("a/b.conf"),
            "/a/b.conf",
            b"x=1\n".to_vec(),
            0o640,
            "root",
            "root",
        );
        let d = diff(&w, &acc).expect("diff").expect("missing file differs");
        assert!(d.starts_with("create file /a/b.conf"), "{d}");
        apply(&w, &acc).expect("apply");
        assert_eq!(diff(&w, &acc).expect("diff"), None);
        let m = fs::metadata(&w.path).expect("meta");
        assert_eq!(m.permissions().mode() & 0o7777, 0o640);
        let left = fs::read_dir(dir.path().join("a")).expect("ls").count();
        assert_eq!(left, 1, "no temp file is left behind");

        fs::set_permissions(&w.path, fs::Permissions::from_mode(0o666)).expect("chmod");
        fs::write(&w.path, "x=2\n").expect("write");
        let d = diff(&w, &acc).expect("diff").expect("differs");
        assert_eq!(d, "update /a/b.conf (new content, mode 0666 -> 0640)");
    }

    #[test]
    fn a_config_file_keeps_its_content() {
        let dir = tempfile::tempdir().expect("tempdir");
        let acc = root_accounts();
        let p = dir.path().join("daemon.toml");
        fs::write(&p, "edited by the admin\n").expect("write");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).expect("chmod");
        let w = Want::config(
            p.clone(),
            "/etc/codeb/daemon.toml",
            b"template\n".to_vec(),
            0o640,
        );
        let d = diff(&w, &acc).expect("diff").expect("mode differs");
        assert_eq!(d, "fix /etc/codeb/daemon.toml (mode 0644 -> 0640)");
        apply(&w, &acc).expect("apply");
        assert_eq!(
            fs::read_to_string(&p).expect("read"),
            "edited by the admin\n"
        );
        assert_eq!(diff(&w, &acc).expect("diff"), None);
    }

    #[test]
    fn a_setgid_directory_keeps_its_bit_after_chown() {
        let dir = tempfile::tempdir().expect("tempdir");
        let acc = root_accounts();
        let w = Want::dir(
            dir.path().join("config"),
            "/home/codeb/config",
            0o2770,
            "root",
            "root",
        );
        apply(&w, &acc).expect("apply");
        let m = fs::metadata(&w.path).expect("meta");
        assert_eq!(m.permissions().mode() & 0o7777, 0o2770);
        assert_eq!(diff(&w, &acc).expect("diff"), None);
    }

    #[test]
    fn a_file_where_a_directory_belongs_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("codeb");
        fs::write(&p, "").expect("write");
        let w = Want::dir(p, "/etc/codeb", 0o750, "root", "root");
        let e = diff(&w, &root_accounts()).expect_err("not a directory");
        assert!(
            e.to_string()
                .contains("/etc/codeb exists and is not a directory"),
            "{e}"
        );
    }
}
