//! `deploy` and `rollback` run through sudo (the runner's jobs, by the sudoers rule that
//! `codeb-install` writes, `/etc/sudoers.d/codeb-runner`). The rule lets the runner's user run
//! exactly `codeb-quadlet-update deploy|rollback` as root and keeps the action's `INPUT_*`
//! variables, so every input is the caller's choice. Whatever root would do with an input that
//! the caller could not do itself is refused, before anything changes:
//!
//! - the Quadlet directory and the manifest are the host's (`/etc/containers/systemd`,
//!   `/home/codeb/config/port-manifest.yaml`): another directory would let the caller have
//!   root write units, and so run anything, anywhere;
//! - no `--templates` (a unit template of the caller's is a root service of the caller's);
//! - Caddy's admin API only over loopback TCP (which the caller reaches anyway): a unix socket
//!   path would have root connect to any socket on the host, a remote one is not the host's;
//! - the env file must be a regular file of the caller's (not a symbolic link, not readable by
//!   everyone). It is copied, through the descriptor that was checked, into codeb's root-only
//!   state (`<quadlet-dir>/.codeb/env/`), and the unit reads the copy: podman reads env files
//!   as root at every start, so the caller's own path could later name any file of root's.
//!
//! "Through sudo" is `SUDO_UID` of a user other than root while running as root: an
//! administrator's `sudo codeb-quadlet-update` is held to the same (the message says how to
//! run it as plain root); the runner's user cannot drop the variable, its rule has no `env`.

use crate::DeployArgs;
use codeb_actions::sudo::{Caller, SUDOERS_FILE};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The Quadlet directory a run through sudo must use.
pub const QUADLET_DIR: &str = "/etc/containers/systemd";
/// An env file larger than this is refused (it is read into memory to be copied).
const MAX_ENV_FILE: u64 = 1 << 20;

fn refuse(caller: &Caller, what: &str) -> String {
    format!(
        "run through sudo for {} ({SUDOERS_FILE}), {what}. (An administrator who means it: run \
         it as root without sudo's variables, `sudo env -u SUDO_UID codeb-quadlet-update ...`.)",
        caller.user
    )
}

/// Checks the inputs of a deploy or rollback run through sudo for `caller`, and points the
/// env file at root's copy (written into `state_dir`/env). `Err` is a usage error: nothing
/// has changed.
pub fn check(caller: &Caller, d: &mut DeployArgs) -> Result<(), String> {
    check_paths(caller, d)?;
    if let Some(f) = d.env_file.clone() {
        let name = match d.at.pr {
            Some(pr) => format!("{}-pr-{pr}.env", d.at.project),
            None => format!("{}-{}.env", d.at.project, d.at.environment),
        };
        let state = d.at.quadlet_dir.join(".codeb");
        d.env_file = Some(copy_env_file(caller, &f, &state.join("env"), &name)?);
    }
    Ok(())
}

fn check_paths(caller: &Caller, d: &DeployArgs) -> Result<(), String> {
    if d.at.quadlet_dir != Path::new(QUADLET_DIR) {
        return Err(refuse(
            caller,
            &format!(
                "units go only to {QUADLET_DIR}, not {} (drop --quadlet-dir / the \
                 quadlet-dir input)",
                d.at.quadlet_dir.display()
            ),
        ));
    }
    if let Some(m) = &d.at.manifest
        && m != Path::new(codeb_core::manifest::DEFAULT_PATH)
    {
        return Err(refuse(
            caller,
            &format!(
                "the port manifest is the host's, {}, not {} (drop --manifest / the manifest \
                 input)",
                codeb_core::manifest::DEFAULT_PATH,
                m.display()
            ),
        ));
    }
    if let Some(t) = &d.templates {
        return Err(refuse(
            caller,
            &format!(
                "--templates {} is refused: a unit template of the caller's would be a root \
                 service of the caller's (install templates on the host, run as root)",
                t.display()
            ),
        ));
    }
    let admin = d.admin.caddy_admin.as_str();
    if admin.starts_with("unix/") {
        return Err(refuse(
            caller,
            &format!(
                "Caddy's admin API is reached only over loopback TCP (e.g. \
                 http://127.0.0.1:2019, what codeb-install sets up), not the unix socket \
                 {admin}: root would connect to whatever socket the caller names"
            ),
        ));
    }
    if d.admin.allow_remote_caddy_admin {
        return Err(refuse(
            caller,
            "a remote Caddy admin API is refused (allow-remote-caddy-admin): use the host's, \
             on loopback",
        ));
    }
    Ok(())
}

/// Copies the caller's env file `src` to `dir/name` (root's, 0600) and returns the copy's path.
fn copy_env_file(caller: &Caller, src: &Path, dir: &Path, name: &str) -> Result<PathBuf, String> {
    if !src.is_absolute() {
        return Err(format!(
            "env file {} must be an absolute path",
            src.display()
        ));
    }
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK).bits() as i32)
        .open(src)
        .map_err(|e| {
            refuse(
                caller,
                &format!(
                    "env file {}: {e} (it must be a file of the caller's, not a symbolic link)",
                    src.display()
                ),
            )
        })?;
    let m = f
        .metadata()
        .map_err(|e| format!("env file {}: {e}", src.display()))?;
    if !m.is_file() || m.uid() != caller.uid {
        return Err(refuse(
            caller,
            &format!(
                "env file {} must be a regular file owned by {} (uid {}): root would give the \
                 container a file the caller cannot read",
                src.display(),
                caller.user,
                caller.uid
            ),
        ));
    }
    if m.mode() & 0o004 != 0 {
        return Err(format!(
            "env file {} is readable by everyone (mode {:o}); it holds secrets: chmod 600 {}",
            src.display(),
            m.mode() & 0o777,
            src.display()
        ));
    }
    if m.len() > MAX_ENV_FILE {
        return Err(format!(
            "env file {} is larger than {MAX_ENV_FILE} bytes",
            src.display()
        ));
    }
    let mut contents = Vec::new();
    f.by_ref()
        .take(MAX_ENV_FILE + 1)
        .read_to_end(&mut contents)
        .map_err(|e| format!("env file {}: {e}", src.display()))?;
    let err = |e: std::io::Error| {
        format!(
            "copy of env file {} into {}: {e}",
            src.display(),
            dir.display()
        )
    };
    std::fs::create_dir_all(dir).map_err(err)?;
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .map_err(err)?;
    let dest = dir.join(name);
    codeb_host::atomic::write(&dest, &contents, 0o600).map_err(err)?;
    Ok(dest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn caller(uid: u32) -> Caller {
        Caller {
            uid,
            user: "codeb-runner".into(),
        }
    }

    #[test]
    fn the_env_file_is_copied_from_the_callers_own_file_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let me = std::fs::metadata(dir.path()).expect("meta").uid();
        let src = dir.path().join("app.env");
        std::fs::write(&src, "SECRET=1\n").expect("write");
        std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let state = dir.path().join("state/env");
        let copy = copy_env_file(&caller(me), &src, &state, "a-production.env").expect("copy");
        assert_eq!(copy, state.join("a-production.env"));
        assert_eq!(std::fs::read_to_string(&copy).expect("read"), "SECRET=1\n");
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(&copy), 0o600);
        assert_eq!(mode(&state), 0o700);

        let e = copy_env_file(&caller(me + 1), &src, &state, "b.env").expect_err("not theirs");
        assert!(
            e.contains("must be a regular file owned by codeb-runner"),
            "{e}"
        );
        assert!(e.contains(SUDOERS_FILE), "{e}");

        let link = dir.path().join("link.env");
        std::os::unix::fs::symlink(&src, &link).expect("symlink");
        let e = copy_env_file(&caller(me), &link, &state, "c.env").expect_err("a link");
        assert!(e.contains("not a symbolic link"), "{e}");

        std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let e = copy_env_file(&caller(me), &src, &state, "d.env").expect_err("world-readable");
        assert!(e.contains("readable by everyone"), "{e}");
        for n in ["b.env", "c.env", "d.env"] {
            assert!(!state.join(n).exists(), "{n}: a refusal writes nothing");
        }
    }

    fn args(extra: &[&str]) -> Box<DeployArgs> {
        use clap::Parser;
        let mut argv = vec![
            "codeb-quadlet-update",
            "deploy",
            "--project",
            "shop",
            "--environment",
            "production",
            "--image",
            "r/shop:1",
        ];
        argv.extend_from_slice(extra);
        match crate::Cli::try_parse_from(argv).expect("parses").command {
            crate::Command::Deploy(d) => d,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_hosts_defaults_pass_and_every_escape_is_refused_by_name() {
        let c = caller(998);
        check_paths(&c, &args(&[])).expect("the action's defaults");
        check_paths(&c, &args(&["--caddy-admin", "none"])).expect("no Caddy");
        check_paths(
            &c,
            &args(&["--manifest", codeb_core::manifest::DEFAULT_PATH]),
        )
        .expect("the host's manifest, named");
        for (extra, says) in [
            (
                &["--quadlet-dir", "/etc/systemd/system"][..],
                "units go only to /etc/containers/systemd",
            ),
            (
                &["--manifest", "/etc/shadow"][..],
                "the port manifest is the host's",
            ),
            (
                &["--templates", "/home/codeb-runner/t"][..],
                "--templates /home/codeb-runner/t is refused",
            ),
            (
                &["--caddy-admin", "unix//run/podman/podman.sock"][..],
                "only over loopback TCP",
            ),
            (
                &[
                    "--allow-remote-caddy-admin",
                    "--caddy-admin",
                    "http://10.0.0.1:2019",
                ][..],
                "remote Caddy admin",
            ),
        ] {
            let e = check_paths(&c, &args(extra)).expect_err(says);
            assert!(
                e.contains(says) && e.contains(SUDOERS_FILE) && e.contains("codeb-runner"),
                "{extra:?}: {e}"
            );
        }
    }
}
