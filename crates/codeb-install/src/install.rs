//! The installer proper: compare what a codeb host needs with what the target has, make a
//! plan of the differences, and carry it out (or only show it, `--dry-run`). A second run
//! finds nothing to do. Every check that can refuse the run is made before the first change.

use crate::accounts::Accounts;
use crate::fsops::{self, Want};
use crate::templates::{self, Templates};
use codeb_actions::{Exit, Secret};
use codeb_runtime::{Cmd, RuntimeError};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where things go on the target (paths as the target sees them; `--root` is prepended).
pub mod paths {
    pub const BIN_DIR: &str = "/usr/local/bin";
    pub const CODEB_HOME: &str = "/home/codeb";
    pub const MANIFEST_DIR: &str = "/home/codeb/config";
    pub const ETC_CODEB: &str = "/etc/codeb";
    pub const DAEMON_TOML: &str = "/etc/codeb/daemon.toml";
    pub const WEBHOOK_SECRET: &str = "/etc/codeb/webhook-secret";
    pub const STATE_DIR: &str = "/var/lib/codeb";
    pub const QUADLET_DIR: &str = "/etc/containers/systemd";
    pub const QUADLET_STATE: &str = "/etc/containers/systemd/.codeb";
    pub const SYSCTL_FILE: &str = "/etc/sysctl.d/90-codeb.conf";
    pub const SUBUID: &str = "/etc/subuid";
    pub const SUBGID: &str = "/etc/subgid";
    pub const CONTAINERS_DROPIN: &str = "/etc/containers/containers.conf.d/90-codeb.conf";
    pub const UNIT_DIR: &str = "/etc/systemd/system";
    pub const DAEMON_UNIT: &str = "/etc/systemd/system/codeb-daemon.service";
    pub const DAEMON_WANTS: &str =
        "/etc/systemd/system/multi-user.target.wants/codeb-daemon.service";
    pub const RESTORE_UNIT: &str = "/etc/systemd/system/codeb-restore-routes.service";
    pub const RESTORE_DROPIN: &str =
        "/etc/systemd/system/codeb-restore-routes.service.d/50-codeb-install.conf";
    pub const RESTORE_WANTS: &str =
        "/etc/systemd/system/caddy.service.wants/codeb-restore-routes.service";
    pub const SUDOERS_DIR: &str = "/etc/sudoers.d";
    pub const SUDOERS_MAIN: &str = "/etc/sudoers";
    /// Where sudo's `visudo` is (package sudo); it checks the runner's rule before it is used.
    pub const VISUDO: &str = "/usr/sbin/visudo";
}

pub const CODEB_USER: &str = "codeb";
pub const DAEMON_SERVICE: &str = "codeb-daemon.service";
pub const RESTORE_SERVICE: &str = "codeb-restore-routes.service";
pub const CADDY_SERVICE: &str = "caddy.service";

/// Binaries a codeb host needs; the installer refuses to run without them.
pub const REQUIRED_BINS: [&str; 4] = [
    "codeb-port-validate",
    "codeb-healthcheck",
    "codeb-quadlet-update",
    "codeb-daemon",
];
/// Installed when they are in the binary directory.
pub const OPTIONAL_BINS: [&str; 2] = ["codeb-workflow-gen", "codeb-install"];

/// Everything the installer is asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    /// The target's file system root: `/`, or a tree to prepare (tests, images).
    pub root: PathBuf,
    /// Where the codeb binaries to install are.
    pub bin_dir: PathBuf,
    pub templates: Option<PathBuf>,
    pub dry_run: bool,
    pub action: Action,
    pub runner: RunnerOptions,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Install,
    /// Remove what was installed; `purge` also removes data, configuration and users.
    Uninstall {
        purge: bool,
    },
}

/// The self-hosted GitHub Actions runner.
#[derive(Debug, Clone)]
pub struct RunnerOptions {
    pub tarball: Option<PathBuf>,
    pub url: Option<String>,
    pub token: Option<Secret>,
    pub name: String,
    pub labels: String,
    pub user: String,
    /// Where the runner is unpacked (a path on the target).
    pub dir: PathBuf,
}

impl RunnerOptions {
    fn requested(&self) -> bool {
        self.tarball.is_some() || self.url.is_some()
    }
}

/// What the installer found out about the machine it runs on.
#[derive(Debug, Clone)]
pub struct Facts {
    pub euid: u32,
    /// systemd runs as PID 1 on this machine.
    pub systemd: bool,
    /// The kernel mounts the unified cgroup v2 hierarchy.
    pub cgroup2: bool,
}

impl Facts {
    pub fn probe() -> Self {
        use std::os::unix::fs::MetadataExt;
        Self {
            // /proc/self belongs to the effective user and group of the process (proc(5)).
            euid: std::fs::metadata("/proc/self").map_or(u32::MAX, |m| m.uid()),
            systemd: codeb_runtime::Systemd::is_running(),
            cgroup2: Path::new("/sys/fs/cgroup/cgroup.controllers").exists(),
        }
    }
}

/// The containers.conf rule: a drop-in only where podman's default runtime cannot work.
/// crun (Debian's default) refuses cgroup v1 and hybrid hosts; runc runs there.
pub fn containers_conf_needed(facts: &Facts) -> bool {
    !facts.cgroup2
}

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error(
        "codeb-install must run as root (it creates users and writes under /etc; \
         --dry-run reads root-only files): run `sudo codeb-install ...`"
    )]
    NotRoot { euid: u32 },
    #[error(
        "systemd is not running on this machine (/run/systemd/system is missing): a codeb host \
         is a machine booted with systemd as PID 1 (Debian 12 or 13). To prepare a file system \
         tree for such a machine instead, pass --root DIR"
    )]
    NoSystemd,
    #[error(
        "{name} is missing in {}: build the binaries (`cargo build --release --bins`) and pass \
         `--bin-dir target/release`, or run the codeb-install that came with the release binaries",
        dir.display()
    )]
    MissingBinary { name: String, dir: PathBuf },
    #[error("{what}: run `apt-get install {package}`, then codeb-install again")]
    MissingPackage { what: String, package: String },
    #[error("{0}")]
    Usage(String),
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Template(#[from] templates::TemplateError),
    #[error(
        "{change}: {source}\n{done} change(s) were made before this one; fix the cause and run \
         codeb-install again: it goes on from where it stopped"
    )]
    Apply {
        change: String,
        done: usize,
        source: ApplyError,
    },
}

impl InstallError {
    /// 1 when the run failed after it began changing the host, 2 when it refused before.
    pub fn exit(&self) -> Exit {
        match self {
            Self::Apply { .. } => Exit::Failure,
            _ => Exit::Usage,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("{0}")]
    Other(String),
}

/// One step of the plan: what it says (never a secret) and what it does.
#[derive(Debug)]
pub struct Change {
    pub text: String,
    op: Op,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[derive(Debug)]
enum Op {
    Group(String),
    User {
        name: String,
        primary: Option<String>,
        extra: Vec<String>,
        home: String,
        shell: String,
    },
    JoinGroup {
        user: String,
        group: String,
    },
    DeleteUser(String),
    DeleteGroup(String),
    Ensure(Want),
    /// A sudoers file: written beside its place, checked with `visudo -cf`, then renamed.
    Sudoers(Want),
    Symlink {
        path: PathBuf,
        target: String,
    },
    Remove {
        path: PathBuf,
        recursive: bool,
    },
    /// Removes a directory the installer made for its own files, if nothing else is in it.
    RemoveIfEmpty(PathBuf),
    SysctlLoad(String),
    Systemctl(Vec<String>),
    Unpack {
        tarball: PathBuf,
        dir: PathBuf,
        user: String,
    },
    AsRunner {
        dir: PathBuf,
        user: String,
        script: &'static str,
        args: Vec<String>,
        token: Option<Secret>,
    },
    Svc {
        dir: PathBuf,
        args: Vec<String>,
    },
}

/// The result of a run: the plan, whether it was carried out, and notes for the reader.
#[derive(Debug)]
pub struct Report {
    pub root: PathBuf,
    pub action: Action,
    pub dry_run: bool,
    pub changes: Vec<Change>,
    pub notes: Vec<String>,
}

struct Ctx<'a> {
    o: &'a Options,
    live: bool,
    acc: Accounts,
    changes: Vec<Change>,
    notes: Vec<String>,
}

impl Ctx<'_> {
    fn at(&self, p: &str) -> PathBuf {
        fsops::under(&self.o.root, Path::new(p))
    }
    fn push(&mut self, text: impl Into<String>, op: Op) {
        self.changes.push(Change {
            text: text.into(),
            op,
        });
    }
    fn ensure(&mut self, want: Want) -> Result<bool, InstallError> {
        match fsops::diff(&want, &self.acc).map_err(|source| InstallError::Read {
            path: want.path.clone(),
            source,
        })? {
            None => Ok(false),
            Some(text) => {
                self.push(text, Op::Ensure(want));
                Ok(true)
            }
        }
    }
    fn symlink(&mut self, path: &str, target: &str) -> bool {
        let p = self.at(path);
        if std::fs::read_link(&p).is_ok_and(|t| t == Path::new(target)) {
            return false;
        }
        self.push(
            format!("link {path} -> {target}"),
            Op::Symlink {
                path: p,
                target: target.to_owned(),
            },
        );
        true
    }
    fn remove(&mut self, path: &str, recursive: bool) -> bool {
        let p = self.at(path);
        if std::fs::symlink_metadata(&p).is_err() {
            return false;
        }
        let what = if recursive {
            "remove (with its contents)"
        } else {
            "remove"
        };
        self.push(format!("{what} {path}"), Op::Remove { path: p, recursive });
        true
    }
}

/// Checks, plans and (unless `--dry-run`) carries out `o` on this machine.
pub async fn run(o: &Options, facts: &Facts) -> Result<Report, InstallError> {
    let live = o.root == Path::new("/");
    if facts.euid != 0 {
        return Err(InstallError::NotRoot { euid: facts.euid });
    }
    if live && !facts.systemd {
        return Err(InstallError::NoSystemd);
    }
    let acc = Accounts::read(&o.root).map_err(|source| InstallError::Read {
        path: o.root.join("etc/passwd"),
        source,
    })?;
    let mut cx = Ctx {
        o,
        live,
        acc,
        changes: Vec::new(),
        notes: Vec::new(),
    };
    if !live {
        cx.notes.push(format!(
            "--root {}: only files and accounts in that tree change; the running system is not \
             touched (no daemon-reload, sysctl or service start)",
            o.root.display()
        ));
    }
    match o.action {
        Action::Install => plan_install(&mut cx, facts).await?,
        Action::Uninstall { purge } => plan_uninstall(&mut cx, purge).await?,
    }
    let Ctx { changes, notes, .. } = cx;
    let report = Report {
        root: o.root.clone(),
        action: o.action,
        dry_run: o.dry_run,
        changes,
        notes,
    };
    if !o.dry_run {
        apply(o, &report.changes).await?;
    }
    Ok(report)
}

async fn host_checks(cx: &mut Ctx<'_>) -> Result<(), InstallError> {
    match codeb_runtime::Podman::new().version().await {
        Err(RuntimeError::Spawn { .. }) => {
            return Err(InstallError::MissingPackage {
                what: "podman is not installed".into(),
                package: "podman".into(),
            });
        }
        Err(e) => {
            return Err(InstallError::Usage(format!(
                "podman does not work here: {e}"
            )));
        }
        Ok((major, minor)) if (major, minor) < (4, 4) => cx.notes.push(format!(
            "podman {major}.{minor} has no Quadlet (4.4 and later): deploys will run containers \
             with `podman run`, not as systemd units; install podman >= 4.4 (Debian 13) for units"
        )),
        Ok(_) => {}
    }
    let init = ["/usr/libexec/podman/catatonit", "/usr/bin/catatonit"];
    if !init.iter().any(|p| Path::new(p).exists()) {
        return Err(InstallError::MissingPackage {
            what: "podman's init binary (catatonit) is missing; codeb's units use RunInit=true"
                .into(),
            package: "catatonit".into(),
        });
    }
    let caddy = [
        "/etc/systemd/system/caddy.service",
        "/usr/lib/systemd/system/caddy.service",
        "/lib/systemd/system/caddy.service",
    ];
    if !caddy.iter().any(|p| Path::new(p).exists()) {
        return Err(InstallError::MissingPackage {
            what: "Caddy (caddy.service) is not installed; codeb's traffic goes through it".into(),
            package: "caddy".into(),
        });
    }
    Ok(())
}

fn binaries_preflight(o: &Options) -> Result<(), InstallError> {
    for name in REQUIRED_BINS {
        let p = o.bin_dir.join(name);
        if !p.is_file() {
            return Err(InstallError::MissingBinary {
                name: name.to_owned(),
                dir: o.bin_dir.clone(),
            });
        }
    }
    Ok(())
}

async fn plan_install(cx: &mut Ctx<'_>, facts: &Facts) -> Result<(), InstallError> {
    let o = cx.o;
    binaries_preflight(o)?;
    if cx.live {
        host_checks(cx).await?;
    }
    let t = Templates::new(o.templates.as_deref());
    // Everything below only reads until `apply`; runner checks that can refuse come first.
    let runner_steps = if o.runner.requested() {
        if !Path::new(paths::VISUDO).is_file() {
            return Err(InstallError::MissingPackage {
                what: format!(
                    "sudo is not installed ({} is missing); the runner's jobs deploy through \
                     the sudoers rule {}",
                    paths::VISUDO,
                    crate::sudoers::PATH
                ),
                package: "sudo".into(),
            });
        }
        Some(runner_preflight(cx)?)
    } else {
        None
    };

    // Accounts.
    if cx.acc.group(CODEB_USER).is_none() {
        cx.push(
            format!("create system group {CODEB_USER}"),
            Op::Group(CODEB_USER.into()),
        );
    }
    if cx.acc.user(CODEB_USER).is_none() {
        cx.push(
            format!(
                "create system user {CODEB_USER} (group {CODEB_USER}, home {}, no login)",
                paths::CODEB_HOME
            ),
            Op::User {
                name: CODEB_USER.into(),
                primary: Some(CODEB_USER.into()),
                extra: vec![],
                home: paths::CODEB_HOME.into(),
                shell: "/usr/sbin/nologin".into(),
            },
        );
    }
    if o.runner.requested() {
        let user = o.runner.user.clone();
        let home = runner_home(&o.runner);
        if cx.acc.user(&user).is_none() {
            cx.push(
                format!(
                    "create system user {user} (own group, member of {CODEB_USER}, home {home}) \
                     for the Actions runner"
                ),
                Op::User {
                    name: user.clone(),
                    primary: None,
                    extra: vec![CODEB_USER.into()],
                    home,
                    shell: "/bin/bash".into(),
                },
            );
        } else if !cx.acc.in_group(&user, CODEB_USER) {
            cx.push(
                format!("add {user} to group {CODEB_USER}"),
                Op::JoinGroup {
                    user,
                    group: CODEB_USER.into(),
                },
            );
        }
    }

    // Directories.
    let dirs: [(&str, u32, &str, &str); 6] = [
        (paths::CODEB_HOME, 0o750, CODEB_USER, CODEB_USER),
        // Shared by the runner (port-validate --allocate) and the daemon (previews):
        // group-writable, and setgid so that every new file belongs to group codeb.
        (paths::MANIFEST_DIR, 0o2770, CODEB_USER, CODEB_USER),
        (paths::ETC_CODEB, 0o750, "root", "root"),
        (paths::STATE_DIR, 0o700, "root", "root"),
        (paths::QUADLET_DIR, 0o755, "root", "root"),
        (paths::QUADLET_STATE, 0o700, "root", "root"),
    ];
    for (p, mode, u, g) in dirs {
        cx.ensure(Want::dir(cx.at(p), p, mode, u, g))?;
    }

    // Binaries.
    let mut daemon_changed = false;
    let mut quadlet_update_changed = false;
    for name in REQUIRED_BINS.iter().chain(OPTIONAL_BINS.iter()) {
        let src = o.bin_dir.join(name);
        if !src.is_file() {
            continue;
        }
        let contents = std::fs::read(&src).map_err(|source| InstallError::Read {
            path: src.clone(),
            source,
        })?;
        let dest = format!("{}/{name}", paths::BIN_DIR);
        let changed = cx.ensure(Want::file(
            cx.at(&dest),
            &dest,
            contents,
            0o755,
            "root",
            "root",
        ))?;
        daemon_changed |= changed && *name == "codeb-daemon";
        quadlet_update_changed |= changed && *name == "codeb-quadlet-update";
    }

    // Kernel settings.
    let sysctl = t.get(templates::SYSCTL)?;
    let sysctl_changed = cx.ensure(Want::file(
        cx.at(paths::SYSCTL_FILE),
        paths::SYSCTL_FILE,
        sysctl.clone(),
        0o644,
        "root",
        "root",
    ))?;

    // Podman's settings, only where its default cannot work.
    if containers_conf_needed(facts) {
        cx.ensure(Want::file(
            cx.at(paths::CONTAINERS_DROPIN),
            paths::CONTAINERS_DROPIN,
            t.get(templates::CONTAINERS_CONF)?,
            0o644,
            "root",
            "root",
        ))?;
    } else {
        cx.remove(paths::CONTAINERS_DROPIN, false);
    }

    // Preview units run with `UserNS=auto` (the daemon's default sandbox): rootful podman
    // takes those ids from the subordinate ranges of the user "containers", which a fresh
    // Debian lacks ("no subuid ranges found for user containers"). Add podman's documented
    // default range when the user has none; other entries are kept as they are.
    for file in [paths::SUBUID, paths::SUBGID] {
        let at = cx.at(file);
        let existing = match std::fs::read(&at) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => return Err(InstallError::Read { path: at, source }),
        };
        if let Some(wanted) = with_containers_range(&existing) {
            cx.ensure(Want::file(at, file, wanted, 0o644, "root", "root"))?;
        }
    }

    // Units: the daemon, the route restore and its ties to Caddy.
    let mut units_changed = false;
    let daemon_unit = cx.ensure(Want::file(
        cx.at(paths::DAEMON_UNIT),
        paths::DAEMON_UNIT,
        t.get(templates::DAEMON_UNIT)?,
        0o644,
        "root",
        "root",
    ))?;
    units_changed |= daemon_unit;
    units_changed |= cx.symlink(paths::DAEMON_WANTS, paths::DAEMON_UNIT);
    let mut restore_changed = false;
    for (p, tpl) in [
        (paths::RESTORE_UNIT, templates::RESTORE_UNIT),
        (paths::RESTORE_DROPIN, templates::RESTORE_DROPIN),
    ] {
        restore_changed |=
            cx.ensure(Want::file(cx.at(p), p, t.get(tpl)?, 0o644, "root", "root"))?;
    }
    restore_changed |= cx.symlink(paths::RESTORE_WANTS, paths::RESTORE_UNIT);
    units_changed |= restore_changed;

    // The daemon's configuration: written once, then the administrator's.
    let toml_path = cx.at(paths::DAEMON_TOML);
    let toml_new = !toml_path.exists();
    let toml = if toml_new {
        t.get(templates::DAEMON_TOML)?
    } else {
        Vec::new()
    };
    cx.ensure(Want::config(toml_path, paths::DAEMON_TOML, toml, 0o640))?;
    let secret_path = cx.at(paths::WEBHOOK_SECRET);
    let secret = if secret_path.exists() {
        Vec::new()
    } else {
        new_webhook_secret()
    };
    if cx.ensure(Want::config(
        secret_path,
        paths::WEBHOOK_SECRET,
        secret,
        0o600,
    ))? && toml_new
    {
        cx.notes.push(format!(
            "a new webhook secret is in {}: give GitHub the same secret in the repository's \
             webhook settings (Content type application/json, URL https://<host>/webhook/github)",
            paths::WEBHOOK_SECRET
        ));
    }
    if toml_new {
        cx.notes.push(format!(
            "{} is the example configuration: set your repositories under [previews.repos] and \
             the GitHub token, then `systemctl restart {DAEMON_SERVICE}`",
            paths::DAEMON_TOML
        ));
    }

    // The running system: reload units, apply the kernel settings, (re)start services.
    if cx.live {
        if units_changed {
            cx.push(
                "systemctl daemon-reload",
                Op::Systemctl(vec!["daemon-reload".into()]),
            );
        }
        if sysctl_changed || !sysctl_applied(&sysctl) {
            cx.push(
                format!("apply {} (sysctl --load)", paths::SYSCTL_FILE),
                Op::SysctlLoad(paths::SYSCTL_FILE.into()),
            );
        }
        if is_active(CADDY_SERVICE).await {
            if restore_changed || quadlet_update_changed || !is_active(RESTORE_SERVICE).await {
                cx.push(
                    format!("systemctl restart {RESTORE_SERVICE} (codeb's routes in Caddy)"),
                    Op::Systemctl(vec!["restart".into(), RESTORE_SERVICE.into()]),
                );
            }
        } else {
            cx.notes.push(format!(
                "{CADDY_SERVICE} is not running: start it (`systemctl start caddy`); codeb's \
                 routes are restored whenever it starts"
            ));
        }
        if daemon_changed || daemon_unit || !is_active(DAEMON_SERVICE).await {
            cx.push(
                format!("systemctl restart {DAEMON_SERVICE}"),
                Op::Systemctl(vec!["restart".into(), DAEMON_SERVICE.into()]),
            );
        }
    }

    if let Some(steps) = runner_steps {
        plan_runner(cx, steps).await?;
    }
    Ok(())
}

fn runner_home(r: &RunnerOptions) -> String {
    format!("/home/{}", r.user)
}

/// What the runner needs, decided before anything changes.
struct RunnerSteps {
    unpack: Option<PathBuf>,
    configure: Option<(String, Secret)>,
}

fn runner_preflight(cx: &Ctx<'_>) -> Result<RunnerSteps, InstallError> {
    let r = &cx.o.runner;
    let dir = fsops::under(&cx.o.root, &r.dir);
    let unpack = if dir.join("config.sh").is_file() {
        None
    } else {
        match &r.tarball {
            Some(t) if t.is_file() => Some(t.clone()),
            Some(t) => {
                return Err(InstallError::Usage(format!(
                    "--runner-tarball {}: no such file; download actions-runner-linux-x64-<version>.tar.gz \
                     from https://github.com/actions/runner/releases and pass its path",
                    t.display()
                )));
            }
            None => {
                return Err(InstallError::Usage(format!(
                    "the runner is not unpacked in {}: pass --runner-tarball \
                     actions-runner-linux-x64-<version>.tar.gz",
                    r.dir.display()
                )));
            }
        }
    };
    let configure = if dir.join(".runner").is_file() {
        None
    } else {
        let url = r.url.clone().ok_or_else(|| {
            InstallError::Usage(
                "the runner is not registered yet: pass --runner-url (the repository or \
                 organization, e.g. https://github.com/acme/shop)"
                    .into(),
            )
        })?;
        if !url.starts_with("https://") {
            return Err(InstallError::Usage(format!(
                "--runner-url {url}: expected https://github.com/OWNER[/REPO]"
            )));
        }
        let token = r.token.clone().ok_or_else(|| {
            InstallError::Usage(format!(
                "the runner is not registered yet and no registration token was given: pass \
                 --runner-token-file FILE or set {} (GitHub: Settings > Actions > Runners > New \
                 self-hosted runner shows the token; it is valid for one hour)",
                codeb_core::vars::CODEB_RUNNER_TOKEN
            ))
        })?;
        Some((url, token))
    };
    Ok(RunnerSteps { unpack, configure })
}

async fn plan_runner(cx: &mut Ctx<'_>, steps: RunnerSteps) -> Result<(), InstallError> {
    let r = cx.o.runner.clone();
    let user = r.user.clone();
    let home = runner_home(&r);
    let dir_host = r.dir.to_string_lossy().into_owned();

    // The deploy steps need root: the runner's sudoers rule (before the runner can run jobs).
    let want = Want::file(
        cx.at(crate::sudoers::PATH),
        crate::sudoers::PATH,
        crate::sudoers::render(&user).into_bytes(),
        crate::sudoers::MODE,
        "root",
        "root",
    );
    if let Some(text) = fsops::diff(&want, &cx.acc).map_err(|source| InstallError::Read {
        path: want.path.clone(),
        source,
    })? {
        cx.push(
            format!(
                "{text}: {user} may run codeb-quadlet-update {} as root (checked with visudo -cf \
                 before it is moved into place)",
                crate::sudoers::COMMANDS.join("|")
            ),
            Op::Sudoers(want),
        );
    }
    let main = cx.at(paths::SUDOERS_MAIN);
    if let Ok(text) = std::fs::read_to_string(&main)
        && !text.lines().any(|l| {
            l.trim_start()
                .trim_start_matches(['@', '#'])
                .starts_with("includedir /etc/sudoers.d")
        })
    {
        cx.notes.push(format!(
            "{} does not read {} (no `@includedir {}`): add it, or the runner's jobs cannot \
             deploy",
            paths::SUDOERS_MAIN,
            paths::SUDOERS_DIR,
            paths::SUDOERS_DIR
        ));
    }
    cx.ensure(Want::dir(cx.at(&home), &home, 0o750, &user, &user))?;
    cx.ensure(Want::dir(cx.at(&dir_host), &dir_host, 0o750, &user, &user))?;
    let dir = cx.at(&dir_host);
    if let Some(tarball) = steps.unpack {
        cx.push(
            format!(
                "unpack {} into {dir_host} (owned by {user})",
                tarball.display()
            ),
            Op::Unpack {
                tarball,
                dir: dir.clone(),
                user: user.clone(),
            },
        );
    }
    if let Some((url, token)) = steps.configure {
        let args = vec![
            "--unattended".into(),
            "--url".into(),
            url.clone(),
            "--name".into(),
            r.name.clone(),
            "--labels".into(),
            r.labels.clone(),
            "--replace".into(),
        ];
        cx.push(
            format!(
                "register the runner as {user}: config.sh --unattended --url {url} --token *** \
                 --name {} --labels {} --replace",
                r.name, r.labels
            ),
            Op::AsRunner {
                dir: dir.clone(),
                user: user.clone(),
                script: "config.sh",
                args,
                token: Some(token),
            },
        );
    }
    let service_file = dir.join(".service");
    if service_file.is_file() {
        if cx.live {
            let name = std::fs::read_to_string(&service_file).unwrap_or_default();
            let name = name.trim();
            if !name.is_empty() && !is_active(name).await {
                cx.push(
                    "start the runner's service: svc.sh start",
                    Op::Svc {
                        dir,
                        args: vec!["start".into()],
                    },
                );
            }
        }
    } else {
        cx.push(
            format!("install the runner's service: svc.sh install {user}"),
            Op::Svc {
                dir: dir.clone(),
                args: vec!["install".into(), user],
            },
        );
        cx.push(
            "start the runner's service: svc.sh start",
            Op::Svc {
                dir,
                args: vec!["start".into()],
            },
        );
    }
    Ok(())
}

async fn plan_uninstall(cx: &mut Ctx<'_>, purge: bool) -> Result<(), InstallError> {
    let o = cx.o;
    let r = o.runner.clone();
    let runner_dir_host = r.dir.to_string_lossy().into_owned();
    let runner_dir = cx.at(&runner_dir_host);

    // The runner first: it runs jobs that use everything else.
    if runner_dir.join(".service").is_file() {
        if cx.live {
            cx.push(
                "stop the runner's service: svc.sh stop",
                Op::Svc {
                    dir: runner_dir.clone(),
                    args: vec!["stop".into()],
                },
            );
        }
        cx.push(
            "remove the runner's service: svc.sh uninstall",
            Op::Svc {
                dir: runner_dir.clone(),
                args: vec!["uninstall".into()],
            },
        );
    }
    if runner_dir.join(".runner").is_file() {
        if let Some(token) = r.token.clone() {
            cx.push(
                format!(
                    "unregister the runner as {}: config.sh remove --token ***",
                    r.user
                ),
                Op::AsRunner {
                    dir: runner_dir.clone(),
                    user: r.user.clone(),
                    script: "config.sh",
                    args: vec!["remove".into()],
                    token: Some(token),
                },
            );
        } else {
            cx.notes.push(format!(
                "the runner in {runner_dir_host} stays registered with GitHub: remove it under \
                 Settings > Actions > Runners, or pass a removal token (--runner-token-file) to \
                 --uninstall"
            ));
        }
    }

    if cx.live {
        for unit in [DAEMON_SERVICE, RESTORE_SERVICE] {
            if is_active(unit).await {
                cx.push(
                    format!("systemctl stop {unit}"),
                    Op::Systemctl(vec!["stop".into(), unit.into()]),
                );
            }
        }
    }
    let mut units_changed = false;
    for p in [
        paths::DAEMON_WANTS,
        paths::DAEMON_UNIT,
        paths::RESTORE_WANTS,
        paths::RESTORE_DROPIN,
        paths::RESTORE_UNIT,
    ] {
        units_changed |= cx.remove(p, false);
    }
    for p in [
        paths::RESTORE_WANTS,
        paths::RESTORE_DROPIN,
        paths::CONTAINERS_DROPIN,
    ] {
        if let Some(parent) = Path::new(p).parent() {
            let d = cx.at(&parent.to_string_lossy());
            if d.is_dir() {
                cx.push(
                    format!("remove {} if empty", parent.display()),
                    Op::RemoveIfEmpty(d),
                );
            }
        }
    }
    cx.remove(crate::sudoers::PATH, false);
    cx.remove(paths::SYSCTL_FILE, false);
    cx.remove(paths::CONTAINERS_DROPIN, false);
    for name in REQUIRED_BINS.iter().chain(OPTIONAL_BINS.iter()) {
        cx.remove(&format!("{}/{name}", paths::BIN_DIR), false);
    }
    if cx.live && units_changed {
        cx.push(
            "systemctl daemon-reload",
            Op::Systemctl(vec!["daemon-reload".into()]),
        );
    }
    if cx.live {
        cx.notes.push(
            "kernel settings stay in effect until the next boot (sysctl has no \"unset\")".into(),
        );
    }

    let data = [
        paths::CODEB_HOME,
        paths::ETC_CODEB,
        paths::STATE_DIR,
        paths::QUADLET_STATE,
    ];
    if purge {
        let home = runner_home(&r);
        cx.remove(&home, true);
        if home != runner_dir_host && !Path::new(&runner_dir_host).starts_with(&home) {
            cx.remove(&runner_dir_host, true);
        }
        for p in data {
            cx.remove(p, true);
        }
        if cx.acc.user(&r.user).is_some() {
            cx.push(
                format!("delete user {}", r.user),
                Op::DeleteUser(r.user.clone()),
            );
        }
        if cx.acc.group(&r.user).is_some() {
            cx.push(
                format!("delete group {}", r.user),
                Op::DeleteGroup(r.user.clone()),
            );
        }
        if cx.acc.user(CODEB_USER).is_some() {
            cx.push(
                format!("delete user {CODEB_USER}"),
                Op::DeleteUser(CODEB_USER.into()),
            );
        }
        if cx.acc.group(CODEB_USER).is_some() {
            cx.push(
                format!("delete group {CODEB_USER}"),
                Op::DeleteGroup(CODEB_USER.into()),
            );
        }
        cx.notes.push(format!(
            "deployed apps keep their units in {} (remove them with `systemctl stop` and rm); \
             their images stay in podman's storage",
            paths::QUADLET_DIR
        ));
    } else {
        let kept: Vec<&str> = data.iter().copied().filter(|p| cx.at(p).exists()).collect();
        if !kept.is_empty() {
            cx.notes.push(format!(
                "kept (data and configuration; --purge removes them, and the users): {}",
                kept.join(", ")
            ));
        }
    }
    // Remove-if-empty changes only count when something else changes too.
    if cx
        .changes
        .iter()
        .all(|c| matches!(c.op, Op::RemoveIfEmpty(_)))
    {
        cx.changes.clear();
    }
    Ok(())
}

fn new_webhook_secret() -> Vec<u8> {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let mut hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    hex.push('\n');
    hex.into_bytes()
}

/// The subordinate-id range podman documents for `UserNS=auto` (user "containers").
const CONTAINERS_RANGE: &str = "containers:2147483647:2147483648";

/// `/etc/subuid` or `/etc/subgid` with a range for the user "containers" appended, or `None`
/// when it has one already.
fn with_containers_range(existing: &[u8]) -> Option<Vec<u8>> {
    let text = String::from_utf8_lossy(existing);
    if text.lines().any(|l| l.starts_with("containers:")) {
        return None;
    }
    let mut out = existing.to_vec();
    if !out.is_empty() && !out.ends_with(b"\n") {
        out.push(b'\n');
    }
    out.extend_from_slice(CONTAINERS_RANGE.as_bytes());
    out.push(b'\n');
    Some(out)
}

/// Whether every `key = value` of a sysctl file is what the kernel has now.
fn sysctl_applied(file: &[u8]) -> bool {
    String::from_utf8_lossy(file)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';'))
        .filter_map(|l| l.split_once('='))
        .all(|(k, v)| {
            let p = Path::new("/proc/sys").join(k.trim().replace('.', "/"));
            std::fs::read_to_string(p).is_ok_and(|now| now.trim() == v.trim())
        })
}

async fn is_active(unit: &str) -> bool {
    Cmd::new("systemctl")
        .args(["is-active", "--quiet", unit])
        .timeout(Duration::from_secs(30))
        .output()
        .await
        .is_ok()
}

fn prefix_args(root: &Path) -> Vec<String> {
    if root == Path::new("/") {
        Vec::new()
    } else {
        vec!["--prefix".into(), root.to_string_lossy().into_owned()]
    }
}

async fn apply(o: &Options, changes: &[Change]) -> Result<(), InstallError> {
    for (done, c) in changes.iter().enumerate() {
        apply_one(o, &c.op)
            .await
            .map_err(|source| InstallError::Apply {
                change: c.text.clone(),
                done,
                source,
            })?;
    }
    Ok(())
}

const ACCOUNT_TIMEOUT: Duration = Duration::from_secs(60);

async fn apply_one(o: &Options, op: &Op) -> Result<(), ApplyError> {
    let root = &o.root;
    match op {
        Op::Group(name) => {
            Cmd::new("groupadd")
                .args(prefix_args(root))
                .args(["--system", name.as_str()])
                .timeout(ACCOUNT_TIMEOUT)
                .output()
                .await?;
        }
        Op::User {
            name,
            primary,
            extra,
            home,
            shell,
        } => {
            let mut c = Cmd::new("useradd")
                .args(prefix_args(root))
                .args(["--system", "--no-create-home", "--home-dir", home])
                .args(["--shell", shell]);
            c = match primary {
                Some(g) => c.args(["--gid", g.as_str()]),
                None => c.arg("--user-group"),
            };
            if !extra.is_empty() {
                c = c.args(["--groups".to_owned(), extra.join(",")]);
            }
            c.arg(name.as_str())
                .timeout(ACCOUNT_TIMEOUT)
                .output()
                .await?;
        }
        Op::JoinGroup { user, group } => {
            Cmd::new("usermod")
                .args(prefix_args(root))
                .args(["--append", "--groups", group.as_str(), user.as_str()])
                .timeout(ACCOUNT_TIMEOUT)
                .output()
                .await?;
        }
        Op::DeleteUser(name) => {
            if Accounts::read(root)?.user(name).is_some() {
                Cmd::new("userdel")
                    .args(prefix_args(root))
                    .arg(name.as_str())
                    .timeout(ACCOUNT_TIMEOUT)
                    .output()
                    .await?;
            }
        }
        Op::DeleteGroup(name) => {
            // userdel may have removed the user's own group already.
            if Accounts::read(root)?.group(name).is_some() {
                Cmd::new("groupdel")
                    .args(prefix_args(root))
                    .arg(name.as_str())
                    .timeout(ACCOUNT_TIMEOUT)
                    .output()
                    .await?;
            }
        }
        Op::Ensure(want) => fsops::apply(want, &Accounts::read(root)?)?,
        Op::Sudoers(want) => write_sudoers(want).await?,
        Op::Symlink { path, target } => {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
            std::os::unix::fs::symlink(target, path)?;
        }
        Op::Remove { path, recursive } => {
            let meta = std::fs::symlink_metadata(path)?;
            if meta.is_dir() && *recursive {
                std::fs::remove_dir_all(path)?;
            } else if meta.is_dir() {
                std::fs::remove_dir(path)?;
            } else {
                std::fs::remove_file(path)?;
            }
        }
        Op::RemoveIfEmpty(path) => {
            if std::fs::read_dir(path).is_ok_and(|mut d| d.next().is_none()) {
                std::fs::remove_dir(path)?;
            }
        }
        Op::SysctlLoad(file) => {
            Cmd::new("sysctl")
                .args(["--load", file.as_str()])
                .timeout(Duration::from_secs(30))
                .output()
                .await?;
        }
        Op::Systemctl(args) => {
            Cmd::new("systemctl")
                .args(args)
                .timeout(Duration::from_secs(300))
                .output()
                .await?;
        }
        Op::Unpack { tarball, dir, user } => {
            // The tarball's `.` entry would give the directory its own mode: keep ours.
            let mode = std::fs::metadata(dir)?.permissions();
            Cmd::new("tar")
                .args(["--extract", "--gzip", "--no-same-owner", "--file"])
                .arg(tarball.as_os_str())
                .arg("--directory")
                .arg(dir.as_os_str())
                .timeout(Duration::from_secs(600))
                .output()
                .await?;
            let acc = Accounts::read(root)?;
            let u = acc
                .user(user)
                .ok_or_else(|| ApplyError::Other(format!("user {user} does not exist")))?;
            fsops::chown_tree(dir, u.uid, u.gid)?;
            std::fs::set_permissions(dir, mode)?;
        }
        Op::AsRunner {
            dir,
            user,
            script,
            args,
            token,
        } => {
            let acc = Accounts::read(root)?;
            let u = acc
                .user(user)
                .ok_or_else(|| ApplyError::Other(format!("user {user} does not exist")))?;
            let mut gids = vec![u.gid];
            gids.extend(
                acc.groups
                    .iter()
                    .filter(|g| g.members.iter().any(|m| m == user))
                    .map(|g| g.gid),
            );
            let gids: Vec<String> = gids.iter().map(u32::to_string).collect();
            // config.sh refuses root; it runs as the runner's user, with an environment of
            // its own (nothing of root's, no token in the environment).
            let mut c = Cmd::new("setpriv")
                .arg(format!("--reuid={}", u.uid))
                .arg(format!("--regid={}", u.gid))
                .arg(format!("--groups={}", gids.join(",")))
                .arg("--")
                .arg(dir.join(script).as_os_str())
                .args(args)
                .current_dir(dir)
                .env_clear()
                .env(codeb_core::vars::HOME, &u.home)
                .env(codeb_core::vars::USER, &u.name)
                .env(codeb_core::vars::PATH, SYSTEM_PATH)
                .timeout(Duration::from_secs(300));
            if let Some(t) = token {
                c = c.arg("--token").secret_arg(t.expose());
            }
            c.output().await?;
        }
        Op::Svc { dir, args } => {
            Cmd::new(dir.join("svc.sh").to_string_lossy().into_owned())
                .args(args)
                .current_dir(dir)
                .env_clear()
                .env(codeb_core::vars::HOME, "/root")
                .env(codeb_core::vars::PATH, SYSTEM_PATH)
                .timeout(Duration::from_secs(300))
                .output()
                .await?;
        }
    }
    Ok(())
}

/// Writes a sudoers file the way visudo does: a temporary file beside it (its name has a dot,
/// which sudo's includedir skips) with the final mode and owner, checked with `visudo -cf`,
/// then renamed into place. A rule that does not parse never reaches sudo.
async fn write_sudoers(want: &Want) -> Result<(), ApplyError> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let fsops::Kind::File(contents) = &want.kind else {
        return Err(ApplyError::Other(format!("{} is not a file", want.shown)));
    };
    let dir = want
        .path
        .parent()
        .ok_or_else(|| ApplyError::Other(format!("{} has no directory", want.shown)))?;
    if !dir.is_dir() {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750))?;
    }
    let mut tmp = tempfile::Builder::new()
        .prefix(".codeb-install-")
        .suffix(".tmp")
        .permissions(std::fs::Permissions::from_mode(0o600))
        .tempfile_in(dir)?;
    tmp.write_all(contents)?;
    std::os::unix::fs::fchown(tmp.as_file(), Some(0), Some(0))?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(want.mode))?;
    tmp.as_file().sync_all()?;
    Cmd::new(paths::VISUDO)
        .arg("-cf")
        .arg(tmp.path().as_os_str())
        .timeout(Duration::from_secs(30))
        .output()
        .await?;
    tmp.persist(&want.path).map_err(|e| e.error)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

const SYSTEM_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh Debian has no subordinate ids for "containers", so preview units (UserNS=auto)
    /// failed to start on an installed host.
    #[test]
    fn subuid_range_for_userns_auto_is_added_once_and_keeps_other_entries() {
        let fresh = with_containers_range(b"").expect("added to an empty file");
        assert_eq!(fresh, b"containers:2147483647:2147483648\n");
        let admin = with_containers_range(b"alice:100000:65536").expect("added");
        assert_eq!(
            String::from_utf8_lossy(&admin),
            "alice:100000:65536\ncontainers:2147483647:2147483648\n"
        );
        assert_eq!(
            with_containers_range(&admin),
            None,
            "a second run changes nothing"
        );
        assert_eq!(
            with_containers_range(b"containers:1:2\n"),
            None,
            "the admin's range stays"
        );
    }

    #[test]
    fn containers_conf_only_without_unified_cgroups() {
        let mut f = Facts {
            euid: 0,
            systemd: true,
            cgroup2: true,
        };
        assert!(!containers_conf_needed(&f));
        f.cgroup2 = false;
        assert!(containers_conf_needed(&f));
    }

    #[test]
    fn webhook_secrets_are_64_hex_digits_and_differ() {
        let a = new_webhook_secret();
        let b = new_webhook_secret();
        assert_eq!(a.len(), 65);
        assert!(a[..64].iter().all(u8::is_ascii_hexdigit));
        assert_ne!(a, b);
    }

    #[test]
    fn sysctl_applied_compares_with_the_kernel() {
        // Read the kernel's own value and write a file that says the same, and one that
        // does not.
        let now = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").expect("ip_forward");
        let now = now.trim();
        let other = if now == "1" { "0" } else { "1" };
        assert!(sysctl_applied(
            format!("# comment\nnet.ipv4.ip_forward = {now}\n").as_bytes()
        ));
        assert!(!sysctl_applied(
            format!("net.ipv4.ip_forward = {other}\n").as_bytes()
        ));
    }
}
