//! Crash-safe file replacement: temp file in the same directory, fsync, rename, fsync the
//! directory. A reader sees the old file or the new one, never a partial write.

use std::fs::{self, File, Permissions};
use std::io::{self, Write};
use std::path::Path;

/// Replaces `path` with `contents`. The new file keeps the old file's permissions, or gets
/// `mode` when it is new.
pub fn write(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let perms = match fs::metadata(path) {
        Ok(m) => m.permissions(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Permissions::from_mode(mode),
        Err(e) => return Err(e),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".codeb-")
        .suffix(".tmp")
        .tempfile_in(dir)?;
    tmp.as_file().set_permissions(perms)?;
    tmp.write_all(contents)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn keeps_mode_and_replaces_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("f");
        write(&p, b"one", 0o600).expect("first write");
        assert_eq!(fs::read(&p).expect("read"), b"one");
        let mode = fs::metadata(&p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        write(&p, b"two", 0o644).expect("second write");
        assert_eq!(fs::read(&p).expect("read"), b"two");
        let mode = fs::metadata(&p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "existing permissions are kept");
        let leftovers = fs::read_dir(dir.path()).expect("ls").count();
        assert_eq!(leftovers, 1, "no temp file is left behind");
    }
}
