//! Webhook intake on loopback: `codeb-daemon` beside adnanh/webhook (Debian `webhook`), both
//! checking `X-Hub-Signature-256` over the same 28 KB `pull_request` payload.
//!
//! - Throughput: `wrk` (a Lua script POSTs the signed body with a unique `X-GitHub-Delivery`
//!   per request, so the daemon's deduplication never short-circuits), a few seconds each,
//!   interleaved rounds, medians compared. The daemon stores every delivery (SQLite commit
//!   before the answer) and queues a job; webhook runs its `execute-command` (`/bin/true`).
//! - Acknowledgement latency at a fixed 500 requests/s: a paced generator here (8 keep-alive
//!   connections, each request's latency counted from its scheduled send time, so a slow
//!   answer delays the next and is not hidden), ~5 s per peer.
//! - Idle RSS of each server after start (`VmRSS` in /proc/<pid>/status).
//!
//! Only 127.0.0.1 is targeted; every loop is bounded by count and time.

use codeb_testbed::free_port;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) const SECRET: &str = "bench-secret-0123456789abcdef";
const WRK_SECONDS: u64 = 5;
const PACED_RATE: u64 = 500;
const PACED_SECONDS: u64 = 5;
const PACED_CONNECTIONS: usize = 8;

/// Runs the webhook benchmark; `runs` bounds the number of interleaved wrk rounds (1-3).
pub fn webhook(runs: usize) -> Result<(), String> {
    let rounds = runs.clamp(1, 3);
    let dir = std::env::temp_dir().join(format!("codeb-bench-webhook-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let result = measure(&dir, rounds);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn measure(dir: &Path, rounds: usize) -> Result<(), String> {
    let daemon_bin = sibling("codeb-daemon")?;
    let payload_path =
        workspace()?.join("tests/corpora/github-webhooks/pull_request/opened.payload.json");
    let body =
        std::fs::read(&payload_path).map_err(|e| format!("{}: {e}", payload_path.display()))?;
    let body_file = dir.join("body.json");
    std::fs::write(&body_file, &body).map_err(|e| e.to_string())?;
    let signature = sign(&daemon_bin, &body)?;
    let version = Command::new("webhook")
        .arg("-version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .map_err(|e| format!("webhook (Debian package `webhook`) is not runnable: {e}"))?;

    println!(
        "\n## Webhook intake on loopback: codeb-daemon vs adnanh/webhook ({version}), signed {} KB pull_request payload\n",
        body.len() / 1024
    );

    let mut daemon_rps = Vec::new();
    let mut peer_rps = Vec::new();
    let mut daemon_errors = 0;
    let mut peer_errors = 0;
    let mut daemon_idle_rss = 0;
    let mut peer_idle_rss = 0;
    for round in 0..rounds {
        // A fresh daemon (and store) per round, so rounds do not grow one database.
        let d = Server::daemon(&daemon_bin, &dir.join(format!("daemon-{round}")))?;
        if round == 0 {
            daemon_idle_rss = d.rss_kib()?;
        }
        let (rps, non2xx) = wrk(&d.url, &body_file, &signature, &dir.join("wrk.lua"))?;
        daemon_rps.push(rps);
        daemon_errors += non2xx;
        drop(d);

        let w = Server::webhook(&dir.join(format!("webhook-{round}")))?;
        if round == 0 {
            peer_idle_rss = w.rss_kib()?;
        }
        let (rps, non2xx) = wrk(&w.url, &body_file, &signature, &dir.join("wrk.lua"))?;
        peer_rps.push(rps);
        peer_errors += non2xx;
    }
    let d = Server::daemon(&daemon_bin, &dir.join("daemon-paced"))?;
    let daemon_lat = paced(d.port, &d.path, &body, &signature)?;
    drop(d);
    let w = Server::webhook(&dir.join("webhook-paced"))?;
    let peer_lat = paced(w.port, &w.path, &body, &signature)?;
    drop(w);

    let rps_d = median(&mut daemon_rps);
    let rps_w = median(&mut peer_rps);
    let ratio = rps_d / rps_w.max(1.0);
    println!(
        "| measure | codeb-daemon | webhook (peer) | codeb-daemon / peer | target |\n|---|---|---|---|---|"
    );
    println!(
        "| requests/s, wrk -t2 -c16 {WRK_SECONDS}s, median of {rounds} | {rps_d:.0} | {rps_w:.0} | {ratio:.2}x | >= 3x: {} |",
        met(ratio >= 3.0)
    );
    println!(
        "| ack latency p50 at {PACED_RATE}/s | {} | {} | {:.2}x | |",
        ms(daemon_lat.p50),
        ms(peer_lat.p50),
        secs(daemon_lat.p50) / secs(peer_lat.p50).max(1e-9)
    );
    println!(
        "| ack latency p99 at {PACED_RATE}/s | {} | {} | {:.2}x | < 5 ms: {} |",
        ms(daemon_lat.p99),
        ms(peer_lat.p99),
        secs(daemon_lat.p99) / secs(peer_lat.p99).max(1e-9),
        met(daemon_lat.p99 < Duration::from_millis(5))
    );
    println!(
        "| ack latency max at {PACED_RATE}/s | {} | {} | | |",
        ms(daemon_lat.max),
        ms(peer_lat.max)
    );
    println!(
        "| idle RSS after start | {:.1} MiB | {:.1} MiB | {:.2}x | < 30 MB: {} |",
        daemon_idle_rss as f64 / 1024.0,
        peer_idle_rss as f64 / 1024.0,
        daemon_idle_rss as f64 / (peer_idle_rss as f64).max(1.0),
        met(daemon_idle_rss * 1024 < 30_000_000)
    );
    println!(
        "\nnon-2xx answers: codeb-daemon {daemon_errors}, webhook {peer_errors}; paced requests answered 2xx: codeb-daemon {}/{}, webhook {}/{}",
        daemon_lat.ok, daemon_lat.sent, peer_lat.ok, peer_lat.sent
    );
    println!(
        "codeb-daemon commits each delivery (SQLite WAL, synchronous=FULL: fsynced, group commit) before answering 202; webhook answers before its command ends."
    );
    if daemon_errors > 0 || daemon_lat.ok != daemon_lat.sent {
        return Err("codeb-daemon refused or failed requests during the benchmark".into());
    }
    Ok(())
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "NOT met" }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// The workspace root (the bench binary lives in `<root>/target/<profile>/`, or wherever
/// CARGO_TARGET_DIR points; fall back to the current directory's ancestors).
fn workspace() -> Result<PathBuf, String> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        candidates.extend(cwd.ancestors().map(Path::to_path_buf));
    }
    if let Ok(exe) = std::env::current_exe() {
        candidates.extend(exe.ancestors().map(Path::to_path_buf));
    }
    candidates
        .into_iter()
        .find(|p| p.join("crates/codeb-daemon").is_dir())
        .ok_or_else(|| "cannot find the workspace root: run codeb-bench from the repository".into())
}

fn sibling(name: &str) -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let p = exe.parent().ok_or("no parent")?.join(name);
    if p.exists() {
        Ok(p)
    } else {
        Err(format!(
            "{} is missing; build with `cargo build --release --workspace --bins`",
            p.display()
        ))
    }
}

pub(crate) fn sign(daemon: &Path, body: &[u8]) -> Result<String, String> {
    let mut child = Command::new(daemon)
        .arg("sign")
        .env("CODEB_WEBHOOK_SECRET", SECRET)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("codeb-daemon sign: {e}"))?;
    child
        .stdin
        .take()
        .ok_or("no stdin")?
        .write_all(body)
        .map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "codeb-daemon sign: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// A server process under test; killed on drop.
struct Server {
    child: Child,
    port: u16,
    path: String,
    url: String,
}

impl Server {
    fn daemon(bin: &Path, dir: &Path) -> Result<Server, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let port = free_port();
        let dead = free_port();
        // A configured repository, so each delivery is stored with a job (the real path);
        // the preview service points at dead local ports, so jobs end quickly.
        let config = format!(
            r#"listen = "127.0.0.1:{port}"
state_dir = "state"
max_attempts = 1
shutdown_grace = "2s"
[previews]
github_api_url = "http://127.0.0.1:{dead}"
caddy_admin = "http://127.0.0.1:{dead}"
quadlet_dir = "{q}"
manifest = "{m}"
[previews.repos."Codertocat/Hello-World"]
project = "hello-world"
image = "ghcr.io/codertocat/hello-world"
"#,
            q = dir.join("quadlet").display(),
            m = dir.join("port-manifest.yaml").display()
        );
        std::fs::create_dir_all(dir.join("quadlet")).map_err(|e| e.to_string())?;
        std::fs::write(
            dir.join("port-manifest.yaml"),
            "version: 1\nprojects:\n  hello-world: {}\n",
        )
        .map_err(|e| e.to_string())?;
        let cfg = dir.join("daemon.toml");
        std::fs::write(&cfg, config).map_err(|e| e.to_string())?;
        let child = Command::new(bin)
            .args(["serve", "--config"])
            .arg(&cfg)
            .env("CODEB_WEBHOOK_SECRET", SECRET)
            .env("CODEB_LOG", "info")
            .env_remove("GITHUB_TOKEN")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("{}: {e}", bin.display()))?;
        let path = "/webhook/github".to_owned();
        Server::ready(child, port, path)
    }

    fn webhook(dir: &Path) -> Result<Server, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let port = free_port();
        // The documented GitHub rule: payload-hmac-sha256 over the body, secret, header.
        let hooks = format!(
            r#"[{{
  "id": "github",
  "execute-command": "/bin/true",
  "command-working-directory": "{dir}",
  "trigger-rule-mismatch-http-response-code": 401,
  "trigger-rule": {{
    "match": {{
      "type": "payload-hmac-sha256",
      "secret": "{SECRET}",
      "parameter": {{ "source": "header", "name": "X-Hub-Signature-256" }}
    }}
  }}
}}]"#,
            dir = dir.display()
        );
        let hooks_file = dir.join("hooks.json");
        std::fs::write(&hooks_file, hooks).map_err(|e| e.to_string())?;
        let child = Command::new("webhook")
            .arg("-hooks")
            .arg(&hooks_file)
            .args(["-ip", "127.0.0.1", "-port", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("webhook: {e}"))?;
        Server::ready(child, port, "/hooks/github".to_owned())
    }

    fn ready(mut child: Child, port: u16, path: String) -> Result<Server, String> {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(15) {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("server on port {port} exited with {status}"));
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                // Let it finish starting (store open, reconcile) before anything is measured.
                std::thread::sleep(Duration::from_millis(500));
                let url = format!("http://127.0.0.1:{port}{path}");
                return Ok(Server {
                    child,
                    port,
                    path,
                    url,
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        Err(format!("server on port {port} did not start in 15 s"))
    }

    fn rss_kib(&self) -> Result<u64, String> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .map_err(|e| e.to_string())?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| "no VmRSS".into())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs wrk against `url`; returns requests/s and the count of non-2xx answers.
fn wrk(url: &str, body: &Path, signature: &str, script: &Path) -> Result<(f64, u64), String> {
    let lua = format!(
        r#"-- Signed POST with a unique X-GitHub-Delivery per request (per thread prefix + counter).
local f = assert(io.open("{body}", "rb"))
local payload = f:read("*a")
f:close()
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
function init(args)
  counter = 0
  wrk.method = "POST"
  wrk.body = payload
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["X-GitHub-Event"] = "pull_request"
  wrk.headers["X-GitHub-Hook-ID"] = "1"
  wrk.headers["X-Hub-Signature-256"] = "{signature}"
end
function request()
  counter = counter + 1
  wrk.headers["X-GitHub-Delivery"] = string.format("bench-%d-%d", tid, counter)
  return wrk.format()
end
"#,
        body = body.display()
    );
    std::fs::write(script, lua).map_err(|e| e.to_string())?;
    let out = Command::new("wrk")
        .args([
            "-t2",
            "-c16",
            &format!("-d{WRK_SECONDS}s"),
            "--timeout",
            "5s",
            "-s",
        ])
        .arg(script)
        .arg(url)
        .output()
        .map_err(|e| format!("wrk (Debian package `wrk`): {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "wrk failed: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let rps = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .ok_or_else(|| format!("no Requests/sec in wrk's output:\n{text}"))?;
    let non2xx = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Non-2xx or 3xx responses:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    Ok((rps, non2xx))
}

struct Latency {
    p50: Duration,
    p99: Duration,
    max: Duration,
    sent: usize,
    ok: usize,
}

/// Sends signed deliveries at PACED_RATE per second for PACED_SECONDS over
/// PACED_CONNECTIONS keep-alive connections; latency counts from each scheduled send time.
fn paced(port: u16, path: &str, body: &[u8], signature: &str) -> Result<Latency, String> {
    let total = (PACED_RATE * PACED_SECONDS) as usize;
    let interval = Duration::from_nanos(1_000_000_000 / PACED_RATE);
    let start = Instant::now() + Duration::from_millis(100);
    let mut handles = Vec::new();
    for c in 0..PACED_CONNECTIONS {
        let (path, body, signature) = (path.to_owned(), body.to_vec(), signature.to_owned());
        handles.push(std::thread::spawn(
            move || -> Result<Vec<(Duration, bool)>, String> {
                let mut conn = Conn::open(port)?;
                let mut out = Vec::new();
                let mut i = c;
                while i < total {
                    let at = start + interval * u32::try_from(i).unwrap_or(u32::MAX);
                    if let Some(wait) = at.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    let delivery = format!("paced-{c}-{i}");
                    let status = match conn.post(&path, &delivery, &signature, &body) {
                        Ok(s) => s,
                        Err(_) => {
                            // The server closed the connection: reconnect once and retry.
                            conn = Conn::open(port)?;
                            conn.post(&path, &delivery, &signature, &body)?
                        }
                    };
                    out.push((at.elapsed(), (200..300).contains(&status)));
                    i += PACED_CONNECTIONS;
                }
                Ok(out)
            },
        ));
    }
    let mut all = Vec::with_capacity(total);
    for h in handles {
        all.extend(h.join().map_err(|_| "a load thread panicked")??);
    }
    let ok = all.iter().filter(|(_, ok)| *ok).count();
    let mut lat: Vec<Duration> = all.iter().map(|(d, _)| *d).collect();
    lat.sort();
    let at = |q: f64| {
        lat.get(((lat.len().saturating_sub(1)) as f64 * q).round() as usize)
            .copied()
            .unwrap_or_default()
    };
    Ok(Latency {
        p50: at(0.5),
        p99: at(0.99),
        max: lat.last().copied().unwrap_or_default(),
        sent: all.len(),
        ok,
    })
}

/// A keep-alive HTTP/1.1 client connection.
///
/// Raw on purpose, not the test bed's client (`codeb_testbed::http_request`): the load loop
/// measures the server's latency per request, so the client must cost next to nothing and
/// the same for both peers (one pre-formatted head written on a kept-alive socket per
/// request, no pool, no client-side runtime thread in the measured path).
struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Conn {
    fn open(port: u16) -> Result<Conn, String> {
        let s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
        s.set_nodelay(true).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        let writer = s.try_clone().map_err(|e| e.to_string())?;
        Ok(Conn {
            reader: BufReader::new(s),
            writer,
        })
    }

    /// Sends one signed POST and reads the whole answer; returns the status.
    fn post(
        &mut self,
        path: &str,
        delivery: &str,
        signature: &str,
        body: &[u8],
    ) -> Result<u16, String> {
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n\
             x-github-event: pull_request\r\nx-github-hook-id: 1\r\nx-github-delivery: {delivery}\r\n\
             x-hub-signature-256: {signature}\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        let mut req = Vec::with_capacity(head.len() + body.len());
        req.extend_from_slice(head.as_bytes());
        req.extend_from_slice(body);
        self.writer.write_all(&req).map_err(|e| e.to_string())?;
        let mut line = String::new();
        self.reader
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status line {line:?}"))?;
        let mut length = 0usize;
        let mut chunked = false;
        loop {
            line.clear();
            let n = self
                .reader
                .read_line(&mut line)
                .map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("connection closed in the answer's head".into());
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let lower = l.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse().map_err(|_| format!("bad header {l:?}"))?;
            } else if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
                chunked = true;
            }
        }
        if chunked {
            loop {
                line.clear();
                self.reader
                    .read_line(&mut line)
                    .map_err(|e| e.to_string())?;
                let size = usize::from_str_radix(line.trim(), 16).map_err(|_| "bad chunk size")?;
                let mut chunk = vec![0u8; size + 2];
                self.reader
                    .read_exact(&mut chunk)
                    .map_err(|e| e.to_string())?;
                if size == 0 {
                    break;
                }
            }
        } else {
            let mut rest = vec![0u8; length];
            self.reader
                .read_exact(&mut rest)
                .map_err(|e| e.to_string())?;
        }
        Ok(status)
    }
}
