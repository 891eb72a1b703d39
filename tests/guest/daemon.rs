//! The daemon under its shipped systemd unit (`templates/systemd/codeb-daemon.service`, with
//! its hardening): it starts, serves, and deploys a pull request preview through the guest's
//! systemd and Caddy, telling (fake) GitHub about it; and after a reboot of the host every
//! route answers again (`codeb-restore-routes.service`).

use crate::deploy::{App, PROJECTS};
use crate::fake_github::Pr;
use crate::{Ctx, GUEST_GITHUB, GUEST_REGISTRY};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use std::time::{Duration, Instant};

const SECRET: &str = "guest-webhook-secret";
/// The repository whose pull requests get previews, in project `gp`.
pub const REPO: &str = "codeb/app";
/// Caddy's listener for preview host names (Debian's Caddyfile keeps :80).
pub const PREVIEW_LISTEN: &str = "127.0.0.1:8080";
pub const PREVIEW_HOST: &str = "pr-7.preview.test";

fn daemon_config() -> String {
    format!(
        r#"listen = "127.0.0.1:3102"
state_dir = "/var/lib/codeb"
secret_file = "/etc/codeb/webhook-secret"
reconcile_interval = "1h"
retry_backoff = "5s"
max_attempts = 3

[previews]
github_api_url = "http://{GUEST_GITHUB}"
domain_pattern = "pr-{{pr}}.preview.test"
routes_listen = "{PREVIEW_LISTEN}"
health_deadline = "180s"

[previews.repos."{REPO}"]
project = "gp"
image = "{GUEST_REGISTRY}/codeb/sample"
"#
    )
}

pub fn daemon_unit_starts_and_serves(ctx: &Ctx) {
    let out = ctx.guest.ok(
        "install and start codeb-daemon.service",
        &format!(
            r#"install -d -m 0750 /etc/codeb
cat >/etc/codeb/daemon.toml <<'EOF'
{config}EOF
chmod 0640 /etc/codeb/daemon.toml
printf '%s\n' '{SECRET}' >/etc/codeb/webhook-secret
chmod 0600 /etc/codeb/webhook-secret
install -m 0644 /mnt/host/templates/systemd/codeb-daemon.service /etc/systemd/system/
systemctl daemon-reload
systemctl enable --now codeb-daemon.service
for _ in $(seq 120); do curl -sf http://127.0.0.1:3102/healthz >/dev/null && break; sleep 0.5; done
echo "healthz=$(curl -s http://127.0.0.1:3102/healthz)"
echo "active=$(systemctl is-active codeb-daemon.service)"
pid=$(systemctl show -p MainPID --value codeb-daemon.service)
echo "exe=$(readlink /proc/$pid/exe)"
# A signed ping, as GitHub sends when a webhook is created.
body='{{"zen":"Keep it logically awesome.","hook_id":1}}'
sig=$(printf '%s' "$body" | codeb-daemon sign --config /etc/codeb/daemon.toml)
echo "ping=$(curl -s -o /dev/null -w '%{{http_code}}' -X POST http://127.0.0.1:3102/webhook/github \
  -H 'content-type: application/json' -H 'X-GitHub-Event: ping' \
  -H 'X-GitHub-Delivery: 1f1a7a36-0000-4000-8000-000000000001' \
  -H "X-Hub-Signature-256: $sig" --data-binary "$body")"
echo "unsigned=$(curl -s -o /dev/null -w '%{{http_code}}' -X POST http://127.0.0.1:3102/webhook/github \
  -H 'content-type: application/json' -H 'X-GitHub-Event: ping' \
  -H 'X-GitHub-Delivery: 1f1a7a36-0000-4000-8000-000000000002' --data-binary "$body")"
ls -ld /var/lib/codeb | cut -d' ' -f1
"#,
            config = daemon_config()
        ),
        Duration::from_secs(240),
    );
    println!("{out}");
    assert!(out.contains("healthz=ok"), "{out}");
    assert!(out.contains("active=active"), "{out}");
    assert!(out.contains("exe=/usr/local/bin/codeb-daemon"), "{out}");
    assert!(
        out.contains("ping=200"),
        "a signed ping is answered 200: {out}"
    );
    assert!(
        out.contains("unsigned=401"),
        "an unsigned delivery is refused: {out}"
    );
    // StateDirectory=codeb with StateDirectoryMode=0700.
    assert!(out.contains("drwx------"), "{out}");
}

fn sign(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("hmac key");
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

/// GitHub's own `pull_request` `opened` example, pointed at [`REPO`], PR 7 and `sha`.
fn opened_event(sha: &str) -> Value {
    let path = crate::infra::workspace_root()
        .join("tests/corpora/github-webhooks/pull_request/opened.payload.json");
    let mut v: Value = serde_json::from_slice(
        &std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .expect("the corpus payload is JSON");
    v["action"] = json!("opened");
    v["number"] = json!(7);
    v["repository"]["full_name"] = json!(REPO);
    let p = &mut v["pull_request"];
    p["number"] = json!(7);
    p["head"]["sha"] = json!(sha);
    p["head"]["repo"]["full_name"] = json!(REPO);
    p["base"]["repo"]["full_name"] = json!(REPO);
    p["labels"] = json!([]);
    v
}

/// `curl` of `GET /api/health` with the preview's host name through Caddy, in the guest:
/// `(status, body)`.
pub fn preview_answer(ctx: &Ctx) -> (u16, String) {
    let out = ctx.guest.sh(
        &format!(
            "curl -s -o /tmp/preview-body --max-time 10 -w '%{{http_code}}' -H 'Host: {PREVIEW_HOST}' \
             http://{PREVIEW_LISTEN}/api/health; echo; cat /tmp/preview-body"
        ),
        Duration::from_secs(60),
    );
    let mut lines = out.stdout.lines();
    let status = lines
        .next()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    (status, lines.next().unwrap_or_default().to_owned())
}

pub fn daemon_unit_deploys_a_pull_request_preview(ctx: &Ctx) {
    let active = ctx.guest.sh(
        "systemctl is-active codeb-daemon.service",
        Duration::from_secs(60),
    );
    assert_eq!(
        active.stdout.trim(),
        "active",
        "the daemon unit runs (installed by daemon_unit_starts_and_serves)"
    );
    let sha = crate::PR_SHA.to_owned();
    ctx.github.set_pr(Pr {
        repo: REPO.into(),
        number: 7,
        open: true,
        head_sha: sha.clone(),
        head_repo: REPO.into(),
        labels: vec![],
        draft: false,
    });
    let body = serde_json::to_vec(&opened_event(&sha)).expect("serialize the event");
    std::fs::write(ctx.guest.share().join("pr-7-opened.json"), &body).expect("write the event");
    let answer = ctx.guest.ok(
        "deliver pull_request opened",
        &format!(
            "curl -s -w ' %{{http_code}}' -X POST http://127.0.0.1:3102/webhook/github \
             -H 'content-type: application/json' -H 'X-GitHub-Event: pull_request' \
             -H 'X-GitHub-Delivery: 1f1a7a36-0000-4000-8000-000000000007' \
             -H 'X-Hub-Signature-256: {sig}' --data-binary @/mnt/host/pr-7-opened.json",
            sig = sign(&body)
        ),
        Duration::from_secs(60),
    );
    assert!(answer.trim_end().ends_with(" 202"), "accepted: {answer}");
    // The job deploys pr-7 (v2's image) as a Quadlet unit through systemd, then routes the
    // preview's host name through Caddy.
    let t = Instant::now();
    let mut last = preview_answer(ctx);
    while !(last.0 == 200 && last.1.contains(r#""version":"v2""#)) {
        assert!(
            t.elapsed() < Duration::from_secs(360),
            "no preview after {:?}: {last:?}; daemon journal:\n{}",
            t.elapsed(),
            ctx.guest
                .sh(
                    "journalctl -u codeb-daemon --no-pager -n 40",
                    Duration::from_secs(60)
                )
                .stdout
        );
        std::thread::sleep(Duration::from_secs(3));
        last = preview_answer(ctx);
    }
    println!("preview answered after {:?}: {last:?}", t.elapsed());
    let units = ctx.guest.ok(
        "the preview's unit",
        "ls /etc/containers/systemd/ | grep -- '-pr-7' ; systemctl list-units --no-legend 'gp-*' | cat",
        Duration::from_secs(60),
    );
    assert!(
        units.contains("gp-"),
        "the preview is a Quadlet unit: {units}"
    );
    // GitHub was told: a deployment for environment pr-7 whose last status is success.
    let wait = Instant::now();
    while ctx.github.statuses("pr-7").last().map(String::as_str) != Some("success") {
        assert!(
            wait.elapsed() < Duration::from_secs(60),
            "deployment statuses of pr-7: {:?}",
            ctx.github.statuses("pr-7")
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// After a reboot of the guest every production front and the preview's host route answer
/// again: Debian's Caddy starts from its Caddyfile (codeb's routes, added through the admin
/// API, are not in it) and `codeb-restore-routes.service` (templates/systemd) rebuilds them
/// from the state in /etc/containers/systemd/.codeb/. Runs last: it restores what the tests
/// before it deployed.
pub fn routes_answer_again_after_a_reboot(ctx: &Ctx) {
    let deployed: Vec<App<'_>> = PROJECTS
        .iter()
        .map(|(p, _)| App::new(ctx, p))
        .filter(|a| !a.unit_files().is_empty())
        .collect();
    assert!(
        deployed.len() >= 4,
        "the deploy tests leave releases behind to restore: {:?}",
        deployed.iter().map(|a| a.project).collect::<Vec<_>>()
    );
    let before: Vec<(u16, String)> = deployed.iter().map(App::serving).collect();
    for (app, s) in deployed.iter().zip(&before) {
        assert_eq!(s.0, 200, "{} before the reboot", app.project);
    }
    let preview_before = preview_answer(ctx);
    assert_eq!(preview_before.0, 200, "the preview before the reboot");
    // The shipped unit; this guest's Caddy keeps Debian's default admin address (TCP on
    // loopback), which the unit's CODEB_CADDY_ADMIN is set to by a drop-in.
    let out = ctx.guest.ok(
        "install codeb-restore-routes.service",
        "install -m 0644 /mnt/host/templates/systemd/codeb-restore-routes.service /etc/systemd/system/
mkdir -p /etc/systemd/system/codeb-restore-routes.service.d
printf '[Service]\\nEnvironment=CODEB_CADDY_ADMIN=http://127.0.0.1:2019\\n' \
  >/etc/systemd/system/codeb-restore-routes.service.d/admin.conf
systemctl daemon-reload
systemctl enable --now codeb-restore-routes.service
journalctl -u codeb-restore-routes --no-pager -o cat | tail -n 20",
        Duration::from_secs(180),
    );
    println!("restore-routes while every route exists:\n{out}");
    for (app, s) in deployed.iter().zip(&before) {
        assert_eq!(
            &app.serving(),
            s,
            "{}: a restore of present routes",
            app.project
        );
    }
    ctx.guest
        .reboot(Duration::from_secs(480))
        .unwrap_or_else(|e| panic!("reboot: {e}"));
    // Nothing but the boot restored the routes: Caddy came up with its Caddyfile alone.
    let status = ctx.guest.ok(
        "the units after the reboot",
        "systemctl is-active caddy codeb-restore-routes codeb-daemon || true
journalctl -b -u codeb-restore-routes --no-pager -o cat | tail -n 20",
        Duration::from_secs(120),
    );
    println!("after the reboot:\n{status}");
    let settle = |mut probe: Box<dyn FnMut() -> (u16, String) + '_>,
                  want: &dyn Fn(&(u16, String)) -> bool| {
        let t = Instant::now();
        let mut now = probe();
        // The apps' own units start at boot too, slowly under emulation.
        while !want(&now) && t.elapsed() < Duration::from_secs(240) {
            std::thread::sleep(Duration::from_secs(3));
            now = probe();
        }
        now
    };
    for (app, s) in deployed.iter().zip(&before) {
        let now = settle(Box::new(|| app.serving()), &|n| n.0 == 200);
        assert_eq!(&now, s, "{} after the reboot:\n{status}", app.project);
    }
    let preview = settle(Box::new(|| preview_answer(ctx)), &|n| n.0 == 200);
    assert_eq!(
        preview.0, 200,
        "the preview route after the reboot: {preview:?}\n{status}"
    );
    assert!(preview.1.contains(r#""version":"v2""#), "{preview:?}");
}
