//! Blocking runs of a [`Cmd`] for synchronous callers (`codeb-backup`, which runs from
//! systemd timers and inside `spawn_blocking`): the same timeout and secret redaction, the
//! child's stderr in the error. [`Cmd::spawn_stdout`] and [`Cmd::spawn_logged`] hand out the
//! child for streaming its output (a dump) or supervising it (a scratch PostgreSQL).

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use crate::{Cmd, Output, RuntimeError};

impl Cmd {
    fn std_command(&self) -> Command {
        let mut c = Command::new(&self.program);
        c.args(&self.args).stdin(Stdio::null());
        if self.clear_env {
            c.env_clear();
        }
        c.envs(self.env.iter().map(|(k, v)| (k, v)));
        if let Some(dir) = &self.cwd {
            c.current_dir(dir);
        }
        c
    }

    fn spawn_err(&self, source: std::io::Error) -> RuntimeError {
        RuntimeError::Spawn {
            program: self.program.clone(),
            source,
        }
    }

    /// Runs the command to its end (killed at the timeout); its output, or an error carrying
    /// its stderr.
    pub fn output_blocking(&self) -> Result<Output, RuntimeError> {
        let command = self.display();
        tracing::debug!(%command, "run (blocking)");
        let mut child = self
            .std_command()
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| self.spawn_err(e))?;
        let mut out = child.stdout.take();
        let mut err = child.stderr.take();
        let read_out = std::thread::spawn(move || {
            let mut b = Vec::new();
            if let Some(o) = out.as_mut() {
                let _ = o.read_to_end(&mut b);
            }
            b
        });
        let read_err = std::thread::spawn(move || {
            let mut b = Vec::new();
            if let Some(e) = err.as_mut() {
                let _ = e.read_to_end(&mut b);
            }
            b
        });
        let start = Instant::now();
        let status = loop {
            match child.try_wait().map_err(|e| self.spawn_err(e))? {
                Some(s) => break s,
                None if start.elapsed() >= self.timeout => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(RuntimeError::Timeout {
                        command,
                        after: self.timeout,
                    });
                }
                None => std::thread::sleep(std::time::Duration::from_millis(20)),
            }
        };
        let stdout = self.redact(&String::from_utf8_lossy(
            &read_out.join().unwrap_or_default(),
        ));
        let stderr =
            self.redact(String::from_utf8_lossy(&read_err.join().unwrap_or_default()).trim());
        if status.success() {
            Ok(Output { stdout, stderr })
        } else {
            Err(RuntimeError::Failed {
                command,
                code: status.code().unwrap_or(-1),
                stderr: if stderr.is_empty() {
                    stdout.trim().to_owned()
                } else {
                    stderr
                },
            })
        }
    }

    /// Starts the command with stdout and stderr piped, for a caller that streams stdout
    /// (and must wait for the child).
    pub fn spawn_stdout(&self) -> Result<Child, RuntimeError> {
        tracing::debug!(command = %self.display(), "spawn");
        self.std_command()
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| self.spawn_err(e))
    }

    /// Starts a long-running command (a server) with stderr into `log`, stdout discarded.
    pub fn spawn_logged(&self, log: std::fs::File) -> Result<Child, RuntimeError> {
        tracing::debug!(command = %self.display(), "spawn");
        self.std_command()
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| self.spawn_err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn blocking_runs_time_out_and_carry_stderr() {
        let err = Cmd::new("sh")
            .args(["-c", "echo oops >&2; exit 3"])
            .output_blocking()
            .expect_err("fails");
        assert!(
            err.to_string().contains("oops") && err.to_string().contains("exit 3"),
            "{err}"
        );
        let err = Cmd::new("sleep")
            .arg("5")
            .timeout(Duration::from_millis(200))
            .output_blocking()
            .expect_err("times out");
        assert!(matches!(err, RuntimeError::Timeout { .. }), "{err}");
        let ok = Cmd::new("echo").arg("hi").output_blocking().expect("runs");
        assert_eq!(ok.stdout, "hi\n");
    }
}
