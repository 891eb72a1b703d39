//! A rolling deploy over 3 hosts beside 3 single-host deploys run one after another (issue 14,
//! "Performance": the roll's overhead within 1.2x; 0 failed requests during the roll and
//! during a host cut).
//!
//! The hosts are the harness `codeb_testbed::netns` (shared with
//! tests/integration/scale_hosts.rs): three network namespaces on a bridge (10.203.N.0/24),
//! each running `codeb-daemon agent`, its own Caddy front and real podman containers with its
//! own container store; the control plane (`codeb-daemon serve`) with its Caddy as the
//! balancer in front.
//!
//! Interleaved `runs` times: (a) one rolling deploy through the control plane
//! (`POST /api/v1/projects/<p>/deploy`, the path `we deploy` takes: tag resolution, drain, the
//! agent's blue-green deploy, a probe from the control plane, back into the balancer, host after
//! host), while a bounded load loop through the balancer counts failed requests; (b) the
//! other of two equivalent releases (same binary, different `VERSION`) deployed on each host in
//! turn through its agent directly (`POST /agent/v1/deploy`, the same engine and the same
//! drain/health settings), so that every deploy is a real switch. Then host 2 is cut off
//! (`ip link set down`) under load and brought back: printed are the failed requests, how
//! soon after the cut the balancer stopped sending to the host (the start of the last request
//! that waited at least the dial timeout) and the requests in flight there that were retried.
//!
//! Only addresses on the bench's own bridge and loopback are targeted; every loop is bounded.
//! Everything (namespaces, links, processes, containers, images, temp dirs) is removed on drop,
//! also when the bench fails or a testbed helper panics (`run` catches the unwind).

use std::time::{Duration, Instant};

use codeb_testbed::netns::{
    ControlPlane, DRAIN_MS, HEALTH_DEADLINE_MS, HEALTH_INTERVAL_MS, Hosts, Load, NetHost,
    SUCCESSES, free_production_port, scrubbed,
};
use codeb_testbed::{
    Caddy, CaddyBuild, Podman, Registry, ScratchDir, build_sample_image, http_get, http_request,
    push_image,
};
use serde_json::{Value, json};

use crate::{Stats, bin, ms, stats};

/// The balancer's active health check interval and timeout and its dial timeout
/// (`codeb_deploy::BalancerPolicy::new`): a request sent to a cut-off host waits at least the
/// dial timeout before it is retried elsewhere.
const LB_INTERVAL: Duration = Duration::from_secs(1);
const LB_HEALTH_TIMEOUT: Duration = Duration::from_millis(800);
const LB_DIAL_TIMEOUT: Duration = Duration::from_millis(500);

/// Images this bench made in the machine's store; removed on drop (after the lab's containers).
struct Images {
    podman: Podman,
    names: Vec<String>,
}

impl Drop for Images {
    fn drop(&mut self) {
        for n in self.names.iter().rev() {
            let _ = self.podman.run(&["rmi", "-f", n]);
        }
    }
}

/// A deploy of `image` through the control plane, timed from the request to the job's end.
fn timed_deploy(cp: &ControlPlane, project: &str, image: &str) -> Result<Duration, String> {
    let start = Instant::now();
    let j = cp.deploy(project, image)?;
    if j["state"] == "done" {
        Ok(start.elapsed())
    } else {
        Err(format!("the roll to {image} failed: {j}\n{}", cp.log()))
    }
}

pub fn run(runs: usize) -> Result<(), String> {
    let runs = runs.clamp(1, 20);
    // The testbed helpers panic on a broken machine: turn that into an error (the guards
    // have cleaned up while unwinding).
    match std::panic::catch_unwind(|| measure(runs)) {
        Ok(r) => r,
        Err(p) => Err(p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "the roll bench panicked".into())),
    }
}

fn measure(runs: usize) -> Result<(), String> {
    let daemon = bin("codeb-daemon")?;
    let we = bin("we")?;
    let pid = std::process::id();
    let podman = Podman::new();

    // Two equivalent releases, pushed and pulled into the machine's store.
    let registry = Registry::start();
    let repo = registry.image(&format!("codeb-bench/roll-{pid}"));
    let mut images = Images {
        podman: podman.clone(),
        names: Vec::new(),
    };
    let mut digests = Vec::new();
    for tag in ["v1", "v2"] {
        let local = format!("localhost/codeb-bench/roll-{pid}:{tag}");
        build_sample_image(&podman, &local, &[("VERSION", tag)])?;
        images.names.push(local.clone());
        let dest = format!("{repo}:{tag}");
        let d = push_image(&podman, &registry, &local, &dest)?;
        let by_digest = format!("{repo}@{d}");
        podman.run(&["pull", "--quiet", "--tls-verify=false", &by_digest])?;
        images.names.push(by_digest);
        digests.push(d);
    }

    let mut lab = Hosts::new("rb", 203, 3, &podman)?;
    let scratch = ScratchDir::new("bench-roll-cp");
    let dir = scratch.path().to_owned();
    let public = free_production_port()?;
    let project = format!("roll{pid}");

    // The control plane, its Caddy as the balancer; the hosts' agents with their tokens.
    let balancer = Caddy::start_build(CaddyBuild::Debian);
    let cp = ControlPlane::start(
        &daemon,
        &dir,
        &balancer.admin_url(),
        &project,
        public,
        &podman,
    )?;
    lab.start_agents(&daemon, &cp.tokens_dir())
        .map_err(|e| format!("{e}\n{}", cp.log()))?;

    // The project, the hosts (`we scale app --add`), the first roll (not timed).
    let (s, v) = cp.api(
        "POST",
        "/api/v1/projects",
        Some(
            &json!({"name": project, "type": "node", "repository": "acme/roll",
            "image": repo, "container_port": 3000, "health_path": "/api/health",
            "environments": [{"name": "production"}]}),
        ),
    )?;
    if !(200..300).contains(&s) {
        return Err(format!("create the project: {s} {v}"));
    }
    for h in &lab.hosts {
        let mut add = scrubbed(&we);
        add.args([
            "scale",
            "app",
            "--add",
            &h.name,
            "--agent-url",
            &h.agent_url(),
        ]);
        cp.we_env(&mut add, &cp.admin);
        let out = add
            .output()
            .map_err(|e| format!("we scale app --add: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "we scale app --add {}: {}{}",
                h.name,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    timed_deploy(&cp, &project, &format!("{repo}:v1"))?;
    let lb = format!("http://127.0.0.1:{public}/");
    match http_get(&lb, Duration::from_secs(5)) {
        Ok((200, body)) if body.contains("v1") => {}
        other => {
            return Err(format!(
                "through the balancer after the first roll: {other:?}"
            ));
        }
    }

    // The single-host deploy: the body the roll sends each agent, pinned to the digest.
    let single = |h: &NetHost, digest: &str| -> Result<Duration, String> {
        let body = json!({
            "project": project, "environment": "production",
            "image": format!("{repo}@{digest}"), "public_port": public,
            "container_port": 3000, "health_path": "/api/health", "sha": "",
            "actor": "bench", "drain_ms": DRAIN_MS, "health_deadline_ms": HEALTH_DEADLINE_MS,
            "health_interval_ms": HEALTH_INTERVAL_MS, "successes": SUCCESSES,
        })
        .to_string();
        let start = Instant::now();
        let (s, text) = http_request(
            "POST",
            &format!("{}/agent/v1/deploy", h.agent_url()),
            &[
                ("authorization", &format!("Bearer {}", h.token)),
                ("content-type", "application/json"),
            ],
            body.as_bytes(),
            Duration::from_secs(900),
        )?;
        let took = start.elapsed();
        let answer: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if s != 200 || answer["outcome"] != "deployed" {
            return Err(format!(
                "single deploy on {}: {s} {text}\n{}",
                h.name,
                h.log("agent.log")
            ));
        }
        Ok(took)
    };

    println!(
        "\n## Rolling deploy over 3 hosts vs 3 single-host deploys one after another (runs: {runs}, interleaved)\n"
    );
    let (mut rolls, mut singles) = (Vec::new(), Vec::new());
    let (mut roll_requests, mut roll_failed, mut roll_kept) = (0u64, 0u64, Vec::new());
    for i in 0..runs {
        // (a) the roll v1 -> v2 under load through the balancer.
        let load = Load::start(&lb, 1);
        load.wait(20)?;
        let took = timed_deploy(&cp, &project, &format!("{repo}:v2"))?;
        load.wait(20)?;
        let report = load.finish();
        let (n, failed) = (report.requests, report.failed);
        roll_requests += n;
        roll_failed += failed;
        roll_kept.extend(report.failures.into_iter().take(5));
        rolls.push(took);
        // (b) v2 -> v1 on each host in turn, through its agent.
        let mut total = Duration::ZERO;
        let mut each = Vec::new();
        for h in &lab.hosts {
            let t = single(h, &digests[0])?;
            each.push(ms(t));
            total += t;
        }
        singles.push(total);
        eprintln!(
            "run {}: roll {} ({n} requests, {failed} failed); singles {} ({})",
            i + 1,
            ms(took),
            ms(total),
            each.join(" + ")
        );
    }

    // Host 2 cut off under load (three workers: one stuck on the cut host does not hide the
    // others), then back.
    let h2 = &lab.hosts[1];
    let up2 = format!("{}:{public}", h2.address);
    let seen_up = cp.wait_balancer(&up2, true);
    let load = Load::start(&lb, 3);
    load.wait(50)?;
    h2.set_link(false)?;
    let cut = Instant::now();
    let marked_down = cp.wait_balancer(&up2, false);
    let to_down = cut.elapsed();
    load.wait(200)?;
    let back = Instant::now();
    h2.set_link(true)?;
    let marked_up = cp.wait_balancer(&up2, true);
    load.wait(50)?;
    let cut_report = load.finish();
    let figures = cut_report.after_cut(cut, back, LB_DIAL_TIMEOUT - Duration::from_millis(50));
    let (cut_requests, cut_failed) = (cut_report.requests, cut_report.failed);
    let cut_kept: Vec<String> = cut_report.failures.into_iter().take(5).collect();

    let (r, s) = (stats(rolls.clone()), stats(singles.clone()));
    let ratio = r.median.as_secs_f64() / s.median.as_secs_f64();
    let all = |v: &[Duration]| v.iter().map(|d| ms(*d)).collect::<Vec<_>>().join(", ");
    println!("| what | median | p90 | all | vs peer |\n|---|---|---|---|---|");
    let line = |name: &str, st: &Stats, v: &[Duration], vs: &str| {
        println!(
            "| {name} | {} | {} | {} | {vs} |",
            ms(st.median),
            ms(st.p90),
            all(v)
        );
    };
    line(
        "3 single-host deploys one after another (agent API)",
        &s,
        &singles,
        "1.00x (peer)",
    );
    line(
        "rolling deploy over 3 hosts (control plane)",
        &r,
        &rolls,
        &format!("{ratio:.2}x"),
    );
    println!(
        "\nroll / 3 singles: {ratio:.2}x (target: within 1.2x: {})",
        if ratio <= 1.2 { "met" } else { "NOT met" }
    );
    println!(
        "\n| load through the balancer | requests | failed (target 0) |\n|---|---|---|\n| during the rolls | {roll_requests} | {roll_failed} |\n| host 2 cut off (`ip link set down`) and back | {cut_requests} | {cut_failed} |"
    );
    println!(
        "\nhost cut: the balancer stopped sending to h2 {} (bound: health interval {} + check timeout {} + 3 s); {} request(s) in flight there retried elsewhere, the slowest {}",
        figures.stopped_sending_after.map_or_else(
            || "before any request was slow".to_owned(),
            |d| format!("{} after the cut", ms(d))
        ),
        ms(LB_INTERVAL),
        ms(LB_HEALTH_TIMEOUT),
        figures.slow,
        ms(figures.slowest)
    );
    println!(
        "host cut: balancer saw h2 healthy before: {seen_up}; marked down: {}; back up after the link returned: {marked_up}",
        if marked_down {
            format!(
                "yes, {:.1} s after the cut (its health gauge lags up to 10 s)",
                to_down.as_secs_f64()
            )
        } else {
            "NOT within 30 s".into()
        }
    );
    println!(
        "failed requests: {} (target 0: {})",
        roll_failed + cut_failed,
        if roll_failed + cut_failed == 0 {
            "met"
        } else {
            "NOT met"
        }
    );
    for f in roll_kept.iter().chain(&cut_kept) {
        println!("  failure: {f}");
    }
    drop(cp);
    drop(lab);
    drop(balancer);
    drop(images);
    Ok(())
}
