//! `codeb-install` on a fresh guest of its own (not the shared one, which the harness sets up
//! by hand): the installer makes it a codeb host, a second run changes nothing, then a deploy
//! through the systemd runtime, Caddy restarted (codeb's routes come back through the
//! installed restore unit), and a pull request preview made by the installed daemon from a
//! signed webhook (GitHub's own example payload from tests/corpora), with the fake GitHub API
//! of tests/integration/fake_github.rs reached from the guest through a forwarded port.
//! In between, the installer registers a (stand-in) runner, and the actions' own step scripts
//! deploy as its unprivileged user through the sudoers rule the installer wrote, blue-green
//! through the systemd runtime; what the rule does not allow is refused.

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

    // 5. The runner's jobs deploy as the unprivileged runner user, through sudo.
    runner_jobs_deploy_through_sudo(&guest, port);

    // 6. A preview through the installed daemon: configure it as an administrator would.
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

/// A runner tarball whose config.sh and svc.sh stand in for GitHub's (which cannot be
/// downloaded here): they refuse the wrong user as the real ones do and leave .runner and
/// .service behind (tests/integration/install.rs has the recording variant).
fn stand_in_runner_tarball(dir: &std::path::Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let src = dir.join("runner-src");
    std::fs::create_dir_all(src.join("bin")).expect("mkdir");
    let config = "#!/bin/sh\nif [ \"$(id -u)\" = 0 ]; then echo 'Must not run with sudo' >&2; exit 1; fi\n\
                  echo '{\"agentName\":\"guest\"}' > .runner\n";
    let svc = "#!/bin/sh\nif [ \"$(id -u)\" != 0 ]; then echo 'Must run as sudo' >&2; exit 1; fi\n\
               case \"$1\" in install) echo actions.runner.acme-shop.guest.service > .service ;; esac\n";
    for (name, text) in [("config.sh", config), ("svc.sh", svc)] {
        let p = src.join(name);
        std::fs::write(&p, text).expect("write script");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    std::fs::write(src.join("bin/Runner.Listener"), "stand-in\n").expect("listener");
    let tarball = dir.join("actions-runner-linux-x64-2.330.0.tar.gz");
    let out = std::process::Command::new("tar")
        .arg("-czf")
        .arg(&tarball)
        .arg("-C")
        .arg(&src)
        .arg(".")
        .output()
        .expect("tar");
    assert!(out.status.success(), "tar: {out:?}");
    tarball
}

/// The `run:` script of the step with `id` in an action.yml: a `|` block, or a one-line
/// single-quoted scalar (the two forms codeb's actions use).
fn step_run(action_yml: &str, id: &str) -> String {
    let text = std::fs::read_to_string(infra_root().join(action_yml)).expect(action_yml);
    let lines: Vec<&str> = text.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.trim() == format!("id: {id}"))
        .unwrap_or_else(|| panic!("{action_yml}: no step with id {id}"));
    let run = at
        + lines[at..]
            .iter()
            .position(|l| l.trim_start().starts_with("run:"))
            .unwrap_or_else(|| panic!("{action_yml}: step {id} has no run"));
    let value = lines[run].trim_start().trim_start_matches("run:").trim();
    if value == "|" {
        let indent = lines[run].len() - lines[run].trim_start().len() + 2;
        let mut body = String::new();
        for l in &lines[run + 1..] {
            if !l.trim().is_empty() && l.len() - l.trim_start().len() < indent {
                break;
            }
            body.push_str(l.get(indent..).unwrap_or(""));
            body.push('\n');
        }
        body
    } else {
        let inner = value
            .strip_prefix('\'')
            .and_then(|v| v.strip_suffix('\''))
            .unwrap_or_else(|| panic!("{action_yml}: step {id}: run {value}"));
        format!("{}\n", inner.replace("''", "'"))
    }
}

/// A shell line that runs the job step script `step` in the guest the way the runner does
/// (`bash --noprofile --norc -eo pipefail`), as the runner's user, with only `env`.
fn as_runner(step: &str, env: &[(&str, &str)]) -> String {
    let mut line = String::from(
        "runuser -u codeb-runner -- env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
         HOME=/home/codeb-runner GITHUB_ACTIONS=true",
    );
    for (k, v) in env {
        line.push_str(&format!(" {k}='{v}'"));
    }
    line.push_str(&format!(
        " bash --noprofile --norc -eo pipefail {JOB}/{step}"
    ));
    line
}

/// The runner's work directory in the guest (its own, as the runner's `_work/_temp` is).
const JOB: &str = "/home/codeb-runner/job";

/// The inputs the quadlet-update action's deploy step gets (its `env:` with the defaults of
/// action.yml), for `image`.
fn deploy_inputs<'a>(image: &'a str, expect: &'a str, output: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        (
            "GITHUB_ACTION_PATH",
            "/home/codeb-runner/job/action/actions/quadlet-update",
        ),
        ("GITHUB_OUTPUT", output),
        ("GITHUB_SHA", "0123456789abcdef0123456789abcdef01234567"),
        ("GITHUB_ACTOR", "octocat"),
        ("CODEB_EXE", "/usr/local/bin/codeb-quadlet-update"),
        ("CODEB_COMMAND", "deploy"),
        ("CODEB_REGISTRY_TOKEN", ""),
        ("INPUT_PROJECT", "gr"),
        ("INPUT_ENVIRONMENT", "production"),
        ("INPUT_IMAGE", image),
        ("INPUT_MANIFEST", ""),
        ("INPUT_CONTAINER_PORT", "3000"),
        ("INPUT_ENV_FILE", ""),
        ("INPUT_HEALTH_PATH", "/api/health"),
        ("INPUT_QUADLET_DIR", "/etc/containers/systemd"),
        ("INPUT_RUNTIME", "systemd"),
        ("INPUT_STRATEGY", ""),
        ("INPUT_HEALTH_DEADLINE", "90s"),
        ("INPUT_HEALTH_INTERVAL", "500ms"),
        ("INPUT_SUCCESSES", "2"),
        ("INPUT_HEALTH_CMD", "none"),
        ("INPUT_EXPECT", expect),
        ("INPUT_CADDY_ADMIN", "http://127.0.0.1:2019"),
        ("INPUT_ALLOW_REMOTE_CADDY_ADMIN", "false"),
        ("INPUT_KEEP_RELEASES", "20"),
        ("INPUT_DRAIN", "2s"),
        ("INPUT_LOCK_TIMEOUT", "10m"),
    ]
}

fn runner_jobs_deploy_through_sudo(guest: &Guest, gi_port: u16) {
    // The installer again, now with a runner: its user, the sudoers rule, the service.
    let work = crate::infra::ScratchDir::new("guest-runner");
    let tarball = stand_in_runner_tarball(work.path());
    share_file(guest, &tarball, "runner.tar.gz");
    let runner_args = "--runner-tarball /mnt/host/runner.tar.gz --runner-url https://github.com/acme/shop \
                       --runner-name guest";
    let dry = guest.sh(
        &format!("CODEB_RUNNER_TOKEN=REGTOKEN1234 /mnt/host/release/codeb-install --dry-run {runner_args} 2>&1"),
        INSTALL_TIMEOUT,
    );
    println!("runner install, dry run:\n{}", dry.stdout.trim_end());
    assert_eq!(dry.code, 0, "{}", dry.all());
    assert!(
        dry.stdout
            .contains("create file /etc/sudoers.d/codeb-runner (root:root, 0440)"),
        "{}",
        dry.all()
    );
    let installed = guest.sh(
        &format!(
            "test ! -e /etc/sudoers.d/codeb-runner && echo dry_run_wrote_nothing
CODEB_RUNNER_TOKEN=REGTOKEN1234 /mnt/host/release/codeb-install {runner_args} 2>&1"
        ),
        INSTALL_TIMEOUT,
    );
    println!("runner install:\n{}", installed.stdout.trim_end());
    assert_eq!(installed.code, 0, "{}", installed.all());
    assert!(
        installed.stdout.contains("dry_run_wrote_nothing"),
        "{}",
        installed.all()
    );
    assert!(
        !installed.all().contains("REGTOKEN1234"),
        "token printed: {}",
        installed.all()
    );
    let rule = guest.ok(
        "the sudoers rule",
        "stat -c '%n %a %U:%G' /etc/sudoers.d/codeb-runner
visudo -c >/dev/null && echo visudo=ok
id codeb-runner
runuser -u codeb-runner -- sudo -n -l",
        Duration::from_secs(60),
    );
    println!("{rule}");
    for line in [
        "/etc/sudoers.d/codeb-runner 440 root:root",
        "visudo=ok",
        "(codeb)",
        "(root) NOPASSWD: /usr/local/bin/codeb-quadlet-update deploy",
        "/usr/local/bin/codeb-quadlet-update rollback",
    ] {
        assert!(rule.contains(line), "missing `{line}` in\n{rule}");
    }

    // The job's files: the action as the runner checks it out, its step scripts as it runs
    // them, and the output files it creates for each step, all the runner user's.
    for rel in [
        "action.yml",
        "actions/_lib/as-root.sh",
        "actions/quadlet-update/action.yml",
    ] {
        share_file(guest, &infra_root().join(rel), &format!("job/action/{rel}"));
    }
    for (rel, text) in [
        ("job/port.sh", step_run("action.yml", "port")),
        (
            "job/deploy.sh",
            step_run("actions/quadlet-update/action.yml", "deploy"),
        ),
    ] {
        std::fs::create_dir_all(guest.share().join("job")).expect("mkdir");
        std::fs::write(guest.share().join(rel), text).expect("write step");
    }
    guest.ok(
        "the job's directory",
        &format!(
            "rm -rf {JOB} && cp -R /mnt/host/job {JOB} && chmod 0755 {JOB}/action/actions/_lib/as-root.sh
touch {JOB}/out-port {JOB}/out-v1 {JOB}/out-v2 {JOB}/out-refused
chown -R codeb-runner:codeb-runner {JOB}"
        ),
        Duration::from_secs(60),
    );

    // Port (as the runner's user: the manifest directory is group codeb's), then v1 and v2
    // through the quadlet-update action's deploy step: blue, then green.
    let image_v1 = format!("{GUEST_REGISTRY}/codeb/sample:v1");
    let image_v2 = format!("{GUEST_REGISTRY}/codeb/sample:v2");
    let out_port = format!("{JOB}/out-port");
    let (out_v1, out_v2) = (format!("{JOB}/out-v1"), format!("{JOB}/out-v2"));
    let port_step = as_runner(
        "port.sh",
        &[
            ("GITHUB_OUTPUT", out_port.as_str()),
            ("CODEB_EXE", "/usr/local/bin/codeb-port-validate"),
            ("INPUT_PROJECT", "gr"),
            ("INPUT_ENVIRONMENT", "production"),
            ("INPUT_MANIFEST", ""),
            ("INPUT_ALLOCATE", "true"),
        ],
    );
    let v1 = as_runner(
        "deploy.sh",
        &deploy_inputs(&image_v1, "version=v1", &out_v1),
    );
    let v2 = as_runner(
        "deploy.sh",
        &deploy_inputs(&image_v2, "version=v2", &out_v2),
    );
    let deploys = guest.ok(
        "deploys as codeb-runner through sudo",
        &format!(
            r#"{port_step}
port=$(sed -n '/^port<</{{n;p;q}}' {out_port})
echo "port=$port"
{v1}
slots() {{ for s in blue green; do systemctl is-active -q gr-production-$s.service && printf '%s' $s; done; }}
echo "after_v1=$(slots) $(curl -sf --max-time 10 http://127.0.0.1:$port/api/health)"
{v2}
echo "after_v2=$(slots) $(curl -sf --max-time 10 http://127.0.0.1:$port/api/health)"
echo "--- outputs v2"; cat {out_v2}
echo "--- owners"; stat -c '%n %U' {out_v2} /etc/containers/systemd/gr-production-*.container
echo "gi_still=$(curl -sf --max-time 10 http://127.0.0.1:{gi_port}/api/health)"
"#
        ),
        Duration::from_secs(600),
    );
    println!("{deploys}");
    let slot = |tag: &str| -> String {
        let line = deploys
            .lines()
            .find_map(|l| l.strip_prefix(&format!("after_{tag}=")))
            .unwrap_or_else(|| panic!("no after_{tag} in\n{deploys}"));
        assert!(
            line.contains(&format!("\"{tag}\"")),
            "{tag} answers on the front: {line}"
        );
        line.split(' ').next().unwrap_or_default().to_owned()
    };
    let (s1, s2) = (slot("v1"), slot("v2"));
    assert!(
        ["blue", "green"].contains(&s1.as_str())
            && ["blue", "green"].contains(&s2.as_str())
            && s1 != s2,
        "v1 runs in one slot, v2 in the other, the old one stopped (blue-green): {s1} -> {s2}\n{deploys}"
    );
    assert!(
        deploys.contains("result<<") && deploys.contains("\ndeployed\n"),
        "the step's outputs reach the runner's own output file: {deploys}"
    );
    assert!(
        deploys.contains(&format!("{JOB}/out-v2 codeb-runner"))
            && deploys.contains(&format!(
                "/etc/containers/systemd/gr-production-{s2}.container root"
            )),
        "{deploys}"
    );
    assert!(deploys.contains("gi_still={"), "{deploys}");

    // What the rule does not allow.
    let mut escape = deploy_inputs(
        &image_v1,
        "version=v1",
        "/home/codeb-runner/job/out-refused",
    );
    escape.retain(|(k, _)| *k != "INPUT_QUADLET_DIR");
    escape.push(("INPUT_QUADLET_DIR", "/home/codeb-runner/units"));
    let escape = as_runner("deploy.sh", &escape);
    let mut reset = deploy_inputs(
        &image_v1,
        "version=v1",
        "/home/codeb-runner/job/out-refused",
    );
    reset.retain(|(k, _)| *k != "INPUT_QUADLET_DIR");
    // Not kept by sudo: if it were, the unit directory check would name it first.
    reset.push(("CODEB_QUADLET_DIR", "/home/codeb-runner/units"));
    reset.push(("INPUT_TEMPLATES", "/home/codeb-runner/templates"));
    let reset = as_runner("deploy.sh", &reset);
    let refused = guest.ok(
        "what codeb-runner may not do",
        &format!(
            r#"r() {{ echo "$1: rc=$2"; }}
set +e
out=$(runuser -u codeb-runner -- sudo -n /bin/sh -c id 2>&1); r shell $?; echo "$out"
out=$(runuser -u codeb-runner -- sudo -n /usr/local/bin/codeb-quadlet-update history --project gr --environment production 2>&1); r history $?
out=$(runuser -u codeb-runner -- sudo -n /usr/local/bin/codeb-quadlet-update deploy --templates /tmp 2>&1); r extra_args $?
out=$(runuser -u codeb-runner -- sudo -n /usr/bin/systemctl restart caddy 2>&1); r systemctl $?
out=$(runuser -u codeb-runner -- touch /etc/containers/systemd/evil.container 2>&1); r write_units $?; echo "$out"
out=$(runuser -u codeb-runner -- touch /etc/sudoers.d/evil 2>&1); r write_sudoers $?
out=$({escape} 2>&1); r quadlet_dir $?; echo "$out"
out=$({reset} 2>&1); r env_reset $?; echo "$out"
ls /etc/containers/systemd/evil.container /home/codeb-runner/units 2>&1 | sed 's/^/left: /'
true
"#
        ),
        Duration::from_secs(300),
    );
    println!("{refused}");
    for (what, says) in [
        ("shell: rc=1", ""),
        ("history: rc=1", ""),
        ("extra_args: rc=1", ""),
        ("systemctl: rc=1", ""),
        ("write_units: rc=1", "Permission denied"),
        ("write_sudoers: rc=1", ""),
        (
            "quadlet_dir: rc=2",
            "units go only to /etc/containers/systemd",
        ),
        (
            "env_reset: rc=2",
            "--templates /home/codeb-runner/templates is refused",
        ),
    ] {
        assert!(
            refused.contains(what) && refused.contains(says),
            "`{what}` `{says}` in\n{refused}"
        );
    }
    assert!(
        refused.contains("run through sudo for codeb-runner (/etc/sudoers.d/codeb-runner)"),
        "{refused}"
    );
    assert!(
        !refused.contains("left: /etc/containers/systemd/evil.container")
            && refused.contains("left: ls: cannot access '/home/codeb-runner/units'"),
        "nothing was written: {refused}"
    );
}
