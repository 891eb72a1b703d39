//! `codeb-install` on a fresh guest of its own (not the shared one, which the harness sets up
//! by hand): the installer makes it a codeb host, a second run changes nothing, then a deploy
//! through the systemd runtime, Caddy restarted (codeb's routes come back through the
//! installed restore unit), and a pull request preview made by the installed daemon from a
//! signed webhook (GitHub's own example payload from tests/corpora), with the fake GitHub API
//! of tests/integration/fake_github.rs reached from the guest through a forwarded port.

use crate::fake_github::{FakeGitHub, Pr};
use crate::vm::{Guest, share_file};
use crate::{Ctx, GUEST_REGISTRY, GUEST_REGISTRY_PORT, bin_dir};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// Where the guest reaches the fake GitHub API (its loopback; forwarded to the host's).
const GUEST_GITHUB_PORT: u16 = 18081;
const REPO: &str = "codeb/app";
const BINS: [&str; 6] = [
    "codeb-install",
    "codeb-port-validate",
    "codeb-healthcheck",
    "codeb-quadlet-update",
    "codeb-daemon",
    "codeb-workflow-gen",
];
/// Reading the binaries over 9p under emulation is slow: an installer run takes minutes.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(900);

/// GitHub's own `pull_request` `opened` example, pointed at our repository, PR and head.
fn pr_opened(pr: u64, sha: &str) -> Value {
    let p = infra_root().join("tests/corpora/github-webhooks/pull_request/opened.payload.json");
    let mut v: Value = serde_json::from_slice(
        &std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
    )
    .expect("json");
    v["action"] = json!("opened");
    v["number"] = json!(pr);
    v["repository"]["full_name"] = json!(REPO);
    let p = &mut v["pull_request"];
    p["number"] = json!(pr);
    p["head"]["sha"] = json!(sha);
    p["head"]["repo"]["full_name"] = json!(REPO);
    p["base"]["repo"]["full_name"] = json!(REPO);
    p["labels"] = json!([]);
    v
}

fn infra_root() -> std::path::PathBuf {
    crate::infra::workspace_root()
}

pub fn installer_turns_a_fresh_guest_into_a_codeb_host(ctx: &Ctx) {
    let github = FakeGitHub::start();
    let gh_port: u16 = github
        .url
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("fake GitHub port");
    let guest = Guest::start(&[
        (GUEST_REGISTRY_PORT, ctx.registry.port()),
        (GUEST_GITHUB_PORT, gh_port),
    ])
    .unwrap_or_else(|e| panic!("a fresh guest for the installer: {e}"));
    let bins = bin_dir();
    for name in BINS {
        share_file(&guest, &bins.join(name), &format!("release/{name}"));
    }

    // The share is mounted by fstab (nofail) while the guest boots; make sure it is there.
    let mounted = guest.sh(
        "mountpoint -q /mnt/host || mount /mnt/host; ls -l /mnt/host/release/",
        Duration::from_secs(120),
    );
    println!("share: {}", mounted.all());

    // 1. The installer, with the binaries beside it (its default), twice.
    let t = Instant::now();
    let first = guest.sh("/mnt/host/release/codeb-install 2>&1", INSTALL_TIMEOUT);
    println!(
        "first install ({:?}):\n{}",
        t.elapsed(),
        first.stdout.trim_end()
    );
    assert_eq!(first.code, 0, "codeb-install: {}", first.all());
    assert!(
        first.stdout.contains("create system user codeb"),
        "{}",
        first.all()
    );
    assert!(
        first
            .stdout
            .contains("systemctl restart codeb-daemon.service"),
        "{}",
        first.all()
    );
    let t = Instant::now();
    let second = guest.sh("/mnt/host/release/codeb-install 2>&1", INSTALL_TIMEOUT);
    println!(
        "second install ({:?}):\n{}",
        t.elapsed(),
        second.stdout.trim_end()
    );
    assert_eq!(second.code, 0, "{}", second.all());
    assert!(
        second
            .stdout
            .starts_with("codeb-install: nothing to change"),
        "{}",
        second.all()
    );

    // 2. What the host now has.
    let state = guest.ok(
        "the installed host",
        r#"stat -c '%n %a %U:%G' /home/codeb/config /etc/codeb /var/lib/codeb \
  /etc/containers/systemd/.codeb /etc/codeb/webhook-secret /usr/local/bin/codeb-daemon
echo "sysctl=$(cat /proc/sys/net/ipv4/tcp_migrate_req)"
echo "containers_conf=$(ls /etc/containers/containers.conf.d/90-codeb.conf 2>/dev/null || echo none)"
echo "daemon=$(systemctl is-active codeb-daemon) $(systemctl is-enabled codeb-daemon)"
echo "restore=$(systemctl is-active codeb-restore-routes)"
for _ in $(seq 60); do curl -sf http://127.0.0.1:3102/healthz >/dev/null && break; sleep 1; done
echo "healthz=$(curl -s http://127.0.0.1:3102/healthz)"
"#,
        Duration::from_secs(180),
    );
    println!("{state}");
    for line in [
        "/home/codeb/config 2770 codeb:codeb",
        "/etc/codeb 750 root:root",
        "/var/lib/codeb 700 root:root",
        "/etc/containers/systemd/.codeb 700 root:root",
        "/etc/codeb/webhook-secret 600 root:root",
        "/usr/local/bin/codeb-daemon 755 root:root",
        "sysctl=1",
        // The guest runs cgroup v2: podman's default runtime works, no drop-in.
        "containers_conf=none",
        "daemon=active enabled",
        "restore=active",
        "healthz=ok",
    ] {
        assert!(state.contains(line), "missing `{line}` in\n{state}");
    }

    // 3. A deploy through the systemd runtime, with a port allocated in the shared manifest.
    let deploy = guest.ok(
        "allocate and deploy",
        &format!(
            r#"printf '[[registry]]\nlocation = "{GUEST_REGISTRY}"\ninsecure = true\n' \
  > /etc/containers/registries.conf.d/50-codeb-test.conf
port=$(codeb-port-validate --project gi --environment production --allocate)
echo "port=$port"
echo "manifest_group=$(stat -c %G /home/codeb/config/port-manifest.yaml)"
codeb-quadlet-update deploy --project gi --environment production \
  --image {GUEST_REGISTRY}/codeb/sample:v1 --runtime systemd --expect version=v1 --drain 2s \
  --health-deadline 90s --health-interval 500ms --health-cmd none --actor guest-install 2>&1
echo "unit=$(systemctl is-active gi-production-blue.service gi-production-green.service | tr '\n' ' ')"
echo "serving=$(curl -sf --max-time 10 http://127.0.0.1:$port/api/health)"
"#
        ),
        Duration::from_secs(400),
    );
    println!("{deploy}");
    let port: u16 = deploy
        .lines()
        .find_map(|l| l.strip_prefix("port="))
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no port in\n{deploy}"));
    assert!(
        deploy.contains("manifest_group=codeb"),
        "the setgid manifest directory gives new files group codeb: {deploy}"
    );
    assert!(deploy.contains("unit=active"), "{deploy}");
    assert!(
        deploy.contains("serving={") && deploy.contains("\"v1\""),
        "{deploy}"
    );

    // 4. Caddy restarted: its routes are gone until the restore unit puts them back.
    let restart = guest.ok(
        "restart Caddy",
        &format!(
            r#"systemctl restart caddy
ok=no
for _ in $(seq 90); do
  if curl -sf --max-time 5 http://127.0.0.1:{port}/api/health >/dev/null; then ok=yes; break; fi
  sleep 1
done
echo "after_restart=$ok $(curl -s --max-time 5 http://127.0.0.1:{port}/api/health)"
echo "restore=$(systemctl is-active codeb-restore-routes)"
journalctl -u codeb-restore-routes --no-pager -o cat | tail -n 5
"#
        ),
        Duration::from_secs(240),
    );
    println!("{restart}");
    assert!(
        restart.contains("after_restart=yes") && restart.contains("\"v1\""),
        "codeb's front answers again after `systemctl restart caddy`: {restart}"
    );

    // 5. A preview through the installed daemon: configure it as an administrator would.
    github.set_pr(Pr {
        repo: REPO.into(),
        number: 7,
        open: true,
        head_sha: crate::PR_SHA.into(),
        head_repo: REPO.into(),
        labels: vec![],
        draft: false,
    });
    let body = serde_json::to_vec(&pr_opened(7, crate::PR_SHA)).expect("payload");
    std::fs::write(guest.share().join("pr-7-opened.json"), &body).expect("share payload");
    let preview = guest.ok(
        "configure the daemon and send a signed pull_request",
        &format!(
            r#"cat >/etc/codeb/daemon.toml <<'EOF'
listen = "127.0.0.1:3102"
state_dir = "/var/lib/codeb"
secret_file = "/etc/codeb/webhook-secret"
retry_backoff = "2s"

[previews]
github_api_url = "http://127.0.0.1:{GUEST_GITHUB_PORT}"
github_token_file = "/etc/codeb/github-token"
domain_pattern = "pr-{{pr}}.preview.test"
routes_listen = "127.0.0.1:8081"
health_deadline = "120s"

[previews.repos."{REPO}"]
project = "gi"
image = "{GUEST_REGISTRY}/codeb/sample"
EOF
printf 'test-token\n' > /etc/codeb/github-token
chmod 0600 /etc/codeb/github-token
systemctl restart codeb-daemon
for _ in $(seq 60); do curl -sf http://127.0.0.1:3102/healthz >/dev/null && break; sleep 1; done
sig=$(codeb-daemon sign --config /etc/codeb/daemon.toml < /mnt/host/pr-7-opened.json)
echo "delivery=$(curl -s -o /dev/null -w '%{{http_code}}' -X POST http://127.0.0.1:3102/webhook/github \
  -H 'content-type: application/json' -H 'X-GitHub-Event: pull_request' \
  -H 'X-GitHub-Delivery: 7e1a7a36-0000-4000-8000-000000000007' \
  -H "X-Hub-Signature-256: $sig" --data-binary @/mnt/host/pr-7-opened.json)"
ok=no
for _ in $(seq 240); do
  b=$(curl -s --max-time 5 -H 'Host: pr-7.preview.test' http://127.0.0.1:8081/api/health || true)
  case "$b" in *'"v2"'*) ok=yes; break ;; esac
  sleep 1
done
echo "preview=$ok $b"
grep -o 'gi-pr-7: {{[^}}]*}}' /home/codeb/config/port-manifest.yaml || true
ls /etc/containers/systemd/ | grep pr-7 || true
journalctl -u codeb-daemon --no-pager -o cat | tail -n 15
"#
        ),
        Duration::from_secs(420),
    );
    println!("{preview}");
    assert!(
        preview.contains("delivery=20"),
        "the signed delivery is accepted: {preview}"
    );
    assert!(
        preview.contains("preview=yes"),
        "pr-7.preview.test answers the pr-7 image (v2) through Caddy: {preview}"
    );
    assert!(
        preview.contains("gi-pr-7: {project: gi, pr: 7, port: 5"),
        "the preview's port is in the manifest: {preview}"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while !github.statuses("pr-7").contains(&"success".to_owned()) {
        assert!(
            Instant::now() < deadline,
            "no success status at the fake GitHub: {:?}",
            github.statuses("pr-7")
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let deps = github.deployments("pr-7");
    assert_eq!(deps[0].repo, REPO);
}
