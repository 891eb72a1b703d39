//! `we up --json` end to end (process start, token from the environment, one authenticated
//! `GET /api/v1/up` over loopback, JSON rendered to stdout) beside `curl -sf` making the same
//! request with the same token, interleaved in the same run against the same daemon. The
//! target is a median within 1.5x of curl's.
//!
//! Only 127.0.0.1 is targeted; the loop is bounded by `runs`.

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

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

/// A daemon with a fresh store, its previews pointed at dead local ports.
fn config(dir: &Path, port: u16) -> Result<std::path::PathBuf, String> {
    let dead = free_port()?;
    std::fs::create_dir_all(dir.join("quadlet")).map_err(|e| e.to_string())?;
    std::fs::write(
        dir.join("port-manifest.yaml"),
        "version: 1\nprojects:\n  bench: {production: {port: 4400}}\n",
    )
    .map_err(|e| e.to_string())?;
    let text = format!(
        r#"listen = "127.0.0.1:{port}"
state_dir = "state"
max_attempts = 1
shutdown_grace = "2s"
[previews]
github_api_url = "http://127.0.0.1:{dead}"
caddy_admin = "http://127.0.0.1:{dead}"
quadlet_dir = "{q}"
manifest = "{m}"
"#,
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
    let port = free_port()?;
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
