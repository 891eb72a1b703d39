//! The only codeb crate that spawns processes: `podman` and `systemctl`. Every command runs
//! with a timeout and is killed when dropped; a failing command's stderr becomes part of the
//! error, so the user sees what podman said.

mod containers;

pub use containers::{Container, LogStream, Logs};
mod blocking;
mod command;
pub use command::Cmd;

use std::ffi::OsString;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot run `{program}`: {source}; is it installed and on PATH?")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("`{command}` failed (exit {code}): {stderr}")]
    Failed {
        command: String,
        code: i32,
        stderr: String,
    },
    #[error("`{command}` did not finish within {}s and was killed", after.as_secs())]
    Timeout { command: String, after: Duration },
}

/// What a finished command printed.
#[derive(Debug, Clone)]
pub struct Output {
    pub stdout: String,
    pub stderr: String,
}

fn render(program: &str, args: &[OsString]) -> String {
    let mut s = program.to_owned();
    for a in args {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `program args` and returns its output, or an error carrying its stderr.
pub async fn run(
    program: &str,
    args: &[OsString],
    timeout: Duration,
) -> Result<Output, RuntimeError> {
    let command = render(program, args);
    tracing::debug!(%command, "run");
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| RuntimeError::Spawn {
            program: program.to_owned(),
            source,
        })?;
    let out = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(r) => r.map_err(|source| RuntimeError::Spawn {
            program: program.to_owned(),
            source,
        })?,
        Err(_) => {
            return Err(RuntimeError::Timeout {
                command,
                after: timeout,
            });
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
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

fn os(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

/// The podman CLI.
#[derive(Debug, Clone)]
pub struct Podman {
    program: String,
    timeout: Duration,
}

impl Default for Podman {
    fn default() -> Self {
        Self {
            program: "podman".into(),
            timeout: Duration::from_secs(600),
        }
    }
}

impl Podman {
    pub fn new() -> Self {
        Self::default()
    }

    async fn podman(&self, args: &[&str]) -> Result<Output, RuntimeError> {
        run(&self.program, &os(args), self.timeout).await
    }

    /// `podman pull`, optionally without TLS verification (loopback registries only) and
    /// with an auth file.
    pub async fn pull(
        &self,
        image: &str,
        tls_verify: bool,
        authfile: Option<&Path>,
    ) -> Result<(), RuntimeError> {
        let mut args: Vec<OsString> = os(&["pull", "--quiet"]);
        if !tls_verify {
            args.push("--tls-verify=false".into());
        }
        if let Some(f) = authfile {
            args.push("--authfile".into());
            args.push(f.into());
        }
        args.push(image.into());
        run(&self.program, &args, self.timeout).await.map(drop)
    }

    pub async fn image_exists(&self, image: &str) -> Result<bool, RuntimeError> {
        match self.podman(&["image", "exists", image]).await {
            Ok(_) => Ok(true),
            Err(RuntimeError::Failed { code: 1, .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub async fn container_exists(&self, name: &str) -> Result<bool, RuntimeError> {
        match self.podman(&["container", "exists", name]).await {
            Ok(_) => Ok(true),
            Err(RuntimeError::Failed { code: 1, .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// What a container is doing, for an error message: its state and exit code, and the
    /// last lines it printed (`podman inspect`, `podman logs --tail`). `None` when podman
    /// cannot say (the container is gone, podman fails): the caller's message stands alone.
    pub async fn describe(&self, name: &str, lines: usize) -> Option<String> {
        let state = self
            .podman(&[
                "container",
                "inspect",
                "--format",
                "{{.State.Status}} (exit code {{.State.ExitCode}}){{if .State.Error}}: {{.State.Error}}{{end}}",
                name,
            ])
            .await
            .ok()?;
        let mut text = format!("container {name} is {}", state.stdout.trim());
        // Not `--tail N`: podman 4.3 prints nothing with it for a container that exited
        // (k8s-file logs); a container that failed to start has printed little anyway.
        if let Ok(out) = self.podman(&["logs", name]).await {
            let printed: Vec<&str> = out
                .stdout
                .lines()
                .chain(out.stderr.lines())
                .filter(|l| !l.trim().is_empty())
                .collect();
            let last = &printed[printed.len().saturating_sub(lines)..];
            if !last.is_empty() {
                text.push_str("; its last output: ");
                text.push_str(&last.join(" | "));
            }
        }
        Some(text)
    }

    /// Every container (running or not) that publishes host port `port`: `(name, state)`.
    /// Podman 4.3 has no `publish` filter for `ps`, so the ports are read from its text.
    pub async fn publishers_of(&self, port: u16) -> Result<Vec<(String, String)>, RuntimeError> {
        let out = self
            .podman(&[
                "ps",
                "--all",
                "--format",
                "{{.Names}}\t{{.State}}\t{{.Ports}}",
            ])
            .await?;
        Ok(out
            .stdout
            .lines()
            .filter_map(|l| {
                let mut f = l.splitn(3, '\t');
                let (name, state, ports) = (f.next()?, f.next()?, f.next().unwrap_or(""));
                publishes(ports, port).then(|| (name.trim().to_owned(), state.trim().to_owned()))
            })
            .collect())
    }

    /// `podman run -d --replace --name NAME ARGS...`; returns the container id.
    pub async fn run_detached(&self, name: &str, args: &[String]) -> Result<String, RuntimeError> {
        let mut all: Vec<OsString> = os(&["run", "-d", "--replace", "--name", name]);
        all.extend(args.iter().map(OsString::from));
        let out = run(&self.program, &all, self.timeout).await?;
        Ok(out.stdout.trim().to_owned())
    }

    /// Stops (SIGTERM, then SIGKILL after `grace`) and removes a container; a missing one is fine.
    ///
    /// A container in a user namespace of its own (`UserNS=auto`) can make podman 4.3 report
    /// "device or resource busy" for its shm mount while it is being torn down; the removal
    /// is tried again then (a few times, 200 ms apart).
    pub async fn remove(&self, name: &str, grace: Duration) -> Result<(), RuntimeError> {
        let t = grace.as_secs().to_string();
        let mut tries = 0;
        loop {
            match self
                .podman(&["rm", "--force", "--ignore", "--time", &t, name])
                .await
            {
                Err(RuntimeError::Failed { stderr, .. })
                    if tries < 4 && stderr.contains("resource busy") =>
                {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                other => return other.map(drop),
            }
        }
    }

    /// `podman rmi NAME` (no force: an image a container uses stays); a missing one is fine.
    pub async fn remove_image(&self, name: &str) -> Result<(), RuntimeError> {
        match self.podman(&["rmi", name]).await {
            Ok(_) => Ok(()),
            Err(RuntimeError::Failed { stderr, .. }) if stderr.contains("image not known") => {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Names of containers (running or not) carrying `label` (`key=value`).
    pub async fn containers_with_label(&self, label: &str) -> Result<Vec<String>, RuntimeError> {
        let filter = format!("label={label}");
        let out = self
            .podman(&["ps", "--all", "--filter", &filter, "--format", "{{.Names}}"])
            .await?;
        Ok(out
            .stdout
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect())
    }

    /// Containers (running or not) carrying `label` (`key` or `key=value`), each with the
    /// values of the labels `keys` (plain label names; empty where a container lacks one).
    pub async fn containers_labelled(
        &self,
        label: &str,
        keys: &[&'static str],
    ) -> Result<Vec<(String, Vec<String>)>, RuntimeError> {
        let filter = format!("label={label}");
        let mut format = String::from("{{.Names}}");
        for k in keys {
            format.push_str(&format!("\t{{{{index .Labels \"{k}\"}}}}"));
        }
        let out = self
            .podman(&["ps", "--all", "--filter", &filter, "--format", &format])
            .await?;
        Ok(out
            .stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let mut parts = l.split('\t');
                let name = parts.next().unwrap_or_default().trim().to_owned();
                let values = keys
                    .iter()
                    .map(|_| parts.next().unwrap_or_default().trim().to_owned())
                    .collect();
                (name, values)
            })
            .collect())
    }

    /// `(major, minor)` of the podman client.
    pub async fn version(&self) -> Result<(u32, u32), RuntimeError> {
        let out = self
            .podman(&["version", "--format", "{{.Client.Version}}"])
            .await?;
        let mut parts = out
            .stdout
            .trim()
            .split('.')
            .map(|p| p.parse::<u32>().unwrap_or(0));
        Ok((parts.next().unwrap_or(0), parts.next().unwrap_or(0)))
    }
}

/// systemd, for hosts where Quadlet turns `.container` files into services.
#[derive(Debug, Clone)]
pub struct Systemd {
    timeout: Duration,
}

impl Default for Systemd {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(900),
        }
    }
}

impl Systemd {
    /// Whether systemd is PID 1 here (the documented check: /run/systemd/system exists).
    pub fn is_running() -> bool {
        Path::new("/run/systemd/system").is_dir()
    }

    async fn systemctl(&self, args: &[&str]) -> Result<Output, RuntimeError> {
        run("systemctl", &os(args), self.timeout).await
    }

    /// Re-runs generators (Quadlet) after unit files changed.
    pub async fn daemon_reload(&self) -> Result<(), RuntimeError> {
        self.systemctl(&["daemon-reload"]).await.map(drop)
    }

    pub async fn restart(&self, service: &str) -> Result<(), RuntimeError> {
        self.systemctl(&["restart", service]).await.map(drop)
    }

    pub async fn stop(&self, service: &str) -> Result<(), RuntimeError> {
        self.systemctl(&["stop", service]).await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stderr_becomes_the_error() {
        let err = run(
            "sh",
            &os(&["-c", "echo boom >&2; exit 3"]),
            Duration::from_secs(5),
        )
        .await
        .expect_err("fails");
        let text = err.to_string();
        assert!(text.contains("exit 3") && text.contains("boom"), "{text}");
    }

    #[tokio::test]
    async fn timeouts_kill() {
        let err = run("sleep", &os(&["5"]), Duration::from_millis(100))
            .await
            .expect_err("times out");
        assert!(matches!(err, RuntimeError::Timeout { .. }), "{err}");
    }

    #[tokio::test]
    async fn missing_program_says_so() {
        let err = run("codeb-no-such-program", &[], Duration::from_secs(1))
            .await
            .expect_err("missing");
        assert!(err.to_string().contains("is it installed"), "{err}");
    }
}

/// Whether podman's text of a container's ports (`127.0.0.1:15000->3000/tcp, 0.0.0.0:8000-8002->8000-8002/tcp`)
/// publishes host port `port`.
fn publishes(ports: &str, port: u16) -> bool {
    ports.split(',').any(|mapping| {
        let Some((host, _)) = mapping.trim().split_once("->") else {
            return false;
        };
        let host = host.rsplit_once(':').map_or(host, |(_, p)| p);
        match host.split_once('-') {
            Some((lo, hi)) => matches!((lo.parse::<u16>(), hi.parse::<u16>()), (Ok(lo), Ok(hi)) if (lo..=hi).contains(&port)),
            None => host.parse::<u16>() == Ok(port),
        }
    })
}

#[cfg(test)]
mod publish_tests {
    use super::publishes;

    #[test]
    fn host_ports_are_read_from_podmans_text() {
        let text = "127.0.0.1:15000->3000/tcp, 0.0.0.0:8000-8002->8000-8002/tcp, [::1]:9000->9/udp";
        for port in [15000, 8000, 8001, 8002, 9000] {
            assert!(publishes(text, port), "{port}");
        }
        for port in [3000, 7999, 8003, 1500, 9] {
            assert!(!publishes(text, port), "{port}");
        }
        assert!(!publishes("", 15000));
        assert!(!publishes("3000/tcp", 3000), "exposed, not published");
    }
}
