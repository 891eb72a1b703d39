//! Phase 1 of the scale-out (issue 14) with real hosts: three network namespaces on a bridge
//! (10.201.N.0/24), each running `codeb-daemon agent`, its own Caddy front and real podman
//! containers (each host with its own container store; images come read-only from the
//! machine's store, as if each host had pulled them), and the control plane's Caddy as the
//! balancer in front. A bounded load loop through the balancer counts failed requests during
//! a rolling deploy, while a host is cut off (`ip link set down`), and during a roll that
//! fails on host 2.
//!
//! Podman runs in a namespace through `nsenter --net` rather than `ip netns exec`: the latter
//! remounts /sys, which hides the cgroup mounts from runc.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::infra::{
    Caddy, CaddyBuild, Podman, Registry, ScratchDir, http_get, push_image, sample_local_images,
};
use crate::util::{bin, codeb, run};

fn sh(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{args:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn must(args: &[&str]) -> String {
    sh(args).unwrap_or_else(|e| panic!("{e}"))
}

/// A bridge and namespaces with veth pairs; everything removed on drop.
struct Lab {
    bridge: String,
    subnet: u8,
    hosts: Vec<NetHost>,
}

struct NetHost {
    name: String,
    ns: String,
    veth: String,
    address: String,
    dir: PathBuf,
    caddy: Option<Child>,
    agent: Option<Child>,
}

impl NetHost {
    /// A command run inside the host's network namespace (the machine's mounts).
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

    fn agent_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }
}

impl Lab {
    fn new(n: usize) -> Lab {
        let pid = std::process::id();
        // 10.201.20-219.0/24: one subnet per test process.
        let subnet = u8::try_from(20 + pid % 200).unwrap_or(20);
        let tag = pid % 100_000;
        let bridge = format!("cbr{tag}");
        let mut lab = Lab {
            bridge: bridge.clone(),
            subnet,
            hosts: Vec::new(),
        };
        must(&["ip", "link", "add", &bridge, "type", "bridge"]);
        must(&[
            "ip",
            "addr",
            "add",
            &format!("10.201.{subnet}.1/24"),
            "dev",
            &bridge,
        ]);
        must(&["ip", "link", "set", &bridge, "up"]);
        for k in 1..=n {
            let ns = format!("cbh{tag}-{k}");
            let veth = format!("cbv{tag}h{k}");
            let peer = format!("cbp{tag}h{k}");
            let address = format!("10.201.{subnet}.{}", k + 1);
            let dir = std::env::temp_dir().join(format!("codeb-scale-host-{pid}-{k}"));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("host dir");
            lab.hosts.push(NetHost {
                name: format!("h{k}"),
                ns: ns.clone(),
                veth: veth.clone(),
                address: address.clone(),
                dir: dir.clone(),
                caddy: None,
                agent: None,
            });
            must(&["ip", "netns", "add", &ns]);
            must(&[
                "ip", "link", "add", &veth, "type", "veth", "peer", "name", &peer,
            ]);
            must(&["ip", "link", "set", &peer, "netns", &ns]);
            must(&["ip", "link", "set", &veth, "master", &bridge, "up"]);
            let cidr = format!("{address}/24");
            for args in [
                ["ip", "addr", "add", cidr.as_str(), "dev", peer.as_str()].as_slice(),
                &["ip", "link", "set", peer.as_str(), "up"],
                &["ip", "link", "set", "lo", "up"],
            ] {
                let mut a = vec!["ip", "netns", "exec", ns.as_str()];
                a.extend_from_slice(args);
                must(&a);
            }
            std::fs::write(
                dir.join("storage.conf"),
                format!(
                    "[storage]\ndriver = \"overlay\"\ngraphroot = \"{d}/storage\"\nrunroot = \"{d}/run\"\n[storage.options]\nadditionalimagestores = [\"/var/lib/containers/storage\"]\n",
                    d = dir.display()
                ),
            )
            .expect("storage.conf");
        }
        lab
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let podman = Podman::new();
        for h in &mut self.hosts {
            for child in [h.agent.take(), h.caddy.take()].into_iter().flatten() {
                let mut child = child;
                let _ = child.kill();
                let _ = child.wait();
            }
            if let Ok(names) = h.podman(&podman, &["ps", "-aq"]) {
                for id in names.split_whitespace() {
                    let _ = h.podman(&podman, &["rm", "-f", "-t", "0", id]);
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
        let _ = sh(&["ip", "link", "del", &self.bridge]);
    }
}

fn free_production_port() -> u16 {
    let pid = u16::try_from(std::process::id() % 400).unwrap_or(0);
    for i in 0..500u16 {
        let p = 4000 + (pid + i * 7) % 500;
        if std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
    panic!("no free port in 4000-4499");
}

/// `(status, JSON body)` of a control plane request.
fn api(port: u16, method: &str, path: &str, token: &str, body: Option<&Value>) -> (u16, Value) {
    let url = format!("http://127.0.0.1:{port}{path}");
    let body = body.map(Value::to_string).unwrap_or_default();
    let (s, text) = crate::infra::http_request(
        method,
        &url,
        &[
            ("authorization", &format!("Bearer {token}")),
            ("content-type", "application/json"),
        ],
        body.as_bytes(),
        Duration::from_secs(600),
    )
    .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    (s, serde_json::from_str(&text).unwrap_or(Value::Null))
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

    fn we(&self, token: &str) -> Command {
        let home = self.dir.join("home");
        let mut c = codeb("we");
        c.env("XDG_CONFIG_HOME", home.join("config"))
            .env("HOME", &home)
            .env("CODEB_SERVER", format!("http://127.0.0.1:{}", self.port))
            .env("CODEB_TOKEN", token);
        c
    }

    /// Queues a deploy of `image` and waits for its job to end; the job.
    fn deploy(&self, project: &str, image: &str) -> Value {
        let (s, job) = api(
            self.port,
            "POST",
            &format!("/api/v1/projects/{project}/deploy"),
            &self.admin,
            Some(&json!({"environment": "production", "image": image})),
        );
        assert_eq!(s, 202, "deploy: {job}");
        let id = job["id"].as_i64().expect("job id");
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let (_, j) = api(
                self.port,
                "GET",
                &format!("/api/v1/jobs/{id}"),
                &self.admin,
                None,
            );
            if matches!(j["state"].as_str(), Some("done" | "failed")) {
                return j;
            }
            assert!(Instant::now() < deadline, "job {id} did not end: {j}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// What a load loop saw: requests, failures, answers (see [`Load`]).
type LoadResult = (u64, Vec<String>, Vec<String>);

/// GETs through the balancer until stopped: counts requests and failures; the answers seen
/// (distinct, in order of first appearance) followed by the last answer.
struct Load {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<LoadResult>>,
    done: Arc<AtomicU64>,
}

impl Load {
    fn start(url: String) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let (s2, d2) = (stop.clone(), done.clone());
        let thread = std::thread::spawn(move || {
            let mut failures = Vec::new();
            let mut versions: Vec<String> = Vec::new();
            let mut last = String::new();
            let started = Instant::now();
            // Bounded in count and time.
            for _ in 0..200_000 {
                if s2.load(Ordering::Relaxed) || started.elapsed() > Duration::from_secs(900) {
                    break;
                }
                match http_get(&url, Duration::from_secs(30)) {
                    Ok((200, body)) => {
                        // Distinct answers in order of first appearance, then the last one.
                        if !versions.contains(&body) {
                            versions.push(body.clone());
                        }
                        last = body;
                    }
                    Ok((s, body)) => failures.push(format!("{s} {body}")),
                    Err(e) => failures.push(e),
                }
                d2.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
            versions.push(last);
            (d2.load(Ordering::Relaxed), failures, versions)
        });
        Load {
            stop,
            thread: Some(thread),
            done,
        }
    }

    fn count(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    fn finish(mut self) -> LoadResult {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .expect("thread")
            .join()
            .expect("load thread")
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

fn wait_for_load(load: &Load, more: u64) {
    let start = load.count();
    let deadline = Instant::now() + Duration::from_secs(60);
    while load.count() < start + more {
        assert!(Instant::now() < deadline, "the load loop stalled");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The balancer's view of `upstream` in `GET /api/v1/scale/hosts`.
fn balancer_healthy(cp: &ControlPlane, upstream: &str) -> Option<bool> {
    let (_, r) = api(cp.port, "GET", "/api/v1/scale/hosts", &cp.admin, None);
    r["balancers"]
        .as_array()?
        .iter()
        .flat_map(|b| b["upstreams"].as_array().cloned().unwrap_or_default())
        .find(|u| u["address"] == upstream)
        .and_then(|u| u["healthy"].as_bool())
}

fn wait_balancer(cp: &ControlPlane, upstream: &str, healthy: bool, what: &str) {
    // Bounded: 100 polls of 250 ms (the health interval is 1 s; Caddy refreshes the gauge
    // this reads every 10 s).
    for _ in 0..100 {
        if balancer_healthy(cp, upstream) == Some(healthy) {
            return;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("{what}: the balancer never saw {upstream} as healthy={healthy}");
}

/// Digests the hosts' agents report for `unit`, by host.
fn host_digests(cp: &ControlPlane, unit: &str) -> Vec<(String, Option<String>, bool)> {
    let (s, r) = api(cp.port, "GET", "/api/v1/scale/hosts", &cp.admin, None);
    assert_eq!(s, 200, "{r}");
    r["hosts"]
        .as_array()
        .expect("hosts")
        .iter()
        .map(|h| {
            let rel = h["releases"]
                .as_array()
                .and_then(|rs| rs.iter().find(|x| x["unit"] == unit).cloned());
            (
                h["host"].as_str().unwrap_or_default().to_owned(),
                rel.as_ref()
                    .and_then(|x| x["digest"].as_str().map(str::to_owned)),
                rel.is_some_and(|x| x["healthy"] == true),
            )
        })
        .collect()
}

#[test]
fn three_hosts_behind_the_balancer_roll_without_a_failed_request() {
    let podman = Podman::new();
    let images = sample_local_images(&podman);
    let registry = Registry::start();
    let pid = std::process::id();
    let project = format!("scale{pid}");
    let repo = registry.image(&format!("codeb-test/scale-{pid}"));
    let mut digests = Vec::new();
    for (i, tag) in ["v1", "v2"].iter().enumerate() {
        let dest = format!("{repo}:{tag}");
        let d = push_image(&podman, &registry, &images[i], &dest).expect("push");
        // The hosts read images from the machine's store (read-only), as if they had pulled.
        podman
            .run(&[
                "pull",
                "--quiet",
                "--tls-verify=false",
                &format!("{repo}@{d}"),
            ])
            .expect("pull");
        digests.push(d);
    }

    let mut lab = Lab::new(3);
    let scratch = ScratchDir::new("scale-cp");
    let dir = scratch.path().to_owned();
    let public = free_production_port();
    let unit = format!("{project}-production");

    // The control plane, its Caddy as the balancer.
    let balancer = Caddy::start_build(CaddyBuild::Debian);
    let port = crate::infra::free_port();
    std::fs::create_dir_all(dir.join("quadlet")).expect("quadlet");
    std::fs::write(
        dir.join("port-manifest.yaml"),
        format!("version: 1\nprojects:\n  {project}:\n    production: {{port: {public}}}\n"),
    )
    .expect("manifest");
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
drain = "1s"
health_interval = "200ms"
health_deadline = "8s"
"#,
            state = dir.join("state").display(),
            admin = balancer.admin_url(),
            q = dir.join("quadlet").display(),
            m = dir.join("port-manifest.yaml").display()
        ),
    )
    .expect("config");
    let boot = run(codeb("codeb-daemon")
        .args(["bootstrap-admin", "--config"])
        .arg(&config)
        .env("CODEB_WEBHOOK_SECRET", "scale-hosts-secret"));
    assert_eq!(boot.code, 0, "bootstrap-admin: {}", boot.all());
    let mut serve = codeb("codeb-daemon");
    serve
        .args(["serve", "--config"])
        .arg(&config)
        .env("CODEB_WEBHOOK_SECRET", "scale-hosts-secret")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("daemon.log")).expect("log"));
    podman.configure(&mut serve);
    let child = serve.spawn().expect("spawn the control plane");
    let cp = ControlPlane {
        child,
        port,
        dir: dir.clone(),
        admin: boot.stdout.trim().to_owned(),
    };
    crate::infra::wait_http(
        &format!("http://127.0.0.1:{port}/healthz"),
        Duration::from_secs(20),
    )
    .unwrap_or_else(|e| panic!("control plane: {e}: {}", cp.log()));

    // Each host: a token minted on the control plane, its hash given to the agent; Caddy and
    // the agent inside the namespace.
    std::fs::create_dir_all(dir.join("state/hosts")).expect("hosts dir");
    for h in &mut lab.hosts {
        let token_file = dir.join(format!("state/hosts/{}.token", h.name));
        let minted = run(codeb("codeb-daemon")
            .args(["agent-token", "--out"])
            .arg(&token_file));
        assert_eq!(minted.code, 0, "agent-token: {}", minted.all());
        let hash = minted.stdout.trim().to_owned();
        assert_eq!(hash.len(), 64, "{}", minted.all());
        let token = std::fs::read_to_string(&token_file).expect("token");
        assert!(
            !minted.all().contains(token.trim()),
            "the token is not printed"
        );
        std::fs::write(h.dir.join("token.sha256"), &hash).expect("hash");
        std::fs::write(
            h.dir.join("caddy.json"),
            r#"{"admin":{"listen":"127.0.0.1:2019"}}"#,
        )
        .expect("caddy.json");
        let mut c = h.cmd(CaddyBuild::Debian.binary());
        c.args(["run", "--config"])
            .arg(h.dir.join("caddy.json"))
            .env("HOME", &h.dir)
            .env("XDG_DATA_HOME", h.dir.join("caddy-data"))
            .env("XDG_CONFIG_HOME", h.dir.join("caddy-config"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(h.dir.join("caddy.log")).expect("log"));
        h.caddy = Some(c.spawn().expect("spawn the host's caddy"));
        let mut a = h.cmd(&bin("codeb-daemon"));
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
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(h.dir.join("agent.log")).expect("log"));
        podman.configure(&mut a);
        h.agent = Some(a.spawn().expect("spawn the agent"));
    }
    for h in &lab.hosts {
        let url = format!("http://{}:7070/agent/v1/ping", h.address);
        crate::infra::wait_http_until(&url, Duration::from_secs(20), |s, _| s == 401)
            .unwrap_or_else(|e| panic!("agent {}: {e}: {}", h.name, h.agent_log()));
    }

    // Users who may not add hosts, and the project.
    let mut others = Vec::new();
    for (name, role) in [("dev", "developer"), ("viewer", "viewer")] {
        let (s, v) = api(
            port,
            "POST",
            "/api/v1/team",
            &cp.admin,
            Some(&json!({"name": name, "role": role})),
        );
        assert!((200..300).contains(&s), "{name}: {s} {v}");
        others.push(v["token"]["token"].as_str().expect("token").to_owned());
    }
    let (s, v) = api(
        port,
        "POST",
        "/api/v1/projects",
        &cp.admin,
        Some(
            &json!({"name": project, "type": "node", "repository": "acme/scale",
            "image": repo, "container_port": 3000, "health_path": "/api/health",
            "environments": [{"name": "production"}], "owners": ["dev"]}),
        ),
    );
    assert!((200..300).contains(&s), "project: {s} {v}");
    let h1 = &lab.hosts[0];
    let agent_url = |h: &NetHost| format!("http://{}:7070", h.address);
    for t in &others {
        let r = run(cp.we(t).args([
            "scale",
            "app",
            "--add",
            &h1.name,
            "--agent-url",
            &agent_url(h1),
        ]));
        assert_eq!(r.code, 3, "a non-admin add is refused: {}", r.all());
        assert!(r.stderr.contains("scale.host.add"), "{}", r.all());
        let r = run(cp.we(t).args(["scale", "app", "--remove", &h1.name]));
        assert_eq!(r.code, 3, "a non-admin remove is refused: {}", r.all());
        assert!(r.stderr.contains("scale.host.remove"), "{}", r.all());
    }
    // A token file others can read is refused, naming the fix; nothing is registered.
    let t1 = dir.join("state/hosts/h1.token");
    std::fs::set_permissions(&t1, std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .expect("chmod");
    let r =
        run(cp
            .we(&cp.admin)
            .args(["scale", "app", "--add", "h1", "--agent-url", &agent_url(h1)]));
    assert_ne!(r.code, 0, "{}", r.all());
    assert!(r.stderr.contains("chmod 600"), "{}", r.all());
    std::fs::set_permissions(&t1, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    // An agent that is not there: a clear error, nothing registered.
    let r = run(cp.we(&cp.admin).args([
        "scale",
        "app",
        "--add",
        "h1",
        "--agent-url",
        &format!("http://10.201.{}.250:7070", lab.subnet),
    ]));
    assert_ne!(r.code, 0, "{}", r.all());
    assert!(r.stderr.contains("agent"), "{}", r.all());
    assert!(host_digests(&cp, &unit).is_empty(), "nothing registered");

    // Three hosts (no release yet: registered, nothing deployed), then the first roll.
    for h in &lab.hosts {
        let r = run(cp.we(&cp.admin).args([
            "scale",
            "app",
            "--add",
            &h.name,
            "--agent-url",
            &agent_url(h),
        ]));
        assert_eq!(r.code, 0, "add {}: {} {}", h.name, r.all(), h.agent_log());
    }
    let j = cp.deploy(&project, &format!("{repo}:v1"));
    assert_eq!(j["state"], "done", "first roll: {j}\n{}", cp.log());
    let lb = format!("http://127.0.0.1:{public}/");
    let (s, body) = http_get(&lb, Duration::from_secs(5)).expect("through the balancer");
    assert_eq!((s, body.as_str()), (200, "hello from v1"));
    for (h, d, healthy) in host_digests(&cp, &unit) {
        assert_eq!(d.as_deref(), Some(digests[0].as_str()), "{h}");
        assert!(healthy, "{h}");
    }

    // A rolling deploy under load: not one failed request.
    let load = Load::start(lb.clone());
    wait_for_load(&load, 50);
    let j = cp.deploy(&project, &format!("{repo}:v2"));
    assert_eq!(j["state"], "done", "second roll: {j}\n{}", cp.log());
    wait_for_load(&load, 50);
    let (n, failures, versions) = load.finish();
    eprintln!(
        "rolling deploy over 3 hosts: {n} requests, {} failed, answers {versions:?}",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {n} requests failed: {failures:?}",
        failures.len()
    );
    assert_eq!(
        versions.last().map(String::as_str),
        Some("hello from v2"),
        "{versions:?}"
    );
    for (h, d, healthy) in host_digests(&cp, &unit) {
        assert_eq!(d.as_deref(), Some(digests[1].as_str()), "{h}");
        assert!(healthy, "{h}");
    }

    // Host 2 cut off: the balancer's health checks take it out, requests keep succeeding.
    let h2 = &lab.hosts[1];
    let up2 = format!("{}:{public}", h2.address);
    wait_balancer(&cp, &up2, true, "before the cut");
    let load = Load::start(lb.clone());
    wait_for_load(&load, 50);
    must(&["ip", "link", "set", &h2.veth, "down"]);
    wait_balancer(&cp, &up2, false, "after the cut");
    wait_for_load(&load, 200);
    must(&["ip", "link", "set", &h2.veth, "up"]);
    wait_balancer(&cp, &up2, true, "after the link is back");
    wait_for_load(&load, 50);
    let (n, failures, _) = load.finish();
    eprintln!("host 2 cut off: {n} requests, {} failed", failures.len());
    assert!(
        failures.is_empty(),
        "{} of {n} requests failed during the cut: {failures:?}",
        failures.len()
    );

    // A release that cannot become healthy on host 2 (probes of its blue slot are dropped there): the
    // roll stops at host 2, host 1 goes back, and v2 serves everywhere.
    let blue = (u32::from(public) + 10000).to_string();
    let ns2 = h2.ns.clone();
    // The raw table sees the probe before podman's port mapping rewrites its destination.
    let rule = ["-p", "tcp", "--dport", blue.as_str(), "-j", "DROP"];
    let mut add = vec![
        "ip",
        "netns",
        "exec",
        ns2.as_str(),
        "iptables",
        "-t",
        "raw",
        "-I",
        "OUTPUT",
    ];
    add.extend(rule);
    must(&add);
    let load = Load::start(lb.clone());
    wait_for_load(&load, 50);
    let j = cp.deploy(&project, &format!("{repo}:v1"));
    let mut del = vec![
        "ip",
        "netns",
        "exec",
        ns2.as_str(),
        "iptables",
        "-t",
        "raw",
        "-D",
        "OUTPUT",
    ];
    del.extend(rule);
    must(&del);
    assert_eq!(j["state"], "failed", "the roll fails: {j}");
    let msg = j["message"].as_str().unwrap_or_default().to_owned();
    assert!(msg.contains("h2") && msg.contains("rolled back"), "{j}");
    wait_for_load(&load, 50);
    let (n, failures, versions) = load.finish();
    eprintln!(
        "roll failing on host 2: {n} requests, {} failed, answers {versions:?}",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {n} requests failed in the failed roll: {failures:?}",
        failures.len()
    );
    assert_eq!(
        versions.last().map(String::as_str),
        Some("hello from v2"),
        "{versions:?}"
    );
    for (h, d, healthy) in host_digests(&cp, &unit) {
        assert_eq!(d.as_deref(), Some(digests[1].as_str()), "{h} is back on v2");
        assert!(healthy, "{h}");
    }

    // we scale status shows the hosts, their releases and the balancer.
    let r = run(cp
        .we(&others[1])
        .args(["scale", "status", "--window", "1s"]));
    assert_eq!(r.code, 0, "{}", r.all());
    for needle in ["h1", "h2", "h3", &unit, &format!("balancer {unit}")] {
        assert!(r.stdout.contains(needle), "{needle}: {}", r.stdout);
    }

    // Removing host 3: drained out of the balancer first, then its release stopped.
    let h3 = &lab.hosts[2];
    let r = run(cp
        .we(&cp.admin)
        .args(["scale", "app", "--remove", &h3.name]));
    assert_eq!(r.code, 0, "{}", r.all());
    let drained = r.stdout.find("drained").expect("drained step");
    let stopped = r.stdout.find("stopped").expect("stopped step");
    assert!(drained < stopped, "{}", r.stdout);
    let (_, report) = api(port, "GET", "/api/v1/scale/hosts", &cp.admin, None);
    let ups: Vec<String> = report["balancers"][0]["upstreams"]
        .as_array()
        .expect("upstreams")
        .iter()
        .map(|u| u["address"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(ups.len(), 2, "{report}");
    assert!(
        !ups.iter()
            .any(|u| u.starts_with(&format!("{}:", h3.address)))
    );
    let left = h3.podman(&podman, &["ps", "-aq"]).expect("podman ps");
    assert!(left.trim().is_empty(), "h3 runs nothing: {left}");
    let (s, _) = http_get(&lb, Duration::from_secs(5)).expect("still served");
    assert_eq!(s, 200);
}
