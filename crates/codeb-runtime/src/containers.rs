//! Long-running and listing podman commands for the control plane: a container's log stream
//! (`podman logs [-f]`, both streams line by line) and codeb's containers with their labels.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use crate::{Podman, RuntimeError, os, run};

/// Which of the container's streams a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    Stdout,
    Stderr,
}

/// A running `podman logs`; the process is killed when this is dropped.
#[derive(Debug)]
pub struct Logs {
    _child: Child,
    lines: mpsc::Receiver<(LogStream, String)>,
}

impl Logs {
    /// The next line, or `None` when podman stopped (the container ended, or without follow
    /// the tail was printed).
    pub async fn next_line(&mut self) -> Option<(LogStream, String)> {
        self.lines.recv().await
    }
}

/// A container carrying codeb's labels, as `podman ps --all` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    pub name: String,
    /// `running`, `exited`, `created`, ...
    pub state: String,
    pub image: String,
    pub project: String,
    pub environment: String,
    pub slot: String,
}

/// The state word from `{{.State}}`: podman 4.3's template gives the status text ("Up 2
/// seconds ago", "Exited (0) 3 minutes ago"), newer ones the state ("running").
pub fn container_state(raw: &str) -> String {
    let first = raw
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    match first.as_str() {
        "up" => "running".to_owned(),
        _ => first,
    }
}

const LABELS_FORMAT: &str = "{{.Names}}\t{{.State}}\t{{.Image}}\t{{index .Labels \"codeb.project\"}}\t{{index .Labels \"codeb.environment\"}}\t{{index .Labels \"codeb.slot\"}}";

impl Podman {
    /// Starts `podman logs --tail N [--follow] NAME`. Fails when the container does not exist.
    pub async fn logs(&self, name: &str, tail: usize, follow: bool) -> Result<Logs, RuntimeError> {
        if !self.container_exists(name).await? {
            return Err(RuntimeError::Failed {
                command: format!("{} logs {name}", self.program),
                code: 125,
                stderr: format!("no container named {name}"),
            });
        }
        let mut args = vec!["logs".to_owned(), "--tail".to_owned(), tail.to_string()];
        if follow {
            args.push("--follow".into());
        }
        args.push(name.to_owned());
        tracing::debug!(command = %format!("{} {}", self.program, args.join(" ")), "spawn");
        let mut child = Command::new(&self.program)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| RuntimeError::Spawn {
                program: self.program.clone(),
                source,
            })?;
        let (tx, rx) = mpsc::channel(256);
        if let Some(out) = child.stdout.take() {
            tokio::spawn(pump(BufReader::new(out), LogStream::Stdout, tx.clone()));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(pump(BufReader::new(err), LogStream::Stderr, tx));
        }
        Ok(Logs {
            _child: child,
            lines: rx,
        })
    }

    /// Every container (running or not) with the `codeb.slot` label.
    pub async fn codeb_containers(&self) -> Result<Vec<Container>, RuntimeError> {
        let out = run(
            &self.program,
            &os(&[
                "ps",
                "--all",
                "--filter",
                "label=codeb.slot",
                "--format",
                LABELS_FORMAT,
            ]),
            Duration::from_secs(60),
        )
        .await?;
        Ok(out
            .stdout
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                let name = f.first()?.trim();
                (!name.is_empty()).then(|| Container {
                    name: name.to_owned(),
                    state: container_state(f.get(1).unwrap_or(&"")),
                    image: f.get(2).unwrap_or(&"").trim().to_owned(),
                    project: f.get(3).unwrap_or(&"").trim().to_owned(),
                    environment: f.get(4).unwrap_or(&"").trim().to_owned(),
                    slot: f.get(5).unwrap_or(&"").trim().to_owned(),
                })
            })
            .collect())
    }
}

async fn pump<R: tokio::io::AsyncRead + Unpin>(
    r: BufReader<R>,
    stream: LogStream,
    tx: mpsc::Sender<(LogStream, String)>,
) {
    let mut lines = r.lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if tx.send((stream, line)).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod state_tests {
    #[test]
    fn status_text_and_state_words_are_one_state() {
        for (raw, state) in [
            ("Up 2 seconds ago", "running"),
            ("running", "running"),
            ("Exited (0) 3 minutes ago", "exited"),
            ("exited", "exited"),
            ("Created", "created"),
            ("", ""),
        ] {
            assert_eq!(super::container_state(raw), state, "{raw:?}");
        }
    }
}
