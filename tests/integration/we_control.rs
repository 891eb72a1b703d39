//! The real `we` binary against the real control plane: `codeb-daemon serve` as a process
//! with its SQLite store (first token from `codeb-daemon bootstrap-admin`), and for deploys
//! real podman, a real registry with the sample app's images and a real Caddy.
//!
//! Every output `we` produces in these tests is collected and searched for every token the
//! tests made: a token appears only in the one answer that creates it (`we team add`).

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use codeb_core::vars;
use serde_json::Value;

use crate::infra::{
    Caddy, Podman, Registry, SampleImages, ScratchDir, free_port, http_get, http_request, unique_id,
};
use crate::util::{Run, codeb, run};
use crate::we_cli::{credentials, run_with_stdin, we};

/// A project name unique across processes (a DNS label).
fn project_name(prefix: &str) -> String {
    let id = unique_id().replace('-', "");
    format!("{prefix}{}", &id[id.len().saturating_sub(12)..])
}

/// Every output of `we` in a test, with the tokens it must never contain.
#[derive(Default)]
struct Transcript {
    outputs: Mutex<Vec<(String, String)>>,
}

impl Transcript {
    fn record(&self, what: &str, r: &Run) {
        self.outputs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((what.to_owned(), r.all()));
    }

    /// No recorded output contains any of `secrets`, except the allowed (what, secret) pairs.
    fn assert_no_secret(&self, secrets: &[&str], allowed: &[(&str, &str)]) {
        let outputs = self
            .outputs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        assert!(!outputs.is_empty());
        for (what, text) in outputs.iter() {
            for s in secrets {
                if allowed.iter().any(|(w, a)| w == what && a == s) {
                    continue;
                }
                assert!(
                    !text.contains(s) && (s.len() < 30 || !text.contains(&s[6..30])),
                    "output of `{what}` contains a secret:\n{text}"
                );
            }
        }
    }
}

struct ControlPlane {
    dir: ScratchDir,
    port: u16,
    config: PathBuf,
    child: Option<Child>,
    log: PathBuf,
    admin: String,
    webhook_secret: String,
    home: ScratchDir,
    podman: Option<Podman>,
    /// `CONTAINERS_STORAGE_CONF` for the daemon (a test's own podman storage).
    storage_conf: Option<PathBuf>,
    transcript: Transcript,
    /// Tokens made in the test, with the one output allowed to show each (its creation).
    tokens: Mutex<Vec<(String, String)>>,
}

impl ControlPlane {
    /// A daemon with `manifest` and, when given, Caddy's admin API for deploys.
    fn start(manifest: &str, caddy: Option<&Caddy>, podman: Option<Podman>) -> Self {
        let dir = ScratchDir::new("we-control");
        let port = free_port();
        let dead = free_port();
        std::fs::create_dir_all(dir.path().join("quadlet")).expect("quadlet dir");
        std::fs::write(dir.path().join("port-manifest.yaml"), manifest).expect("manifest");
        // A webhook secret of its own (searched for in every output like the tokens).
        let webhook_secret = {
            use sha2::Digest;
            let h = sha2::Sha256::digest(format!("{}-{:?}", unique_id(), Instant::now()));
            format!(
                "whsec{}",
                h.iter().map(|b| format!("{b:02x}")).collect::<String>()
            )
        };
        let secret_file = dir.path().join("webhook-secret");
        std::fs::write(&secret_file, format!("{webhook_secret}\n")).expect("secret");
        std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o600))
            .expect("chmod");
        let caddy_admin =
            caddy.map_or_else(|| format!("http://127.0.0.1:{dead}"), Caddy::admin_url);
        let text = format!(
            r#"listen = "127.0.0.1:{port}"
state_dir = "{state}"
secret_file = "{secret_file}"
max_attempts = 1
shutdown_grace = "5s"
[previews]
github_api_url = "http://127.0.0.1:{dead}"
caddy_admin = "{caddy_admin}"
quadlet_dir = "{quadlet}"
manifest = "{manifest}"
runtime = "podman"
[api]
health_deadline = "30s"
health_interval = "250ms"
drain = "1s"
"#,
            state = dir.path().join("state").display(),
            secret_file = secret_file.display(),
            quadlet = dir.path().join("quadlet").display(),
            manifest = dir.path().join("port-manifest.yaml").display(),
        );
        let config = dir.path().join("daemon.toml");
        std::fs::write(&config, text).expect("config");
        let boot = run(codeb("codeb-daemon")
            .args(["bootstrap-admin", "--config"])
            .arg(&config)
            .args(["--name", "root"]));
        assert_eq!(boot.code, 0, "bootstrap-admin: {}", boot.all());
        let admin = boot
            .stdout
            .split_whitespace()
            .find(|w| w.starts_with("codeb_"))
            .unwrap_or_else(|| panic!("no token from bootstrap-admin: {}", boot.all()))
            .to_owned();
        let log = dir.path().join("daemon.log");
        let mut cp = Self {
            dir,
            port,
            config,
            child: None,
            log,
            admin,
            webhook_secret,
            home: ScratchDir::new("we-home"),
            podman,
            storage_conf: None,
            transcript: Transcript::default(),
            tokens: Mutex::new(Vec::new()),
        };
        cp.spawn();
        cp
    }

    fn spawn(&mut self) {
        let mut cmd = codeb("codeb-daemon");
        cmd.args(["serve", "--config"]).arg(&self.config);
        if let Some(p) = &self.podman {
            p.configure(&mut cmd);
        }
        if let Some(s) = &self.storage_conf {
            cmd.env("CONTAINERS_STORAGE_CONF", s);
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log");
        let child = cmd
            .env("CODEB_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn codeb-daemon serve");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(c) = &mut self.child
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!("codeb-daemon exited with {status}:\n{}", self.log_text());
            }
            if let Ok((200, _)) = http_get(&self.url("/healthz"), Duration::from_secs(2)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "codeb-daemon not ready:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn server(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server())
    }

    /// An API call with `token` (for setup the CLI has no command for: creating projects).
    fn api(&self, method: &str, path: &str, token: &str, body: &Value) -> (u16, String) {
        let auth = format!("Bearer {token}");
        let body = if body.is_null() {
            Vec::new()
        } else {
            body.to_string().into_bytes()
        };
        http_request(
            method,
            &self.url(path),
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            &body,
            Duration::from_secs(30),
        )
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    fn create_project(&self, spec: &Value) {
        let (status, body) = self.api("POST", "/api/v1/projects", &self.admin, spec);
        assert_eq!(status, 201, "create project: {body}");
    }

    /// `we` with `token` from the environment (as CI would), recorded.
    fn we_as(&self, token: &str, args: &[&str]) -> Run {
        let mut c = we(self.home.path());
        c.env(vars::CODEB_SERVER, self.server())
            .env(vars::CODEB_TOKEN, token)
            .args(args);
        let r = run(&mut c);
        self.transcript.record(&args.join(" "), &r);
        r
    }

    /// `we` with the stored credentials, recorded.
    fn we_stored(&self, args: &[&str]) -> Run {
        let r = run(we(self.home.path()).args(args));
        self.transcript.record(&args.join(" "), &r);
        r
    }
}

impl ControlPlane {
    /// Every generated secret (the bootstrap token, each token `we team add` made, the
    /// webhook secret, `extra`) is absent from every captured output: each `we` output
    /// (including `we audit --json`, the audit entries) except the one that created it, and
    /// the daemon's log.
    fn assert_secrets_kept(&self, extra: &[&str]) {
        self.assert_secrets_kept_with(&self.admin, extra);
    }

    /// [`Self::assert_secrets_kept`], reading the audit log with `reader` (an admin token).
    fn assert_secrets_kept_with(&self, reader: &str, extra: &[&str]) {
        let r = self.we_as(
            reader,
            &["audit", "--since", "1d", "--json", "--limit", "10000"],
        );
        assert_eq!(r.code, 0, "audit: {}", r.all());
        assert!(
            json(&r).as_array().is_some_and(|a| !a.is_empty()),
            "no audit entries"
        );
        let tokens = self
            .tokens
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let mut secrets: Vec<&str> = vec![&self.admin, &self.webhook_secret, reader];
        secrets.extend(tokens.iter().map(|(_, t)| t.as_str()));
        secrets.extend_from_slice(extra);
        let allowed: Vec<(&str, &str)> = tokens
            .iter()
            .map(|(w, t)| (w.as_str(), t.as_str()))
            .collect();
        self.transcript.assert_no_secret(&secrets, &allowed);
        let log = self.log_text();
        assert!(!log.is_empty(), "no daemon log captured");
        for s in &secrets {
            assert!(!log.contains(s), "the daemon log contains a secret");
            assert!(
                s.len() < 30 || !log.contains(&s[6..30]),
                "the daemon log contains part of a secret"
            );
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.kill();
    }
}

fn json(r: &Run) -> Value {
    serde_json::from_str(r.stdout.trim())
        .unwrap_or_else(|e| panic!("stdout is not one JSON value ({e}): {}", r.all()))
}

/// Adds a member; returns (id, token).
fn add_member(cp: &ControlPlane, name: &str, role: &str, extra: &[&str]) -> (i64, String) {
    let mut args = vec!["team", "add", name, "--role", role, "--json"];
    args.extend_from_slice(extra);
    let r = cp.we_as(&cp.admin, &args);
    assert_eq!(r.code, 0, "team add {name}: {}", r.all());
    let v = json(&r);
    let token = v["token"]["token"].as_str().expect("token").to_owned();
    cp.tokens
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push((args.join(" "), token.clone()));
    (v["user"]["id"].as_i64().expect("id"), token)
}

fn project_spec(name: &str, image: &str) -> Value {
    serde_json::json!({
        "name": name,
        "type": "dockerfile",
        "repository": format!("acme/{name}"),
        "image": image,
        "container_port": 3000,
        "health_path": "/api/health",
        "environments": [{"name": "production"}, {"name": "staging"}],
        "owners": [],
    })
}

#[test]
fn we_login_team_roles_and_audit_over_the_real_daemon() {
    let mine = project_name("wemine");
    let other = project_name("weother");
    let manifest = format!(
        "version: 1\nprojects:\n  {mine}:\n    production: {{port: 4471}}\n  {other}:\n    production: {{port: 4472}}\n"
    );
    let cp = ControlPlane::start(&manifest, None, None);
    cp.create_project(&project_spec(&mine, "127.0.0.1:1/acme/mine"));
    cp.create_project(&project_spec(&other, "127.0.0.1:1/acme/other"));

    // Login: the token from stdin, checked with the server, stored 0600.
    let r = run_with_stdin(
        we(cp.home.path()).args(["login", "--server", &cp.server()]),
        &format!("{}\n", cp.admin),
    );
    cp.transcript.record("login", &r);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stderr.contains("as root (admin)"), "{}", r.all());
    let creds = credentials(cp.home.path());
    let mode = std::fs::metadata(&creds)
        .expect("credentials")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let r = cp.we_stored(&["whoami", "--json"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(json(&r)["user"]["role"], "admin");

    // A wrong token is refused at login (exit 4) and nothing changes on disk.
    let before = std::fs::read(&creds).expect("read");
    let stranger = crate::we_cli::token(77);
    let r = run_with_stdin(
        we(cp.home.path()).args(["login", "--server", &cp.server()]),
        &stranger,
    );
    cp.transcript.record("login stranger", &r);
    assert_eq!(r.code, 4, "{}", r.all());
    assert_eq!(std::fs::read(&creds).expect("read"), before);

    // The team: a developer owning `mine`, a viewer.
    let (dev_id, dev) = add_member(&cp, "dev", "developer", &["--projects", &mine]);
    let (viewer_id, viewer) = add_member(&cp, "viewer", "viewer", &[]);
    let r = cp.we_stored(&["team", "list"]);
    assert_eq!(r.code, 0, "{}", r.all());
    for n in ["root", "dev", "viewer", &mine] {
        assert!(r.stdout.contains(n), "team list lacks {n}: {}", r.all());
    }
    let r = cp.we_stored(&["team", "status", "--json"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(json(&r)["users"], 3);

    // Forbidden is exit 3, for writes of a viewer and a developer's foreign project; the
    // deploys are refused before any job exists.
    for (token, args) in [
        (&viewer, vec!["team", "add", "eve", "--role", "admin"]),
        (
            &viewer,
            vec![
                "deploy",
                &mine,
                "-e",
                "production",
                "--skip-scan",
                "--image",
                "x/y:1",
            ],
        ),
        (&viewer, vec!["rollback", &mine, "-e", "production"]),
        (&viewer, vec!["ssot", "sync", "--dry-run"]),
        (&viewer, vec!["audit"]),
        (
            &dev,
            vec![
                "deploy",
                &other,
                "-e",
                "production",
                "--skip-scan",
                "--image",
                "x/y:1",
            ],
        ),
        (&dev, vec!["rollback", &other, "-e", "production"]),
        (&dev, vec!["logs", &other]),
        (&dev, vec!["team", "role", "2", "admin"]),
    ] {
        let r = cp.we_as(token, &args);
        assert_eq!(r.code, 3, "{args:?}: {}", r.all());
        assert!(r.stdout.is_empty(), "{args:?}: {}", r.all());
        assert!(r.stderr.contains("forbidden"), "{args:?}: {}", r.all());
    }
    // Reads are open to a viewer.
    for args in [
        &["up", "--json"][..],
        &["team", "list"],
        &["ssot", "status"],
    ] {
        let r = cp.we_as(&viewer, args);
        assert!(r.code == 0 || r.code == 1, "{args:?}: {}", r.all());
    }

    // Role change and toggle by the admin; a disabled member's token is refused (exit 4).
    let r = cp.we_stored(&[
        "team",
        "role",
        &viewer_id.to_string(),
        "developer",
        "--json",
    ]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(json(&r)["role"], "developer");
    let r = cp.we_stored(&["team", "toggle", &viewer_id.to_string(), "--json"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(json(&r)["enabled"], false);
    let r = cp.we_as(&viewer, &["up"]);
    assert_eq!(r.code, 4, "disabled: {}", r.all());

    // An expired token: exit 4 saying so.
    let (_, short) = add_member(&cp, "brief", "viewer", &["--expires-in", "1s"]);
    std::thread::sleep(Duration::from_millis(2100));
    let r = cp.we_as(&short, &["whoami"]);
    assert_eq!(r.code, 4, "{}", r.all());
    assert!(r.stderr.contains("expired"), "{}", r.all());

    // Bad input: names the server refuses are refused by `we` first (exit 2).
    let r = cp.we_as(&dev, &["team", "role", &dev_id.to_string(), "root"]);
    assert_eq!(r.code, 2, "{}", r.all());

    // The audit log has the denied deploy with its actor, and no token.
    let r = cp.we_stored(&["audit", "--project", &other, "--since", "1h", "--json"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let entries = json(&r);
    let denied: Vec<&Value> = entries
        .as_array()
        .expect("array")
        .iter()
        .filter(|e| e["result"] == "denied" && e["actor"] == "dev")
        .collect();
    assert!(!denied.is_empty(), "no denied entry of dev: {entries}");
    let r = cp.we_stored(&["audit", "--since", "1h"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("denied"), "{}", r.all());

    // Logout revokes the stored token on the server.
    let r = cp.we_stored(&["logout"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(!creds.exists());
    let r = cp.we_as(&cp.admin, &["whoami"]);
    assert_eq!(r.code, 4, "revoked: {}", r.all());

    // The audit is read with a fresh admin token (the bootstrap one was revoked above).
    let boot = run(codeb("codeb-daemon")
        .args(["bootstrap-admin", "--config"])
        .arg(&cp.config)
        .args(["--name", "root2", "--force"]));
    assert_eq!(boot.code, 0, "bootstrap-admin: {}", boot.all());
    let _ = (dev_id, viewer_id);
    let root2 = boot
        .stdout
        .split_whitespace()
        .find(|w| w.starts_with("codeb_"))
        .expect("a token")
        .to_owned();
    cp.assert_secrets_kept_with(&root2, &[&stranger]);
}

// ---------------------------------------------------------------------------------------
// Deploys through `we`

/// The public port P of a target whose slot ports 10000+P and 20000+P are free too, never one
/// handed to another test of this process (tests running at the same time would otherwise pick
/// the same free triple before either binds it).
fn free_triple(range: std::ops::RangeInclusive<u16>) -> u16 {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let mut handed = HANDED_OUT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let bindable = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
    let len = range.end() - range.start() + 1;
    let offset = u16::try_from(std::process::id() % u32::from(len)).unwrap_or(0);
    let port = (0..len)
        .map(|i| range.start() + (offset + i) % len)
        .find(|&p| !handed.contains(&p) && [p, p + 10000, p + 20000].into_iter().all(bindable))
        .expect("a free port triple");
    handed.insert(port);
    port
}

fn version_on(port: u16) -> Option<String> {
    let (status, body) = http_get(
        &format!("http://127.0.0.1:{port}/api/health"),
        Duration::from_secs(5),
    )
    .ok()?;
    let v: Value = serde_json::from_str(&body).ok()?;
    (status == 200).then(|| v["version"].as_str().unwrap_or_default().to_owned())
}

/// Removes the containers of `project` (the names the engine gives them).
fn remove_containers(podman: &Podman, project: &str) {
    if let Ok(names) = podman.run(&[
        "ps",
        "-a",
        "--filter",
        &format!("name=^{project}-"),
        "--format",
        "{{.Names}}",
    ]) {
        for n in names
            .lines()
            .filter(|n| n.starts_with(&format!("{project}-")))
        {
            let _ = podman.run(&["rm", "-f", "-t", "0", n]);
        }
    }
}

/// The project's repository: the workflow codeb-workflow-gen generates for it and a `.env`.
fn repository(dir: &Path, project: &str, registry: &str) -> PathBuf {
    let repo = dir.join("repo");
    std::fs::create_dir_all(repo.join(".github/workflows")).expect("mkdir");
    std::fs::create_dir_all(repo.join(".git")).expect("git dir");
    let r = run(codeb("codeb-workflow-gen").current_dir(&repo).args([
        "--project",
        project,
        "--type",
        "dockerfile",
        "--registry",
        registry,
    ]));
    assert_eq!(r.code, 0, "workflow-gen: {}", r.all());
    std::fs::write(repo.join(".env"), "PORT=3000\n").expect("env");
    repo
}

#[test]
fn we_deploy_rollback_health_and_logs_with_real_podman_registry_and_caddy() {
    let podman = Podman::new();
    let registry = Registry::start();
    podman.trust_insecure(&registry.host_port());
    let images = SampleImages::build_and_push(&podman, &registry);
    let caddy = Caddy::start();
    let project = project_name("wedeploy");
    let port = free_triple(4300..=4460);
    let manifest =
        format!("version: 1\nprojects:\n  {project}:\n    production: {{port: {port}}}\n");
    let cp = ControlPlane::start(&manifest, Some(&caddy), Some(podman.clone()));
    struct Cleanup<'a>(&'a Podman, String);
    impl Drop for Cleanup<'_> {
        fn drop(&mut self) {
            remove_containers(self.0, &self.1);
        }
    }
    let _cleanup = Cleanup(&podman, project.clone());
    // Production only: an environment in the registry with no port is rightly unhealthy.
    let mut spec = project_spec(&project, &images.repository);
    spec["environments"] = serde_json::json!([{"name": "production"}]);
    cp.create_project(&spec);
    let repo = repository(cp.dir.path(), &project, &registry.host_port());
    let repo_s = repo.display().to_string();
    let admin = cp.admin.clone();
    let (_, dev) = add_member(&cp, "dev", "developer", &["--projects", &project]);
    let v = |tag: &str| images.get(tag).reference.clone();

    // The repository agrees with the server.
    let r = cp.we_as(&dev, &["scan", &project, "--diff", "--dir", &repo_s]);
    assert_eq!(r.code, 0, "scan: {}", r.all());
    assert!(r.stdout.contains("up-to-date"), "{}", r.all());

    // A dry run changes nothing.
    let r = cp.we_as(
        &dev,
        &[
            "deploy",
            &project,
            "-e",
            "production",
            "--image",
            &v("v1"),
            "--dir",
            &repo_s,
            "--dry-run",
            "--json",
        ],
    );
    assert_eq!(r.code, 0, "dry run: {}", r.all());
    let plan: Vec<Value> = r
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    let plan = plan
        .iter()
        .find(|l| l["type"] == "plan")
        .expect("a plan line");
    assert_eq!(plan["plan"]["digest"], images.get("v1").digest.as_str());
    assert_eq!(plan["plan"]["port"], port);
    assert_eq!(version_on(port), None, "a dry run deployed something");

    // v1, then v2 blue-green, by the developer who owns the project.
    for tag in ["v1", "v2"] {
        let r = cp.we_as(
            &dev,
            &[
                "deploy",
                &project,
                "-e",
                "production",
                "--image",
                &v(tag),
                "--dir",
                &repo_s,
            ],
        );
        assert_eq!(r.code, 0, "deploy {tag}: {}\n{}", r.all(), cp.log_text());
        assert!(r.stdout.contains("done"), "{}", r.all());
        assert_eq!(version_on(port).as_deref(), Some(tag));
    }

    // Health and up see it; --json is one value.
    let r = cp.we_as(&dev, &["health", &project, "--verbose"]);
    assert_eq!(r.code, 0, "health: {}", r.all());
    assert!(r.stdout.contains("healthy"), "{}", r.all());
    let r = cp.we_as(&dev, &["up", "--json"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let up = json(&r);
    assert!(
        up["containers"]
            .as_array()
            .expect("containers")
            .iter()
            .any(|c| c["project"] == project.as_str() && c["state"] == "running"),
        "{up}"
    );

    // Logs: the serving container's real output.
    let r = cp.we_as(&dev, &["logs", &project, "--tail", "20"]);
    assert_eq!(r.code, 0, "logs: {}", r.all());
    assert!(
        r.stdout.contains("codeb-sample-app v2 listening"),
        "{}",
        r.all()
    );

    // logs -f across a deploy: the old container's stream ends, `we` reconnects and shows
    // the new release's output.
    let mut follow = we(cp.home.path());
    follow
        .env(vars::CODEB_SERVER, cp.server())
        .env(vars::CODEB_TOKEN, &dev)
        .args(["logs", &project, "-f", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = follow.spawn().expect("spawn we logs -f");
    let seen = std::sync::Arc::new(Mutex::new(String::new()));
    let reader = {
        let seen = seen.clone();
        let stdout = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                let mut s = seen
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                s.push_str(&line);
                s.push('\n');
            }
        })
    };
    std::thread::sleep(Duration::from_secs(1));

    // Drift refuses the deploy (exit 1) unless --force.
    let wf = repo.join(format!(".github/workflows/{project}-deploy.yml"));
    let text = std::fs::read_to_string(&wf).expect("workflow");
    std::fs::write(&wf, text.replacen("timeout-minutes", "timeout-minutes ", 1)).expect("edit");
    let r = cp.we_as(
        &dev,
        &[
            "deploy",
            &project,
            "-e",
            "production",
            "--image",
            &v("v1"),
            "--dir",
            &repo_s,
        ],
    );
    assert_eq!(r.code, 1, "drift: {}", r.all());
    assert!(
        r.stderr.contains("drift") && r.stderr.contains("--force"),
        "{}",
        r.all()
    );
    assert_eq!(
        version_on(port).as_deref(),
        Some("v2"),
        "refused, nothing changed"
    );
    let r = cp.we_as(
        &dev,
        &["scan", &project, "--diff", "--dir", &repo_s, "--json"],
    );
    assert_eq!(r.code, 1, "{}", r.all());
    assert_eq!(json(&r)["drift"], true);
    let r = cp.we_as(
        &dev,
        &[
            "deploy",
            &project,
            "-e",
            "production",
            "--image",
            &v("v1"),
            "--dir",
            &repo_s,
            "--force",
        ],
    );
    assert_eq!(r.code, 0, "forced deploy: {}", r.all());
    assert_eq!(version_on(port).as_deref(), Some("v1"));

    // The follower saw v1 start in the new slot.
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline
        && !seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains("v1 listening")
    {
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = child.kill();
    let out = child.wait_with_output().expect("we logs -f output");
    let _ = reader.join();
    let stdout = seen
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    cp.transcript.record(
        "logs -f",
        &Run {
            code: 0,
            stdout: stdout.clone(),
            stderr: stderr.clone(),
        },
    );
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect();
    let sources: Vec<&Value> = lines.iter().filter(|l| l["type"] == "source").collect();
    assert!(
        sources.len() >= 2,
        "no reconnect to the new container:\n{stdout}\n{stderr}"
    );
    assert!(
        lines.iter().any(|l| l["type"] == "line"
            && l["line"]
                .as_str()
                .is_some_and(|s| s.contains("v1 listening"))),
        "the new release's output was not followed:\n{stdout}\n{stderr}"
    );
    let mut counts = BTreeMap::new();
    for l in lines.iter().filter(|l| l["type"] == "line") {
        *counts.entry(l["line"].to_string()).or_insert(0) += 1;
    }
    assert!(
        counts.values().all(|n| *n == 1),
        "a line was repeated: {counts:?}"
    );

    // Rollback goes back to v2; a broken release (v3) fails (exit 1) and v2 keeps serving.
    let r = cp.we_as(&dev, &["rollback", &project, "-e", "production"]);
    assert_eq!(r.code, 0, "rollback: {}", r.all());
    assert_eq!(version_on(port).as_deref(), Some("v2"));
    let r = cp.we_as(
        &admin,
        &[
            "deploy",
            &project,
            "-e",
            "production",
            "--image",
            &v("v3"),
            "--skip-scan",
        ],
    );
    assert_eq!(r.code, 1, "a broken release: {}", r.all());
    assert_eq!(version_on(port).as_deref(), Some("v2"));
    let r = cp.we_as(&dev, &["health", &project]);
    assert_eq!(r.code, 0, "{}", r.all());

    let _ = dev;
    cp.assert_secrets_kept(&[]);
}

// ---------------------------------------------------------------------------------------
// The host side: `we ssot sync` and `we scan --ports`, and faults

/// Podman storage of this test's own (graphroot and runroot under a scratch dir), so that
/// `ssot sync` sees only the containers this test makes: with the shared storage it would
/// find (and rightly call orphans) the containers of every test running beside it.
struct OwnStorage {
    podman: Podman,
    dir: ScratchDir,
}

impl OwnStorage {
    fn new(podman: &Podman) -> Self {
        let dir = ScratchDir::new("we-storage");
        let conf = format!(
            "[storage]\ndriver = \"overlay\"\ngraphroot = \"{0}/graph\"\nrunroot = \"{0}/run\"\n",
            dir.path().display()
        );
        std::fs::write(dir.path().join("storage.conf"), conf).expect("storage.conf");
        Self {
            podman: podman.clone(),
            dir,
        }
    }

    fn conf(&self) -> PathBuf {
        self.dir.path().join("storage.conf")
    }

    fn configure<'c>(&self, cmd: &'c mut std::process::Command) -> &'c mut std::process::Command {
        self.podman
            .configure(cmd)
            .env("CONTAINERS_STORAGE_CONF", self.conf())
    }

    fn run(&self, args: &[&str]) -> Result<String, String> {
        let mut c = std::process::Command::new("podman");
        self.configure(&mut c).args(args).stdin(Stdio::null());
        let out = c.output().map_err(|e| format!("podman: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(format!(
                "podman {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    fn exists(&self, name: &str) -> bool {
        self.run(&["container", "exists", name]).is_ok()
    }
}

impl Drop for OwnStorage {
    fn drop(&mut self) {
        let _ = self.run(&["rm", "-a", "-f", "-t", "0"]);
        let _ = self.run(&["rmi", "-a", "-f"]);
        let _ = self.run(&["system", "prune", "-a", "-f"]);
    }
}

fn spawn_daemon_env(cp: &mut ControlPlane, storage: &OwnStorage) {
    cp.storage_conf = Some(storage.conf());
    cp.kill();
    cp.spawn();
}

fn findings(v: &Value) -> Vec<(String, String, Value)> {
    v["findings"]
        .as_array()
        .unwrap_or_else(|| panic!("no findings: {v}"))
        .iter()
        .map(|f| {
            (
                f["kind"].as_str().unwrap_or_default().to_owned(),
                f["target"].as_str().unwrap_or_default().to_owned(),
                f["repaired"].clone(),
            )
        })
        .collect()
}

#[test]
fn we_ssot_sync_repairs_a_missing_route_and_an_orphan_container_and_scan_ports_shows_conflicts() {
    let podman = Podman::new();
    let registry = Registry::start();
    podman.trust_insecure(&registry.host_port());
    let images = SampleImages::build_and_push(&podman, &registry);
    let storage = OwnStorage::new(&podman);
    let caddy = Caddy::start();
    let project = project_name("wesync");
    let ghost = project_name("weghost");
    let port = free_triple(4300..=4460);
    // The ghost's port is held by a process that is not its container: a conflict.
    let squatter = crate::util::listen_in(4461..=4499);
    let ghost_port = squatter.local_addr().expect("addr").port();
    let manifest_path_text = |with_ghost: bool| {
        let mut m =
            format!("version: 1\nprojects:\n  {project}:\n    production: {{port: {port}}}\n");
        if with_ghost {
            m.push_str(&format!(
                "  {ghost}:\n    production: {{port: {ghost_port}}}\n"
            ));
        }
        m
    };
    let mut cp = ControlPlane::start(
        &manifest_path_text(true),
        Some(&caddy),
        Some(podman.clone()),
    );
    spawn_daemon_env(&mut cp, &storage);
    let mut spec = project_spec(&project, &images.repository);
    spec["environments"] = serde_json::json!([{"name": "production"}]);
    cp.create_project(&spec);
    let admin = cp.admin.clone();
    let v1 = images.get("v1");

    let r = cp.we_as(
        &admin,
        &[
            "deploy",
            &project,
            "-e",
            "production",
            "--image",
            &v1.reference,
            "--skip-scan",
        ],
    );
    assert_eq!(r.code, 0, "deploy: {}\n{}", r.all(), cp.log_text());
    assert_eq!(version_on(port).as_deref(), Some("v1"));

    // The host drifts: Caddy loses the front, and a container with codeb's labels that no
    // project claims appears (stopped, so sync may remove it without --force).
    let (status, body) = http_request(
        "DELETE",
        &format!("{}/id/codeb-{project}-production", caddy.admin_url()),
        &[],
        &[],
        Duration::from_secs(10),
    )
    .expect("caddy delete");
    assert_eq!(status, 200, "{body}");
    assert_eq!(version_on(port), None, "the front is gone");
    let orphan = format!("{ghost}-production-blue");
    storage
        .run(&[
            "create",
            "--name",
            &orphan,
            "--label",
            "codeb.slot=blue",
            "--label",
            &format!("codeb.project={ghost}"),
            "--label",
            "codeb.environment=production",
            &v1.by_digest(),
        ])
        .expect("create the orphan");

    // status: not in sync (exit 1). The dry run plans both repairs and changes nothing.
    let r = cp.we_as(&admin, &["ssot", "status"]);
    assert_eq!(r.code, 1, "{}", r.all());
    let r = cp.we_as(&admin, &["ssot", "sync", "--dry-run", "--json"]);
    assert_eq!(r.code, 1, "{}", r.all());
    let plan = json(&r);
    let f = findings(&plan);
    let route = ("missing_route".to_owned(), format!("{project}/production"));
    let orphan_f = ("orphan_container".to_owned(), orphan.clone());
    let ghost_f = (
        "manifest_without_project".to_owned(),
        format!("{ghost}/production"),
    );
    for want in [&route, &orphan_f, &ghost_f] {
        assert!(
            f.iter()
                .any(|(k, t, rep)| (k, t) == (&want.0, &want.1) && rep.is_null()),
            "dry run lacks {want:?} (unrepaired): {plan}"
        );
    }
    assert_eq!(f.len(), 3, "only what this test broke: {plan}");
    let r = cp.we_as(&admin, &["ssot", "sync", "--dry-run"]);
    assert!(r.stdout.contains("would repair"), "{}", r.all());
    assert_eq!(version_on(port), None, "a dry run changed Caddy");
    assert!(storage.exists(&orphan), "a dry run removed the orphan");

    // The sync repairs both and reports the ghost (exit 1: one finding is not repairable).
    let r = cp.we_as(&admin, &["ssot", "sync", "--json"]);
    assert_eq!(r.code, 1, "{}", r.all());
    let done = json(&r);
    let f = findings(&done);
    for want in [&route, &orphan_f] {
        assert!(
            f.iter()
                .any(|(k, t, rep)| (k, t) == (&want.0, &want.1) && rep == &Value::Bool(true)),
            "not repaired: {want:?}: {done}"
        );
    }
    assert_eq!(version_on(port).as_deref(), Some("v1"), "the front is back");
    assert!(!storage.exists(&orphan), "the orphan is still there");

    // scan --ports: the manifest against the listening sockets; the squatter is a conflict.
    let r = cp.we_as(&admin, &["scan", "--ports", "--json"]);
    assert_eq!(r.code, 1, "{}", r.all());
    let ports = json(&r);
    assert!(
        ports["conflicts"]
            .as_array()
            .expect("conflicts")
            .iter()
            .any(|c| c["port"] == ghost_port),
        "{ports}"
    );
    assert!(
        ports["entries"]
            .as_array()
            .expect("entries")
            .iter()
            .any(|e| e["port"] == port
                && e["listening"] == true
                && e["project"] == project.as_str()),
        "{ports}"
    );
    let r = cp.we_as(&admin, &["scan", "--ports"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stderr.contains(&format!("port {ghost_port}")),
        "{}",
        r.all()
    );

    // Without the ghost everything agrees: sync and scan exit 0.
    drop(squatter);
    std::fs::write(
        cp.dir.path().join("port-manifest.yaml"),
        manifest_path_text(false),
    )
    .expect("manifest");
    let r = cp.we_as(&admin, &["ssot", "sync"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stderr.contains("nothing to do"), "{}", r.all());
    let r = cp.we_as(&admin, &["scan", "--ports"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let r = cp.we_as(&admin, &["ssot", "status"]);
    assert_eq!(r.code, 0, "{}", r.all());

    cp.assert_secrets_kept(&[]);
}

/// A `we` process whose stdout lines are collected as they come.
struct Background {
    child: Child,
    lines: std::sync::Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Background {
    fn spawn(cp: &ControlPlane, token: &str, args: &[&str]) -> Self {
        let mut c = we(cp.home.path());
        c.env(vars::CODEB_SERVER, cp.server())
            .env(vars::CODEB_TOKEN, token)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().expect("spawn we");
        let lines = std::sync::Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().expect("stdout");
        let l2 = lines.clone();
        let reader = std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                l2.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(line);
            }
        });
        Self {
            child,
            lines,
            reader: Some(reader),
        }
    }

    fn lines(&self) -> Vec<String> {
        self.lines
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Waits (bounded) until a stdout line satisfies `f`.
    fn wait_line(&self, what: &str, f: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(v) = self
                .lines()
                .iter()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|v| f(v))
            {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "no {what} line: {:?}",
                self.lines()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits for the exit (bounded); records the output in the transcript.
    fn finish(mut self, cp: &ControlPlane, what: &str) -> Run {
        let deadline = Instant::now() + Duration::from_secs(180);
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("`we {what}` did not end: {:?}", self.lines());
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let mut stderr = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut stderr);
        }
        let r = Run {
            code: status.code().unwrap_or(-1),
            stdout: self.lines().join("\n"),
            stderr,
        };
        cp.transcript.record(what, &r);
        r
    }
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn history(cp: &ControlPlane, podman: &Podman, project: &str) -> Vec<(String, String)> {
    let mut c = crate::util::scrubbed(crate::util::bin("codeb-quadlet-update"));
    podman.configure(&mut c);
    c.args([
        "history",
        "--project",
        project,
        "--environment",
        "production",
    ])
    .arg("--quadlet-dir")
    .arg(cp.dir.path().join("quadlet"))
    .args(["--format", "json"]);
    let r = run(&mut c);
    assert_eq!(r.code, 0, "history: {}", r.all());
    let h: Value = serde_json::from_str(&r.stdout).expect("history JSON");
    h["releases"]
        .as_array()
        .expect("releases")
        .iter()
        .map(|r| {
            (
                r["digest"].as_str().unwrap_or_default().to_owned(),
                r["outcome"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// Issue 10's faults with real deploys: a runner deploy (`codeb-quadlet-update`, the step
/// binary) holding the target's lock makes a `we deploy` wait, name the holder and time out
/// clearly, or wait its turn; a daemon SIGKILLed mid-job reports the job interrupted after
/// the restart, never runs it again, and leaves the lock free.
#[test]
fn we_deploy_waits_for_the_runners_lock_and_a_killed_daemon_interrupts_its_job() {
    let podman = Podman::new();
    let registry = Registry::start();
    podman.trust_insecure(&registry.host_port());
    let images = SampleImages::build_and_push(&podman, &registry);
    let caddy = Caddy::start();
    let project = project_name("welock");
    let port = free_triple(4300..=4460);
    let manifest =
        format!("version: 1\nprojects:\n  {project}:\n    production: {{port: {port}}}\n");
    let mut cp = ControlPlane::start(&manifest, Some(&caddy), Some(podman.clone()));
    struct Cleanup<'a>(&'a Podman, String);
    impl Drop for Cleanup<'_> {
        fn drop(&mut self) {
            remove_containers(self.0, &self.1);
        }
    }
    let _cleanup = Cleanup(&podman, project.clone());
    let mut spec = project_spec(&project, &images.repository);
    spec["environments"] = serde_json::json!([{"name": "production"}]);
    cp.create_project(&spec);
    let admin = cp.admin.clone();
    let (v1, v2, v3) = (images.get("v1"), images.get("v2"), images.get("v3"));
    let deploy = |img: &str, extra: &[&str]| {
        let mut a = vec![
            "deploy",
            &project,
            "-e",
            "production",
            "--image",
            img,
            "--skip-scan",
        ];
        a.extend_from_slice(extra);
        a.into_iter().map(str::to_owned).collect::<Vec<String>>()
    };

    let r = cp.we_as(&admin, &args(&deploy(&v1.reference, &[])));
    assert_eq!(r.code, 0, "v1: {}\n{}", r.all(), cp.log_text());
    assert_eq!(version_on(port).as_deref(), Some("v1"));

    // The runner's deploy of the broken v3: it holds the lock through its health deadline.
    let mut runner = crate::util::scrubbed(crate::util::bin("codeb-quadlet-update"));
    podman.configure(&mut runner);
    runner
        .args([
            "deploy",
            "--project",
            &project,
            "--environment",
            "production",
        ])
        .args(["--image", &v3.reference])
        .arg("--manifest")
        .arg(cp.dir.path().join("port-manifest.yaml"))
        .arg("--quadlet-dir")
        .arg(cp.dir.path().join("quadlet"))
        .args(["--runtime", "podman", "--caddy-admin", &caddy.admin_url()])
        .args([
            "--drain",
            "1s",
            "--health-deadline",
            "15s",
            "--health-interval",
            "250ms",
        ])
        .args(["--health-cmd", "none", "--actor", "the-runner"])
        .env("GITHUB_OUTPUT", cp.dir.path().join("github-output"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let runner = runner.spawn().expect("spawn codeb-quadlet-update");
    let runner_pid = runner.id();
    let holder = cp
        .dir
        .path()
        .join(format!("quadlet/.codeb/{project}-production.holder"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&holder)
        .unwrap_or_default()
        .contains(&format!("pid {runner_pid} "))
    {
        assert!(Instant::now() < deadline, "the runner never took the lock");
        std::thread::sleep(Duration::from_millis(50));
    }

    // A `we deploy` with a short lock timeout waits, names the runner, and fails (exit 1).
    let r = cp.we_as(
        &admin,
        &args(&deploy(&v2.reference, &["--lock-timeout", "2s"])),
    );
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stderr.contains("waiting for the lock")
            && r.stderr.contains(&format!("pid {runner_pid}"))
            && r.stderr.contains("the-runner"),
        "the wait names the holder: {}",
        r.all()
    );
    assert!(
        r.stderr.contains("holds the lock") && r.stderr.contains("lock_timeout"),
        "a clear timeout: {}",
        r.all()
    );

    // One with a long timeout waits its turn, then deploys.
    let waiter = Background::spawn(
        &cp,
        &admin,
        &args(&deploy(&v2.reference, &["--lock-timeout", "2m", "--json"])),
    );
    let waiting = waiter.wait_line("waiting", |v| v["type"] == "waiting");
    assert!(
        waiting.to_string().contains(&format!("pid {runner_pid}")),
        "{waiting}"
    );
    let out = runner.wait_with_output().expect("runner");
    assert_ne!(
        out.status.code(),
        Some(0),
        "v3 is broken: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = waiter.finish(&cp, "deploy v2 waiting");
    assert_eq!(r.code, 0, "{}\n{}", r.all(), cp.log_text());
    assert_eq!(version_on(port).as_deref(), Some("v2"));
    // One after the other: the runner's v3 was decided (rolled back) before v2 went active.
    let h = history(&cp, &podman, &project);
    assert_eq!(
        h.iter().take(3).cloned().collect::<Vec<_>>(),
        vec![
            (v2.digest.clone(), "active".to_owned()),
            (v3.digest.clone(), "rolled-back".to_owned()),
            (v1.digest.clone(), "superseded".to_owned()),
        ],
        "{h:?}"
    );

    // The daemon SIGKILLed while a job health-checks v3 (the daemon's deadline is 30 s).
    let follower = Background::spawn(&cp, &admin, &args(&deploy(&v3.reference, &["--json"])));
    let job = follower.wait_line("job", |v| v["type"] == "job");
    let job_id = job["job"]["id"].as_i64().expect("job id");
    follower.wait_line("a failed health probe", |v| {
        v["type"] == "progress" && v["message"].as_str().is_some_and(|m| m.contains("probe"))
    });
    std::thread::sleep(Duration::from_millis(500));
    cp.kill(); // SIGKILL
    cp.spawn();
    let r = follower.finish(&cp, "deploy v3 across a daemon kill");
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("interrupted"), "{}", r.all());
    let (status, body) = cp.api(
        "GET",
        &format!("/api/v1/jobs/{job_id}"),
        &admin,
        &Value::Null,
    );
    assert_eq!(status, 200, "{body}");
    let j: Value = serde_json::from_str(&body).expect("job JSON");
    assert_eq!(j["state"], "interrupted", "{j}");
    assert_eq!(version_on(port).as_deref(), Some("v2"), "v2 kept serving");
    // Never run again: no job runs now, and the history has the one attempt.
    std::thread::sleep(Duration::from_secs(2));
    let (_, body) = cp.api("GET", "/api/v1/jobs", &admin, &Value::Null);
    let jobs: Value = serde_json::from_str(&body).expect("jobs JSON");
    assert!(
        jobs.as_array()
            .expect("jobs")
            .iter()
            .all(|j| j["state"] != "running" && j["state"] != "queued"),
        "{jobs}"
    );
    let attempts = history(&cp, &podman, &project)
        .iter()
        .filter(|(d, _)| d == &v3.digest)
        .count();
    assert!(
        attempts <= 2,
        "v3: the runner's attempt and at most the killed job's"
    );
    // The lock is free: the next deploy does not wait, and succeeds over the leftovers.
    let r = cp.we_as(
        &admin,
        &args(&deploy(&v1.reference, &["--lock-timeout", "5s"])),
    );
    assert_eq!(r.code, 0, "{}\n{}", r.all(), cp.log_text());
    assert!(!r.stderr.contains("waiting for the lock"), "{}", r.all());
    assert_eq!(version_on(port).as_deref(), Some("v1"));
    let r = cp.we_as(&admin, &["health", &project]);
    assert_eq!(r.code, 0, "{}", r.all());
    cp.assert_secrets_kept(&[]);
}

/// `X-Hub-Signature-256` of `body` under `secret`.
fn webhook_signature(secret: &str, body: &[u8]) -> String {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("hmac");
    mac.update(body);
    let tag = mac.finalize().into_bytes();
    format!(
        "sha256={}",
        tag.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

/// One garbage request on a fresh connection; the status, or 0 when the server closed the
/// connection without one (what it does to bytes that are not HTTP).
fn garbage(port: u16, n: usize) -> u16 {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return 1;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(10)));
    let bad_token = crate::we_cli::token(u8::try_from(n % 200).unwrap_or(0));
    let req: Vec<u8> = match n % 6 {
        // Malformed JSON with a token that does not exist.
        0 => format!(
            "POST /api/v1/projects HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {bad_token}\r\ncontent-type: application/json\r\ncontent-length: 9\r\nconnection: close\r\n\r\n{{\"name\":["
        )
        .into_bytes(),
        // A token with a broken checksum.
        1 => format!(
            "GET /api/v1/projects HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}x\r\nconnection: close\r\n\r\n",
            &bad_token[..bad_token.len() - 1]
        )
        .into_bytes(),
        // A huge body announced (the body limit answers before reading it).
        2 => b"POST /api/v1/projects/x/deploy HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 500000000\r\nconnection: close\r\n\r\n{\"environment\":\"production\"".to_vec(),
        // Not HTTP at all.
        3 => b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n".to_vec(),
        // No token; names that break the rules.
        4 => b"GET /api/v1/projects/..%2F..%2Fetc/logs HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".to_vec(),
        _ => format!(
            "POST /api/v1/projects/a;rm%20-rf/deploy HTTP/1.1\r\nhost: x\r\nauthorization: Bearer codeb_{}\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{{}}",
            "A".repeat(n % 300)
        )
        .into_bytes(),
    };
    if s.write_all(&req).is_err() {
        return 0;
    }
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let head = String::from_utf8_lossy(&buf);
    head.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// 1,000 requests a second of garbage at `/api/v1` for a few seconds (malformed JSON, bad
/// and broken tokens, huge bodies, bytes that are not HTTP, slowloris clients) while a
/// signed webhook is still verified and answered (a forged one refused) and an admin still reads the registry; no answer is a
/// 5xx other than 503 `overloaded`, and every token answer is 401.
#[test]
fn a_garbage_flood_at_the_api_leaves_webhooks_and_reads_served() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let cp = ControlPlane::start("version: 1\nprojects: {}\n", None, None);
    let port = cp.port;
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let sent = std::sync::Arc::new(AtomicUsize::new(0));
    let statuses = std::sync::Arc::new(Mutex::new(BTreeMap::<(usize, u16), usize>::new()));

    // Slowloris: 100 connections that send a header byte now and then.
    let slow: Vec<_> = (0..100)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                use std::io::Write;
                let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
                    return;
                };
                let _ = s.write_all(b"GET /api/v1/projects HTTP/1.1\r\nhost: x\r\n");
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) && i < 100 {
                    if s.write_all(format!("x-{i}: y\r\n").as_bytes()).is_err() {
                        break;
                    }
                    i += 1;
                    std::thread::sleep(Duration::from_millis(300));
                }
            })
        })
        .collect();

    // The flood: 8 threads, 125 requests a second each, for 4 seconds.
    const THREADS: usize = 8;
    const PER_THREAD: usize = 500;
    let started = Instant::now();
    let flood: Vec<_> = (0..THREADS)
        .map(|t| {
            let (sent, statuses) = (sent.clone(), statuses.clone());
            std::thread::spawn(move || {
                let begin = Instant::now();
                for i in 0..PER_THREAD {
                    let due = begin + Duration::from_millis(8 * i as u64);
                    if let Some(w) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(w);
                    }
                    let n = t * PER_THREAD + i;
                    let code = garbage(port, n);
                    sent.fetch_add(1, Ordering::SeqCst);
                    *statuses
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .entry((n % 6, code))
                        .or_insert(0) += 1;
                }
            })
        })
        .collect();

    // Meanwhile: signed webhooks are accepted, the admin's reads served.
    let body = std::fs::read(
        crate::util::repo().join("tests/corpora/github-webhooks/pull_request/opened.payload.json"),
    )
    .expect("corpus payload");
    let sig = webhook_signature(&cp.webhook_secret, &body);
    let mut accepted = 0;
    let mut reads = 0;
    for i in 0..5 {
        std::thread::sleep(Duration::from_millis(500));
        let during = sent.load(Ordering::SeqCst);
        let delivery = format!("flood-{}-{i}", unique_id());
        let (status, answer) = http_request(
            "POST",
            &cp.url("/webhook/github"),
            &[
                ("content-type", "application/json"),
                ("x-github-event", "pull_request"),
                ("x-github-delivery", &delivery),
                ("x-hub-signature-256", &sig),
            ],
            &body,
            Duration::from_secs(10),
        )
        .expect("webhook during the flood");
        // Verified and answered: the repository is not one this daemon previews, so the
        // delivery is acknowledged as ignored (a wrong signature is 401, below).
        assert_eq!(status, 200, "a signed webhook during the flood: {answer}");
        assert!(answer.contains("\"ignored\""), "{answer}");
        let (status, answer) = http_request(
            "POST",
            &cp.url("/webhook/github"),
            &[
                ("content-type", "application/json"),
                ("x-github-event", "pull_request"),
                ("x-github-delivery", &format!("{delivery}-forged")),
                (
                    "x-hub-signature-256",
                    &webhook_signature("not-the-secret", &body),
                ),
            ],
            &body,
            Duration::from_secs(10),
        )
        .expect("forged webhook during the flood");
        assert_eq!(status, 401, "a forged webhook during the flood: {answer}");
        assert!(
            during > 0 && during < THREADS * PER_THREAD,
            "not during the flood"
        );
        accepted += 1;
        let (status, answer) = cp.api("GET", "/api/v1/projects", &cp.admin, &Value::Null);
        assert!(status == 200 || status == 503, "{status}: {answer}");
        reads += usize::from(status == 200);
    }
    for f in flood {
        f.join().expect("flood thread");
    }
    let elapsed = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    for s in slow {
        let _ = s.join();
    }
    let total = sent.load(Ordering::SeqCst);
    let statuses = statuses
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    println!(
        "garbage flood: {total} requests in {elapsed:.1?} ({:.0}/s), {accepted} webhooks accepted, {reads}/5 admin reads served; (kind, status) -> count: {statuses:?}",
        total as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(total, THREADS * PER_THREAD);
    for (&(kind, code), n) in &statuses {
        assert!(
            code < 500 || code == 503,
            "kind {kind} got {code} ({n} times)"
        );
        match kind {
            0 | 1 => assert!(
                code == 401 || code == 503,
                "a bad token got {code} ({n} times)"
            ),
            // Refused by its Content-Length at once (the body is never sent).
            2 => assert!(code == 413 || code == 503, "a huge body got {code}"),
            3 => assert!(code == 0 || code == 400, "not HTTP got {code}"),
            _ => assert!(
                (400..500).contains(&code) || code == 503,
                "kind {kind} got {code}"
            ),
        }
    }
    // Afterwards everything answers as before.
    let (status, answer) = cp.api("GET", "/api/v1/projects", &cp.admin, &Value::Null);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        http_get(&cp.url("/healthz"), Duration::from_secs(5)).map(|r| r.0),
        Ok(200)
    );
    cp.assert_secrets_kept(&[]);
}
