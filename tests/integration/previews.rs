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
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Preview ports come from the shared 5000-5999 range: one preview test at a time.
pub(crate) static PREVIEWS: Mutex<()> = Mutex::new(());

pub(crate) const SECRET: &str = "preview-test-secret";
pub(crate) const REPO: &str = "codeb/app";

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
pub(crate) fn pr_event(
    action: &str,
    pr: u64,
    sha: &str,
    head_repo: &str,
    labels: &[&str],
) -> Value {
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
pub(crate) fn package_event(tag: &str) -> Value {
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

pub(crate) struct Daemon {
    child: Child,
    url: String,
    config: PathBuf,
    env: Vec<(&'static str, PathBuf)>,
    delivery: u64,
}

impl Daemon {
    pub(crate) fn start(config: &Path, podman: &Podman, listen: &str) -> Self {
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

    pub(crate) fn post(&mut self, event: &str, body: &Value) -> u16 {
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

    pub(crate) fn kill9(&mut self) {
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
pub(crate) fn get_host(listen: &str, host: &str, path: &str) -> Result<(u16, String), String> {
    http_request(
        "GET",
        &format!("http://{listen}{path}"),
        &[("host", host)],
        &[],
        Duration::from_secs(5),
    )
}

/// What the host looked like when a wait timed out: every container and the port-forwarding
/// rules podman's CNI plugins wrote (a stale rule for a slot port sends its connections to a
/// container that no longer exists).
fn host_state() -> String {
    let run = |program: &str, args: &[&str]| match std::process::Command::new(program)
        .args(args)
        .output()
    {
        Ok(o) => format!(
            "$ {program} {}\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => format!("$ {program}: {e}\n"),
    };
    run(
        "podman",
        &["ps", "-a", "--format", "{{.Names}} {{.Status}} {{.Ports}}"],
    ) + &run("iptables", &["-t", "nat", "-S"])
}

pub(crate) fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        if start.elapsed() >= timeout {
            panic!("timed out waiting for {what}\n{}", host_state());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub(crate) struct Setup {
    _cleanup: Cleanup,
    pub(crate) _dir: tempfile::TempDir,
    pub(crate) podman: Podman,
    registry: Registry,
    pub(crate) caddy: Caddy,
    pub(crate) github: FakeGitHub,
    pub(crate) config: PathBuf,
    pub(crate) listen: String,
    pub(crate) routes: String,
    pub(crate) manifest: PathBuf,
    pub(crate) project: String,
}

fn setup() -> Setup {
    setup_with(CaddyBuild::Debian)
}

fn setup_with(build: CaddyBuild) -> Setup {
    setup_full(build, &|_| String::new())
}

/// [`setup_with`], with more of the daemon's config (`extra(dir)`, appended) .
pub(crate) fn setup_full(build: CaddyBuild, extra: &dyn Fn(&Path) -> String) -> Setup {
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
        ) + &extra(dir.path()),
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

/// Pushes the sample release `version`, built from commit `sha` (its revision label, as
/// docker/metadata-action writes it), as `codeb/app:<tag>`.
pub(crate) fn publish(s: &Setup, version: &str, tag: &str, sha: &str) {
    sample_local_images(&s.podman);
    let local = format!("localhost/codeb-test/sample-rev:{version}-{}", &sha[..12]);
    let ctx = tempdir();
    std::fs::write(
        ctx.path().join("Containerfile"),
        format!(
            "FROM {}\nLABEL org.opencontainers.image.revision={sha}\n",
            sample_local_name(version)
        ),
    )
    .expect("Containerfile");
    let dir = ctx.path().to_string_lossy().into_owned();
    s.podman
        .run(&[
            "build",
            "--quiet",
            "--timestamp",
            "0",
            "--layers=false",
            "-t",
            &local,
            "-f",
            &format!("{dir}/Containerfile"),
            &dir,
        ])
        .expect("build the labelled image");
    push_image(
        &s.podman,
        &s.registry,
        &local,
        &s.registry.image(&format!("codeb/app:{tag}")),
    )
    .expect("push");
}

/// Waits until the daemon has no queued or running job (every delivery so far is handled).
pub(crate) fn wait_idle(s: &Setup) {
    wait_until(
        "the daemon's jobs to finish",
        Duration::from_secs(90),
        || {
            let out = scrubbed(bin("codeb-daemon"))
                .args(["jobs", "--config"])
                .arg(&s.config)
                .env("CODEB_WEBHOOK_SECRET", SECRET)
                .output()
                .expect("codeb-daemon jobs");
            let jobs: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
            jobs.as_array().is_some_and(|j| {
                j.iter()
                    .all(|j| j["state"] != "queued" && j["state"] != "running")
            })
        },
    );
}

pub(crate) fn serves(s: &Setup, host: &str, version: &str) -> bool {
    get_host(&s.routes, host, "/api/health")
        .is_ok_and(|(c, b)| c == 200 && version_of(&b) == version)
}

pub(crate) fn not_served(s: &Setup, host: &str) -> bool {
    get_host(&s.routes, host, "/")
        .map(|(_, b)| !b.contains("hello from") && !b.contains("version"))
        .unwrap_or(true)
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
    // Someone pasted codeb's marker into a comment of their own: it is not codeb's comment.
    let foreign = s.github.add_comment_by(
        REPO,
        7,
        "mallory",
        "<!-- codeb-preview -->\nPreview ready: http://evil.example",
    );
    s.github.set_pr(Pr {
        repo: REPO.into(),
        number: 7,
        open: true,
        head_sha: "a".repeat(40),
        head_repo: REPO.into(),
        labels: vec![],
        draft: false,
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
    publish(&s, "v1", "pr-7", &"a".repeat(40));
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
    let all = s.github.comments(REPO, 7);
    let f = all
        .iter()
        .find(|c| c.id == foreign)
        .expect("foreign comment");
    assert_eq!(
        f.edits, 0,
        "a marked comment by someone else is never edited: {f:?}"
    );
    let comments: Vec<_> = all
        .into_iter()
        .filter(|c| c.author == crate::fake_github::BOT_LOGIN)
        .collect();
    assert_eq!(
        comments.len(),
        1,
        "one comment of codeb's own, edited in place: {comments:?}"
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
        draft: false,
    });
    publish(&s, "v2", "pr-7", &"b".repeat(40));
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
    assert_eq!(
        s.github.comments(REPO, 7).len(),
        2,
        "still one comment of codeb's"
    );

    // Closed: nothing is left.
    s.github.set_pr(Pr {
        repo: REPO.into(),
        number: 7,
        open: false,
        head_sha: "b".repeat(40),
        head_repo: REPO.into(),
        labels: vec![],
        draft: false,
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
        s.github.comments(REPO, 7).iter().any(
            |c| c.author == crate::fake_github::BOT_LOGIN && c.body.contains("Preview removed")
        )
    );
    daemon.kill9();
}

fn fork_pr(number: u64, sha: &str, labels: &[&str], open: bool, draft: bool) -> Pr {
    Pr {
        repo: REPO.into(),
        number,
        open,
        head_sha: sha.into(),
        head_repo: "mallory/app".into(),
        labels: labels.iter().map(|l| (*l).to_owned()).collect(),
        draft,
    }
}

pub(crate) fn containers_of(s: &Setup, unit: &str) -> Vec<String> {
    s.podman
        .run(&["ps", "-a", "--format", "{{.Names}}"])
        .unwrap_or_default()
        .lines()
        .filter(|n| n.starts_with(unit))
        .map(str::to_owned)
        .collect()
}

/// Issue 9 #2: the API's labels are the truth, an approval binds to the commit it was given
/// on, a fork's push needs a fresh approval, and removing the label or turning the PR into a
/// draft takes the preview down.
#[test]
fn fork_approval_binds_to_its_commit_and_ends_with_the_label() {
    let _one = PREVIEWS.lock().unwrap_or_else(|e| e.into_inner());
    let s = setup();
    let mut daemon = Daemon::start(&s.config, &s.podman, &s.listen);
    let host = "pr-9.preview.test";
    let unit = format!("{}-pr-9", s.project);
    let (c, d) = ("c".repeat(40), "d".repeat(40));
    publish(&s, "v1", "pr-9", &c);
    s.github.set_pr(fork_pr(9, &c, &[], true, false));
    daemon.post(
        "pull_request",
        &pr_event("opened", 9, &c, "mallory/app", &[]),
    );
    wait_until("the fork comment", Duration::from_secs(30), || {
        s.github
            .comments(REPO, 9)
            .first()
            .is_some_and(|c| c.body.contains("comes from a fork"))
    });

    // A stale `labeled` delivery (the maintainer has removed the label since): the API
    // says no label, so nothing is deployed.
    daemon.post(
        "pull_request",
        &pr_event("labeled", 9, &c, "mallory/app", &["preview"]),
    );
    wait_idle(&s);
    assert!(
        s.github.deployments("pr-9").is_empty(),
        "a stale label must not deploy a fork"
    );
    assert!(not_served(&s, host), "not served");

    // Approved on commit c: the preview of c comes up.
    s.github.set_pr(fork_pr(9, &c, &["preview"], true, false));
    daemon.post(
        "pull_request",
        &pr_event("labeled", 9, &c, "mallory/app", &["preview"]),
    );
    wait_until("the approved preview", Duration::from_secs(60), || {
        serves(&s, host, "v1")
    });

    // The fork pushes d (and its image): no fresh approval, so the preview stays on c.
    s.github.set_pr(fork_pr(9, &d, &["preview"], true, false));
    publish(&s, "v2", "pr-9", &d);
    daemon.post(
        "pull_request",
        &pr_event("synchronize", 9, &d, "mallory/app", &["preview"]),
    );
    daemon.post("registry_package", &package_event("pr-9"));
    wait_idle(&s);
    assert!(
        serves(&s, host, "v1"),
        "the preview stays on the approved c"
    );
    let comment = s.github.comments(REPO, 9)[0].body.clone();
    assert!(
        comment.contains("has not been approved")
            && comment.contains("stays on the approved commit ccccccc"),
        "{comment}"
    );
    assert!(
        !s.github
            .deployments("pr-9")
            .iter()
            .any(|dep| dep.body["ref"] == d.as_str()),
        "no deployment of the unapproved commit"
    );

    // The label comes off: the preview goes.
    s.github.set_pr(fork_pr(9, &d, &[], true, false));
    daemon.post(
        "pull_request",
        &pr_event("unlabeled", 9, &d, "mallory/app", &["preview"]),
    );
    wait_until(
        "the unapproved preview to go",
        Duration::from_secs(30),
        || {
            containers_of(&s, &unit).is_empty()
                && not_served(&s, host)
                && s.github.statuses("pr-9").last().map(String::as_str) == Some("inactive")
        },
    );

    // A fresh approval on d: the preview of d.
    s.github.set_pr(fork_pr(9, &d, &["preview"], true, false));
    daemon.post(
        "pull_request",
        &pr_event("labeled", 9, &d, "mallory/app", &["preview"]),
    );
    wait_until("the preview of d", Duration::from_secs(60), || {
        serves(&s, host, "v2")
    });

    // Converted to a draft: the preview goes again.
    s.github.set_pr(fork_pr(9, &d, &["preview"], true, true));
    daemon.post(
        "pull_request",
        &pr_event("converted_to_draft", 9, &d, "mallory/app", &["preview"]),
    );
    wait_until("the draft's preview to go", Duration::from_secs(30), || {
        containers_of(&s, &unit).is_empty()
            && not_served(&s, host)
            && !std::fs::read_to_string(&s.manifest)
                .unwrap_or_default()
                .contains(&unit)
    });
    let m = std::fs::read_to_string(&s.manifest).expect("manifest");
    assert!(!m.contains(&unit), "port released: {m}");
    s.github.set_pr(fork_pr(9, &d, &[], false, false));
    daemon.post(
        "pull_request",
        &pr_event("closed", 9, &d, "mallory/app", &[]),
    );
    wait_idle(&s);
    daemon.kill9();
}

/// Issue 9 #9: the moving tag still holds the previous commit's image: the preview waits for
/// the right one instead of reporting the old image as the new commit.
#[test]
fn a_preview_is_not_reported_for_a_commit_it_does_not_serve() {
    let _one = PREVIEWS.lock().unwrap_or_else(|e| e.into_inner());
    let s = setup();
    let mut daemon = Daemon::start(&s.config, &s.podman, &s.listen);
    let host = "pr-8.preview.test";
    let (a, b) = ("a".repeat(40), "b".repeat(40));
    let pr = |sha: &str| Pr {
        repo: REPO.into(),
        number: 8,
        open: true,
        head_sha: sha.into(),
        head_repo: REPO.into(),
        labels: vec![],
        draft: false,
    };
    publish(&s, "v1", "pr-8", &a);
    s.github.set_pr(pr(&a));
    daemon.post("pull_request", &pr_event("opened", 8, &a, REPO, &[]));
    wait_until("v1", Duration::from_secs(60), || serves(&s, host, "v1"));

    // Pushed b; the build has not replaced pr-8 yet.
    s.github.set_pr(pr(&b));
    daemon.post("pull_request", &pr_event("synchronize", 8, &b, REPO, &[]));
    wait_idle(&s);
    let of_b: Vec<_> = s
        .github
        .deployments("pr-8")
        .into_iter()
        .filter(|dep| dep.body["ref"] == b.as_str())
        .collect();
    assert_eq!(of_b.len(), 1, "a deployment for b");
    let states: Vec<&str> = of_b[0]
        .statuses
        .iter()
        .filter_map(|st| st["state"].as_str())
        .collect();
    assert!(
        !states.contains(&"success") && states.last() == Some(&"queued"),
        "b is not reported live while pr-8 is a's image: {states:?}"
    );
    let comment = s.github.comments(REPO, 8)[0].body.clone();
    assert!(
        comment.contains("Preview waiting")
            && comment.contains("for the build of bbbbbbb")
            && comment.contains("still the image of aaaaaaa"),
        "{comment}"
    );

    // The build of b arrives: now b is live.
    publish(&s, "v2", "pr-8", &b);
    daemon.post("registry_package", &package_event("pr-8"));
    wait_until("v2", Duration::from_secs(60), || serves(&s, host, "v2"));
    wait_until("b's success", Duration::from_secs(10), || {
        s.github
            .deployments("pr-8")
            .iter()
            .filter(|dep| dep.body["ref"] == b.as_str())
            .any(|dep| dep.statuses.iter().any(|st| st["state"] == "success"))
    });
    // The container runs confined (issue 9 #10), on this machine's podman.
    let inspect = s
        .podman
        .run(&[
            "inspect",
            &format!("{}-pr-8-blue", s.project),
            "--format",
            "{{.HostConfig.UsernsMode}}|{{.HostConfig.PidsLimit}}|{{.HostConfig.Memory}}|{{.HostConfig.CapDrop}}|{{.HostConfig.SecurityOpt}}",
        ])
        .expect("inspect");
    let f: Vec<&str> = inspect.trim().split('|').collect();
    assert_eq!(f[0], "private", "own user namespace: {inspect}");
    assert_eq!(f[1], "256", "{inspect}");
    assert_eq!(f[2], (512u64 << 20).to_string(), "{inspect}");
    assert!(
        f[3].contains("CAP_SYS_ADMIN") || f[3].contains("CAP_CHOWN"),
        "all dropped: {inspect}"
    );
    assert!(f[4].contains("no-new-privileges"), "{inspect}");
    daemon.kill9();
}

#[test]
fn sigkill_midway_then_restart_is_consistent_and_closed_prs_are_reconciled() {
    let _one = PREVIEWS.lock().unwrap_or_else(|e| e.into_inner());
    let s = setup();
    publish(&s, "v1", "pr-11", &"d".repeat(40));
    publish(&s, "v1", "pr-12", &"d".repeat(40));
    for n in [11, 12] {
        s.github.set_pr(Pr {
            repo: REPO.into(),
            number: n,
            open: true,
            head_sha: "d".repeat(40),
            head_repo: REPO.into(),
            labels: vec![],
            draft: false,
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
        draft: false,
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
        draft: false,
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
    publish(&s, "v1", "pr-21", &"e".repeat(40));
    let mut daemon = Daemon::start(&s.config, &s.podman, &s.listen);
    s.github.set_pr(Pr {
        repo: REPO.into(),
        number: 21,
        open: true,
        head_sha: "e".repeat(40),
        head_repo: REPO.into(),
        labels: vec![],
        draft: false,
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

/// Issue 9 #1 and #7: the reconciler removes only what codeb made for a preview of a
/// configured project (a project named `my-pr-tool` keeps its production containers and
/// front; a container without codeb's labels stays), expires idle previews through the PR's
/// queue (also one whose first deploy failed), and one failing repository does not stop the
/// others.
#[test]
fn reconcile_keeps_project_named_my_pr_tool() {
    let _one = PREVIEWS.lock().unwrap_or_else(|e| e.into_inner());
    let s = setup();
    // Reconcile every second, previews expire after 3 s idle; a second repository whose
    // pull request list fails, sorted first.
    let broken = format!("q{}", std::process::id() % 100_000);
    let text = std::fs::read_to_string(&s.config).expect("config");
    let text = text
        .replace("reconcile_interval = \"1h\"", "reconcile_interval = \"1s\"")
        .replace("[previews]\n", "[previews]\nttl = \"3s\"\n")
        + &format!(
            "\n[previews.repos.\"codeb/aa-broken\"]\nproject = \"{broken}\"\nimage = \"{}\"\n",
            s.registry.image("codeb/broken")
        );
    std::fs::write(&s.config, text).expect("config");
    s.github.lock().failing.insert("codeb/aa-broken".into());
    std::fs::write(
        &s.manifest,
        format!("version: 1\nprojects: {{}}\npreviews:\n  {broken}-pr-1: {{project: {broken}, pr: 1, port: 5990}}\n"),
    )
    .expect("manifest");

    let (f, g) = ("f".repeat(40), "9".repeat(40));
    publish(&s, "v1", "pr-31", &f);
    // PR 32's image is the broken release: its first deploy fails.
    publish(&s, "v3", "pr-32", &g);
    for (n, sha) in [(31, &f), (32, &g)] {
        s.github.set_pr(Pr {
            repo: REPO.into(),
            number: n,
            open: true,
            head_sha: sha.clone(),
            head_repo: REPO.into(),
            labels: vec![],
            draft: false,
        });
    }
    sample_local_images(&s.podman);
    let image = sample_local_name("v1");
    let run = |name: &str, labels: &[&str]| {
        let mut args = vec!["run", "-d", "--init", "--name", name];
        for l in labels {
            args.extend(["--label", l]);
        }
        args.push(&image);
        s.podman.run(&args).expect("container");
    };
    // An orphan codeb made: a preview container of our project with no port in the manifest.
    let orphan = format!("{}-pr-99-blue", s.project);
    let project_label = format!("codeb.project={}", s.project);
    run(
        &orphan,
        &["codeb.slot=blue", &project_label, "codeb.environment=pr-99"],
    );
    // Not codeb's preview: the production slot of a project named my-pr-tool, and a
    // container named like a preview but without codeb's labels.
    let tool = "my-pr-tool-production-blue";
    let _ = s.podman.run(&["rm", "-f", "-t", "0", tool]);
    run(
        tool,
        &[
            "codeb.slot=blue",
            "codeb.project=my-pr-tool",
            "codeb.environment=production",
        ],
    );
    let unlabelled = format!("{}-pr-98-blue", s.project);
    run(&unlabelled, &["codeb.slot=blue"]);
    let tool_port = free_port();
    s.caddy
        .load(&format!(
            r#"{{"apps":{{"http":{{"servers":{{"codeb-my-pr-tool-production":{{"@id":"codeb-my-pr-tool-production","listen":["127.0.0.1:{tool_port}"],"routes":[{{"handle":[{{"handler":"static_response","body":"my-pr-tool production"}}]}}]}}}}}}}}}}"#
        ))
        .expect("my-pr-tool front");
    let names = || {
        s.podman
            .run(&["ps", "-a", "--format", "{{.Names}}"])
            .unwrap_or_default()
    };

    let before = names();
    assert!(
        [orphan.as_str(), tool, unlabelled.as_str()]
            .iter()
            .all(|n| before.lines().any(|l| l == *n)),
        "the test's containers run: {before}"
    );
    let mut daemon = Daemon::start(&s.config, &s.podman, &s.listen);
    wait_until("the orphan to be removed", Duration::from_secs(30), || {
        let n = names();
        !n.is_empty() && !n.lines().any(|n| n == orphan)
    });
    daemon.post("pull_request", &pr_event("opened", 31, &f, REPO, &[]));
    daemon.post("pull_request", &pr_event("opened", 32, &g, REPO, &[]));
    wait_until("PR 31's preview", Duration::from_secs(60), || {
        serves(&s, "pr-31.preview.test", "v1")
    });
    // Idle past the TTL: both expire, the failed one too, although the broken repository's
    // pull requests cannot be listed.
    for n in [31u64, 32] {
        wait_until(
            &format!("PR {n} to expire"),
            Duration::from_secs(60),
            || {
                s.github
                    .comments(REPO, n)
                    .first()
                    .is_some_and(|c| c.body.contains("idle for more than"))
            },
        );
        assert_eq!(
            s.github
                .statuses(&format!("pr-{n}"))
                .last()
                .map(String::as_str),
            Some("inactive")
        );
    }
    let m = std::fs::read_to_string(&s.manifest).expect("manifest");
    assert!(
        !m.contains("-pr-31") && !m.contains("-pr-32"),
        "ports released: {m}"
    );
    assert!(
        m.contains(&format!("{broken}-pr-1")),
        "the broken repository's preview is left alone: {m}"
    );
    // What is not codeb's preview is still there.
    let left = names();
    assert!(
        left.lines().any(|n| n == tool),
        "my-pr-tool's container kept: {left}"
    );
    assert!(
        left.lines().any(|n| n == unlabelled),
        "an unlabelled container kept: {left}"
    );
    let config = s.caddy.config().expect("caddy config");
    assert!(
        config.contains("codeb-my-pr-tool-production"),
        "my-pr-tool's front kept: {config}"
    );
    let (status, body) = http_request(
        "GET",
        &format!("http://127.0.0.1:{tool_port}/"),
        &[],
        b"",
        Duration::from_secs(5),
    )
    .expect("my-pr-tool answers");
    assert_eq!((status, body.as_str()), (200, "my-pr-tool production"));
    for n in [tool, unlabelled.as_str()] {
        let _ = s.podman.run(&["rm", "-f", "-t", "0", n]);
    }
    daemon.kill9();
}

/// Issue 9 #4 (the daemon's part): a Caddy reload with an unrelated config erases codeb's
/// preview front and host route; the reconciler (at start and every interval) restores them
/// from `.codeb/` and the preview answers again.
#[test]
fn the_reconciler_restores_preview_routes_after_a_caddy_reload() {
    let _one = PREVIEWS.lock().unwrap_or_else(|e| e.into_inner());
    let s = setup();
    let text = std::fs::read_to_string(&s.config).expect("config");
    std::fs::write(
        &s.config,
        text.replace("reconcile_interval = \"1h\"", "reconcile_interval = \"1s\""),
    )
    .expect("config");
    let sha = "4".repeat(40);
    publish(&s, "v1", "pr-41", &sha);
    s.github.set_pr(Pr {
        repo: REPO.into(),
        number: 41,
        open: true,
        head_sha: sha.clone(),
        head_repo: REPO.into(),
        labels: vec![],
        draft: false,
    });
    let mut daemon = Daemon::start(&s.config, &s.podman, &s.listen);
    let host = "pr-41.preview.test";
    daemon.post("pull_request", &pr_event("opened", 41, &sha, REPO, &[]));
    wait_until("PR 41's preview", Duration::from_secs(60), || {
        serves(&s, host, "v1")
    });
    s.caddy
        .load(
            r#"{"apps":{"http":{"servers":{"unrelated":{"listen":["127.0.0.1:1"],"routes":[]}}}}}"#,
        )
        .expect("reload with an unrelated config");
    assert!(!serves(&s, host, "v1"), "the reload erased the route");
    wait_until("the restored route", Duration::from_secs(30), || {
        serves(&s, host, "v1")
    });
    daemon.kill9();
}
