//! The daemon under its shipped systemd unit (`templates/systemd/codeb-daemon.service`, with
//! its hardening).

use crate::Ctx;
use std::time::Duration;

const DAEMON_CONFIG: &str = r#"listen = "127.0.0.1:3102"
state_dir = "/var/lib/codeb"
secret_file = "/etc/codeb/webhook-secret"
"#;

pub fn daemon_unit_starts_and_serves(ctx: &Ctx) {
    let out = ctx.guest.ok(
        "install and start codeb-daemon.service",
        &format!(
            r#"install -d -m 0750 /etc/codeb
cat >/etc/codeb/daemon.toml <<'EOF'
{DAEMON_CONFIG}EOF
chmod 0640 /etc/codeb/daemon.toml
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >/etc/codeb/webhook-secret
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
"#
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
