//! The deploy benchmark: `codeb-quadlet-update deploy` against a real registry, a real Caddy
//! and real podman (with the test bed's containers.conf: crates/codeb-testbed).
//!
//! It prints two tables:
//! - failed requests seen by a bounded load loop (sequential GETs through the public port,
//!   a fresh connection each) during a deploy: codeb blue-green, codeb restart, and the peer,
//!   a plain `podman stop` + `podman run` of the new image on the same port;
//! - the time from the command's start to the first answer of the new release through the
//!   public port, beside the container's own cost (a bare `podman run -d` of the same image
//!   on a free port until its first healthy answer); the difference is codeb's overhead.
//!
//! Each deploy run is one A/B pair, interleaved; medians are compared, nothing is asserted.

use codeb_testbed::{Daemon, TEST_CONTAINERS_CONF, free_port, http_get, http_request};
use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// At most this many deploys per row: each restart deploy alone takes seconds.
const MAX_RUNS: usize = 3;

/// Runs the deploy benchmark (`runs` deploys per row, capped at [`MAX_RUNS`]).
pub fn deploy(runs: usize) -> Result<(), String> {
    let runs = runs.clamp(1, MAX_RUNS);
    let cores = thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "\n## codeb-quadlet-update deploy: real podman, registry and Caddy ({runs} deploys per row, {cores} cores)\n"
    );
    let cli = super::bin("codeb-quadlet-update")?;
    let bench = Bench::start()?;
    let result = bench.measure(&cli, runs);
    bench.cleanup();
    result
}

// ---------------------------------------------------------------------------------------------
// Set-up: scratch dir, podman config, registry, Caddy, images
// ---------------------------------------------------------------------------------------------

pub(crate) struct Bench {
    dir: PathBuf,
    project: String,
    registry_port: u16,
    caddy_admin: String,
    /// `(reference by tag, digest)` of v1 and v2 in the bench registry.
    images: [(String, String); 2],
    prod: u16,
    staging: u16,
    _daemons: Vec<Daemon>,
}

impl Bench {
    pub(crate) fn start() -> Result<Self, String> {
        let dir = std::env::temp_dir().join(format!("codeb-bench-deploy-{}", std::process::id()));
        fs::create_dir_all(dir.join("quadlet")).map_err(|e| format!("{}: {e}", dir.display()))?;
        let write = |name: &str, text: &str| {
            fs::write(dir.join(name), text).map_err(|e| format!("write {name}: {e}"))
        };
        write("containers.conf", TEST_CONTAINERS_CONF)?;
        write("auth.json", "{\"auths\":{}}\n")?;

        // Registry.
        let registry_port = free_port();
        write(
            "registry.yml",
            &format!(
                "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: 127.0.0.1:{registry_port}\n  secret: codeb-bench\n",
                dir.join("registry-data").display()
            ),
        )?;
        write(
            "registries.conf",
            &format!(
                "unqualified-search-registries = []\n[[registry]]\nlocation = \"127.0.0.1:{registry_port}\"\ninsecure = true\n"
            ),
        )?;
        let mut daemons = Vec::new();
        let mut cmd = Command::new("docker-registry");
        cmd.arg("serve").arg(dir.join("registry.yml"));
        daemons.push(Daemon::spawn(
            "docker-registry",
            cmd,
            dir.join("registry.log"),
        ));
        wait_status(
            &format!("http://127.0.0.1:{registry_port}/v2/"),
            200,
            Duration::from_secs(20),
        )?;

        // Caddy: only its admin API; codeb adds the servers.
        let admin_port = free_port();
        write(
            "caddy.json",
            &format!(
                r#"{{"admin":{{"listen":"127.0.0.1:{admin_port}","config":{{"persist":false}}}}}}"#
            ),
        )?;
        let mut cmd = Command::new("caddy");
        cmd.arg("run")
            .arg("--config")
            .arg(dir.join("caddy.json"))
            .env("HOME", &dir)
            .env("XDG_DATA_HOME", dir.join("caddy-data"))
            .env("XDG_CONFIG_HOME", dir.join("caddy-config"));
        daemons.push(Daemon::spawn("caddy", cmd, dir.join("caddy.log")));
        let caddy_admin = format!("http://127.0.0.1:{admin_port}");
        wait_status(
            &format!("{caddy_admin}/config/"),
            200,
            Duration::from_secs(20),
        )?;

        let prod = port_triple(4300..=4499)?;
        let staging = port_triple(4800..=4999)?;
        let project = format!("bench{:x}", std::process::id());
        fs::write(
            dir.join("port-manifest.yaml"),
            format!(
                "version: 1\nprojects:\n  {project}:\n    production: {{port: {prod}}}\n    staging: {{port: {staging}}}\n"
            ),
        )
        .map_err(|e| format!("write the manifest: {e}"))?;

        let mut bench = Self {
            dir,
            project,
            registry_port,
            caddy_admin,
            images: Default::default(),
            prod,
            staging,
            _daemons: daemons,
        };
        let t = Instant::now();
        for (i, tag) in ["v1", "v2"].into_iter().enumerate() {
            let local = format!("localhost/codeb-test/sample:{tag}");
            if bench.podman(&["image", "exists", &local]).is_err() {
                bench.build_image(&local, tag)?;
            }
            let reference = format!("127.0.0.1:{}/codeb/sample:{tag}", bench.registry_port);
            let digest_file = bench.dir.join(format!("digest-{tag}"));
            let digest_arg = digest_file.display().to_string();
            bench.podman(&[
                "push",
                "--quiet",
                "--tls-verify=false",
                "--digestfile",
                &digest_arg,
                &local,
                &reference,
            ])?;
            let digest = fs::read_to_string(&digest_file)
                .map_err(|e| format!("read {digest_arg}: {e}"))?
                .trim()
                .to_owned();
            bench.images[i] = (reference, digest);
        }
        println!(
            "set-up: registry 127.0.0.1:{}, Caddy {}, v1 and v2 pushed in {}",
            bench.registry_port,
            bench.caddy_admin,
            ms(t.elapsed())
        );
        Ok(bench)
    }

    fn podman_cmd(&self) -> Command {
        let mut c = Command::new("podman");
        c.env("CONTAINERS_CONF", self.dir.join("containers.conf"))
            .env(
                "CONTAINERS_REGISTRIES_CONF",
                self.dir.join("registries.conf"),
            )
            .env("REGISTRY_AUTH_FILE", self.dir.join("auth.json"))
            .stdin(Stdio::null());
        c
    }

    fn podman(&self, args: &[&str]) -> Result<String, String> {
        let out = self
            .podman_cmd()
            .args(args)
            .output()
            .map_err(|e| format!("podman: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(format!(
                "podman {}: {}: {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// Builds `local` the way the integration tests do: the static sample app `FROM scratch`.
    fn build_image(&self, local: &str, version: &str) -> Result<(), String> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let target_dir = root.join("target").join("sample-app");
        let target = "x86_64-unknown-linux-gnu";
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(&root)
            .args(["build", "--release", "--quiet", "-p", "codeb-sample-app"])
            .args(["--target", target])
            .env("CARGO_TARGET_DIR", &target_dir)
            .env("RUSTFLAGS", "-C target-feature=+crt-static")
            .status()
            .map_err(|e| format!("cargo: {e}"))?;
        if !status.success() {
            return Err(format!("building the sample app: {status}"));
        }
        let ctx = self.dir.join(format!("image-{version}"));
        fs::create_dir_all(&ctx).map_err(|e| e.to_string())?;
        fs::copy(
            target_dir.join(target).join("release/codeb-sample-app"),
            ctx.join("app"),
        )
        .map_err(|e| format!("copy the sample app: {e}"))?;
        fs::write(
            ctx.join("Containerfile"),
            format!(
                "FROM scratch\nCOPY app /app\nENV PORT=3000\nENV VERSION=\"{version}\"\nEXPOSE 3000\nCMD [\"/app\"]\n"
            ),
        )
        .map_err(|e| e.to_string())?;
        let ctx_s = ctx.display().to_string();
        self.podman(&[
            "build",
            "--quiet",
            "--timestamp",
            "0",
            "--layers=false",
            "-t",
            local,
            "-f",
            &format!("{ctx_s}/Containerfile"),
            &ctx_s,
        ])
        .map(drop)
    }

    /// The port of the bench registry on 127.0.0.1.
    pub(crate) fn registry_port(&self) -> u16 {
        self.registry_port
    }

    /// The manifest digests of v1 and v2 in the bench registry.
    pub(crate) fn digests(&self) -> [&str; 2] {
        [self.images[0].1.as_str(), self.images[1].1.as_str()]
    }

    pub(crate) fn cleanup(&self) {
        // The bench's own containers and its previews' (project `<project>p`, containers
        // `<project>p-pr-<N>-<slot>`): a preview left running keeps its slot port forwarded
        // and would refuse the next preview test on this machine.
        if let Ok(ids) = self.podman(&[
            "ps",
            "-aq",
            "--filter",
            &format!("name=^{}-", self.project),
            "--filter",
            &format!("name=^{}p-", self.project),
        ]) {
            let mut args = vec!["rm", "-f", "-t", "0", "--ignore"];
            args.extend(ids.lines());
            if args.len() > 5 {
                let _ = self.podman(&args);
            }
        }
        let prefix = format!("127.0.0.1:{}/", self.registry_port);
        if let Ok(names) = self.podman(&["images", "--format", "{{.Repository}}:{{.Tag}}"]) {
            for name in names.lines().filter(|n| n.starts_with(&prefix)) {
                let _ = self.podman(&["untag", name, name]);
            }
        }
        let _ = fs::remove_dir_all(&self.dir);
    }

    /// `codeb-quadlet-update deploy` of image `i` (0 = v1, 1 = v2) to `environment`.
    fn deploy_cmd(&self, cli: &Path, environment: &str, i: usize, strategy: &str) -> Command {
        let mut c = Command::new(cli);
        c.env("CONTAINERS_CONF", self.dir.join("containers.conf"))
            .env(
                "CONTAINERS_REGISTRIES_CONF",
                self.dir.join("registries.conf"),
            )
            .env("REGISTRY_AUTH_FILE", self.dir.join("auth.json"))
            .env_remove("GITHUB_ACTIONS")
            .env_remove("GITHUB_OUTPUT")
            .args(["deploy", "--project", &self.project])
            .args(["--environment", environment])
            .args(["--image", &self.images[i].0])
            .arg("--manifest")
            .arg(self.dir.join("port-manifest.yaml"))
            .arg("--quadlet-dir")
            .arg(self.dir.join("quadlet"))
            .args(["--runtime", "podman", "--strategy", strategy])
            .args(["--caddy-admin", &self.caddy_admin])
            .args(["--drain", "1s", "--health-deadline", "30s"])
            .args(["--health-interval", "100ms", "--successes", "1"])
            .args(["--health-cmd", "none", "--actor", "codeb-bench"])
            .args(["--sha", &format!("{:0>40}", i + 1)])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    fn measure(&self, cli: &Path, runs: usize) -> Result<(), String> {
        let versions = ["v1", "v2"];
        // First deploys (not measured): both targets serve v1.
        for (environment, strategy) in [("production", "blue-green"), ("staging", "restart")] {
            run_ok(&mut self.deploy_cmd(cli, environment, 0, strategy))?;
        }
        // The peer's container: v1 on a plain port, no proxy.
        let peer_port = free_port();
        let peer_name = format!("{}-peer", self.project);
        let by_digest = |i: usize| {
            let (reference, digest) = &self.images[i];
            let repo = reference
                .rsplit_once(':')
                .map_or(reference.as_str(), |(r, _)| r);
            format!("{repo}@{digest}")
        };
        let publish = format!("127.0.0.1:{peer_port}:3000");
        self.podman(&[
            "run",
            "-d",
            "--name",
            &peer_name,
            "-p",
            &publish,
            &by_digest(0),
        ])?;
        wait_version(peer_port, "v1", Duration::from_secs(30))?;

        let mut rows: Vec<(&str, Vec<DeployRun>)> = vec![
            ("codeb blue-green", Vec::new()),
            ("codeb restart", Vec::new()),
            ("peer: podman stop + podman run", Vec::new()),
        ];
        let mut base = Vec::new();
        let mut next = 1; // the image index each target moves to next
        for _ in 0..runs {
            let (to, from) = (versions[next], versions[1 - next]);
            // Blue-green.
            rows[0].1.push(self.timed(self.prod, from, to, || {
                spawn(&mut self.deploy_cmd(cli, "production", next, "blue-green"))
            })?);
            // Restart.
            rows[1].1.push(self.timed(self.staging, from, to, || {
                spawn(&mut self.deploy_cmd(cli, "staging", next, "restart"))
            })?);
            // Peer: stop the old container, start the new one on the same port.
            let image = by_digest(next);
            let (pn, pp) = (peer_name.clone(), publish.clone());
            let podman = self.podman_cmd_factory();
            rows[2].1.push(self.timed(peer_port, from, to, move || {
                let script_stop = podman(&["stop", &pn]);
                let script_rm = podman(&["rm", "-f", "-t", "0", &pn]);
                let script_run = podman(&["run", "-d", "--name", &pn, "-p", &pp, &image]);
                spawn_chain(vec![script_stop, script_rm, script_run])
            })?);
            // The container's own cost: bare podman run -d + first healthy answer.
            base.push(self.bare_start(&by_digest(next), to)?);
            next = 1 - next;
        }

        println!(
            "\n### Failed requests during a deploy (load: sequential GETs, fresh connection each)\n"
        );
        println!(
            "| strategy | requests (median) | failed (median) | failed (max) | longest outage | new release serving after (median) | command took (median) |\n|---|---|---|---|---|---|---|"
        );
        for (name, r) in &rows {
            let reqs = median_usize(r.iter().map(|x| x.requests).collect());
            let failed = median_usize(r.iter().map(|x| x.failed).collect());
            let max_failed = r.iter().map(|x| x.failed).max().unwrap_or(0);
            let window = r.iter().map(|x| x.outage).max().unwrap_or_default();
            let serving = median(r.iter().map(|x| x.serving).collect());
            let took = median(r.iter().map(|x| x.took).collect());
            println!(
                "| {name} | {reqs} | {failed} | {max_failed} | {} | {} | {} |",
                ms(window),
                ms(serving),
                ms(took)
            );
        }

        let bg_serving = median(rows[0].1.iter().map(|x| x.serving).collect());
        let base_median = median(base.clone());
        let overhead = bg_serving.saturating_sub(base_median);
        println!("\n### Time to serve the new release vs. the container's own start\n");
        println!("| what | median | runs |\n|---|---|---|");
        println!(
            "| bare `podman run -d` + first healthy probe (10 ms polling) | {} | {} |",
            ms(base_median),
            base.len()
        );
        println!(
            "| codeb blue-green: command start → first answer of the new release via Caddy | {} | {} |",
            ms(bg_serving),
            rows[0].1.len()
        );
        println!(
            "\ncodeb overhead (resolve digest, lock, render, podman run, probes at 100 ms, Caddy switch): {} (target: under 500 ms: {})",
            ms(overhead),
            if overhead < Duration::from_millis(500) {
                "met"
            } else {
                "NOT met"
            }
        );
        println!(
            "flags: --health-interval 100ms --successes 1 --drain 1s --health-cmd none; machine: {} cores",
            thread::available_parallelism().map_or(0, |n| n.get())
        );
        let _ = self.podman(&["rm", "-f", "-t", "0", "--ignore", &peer_name]);
        Ok(())
    }

    /// A closure that builds podman commands with this bench's environment.
    fn podman_cmd_factory(&self) -> impl Fn(&[&str]) -> Command + 'static {
        let dir = self.dir.clone();
        move |args: &[&str]| {
            let mut c = Command::new("podman");
            c.env("CONTAINERS_CONF", dir.join("containers.conf"))
                .env("CONTAINERS_REGISTRIES_CONF", dir.join("registries.conf"))
                .env("REGISTRY_AUTH_FILE", dir.join("auth.json"))
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            c
        }
    }

    /// Runs `start` (which starts the switch from `from` to `to` and returns when it is
    /// done) while a load loop hits `port`.
    fn timed(
        &self,
        port: u16,
        from: &str,
        to: &str,
        start: impl FnOnce() -> Result<Duration, String>,
    ) -> Result<DeployRun, String> {
        let load = Load::start(port);
        load.wait_answers(from, 20)?;
        let t0_load = load.elapsed();
        let took = start()?;
        load.wait_answers(to, 20)?;
        let samples = load.finish();
        let after: Vec<&Sample> = samples.iter().filter(|s| s.at >= t0_load).collect();
        let serving = after
            .iter()
            .find(|s| s.version.as_deref() == Some(to))
            .map(|s| s.at.saturating_sub(t0_load))
            .ok_or_else(|| format!("{to} never answered on {port}"))?;
        let failures: Vec<&&Sample> = after.iter().filter(|s| s.version.is_none()).collect();
        // An outage runs from the start of a failed request to the start of the next
        // successful one (a hung request counts for as long as it hung).
        let mut outage = Duration::ZERO;
        let mut down_since: Option<Duration> = None;
        for s in &after {
            match (&s.version, down_since) {
                (None, None) => down_since = Some(s.at),
                (Some(_), Some(since)) => {
                    outage = outage.max(s.at.saturating_sub(since));
                    down_since = None;
                }
                _ => {}
            }
        }
        eprintln!(
            "  port {port} {from} → {to}: {} requests, {} failed, longest outage {}, {to} from {}, command {}",
            after.len(),
            failures.len(),
            ms(outage),
            ms(serving),
            ms(took)
        );
        Ok(DeployRun {
            requests: after.len(),
            failed: failures.len(),
            outage,
            serving,
            took,
        })
    }

    /// `podman run -d` of `image` on a free port, until its first healthy answer of `version`.
    fn bare_start(&self, image: &str, version: &str) -> Result<Duration, String> {
        let port = free_port();
        let name = format!("{}-bare", self.project);
        let publish = format!("127.0.0.1:{port}:3000");
        let t = Instant::now();
        self.podman(&["run", "-d", "--name", &name, "-p", &publish, image])?;
        let ready = wait_version_every(port, version, Duration::from_secs(30), 10);
        let took = t.elapsed();
        let _ = self.podman(&["rm", "-f", "-t", "0", "--ignore", &name]);
        ready.map(|()| took)
    }
}

struct DeployRun {
    requests: usize,
    failed: usize,
    outage: Duration,
    serving: Duration,
    took: Duration,
}

// ---------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------

/// Runs `cmd` to the end; its duration, or an error with its output.
fn spawn(cmd: &mut Command) -> Result<Duration, String> {
    let t = Instant::now();
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    let took = t.elapsed();
    if out.status.success() {
        Ok(took)
    } else {
        Err(format!(
            "{:?} exited with {}:\n{}{}",
            cmd.get_program(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn spawn_chain(cmds: Vec<Command>) -> Result<Duration, String> {
    let t = Instant::now();
    for mut c in cmds {
        spawn(&mut c)?;
    }
    Ok(t.elapsed())
}

fn run_ok(cmd: &mut Command) -> Result<(), String> {
    spawn(cmd).map(drop)
}

// ---------------------------------------------------------------------------------------------
// HTTP and ports
// ---------------------------------------------------------------------------------------------

fn version_of(body: &str) -> Option<String> {
    body.split("\"version\":\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .map(str::to_owned)
}

fn wait_status(url: &str, want: u16, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        match http_get(url, Duration::from_secs(2)) {
            Ok((s, _)) if s == want => return Ok(()),
            _ if Instant::now() >= deadline => return Err(format!("{url} not ready")),
            _ => thread::sleep(Duration::from_millis(50)),
        }
    }
}

fn wait_version(port: u16, version: &str, timeout: Duration) -> Result<(), String> {
    wait_version_every(port, version, timeout, 50)
}

fn wait_version_every(
    port: u16,
    version: &str,
    timeout: Duration,
    every_ms: u64,
) -> Result<(), String> {
    let url = format!("http://127.0.0.1:{port}/api/health");
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok((200, body)) = http_get(&url, Duration::from_secs(2))
            && version_of(&body).as_deref() == Some(version)
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("{url} never answered {version}"));
        }
        thread::sleep(Duration::from_millis(every_ms));
    }
}

/// A public port P in `range` with P, 10000+P and 20000+P free.
fn port_triple(range: std::ops::RangeInclusive<u16>) -> Result<u16, String> {
    let free = |p: u16| TcpListener::bind(("0.0.0.0", p)).is_ok();
    range
        .rev()
        .find(|&p| free(p) && free(p + 10000) && free(p + 20000))
        .ok_or_else(|| "no free port triple".to_owned())
}

// ---------------------------------------------------------------------------------------------
// Load
// ---------------------------------------------------------------------------------------------

struct Sample {
    at: Duration,
    /// The version of a 200 answer; `None` for a failure (error or other status).
    version: Option<String>,
}

/// Sequential GETs of `/api/health`, a fresh connection each; stops when told, after 2
/// minutes or after 100,000 requests.
struct Load {
    t0: Instant,
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    handle: Option<JoinHandle<()>>,
}

impl Load {
    fn start(port: u16) -> Self {
        let t0 = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let (s, out) = (stop.clone(), samples.clone());
        let url = format!("http://127.0.0.1:{port}/api/health");
        let handle = thread::spawn(move || {
            for _ in 0..100_000 {
                if s.load(Ordering::SeqCst) || t0.elapsed() > Duration::from_secs(120) {
                    break;
                }
                let at = t0.elapsed();
                let version = match http_get(&url, Duration::from_secs(2)) {
                    Ok((200, body)) => version_of(&body),
                    _ => None,
                };
                out.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(Sample { at, version });
                thread::sleep(Duration::from_millis(2));
            }
        });
        Self {
            t0,
            stop,
            samples,
            handle: Some(handle),
        }
    }

    fn elapsed(&self) -> Duration {
        self.t0.elapsed()
    }

    fn count(&self, version: &str) -> usize {
        self.samples
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|s| s.version.as_deref() == Some(version))
            .count()
    }

    fn wait_answers(&self, version: &str, n: usize) -> Result<(), String> {
        let target = self.count(version) + n;
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.count(version) < target {
            if Instant::now() > deadline {
                return Err(format!("the load loop saw no {version} answers"));
            }
            thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    fn finish(mut self) -> Vec<Sample> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        std::mem::take(&mut *self.samples.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Figures
// ---------------------------------------------------------------------------------------------

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn median_usize(mut v: Vec<usize>) -> usize {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn ms(d: Duration) -> String {
    let mut s = String::new();
    let _ = write!(s, "{:.0} ms", d.as_secs_f64() * 1000.0);
    s
}

// ---------------------------------------------------------------------------------------------
// The preview path
// ---------------------------------------------------------------------------------------------

/// The preview benchmark: a real `codeb-daemon serve` with the bench's registry, Caddy and
/// podman; GitHub's REST API is a small fake on loopback (the only stand-in). Each run opens
/// a new pull request whose image `pr-<N>` (built from the PR's head commit, labelled so) is
/// in the registry, then sends the signed `registry_package` delivery that says so, and
/// times until the preview answers its health check through its Caddy host route. The floor
/// is the same image's bare `podman run -d` until its first healthy answer, measured in the
/// same run, interleaved.
pub fn preview(runs: usize) -> Result<(), String> {
    let runs = runs.clamp(1, MAX_RUNS);
    println!(
        "\n## Preview path: signed delivery (image published) to the preview answering through Caddy ({runs} runs)\n"
    );
    let daemon_bin = super::bin("codeb-daemon")?;
    let bench = Bench::start()?;
    let result = bench.measure_preview(&daemon_bin, runs);
    bench.cleanup();
    result
}

const PR_SHA: &str = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";

impl Bench {
    fn measure_preview(&self, daemon_bin: &Path, runs: usize) -> Result<(), String> {
        let github = FakeGitHub::start()?;
        let listen = free_port();
        let routes = free_port();
        let preview_project = format!("{}p", self.project);
        let repo = "bench/app";
        let image_repo = format!("127.0.0.1:{}/codeb/preview", self.registry_port);
        fs::create_dir_all(self.dir.join("preview-quadlet")).map_err(|e| e.to_string())?;
        let manifest = self.dir.join("preview-manifest.yaml");
        fs::write(&manifest, "version: 1\nprojects: {}\n").map_err(|e| e.to_string())?;
        let config = self.dir.join("daemon.toml");
        fs::write(
            &config,
            format!(
                r#"listen = "127.0.0.1:{listen}"
state_dir = "{state}"
reconcile_interval = "1h"
[previews]
github_api_url = "{gh}"
domain_pattern = "pr-{{pr}}.bench.test"
caddy_admin = "{caddy}"
routes_listen = "127.0.0.1:{routes}"
manifest = "{manifest}"
quadlet_dir = "{quadlet}"
state_dir = "{pstate}"
runtime = "podman"
health_deadline = "30s"
[previews.repos."{repo}"]
project = "{preview_project}"
image = "{image_repo}"
"#,
                state = self.dir.join("daemon-state").display(),
                gh = github.url,
                caddy = self.caddy_admin,
                manifest = manifest.display(),
                quadlet = self.dir.join("preview-quadlet").display(),
                pstate = self.dir.join("preview-state").display(),
            ),
        )
        .map_err(|e| e.to_string())?;
        // The image of the PR's head commit, labelled with it.
        let labelled = "localhost/codeb-test/sample-bench-rev:v1";
        let ctx = self.dir.join("image-rev");
        fs::create_dir_all(&ctx).map_err(|e| e.to_string())?;
        fs::write(
            ctx.join("Containerfile"),
            format!(
                "FROM localhost/codeb-test/sample:v1\nLABEL org.opencontainers.image.revision={PR_SHA}\n"
            ),
        )
        .map_err(|e| e.to_string())?;
        let ctx_s = ctx.display().to_string();
        self.podman(&[
            "build",
            "--quiet",
            "--timestamp",
            "0",
            "--layers=false",
            "-t",
            labelled,
            "-f",
            &format!("{ctx_s}/Containerfile"),
            &ctx_s,
        ])?;
        let mut cmd = Command::new(daemon_bin);
        cmd.args(["serve", "--config"])
            .arg(&config)
            .env("CONTAINERS_CONF", self.dir.join("containers.conf"))
            .env(
                "CONTAINERS_REGISTRIES_CONF",
                self.dir.join("registries.conf"),
            )
            .env("REGISTRY_AUTH_FILE", self.dir.join("auth.json"))
            .env("CODEB_WEBHOOK_SECRET", super::webhook::SECRET)
            .env("GITHUB_TOKEN", "bench-token")
            .env("CODEB_LOG", "warn");
        let _daemon = Daemon::spawn("codeb-daemon", cmd, self.dir.join("daemon.log"));
        wait_status(
            &format!("http://127.0.0.1:{listen}/healthz"),
            200,
            Duration::from_secs(20),
        )?;

        let mut paths = Vec::new();
        let mut floors = Vec::new();
        for i in 0..runs {
            let pr = 100 + i as u64;
            let tag = format!("pr-{pr}");
            self.podman(&[
                "push",
                "--quiet",
                "--tls-verify=false",
                labelled,
                &format!("{image_repo}:{tag}"),
            ])?;
            github.open(repo, pr);
            let body = package_event(repo, &tag);
            let signature = super::webhook::sign(daemon_bin, body.as_bytes())?;
            let t = Instant::now();
            post_delivery(listen, &format!("bench-{pr}"), &signature, body.as_bytes())?;
            let host = format!("pr-{pr}.bench.test");
            wait_host(routes, &host, Duration::from_secs(60)).map_err(|e| {
                format!(
                    "{e}; daemon log:\n{}",
                    fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
                )
            })?;
            paths.push(t.elapsed());
            floors.push(self.bare_start(labelled, "v1")?);
        }
        let path = median(paths.clone());
        let floor = median(floors.clone());
        println!("| measure | median | runs |\n|---|---|---|");
        println!(
            "| delivery to preview answering through Caddy | {} | {} |",
            ms(path),
            paths.iter().map(|d| ms(*d)).collect::<Vec<_>>().join(", ")
        );
        println!(
            "| floor: bare `podman run -d` of the same image to its first healthy answer | {} | {} |",
            ms(floor),
            floors.iter().map(|d| ms(*d)).collect::<Vec<_>>().join(", ")
        );
        let over = path.saturating_sub(floor);
        println!(
            "\npreview path = floor + {} ({:.2}x the floor); goal floor + 1 s: {}",
            ms(over),
            path.as_secs_f64() / floor.as_secs_f64().max(1e-9),
            if over <= Duration::from_secs(1) {
                "met"
            } else {
                "NOT met"
            }
        );
        Ok(())
    }
}

fn package_event(repo: &str, tag: &str) -> String {
    let (owner, name) = repo.split_once('/').unwrap_or((repo, repo));
    format!(
        r#"{{"action":"published","registry_package":{{"name":"{name}","package_type":"CONTAINER","owner":{{"login":"{owner}"}},"package_version":{{"container_metadata":{{"tag":{{"name":"{tag}"}},"labels":{{"revision":"{PR_SHA}"}}}}}}}},"repository":{{"full_name":"{repo}"}}}}"#
    )
}

fn post_delivery(port: u16, delivery: &str, signature: &str, body: &[u8]) -> Result<(), String> {
    let (status, answer) = http_request(
        "POST",
        &format!("http://127.0.0.1:{port}/webhook/github"),
        &[
            ("content-type", "application/json"),
            ("x-github-event", "registry_package"),
            ("x-github-delivery", delivery),
            ("x-github-hook-id", "1"),
            ("x-hub-signature-256", signature),
        ],
        body,
        Duration::from_secs(10),
    )?;
    if status == 202 {
        Ok(())
    } else {
        Err(format!("the delivery was not queued: {status} {answer}"))
    }
}

/// Polls the preview's health through Caddy (Host header) every 10 ms.
fn wait_host(port: u16, host: &str, timeout: Duration) -> Result<(), String> {
    let url = format!("http://127.0.0.1:{port}/api/health");
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok((200, body)) =
            http_request("GET", &url, &[("host", host)], &[], Duration::from_secs(2))
            && body.contains("\"version\"")
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("{host} never answered through Caddy"));
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// GitHub's REST API, as far as previews use it: open pull requests of the bench, and
/// deployments, statuses and comments accepted and forgotten.
struct FakeGitHub {
    url: String,
    prs: Arc<Mutex<Vec<(String, u64)>>>,
}

impl FakeGitHub {
    fn start() -> Result<Self, String> {
        let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let url = format!("http://{}", l.local_addr().map_err(|e| e.to_string())?);
        let prs: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
        let p = prs.clone();
        thread::spawn(move || {
            for s in l.incoming().flatten() {
                let p = p.clone();
                thread::spawn(move || fake_serve(s, &p));
            }
        });
        Ok(Self { url, prs })
    }

    fn open(&self, repo: &str, pr: u64) {
        self.prs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((repo.to_owned(), pr));
    }
}

fn fake_serve(stream: TcpStream, prs: &Mutex<Vec<(String, u64)>>) {
    use std::io::BufRead;
    let Ok(clone) = stream.try_clone() else {
        return;
    };
    let mut r = std::io::BufReader::new(clone);
    let mut out = stream;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut it = line.split_whitespace();
        let method = it.next().unwrap_or_default().to_owned();
        let target = it.next().unwrap_or_default().to_owned();
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            if h.trim().is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; len];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        let path = target.split('?').next().unwrap_or_default();
        let seg: Vec<&str> = path.trim_matches('/').split('/').collect();
        let open = |repo: &str, n: u64| {
            prs.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .any(|(r, p)| r == repo && *p == n)
        };
        let (status, answer) = match (method.as_str(), seg.as_slice()) {
            ("GET", ["user"]) => (200, r#"{"login":"codeb-bench"}"#.to_owned()),
            ("GET", ["repos", o, n, "pulls", pr]) => {
                let repo = format!("{o}/{n}");
                let pr: u64 = pr.parse().unwrap_or(0);
                let state = if open(&repo, pr) { "open" } else { "closed" };
                (
                    200,
                    format!(
                        r#"{{"number":{pr},"state":"{state}","draft":false,"html_url":"https://github.com/{repo}/pull/{pr}","head":{{"sha":"{PR_SHA}","repo":{{"full_name":"{repo}"}}}},"labels":[]}}"#
                    ),
                )
            }
            ("GET", ["repos", _, _, "pulls"])
            | ("GET", ["repos", _, _, "issues", _, "comments"]) => (200, "[]".to_owned()),
            ("POST", _) | ("PATCH", _) => (201, r#"{"id":1}"#.to_owned()),
            _ => (404, r#"{"message":"Not Found"}"#.to_owned()),
        };
        if write!(
            out,
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{answer}",
            answer.len()
        )
        .is_err()
        {
            return;
        }
    }
}
