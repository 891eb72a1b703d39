//! Argument lists for hand-written units shaped like the ones codeb deploys (a Next.js app).

use codeb_quadlet::{ContainerUnit, QuadletError};

const DIGEST: &str = "sha256:4f1d0c6b6a9e1f6a0f3c0d6a8f6b2c1e9d8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c";

fn args_snapshot(unit: &ContainerUnit) -> String {
    unit.podman_run_args().join("\n")
}

#[test]
fn nextjs_production_unit() -> Result<(), QuadletError> {
    let text = format!(
        r#"# Managed by codeb.
[Unit]
Description=acme-web production
After=network-online.target

[Container]
Image=ghcr.io/acme/web@{DIGEST}
ContainerName=acme-web-production
PublishPort=127.0.0.1:4001:3000
EnvironmentFile=/etc/codeb/acme-web/production.env
Environment=NODE_ENV=production PORT=3000 \
  HOSTNAME=0.0.0.0
Label=codeb.project=acme-web codeb.environment=production
Label="codeb.release=2024-05-01 12:00"
HealthCmd=wget -qO- http://127.0.0.1:3000/api/health || exit 1
HealthInterval=10s
HealthTimeout=3s
HealthRetries=3
HealthStartPeriod=20s
HealthOnFailure=kill
User=1001
Group=1001
ReadOnly=true
Tmpfs=/tmp:rw,size=64m,mode=1777
Tmpfs=/app/.next/cache
NoNewPrivileges=true
DropCapability=ALL
PidsLimit=256
Memory=512m
LogDriver=journald
Pull=never

[Service]
Restart=always
TimeoutStartSec=120

[Install]
WantedBy=default.target
"#
    );
    let unit = ContainerUnit::parse(
        "/etc/containers/systemd/acme-web-production.container",
        &text,
    )?;
    insta::assert_snapshot!("nextjs_production_args", args_snapshot(&unit));

    assert_eq!(unit.container_name(), Some("acme-web-production"));
    assert_eq!(
        unit.image(),
        Some(format!("ghcr.io/acme/web@{DIGEST}").as_str())
    );
    let port = unit.published_ports().first().expect("one port");
    assert_eq!(port.host_ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(port.host_port.as_deref(), Some("4001"));
    assert_eq!(port.container_port, "3000");
    assert_eq!(
        unit.labels().get("codeb.project"),
        Some(&Some("acme-web".to_string()))
    );
    assert_eq!(
        unit.service().and_then(|s| s.get("Restart")),
        Some("always")
    );
    let passthrough: Vec<&str> = unit.passthrough_sections().map(|s| s.name()).collect();
    assert_eq!(passthrough, ["Unit", "Service", "Install"]);
    assert!(unit.warnings().is_empty(), "{:?}", unit.warnings());
    Ok(())
}

#[test]
fn nextjs_preview_unit_with_volumes_secrets_and_exec() -> Result<(), QuadletError> {
    let text = r#"[Container]
Image=ghcr.io/acme/web:pr-42
AutoUpdate=registry
PublishPort=127.0.0.1:4142:3000
Network=codeb-preview
Volume=./uploads:/app/public/uploads:Z
Volume=acme-web-cache:/app/.next/cache
Secret=acme-web-db-url,type=env,target=DATABASE_URL
Annotation=codeb.preview=42
Label=codeb.project=acme-web codeb.environment=preview-42
AddCapability=NET_BIND_SERVICE
DropCapability=ALL
SecurityLabelDisable=true
WorkingDir=/app
Entrypoint=/usr/local/bin/docker-entrypoint.sh
Exec=node server.js --port "3000"
StopTimeout=20
"#;
    let unit = ContainerUnit::parse("/srv/codeb/units/acme-web-pr-42.container", text)?;
    insta::assert_snapshot!("nextjs_preview_args", args_snapshot(&unit));
    assert_eq!(unit.exec(), ["node", "server.js", "--port", "3000"]);
    assert_eq!(unit.auto_update(), Some("registry"));
    assert_eq!(unit.effective_container_name(), "systemd-%N");
    assert_eq!(unit.service_name(), "acme-web-pr-42");
    Ok(())
}
