//! The test harness: binaries, scrubbed commands, temp dirs, ports and small real servers.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

/// act keeps per-run state under ~/.cache/act: one act run at a time in the whole suite.
pub static ACT: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Where cargo put this test's binaries (`target/<profile>`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/integration-<hash>
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile> directory")
        .to_owned()
}

/// A codeb binary, which must have been built.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (scripts/test does)",
        p.display()
    );
    p
}

/// A command with the ambient CI's variables removed, so tests never read them.
pub fn scrubbed(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new(program);
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if ["GITHUB_", "RUNNER_", "ACTIONS_", "INPUT_", "CODEB_"]
            .iter()
            .any(|p| k.starts_with(p))
        {
            c.env_remove(k.as_ref());
        }
    }
    c
}

/// A codeb binary as a scrubbed command.
pub fn codeb(name: &str) -> Command {
    scrubbed(bin(name))
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn all(&self) -> String {
        format!("--- stdout\n{}--- stderr\n{}", self.stdout, self.stderr)
    }
}

pub fn run(cmd: &mut Command) -> Run {
    let out: Output = cmd.output().expect("spawn command");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("codeb-test-")
        .tempdir()
        .expect("temp dir")
}

/// Binds a free port in `range` on 127.0.0.1 (other tests and services may hold some).
pub fn listen_in(range: std::ops::RangeInclusive<u16>) -> TcpListener {
    for p in range {
        if let Ok(l) = TcpListener::bind(("127.0.0.1", p)) {
            return l;
        }
    }
    panic!("no free port to listen on");
}

/// A port that nothing listens on right now (bound, then released).
pub fn dead_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// A canned HTTP answer.
#[derive(Clone)]
pub struct Reply {
    pub status: u16,
    pub body: String,
    pub content_type: &'static str,
}

impl Reply {
    pub fn json(status: u16, body: &str) -> Self {
        Self {
            status,
            body: body.to_owned(),
            content_type: "application/json",
        }
    }
    pub fn text(status: u16, body: &str) -> Self {
        Self {
            status,
            body: body.to_owned(),
            content_type: "text/plain",
        }
    }
}

/// A real HTTP/1.1 server on 127.0.0.1 answering each request with `respond(n)`, where `n`
/// counts requests from 0. `None` means: accept and never answer (a hung app).
pub struct HttpServer {
    pub port: u16,
    pub hits: Arc<AtomicUsize>,
}

impl HttpServer {
    pub fn start(respond: impl Fn(usize) -> Option<Reply> + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let respond = Arc::new(respond);
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let n = counter.fetch_add(1, Ordering::SeqCst);
                let respond = respond.clone();
                thread::spawn(move || serve(stream, respond(n)));
            }
        });
        Self { port, hits }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

fn serve(mut stream: TcpStream, reply: Option<Reply>) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone stream"));
    let mut line = String::new();
    // Read the request head.
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) if line == "\r\n" || line == "\n" => break,
            Ok(_) => {}
        }
    }
    let Some(r) = reply else {
        // Hold the connection open without answering.
        let mut sink = [0u8; 64];
        let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(30)));
        let _ = stream.read(&mut sink);
        return;
    };
    let reason = match r.status {
        200 => "OK",
        503 => "Service Unavailable",
        404 => "Not Found",
        _ => "Status",
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {} {reason}\r\ncontent-type: {}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{}",
        r.status,
        r.content_type,
        r.body.len(),
        r.body
    );
}

/// Reads `NAME=VALUE` and `NAME<<DELIM` blocks from a `$GITHUB_OUTPUT` file.
pub fn read_outputs(path: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut out = Vec::new();
    let mut lines = text.lines();
    while let Some(l) = lines.next() {
        if let Some((name, delim)) = l.split_once("<<") {
            let value: Vec<&str> = lines.by_ref().take_while(|x| *x != delim).collect();
            out.push((name.to_owned(), value.join("\n")));
        } else if let Some((k, v)) = l.split_once('=') {
            out.push((k.to_owned(), v.to_owned()));
        }
    }
    out
}

pub fn output(path: &Path, name: &str) -> Option<String> {
    read_outputs(path)
        .into_iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}
