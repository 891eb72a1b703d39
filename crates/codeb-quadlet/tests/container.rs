//! Conversion rules and refusals of `ContainerUnit`, through the public API.

use codeb_quadlet::{ContainerUnit, QuadletError};

const PATH: &str = "/etc/containers/systemd/web.container";

fn convert(body: &str) -> Result<ContainerUnit, QuadletError> {
    ContainerUnit::parse(PATH, body)
}

fn args(body: &str) -> Vec<String> {
    convert(body)
        .unwrap_or_else(|e| panic!("unit should convert: {e}"))
        .podman_run_args()
}

fn error(body: &str) -> String {
    match convert(body) {
        Ok(unit) => panic!("unit should be refused, got {:?}", unit.podman_run_args()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn image_and_exec_come_last() {
    assert_eq!(
        args("[Container]\nImage=docker.io/library/node:20\nExec=node \"server file.js\"\n"),
        ["docker.io/library/node:20", "node", "server file.js"]
    );
}

#[test]
fn unsupported_key_is_refused_with_file_line_and_key() {
    let msg = error("[Container]\nImage=docker.io/x/y\nNotify=yes\n");
    assert!(msg.starts_with(&format!("{PATH}:3: ")), "{msg}");
    assert!(msg.contains("Notify="), "{msg}");

    let msg = error("[Container]\nImage=docker.io/x/y\nImagee=typo\n");
    assert!(
        msg.contains(":3: key Imagee= in [Container] is not supported"),
        "{msg}"
    );
}

#[test]
fn quadlet_unit_references_are_refused() {
    let msg = error("[Container]\nImage=docker.io/x/y\nNetwork=backend.network\n");
    assert!(msg.contains(":3: Network=backend.network"), "{msg}");
    assert!(
        msg.contains("systemd-backend"),
        "hint names the resource: {msg}"
    );

    let msg = error("[Container]\nImage=docker.io/x/y\nVolume=data.volume:/data\n");
    assert!(msg.contains("Volume=data.volume:/data"), "{msg}");

    let msg = error("[Container]\nImage=app.build\n");
    assert!(msg.contains("Image=app.build"), "{msg}");

    let msg = error("[Unit]\nAfter=db.container\n[Container]\nImage=docker.io/x/y\n");
    assert!(msg.contains(":2: After=db.container"), "{msg}");

    // Plain resource names pass through.
    let a = args("[Container]\nImage=docker.io/x/y\nNetwork=systemd-backend\nVolume=data:/data\n");
    assert_eq!(
        a,
        [
            "--network",
            "systemd-backend",
            "-v",
            "data:/data",
            "docker.io/x/y"
        ]
    );
}

#[test]
fn missing_image_and_group_without_user() {
    let msg = error("[Container]\nExec=true\n");
    assert!(msg.contains("no Image or Rootfs key"), "{msg}");
    let msg = error("[Container]\nImage=docker.io/x/y\nGroup=1000\n");
    assert!(msg.contains(":3: invalid Group set without User"), "{msg}");
}

#[test]
fn bad_values_name_key_and_line() {
    let msg = error("[Container]\nImage=docker.io/x/y\nReadOnly=maybe\n");
    assert!(
        msg.contains(":3: invalid ReadOnly=maybe: not a boolean"),
        "{msg}"
    );
    let msg = error("[Container]\nImage=docker.io/x/y\nLabel=regex=^a(\\?b)\n");
    assert!(msg.contains("unsupported escape char"), "{msg}");
    let msg = error("[Container]\nImage=docker.io/x/y\nExposeHostPort=http\n");
    assert!(msg.contains(":3: invalid ExposeHostPort=http"), "{msg}");
    let msg = error("[Container]\nImage=docker.io/x/y\n[Service]\nType=simple\n");
    assert!(msg.contains(":4: invalid Type=simple"), "{msg}");
}

#[test]
fn relative_paths_need_an_absolute_unit_path() {
    let unit = ContainerUnit::parse(
        "/srv/app/web.container",
        "[Container]\nImage=docker.io/x/y\nEnvironmentFile=../env/prod.env\nVolume=./data:/data\n",
    )
    .expect("converts");
    assert_eq!(unit.environment_files(), ["/srv/env/prod.env"]);
    assert!(
        unit.podman_run_args()
            .contains(&"/srv/app/data:/data".to_string())
    );

    let err = ContainerUnit::parse(
        "web.container",
        "[Container]\nImage=docker.io/x/y\nEnvironmentFile=prod.env\n",
    )
    .expect_err("relative without a base");
    assert!(err.to_string().contains("web.container:3:"), "{err}");
}

#[test]
fn key_value_lists_are_sorted_deduplicated_and_resettable() {
    let a = args(
        "[Container]\nImage=docker.io/x/y\nEnvironment=B=2 A=1\nEnvironment=B=3\nLabel=x=1\nLabel=\nLabel=y=2\n",
    );
    assert_eq!(
        a,
        [
            "--env",
            "A=1",
            "--env",
            "B=3",
            "--label",
            "y=2",
            "docker.io/x/y"
        ]
    );
}

#[test]
fn short_image_name_warns_like_podman() {
    let unit = convert("[Container]\nImage=nginx\n").expect("converts");
    let w = unit.warnings().first().expect("a warning").to_string();
    assert!(w.contains("which not a fully qualified image name"), "{w}");
}

#[test]
fn shell_rendering_quotes_arguments() {
    let unit = convert("[Container]\nImage=docker.io/x/y\nHealthCmd=curl -f http://localhost/\n")
        .expect("converts");
    assert_eq!(
        unit.podman_run_args_shell(),
        "--health-cmd 'curl -f http://localhost/' docker.io/x/y"
    );
}

#[test]
fn mount_sources_are_resolved_and_rewritten() {
    let a = args(
        "[Container]\nImage=docker.io/x/y\nMount=type=bind,src=./static,dst=/srv,ro\nMount=type=tmpfs,destination=/run\n",
    );
    assert_eq!(
        a,
        [
            "--mount",
            "type=bind,source=/etc/containers/systemd/static,dst=/srv,ro",
            "--mount",
            "type=tmpfs,destination=/run",
            "docker.io/x/y"
        ]
    );
    let msg = error("[Container]\nImage=docker.io/x/y\nMount=type=image,destination=/x\n");
    assert!(
        msg.contains("source parameter is required for mount type image"),
        "{msg}"
    );
}
