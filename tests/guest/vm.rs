//! The guest: a Debian 13 machine with systemd as PID 1 and podman 5 (Quadlet), booted by
//! `scripts/vm` under QEMU, reached over ssh. One guest per test run; it is killed (and its
//! disk overlay removed) when [`Guest`] is dropped, or by `scripts/vm --watch` when this
//! process dies first.

use crate::infra::{ScratchDir, unique_id, workspace_root};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// The output of a command run on the host or in the guest.
#[derive(Debug)]
pub struct Out {
    /// The exit code; -1 when killed by a signal or by the timeout.
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
}

impl Out {
    pub fn all(&self) -> String {
        format!(
            "exit {}{}\n--- stdout\n{}\n--- stderr\n{}",
            self.code,
            if self.timed_out { " (timed out)" } else { "" },
            self.stdout.trim_end(),
            self.stderr.trim_end()
        )
    }
}

/// Runs `cmd` with `stdin` as its input; kills it after `timeout`.
pub fn run_with_timeout(cmd: &mut Command, stdin: &str, timeout: Duration) -> Out {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let mut input = child.stdin.take().expect("stdin");
    let stdin = stdin.to_owned();
    let writer = thread::spawn(move || {
        let _ = input.write_all(stdin.as_bytes());
    });
    let mut out_pipe = child.stdout.take().expect("stdout");
    let mut err_pipe = child.stderr.take().expect("stderr");
    let out_reader = thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out_pipe.read_to_end(&mut s);
        s
    });
    let err_reader = thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err_pipe.read_to_end(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() >= deadline => {
                timed_out = true;
                let _ = child.kill();
                break child.wait().ok();
            }
            Ok(None) => thread::sleep(Duration::from_millis(50)),
            Err(_) => break None,
        }
    };
    let _ = writer.join();
    let text = |h: thread::JoinHandle<Vec<u8>>| {
        String::from_utf8_lossy(&h.join().unwrap_or_default()).into_owned()
    };
    Out {
        code: status.and_then(|s| s.code()).unwrap_or(-1),
        stdout: text(out_reader),
        stderr: text(err_reader),
        timed_out,
    }
}

/// A running guest (see the module doc).
pub struct Guest {
    name: String,
    share: ScratchDir,
}

impl Guest {
    /// `scripts/vm start`: builds the image when the cache has none (minutes), boots a fresh
    /// overlay of it, and makes guest `127.0.0.1:G` reach host `127.0.0.1:H` for every
    /// `(G, H)` in `forwards`. The share (mounted at `/mnt/host`) is a fresh directory;
    /// fill it through [`Guest::share`].
    pub fn start(forwards: &[(u16, u16)]) -> Result<Self, String> {
        let name = format!("guest-test-{}", unique_id());
        let share = ScratchDir::new("guest-share");
        let mut cmd = vm();
        cmd.args(["start", "--name", &name, "--share"])
            .arg(share.path())
            .args(["--watch", &std::process::id().to_string()]);
        for (g, h) in forwards {
            cmd.args(["--forward", &format!("{g}={h}")]);
        }
        let t = Instant::now();
        // Building the image takes 1-3 minutes, a boot under emulation 20-60 s.
        let out = run_with_timeout(&mut cmd, "", Duration::from_secs(900));
        if out.code != 0 {
            return Err(format!("scripts/vm start: {}", out.all()));
        }
        println!("guest {name} up in {:?}", t.elapsed());
        Ok(Self { name, share })
    }

    /// The host directory the guest sees as `/mnt/host`.
    pub fn share(&self) -> &Path {
        self.share.path()
    }

    /// Runs `script` with `bash -s` as root in the guest (set -euo pipefail is not implied).
    pub fn sh(&self, script: &str, timeout: Duration) -> Out {
        let mut cmd = vm();
        cmd.args(["ssh", "--name", &self.name, "--", "bash", "-s"]);
        run_with_timeout(&mut cmd, script, timeout)
    }

    /// [`Guest::sh`] with `set -euo pipefail` that must exit 0; its stdout. Panics with
    /// everything, naming `what`, otherwise.
    pub fn ok(&self, what: &str, script: &str, timeout: Duration) -> String {
        let out = self.sh(&format!("set -euo pipefail\n{script}"), timeout);
        assert!(out.code == 0, "{what} failed in the guest: {}", out.all());
        out.stdout
    }

    /// The guest kernel's boot id (changes with every boot).
    pub fn boot_id(&self) -> Result<String, String> {
        let out = self.sh(
            "cat /proc/sys/kernel/random/boot_id",
            Duration::from_secs(60),
        );
        if out.code == 0 {
            Ok(out.stdout.trim().to_owned())
        } else {
            Err(out.all())
        }
    }

    /// `systemctl reboot`, then waits until the guest answers over ssh with a new boot id and
    /// systemd has finished starting (`is-system-running --wait`).
    pub fn reboot(&self, timeout: Duration) -> Result<Duration, String> {
        let before = self.boot_id()?;
        let t = Instant::now();
        // The connection dies with the guest's sshd: the exit status says nothing.
        let _ = self.sh("systemctl reboot", Duration::from_secs(60));
        loop {
            if t.elapsed() > timeout {
                return Err(format!("the guest did not come back within {timeout:?}"));
            }
            thread::sleep(Duration::from_secs(3));
            match self.boot_id() {
                Ok(id) if id != before => break,
                _ => {}
            }
        }
        let left = timeout.saturating_sub(t.elapsed());
        let out = self.sh(
            "systemctl is-system-running --wait; systemctl --failed --no-legend",
            left.max(Duration::from_secs(30)),
        );
        println!("guest rebooted in {:?}: {}", t.elapsed(), out.stdout.trim());
        Ok(t.elapsed())
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let mut cmd = vm();
        cmd.args(["stop", "--name", &self.name, "--kill"]);
        let _ = run_with_timeout(&mut cmd, "", Duration::from_secs(60));
    }
}

/// `scripts/vm` of this checkout.
fn vm() -> Command {
    Command::new(script_path())
}

pub fn script_path() -> PathBuf {
    workspace_root().join("scripts").join("vm")
}

/// Puts `src` into the share as `rel` (a hard link where possible, else a copy).
pub fn share_file(guest: &Guest, src: &Path, rel: &str) {
    let dest = guest.share().join(rel);
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).expect("create a share directory");
    }
    if std::fs::hard_link(src, &dest).is_err() {
        std::fs::copy(src, &dest)
            .unwrap_or_else(|e| panic!("copy {} to the share: {e}", src.display()));
    }
}
