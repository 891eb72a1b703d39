//! PR previews end to end: signed GitHub webhooks into a real `codeb-daemon` process, real
//! podman, a real OCI registry and Caddy; only GitHub's REST API is the fake server.

use crate::fake_github::{FakeGitHub, Pr};
use crate::infra::{
    Caddy, CaddyBuild, Podman, Registry, free_port, http_request, push_image, sample_local_images,
    sample_local_name,
};
use crate::util::{bin, scrubbed, tempdir};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Preview ports come from the shared 5000-5999 range: one preview test at a time.
static PREVIEWS: Mutex<()> = Mutex::new(());

const SECRET: &str = "preview-test-secret";
const REPO: &str = "codeb/app";

fn corpus(rel: &str) -> Value {
    let p = crate::util::repo()
        .join("tests/corpora/github-webhooks")
        .join(rel);
    serde_json::from_slice(&std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .expect("json")
}

fn sign(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("hmac key");
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// GitHub's own pull_request example, pointed at our repository, PR number and head.
fn pr_event(action: &str, pr: u64, sha: &str, head_repo: &str, labels: &[&str]) -> Value {
    let mut v = corpus(&format!("pull_request/{action}.payload.json"));
    v["action"] = json!(action);
    v["number"] = json!(pr);
    v["repository"]["full_name"] = json!(REPO);
    let p = &mut v["pull_request"];
    p["number"] = json!(pr);
    p["head"]["sha"] = json!(sha);
    p["head"]["repo"]["full_name"] = json!(head_repo);
    p["base"]["repo"]["full_name"] = json!(REPO);
    p["labels"] = json!(
        labels
            .iter()
            .map(|l| json!({"name": l}))
            .collect::<Vec<_>>()
    );
    if action == "closed" {
        p["state"] = json!("closed");
    }
    if let Some(l) = labels.first() {
        v["label"] = json!({ "name": l });
    }
    v
}

/// A ghcr.io-shaped `registry_package` published event for tag `tag`.
fn package_event(tag: &str) -> Value {
    json!({
        "action": "published",
        "registry_package": {
            "name": "app",
            "namespace": "codeb",
            "owner": { "login": "codeb", "type": "Organization" },
            "ecosystem": "CONTAINER",
            "package_type": "CONTAINER",
            "package_version": {
                "version": "sha256:0000000000000000000000000000000000000000000000000000000000000000",
                "container_metadata": { "tag": { "name": tag, "digest": "sha256:0000000000000000000000000000000000000000000000000000000000000000" } },
                "package_url": format!("ghcr.io/codeb/app:{tag}")
            },
            "registry": { "about_url": "https://docs.github.com", "name": "GitHub CONTAINER registry", "type": "CONTAINER", "url": "https://ghcr.io/codeb", "vendor": "GitHub Inc" }
        },
        "repository": { "full_name": REPO, "name": "app", "owner": { "login": "codeb" } },
        "sender": { "login": "codeb-bot" }
    })
}

struct Daemon {
    child: Child,
    url: String,
    config: PathBuf,
    env: Vec<(&'static str, PathBuf)>,
    delivery: u64,
}

impl Daemon {
    fn start(config: &Path, podman: &Podman, listen: &str) -> Self {
        let mut c = scrubbed(bin("codeb-daemon"));
        c.args(["serve", "--config"]).arg(config);
        podman.configure(&mut c);
        let child = c
            .env("CODEB_WEBHOOK_SECRET", SECRET)
            .env("GITHUB_TOKEN", "fake-token")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn codeb-daemon");
        let url = format!("http://{listen}");
        let start = Instant::now();
        while http_request(
            "GET",
            &format!("{url}/healthz"),
            &[],
            b"",
            Duration::from_secs(1),
        )
        .is_err()
        {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "codeb-daemon did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Self {
            child,
            url,
            config: config.to_owned(),
            env: podman.envs(),
            delivery: 0,
        }
    }

    fn post(&mut self, event: &str, body: &Value) -> u16 {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        self.delivery = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let body = body.to_string().into_bytes();
        let delivery = format!("{}-{}", std::process::id(), self.delivery);
        let sig = sign(&body);
        let (status, text) = http_request(
            "POST",
            &format!("{}/webhook/github", self.url),
            &[
                ("x-github-event", event),
                ("x-github-delivery", &delivery),
                ("x-github-hook-id", "4242"),
                ("x-hub-signature-256", &sig),
                ("content-type", "application/json"),
            ],
            &body,
            Duration::from_secs(10),
        )
        .expect("webhook POST");
        assert!(status < 300, "{event}: {status} {text}");
        status
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = (&self.config, &self.env);
    }
}

/// GET through Caddy's preview listener with a Host header.
fn get_host(listen: &str, host: &str, path: &str) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect(listen).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nhost: {host}\r\nconnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).map_err(|e| e.to_string())?;
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or("no status")?;
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

struct Setup {
    _cleanup: Cleanup,
    _dir: tempfile::TempDir,
    podman: Podman,
    registry: Registry,
    caddy: Caddy,
    github: FakeGitHub,
    config: PathBuf,
    listen: String,
    routes: String,
    manifest: PathBuf,
    project: String,
}

fn setup() -> Setup {
    setup_with(CaddyBuild::Debian)
}

fn setup_with(build: CaddyBuild) -> Setup {
    let dir = tempdir();
    let podman = Podman::new();
    let registry = Registry::start();
    podman.trust_insecure(&registry.host_port());
    let caddy = Caddy::start_build(build);
    let github = FakeGitHub::start();
    let project = format!("p{}", std::process::id() % 100_000);
    let listen = format!("127.0.0.1:{}", free_port());
    let routes = format!("127.0.0.1:{}", free_port());
    let manifest = dir.path().join("port-manifest.yaml");
    std::fs::write(&manifest, "version: 1\nprojects: {}\n").expect("manifest");
    let quadlet = dir.path().join("quadlet");
    std::fs::create_dir_all(&quadlet).expect("quadlet dir");
    let config = dir.path().join("daemon.toml");
    std::fs::write(
        &config,
        format!(
            r#"listen = "{listen}"
state_dir = "{state}"
reconcile_interval = "1h"
retry_backoff = "1s"
max_attempts = 2

[previews]
github_api_url = "{gh}"
domain_pattern = "pr-{{pr}}.preview.test"
caddy_admin = "{caddy}"
routes_listen = "{routes}"
manifest = "{manifest}"
quadlet_dir = "{quadlet}"
state_dir = "{pstate}"
runtime = "podman"
health_deadline = "20s"

[previews.repos."{REPO}"]
project = "{project}"
image = "{image}"
"#,
            state = dir.path().join("state").display(),
            gh = github.url,
            caddy = caddy.admin_url(),
            manifest = manifest.display(),
            quadlet = quadlet.display(),
            pstate = dir.path().join("previews").display(),
            image = registry.image("codeb/app"),
        ),
    )
    .expect("config");
    let _cleanup = Cleanup {
        podman: podman.clone(),
        prefix: format!("{project}-pr-"),
    };
    Setup {
        _cleanup,
        _dir: dir,
        podman,
        registry,
        caddy,
        github,
        config,
        listen,
        routes,
        manifest,
        project,
    }
}

/// Removes this test's preview containers, whatever happened.
struct Cleanup {
    podman: Podman,
    prefix: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let names = self
            .podman
            .run(&["ps", "-a", "--format", "{{.Names}}"])
            .unwrap_or_default();
        for n in names.lines().filter(|n| n.starts_with(&self.prefix)) {
            let _ = self.podman.run(&["rm", "-f", "-t", "0", n]);
        }
    }
}

fn publish(s: &Setup, version: &str, tag: &str) {
    sample_local_images(&s.podman);
    push_image(
        &s.podman,
        &s.registry,
        &sample_local_name(version),
        &s.registry.image(&format!("codeb/app:{tag}")),
    )
    .expect("push");
}

fn version_of(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["version"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

#[test]
fn a_pull_request_gets_a_live_preview_that_follows_it_and_goes_away() {
    preview_lifecycle(CaddyBuild::Debian);
}

/// The same behind a current Caddy (2.11).
#[test]
fn a_pull_request_gets_a_live_preview_behind_current_caddy() {
    preview_lifecycle(CaddyBuild::Current);
}

fn preview_lifecycle(build: CaddyBuild) {
    let _one = PREVIEWS.lock().unwrap_or_else(|e| e.into_inner());
    let s = setup_with(build);
    let mut daemon = Daemon::start(&s.config, &s.podman, &s.listen);
    let host = "pr-7.preview.test";
    s.github.set_pr(Pr {
        repo: REPO.into(),
        number: 7,
        open: true,
        head_sha: "a".repeat(40),
        head_repo: REPO.into(),
        labels: vec![],
    });

    // Opened before the build pushed its image: the preview waits for it.
    daemon.post(
        "pull_request",
        &pr_event("opened", 7, &"a".repeat(40), REPO, &[]),
    );
    wait_until("the queued status", Duration::from_secs(30), || {
        s.github.statuses("pr-7").contains(&"queued".to_owned())
    });

    // The build publishes pr-7: the preview comes up and answers through its Caddy route.
    publish(&s, "v1", "pr-7");
    daemon.post("registry_package", &package_event("pr-7"));
    wait_until("the preview to answer v1", Duration::from_secs(60), || {
        get_host(&s.routes, host, "/api/health")
            .is_ok_and(|(c, b)| c == 200 && version_of(&b) == "v1")
    });
    wait_until("a success status", Duration::from_secs(10), || {
        s.github.statuses("pr-7").contains(&"success".to_owned())
    });
    let deps = s.github.deployments("pr-7");
    assert_eq!(deps[0].repo, REPO);
    assert_eq!(deps[0].body["transient_environment"], true);
    assert_eq!(deps[0].body["production_environment"], false);
    let success = deps
        .iter()
        .flat_map(|d| d.statuses.iter())
        .find(|st| st["state"] == "success")
        .expect("success")
        .clone();
    assert_eq!(success["environment_url"], format!("http://{host}"));
    assert!(
        success["log_url"]
            .as_str()
            .is_some_and(|u| u.ends_with("/pull/7/checks")),
        "{success}"
    );
    let comments = s.github.comments(REPO, 7);
    assert_eq!(
        comments.len(),
        1,
        "one comment, edited in place: {comments:?}"
    );
    assert!(
        comments[0].body.contains("Preview ready") && comments[0].body.contains(host),
        "{}",
        comments[0].body
    );
    let manifest = std::fs::read_to_string(&s.manifest).expect("manifest");
    assert!(
        manifest.contains(&format!(
            "{}-pr-7: {{project: {}, pr: 7, port: 5",
            s.project, s.project
        )),
        "{manifest}"
    );

    // Synchronized: a new head, a new image, the preview follows.
    s.github.set_pr(Pr {
        repo: REPO.into(),
        number: 7,
        open: true,
        head_sha: "b".repeat(40),
        head_repo: REPO.into(),
        labels: vec![],
    });
    publish(&s, "v2", "pr-7");
    daemon.post(
        "pull_request",
        &pr_event("synchronize", 7, &"b".repeat(40), REPO, &[]),
    );
    wait_until("the preview to answer v2", Duration::from_secs(60), || {
        get_host(&s.routes, host, "/api/health")
            .is_ok_and(|(c, b)| c == 200 && version_of(&b) == "v2")
    });
    assert_eq!(
        s.github.deployments("pr-7").len(),
        2,
        "one deployment per head sha"
    );
    assert_eq!(s.github.comments(REPO, 7).len(), 1, "still one comment");

    // Closed: nothing is left.
    s.github.set_pr(Pr {
        repo: REPO.into(),
        number: 7,
        open: false,
        head_sha: "b".repeat(40),
        head_repo: REPO.into(),
        labels: vec![],
    });
    daemon.post(
        "pull_request",
        &pr_event("closed", 7, &"b".repeat(40), REPO, &[]),
    );
    wait_until("the inactive status", Duration::from_secs(30), || {
        s.github
            .statuses("pr-7")
            .last()
            .is_some_and(|st| st == "inactive")
    });
    // Caddy answers an empty 200 where no route matches: the app must be gone.
    assert!(
        get_host(&s.routes, host, "/")
            .map(|(_, b)| !b.contains("hello from"))
            .unwrap_or(true),
        "route gone"
    );
    let unit = format!("{}-pr-7", s.project);
    let left = s
        .podman
        .run(&["ps", "-a", "--format", "{{.Names}}"])
        .unwrap_or_default();
    assert!(
        !left.lines().any(|n| n.starts_with(&unit)),
        "containers gone: {left}"
    );
    let manifest = std::fs::read_to_string(&s.manifest).expect("manifest");
    assert!(!manifest.contains(&unit), "port released: {manifest}");
    let config = s.caddy.config().unwrap_or_default();
    assert!(
        !config.contains(&unit),
        "no Caddy front or route left: {config}"
    );
    assert!(
        s.github.comments(REPO, 7)[0]
            .body
            .contains("Preview removed")
    );
    daemon.kill9();
}

#[test]
fn fork_pull_requests_wait_for_the_label() {
    let _one = PREVIEWS.lock().unwrap_or_else(|e| e.into_inner());
    let s = setup();
    let mut daemon = Daemon::start(&s.config, &s.podman, &s.listen);
    let host = "pr-9.preview.test";
    publish(&s, "v1", "pr-9");
    s.github.set_pr(Pr {
        repo: REPO.into(),
        number: 9,
        open: true,
        head_sha: "c".repeat(40),
        head_repo: "mallory/app".into(),
        labels: vec![],
    });
    daemon.post(
        "pull_request",
        &pr_event("opened", 9, &"c".repeat(40), "mallory/app", &[]),
    );
    wait_until("the fork comment", Duration::from_secs(30), || {
        s.github
            .comments(REPO, 9)
            .first()
            .is_some_and(|c| c.body.contains("comes from a fork"))
    });
    assert!(
        s.github.deployments("pr-9").is_empty(),
        "no deployment for an unapproved fork"
    );
    assert!(
        get_host(&s.routes, host, "/")
            .map(|(_, b)| !b.contains("hello from"))
            .unwrap_or(true),
        "not served"
    );

    s.github.set_pr(Pr {
        repo: REPO.into(),
        number: 9,
        open: true,
        head_sha: "c".repeat(40),
        head_repo: "mallory/app".into(),
        labels: vec!["preview".into()],
    });
    daemon.post(
        "pull_request",
        &pr_event("labeled", 9, &"c".repeat(40), "mallory/app", &["preview"]),
    );
    wait_until("the approved preview", Duration::from_secs(60), || {
        get_host(&s.routes, host, "/api/health")
            .is_ok_and(|(c, b)| c == 200 && version_of(&b) == "v1")
    });
    s.github.set_pr(Pr {
        repo: REPO.into(),
        number: 9,
        open: false,
        head_sha: "c".repeat(40),
        head_repo: "mallory/app".into(),
        labels: vec![],
    });
    daemon.post(
        "pull_request",
        &pr_event("closed", 9, &"c".repeat(40), "mallory/app", &[]),
    );
    wait_until("teardown", Duration::from_secs(30), || {
        s.github
            .statuses("pr-9")
            .last()
            .is_some_and(|st| st == "inactive")
    });
}

#[test]
fn sigkill_midway_then_restart_is_consistent_and_closed_prs_are_reconciled() {
    let _one = PREVIEWS.lock().unwrap_or_else(|e| e.into_inner());
    let s = setup();
    publish(&s, "v1", "pr-11");
    publish(&s, "v1", "pr-12");
    for n in [11, 12] {
        s.github.set_pr(Pr {
            repo: REPO.into(),
            number: n,
            open: true,
            head_sha: "d".repeat(40),
            head_repo: REPO.into(),
            labels: vec![],
        });
    }
    let mut daemon = Daemon::start(&s.config, &s.podman, &s.listen);
    daemon.post(
        "pull_request",
        &pr_event("opened", 11, &"d".repeat(40), REPO, &[]),
    );
    daemon.post(
        "pull_request",
        &pr_event("opened", 12, &"d".repeat(40), REPO, &[]),
    );
    // Kill it while the previews are being deployed.
    std::thread::sleep(Duration::from_millis(300));
    daemon.kill9();
    // PR 12 is closed while the daemon is down.
    s.github.set_pr(Pr {
        repo: REPO.into(),
        number: 12,
        open: false,
        head_sha: "d".repeat(40),
        head_repo: REPO.into(),
        labels: vec![],
    });
    let mut daemon = Daemon::start(&s.config, &s.podman, &s.listen);
    wait_until("PR 11's preview", Duration::from_secs(90), || {
        get_host(&s.routes, "pr-11.preview.test", "/api/health").is_ok_and(|(c, _)| c == 200)
    });
    wait_until("PR 12 to be gone", Duration::from_secs(60), || {
        let m = std::fs::read_to_string(&s.manifest).unwrap_or_default();
        !m.contains(&format!("{}-pr-12", s.project))
    });
    let names = s
        .podman
        .run(&["ps", "-a", "--format", "{{.Names}}"])
        .unwrap_or_default();
    let ours: Vec<&str> = names
        .lines()
        .filter(|n| n.starts_with(&format!("{}-pr-", s.project)))
        .collect();
    assert_eq!(
        ours,
        vec![format!("{}-pr-11-blue", s.project)],
        "exactly PR 11's container: {names}"
    );
    // The port of 12 was released: the manifest has one preview.
    let m = std::fs::read_to_string(&s.manifest).expect("manifest");
    assert_eq!(m.matches("-pr-").count(), 1, "{m}");
    s.github.set_pr(Pr {
        repo: REPO.into(),
        number: 11,
        open: false,
        head_sha: "d".repeat(40),
        head_repo: REPO.into(),
        labels: vec![],
    });
    daemon.post(
        "pull_request",
        &pr_event("closed", 11, &"d".repeat(40), REPO, &[]),
    );
    wait_until("PR 11 to be gone", Duration::from_secs(30), || {
        !std::fs::read_to_string(&s.manifest)
            .unwrap_or_default()
            .contains("-pr-11")
    });
}

#[test]
fn an_exhausted_port_pool_fails_the_pr_clearly() {
    let _one = PREVIEWS.lock().unwrap_or_else(|e| e.into_inner());
    let s = setup();
    // Every preview port is taken by other previews.
    let mut text = String::from("version: 1\nprojects: {}\npreviews:\n");
    for (i, port) in (5000..=5999u16).filter(|p| *p != 5432).enumerate() {
        text.push_str(&format!(
            "  other-pr-{i}: {{project: other, pr: {i}, port: {port}}}\n"
        ));
    }
    std::fs::write(&s.manifest, text).expect("manifest");
    let mut daemon = Daemon::start(&s.config, &s.podman, &s.listen);
    s.github.set_pr(Pr {
        repo: REPO.into(),
        number: 21,
        open: true,
        head_sha: "e".repeat(40),
        head_repo: REPO.into(),
        labels: vec![],
    });
    daemon.post(
        "pull_request",
        &pr_event("opened", 21, &"e".repeat(40), REPO, &[]),
    );
    wait_until("a failure status", Duration::from_secs(30), || {
        s.github.statuses("pr-21").contains(&"failure".to_owned())
    });
    let deps = s.github.deployments("pr-21");
    let failure = deps[0]
        .statuses
        .iter()
        .find(|st| st["state"] == "failure")
        .expect("failure");
    assert!(
        failure["description"]
            .as_str()
            .is_some_and(|d| d.contains("pool exhausted")),
        "{failure}"
    );
    wait_until("the comment", Duration::from_secs(10), || {
        s.github
            .comments(REPO, 21)
            .first()
            .is_some_and(|c| c.body.contains("is exhausted"))
    });
}

#[test]
fn the_reconciler_expires_idle_previews_and_removes_orphans() {
    let _one = PREVIEWS.lock().unwrap_or_else(|e| e.into_inner());
    let s = setup();
    // Reconcile every second, previews expire after 3 s idle.
    let text = std::fs::read_to_string(&s.config).expect("config");
    let text = text
        .replace("reconcile_interval = \"1h\"", "reconcile_interval = \"1s\"")
        .replace("[previews]\n", "[previews]\nttl = \"3s\"\n");
    std::fs::write(&s.config, text).expect("config");
    publish(&s, "v1", "pr-31");
    s.github.set_pr(Pr {
        repo: REPO.into(),
        number: 31,
        open: true,
        head_sha: "f".repeat(40),
        head_repo: REPO.into(),
        labels: vec![],
    });
    // An orphan: a preview container that belongs to no preview in the manifest.
    let orphan = format!("{}-pr-99-blue", s.project);
    sample_local_images(&s.podman);
    s.podman
        .run(&[
            "run",
            "-d",
            "--init",
            "--name",
            &orphan,
            "--label",
            "codeb.slot=blue",
            &sample_local_name("v1"),
        ])
        .expect("orphan container");
    let mut daemon = Daemon::start(&s.config, &s.podman, &s.listen);
    wait_until("the orphan to be removed", Duration::from_secs(30), || {
        !s.podman
            .run(&["ps", "-a", "--format", "{{.Names}}"])
            .unwrap_or_default()
            .lines()
            .any(|n| n == orphan)
    });
    daemon.post(
        "pull_request",
        &pr_event("opened", 31, &"f".repeat(40), REPO, &[]),
    );
    wait_until("PR 31's preview", Duration::from_secs(60), || {
        get_host(&s.routes, "pr-31.preview.test", "/api/health")
            .is_ok_and(|(c, b)| c == 200 && version_of(&b) == "v1")
    });
    // Idle past the TTL: the reconciler removes it and tells the PR why.
    wait_until(
        "the idle preview to expire",
        Duration::from_secs(60),
        || {
            s.github
                .comments(REPO, 31)
                .first()
                .is_some_and(|c| c.body.contains("idle for more than"))
        },
    );
    assert!(
        !std::fs::read_to_string(&s.manifest)
            .expect("manifest")
            .contains("-pr-31"),
        "port released"
    );
    assert_eq!(
        s.github.statuses("pr-31").last().map(String::as_str),
        Some("inactive")
    );
    daemon.kill9();
}
