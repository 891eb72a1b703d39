//! `codeb-install`: turns a fresh app server (Debian 12 or 13 with systemd) into a codeb host,
//! and back. The binary parses flags and calls [`install::run`], which checks everything that
//! can refuse the run, plans the differences between the host and a codeb host, and carries
//! them out; a second run finds nothing to do.
//!
//! Exit codes: 0 done (or nothing to do), 1 a change failed after others were made (run it
//! again once the cause is fixed), 2 refused before any change (usage, not root, no systemd,
//! a missing binary or package).

pub mod accounts;
pub mod fsops;
pub mod install;
pub mod sudoers;
pub mod templates;

use clap::Parser;
use codeb_actions::{Exit, Secret, Step};
use install::{Action, Facts, Options, Report, RunnerOptions};
use std::path::PathBuf;
use std::process::ExitCode;

const AFTER_HELP: &str = "\
What a codeb host gets (paths under --root when given):
  binaries   codeb-port-validate, codeb-healthcheck, codeb-quadlet-update, codeb-daemon (and
             codeb-workflow-gen, codeb-install when present) from --bin-dir to /usr/local/bin
  accounts   system user and group `codeb`; with a runner, its own user (--runner-user) that
             is a member of group codeb
  dirs       /home/codeb/config      the port manifest, codeb:codeb 2770 (group-writable and
                                     setgid: shared by the runner's jobs and the daemon)
             /etc/codeb              daemon.toml (0640, written once) and webhook-secret
                                     (0600, generated once), root 0750
             /var/lib/codeb          the daemon's state (SQLite), root 0700
             /etc/containers/systemd Quadlet units of deployed apps, and .codeb/ (0700) with
                                     codeb's deploy state
  kernel     /etc/sysctl.d/90-codeb.conf (net.ipv4.tcp_migrate_req = 1), applied at once
  units      codeb-daemon.service (enabled, started) and codeb-restore-routes.service
  Caddy      codeb's routes live in Caddy's memory (admin API) and are lost when Caddy loads
             its Caddyfile again. codeb-restore-routes.service rebuilds them from codeb's state:
             linked into caddy.service.wants/, it runs after every start, restart and reload of
             Caddy (PartOf=, ReloadPropagatedFrom=; the installer's drop-in adds BindsTo= for a
             Caddy that died, and the admin address http://127.0.0.1:2019 that deploys and the
             daemon use by default)
  podman     /etc/containers/containers.conf.d/90-codeb.conf (runtime = runc) only on a host
             without unified cgroups (v2), where crun cannot run; nothing on Debian 12/13's
             default cgroup v2
  runner     with --runner-url and --runner-tarball: unpacks the tarball, registers the runner
             (config.sh --unattended, as the runner's user) and installs and starts its service
             (svc.sh install <user>, svc.sh start). The token comes from --runner-token-file or
             $CODEB_RUNNER_TOKEN and is never printed.
  sudo       with a runner: /etc/sudoers.d/codeb-runner (0440, checked with visudo -cf) lets
             the runner's user run exactly `codeb-quadlet-update deploy` and `rollback` as
             root without a password (a deploy writes units and runs systemctl and rootful
             podman); port-validate and healthcheck run as the runner's user

Every step is checked first and only done when needed: a second run says there is nothing
to do. Files codeb owns are replaced when they differ; daemon.toml and webhook-secret are
the administrator's once written (only their mode and owner are kept right).

Examples:
  sudo ./codeb-install --dry-run                         # what would change
  sudo ./codeb-install                                   # binaries beside codeb-install
  sudo codeb-install --bin-dir target/release \\
      --runner-tarball actions-runner-linux-x64-2.330.0.tar.gz \\
      --runner-url https://github.com/acme/shop --runner-token-file token.txt
  sudo codeb-install --uninstall                         # keeps data, config and users
  sudo codeb-install --uninstall --purge                 # removes them too
  codeb-install --root /tmp/image --bin-dir target/release   # prepare a tree, not this host

Exit codes: 0 done or nothing to do, 1 a change failed after others were made (fix the cause
and run again: it goes on from there), 2 refused before changing anything.";

#[derive(Debug, Parser)]
#[command(
    name = "codeb-install",
    version,
    about = "Turn a fresh Debian app server with systemd into a codeb host (and back)",
    after_help = AFTER_HELP
)]
struct Cli {
    /// Directory with the codeb binaries to install [default: the directory of codeb-install]
    #[arg(long, value_name = "DIR")]
    bin_dir: Option<PathBuf>,
    /// Install into the file system tree at DIR instead of this machine: files and accounts
    /// only, nothing is started, reloaded or applied to the running kernel
    #[arg(long, value_name = "DIR", default_value = "/")]
    root: PathBuf,
    /// Directory laid out like the repository's templates/ whose files replace the embedded
    /// ones (e.g. systemd/codeb-daemon.service)
    #[arg(long, value_name = "DIR")]
    templates: Option<PathBuf>,
    /// Print the plan and change nothing
    #[arg(long)]
    dry_run: bool,
    /// Remove what codeb-install installed (binaries, units, settings, the runner's service);
    /// data, configuration and users stay
    #[arg(long)]
    uninstall: bool,
    /// With --uninstall: also remove the manifest, /etc/codeb, the daemon's and the deploys'
    /// state, the runner's directory and the users
    #[arg(long, requires = "uninstall")]
    purge: bool,
    /// The Actions runner's release tarball (actions-runner-linux-<arch>-<version>.tar.gz)
    #[arg(long, value_name = "FILE")]
    runner_tarball: Option<PathBuf>,
    /// Repository or organization the runner serves, e.g. https://github.com/acme/shop
    #[arg(long, value_name = "URL")]
    runner_url: Option<String>,
    /// File holding the registration token (GitHub: Settings > Actions > Runners > New
    /// self-hosted runner) [default: $CODEB_RUNNER_TOKEN]
    #[arg(long, value_name = "FILE")]
    runner_token_file: Option<PathBuf>,
    /// The runner's name [default: this machine's host name]
    #[arg(long, value_name = "NAME")]
    runner_name: Option<String>,
    /// Labels added to self-hosted, Linux and the architecture (comma-separated)
    #[arg(long, value_name = "LIST", default_value = "codeb")]
    runner_labels: String,
    /// The user the runner runs as (created, member of group codeb)
    #[arg(long, value_name = "NAME", default_value = "codeb-runner")]
    runner_user: String,
    /// Where the runner is unpacked [default: /home/<runner-user>/actions-runner]
    #[arg(long, value_name = "DIR")]
    runner_dir: Option<PathBuf>,
}

fn read_token(cli: &Cli) -> Result<Option<Secret>, String> {
    let raw = match &cli.runner_token_file {
        Some(f) => std::fs::read_to_string(f)
            .map_err(|e| format!("--runner-token-file {}: {e}", f.display()))?,
        None => match std::env::var(codeb_core::vars::CODEB_RUNNER_TOKEN) {
            Ok(t) => t,
            Err(_) => return Ok(None),
        },
    };
    let t = raw.trim();
    if t.is_empty() {
        return Ok(None);
    }
    if t.chars().any(char::is_whitespace) {
        return Err(
            "the runner token must be one word (the registration token GitHub shows)".into(),
        );
    }
    Ok(Some(Secret::new(t)))
}

fn options(cli: Cli) -> Result<Options, String> {
    let bin_dir = match &cli.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(PathBuf::from))
            .ok_or("cannot tell where codeb-install is: pass --bin-dir")?,
    };
    if !cli.root.is_absolute() {
        return Err(format!(
            "--root {}: give an absolute path",
            cli.root.display()
        ));
    }
    let token = read_token(&cli)?;
    let name = match cli.runner_name.clone() {
        Some(n) => n,
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "codeb".into()),
    };
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c == ',') {
        return Err(format!("--runner-name `{name}`: one word without commas"));
    }
    if cli.runner_labels.chars().any(char::is_whitespace) {
        return Err(format!(
            "--runner-labels `{}`: comma-separated, without spaces",
            cli.runner_labels
        ));
    }
    let valid_user = !cli.runner_user.is_empty()
        && cli.runner_user.len() <= 32
        && cli
            .runner_user
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && !cli.runner_user.starts_with('-');
    if !valid_user || cli.runner_user == install::CODEB_USER || cli.runner_user == "root" {
        return Err(format!(
            "--runner-user `{}`: a new user name (lower-case letters, digits, - and _), not \
             root or codeb",
            cli.runner_user
        ));
    }
    let dir = cli
        .runner_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("/home/{}/actions-runner", cli.runner_user)));
    if !dir.is_absolute() {
        return Err(format!(
            "--runner-dir {}: give an absolute path",
            dir.display()
        ));
    }
    Ok(Options {
        root: cli.root,
        bin_dir,
        templates: cli.templates,
        dry_run: cli.dry_run,
        action: if cli.uninstall {
            Action::Uninstall { purge: cli.purge }
        } else {
            Action::Install
        },
        runner: RunnerOptions {
            tarball: cli.runner_tarball,
            url: cli.runner_url,
            token,
            name,
            labels: cli.runner_labels,
            user: cli.runner_user,
            dir,
        },
    })
}

fn render(step: &Step, r: &Report) {
    let what = match r.action {
        Action::Install => "install",
        Action::Uninstall { purge: false } => "uninstall",
        Action::Uninstall { purge: true } => "uninstall --purge",
    };
    if r.changes.is_empty() {
        step.result(&format!(
            "codeb-install: nothing to change ({what}, root {}): {}",
            r.root.display(),
            match r.action {
                Action::Install => "this is a codeb host already",
                Action::Uninstall { .. } => "nothing of codeb's is installed",
            }
        ));
    } else {
        let head = if r.dry_run {
            format!(
                "codeb-install: plan ({what}, root {}, dry run: nothing changed):",
                r.root.display()
            )
        } else {
            format!("codeb-install: done ({what}, root {}):", r.root.display())
        };
        step.result(&head);
        for c in &r.changes {
            step.result(&format!("  {c}"));
        }
        step.result(&format!(
            "{} change(s){}",
            r.changes.len(),
            if r.dry_run { " planned" } else { " made" }
        ));
    }
    for n in &r.notes {
        step.log(&format!("note: {n}"));
    }
}

/// The binary: flags in, exit code out.
pub fn main() -> ExitCode {
    let step = Step::from_env();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                Exit::Usage
            } else {
                Exit::Success
            }
            .into();
        }
    };
    let opts = match options(cli) {
        Ok(o) => o,
        Err(e) => {
            step.log(&format!("codeb-install: {e}"));
            return Exit::Usage.into();
        }
    };
    if let Some(t) = &opts.runner.token {
        step.mask(t);
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            step.log(&format!(
                "codeb-install: cannot start the async runtime: {e}"
            ));
            return Exit::Usage.into();
        }
    };
    match rt.block_on(install::run(&opts, &Facts::probe())) {
        Ok(report) => {
            render(&step, &report);
            Exit::Success.into()
        }
        Err(e) => {
            step.log(&format!("codeb-install: {e}"));
            e.exit().into()
        }
    }
}
