//! The one output path of `we`: data on stdout (a table on a terminal, or `--json`), messages
//! on stderr; colour only on a terminal and never with `NO_COLOR`; a spinner on stderr for
//! waits longer than a second, only when stderr is a terminal.

use std::io::{self, IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::Serialize;

use crate::exit::WeError;

/// How a table cell is shown on a colour terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Plain,
    Good,
    Bad,
    Warn,
    Dim,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cell {
    pub text: String,
    pub style: Style,
}

impl Cell {
    pub fn new(text: impl Into<String>, style: Style) -> Self {
        Self {
            text: text.into(),
            style,
        }
    }
}

impl<T: Into<String>> From<T> for Cell {
    fn from(t: T) -> Self {
        Self::new(t, Style::Plain)
    }
}

#[derive(Debug, Clone)]
pub struct Out {
    pub json: bool,
    color_stdout: bool,
    color_stderr: bool,
    stderr_tty: bool,
}

impl Out {
    pub fn new(json: bool, no_color: bool) -> Self {
        Self::with_terminals(
            json,
            no_color,
            io::stdout().is_terminal(),
            io::stderr().is_terminal(),
        )
    }

    pub fn with_terminals(json: bool, no_color: bool, stdout_tty: bool, stderr_tty: bool) -> Self {
        Self {
            json,
            color_stdout: stdout_tty && !no_color,
            color_stderr: stderr_tty && !no_color,
            stderr_tty,
        }
    }

    /// One JSON value as one line on stdout (JSON lines when called repeatedly).
    pub fn json_line(&self, value: &impl Serialize) -> Result<(), WeError> {
        let text = serde_json::to_string(value)
            .map_err(|e| WeError::Io(format!("cannot encode JSON output: {e}")))?;
        write_out(&format!("{text}\n"))
    }

    /// A line of data on stdout.
    pub fn line(&self, text: &str) -> Result<(), WeError> {
        write_out(&format!("{text}\n"))
    }

    /// A table on stdout: a header row and aligned columns.
    pub fn table(&self, headers: &[&str], rows: &[Vec<Cell>]) -> Result<(), WeError> {
        write_out(&render_table(headers, rows, self.color_stdout))
    }

    /// Key/value pairs on stdout, aligned.
    pub fn pairs(&self, pairs: &[(&str, Cell)]) -> Result<(), WeError> {
        let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        let mut s = String::new();
        for (k, v) in pairs {
            s.push_str(&format!(
                "{k:<width$}  {}\n",
                paint(&v.text, v.style, self.color_stdout)
            ));
        }
        write_out(&s)
    }

    /// A message for the person (stderr).
    pub fn info(&self, text: &str) {
        write_err(&format!("{text}\n"));
    }

    pub fn warn(&self, text: &str) {
        let tag = paint("warning:", Style::Warn, self.color_stderr);
        write_err(&format!("{tag} {text}\n"));
    }

    /// The error a command ended with (stderr; one JSON line with `--json`).
    pub fn error(&self, e: &WeError) {
        if self.json {
            let v = serde_json::json!({
                "error": {"kind": e.kind(), "exit": e.exit().code(), "message": e.to_string()}
            });
            write_err(&format!("{v}\n"));
        } else {
            let tag = paint("error:", Style::Bad, self.color_stderr);
            write_err(&format!("we: {tag} {e}\n"));
        }
    }

    /// A spinner with `message` that appears only after a second, only on a terminal;
    /// it disappears when the returned guard is dropped.
    pub fn progress(&self, message: &str) -> Progress {
        Progress::start(message, self.stderr_tty)
    }
}

fn write_out(s: &str) -> Result<(), WeError> {
    let mut out = io::stdout().lock();
    match out.write_all(s.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        // `we … | head`: the reader left; stop quietly.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(WeError::Io(format!("cannot write to stdout: {e}"))),
    }
}

fn write_err(s: &str) {
    let mut err = io::stderr().lock();
    let _ = err.write_all(s.as_bytes()).and_then(|()| err.flush());
}

pub fn paint(text: &str, style: Style, color: bool) -> String {
    if !color {
        return text.to_owned();
    }
    let code = match style {
        Style::Plain => return text.to_owned(),
        Style::Good => "32",
        Style::Bad => "31;1",
        Style::Warn => "33",
        Style::Dim => "2",
    };
    format!("\x1b[{code}m{text}\x1b[0m")
}

/// Columns padded to the widest cell; the last column is not padded.
pub fn render_table(headers: &[&str], rows: &[Vec<Cell>], color: bool) -> String {
    let cols = headers.len();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, c) in row.iter().enumerate().take(cols) {
            widths[i] = widths[i].max(c.text.chars().count());
        }
    }
    let mut s = String::new();
    let line = |cells: Vec<(String, Style)>, s: &mut String| {
        let n = cells.len();
        for (i, (text, style)) in cells.into_iter().enumerate() {
            let pad = widths[i].saturating_sub(text.chars().count());
            s.push_str(&paint(&text, style, color));
            if i + 1 < n {
                s.push_str(&" ".repeat(pad + 2));
            }
        }
        s.push('\n');
    };
    line(
        headers
            .iter()
            .map(|h| (h.to_uppercase(), Style::Dim))
            .collect(),
        &mut s,
    );
    for row in rows {
        line(
            (0..cols)
                .map(|i| {
                    row.get(i)
                        .map_or((String::new(), Style::Plain), |c| (c.text.clone(), c.style))
                })
                .collect(),
            &mut s,
        );
    }
    s
}

/// A stderr spinner (see [`Out::progress`]).
pub struct Progress {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Progress {
    fn start(message: &str, tty: bool) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        if !tty {
            return Self { stop, thread: None };
        }
        let flag = stop.clone();
        let message = message.to_owned();
        let thread = std::thread::spawn(move || {
            const FRAMES: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
            let tick = Duration::from_millis(100);
            for _ in 0..10 {
                if flag.load(Ordering::Relaxed) {
                    return;
                }
                std::thread::sleep(tick);
            }
            let mut i = 0;
            while !flag.load(Ordering::Relaxed) {
                write_err(&format!("\r{} {message}", FRAMES[i % FRAMES.len()]));
                i += 1;
                std::thread::sleep(tick);
            }
            write_err("\r\x1b[2K");
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_colour_only_when_asked() {
        let rows = vec![
            vec![Cell::from("myapp"), Cell::new("healthy", Style::Good)],
            vec![
                Cell::from("a-much-longer-name"),
                Cell::new("down", Style::Bad),
            ],
        ];
        let plain = render_table(&["project", "status"], &rows, false);
        assert_eq!(
            plain,
            "PROJECT             STATUS\n\
             myapp               healthy\n\
             a-much-longer-name  down\n"
        );
        assert!(!plain.contains('\x1b'));
        let coloured = render_table(&["project", "status"], &rows, true);
        assert!(coloured.contains("\x1b[32mhealthy\x1b[0m"), "{coloured}");
    }

    #[test]
    fn no_color_and_pipes_turn_colour_off() {
        assert!(!Out::with_terminals(false, true, true, true).color_stdout);
        assert!(!Out::with_terminals(false, false, false, false).color_stdout);
        assert!(Out::with_terminals(false, false, true, true).color_stdout);
    }
}
