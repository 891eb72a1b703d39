//! The runner's sudoers rule (`/etc/sudoers.d/codeb-runner`). The Actions runner's jobs run as
//! an unprivileged user; a deploy needs root (units in /etc/containers/systemd, `systemctl`,
//! rootful podman, the Caddy front). The rule lets that user run exactly the command lines a
//! deploy job needs as root, without a password, and nothing else: no shell, no other
//! arguments, and of the environment only the variables the actions pass.
//!
//! What runs as root is only `codeb-quadlet-update deploy` and `rollback`: the port
//! manifest's directory is group-writable for group codeb (the runner's user is a member), so
//! `codeb-port-validate --allocate` and `codeb-healthcheck` run as the runner's user. Through
//! sudo, codeb-quadlet-update takes from its inputs only what the caller could do itself
//! (crates/codeb-quadlet-update/src/delegated.rs).

use crate::install::paths;
use codeb_core::vars;

/// Where the rule goes (sudo reads /etc/sudoers.d; it skips names with a dot, so the
/// installer's temporary files there are never read).
pub const PATH: &str = codeb_actions::sudo::SUDOERS_FILE;
/// The mode sudo requires of the files it reads.
pub const MODE: u32 = 0o440;
/// The subcommands of codeb-quadlet-update a job may run as root.
pub const COMMANDS: [&str; 2] = ["deploy", "rollback"];

/// The variables sudo keeps: the action inputs, the runner's output files (which a step run
/// through sudo appends to only if the caller owns them), what the deploy history records,
/// and the registry credentials the action passes. Everything else (PATH, CONTAINERS_CONF,
/// LD_*, HOME, ...) is reset by sudo's `env_reset`.
pub fn kept_vars() -> Vec<String> {
    let mut v = vec![format!("{}*", vars::INPUT_PREFIX)];
    v.extend(
        [
            vars::GITHUB_ACTIONS,
            vars::GITHUB_OUTPUT,
            vars::GITHUB_STEP_SUMMARY,
            vars::GITHUB_SHA,
            vars::GITHUB_ACTOR,
            vars::CODEB_REGISTRY_TOKEN,
            vars::CODEB_REGISTRY_USERNAME,
            vars::CODEB_REGISTRY_PASSWORD,
        ]
        .map(str::to_owned),
    );
    v
}

/// The rule for the runner's user `user` (a name `codeb-install` has checked: lower-case
/// letters, digits, `-` and `_`).
pub fn render(user: &str) -> String {
    let exe = format!("{}/codeb-quadlet-update", paths::BIN_DIR);
    let cmds: Vec<String> = COMMANDS.iter().map(|c| format!("{exe} {c}")).collect();
    format!(
        "# Written by codeb-install: replaced when it differs, removed by `codeb-install --uninstall`.\n\
         # The Actions runner's jobs run as {user}; a deploy needs root. This lets {user} run\n\
         # exactly these command lines as root, without a password: no shell, no other\n\
         # arguments. The action's inputs arrive as INPUT_* variables; run through sudo,\n\
         # codeb-quadlet-update accepts only the host's unit directory and manifest, Caddy on\n\
         # loopback and env files of the caller's own. Every other variable is reset.\n\
         Cmnd_Alias CODEB_DEPLOY = {}\n\
         Defaults!CODEB_DEPLOY env_keep += \"{}\"\n\
         {user} ALL = (root) NOPASSWD: CODEB_DEPLOY\n",
        cmds.join(", "),
        kept_vars().join(" ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_names_exactly_the_deploy_commands_and_the_kept_variables() {
        let r = render("codeb-runner");
        let rules: Vec<&str> = r.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            rules,
            [
                "Cmnd_Alias CODEB_DEPLOY = /usr/local/bin/codeb-quadlet-update deploy, \
                 /usr/local/bin/codeb-quadlet-update rollback",
                "Defaults!CODEB_DEPLOY env_keep += \"INPUT_* GITHUB_ACTIONS GITHUB_OUTPUT \
                 GITHUB_STEP_SUMMARY GITHUB_SHA GITHUB_ACTOR CODEB_REGISTRY_TOKEN \
                 CODEB_REGISTRY_USERNAME CODEB_REGISTRY_PASSWORD\"",
                "codeb-runner ALL = (root) NOPASSWD: CODEB_DEPLOY",
            ]
        );
        // Least privilege, spelled out: no ALL command, no argument wildcard, no SETENV.
        for bad in [
            "NOPASSWD: ALL",
            "SETENV",
            "deploy *",
            "/bin/sh",
            "!env_reset",
        ] {
            assert!(!r.contains(bad), "{bad} in\n{r}");
        }
    }

    #[test]
    fn visudo_accepts_the_rule() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("codeb-runner");
        std::fs::write(&p, render("ci-runner_2")).expect("write");
        let out = std::process::Command::new("visudo")
            .arg("-cf")
            .arg(&p)
            .output()
            .expect("visudo runs (apt-get install sudo; scripts/setup installs it)");
        assert!(
            out.status.success(),
            "visudo -cf: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // And refuses a broken one, so the check above can fail.
        std::fs::write(&p, "codeb-runner ALL = (root NOPASSWD: X\n").expect("write");
        let out = std::process::Command::new("visudo")
            .arg("-cf")
            .arg(&p)
            .output()
            .expect("visudo");
        assert!(!out.status.success());
    }
}
