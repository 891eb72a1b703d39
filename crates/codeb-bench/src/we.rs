//! `we up --json` end to end (process start, token from the environment, one authenticated
//! `GET /api/v1/up` over loopback, JSON rendered to stdout) beside `curl -sf` making the same
//! request with the same token, interleaved in the same run against the same daemon. The
//! target is a median within 1.5x of curl's.
//!
//! Also the control plane's authenticated read: `GET /api/v1/projects` (20 projects, a
//! token checked against the store on every request) paced at 500 requests/s over keep-alive
//! connections, beside the same load on `GET /healthz` (the server's floor: no token, no
//! store), alternating rounds in the same run. The target is a p99 under 5 ms.
//!
//! Only 127.0.0.1 is targeted; the loops are bounded by `runs` and by count.

use codeb_testbed::free_port;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use codeb_core::vars;

use crate::{bin, pair, row};

struct Daemon {
    child: Child,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A daemon with a fresh store, its previews pointed at dead local ports.
fn config(dir: &Path, port: u16) -> Result<std::path::PathBuf, String> {
    let dead = free_port();
    std::fs::create_dir_all(dir.join("quadlet")).map_err(|e| e.to_string())?;
    std::fs::write(
        dir.join("port-manifest.yaml"),
        "version: 1\nprojects:\n  bench: {production: {port: 4400}}\n",
    )
    .map_err(|e| e.to_string())?;
    // The daemon refuses to start without a webhook secret (it serves the intake too).
    let secret = dir.join("webhook.secret");
    std::fs::write(&secret, "codeb-bench-we-secret\n").map_err(|e| e.to_string())?;
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .map_err(|e| e.to_string())?;
    let text = format!(
        r#"listen = "127.0.0.1:{port}"
state_dir = "state"
secret_file = "{s}"
max_attempts = 1
shutdown_grace = "2s"
[previews]
github_api_url = "http://127.0.0.1:{dead}"
caddy_admin = "http://127.0.0.1:{dead}"
quadlet_dir = "{q}"
manifest = "{m}"
"#,
        s = secret.display(),
        q = dir.join("quadlet").display(),
        m = dir.join("port-manifest.yaml").display()
    );
    let cfg = dir.join("daemon.toml");
    std::fs::write(&cfg, text).map_err(|e| e.to_string())?;
    Ok(cfg)
}

pub fn run(runs: usize) -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("codeb-bench-we-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let result = measure(&dir, runs.clamp(20, 500));
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn measure(dir: &Path, runs: usize) -> Result<(), String> {
    let daemon = bin("codeb-daemon")?;
    let we = bin("we")?;
    let curl_version = Command::new("curl")
        .arg("--version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or_default()
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .map_err(|e| format!("curl is not runnable: {e}"))?;
    let port = free_port();
    let cfg = config(dir, port)?;
    let out = Command::new(&daemon)
        .args(["bootstrap-admin", "--config"])
        .arg(&cfg)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("codeb-daemon bootstrap-admin: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let token = text
        .split_whitespace()
        .find(|w| w.starts_with("codeb_"))
        .map(str::to_owned)
        .ok_or_else(|| {
            format!(
                "codeb-daemon bootstrap-admin printed no token ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    let log = std::fs::File::create(dir.join("daemon.log")).map_err(|e| e.to_string())?;
    let _d = Daemon {
        child: Command::new(&daemon)
            .args(["serve", "--config"])
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("codeb-daemon serve: {e}"))?,
    };
    let server = format!("http://127.0.0.1:{port}");
    let url = format!("{server}/api/v1/up");
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err("codeb-daemon did not listen within 15 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // The token reaches curl through a header file, never the command line.
    let header = dir.join("auth.header");
    std::fs::write(&header, format!("Authorization: Bearer {token}\n"))
        .map_err(|e| e.to_string())?;
    let home = dir.join("home");
    let mut we_cmd = || {
        let mut c = Command::new(&we);
        c.args(["up", "--json"])
            .env_clear()
            .env(vars::HOME, &home)
            .env(vars::CODEB_SERVER, &server)
            .env(vars::CODEB_TOKEN, &token);
        c
    };
    let mut curl_cmd = || {
        let mut c = Command::new("curl");
        c.args(["-sf", "-H"])
            .arg(format!("@{}", header.display()))
            .arg(&url)
            .env_clear();
        c
    };
    api_reads(dir, port, &token)?;
    println!(
        "\n## `we up --json` end to end vs {curl_version} (same request, same daemon, {runs} interleaved runs)\n"
    );
    println!("| what | median | p90 | ratio |\n|---|---|---|---|");
    let (w, c) = pair(runs, &mut we_cmd, &mut curl_cmd)?;
    row("`curl -sf` GET /api/v1/up", &c, None);
    row("`we up --json`", &w, Some(&c));
    let ratio = w.median.as_secs_f64() / c.median.as_secs_f64();
    println!(
        "\ntarget: within 1.50x of curl: {}",
        if ratio <= 1.5 { "met" } else { "NOT met" }
    );
    Ok(())
}

const PACED_RATE: u64 = 500;
const PACED_SECONDS: u64 = 4;
const PACED_CONNECTIONS: usize = 8;
const ROUNDS: usize = 2;

/// Registers 20 projects (through curl, as any client would), then paces reads.
fn api_reads(dir: &Path, port: u16, token: &str) -> Result<(), String> {
    let header = dir.join("auth.header");
    for i in 0..20 {
        let body = format!(
            r#"{{"name":"bench{i}","type":"dockerfile","repository":"acme/bench{i}","image":"127.0.0.1:1/acme/bench{i}","container_port":3000,"health_path":"/health","environments":[{{"name":"production"}}],"owners":[]}}"#
        );
        let out = Command::new("curl")
            .args(["-sf", "-o", "/dev/null", "-X", "POST", "-H"])
            .arg(format!("@{}", header.display()))
            .args([
                "-H",
                "content-type: application/json",
                "--data-binary",
                &body,
            ])
            .arg(format!("http://127.0.0.1:{port}/api/v1/projects"))
            .status()
            .map_err(|e| format!("curl: {e}"))?;
        if !out.success() {
            return Err(format!("registering bench{i} failed: {out}"));
        }
    }
    let auth = format!("Bearer {token}");
    let (mut floor, mut read) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        floor.extend(paced(port, "/healthz", None)?);
        read.extend(paced(port, "/api/v1/projects", Some(&auth))?);
    }
    let (f, r) = (quantiles(&mut floor)?, quantiles(&mut read)?);
    println!(
        "\n## Control plane: authenticated read vs the server's floor ({PACED_RATE} requests/s, {PACED_CONNECTIONS} keep-alive connections, {ROUNDS} alternating rounds of {PACED_SECONDS} s)\n"
    );
    println!(
        "| latency | `GET /healthz` (floor) | `GET /api/v1/projects` (token, 20 projects) | ratio |\n|---|---|---|---|"
    );
    for (name, a, b) in [("p50", f.0, r.0), ("p99", f.1, r.1), ("max", f.2, r.2)] {
        println!(
            "| {name} | {} | {} | {:.2}x |",
            crate::ms(a),
            crate::ms(b),
            b.as_secs_f64() / a.as_secs_f64().max(1e-9)
        );
    }
    println!(
        "\ntarget: authenticated read p99 < 5 ms at {PACED_RATE}/s: {}",
        if r.1 < Duration::from_millis(5) {
            "met"
        } else {
            "NOT met"
        }
    );
    Ok(())
}

fn quantiles(v: &mut [Duration]) -> Result<(Duration, Duration, Duration), String> {
    if v.is_empty() {
        return Err("no samples".into());
    }
    v.sort();
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    Ok((at(0.5), at(0.99), v[v.len() - 1]))
}

/// GETs `path` at PACED_RATE per second for PACED_SECONDS; each latency counts from the
/// request's scheduled time (a slow answer delays the next ones and is charged for it).
fn paced(port: u16, path: &str, auth: Option<&str>) -> Result<Vec<Duration>, String> {
    let total = (PACED_RATE * PACED_SECONDS) as usize;
    let interval = Duration::from_nanos(1_000_000_000 / PACED_RATE);
    let start = Instant::now() + Duration::from_millis(100);
    let mut handles = Vec::new();
    for c in 0..PACED_CONNECTIONS {
        let head = format!(
            "GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\n{}\r\n",
            auth.map_or_else(String::new, |a| format!("authorization: {a}\r\n"))
        );
        handles.push(std::thread::spawn(
            move || -> Result<Vec<Duration>, String> {
                let mut conn = Get::open(port)?;
                let mut out = Vec::new();
                let mut i = c;
                while i < total {
                    let at = start + interval * u32::try_from(i).unwrap_or(u32::MAX);
                    if let Some(wait) = at.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    let status = match conn.get(&head) {
                        Ok(s) => s,
                        Err(_) => {
                            conn = Get::open(port)?;
                            conn.get(&head)?
                        }
                    };
                    if status != 200 {
                        return Err(format!("answered {status}"));
                    }
                    out.push(at.elapsed());
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
    Ok(all)
}

/// A keep-alive HTTP/1.1 connection for GETs answered with a Content-Length.
///
/// Raw on purpose, not the test bed's client (`codeb_testbed::http_request`): the load loop
/// measures the server's latency per request, so the client must cost next to nothing and
/// the same for both peers (one pre-formatted head written on a kept-alive socket per
/// request, no pool, no client-side runtime thread in the measured path).
struct Get {
    reader: std::io::BufReader<std::net::TcpStream>,
    writer: std::net::TcpStream,
}

impl Get {
    fn open(port: u16) -> Result<Get, String> {
        let s = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
        s.set_nodelay(true).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        let writer = s.try_clone().map_err(|e| e.to_string())?;
        Ok(Get {
            reader: std::io::BufReader::new(s),
            writer,
        })
    }

    fn get(&mut self, head: &str) -> Result<u16, String> {
        use std::io::{BufRead, Read, Write};
        self.writer
            .write_all(head.as_bytes())
            .map_err(|e| e.to_string())?;
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
        loop {
            line.clear();
            if self
                .reader
                .read_line(&mut line)
                .map_err(|e| e.to_string())?
                == 0
            {
                return Err("connection closed in the answer's head".into());
            }
            let l = line.trim_end().to_ascii_lowercase();
            if l.is_empty() {
                break;
            }
            if let Some(v) = l.strip_prefix("content-length:") {
                length = v.trim().parse().map_err(|_| format!("bad header {l:?}"))?;
            } else if l.starts_with("transfer-encoding:") {
                return Err("a chunked answer; this client reads Content-Length only".into());
            }
        }
        let mut rest = vec![0u8; length];
        self.reader
            .read_exact(&mut rest)
            .map_err(|e| e.to_string())?;
        Ok(status)
    }
}
