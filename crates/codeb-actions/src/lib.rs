//! The GitHub Actions step interface, shared by every codeb binary.
//!
//! - Inputs: every command-line flag can also come from its action input (`INPUT_<NAME>`),
//!   see [`args_with_inputs`].
//! - Outputs (`$GITHUB_OUTPUT`, multiline-safe), the job summary (`$GITHUB_STEP_SUMMARY`),
//!   annotations, masks and groups, through one [`Step`] value.
//! - Outside Actions (`GITHUB_ACTIONS` unset) the same calls print plain human text and no
//!   workflow commands.
//!
//! Escaping follows GitHub's actions/toolkit (`command.ts`): messages escape `%`, CR and LF;
//! properties also `:` and `,`.

mod exit;
mod inputs;
pub mod sudo;

pub use exit::Exit;
pub use inputs::{InputError, args_with_inputs};

use codeb_core::vars;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::PathBuf;

/// Escapes a workflow command's message, as actions/toolkit's `escapeData`.
pub fn escape_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// Escapes a workflow command's property value, as actions/toolkit's `escapeProperty`.
pub fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

/// A secret value: never printed by `Debug` or `Display` (from the pure `codeb-secret` crate).
pub use codeb_secret::Secret;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Error,
    Warning,
    Notice,
}

impl Level {
    fn command(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warning => "warning",
            Level::Notice => "notice",
        }
    }
}

/// A message tied, where possible, to a file and line.
#[derive(Debug, Clone, Default)]
pub struct Annotation {
    pub file: Option<String>,
    pub line: Option<usize>,
    pub title: Option<String>,
    pub message: String,
}

/// The step's connection to the runner (or to a terminal, outside Actions).
#[derive(Debug, Clone)]
pub struct Step {
    actions: bool,
    output: Option<PathBuf>,
    summary: Option<PathBuf>,
    /// Run through sudo for this uid: outputs and summary go only to that user's own files.
    owner: Option<u32>,
}

impl Step {
    /// Reads `GITHUB_ACTIONS`, `GITHUB_OUTPUT` and `GITHUB_STEP_SUMMARY` (and, run through
    /// sudo, `SUDO_UID`: see [`sudo::open_append_as`]).
    pub fn from_env() -> Self {
        let path = |name: &str| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        Self {
            actions: std::env::var(vars::GITHUB_ACTIONS).is_ok_and(|v| v == "true"),
            output: path(vars::GITHUB_OUTPUT),
            summary: path(vars::GITHUB_STEP_SUMMARY),
            owner: sudo::Caller::from_env().map(|c| c.uid),
        }
    }

    /// Appends to an output or summary file: created if need be, or, run through sudo, only
    /// an existing regular file of the calling user's.
    fn open_append(&self, path: &std::path::Path) -> io::Result<std::fs::File> {
        match self.owner {
            Some(uid) => sudo::open_append_as(path, uid),
            None => OpenOptions::new().append(true).create(true).open(path),
        }
    }

    /// A step that is not inside Actions and writes no files (for tests and libraries).
    pub fn plain() -> Self {
        Self {
            actions: false,
            output: None,
            summary: None,
            owner: None,
        }
    }

    pub fn in_actions(&self) -> bool {
        self.actions
    }

    /// Sets a step output. Values may span lines: the heredoc delimiter is random and is
    /// chosen again until it does not occur in the value.
    pub fn set_output(&self, name: &str, value: &str) -> io::Result<()> {
        let Some(path) = &self.output else {
            return Ok(());
        };
        if name.is_empty() || name.contains(['\n', '\r', '=', '<']) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("invalid output name {name:?}"),
            ));
        }
        let delimiter = loop {
            let d = format!("ghadelimiter_{:032x}", rand::random::<u128>());
            if !value.contains(&d) {
                break d;
            }
        };
        let mut f = self.open_append(path)?;
        write!(f, "{name}<<{delimiter}\n{value}\n{delimiter}\n")
    }

    /// Appends Markdown to the job summary (no-op outside Actions).
    pub fn append_summary(&self, markdown: &str) -> io::Result<()> {
        let Some(path) = &self.summary else {
            return Ok(());
        };
        let mut f = self.open_append(path)?;
        f.write_all(markdown.as_bytes())?;
        if !markdown.ends_with('\n') {
            f.write_all(b"\n")?;
        }
        Ok(())
    }

    /// The workflow command for an annotation, or `None` outside Actions.
    pub fn annotation_command(&self, level: Level, a: &Annotation) -> Option<String> {
        if !self.actions {
            return None;
        }
        let mut props = Vec::new();
        if let Some(f) = &a.file {
            props.push(format!("file={}", escape_property(f)));
        }
        if let Some(l) = a.line {
            props.push(format!("line={l}"));
        }
        if let Some(t) = &a.title {
            props.push(format!("title={}", escape_property(t)));
        }
        let props = if props.is_empty() {
            String::new()
        } else {
            format!(" {}", props.join(","))
        };
        Some(format!(
            "::{}{props}::{}",
            level.command(),
            escape_data(&a.message)
        ))
    }

    /// Reports an annotation: a workflow command on stdout inside Actions, a plain
    /// `error: file:line: title: message` line on stderr outside.
    pub fn annotate(&self, level: Level, a: &Annotation) {
        match self.annotation_command(level, a) {
            Some(cmd) => {
                let _ = writeln!(io::stdout().lock(), "{cmd}");
            }
            None => {
                let mut where_ = String::new();
                if let Some(f) = &a.file {
                    where_.push_str(f);
                    if let Some(l) = a.line {
                        where_.push_str(&format!(":{l}"));
                    }
                    where_.push_str(": ");
                }
                let title = a
                    .title
                    .as_ref()
                    .map(|t| format!("{t}: "))
                    .unwrap_or_default();
                let _ = writeln!(
                    io::stderr().lock(),
                    "{}: {where_}{title}{}",
                    level.command(),
                    a.message
                );
            }
        }
    }

    /// Tells the runner to mask `secret` in all later log output.
    pub fn mask(&self, secret: &Secret) {
        if self.actions && !secret.is_empty() {
            let mut out = io::stdout().lock();
            // A multi-line secret is masked line by line, as actions/toolkit does.
            for line in secret.expose().lines().filter(|l| !l.trim().is_empty()) {
                let _ = writeln!(out, "::add-mask::{}", escape_data(line));
            }
        }
    }

    /// Starts a collapsible group of log lines; the group ends when the guard drops.
    pub fn group(&self, title: &str) -> Group {
        if self.actions {
            let _ = writeln!(io::stdout().lock(), "::group::{}", escape_data(title));
        } else {
            let _ = writeln!(io::stderr().lock(), "== {title}");
        }
        Group {
            actions: self.actions,
        }
    }

    /// A progress or detail line for the log: stdout inside Actions, stderr outside (so
    /// that stdout carries only the result a script would capture).
    pub fn log(&self, line: &str) {
        if self.actions {
            let _ = writeln!(io::stdout().lock(), "{line}");
        } else {
            let _ = writeln!(io::stderr().lock(), "{line}");
        }
    }

    /// The step's result, on stdout in both modes.
    pub fn result(&self, line: &str) {
        let _ = writeln!(io::stdout().lock(), "{line}");
    }
}

/// Ends an Actions log group when dropped.
#[must_use = "the group ends when this guard is dropped"]
pub struct Group {
    actions: bool,
}

impl Drop for Group {
    fn drop(&mut self) {
        if self.actions {
            let _ = writeln!(io::stdout().lock(), "::endgroup::");
        }
    }
}

/// Parses the command line (with action inputs as flags, see [`args_with_inputs`]) into `P`.
/// On failure it has already said why (`--help` and `--version` print and give exit code 0;
/// a usage error gives 2): return the exit code.
pub fn parse_args<P: clap::Parser>(step: &Step, title: &str) -> Result<P, std::process::ExitCode> {
    let argv = match args_with_inputs(&P::command(), std::env::args_os()) {
        Ok(a) => a,
        Err(e) => {
            step.annotate(
                Level::Error,
                &Annotation {
                    title: Some(title.to_owned()),
                    message: e.to_string(),
                    ..Annotation::default()
                },
            );
            return Err(Exit::Usage.into());
        }
    };
    P::try_parse_from(argv).map_err(|e| {
        let _ = e.print();
        (if e.use_stderr() {
            Exit::Usage
        } else {
            Exit::Success
        })
        .into()
    })
}

/// A duration flag: `500ms`, `30s`, `10m`, `1h 30m`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(std::time::Duration::from_secs(secs));
    }
    humantime::parse_duration(s)
        .map_err(|e| format!("`{s}` is not a duration ({e}); write e.g. 500ms, 30s or 10m"))
}

/// A Markdown table cell: pipes and newlines would break the table.
pub fn md_cell(s: &str) -> String {
    s.replace('|', "\\|").replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actions_step(dir: &std::path::Path) -> Step {
        Step {
            actions: true,
            output: Some(dir.join("out")),
            summary: Some(dir.join("summary")),
            owner: None,
        }
    }

    #[test]
    fn escaping_matches_actions_toolkit() {
        assert_eq!(escape_data("100% done\r\nnext"), "100%25 done%0D%0Anext");
        assert_eq!(escape_property("a:b,c%\n"), "a%3Ab%2Cc%25%0A");
    }

    #[test]
    fn annotation_command_format() {
        let dir = tempfile::tempdir().expect("tempdir");
        let step = actions_step(dir.path());
        let a = Annotation {
            file: Some("/etc/m,1.yaml".into()),
            line: Some(7),
            title: Some("Duplicate port".into()),
            message: "port 4001\nis used twice: 50%".into(),
        };
        assert_eq!(
            step.annotation_command(Level::Error, &a).as_deref(),
            Some(
                "::error file=/etc/m%2C1.yaml,line=7,title=Duplicate port::port 4001%0Ais used twice: 50%25"
            )
        );
        assert_eq!(Step::plain().annotation_command(Level::Error, &a), None);
    }

    #[test]
    fn outputs_are_multiline_safe() {
        let dir = tempfile::tempdir().expect("tempdir");
        let step = actions_step(dir.path());
        step.set_output("port", "4001").expect("write");
        step.set_output("body", "line one\nghadelimiter_x\nline three")
            .expect("write");
        let text = std::fs::read_to_string(dir.path().join("out")).expect("read");
        let mut lines = text.lines();
        let first = lines.next().expect("line");
        let (name, delim) = first.split_once("<<").expect("heredoc");
        assert_eq!(name, "port");
        assert_eq!(lines.next(), Some("4001"));
        assert_eq!(lines.next(), Some(delim));
        let (name, delim) = lines
            .next()
            .and_then(|l| l.split_once("<<"))
            .expect("heredoc");
        assert_eq!(name, "body");
        let body: Vec<&str> = lines.by_ref().take_while(|l| *l != delim).collect();
        assert_eq!(body.join("\n"), "line one\nghadelimiter_x\nline three");
        assert!(step.set_output("bad\nname", "x").is_err());
    }

    #[test]
    fn secrets_do_not_print() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "*** Secret(***)");
    }
}
