//! Every unit the deploy engine writes (production blue/green, staging, a preview as the daemon
//! deploys it, with and without env file and health command, and a hardened preview template
//! with the keys podman 5.4 lacks), written for each checked podman version the way the engine
//! writes it (`compat::HostPodman::adapt`), run through that version's own Quadlet generator:
//! the generator must accept it and its `ExecStart=` must carry codeb's `podman run` arguments.
//! A missing generator fails the test with the setup instruction.

use std::path::Path;

use codeb_deploy::compat::HostPodman;
use codeb_deploy::{DEFAULT_HEALTH_CMD, KeyValue, UnitContext, render_unit};
use codeb_quadlet::ContainerUnit;

#[path = "../../codeb-quadlet/tests/support/oracle.rs"]
mod oracle;
use oracle::{Generated, compare, generators};

fn context(environment: &str, slot: &str, host_port: u16) -> UnitContext {
    let digest = format!("sha256:{}", "b".repeat(64));
    UnitContext {
        codeb_version: "0.1.0".into(),
        project: "myapp".into(),
        environment: environment.into(),
        slot: slot.into(),
        image: "ghcr.io/acme/myapp:main".into(),
        pinned: format!("ghcr.io/acme/myapp@{digest}"),
        digest,
        sha: "0123456789abcdef0123456789abcdef01234567".into(),
        container_name: format!("myapp-{environment}-{slot}"),
        publish_host: "127.0.0.1".into(),
        host_port,
        container_port: 3000,
        env_file: Some("/home/codeb/env/myapp.env".into()),
        health_cmd: Some(DEFAULT_HEALTH_CMD.into()),
        extra: Vec::new(),
    }
}

/// The `[Container]` keys codeb-previews adds to a preview by default (its sandbox: see
/// `SandboxConfig` in crates/codeb-previews/src/config.rs).
fn preview_sandbox() -> Vec<KeyValue> {
    [
        ("UserNS", "auto"),
        ("NoNewPrivileges", "true"),
        ("DropCapability", "all"),
        ("AddCapability", "CAP_NET_BIND_SERVICE"),
        ("PidsLimit", "256"),
        ("PodmanArgs", "--memory=512m"),
    ]
    .into_iter()
    .map(|(key, value)| KeyValue {
        key: key.into(),
        value: value.into(),
    })
    .collect()
}

/// The embedded template's keys plus the preview hardening (issue 9 #10) that uses keys
/// podman 5.4 lacks, written through `--templates` as an operator or the daemon would.
const HARDENED: &str = "[Container]
Image={{ pinned }}
ContainerName={{ container_name }}
PublishPort={{ publish_host }}:{{ host_port }}:{{ container_port }}
Environment=PORT={{ container_port }} HOSTNAME=0.0.0.0
RunInit=true
Label=codeb.project={{ project }}
Label=codeb.environment={{ environment }}
HealthCmd={{ health_cmd }}
Memory=512m
PidsLimit=256
NoNewPrivileges=true
DropCapability=all
HttpProxy=false

[Service]
Restart=always
";

#[test]
fn every_unit_the_engine_writes_is_what_each_podman_generator_runs() {
    let gens = generators();
    let tmp = tempfile::tempdir().expect("tempdir");
    let hardened = tmp.path().join("templates");
    std::fs::create_dir_all(&hardened).expect("mkdir");
    std::fs::write(hardened.join("app.container.tera"), HARDENED).expect("write template");

    let mut preview = context("pr-42", "blue", 15000);
    preview.health_cmd = None; // as codeb-previews deploys
    preview.env_file = None;
    preview.extra = preview_sandbox();
    let mut bare = context("production", "blue", 14001);
    bare.env_file = None;
    bare.health_cmd = None;
    bare.sha = String::new();
    let variants: Vec<(&str, UnitContext, Option<&Path>)> = vec![
        (
            "production blue",
            context("production", "blue", 14001),
            None,
        ),
        (
            "production green",
            context("production", "green", 24001),
            None,
        ),
        ("staging blue", context("staging", "blue", 14500), None),
        ("preview (daemon)", preview, None),
        ("production, no env file or health command", bare, None),
        (
            "hardened preview template",
            context("pr-42", "green", 25000),
            Some(&hardened),
        ),
    ];

    let mut failures = Vec::new();
    let mut rewritten = Vec::new();
    for (n, (what, ctx, templates)) in variants.iter().enumerate() {
        let text = render_unit(ctx, *templates).expect("renders");
        for g in &gens {
            let dir = tmp.path().join(format!("v{n}-{}", g.version));
            std::fs::create_dir_all(&dir).expect("mkdir");
            let file = dir.join(format!("{}.container", ctx.container_name));
            let written = HostPodman::fixed(g.version)
                .adapt(&file, text.clone())
                .unwrap_or_else(|e| panic!("{what} for podman {}: {e}", g.version));
            if written != text {
                rewritten.push(format!("{what} @ {}", g.version));
            }
            std::fs::write(&file, &written).expect("write unit");
            let unit = ContainerUnit::parse(&file, &written).expect("codeb reads what it wrote");
            match g.convert(&dir, &file) {
                Generated::Service { exec_start } => {
                    if let Err(e) = compare(&unit, &exec_start) {
                        failures.push(format!("{what} (podman {}): {e}", g.full));
                    }
                }
                Generated::Rejected { message } => failures.push(format!(
                    "{what} (podman {}): the generator rejects the unit codeb writes for it: {message}\n{written}",
                    g.full
                )),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // What needed rewriting: podman 5.4 drops the closing quote of the default health command
    // and lacks Memory= and HttpProxy=; podman 5.8 runs every unit as rendered.
    assert_eq!(
        rewritten,
        [
            "production blue @ 5.4",
            "production green @ 5.4",
            "staging blue @ 5.4",
            "hardened preview template @ 5.4"
        ]
    );
}

/// Without the rewrite, podman 5.4 really does skip the hardened unit (the defect found on the
/// guest: `systemctl start` said the unit does not exist).
#[test]
fn podman_5_4_skips_a_unit_with_memory_unless_codeb_rewrites_it() {
    let gens = generators();
    let g = gens
        .iter()
        .find(|g| g.version == codeb_quadlet::PodmanVersion::new(5, 4))
        .expect("5.4 is checked");
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = tmp.path().join("myapp-pr-1-blue.container");
    let text = "[Container]\nImage=localhost/myapp:1\nMemory=512m\n";
    std::fs::write(&file, text).expect("write");
    let Generated::Rejected { message } = g.convert(tmp.path(), &file) else {
        panic!("podman 5.4 accepted Memory=");
    };
    assert!(message.contains("unsupported key 'Memory'"), "{message}");
    let written = HostPodman::fixed(g.version)
        .adapt(&file, text.to_string())
        .expect("adapts");
    std::fs::write(&file, &written).expect("write");
    let Generated::Service { exec_start } = g.convert(tmp.path(), &file) else {
        panic!("podman 5.4 rejects the rewritten unit:\n{written}");
    };
    assert!(
        exec_start
            .windows(2)
            .any(|w| w[0] == "--memory" && w[1] == "512m"),
        "{exec_start:?}"
    );
}
