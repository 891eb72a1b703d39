//! Deploys from the runner's unprivileged user: `actions/_lib/as-root.sh` (the actions' deploy
//! step) runs the binary itself as root (act) and otherwise through `sudo -n`, refusing with
//! an annotation that names the sudoers rule; and run through sudo, codeb-quadlet-update
//! refuses inputs that would let the caller reach past itself, before anything changes. The
//! rule itself, sudo's refusals and a deploy through it are proven on the guest
//! (tests/guest/install.rs), where the installer writes it.

use crate::util::{codeb, repo, run, scrubbed, tempdir};
use std::fs;
use std::os::unix::fs::PermissionsExt;

#[test]
fn as_root_runs_the_binary_itself_when_the_job_is_root() {
    let out = run(scrubbed("bash")
        .arg(repo().join("actions/_lib/as-root.sh"))
        .args(["/bin/echo", "deploy"]));
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(out.stdout, "deploy\n", "{}", out.all());
}

#[test]
fn as_root_without_the_rule_is_refused_naming_it() {
    // nobody has no sudo rule: `sudo -n -l` says no, and nothing runs.
    let dir = tempdir();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).expect("chmod");
    let marker = dir.path().join("ran");
    let script = dir.path().join("step");
    fs::write(&script, format!("#!/bin/sh\ntouch {}\n", marker.display())).expect("write");
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).expect("chmod");
    let out = run(scrubbed("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "bash"])
        .arg(repo().join("actions/_lib/as-root.sh"))
        .arg(&script)
        .arg("deploy"));
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(
        out.stdout
            .contains("::error title=codeb: step needs root::sudo -n refused")
            && out.stdout.contains("/etc/sudoers.d/codeb-runner")
            && out.stdout.contains("codeb-install"),
        "{}",
        out.all()
    );
    assert!(!marker.exists(), "the step ran");
}

/// codeb-quadlet-update deploy as sudo would start it for the runner's user (root, SUDO_UID).
fn through_sudo(inputs: &[(&str, &str)]) -> crate::util::Run {
    let mut c = codeb("codeb-quadlet-update");
    c.arg("deploy")
        .env("SUDO_UID", "65534")
        .env("SUDO_USER", "codeb-runner")
        .env("INPUT_PROJECT", "shop")
        .env("INPUT_ENVIRONMENT", "production")
        .env("INPUT_IMAGE", "127.0.0.1:1/shop:1");
    for (k, v) in inputs {
        c.env(k, v);
    }
    run(&mut c)
}

#[test]
fn through_sudo_inputs_that_reach_past_the_caller_are_refused_before_any_change() {
    let dir = tempdir();
    let units = dir.path().join("units");
    fs::create_dir(&units).expect("mkdir");
    let units_arg = units.to_string_lossy().into_owned();
    let out = through_sudo(&[("INPUT_QUADLET_DIR", units_arg.as_str())]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(
        out.stderr
            .contains("run through sudo for codeb-runner (/etc/sudoers.d/codeb-runner)")
            && out
                .stderr
                .contains("units go only to /etc/containers/systemd"),
        "{}",
        out.all()
    );
    assert_eq!(
        fs::read_dir(&units).expect("ls").count(),
        0,
        "nothing written"
    );

    let t = dir.path().join("t");
    let out = through_sudo(&[("INPUT_TEMPLATES", t.to_str().expect("utf-8"))]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(
        out.stderr.contains("is refused: a unit template"),
        "{}",
        out.all()
    );

    let out = through_sudo(&[("INPUT_CADDY_ADMIN", "unix//run/podman/podman.sock")]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(
        out.stderr.contains("only over loopback TCP"),
        "{}",
        out.all()
    );

    // An env file of root's (say, a secret of the host's) is not the caller's to hand over.
    let secret = dir.path().join("root-secret.env");
    fs::write(&secret, "HOST_SECRET=1\n").expect("write");
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).expect("chmod");
    let out = through_sudo(&[("INPUT_ENV_FILE", secret.to_str().expect("utf-8"))]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(
        out.stderr
            .contains("must be a regular file owned by codeb-runner (uid 65534)"),
        "{}",
        out.all()
    );
    assert!(!out.all().contains("HOST_SECRET"), "{}", out.all());
}
