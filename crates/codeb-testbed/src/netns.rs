//! App hosts as network namespaces (issue 14, phase 1), shared by
//! tests/integration/scale_hosts.rs and `codeb-bench roll`: [`Hosts`] is a bridge
//! (`10.<octet>.N.0/24`) with one namespace per host on a veth pair, each host running
//! `codeb-daemon agent`, its own Caddy front and real podman containers with its own container
//! store (images come read-only from the machine's store, as if each host had pulled them);
//! [`ControlPlane`] is `codeb-daemon serve` with the caller's Caddy as the balancer in front;
//! [`Load`] is a bounded load loop through the balancer that counts failed requests and keeps
//! every request's start and latency (for the figures of a host cut, [`LoadReport::after_cut`]).
//!
//! Podman and the agents run in a namespace through `nsenter --net` rather than `ip netns
//! exec`: the latter remounts /sys, which hides the cgroup mounts from runc.
//!
//! Only addresses on the harness's own bridge and loopback are targeted; every loop is
//! bounded. Everything (namespaces, links, processes, containers, temp dirs) is removed on
//! drop, also while unwinding from a panic.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::{CaddyBuild, Podman, http_get, http_request, wait_http, wait_http_until};

/// The control plane's `[api] drain` (also what a direct agent deploy should send).
pub const DRAIN_MS: u64 = 1000;
/// The control plane's `[api] health_interval`.
pub const HEALTH_INTERVAL_MS: u64 = 200;
/// The control plane's `[api] health_deadline`.
pub const HEALTH_DEADLINE_MS: u64 = 8000;
/// The control plane's default `health_successes`.
pub const SUCCESSES: u32 = 2;

/// Runs `args[0]` with the rest; its stdout, or an error with its output.
pub fn sh(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
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

/// A command without the ambient CI's variables (`GITHUB_*`, `RUNNER_*`, `ACTIONS_*`).
pub fn scrubbed(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new(program);
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if ["GITHUB_", "RUNNER_", "ACTIONS_"]
            .iter()
            .any(|p| k.starts_with(p))
        {
            c.env_remove(k);
        }
    }
    c.stdin(Stdio::null());
    c
}

fn kill(child: Option<Child>) {
    if let Some(mut c) = child {
        let _ = c.kill();
        let _ = c.wait();
    }
}

fn log_file(path: PathBuf) -> Result<std::fs::File, String> {
    std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))
}

/// One app host: a namespace with an address on the bridge, its directory, its processes.
#[derive(Debug)]
pub struct NetHost {
    /// `h1`, `h2`, …: the host's name for `we scale app --add`.
    pub name: String,
    pub ns: String,
    /// The bridge side of the host's veth pair (`ip link set <veth> down` cuts the host off).
    pub veth: String,
    pub address: String,
    pub dir: PathBuf,
    /// The host's token (the control plane keeps it in `state/hosts/<name>.token`).
    pub token: String,
    caddy: Option<Child>,
    agent: Option<Child>,
}

impl NetHost {
    /// A command run inside the host's network namespace (the machine's mounts).
    pub fn cmd(&self, program: &Path) -> Command {
        let mut c = scrubbed("nsenter");
        c.arg(format!("--net=/run/netns/{}", self.ns)).arg(program);
        c
    }

    /// The host's own container store (`CONTAINERS_STORAGE_CONF`).
    pub fn storage_conf(&self) -> PathBuf {
        self.dir.join("storage.conf")
    }

    /// `podman args` on this host (its namespace and container store).
    pub fn podman(&self, podman: &Podman, args: &[&str]) -> Result<String, String> {
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

    pub fn agent_url(&self) -> String {
        format!("http://{}:7070", self.address)
    }

    /// A log in the host's directory (`agent.log`, `caddy.log`).
    pub fn log(&self, file: &str) -> String {
        std::fs::read_to_string(self.dir.join(file)).unwrap_or_default()
    }

    /// `ip link set <veth> down|up`: cuts the host off the bridge, or brings it back.
    pub fn set_link(&self, up: bool) -> Result<(), String> {
        sh(&[
            "ip",
            "link",
            "set",
            &self.veth,
            if up { "up" } else { "down" },
        ])
        .map(drop)
    }

    /// `ip netns exec <ns> args`: a network tool (iptables) inside the host.
    pub fn exec(&self, args: &[&str]) -> Result<String, String> {
        let mut a = vec!["ip", "netns", "exec", self.ns.as_str()];
        a.extend_from_slice(args);
        sh(&a)
    }
}

/// The bridge, the namespaces and their veth pairs, each host's processes and containers;
/// all removed on drop.
#[derive(Debug)]
pub struct Hosts {
    bridge: String,
    /// The third octet of the bridge's /24.
    pub subnet: u8,
    octet: u8,
    pub hosts: Vec<NetHost>,
    podman: Podman,
}

impl Hosts {
    /// `n` hosts on `10.<octet>.<subnet>.0/24` (the subnet from this process's id), their
    /// links named with `prefix` (two letters: interface names are at most 15 bytes) so that
    /// two users of the harness never collide.
    pub fn new(prefix: &str, octet: u8, n: usize, podman: &Podman) -> Result<Hosts, String> {
        let pid = std::process::id();
        let subnet = u8::try_from(20 + pid % 200).unwrap_or(20);
        let tag = pid % 100_000;
        let bridge = format!("{prefix}b{tag}");
        let mut lab = Hosts {
            bridge: String::new(),
            subnet,
            octet,
            hosts: Vec::new(),
            podman: podman.clone(),
        };
        sh(&["ip", "link", "add", &bridge, "type", "bridge"])?;
        lab.bridge = bridge.clone();
        sh(&[
            "ip",
            "addr",
            "add",
            &format!("10.{octet}.{subnet}.1/24"),
            "dev",
            &bridge,
        ])?;
        sh(&["ip", "link", "set", &bridge, "up"])?;
        for k in 1..=n {
            let ns = format!("{prefix}{tag}-{k}");
            let veth = format!("{prefix}v{tag}h{k}");
            let peer = format!("{prefix}p{tag}h{k}");
            let address = format!("10.{octet}.{subnet}.{}", k + 1);
            let dir = std::env::temp_dir().join(format!("codeb-{prefix}-host-{pid}-{k}"));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            // Registered before it exists: whatever part of it gets made is removed on drop.
            lab.hosts.push(NetHost {
                name: format!("h{k}"),
                ns: ns.clone(),
                veth: veth.clone(),
                address: address.clone(),
                dir: dir.clone(),
                token: String::new(),
                caddy: None,
                agent: None,
            });
            sh(&["ip", "netns", "add", &ns])?;
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
            .map_err(|e| format!("storage.conf of h{k}: {e}"))?;
        }
        Ok(lab)
    }

    /// An address on the bridge where nothing listens (an agent that is not there).
    pub fn unused_address(&self) -> String {
        format!("10.{}.{}.250", self.octet, self.subnet)
    }

    /// Starts every host's Caddy (admin on the host's 127.0.0.1:2019) and `daemon agent`
    /// (on `<address>:7070`, podman as its runtime), each host's token minted by
    /// `daemon agent-token --out <tokens>/<host>.token` as on a control plane, the agent given
    /// only its SHA-256; waits until every agent answers.
    pub fn start_agents(&mut self, daemon: &Path, tokens: &Path) -> Result<(), String> {
        std::fs::create_dir_all(tokens).map_err(|e| format!("{}: {e}", tokens.display()))?;
        let caddy = CaddyBuild::Debian.binary();
        if !caddy.is_file() {
            return Err(format!(
                "{} is missing: apt-get install caddy (scripts/setup)",
                caddy.display()
            ));
        }
        for h in &mut self.hosts {
            let token_file = tokens.join(format!("{}.token", h.name));
            let minted = scrubbed(daemon)
                .args(["agent-token", "--out"])
                .arg(&token_file)
                .output()
                .map_err(|e| format!("agent-token: {e}"))?;
            let (stdout, stderr) = (
                String::from_utf8_lossy(&minted.stdout).into_owned(),
                String::from_utf8_lossy(&minted.stderr).into_owned(),
            );
            let hash = stdout.trim().to_owned();
            if !minted.status.success() || hash.len() != 64 {
                return Err(format!("agent-token for {}: {stdout}{stderr}", h.name));
            }
            h.token = std::fs::read_to_string(&token_file)
                .map_err(|e| format!("{}: {e}", token_file.display()))?
                .trim()
                .to_owned();
            if h.token.is_empty() || stdout.contains(&h.token) || stderr.contains(&h.token) {
                return Err(format!(
                    "agent-token for {}: the token must be in the file only, never printed",
                    h.name
                ));
            }
            std::fs::write(h.dir.join("token.sha256"), &hash).map_err(|e| e.to_string())?;
            std::fs::write(
                h.dir.join("caddy.json"),
                r#"{"admin":{"listen":"127.0.0.1:2019"}}"#,
            )
            .map_err(|e| e.to_string())?;
            let mut c = h.cmd(caddy);
            c.args(["run", "--config"])
                .arg(h.dir.join("caddy.json"))
                .env("HOME", &h.dir)
                .env("XDG_DATA_HOME", h.dir.join("caddy-data"))
                .env("XDG_CONFIG_HOME", h.dir.join("caddy-config"))
                .stdout(Stdio::null())
                .stderr(log_file(h.dir.join("caddy.log"))?);
            h.caddy = Some(c.spawn().map_err(|e| format!("{} caddy: {e}", h.name))?);
            let mut a = h.cmd(daemon);
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
                .stderr(log_file(h.dir.join("agent.log"))?);
            self.podman.configure(&mut a);
            h.agent = Some(a.spawn().map_err(|e| format!("{} agent: {e}", h.name))?);
        }
        for h in &self.hosts {
            wait_http_until(
                &format!("{}/agent/v1/ping", h.agent_url()),
                Duration::from_secs(20),
                |s, _| s == 401,
            )
            .map_err(|e| format!("agent {}: {e}: {}", h.name, h.log("agent.log")))?;
        }
        Ok(())
    }
}

impl Drop for Hosts {
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

/// A free port in 4000-4499 (the production range of the port manifest), probed on every
/// address.
pub fn free_production_port() -> Result<u16, String> {
    let pid = u16::try_from(std::process::id() % 400).unwrap_or(0);
    (0..500u16)
        .map(|i| 4000 + (pid + i * 7) % 500)
        .find(|p| std::net::TcpListener::bind(("0.0.0.0", *p)).is_ok())
        .ok_or_else(|| "no free port in 4000-4499".into())
}

/// `codeb-daemon serve` with `caddy_admin` (the balancer), one project environment in its
/// port manifest, the drain and health settings above; killed on drop.
#[derive(Debug)]
pub struct ControlPlane {
    child: Child,
    pub port: u16,
    pub dir: PathBuf,
    /// The bootstrap admin's token.
    pub admin: String,
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ControlPlane {
    /// Bootstraps an admin and starts the daemon in `dir` (its state in `dir/state`, the
    /// hosts' tokens go to [`ControlPlane::tokens_dir`]); waits until it answers.
    pub fn start(
        daemon: &Path,
        dir: &Path,
        caddy_admin: &str,
        project: &str,
        public: u16,
        podman: &Podman,
    ) -> Result<ControlPlane, String> {
        let port = crate::free_port();
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
caddy_admin = "{caddy_admin}"
quadlet_dir = "{q}"
manifest = "{m}"
[api]
drain = "{DRAIN_MS}ms"
health_interval = "{HEALTH_INTERVAL_MS}ms"
health_deadline = "{HEALTH_DEADLINE_MS}ms"
"#,
                state = dir.join("state").display(),
                q = dir.join("quadlet").display(),
                m = dir.join("port-manifest.yaml").display()
            ),
        )
        .map_err(|e| e.to_string())?;
        let secret = ("CODEB_WEBHOOK_SECRET", "netns-hosts-secret");
        let boot = scrubbed(daemon)
            .args(["bootstrap-admin", "--config"])
            .arg(&config)
            .env(secret.0, secret.1)
            .output()
            .map_err(|e| format!("bootstrap-admin: {e}"))?;
        if !boot.status.success() {
            return Err(format!(
                "bootstrap-admin: {}",
                String::from_utf8_lossy(&boot.stderr)
            ));
        }
        let mut serve = scrubbed(daemon);
        serve
            .args(["serve", "--config"])
            .arg(&config)
            .env(secret.0, secret.1)
            .stdout(Stdio::null())
            .stderr(log_file(dir.join("daemon.log"))?);
        podman.configure(&mut serve);
        let cp = ControlPlane {
            child: serve
                .spawn()
                .map_err(|e| format!("codeb-daemon serve: {e}"))?,
            port,
            dir: dir.to_owned(),
            admin: String::from_utf8_lossy(&boot.stdout).trim().to_owned(),
        };
        wait_http(
            &format!("http://127.0.0.1:{port}/healthz"),
            Duration::from_secs(20),
        )
        .map_err(|e| format!("control plane: {e}: {}", cp.log()))?;
        Ok(cp)
    }

    /// Where `we scale app --add <host>` reads a host's token.
    pub fn tokens_dir(&self) -> PathBuf {
        self.dir.join("state/hosts")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    /// Points a `we` command at this control plane as `token` (its own HOME and config).
    pub fn we_env(&self, cmd: &mut Command, token: &str) {
        let home = self.dir.join("home");
        cmd.env("XDG_CONFIG_HOME", home.join("config"))
            .env("HOME", &home)
            .env("CODEB_SERVER", format!("http://127.0.0.1:{}", self.port))
            .env("CODEB_TOKEN", token);
    }

    /// `(status, JSON body)` of a request as `token`.
    pub fn api_as(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), String> {
        let url = format!("http://127.0.0.1:{}{path}", self.port);
        let body = body.map(Value::to_string).unwrap_or_default();
        let (s, text) = http_request(
            method,
            &url,
            &[
                ("authorization", &format!("Bearer {token}")),
                ("content-type", "application/json"),
            ],
            body.as_bytes(),
            Duration::from_secs(600),
        )?;
        Ok((s, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    /// `(status, JSON body)` of a request as the admin.
    pub fn api(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), String> {
        self.api_as(&self.admin, method, path, body)
    }

    /// Queues a deploy of `image` to `production` and waits (bounded: 600 s) for its job to
    /// end; the job as it ended (`state` `done` or `failed`).
    pub fn deploy(&self, project: &str, image: &str) -> Result<Value, String> {
        let (s, job) = self.api(
            "POST",
            &format!("/api/v1/projects/{project}/deploy"),
            Some(&json!({"environment": "production", "image": image})),
        )?;
        if s != 202 {
            return Err(format!("deploy {image}: {s} {job}"));
        }
        let id = job["id"].as_i64().ok_or(format!("no job id: {job}"))?;
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let (_, j) = self.api("GET", &format!("/api/v1/jobs/{id}"), None)?;
            if matches!(j["state"].as_str(), Some("done" | "failed")) {
                return Ok(j);
            }
            if Instant::now() > deadline {
                return Err(format!("job {id} did not end in 600 s: {j}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The balancer's view of `upstream` (`GET /api/v1/scale/hosts`).
    pub fn balancer_healthy(&self, upstream: &str) -> Option<bool> {
        let (_, r) = self.api("GET", "/api/v1/scale/hosts", None).ok()?;
        r["balancers"]
            .as_array()?
            .iter()
            .flat_map(|b| b["upstreams"].as_array().cloned().unwrap_or_default())
            .find(|u| u["address"] == upstream)
            .and_then(|u| u["healthy"].as_bool())
    }

    /// Waits (bounded: 120 polls of 250 ms; Caddy refreshes the health gauge this reads every
    /// 10 s) for the balancer to see `upstream` as `healthy`; whether it did.
    pub fn wait_balancer(&self, upstream: &str, healthy: bool) -> bool {
        for _ in 0..120 {
            if self.balancer_healthy(upstream) == Some(healthy) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        false
    }

    /// `(host, digest, healthy)` of `unit` as each host's agent reports it.
    pub fn host_digests(&self, unit: &str) -> Result<Vec<(String, Option<String>, bool)>, String> {
        let (s, r) = self.api("GET", "/api/v1/scale/hosts", None)?;
        if s != 200 {
            return Err(format!("GET /api/v1/scale/hosts: {s} {r}"));
        }
        Ok(r["hosts"]
            .as_array()
            .ok_or(format!("no hosts in {r}"))?
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
            .collect())
    }
}

/// One request of a [`Load`]: when it started, how long it took, whether it failed.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub start: Instant,
    pub took: Duration,
    pub failed: bool,
}

/// What a [`Load`] saw.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    pub requests: u64,
    pub failed: u64,
    /// The first failures (status and body, or the error), at most 20.
    pub failures: Vec<String>,
    /// The distinct 200 answers, in order of first appearance.
    pub answers: Vec<String>,
    /// The last 200 answer.
    pub last: Option<String>,
    pub samples: Vec<Sample>,
}

/// What the requests that started after a host cut saw ([`LoadReport::after_cut`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CutFigures {
    /// From the cut to the start of the last slow request (one that took `slow` or more):
    /// after it, the balancer sent no request to the cut host. `None`: no request was slow.
    pub stopped_sending_after: Option<Duration>,
    /// The slow requests that started after the cut and the longest of them (in flight to
    /// the cut host, then retried on another).
    pub slow: usize,
    pub slowest: Duration,
}

impl LoadReport {
    /// Figures of the requests that started between `cut` and `until` (the link back up).
    pub fn after_cut(&self, cut: Instant, until: Instant, slow: Duration) -> CutFigures {
        let slow_ones: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| s.start >= cut && s.start < until && s.took >= slow)
            .collect();
        CutFigures {
            stopped_sending_after: slow_ones.iter().map(|s| s.start - cut).max(),
            slow: slow_ones.len(),
            slowest: slow_ones
                .iter()
                .map(|s| s.took)
                .max()
                .unwrap_or(Duration::ZERO),
        }
    }
}

/// `workers` threads GETting `url` through the balancer until stopped (bounded: 200,000
/// requests a worker, 900 s), 5 ms apart.
#[derive(Debug)]
pub struct Load {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    seen: Arc<Mutex<LoadReport>>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    pub fn start(url: &str, workers: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let seen = Arc::new(Mutex::new(LoadReport::default()));
        let threads = (0..workers.clamp(1, 16))
            .map(|_| {
                let (stop, done, seen, url) =
                    (stop.clone(), done.clone(), seen.clone(), url.to_owned());
                std::thread::spawn(move || {
                    let started = Instant::now();
                    for _ in 0..200_000 {
                        if stop.load(Ordering::Relaxed)
                            || started.elapsed() > Duration::from_secs(900)
                        {
                            break;
                        }
                        let start = Instant::now();
                        let got = http_get(&url, Duration::from_secs(30));
                        let took = start.elapsed();
                        let bad = match &got {
                            Ok((200, _)) => None,
                            Ok((s, body)) => Some(format!("{s} {}", body.trim())),
                            Err(e) => Some(e.clone()),
                        };
                        if let Ok(mut g) = seen.lock() {
                            let r = &mut *g;
                            r.requests += 1;
                            r.samples.push(Sample {
                                start,
                                took,
                                failed: bad.is_some(),
                            });
                            match (bad, got) {
                                (Some(b), _) => {
                                    r.failed += 1;
                                    if r.failures.len() < 20 {
                                        r.failures.push(b);
                                    }
                                }
                                (None, Ok((_, body))) => {
                                    if !r.answers.contains(&body) {
                                        r.answers.push(body.clone());
                                    }
                                    r.last = Some(body);
                                }
                                (None, Err(_)) => {}
                            }
                        }
                        done.fetch_add(1, Ordering::Relaxed);
                        std::thread::sleep(Duration::from_millis(5));
                    }
                })
            })
            .collect();
        Load {
            stop,
            done,
            seen,
            threads,
        }
    }

    /// Requests completed so far.
    pub fn count(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// Waits (bounded: 60 s) for `more` requests to complete.
    pub fn wait(&self, more: u64) -> Result<(), String> {
        let start = self.count();
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.count() < start + more {
            if Instant::now() > deadline {
                return Err("the load loop stalled".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Stops the workers; what they saw.
    pub fn finish(mut self) -> LoadReport {
        self.halt();
        let mut r = self
            .seen
            .lock()
            .map(|mut g| std::mem::take(&mut *g))
            .unwrap_or_else(|_| LoadReport {
                failed: 1,
                failures: vec!["a load thread panicked".into()],
                ..LoadReport::default()
            });
        r.samples.sort_by_key(|s| s.start);
        r
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.halt();
    }
}
