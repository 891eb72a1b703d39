//! A tiny web app that the end-to-end tests deploy as container images (std only, no
//! dependencies, built as a fully static binary so that it runs in a `FROM scratch` image).
//!
//! Environment:
//! - `PORT` (default 3000): listens on `0.0.0.0:$PORT`.
//! - `VERSION`: reported by `/api/health` and `/` (default `dev`).
//! - `HEALTH=fail`: `/api/health` answers 503 (the "broken release").
//! - `STARTUP_DELAY_MS`: waits this long before listening (a slow-booting app).
//! - `DATABASE_SOCKET` (a PostgreSQL Unix socket file, e.g. `/run/pg/.s.PGSQL.5432`),
//!   `DATABASE_USER`, `DATABASE_NAME`, `DATABASE_QUERY`: an app that reads its database.
//!   Every `/api/health` opens a fresh connection (PostgreSQL's wire protocol, trust
//!   authentication only) and runs the query; its first value is the answer's `db` field,
//!   and a database that cannot answer makes `/api/health` 503.
//!
//! Routes (every answer is HTTP/1.1 with `connection: close`):
//! - `GET /api/health` → 200 `{"status":"ok","timestamp":"<unix secs>","uptime":<secs>,"version":"<VERSION>"}`
//!   (plus `"db":"<value>"` with a database), or 503 `{"status":"error","error":"forced failure","version":"<VERSION>"}`
//!   with `HEALTH=fail` (`"error":"database: <why>"` when the database does not answer).
//! - `GET /` → 200 `hello from <VERSION>`.
//! - `GET /slow?ms=N` → sleeps N ms (at most 10 minutes), then 200 `slept N ms (<VERSION>)`.
//! - anything else → 404.
//!
//! Binding parses a `SocketAddr` only: no name resolution, which static glibc cannot do.
//! SIGTERM keeps its default action (exit); note that as PID 1 of a container the kernel
//! ignores it unless the container runs with an init (`podman run --init`).

// This binary's only output is one startup line on stdout and fatal errors on stderr.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The longest `/slow` sleep (10 minutes).
const MAX_SLOW_MS: u64 = 600_000;
/// The largest request head we read.
const MAX_HEAD: usize = 16 * 1024;

struct App {
    version: String,
    healthy: bool,
    started: Instant,
    db: Option<Db>,
}

/// Where the app's database is and what it asks it.
struct Db {
    socket: String,
    user: String,
    name: String,
    query: String,
}

fn main() -> ExitCode {
    let port = match std::env::var("PORT") {
        Ok(p) => match p.trim().parse::<u16>() {
            Ok(p) => p,
            Err(_) => {
                eprintln!("codeb-sample-app: invalid PORT {p:?}");
                return ExitCode::from(2);
            }
        },
        Err(_) => 3000,
    };
    // A release that crashes at start (the deploy tests' "exits at once" case).
    if let Ok(why) = std::env::var("EXIT_AT_START") {
        eprintln!("codeb-sample-app: {why}");
        return ExitCode::from(3);
    }
    let app = App {
        version: std::env::var("VERSION").unwrap_or_else(|_| "dev".to_owned()),
        healthy: std::env::var("HEALTH").map_or(true, |h| h != "fail"),
        started: Instant::now(),
        db: std::env::var("DATABASE_SOCKET").ok().map(|socket| Db {
            socket,
            user: std::env::var("DATABASE_USER").unwrap_or_else(|_| "postgres".into()),
            name: std::env::var("DATABASE_NAME").unwrap_or_else(|_| "postgres".into()),
            query: std::env::var("DATABASE_QUERY").unwrap_or_else(|_| "SELECT 1".into()),
        }),
    };
    if let Some(ms) = std::env::var("STARTUP_DELAY_MS")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
    {
        thread::sleep(Duration::from_millis(ms));
    }
    let addr = SocketAddr::from(([0, 0, 0, 0], port));
    let listener = match TcpListener::bind(addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("codeb-sample-app: cannot listen on {addr}: {e}");
            return ExitCode::from(1);
        }
    };
    println!(
        "codeb-sample-app {} listening on {addr} (health {})",
        app.version,
        if app.healthy { "ok" } else { "fail" }
    );
    let _ = std::io::stdout().flush();
    let app: &'static App = Box::leak(Box::new(app));
    for stream in listener.incoming() {
        match stream {
            Ok(s) => {
                thread::spawn(move || handle(app, s));
            }
            Err(e) => {
                // Out of descriptors and the like: back off, keep serving.
                eprintln!("codeb-sample-app: accept: {e}");
                thread::sleep(Duration::from_millis(50));
            }
        }
    }
    ExitCode::SUCCESS
}

fn handle(app: &App, mut stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
    let Some(head) = read_head(&mut stream) else {
        return;
    };
    let request_line = head.lines().next().unwrap_or_default();
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or_default();
    let target = parts.next().unwrap_or_default();
    let (path, query) = target.split_once('?').unwrap_or((target, ""));

    let (status, content_type, body) = match (method, path) {
        ("GET", "/api/health") => health(app),
        ("GET", "/") => (200, "text/plain", format!("hello from {}", app.version)),
        ("GET", "/slow") => {
            let ms = query_param(query, "ms")
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
                .min(MAX_SLOW_MS);
            thread::sleep(Duration::from_millis(ms));
            (
                200,
                "text/plain",
                format!("slept {ms} ms ({})", app.version),
            )
        }
        _ => (404, "text/plain", "not found".to_owned()),
    };
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        503 => "Service Unavailable",
        _ => "Status",
    };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\ncache-control: no-store\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes());
    let _ = stream.flush();
}

/// `/api/health`: the codeb health contract.
fn health(app: &App) -> (u16, &'static str, String) {
    let version = json_string(&app.version);
    if !app.healthy {
        return (
            503,
            "application/json",
            format!(r#"{{"status":"error","error":"forced failure","version":{version}}}"#),
        );
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let uptime = app.started.elapsed().as_secs();
    let db = match &app.db {
        None => String::new(),
        Some(db) => match query(db) {
            Ok(v) => format!(r#","db":{}"#, json_string(&v)),
            Err(e) => {
                return (
                    503,
                    "application/json",
                    format!(
                        r#"{{"status":"error","error":{},"version":{version}}}"#,
                        json_string(&format!("database: {e}"))
                    ),
                );
            }
        },
    };
    (
        200,
        "application/json",
        format!(
            r#"{{"status":"ok","timestamp":"{now}","uptime":{uptime},"version":{version}{db}}}"#
        ),
    )
}

/// Runs `db.query` on a fresh connection (PostgreSQL protocol 3.0, trust authentication);
/// the first column of the first row (`""` for none or NULL).
fn query(db: &Db) -> Result<String, String> {
    let mut s = UnixStream::connect(&db.socket).map_err(|e| format!("{}: {e}", db.socket))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let mut body = 196_608u32.to_be_bytes().to_vec();
    for (k, v) in [("user", &db.user), ("database", &db.name)] {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut startup = u32::try_from(body.len() + 4)
        .map_err(|e| e.to_string())?
        .to_be_bytes()
        .to_vec();
    startup.extend_from_slice(&body);
    s.write_all(&startup).map_err(|e| e.to_string())?;
    // Authentication and parameters, up to ReadyForQuery.
    loop {
        let (t, m) = message(&mut s)?;
        match t {
            b'R' if m.get(..4) == Some(&[0, 0, 0, 0]) => {}
            b'R' => return Err("the server asks for a password (trust authentication only)".into()),
            b'E' => return Err(error_text(&m)),
            b'Z' => break,
            _ => {}
        }
    }
    let mut q = vec![b'Q'];
    q.extend_from_slice(
        &u32::try_from(db.query.len() + 5)
            .map_err(|e| e.to_string())?
            .to_be_bytes(),
    );
    q.extend_from_slice(db.query.as_bytes());
    q.push(0);
    s.write_all(&q).map_err(|e| e.to_string())?;
    let mut value = None;
    let mut failed = None;
    loop {
        let (t, m) = message(&mut s)?;
        match t {
            b'D' if value.is_none() => {
                // Int16 columns, then Int32 length (-1: NULL) and the bytes of each.
                let len = m
                    .get(2..6)
                    .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                    .unwrap_or(-1);
                value = Some(match usize::try_from(len) {
                    Ok(n) => {
                        String::from_utf8_lossy(m.get(6..6 + n).unwrap_or_default()).into_owned()
                    }
                    Err(_) => String::new(),
                });
            }
            b'E' => failed = Some(error_text(&m)),
            b'Z' => break,
            _ => {}
        }
    }
    let _ = s.write_all(&[b'X', 0, 0, 0, 4]);
    match failed {
        Some(e) => Err(e),
        None => Ok(value.unwrap_or_default()),
    }
}

/// One backend message: its type and body.
fn message(s: &mut UnixStream) -> Result<(u8, Vec<u8>), String> {
    let mut head = [0u8; 5];
    s.read_exact(&mut head)
        .map_err(|e| format!("the server went away: {e}"))?;
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]);
    let len = usize::try_from(len).map_err(|e| e.to_string())?;
    if !(4..=1 << 24).contains(&len) {
        return Err(format!("bad message length {len}"));
    }
    let mut body = vec![0u8; len - 4];
    s.read_exact(&mut body).map_err(|e| e.to_string())?;
    Ok((head[0], body))
}

/// The `M` (message) field of an ErrorResponse.
fn error_text(m: &[u8]) -> String {
    m.split(|b| *b == 0)
        .find_map(|f| f.strip_prefix(b"M"))
        .map(|t| String::from_utf8_lossy(t).into_owned())
        .unwrap_or_else(|| "error".into())
}

/// Reads up to the end of the request head (`\r\n\r\n`); `None` if the peer went away,
/// timed out or sent more than [`MAX_HEAD`] bytes.
fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            // A client that half-closes after a complete request line is still answered.
            return (!buf.is_empty()).then(|| String::from_utf8_lossy(&buf).into_owned());
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.windows(2).any(|w| w == b"\n\n") {
            return Some(String::from_utf8_lossy(&buf).into_owned());
        }
        if buf.len() > MAX_HEAD {
            return None;
        }
    }
}

fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// `s` as a JSON string literal.
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
