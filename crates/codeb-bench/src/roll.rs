//! A rolling deploy over 3 hosts beside 3 single-host deploys run one after another (issue 14,
//! "Performance": the roll's overhead within 1.2x; 0 failed requests during the roll and
//! during a host cut).
//!
//! The hosts are set up as in tests/integration/scale_hosts.rs: three network namespaces on a
//! bridge (10.203.N.0/24), each running `codeb-daemon agent`, its own Caddy front and real
//! podman containers with its own container store (images read-only from the machine's store,
//! as if each host had pulled them); the control plane (`codeb-daemon serve`) with its Caddy as
//! the balancer in front.
//!
//! Interleaved `runs` times: (a) one rolling deploy through the control plane
//! (`POST /api/v1/projects/<p>/deploy`, the path `we deploy` takes: tag resolution, drain, the
//! agent's blue-green deploy, a probe from the control plane, back into the balancer, host after
//! host), while a bounded load loop through the balancer counts failed requests; (b) the
//! other of two equivalent releases (same binary, different `VERSION`) deployed on each host in
//! turn through its agent directly (`POST /agent/v1/deploy`, the same engine and the same
//! drain/health settings), so that every deploy is a real switch. Then host 2 is cut off
//! (`ip link set down`) under load and brought back.
//!
//! Only addresses on the bench's own bridge and loopback are targeted; every loop is bounded.
//! Everything (namespaces, links, processes, containers, images, temp dirs) is removed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use codeb_testbed::{
    Caddy, CaddyBuild, Podman, Registry, ScratchDir, build_sample_image, free_port, http_get,
    http_request, push_image, wait_http, wait_http_until,
};
use serde_json::{Value, json};

use crate::{Stats, bin, ms, stats};

const DRAIN_MS: u64 = 1000;
const HEALTH_INTERVAL_MS: u64 = 200;
const HEALTH_DEADLINE_MS: u64 = 8000;
/// The control plane's default `health_successes`.
const SUCCESSES: u32 = 2;

fn sh(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{args:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn kill(child: Option<Child>) {
    if let Some(mut c) = child {
        let _ = c.kill();
        let _ = c.wait();
    }
}

struct NetHost {
    name: String,
    ns: String,
    veth: String,
    address: String,
    dir: PathBuf,
    caddy: Option<Child>,
    agent: Option<Child>,
    token: String,
}

impl NetHost {
    /// A command run inside the host's network namespace (the machine's mounts: `ip netns
    /// exec` would remount /sys and hide the cgroup mounts from runc).
    fn cmd(&self, program: &Path) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}", self.ns)).arg(program);
        c
    }

    fn storage_conf(&self) -> PathBuf {
        self.dir.join("storage.conf")
    }

    fn podman(&self, podman: &Podman, args: &[&str]) -> Result<String, String> {
        let mut c = self.cmd(Path::new("podman"));
        podman.configure(&mut c);
        c.env("CONTAINERS_STORAGE_CONF", self.storage_conf());
        let out = c.args(args).output().map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    fn agent_url(&self) -> String {
        format!("http://{}:7070", self.address)
    }

    fn log(&self, file: &str) -> String {
        std::fs::read_to_string(self.dir.join(file)).unwrap_or_default()
    }
}

/// The bridge, the namespaces and their veth pairs, each host's processes and containers;
/// all removed on drop.
struct Lab {
    bridge: String,
    hosts: Vec<NetHost>,
    podman: Podman,
}

impl Lab {
    fn new(n: usize, podman: &Podman) -> Result<Lab, String> {
        let pid = std::process::id();
        let subnet = 20 + pid % 200;
        let tag = pid % 100_000;
        let bridge = format!("rbb{tag}");
        let mut lab = Lab {
            bridge: String::new(),
            hosts: Vec::new(),
            podman: podman.clone(),
        };
        sh(&["ip", "link", "add", &bridge, "type", "bridge"])?;
        lab.bridge = bridge.clone();
        sh(&[
            "ip",
            "addr",
            "add",
            &format!("10.203.{subnet}.1/24"),
            "dev",
            &bridge,
        ])?;
        sh(&["ip", "link", "set", &bridge, "up"])?;
        for k in 1..=n {
            let ns = format!("rb{tag}-{k}");
            let veth = format!("rbv{tag}h{k}");
            let peer = format!("rbp{tag}h{k}");
            let address = format!("10.203.{subnet}.{}", k + 1);
            let dir = std::env::temp_dir().join(format!("codeb-bench-roll-{pid}-{k}"));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            sh(&["ip", "netns", "add", &ns])?;
            lab.hosts.push(NetHost {
                name: format!("h{k}"),
                ns: ns.clone(),
                veth: veth.clone(),
                address: address.clone(),
                dir: dir.clone(),
                caddy: None,
                agent: None,
                token: String::new(),
            });
            sh(&[
                "ip", "link", "add", &veth, "type", "veth", "peer", "name", &peer,
            ])?;
            sh(&["ip", "link", "set", &peer, "netns", &ns])?;
            sh(&["ip", "link", "set", &veth, "master", &bridge, "up"])?;
            let cidr = format!("{address}/24");
            for args in [
                ["ip", "addr", "add", cidr.as_str(), "dev", peer.as_str()].as_slice(),
                &["ip", "link", "set", peer.as_str(), "up"],
                &["ip", "link", "set", "lo", "up"],
            ] {
                let mut a = vec!["ip", "netns", "exec", ns.as_str()];
                a.extend_from_slice(args);
                sh(&a)?;
            }
            std::fs::write(
                dir.join("storage.conf"),
                format!(
                    "[storage]\ndriver = \"overlay\"\ngraphroot = \"{d}/storage\"\nrunroot = \"{d}/run\"\n[storage.options]\nadditionalimagestores = [\"/var/lib/containers/storage\"]\n",
                    d = dir.display()
                ),
            )
            .map_err(|e| e.to_string())?;
        }
        Ok(lab)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for h in &mut self.hosts {
            kill(h.agent.take());
            kill(h.caddy.take());
            if let Ok(ids) = h.podman(&self.podman, &["ps", "-aq"]) {
                for id in ids.split_whitespace() {
                    let _ = h.podman(&self.podman, &["rm", "-f", "-t", "0", id]);
                }
            }
            let _ = sh(&["ip", "link", "del", &h.veth]);
            let _ = sh(&["ip", "netns", "del", &h.ns]);
            let _ = sh(&[
                "umount",
                "-R",
                &h.dir.join("storage/overlay").display().to_string(),
            ]);
            let _ = std::fs::remove_dir_all(&h.dir);
        }
        if !self.bridge.is_empty() {
            let _ = sh(&["ip", "link", "del", &self.bridge]);
        }
    }
}

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

struct ControlPlane {
    child: Child,
    port: u16,
    dir: PathBuf,
    admin: String,
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ControlPlane {
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    fn api(&self, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, Value), String> {
        let url = format!("http://127.0.0.1:{}{path}", self.port);
        let body = body.map(Value::to_string).unwrap_or_default();
        let (s, text) = http_request(
            method,
            &url,
            &[
                ("authorization", &format!("Bearer {}", self.admin)),
                ("content-type", "application/json"),
            ],
            body.as_bytes(),
            Duration::from_secs(600),
        )?;
        Ok((s, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    /// A deploy of `image` through the control plane, timed from the request to the job's end.
    fn deploy(&self, project: &str, image: &str) -> Result<Duration, String> {
        let start = Instant::now();
        let (s, job) = self.api(
            "POST",
            &format!("/api/v1/projects/{project}/deploy"),
            Some(&json!({"environment": "production", "image": image})),
        )?;
        if s != 202 {
            return Err(format!("deploy {image}: {s} {job}"));
        }
        let id = job["id"].as_i64().ok_or(format!("no job id: {job}"))?;
        let deadline = start + Duration::from_secs(600);
        loop {
            let (_, j) = self.api("GET", &format!("/api/v1/jobs/{id}"), None)?;
            match j["state"].as_str() {
                Some("done") => return Ok(start.elapsed()),
                Some("failed") => {
                    return Err(format!("the roll to {image} failed: {j}\n{}", self.log()));
                }
                _ => {}
            }
            if Instant::now() > deadline {
                return Err(format!("job {id} did not end in 600 s: {j}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The balancer's view of `upstream`.
    fn balancer_healthy(&self, upstream: &str) -> Option<bool> {
        let (_, r) = self.api("GET", "/api/v1/scale/hosts", None).ok()?;
        r["balancers"]
            .as_array()?
            .iter()
            .flat_map(|b| b["upstreams"].as_array().cloned().unwrap_or_default())
            .find(|u| u["address"] == upstream)
            .and_then(|u| u["healthy"].as_bool())
    }

    /// Waits (bounded: 30 s) for the balancer to see `upstream` as `healthy`; whether it did.
    fn wait_balancer(&self, upstream: &str, healthy: bool) -> bool {
        for _ in 0..120 {
            if self.balancer_healthy(upstream) == Some(healthy) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        false
    }
}

/// GETs through the balancer until stopped (bounded in count and time): requests and
/// failures (the first few kept for the report).
struct Load {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<(u64, u64, Vec<String>)>>,
}

impl Load {
    fn start(url: String) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let (s2, d2) = (stop.clone(), done.clone());
        let thread = std::thread::spawn(move || {
            let (mut failed, mut kept) = (0u64, Vec::new());
            let started = Instant::now();
            for _ in 0..200_000 {
                if s2.load(Ordering::Relaxed) || started.elapsed() > Duration::from_secs(900) {
                    break;
                }
                let bad = match http_get(&url, Duration::from_secs(30)) {
                    Ok((200, _)) => None,
                    Ok((s, body)) => Some(format!("{s} {}", body.trim())),
                    Err(e) => Some(e),
                };
                if let Some(b) = bad {
                    failed += 1;
                    if kept.len() < 5 {
                        kept.push(b);
                    }
                }
                d2.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
            (d2.load(Ordering::Relaxed), failed, kept)
        });
        Load {
            stop,
            done,
            thread: Some(thread),
        }
    }

    /// Waits (bounded: 60 s) for `more` requests to complete.
    fn wait(&self, more: u64) -> Result<(), String> {
        let start = self.done.load(Ordering::Relaxed);
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.done.load(Ordering::Relaxed) < start + more {
            if Instant::now() > deadline {
                return Err("the load loop stalled".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    fn finish(mut self) -> (u64, u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().and_then(|t| t.join().ok()).unwrap_or((
            0,
            0,
            vec!["the load thread panicked".into()],
        ))
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn free_production_port() -> Result<u16, String> {
    let pid = u16::try_from(std::process::id() % 400).unwrap_or(0);
    (0..500u16)
        .map(|i| 4000 + (pid + i * 11) % 500)
        .find(|p| std::net::TcpListener::bind(("0.0.0.0", *p)).is_ok())
        .ok_or_else(|| "no free port in 4000-4499".into())
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

    let mut lab = Lab::new(3, &podman)?;
    let scratch = ScratchDir::new("bench-roll-cp");
    let dir = scratch.path().to_owned();
    let public = free_production_port()?;
    let project = format!("roll{pid}");

    // The control plane, its Caddy as the balancer.
    let balancer = Caddy::start_build(CaddyBuild::Debian);
    let port = free_port();
    std::fs::create_dir_all(dir.join("quadlet")).map_err(|e| e.to_string())?;
    std::fs::write(
        dir.join("port-manifest.yaml"),
        format!("version: 1\nprojects:\n  {project}:\n    production: {{port: {public}}}\n"),
    )
    .map_err(|e| e.to_string())?;
    let config = dir.join("daemon.toml");
    std::fs::write(
        &config,
        format!(
            r#"listen = "127.0.0.1:{port}"
state_dir = "{state}"
[previews]
github_api_url = "http://127.0.0.1:9"
caddy_admin = "{admin}"
quadlet_dir = "{q}"
manifest = "{m}"
[api]
drain = "{DRAIN_MS}ms"
health_interval = "{HEALTH_INTERVAL_MS}ms"
health_deadline = "{HEALTH_DEADLINE_MS}ms"
"#,
            state = dir.join("state").display(),
            admin = balancer.admin_url(),
            q = dir.join("quadlet").display(),
            m = dir.join("port-manifest.yaml").display()
        ),
    )
    .map_err(|e| e.to_string())?;
    let secret = ("CODEB_WEBHOOK_SECRET", "bench-roll-secret");
    let boot = Command::new(&daemon)
        .args(["bootstrap-admin", "--config"])
        .arg(&config)
        .env(secret.0, secret.1)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("bootstrap-admin: {e}"))?;
    if !boot.status.success() {
        return Err(format!(
            "bootstrap-admin: {}",
            String::from_utf8_lossy(&boot.stderr)
        ));
    }
    let mut serve = Command::new(&daemon);
    serve
        .args(["serve", "--config"])
        .arg(&config)
        .env(secret.0, secret.1)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("daemon.log")).map_err(|e| e.to_string())?);
    podman.configure(&mut serve);
    let cp = ControlPlane {
        child: serve
            .spawn()
            .map_err(|e| format!("codeb-daemon serve: {e}"))?,
        port,
        dir: dir.clone(),
        admin: String::from_utf8_lossy(&boot.stdout).trim().to_owned(),
    };
    wait_http(
        &format!("http://127.0.0.1:{port}/healthz"),
        Duration::from_secs(20),
    )
    .map_err(|e| format!("control plane: {e}: {}", cp.log()))?;

    // Each host: a token minted on the control plane, its hash given to the agent; Caddy and
    // the agent inside the namespace.
    std::fs::create_dir_all(dir.join("state/hosts")).map_err(|e| e.to_string())?;
    for h in &mut lab.hosts {
        let token_file = dir.join(format!("state/hosts/{}.token", h.name));
        let minted = Command::new(&daemon)
            .args(["agent-token", "--out"])
            .arg(&token_file)
            .output()
            .map_err(|e| format!("agent-token: {e}"))?;
        let hash = String::from_utf8_lossy(&minted.stdout).trim().to_owned();
        if !minted.status.success() || hash.len() != 64 {
            return Err(format!(
                "agent-token: {}",
                String::from_utf8_lossy(&minted.stderr)
            ));
        }
        h.token = std::fs::read_to_string(&token_file)
            .map_err(|e| e.to_string())?
            .trim()
            .to_owned();
        std::fs::write(h.dir.join("token.sha256"), &hash).map_err(|e| e.to_string())?;
        std::fs::write(
            h.dir.join("caddy.json"),
            r#"{"admin":{"listen":"127.0.0.1:2019"}}"#,
        )
        .map_err(|e| e.to_string())?;
        let log = |f: &str| std::fs::File::create(h.dir.join(f)).map_err(|e| e.to_string());
        let mut c = h.cmd(CaddyBuild::Debian.checked_binary());
        c.args(["run", "--config"])
            .arg(h.dir.join("caddy.json"))
            .env("HOME", &h.dir)
            .env("XDG_DATA_HOME", h.dir.join("caddy-data"))
            .env("XDG_CONFIG_HOME", h.dir.join("caddy-config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log("caddy.log")?);
        h.caddy = Some(c.spawn().map_err(|e| format!("{} caddy: {e}", h.name))?);
        let mut a = h.cmd(&daemon);
        a.args(["agent", "--host", &h.name, "--listen"])
            .arg(format!("{}:7070", h.address))
            .arg("--token-sha256-file")
            .arg(h.dir.join("token.sha256"))
            .arg("--state-dir")
            .arg(h.dir.join("agent"))
            .args([
                "--caddy-admin",
                "http://127.0.0.1:2019",
                "--runtime",
                "podman",
            ])
            .env("CONTAINERS_STORAGE_CONF", h.storage_conf())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log("agent.log")?);
        podman.configure(&mut a);
        h.agent = Some(a.spawn().map_err(|e| format!("{} agent: {e}", h.name))?);
    }
    for h in &lab.hosts {
        wait_http_until(
            &format!("{}/agent/v1/ping", h.agent_url()),
            Duration::from_secs(20),
            |s, _| s == 401,
        )
        .map_err(|e| format!("agent {}: {e}: {}", h.name, h.log("agent.log")))?;
    }

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
    let home = dir.join("home");
    for h in &lab.hosts {
        let out = Command::new(&we)
            .args([
                "scale",
                "app",
                "--add",
                &h.name,
                "--agent-url",
                &h.agent_url(),
            ])
            .env("XDG_CONFIG_HOME", home.join("config"))
            .env("HOME", &home)
            .env("CODEB_SERVER", format!("http://127.0.0.1:{port}"))
            .env("CODEB_TOKEN", &cp.admin)
            .stdin(Stdio::null())
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
    cp.deploy(&project, &format!("{repo}:v1"))?;
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
        let load = Load::start(lb.clone());
        load.wait(20)?;
        let took = cp.deploy(&project, &format!("{repo}:v2"))?;
        load.wait(20)?;
        let (n, failed, kept) = load.finish();
        roll_requests += n;
        roll_failed += failed;
        roll_kept.extend(kept);
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

    // Host 2 cut off under load, then back.
    let h2 = &lab.hosts[1];
    let up2 = format!("{}:{public}", h2.address);
    let seen_up = cp.wait_balancer(&up2, true);
    let load = Load::start(lb.clone());
    load.wait(50)?;
    sh(&["ip", "link", "set", &h2.veth, "down"])?;
    let cut = Instant::now();
    let marked_down = cp.wait_balancer(&up2, false);
    let to_down = cut.elapsed();
    load.wait(200)?;
    sh(&["ip", "link", "set", &h2.veth, "up"])?;
    let marked_up = cp.wait_balancer(&up2, true);
    load.wait(50)?;
    let (cut_requests, cut_failed, cut_kept) = load.finish();

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
        "\nhost cut: balancer saw h2 healthy before: {seen_up}; marked down: {}; back up after the link returned: {marked_up}",
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
