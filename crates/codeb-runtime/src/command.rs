//! A command with a working directory, an explicit environment and secret arguments, for the
//! programs that are neither podman nor systemctl (the host installer's `useradd`, `sysctl`,
//! `tar` and the Actions runner's own `config.sh`/`svc.sh`). Secret arguments never appear in
//! logs or errors: they are replaced by `***` in the rendered command and in the child's output.

use crate::{Output, RuntimeError};
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

/// A command to run once; build it, then [`Cmd::output`].
#[derive(Debug, Clone)]
pub struct Cmd {
    pub(crate) program: String,
    pub(crate) args: Vec<OsString>,
    pub(crate) cwd: Option<PathBuf>,
    pub(crate) clear_env: bool,
    pub(crate) env: Vec<(OsString, OsString)>,
    pub(crate) secrets: Vec<String>,
    pub(crate) timeout: Duration,
}

const REDACTED: &str = "***";

impl Cmd {
    /// `program` with a default timeout of ten minutes.
    pub fn new(program: impl Into<String>) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
            cwd: None,
            clear_env: false,
            env: Vec::new(),
            secrets: Vec::new(),
            timeout: Duration::from_secs(600),
        }
    }

    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<I, A>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = A>,
        A: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// An argument that is a secret: it is passed to the program but shown as `***` in every
    /// log line and error, and removed from the output the error quotes.
    pub fn secret_arg(mut self, secret: &str) -> Self {
        if !secret.is_empty() {
            self.secrets.push(secret.to_owned());
        }
        self.args.push(secret.into());
        self
    }

    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    /// Start the child with an empty environment (only what [`Cmd::env`] sets).
    pub fn env_clear(mut self) -> Self {
        self.clear_env = true;
        self
    }

    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub(crate) fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for s in &self.secrets {
            out = out.replace(s.as_str(), REDACTED);
        }
        out
    }

    /// The command line as it may be shown (secrets replaced).
    pub fn display(&self) -> String {
        let mut s = self.program.clone();
        for a in &self.args {
            s.push(' ');
            let a = a.to_string_lossy();
            if self.secrets.iter().any(|x| *x == a) {
                s.push_str(REDACTED);
            } else {
                s.push_str(&a);
            }
        }
        s
    }

    /// Runs the command; its output (secrets removed), or an error carrying its stderr.
    pub async fn output(&self) -> Result<Output, RuntimeError> {
        let command = self.display();
        tracing::debug!(%command, "run");
        let mut c = tokio::process::Command::new(&self.program);
        c.args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if self.clear_env {
            c.env_clear();
        }
        c.envs(self.env.iter().map(|(k, v)| (k, v)));
        if let Some(dir) = &self.cwd {
            c.current_dir(dir);
        }
        let spawn_err = |source| RuntimeError::Spawn {
            program: self.program.clone(),
            source,
        };
        let child = c.spawn().map_err(spawn_err)?;
        let out = match tokio::time::timeout(self.timeout, child.wait_with_output()).await {
            Ok(r) => r.map_err(spawn_err)?,
            Err(_) => {
                return Err(RuntimeError::Timeout {
                    command,
                    after: self.timeout,
                });
            }
        };
        let stdout = self.redact(&String::from_utf8_lossy(&out.stdout));
        let stderr = self.redact(String::from_utf8_lossy(&out.stderr).trim());
        if out.status.success() {
            Ok(Output { stdout, stderr })
        } else {
            Err(RuntimeError::Failed {
                command,
                code: out.status.code().unwrap_or(-1),
                stderr: if stderr.is_empty() {
                    stdout.trim().to_owned()
                } else {
                    stderr
                },
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn secret_arguments_never_reach_the_error() {
        let err = Cmd::new("sh")
            .args(["-c", "echo \"token was $1\" >&2; exit 4", "sh"])
            .secret_arg("s3cr3t-token")
            .output()
            .await
            .expect_err("fails");
        let text = err.to_string();
        assert!(!text.contains("s3cr3t-token"), "{text}");
        assert!(
            text.contains("token was ***") && text.contains("exit 4"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn cwd_and_a_clear_environment() {
        let dir = std::env::temp_dir();
        let out = Cmd::new("/bin/sh")
            .args(["-c", "pwd; /usr/bin/env"])
            .current_dir(&dir)
            .env_clear()
            .env("X", "1")
            .output()
            .await
            .expect("runs");
        let want_dir = dir.canonicalize().expect("temp dir");
        let lines: Vec<&str> = out.stdout.lines().collect();
        assert_eq!(lines[0], want_dir.to_string_lossy());
        // Nothing of the test's own environment (cargo sets CARGO_*) reaches the child.
        assert!(lines.contains(&"X=1"), "{lines:?}");
        assert!(!lines.iter().any(|l| l.starts_with("CARGO")), "{lines:?}");
    }
}
