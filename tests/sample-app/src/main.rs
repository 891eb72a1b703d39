//! A tiny web app that the end-to-end tests deploy as container images (std only, no
//! dependencies, built as a fully static binary so that it runs in a `FROM scratch` image).
//!
//! Environment:
//! - `PORT` (default 3000): listens on `0.0.0.0:$PORT`.
//! - `VERSION`: reported by `/api/health` and `/` (default `dev`).
//! - `HEALTH=fail`: `/api/health` answers 503 (the "broken release").
//! - `STARTUP_DELAY_MS`: waits this long before listening (a slow-booting app).
//!
//! Routes (every answer is HTTP/1.1 with `connection: close`):
//! - `GET /api/health` → 200 `{"status":"ok","timestamp":"<unix secs>","uptime":<secs>,"version":"<VERSION>"}`,
//!   or 503 `{"status":"error","error":"forced failure","version":"<VERSION>"}` with `HEALTH=fail`.
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
    (
        200,
        "application/json",
        format!(r#"{{"status":"ok","timestamp":"{now}","uptime":{uptime},"version":{version}}}"#),
    )
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
