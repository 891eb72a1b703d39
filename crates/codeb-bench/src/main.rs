//! `codeb-bench`: measures codeb's binaries beside named peers in the same run and prints
//! the figures and ratios. Wall-clock numbers on a shared machine are noisy, so every pair
//! is interleaved (A, B, A, B, ...) and medians are compared; nothing here asserts a time.
//!
//! Usage: `codeb-bench [foundation|deploy|preview|workflows|webhook|init|we|guest|backup|domain|roll]... [--runs N]`
//! (scripts/bench builds release binaries first; no name runs them all but `guest`, which
//! boots the QEMU guest of scripts/vm, and `backup`, `domain` and `roll` (three network-namespace
//! hosts, root), which run only when named).

#![allow(clippy::print_stdout, clippy::print_stderr)] // a benchmark's job is to print figures

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

mod backup;
mod deploy;
mod domain;
mod guest;
mod provision;
mod roll;
mod we;
mod webhook;
mod workflows;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runs_arg: Option<usize> = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok());
    let runs = runs_arg.unwrap_or(200);
    let which: Vec<&str> = args
        .iter()
        .filter(|a| !a.starts_with("--") && a.parse::<usize>().is_err())
        .map(String::as_str)
        .collect();
    let all = which.is_empty();
    machine();
    if (all || which.contains(&"foundation"))
        && let Err(e) = foundation(runs)
    {
        eprintln!("codeb-bench: {e}");
        return ExitCode::FAILURE;
    }
    if (all || which.contains(&"deploy"))
        && let Err(e) = deploy::deploy(runs)
    {
        eprintln!("codeb-bench: {e}");
        return ExitCode::FAILURE;
    }
    if (all || which.contains(&"preview"))
        && let Err(e) = deploy::preview(runs)
    {
        eprintln!("codeb-bench: {e}");
        return ExitCode::FAILURE;
    }
    // Starts a PostgreSQL cluster and restores it several times (minutes): only when named.
    if which.contains(&"backup")
        && let Err(e) = backup::run(runs)
    {
        eprintln!("codeb-bench: {e}");
        return ExitCode::FAILURE;
    }
    // The guest boots a VM (minutes under emulation): only when named.
    if which.contains(&"guest")
        && let Err(e) = guest::run(runs)
    {
        eprintln!("codeb-bench: {e}");
        return ExitCode::FAILURE;
    }
    if (all || which.contains(&"workflows"))
        && let Err(e) = workflows::run(runs)
    {
        eprintln!("codeb-bench: {e}");
        return ExitCode::FAILURE;
    }
    if (all || which.contains(&"webhook"))
        && let Err(e) = webhook::webhook(runs)
    {
        eprintln!("codeb-bench: {e}");
        return ExitCode::FAILURE;
    }
    if (all || which.contains(&"init"))
        && let Err(e) = provision::run(runs)
    {
        eprintln!("codeb-bench: {e}");
        return ExitCode::FAILURE;
    }
    // Only when named: PowerDNS, Caddy and the control plane.
    if which.contains(&"domain")
        && let Err(e) = domain::run(runs)
    {
        eprintln!("codeb-bench: {e}");
        return ExitCode::FAILURE;
    }
    // Only when named: it needs the control plane's /api/v1, which is not built yet.
    if (all || which.contains(&"we"))
        && let Err(e) = we::run(runs)
    {
        eprintln!("codeb-bench: {e}");
        return ExitCode::FAILURE;
    }
    // Only when named: three network-namespace hosts (root), the control plane and its balancer.
    if which.contains(&"roll")
        && let Err(e) = roll::run(runs_arg.unwrap_or(3))
    {
        eprintln!("codeb-bench: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn machine() {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_default();
    println!("machine: {cores} cores, {cpu}, Linux {}", kernel.trim());
}

/// The directory of this benchmark's own binary: the sibling codeb binaries live there.
fn bin(name: &str) -> Result<PathBuf, String> {
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

fn time_once(cmd: &mut Command) -> Result<Duration, String> {
    let start = Instant::now();
    let status = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    let took = start.elapsed();
    if !status.success() {
        return Err(format!("{cmd:?} exited with {status}"));
    }
    Ok(took)
}

struct Stats {
    median: Duration,
    p90: Duration,
}

fn stats(mut v: Vec<Duration>) -> Stats {
    v.sort();
    let at = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    Stats {
        median: at(0.5),
        p90: at(0.9),
    }
}

/// Runs `a` and `b` alternately `runs` times each; returns their stats.
fn pair(
    runs: usize,
    a: &mut dyn FnMut() -> Command,
    b: &mut dyn FnMut() -> Command,
) -> Result<(Stats, Stats), String> {
    // Warm up caches (page cache, dynamic loader) before measuring.
    for _ in 0..5 {
        time_once(&mut a())?;
        time_once(&mut b())?;
    }
    let (mut ta, mut tb) = (Vec::with_capacity(runs), Vec::with_capacity(runs));
    for _ in 0..runs {
        ta.push(time_once(&mut a())?);
        tb.push(time_once(&mut b())?);
    }
    Ok((stats(ta), stats(tb)))
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn row(name: &str, s: &Stats, peer: Option<&Stats>) {
    let ratio = peer
        .map(|p| format!("{:.2}x", s.median.as_secs_f64() / p.median.as_secs_f64()))
        .unwrap_or_else(|| "1.00x (peer)".into());
    println!("| {name} | {} | {} | {ratio} |", ms(s.median), ms(s.p90));
}

/// A valid manifest with `n` projects on this host, one port each: production ports while
/// that range lasts, then staging, then previews (1,000 projects need 1,000 ports and the
/// production and staging ranges hold 500 each). Ports something on this machine listens on,
/// and the reserved ones, are skipped, as the allocator would.
fn big_manifest(n: usize) -> String {
    let free = |p: &u16| {
        ![3000, 3102, 3103, 5432].contains(p) && TcpListener::bind(("0.0.0.0", *p)).is_ok()
    };
    let mut prod = (4000..=4499u16).filter(free);
    let mut staging = (4500..=4999u16).filter(free);
    let mut preview = (5000..=5999u16).filter(free);
    let mut projects =
        String::from("version: 1\nreserved:\n  - {port: 3000, name: nextjs-default}\nprojects:\n");
    let mut previews = String::from("previews:\n");
    for i in 0..n {
        if let Some(p) = prod.next() {
            projects.push_str(&format!("  app{i}:\n    production: {{port: {p}}}\n"));
        } else if let Some(p) = staging.next() {
            projects.push_str(&format!("  app{i}:\n    staging: {{port: {p}}}\n"));
        } else if let Some(p) = preview.next() {
            projects.push_str(&format!("  app{i}: {{}}\n"));
            previews.push_str(&format!(
                "  app{i}-pr-1: {{project: app{i}, pr: 1, port: {p}}}\n"
            ));
        }
    }
    projects + &previews
}

fn foundation(runs: usize) -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("codeb-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let manifest = dir.join("port-manifest.yaml");
    let text = big_manifest(1000);
    std::fs::write(&manifest, &text).map_err(|e| e.to_string())?;
    let pv = bin("codeb-port-validate")?;
    let hc = bin("codeb-healthcheck")?;

    println!(
        "\n## codeb-port-validate --all, 1,000-project manifest ({} lines, {} KiB; {runs} runs each, interleaved)\n",
        text.lines().count(),
        text.len() / 1024
    );
    println!("| command | median | p90 | vs peer |\n|---|---|---|---|");
    let (pvs, truestats) = pair(
        runs,
        &mut || {
            let mut c = Command::new(&pv);
            c.arg("--manifest").arg(&manifest).arg("--all");
            c
        },
        &mut || Command::new("true"),
    )?;
    row("`true` (process floor)", &truestats, None);
    row(
        "codeb-port-validate --all (host check on)",
        &pvs,
        Some(&truestats),
    );
    println!(
        "\nport-validate over the process floor: {} (target: median under 5 ms: {})",
        ms(pvs.median.saturating_sub(truestats.median)),
        if pvs.median < Duration::from_millis(5) {
            "met"
        } else {
            "NOT met"
        }
    );

    let server = HealthServer::start()?;
    let url = format!("http://127.0.0.1:{}/api/health", server.port);
    println!("\n## One healthy probe against a local server ({runs} runs each, interleaved)\n");
    println!("| command | median | p90 | vs peer |\n|---|---|---|---|");
    let (hcs, curls) = pair(
        runs,
        &mut || {
            let mut c = Command::new(&hc);
            c.args(["--url", &url, "--deadline", "5s"]);
            c
        },
        &mut || {
            let mut c = Command::new("curl");
            c.args(["-sf", "-o", "/dev/null", &url]);
            c
        },
    )?;
    row("`curl -sf`", &curls, None);
    row("codeb-healthcheck", &hcs, Some(&curls));
    let ratio = hcs.median.as_secs_f64() / curls.median.as_secs_f64();
    println!(
        "\nhealthcheck / curl: {ratio:.2}x (target: within 1.5x: {})",
        if ratio <= 1.5 { "met" } else { "NOT met" }
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// A minimal HTTP server answering the health contract, on its own thread.
struct HealthServer {
    port: u16,
}

impl HealthServer {
    fn start() -> Result<Self, String> {
        let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let port = l.local_addr().map_err(|e| e.to_string())?.port();
        std::thread::spawn(move || {
            for mut s in l.incoming().flatten() {
                let mut r = BufReader::new(match s.try_clone() {
                    Ok(c) => c,
                    Err(_) => continue,
                });
                let mut line = String::new();
                while r.read_line(&mut line).is_ok_and(|n| n > 0) {
                    if line == "\r\n" {
                        break;
                    }
                    line.clear();
                }
                let body = r#"{"status":"ok","timestamp":"0","uptime":1}"#;
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Ok(Self { port })
    }
}
