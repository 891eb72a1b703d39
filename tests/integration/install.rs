//! `codeb-install` on a file system tree (`--root`): accounts through the real
//! `useradd`/`groupadd --prefix`, modes and owners, idempotency, `--dry-run`, `--uninstall`,
//! and the runner's registration through stand-in `config.sh`/`svc.sh` scripts that record
//! how they were called (GitHub's runner tarball cannot be downloaded here). The installer on a
//! real systemd host is tested on the guest (tests/integration/guest_install.rs).

use crate::util::{self, Run, codeb, run};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A tree with the account files of a fresh Debian (root only).
fn fresh_root() -> tempfile::TempDir {
    let dir = util::tempdir();
    // The runner's user must be able to reach its directory inside the tree.
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod root");
    let etc = dir.path().join("etc");
    fs::create_dir(&etc).expect("etc");
    fs::write(etc.join("passwd"), "root:x:0:0:root:/root:/bin/bash\n").expect("passwd");
    fs::write(etc.join("group"), "root:x:0:\n").expect("group");
    fs::write(etc.join("shadow"), "root:*:19000:0:99999:7:::\n").expect("shadow");
    fs::write(etc.join("gshadow"), "root:*::\n").expect("gshadow");
    for f in ["shadow", "gshadow"] {
        fs::set_permissions(etc.join(f), fs::Permissions::from_mode(0o640)).expect("chmod");
    }
    dir
}

/// Small executables standing in for the release binaries (the real ones are 500 MB in a
/// debug build; `installs_the_real_binaries` copies those once).
fn small_bins() -> tempfile::TempDir {
    let dir = util::tempdir();
    for name in [
        "codeb-port-validate",
        "codeb-healthcheck",
        "codeb-quadlet-update",
        "codeb-daemon",
    ] {
        let p = dir.path().join(name);
        fs::write(&p, format!("#!/bin/sh\necho {name} 0.1.0\n")).expect("write bin");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    dir
}

fn install(root: &Path, bins: &Path, extra: &[&str]) -> Run {
    let mut c = codeb("codeb-install");
    c.arg("--root")
        .arg(root)
        .arg("--bin-dir")
        .arg(bins)
        .args(extra);
    run(&mut c)
}

#[derive(Debug, PartialEq, Eq)]
struct Entry {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, i64),
    content: String,
}

/// Every path of the tree with mode, owner, mtime and a hash of its content.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, Entry> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Entry>) {
        for e in fs::read_dir(dir).expect("read_dir") {
            let p = e.expect("entry").path();
            let m = fs::symlink_metadata(&p).expect("meta");
            let content = if m.file_type().is_symlink() {
                format!("-> {}", fs::read_link(&p).expect("link").display())
            } else if m.is_file() {
                format!("{:x}", Sha256::digest(fs::read(&p).expect("read")))
            } else {
                String::new()
            };
            out.insert(
                p.strip_prefix(root).expect("inside").to_owned(),
                Entry {
                    mode: m.mode() & 0o7777,
                    uid: m.uid(),
                    gid: m.gid(),
                    mtime: (m.mtime(), m.mtime_nsec()),
                    content,
                },
            );
            if m.is_dir() {
                walk(root, &p, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// uid and gid of a user in the tree's own /etc/passwd.
fn ids(root: &Path, user: &str) -> (u32, u32) {
    let passwd = fs::read_to_string(root.join("etc/passwd")).expect("passwd");
    let line = passwd
        .lines()
        .find(|l| l.starts_with(&format!("{user}:")))
        .unwrap_or_else(|| panic!("no user {user} in\n{passwd}"));
    let f: Vec<&str> = line.split(':').collect();
    (f[2].parse().expect("uid"), f[3].parse().expect("gid"))
}

fn group_id(root: &Path, group: &str) -> u32 {
    let groups = fs::read_to_string(root.join("etc/group")).expect("group");
    let line = groups
        .lines()
        .find(|l| l.starts_with(&format!("{group}:")))
        .unwrap_or_else(|| panic!("no group {group} in\n{groups}"));
    line.split(':').nth(2).expect("gid").parse().expect("gid")
}

fn stat(root: &Path, p: &str) -> (u32, u32, u32) {
    let m = fs::symlink_metadata(root.join(p.trim_start_matches('/')))
        .unwrap_or_else(|e| panic!("{p}: {e}"));
    (m.mode() & 0o7777, m.uid(), m.gid())
}

#[test]
fn install_sets_modes_and_owners_then_a_second_run_changes_nothing() {
    let root = fresh_root();
    let bins = small_bins();
    let r = root.path();
    let first = install(r, bins.path(), &[]);
    assert_eq!(first.code, 0, "{}", first.all());
    assert!(
        first.stdout.contains("create system user codeb"),
        "{}",
        first.all()
    );

    let (codeb_uid, codeb_gid) = ids(r, "codeb");
    assert_eq!(group_id(r, "codeb"), codeb_gid);
    assert!(codeb_uid < 1000, "a system user: uid {codeb_uid}");
    let passwd = fs::read_to_string(r.join("etc/passwd")).expect("passwd");
    assert!(
        passwd.contains(":/home/codeb:/usr/sbin/nologin"),
        "codeb has no login: {passwd}"
    );
    for (p, mode, uid, gid) in [
        ("/home/codeb", 0o750, codeb_uid, codeb_gid),
        ("/home/codeb/config", 0o2770, codeb_uid, codeb_gid),
        ("/etc/codeb", 0o750, 0, 0),
        ("/etc/codeb/daemon.toml", 0o640, 0, 0),
        ("/etc/codeb/webhook-secret", 0o600, 0, 0),
        ("/var/lib/codeb", 0o700, 0, 0),
        ("/etc/containers/systemd", 0o755, 0, 0),
        ("/etc/containers/systemd/.codeb", 0o700, 0, 0),
        ("/etc/sysctl.d/90-codeb.conf", 0o644, 0, 0),
        ("/etc/systemd/system/codeb-daemon.service", 0o644, 0, 0),
        (
            "/etc/systemd/system/codeb-restore-routes.service",
            0o644,
            0,
            0,
        ),
        (
            "/etc/systemd/system/codeb-restore-routes.service.d/50-codeb-install.conf",
            0o644,
            0,
            0,
        ),
        ("/usr/local/bin/codeb-daemon", 0o755, 0, 0),
        ("/usr/local/bin/codeb-quadlet-update", 0o755, 0, 0),
        ("/etc/subuid", 0o644, 0, 0),
        ("/etc/subgid", 0o644, 0, 0),
    ] {
        assert_eq!(stat(r, p), (mode, uid, gid), "{p}: (mode, uid, gid)");
    }
    // Preview units run with UserNS=auto: podman needs subordinate ids for "containers".
    for f in ["etc/subuid", "etc/subgid"] {
        let text = fs::read_to_string(r.join(f)).expect(f);
        assert_eq!(
            text.lines()
                .filter(|l| l.starts_with("containers:"))
                .count(),
            1,
            "{f}: {text}"
        );
    }
    // The embedded templates are what got installed.
    let repo = util::repo();
    for (installed, template) in [
        (
            "etc/sysctl.d/90-codeb.conf",
            "templates/sysctl/90-codeb.conf",
        ),
        (
            "etc/systemd/system/codeb-daemon.service",
            "templates/systemd/codeb-daemon.service",
        ),
        ("etc/codeb/daemon.toml", "templates/systemd/daemon.toml"),
        (
            "etc/systemd/system/codeb-restore-routes.service",
            "templates/systemd/codeb-restore-routes.service",
        ),
    ] {
        assert_eq!(
            fs::read_to_string(r.join(installed)).expect(installed),
            fs::read_to_string(repo.join(template)).expect(template),
            "{installed}"
        );
    }
    // Enabled the way `systemctl enable` does it, and tied to Caddy.
    assert_eq!(
        fs::read_link(r.join("etc/systemd/system/multi-user.target.wants/codeb-daemon.service"))
            .expect("daemon enabled"),
        Path::new("/etc/systemd/system/codeb-daemon.service")
    );
    assert_eq!(
        fs::read_link(
            r.join("etc/systemd/system/caddy.service.wants/codeb-restore-routes.service")
        )
        .expect("restore wanted by caddy"),
        Path::new("/etc/systemd/system/codeb-restore-routes.service")
    );
    let secret = fs::read_to_string(r.join("etc/codeb/webhook-secret")).expect("secret");
    assert_eq!(secret.trim().len(), 64, "a 256-bit hex secret");
    assert!(
        !first.all().contains(secret.trim()),
        "the webhook secret is never printed"
    );

    let before = snapshot(r);
    let second = install(r, bins.path(), &[]);
    assert_eq!(second.code, 0, "{}", second.all());
    assert!(
        second
            .stdout
            .starts_with("codeb-install: nothing to change"),
        "{}",
        second.all()
    );
    assert_eq!(snapshot(r), before, "the second run touched the tree");
}

#[test]
fn dry_run_prints_the_plan_and_changes_nothing() {
    let root = fresh_root();
    let bins = small_bins();
    let r = root.path();
    let before = snapshot(r);
    let dry = install(r, bins.path(), &["--dry-run"]);
    assert_eq!(dry.code, 0, "{}", dry.all());
    assert!(
        dry.stdout.contains("dry run: nothing changed"),
        "{}",
        dry.all()
    );
    assert!(
        dry.stdout
            .contains("create directory /home/codeb/config (codeb:codeb, 2770)"),
        "{}",
        dry.all()
    );
    assert_eq!(snapshot(r), before, "--dry-run changed the tree");

    // On an installed tree that drifted, the dry run names each difference and fixes none.
    assert_eq!(install(r, bins.path(), &[]).code, 0);
    let unit = r.join("etc/systemd/system/codeb-daemon.service");
    fs::write(&unit, "[Unit]\n").expect("edit unit");
    let etc = r.join("etc/codeb");
    fs::set_permissions(&etc, fs::Permissions::from_mode(0o755)).expect("chmod");
    let drifted = snapshot(r);
    let dry = install(r, bins.path(), &["--dry-run"]);
    assert_eq!(dry.code, 0, "{}", dry.all());
    assert!(
        dry.stdout
            .contains("update /etc/systemd/system/codeb-daemon.service (new content)"),
        "{}",
        dry.all()
    );
    assert!(
        dry.stdout.contains("fix /etc/codeb (mode 0755 -> 0750)"),
        "{}",
        dry.all()
    );
    assert!(dry.stdout.contains("2 change(s) planned"), "{}", dry.all());
    assert_eq!(snapshot(r), drifted, "--dry-run changed the tree");
}

#[test]
fn a_rerun_restores_codebs_files_and_keeps_the_administrators() {
    let root = fresh_root();
    let bins = small_bins();
    let r = root.path();
    assert_eq!(install(r, bins.path(), &[]).code, 0);
    let unit = r.join("etc/systemd/system/codeb-daemon.service");
    fs::write(&unit, "[Unit]\n").expect("edit unit");
    let toml = r.join("etc/codeb/daemon.toml");
    fs::write(
        &toml,
        "listen = \"127.0.0.1:3102\"\nstate_dir = \"/var/lib/codeb\"\n",
    )
    .expect("edit config");
    fs::set_permissions(&toml, fs::Permissions::from_mode(0o644)).expect("chmod");
    let secret = r.join("etc/codeb/webhook-secret");
    let secret_before = fs::read(&secret).expect("secret");
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o644)).expect("chmod");

    let again = install(r, bins.path(), &[]);
    assert_eq!(again.code, 0, "{}", again.all());
    assert_eq!(
        fs::read_to_string(&unit).expect("unit"),
        fs::read_to_string(util::repo().join("templates/systemd/codeb-daemon.service"))
            .expect("template")
    );
    assert!(
        fs::read_to_string(&toml)
            .expect("toml")
            .starts_with("listen"),
        "the administrator's daemon.toml is kept"
    );
    assert_eq!(stat(r, "/etc/codeb/daemon.toml").0, 0o640);
    assert_eq!(
        fs::read(&secret).expect("secret"),
        secret_before,
        "the secret is kept"
    );
    assert_eq!(
        stat(r, "/etc/codeb/webhook-secret").0,
        0o600,
        "and made private again"
    );
    assert_eq!(
        again.stdout.lines().filter(|l| l.starts_with("  ")).count(),
        3,
        "{}",
        again.all()
    );
}

#[test]
fn templates_dir_overrides_the_embedded_files() {
    let root = fresh_root();
    let bins = small_bins();
    let tpl = util::tempdir();
    fs::create_dir_all(tpl.path().join("sysctl")).expect("mkdir");
    fs::write(
        tpl.path().join("sysctl/90-codeb.conf"),
        "net.ipv4.tcp_migrate_req = 1\nnet.core.somaxconn = 4096\n",
    )
    .expect("write");
    let tpl_arg = tpl.path().to_string_lossy().into_owned();
    let out = install(root.path(), bins.path(), &["--templates", &tpl_arg]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(
        fs::read_to_string(root.path().join("etc/sysctl.d/90-codeb.conf"))
            .expect("sysctl")
            .contains("somaxconn = 4096")
    );
    // Files the directory does not have come from the binary.
    assert_eq!(
        fs::read_to_string(root.path().join("etc/systemd/system/codeb-daemon.service"))
            .expect("unit"),
        fs::read_to_string(util::repo().join("templates/systemd/codeb-daemon.service"))
            .expect("template")
    );
}

#[test]
fn installs_the_real_binaries() {
    let root = fresh_root();
    let out = install(root.path(), &util::bin_dir(), &[]);
    assert_eq!(out.code, 0, "{}", out.all());
    for name in [
        "codeb-port-validate",
        "codeb-healthcheck",
        "codeb-quadlet-update",
        "codeb-daemon",
        "codeb-workflow-gen",
        "codeb-install",
    ] {
        let installed = root.path().join("usr/local/bin").join(name);
        let v = run(util::scrubbed(&installed).arg("--version"));
        assert_eq!(v.code, 0, "{name} --version: {}", v.all());
        assert!(v.stdout.starts_with(name), "{name}: {}", v.stdout);
    }
    assert!(
        !root.path().join("usr/local/bin/codeb-bench").exists(),
        "only the host's binaries are installed"
    );
}

#[test]
fn uninstall_removes_what_was_installed_and_keeps_data_unless_purged() {
    let root = fresh_root();
    let bins = small_bins();
    let r = root.path();
    assert_eq!(install(r, bins.path(), &[]).code, 0);
    let manifest = r.join("home/codeb/config/port-manifest.yaml");
    fs::write(&manifest, "version: 1\nprojects: {}\n").expect("manifest");
    fs::write(
        r.join("etc/containers/systemd/.codeb/shop-production.json"),
        "{}",
    )
    .expect("state");
    // Someone else's unit wanted by Caddy stays, and so does the directory.
    std::os::unix::fs::symlink(
        "/etc/systemd/system/local-hook.service",
        r.join("etc/systemd/system/caddy.service.wants/local-hook.service"),
    )
    .expect("local link");

    let un = install(r, bins.path(), &["--uninstall"]);
    assert_eq!(un.code, 0, "{}", un.all());
    for gone in [
        "usr/local/bin/codeb-daemon",
        "usr/local/bin/codeb-port-validate",
        "etc/systemd/system/codeb-daemon.service",
        "etc/systemd/system/multi-user.target.wants/codeb-daemon.service",
        "etc/systemd/system/codeb-restore-routes.service",
        "etc/systemd/system/codeb-restore-routes.service.d",
        "etc/systemd/system/caddy.service.wants/codeb-restore-routes.service",
        "etc/sysctl.d/90-codeb.conf",
        "etc/containers/containers.conf.d/90-codeb.conf",
    ] {
        assert!(
            fs::symlink_metadata(r.join(gone)).is_err(),
            "{gone} is still there\n{}",
            un.all()
        );
    }
    for kept in [
        "home/codeb/config/port-manifest.yaml",
        "etc/codeb/daemon.toml",
        "etc/codeb/webhook-secret",
        "var/lib/codeb",
        "etc/containers/systemd/.codeb/shop-production.json",
        "etc/systemd/system/caddy.service.wants/local-hook.service",
    ] {
        assert!(
            fs::symlink_metadata(r.join(kept)).is_ok(),
            "{kept} was removed\n{}",
            un.all()
        );
    }
    assert!(
        un.stderr.contains("kept (data and configuration"),
        "{}",
        un.all()
    );
    ids(r, "codeb");

    let again = install(r, bins.path(), &["--uninstall"]);
    assert_eq!(again.code, 0, "{}", again.all());
    assert!(
        again.stdout.starts_with("codeb-install: nothing to change"),
        "{}",
        again.all()
    );

    let purge = install(r, bins.path(), &["--uninstall", "--purge"]);
    assert_eq!(purge.code, 0, "{}", purge.all());
    for gone in [
        "home/codeb",
        "etc/codeb",
        "var/lib/codeb",
        "etc/containers/systemd/.codeb",
    ] {
        assert!(
            !r.join(gone).exists(),
            "{gone} survived --purge\n{}",
            purge.all()
        );
    }
    assert!(
        r.join("etc/containers/systemd").is_dir(),
        "podman's directory stays"
    );
    let passwd = fs::read_to_string(r.join("etc/passwd")).expect("passwd");
    let group = fs::read_to_string(r.join("etc/group")).expect("group");
    assert!(!passwd.contains("codeb"), "{passwd}");
    assert!(!group.contains("codeb"), "{group}");
}

#[test]
fn refusals_name_the_fix_and_change_nothing() {
    let root = fresh_root();
    let r = root.path();
    let before = snapshot(r);

    let empty = util::tempdir();
    let out = install(r, empty.path(), &[]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(
        out.stderr.contains("codeb-port-validate is missing in")
            && out.stderr.contains("--bin-dir"),
        "{}",
        out.all()
    );

    // Not root: the real binary, run as nobody.
    let bins = small_bins();
    let mut c = util::scrubbed("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(util::bin("codeb-install"))
        .arg("--root")
        .arg(r)
        .arg("--bin-dir")
        .arg(bins.path())
        .arg("--dry-run");
    let out = run(&mut c);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(
        out.stderr.contains("must run as root") && out.stderr.contains("sudo codeb-install"),
        "{}",
        out.all()
    );

    // This machine (the CI test bed) has no systemd as PID 1: installing onto it is refused.
    assert!(
        !Path::new("/run/systemd/system").exists(),
        "this test expects a machine without systemd as PID 1 (the CI test bed)"
    );
    let mut c = codeb("codeb-install");
    c.arg("--bin-dir").arg(bins.path()).arg("--dry-run");
    let out = run(&mut c);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(
        out.stderr.contains("systemd is not running") && out.stderr.contains("--root DIR"),
        "{}",
        out.all()
    );

    let out = install(r, bins.path(), &["--purge"]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(out.stderr.contains("--uninstall"), "{}", out.all());

    assert_eq!(snapshot(r), before, "a refused run changed the tree");
}

/// A runner tarball whose config.sh and svc.sh record each call (user, groups, environment,
/// arguments) in calls.log and leave the files the real ones leave (.runner, .service).
fn stand_in_runner_tarball(dir: &Path) -> PathBuf {
    let src = dir.join("runner-src");
    fs::create_dir_all(src.join("bin")).expect("mkdir");
    let record = r#"log="$(dirname "$0")/calls.log"
{ printf '%s uid=%s groups=%s home=%s pwd=%s token_env=%s args=' "$(basename "$0")" "$(id -u)" "$(id -G)" "$HOME" "$(pwd)" "$(env | grep -c CODEB_RUNNER_TOKEN)"; echo "$*"; } >> "$log"
"#;
    let config = format!(
        "#!/bin/sh\n{record}if [ \"$(id -u)\" = 0 ]; then echo 'Must not run with sudo' >&2; exit 1; fi\ncase \"$1\" in remove) rm -f .runner ;; *) echo '{{\"agentName\":\"test\"}}' > .runner ;; esac\n"
    );
    let svc = format!(
        "#!/bin/sh\n{record}if [ \"$(id -u)\" != 0 ]; then echo 'Must run as sudo' >&2; exit 1; fi\ncase \"$1\" in install) echo actions.runner.acme-shop.test.service > .service ;; uninstall) rm -f .service ;; esac\n"
    );
    for (name, text) in [("config.sh", config), ("svc.sh", svc)] {
        let p = src.join(name);
        fs::write(&p, text).expect("write script");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    fs::write(src.join("bin/Runner.Listener"), "stand-in\n").expect("listener");
    let tarball = dir.join("actions-runner-linux-x64-2.330.0.tar.gz");
    let out = run(util::scrubbed("tar")
        .arg("-czf")
        .arg(&tarball)
        .arg("-C")
        .arg(&src)
        .arg("."));
    assert_eq!(out.code, 0, "tar: {}", out.all());
    tarball
}

const TOKEN: &str = "AABBCCDDEEFF0011223344556677";

#[test]
fn runner_is_registered_as_its_own_user_and_the_token_never_printed() {
    let root = fresh_root();
    let bins = small_bins();
    let r = root.path();
    let work = util::tempdir();
    let tarball = stand_in_runner_tarball(work.path());
    let tarball_arg = tarball.to_string_lossy().into_owned();
    let runner_args = [
        "--runner-tarball",
        tarball_arg.as_str(),
        "--runner-url",
        "https://github.com/acme/shop",
        "--runner-name",
        "app1",
        "--runner-labels",
        "codeb,app1",
    ];

    // Without a token nothing happens, and the message says where the token comes from.
    let before = snapshot(r);
    let out = install(r, bins.path(), &runner_args);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(
        out.stderr.contains("--runner-token-file") && out.stderr.contains("CODEB_RUNNER_TOKEN"),
        "{}",
        out.all()
    );
    assert_eq!(snapshot(r), before);

    // The token through the environment: the dry run shows the steps, never the token.
    let mut c = codeb("codeb-install");
    c.arg("--root")
        .arg(r)
        .arg("--bin-dir")
        .arg(bins.path())
        .args(runner_args)
        .arg("--dry-run")
        .env("CODEB_RUNNER_TOKEN", TOKEN);
    let dry = run(&mut c);
    assert_eq!(dry.code, 0, "{}", dry.all());
    assert!(
        dry.stdout.contains(
            "config.sh --unattended --url https://github.com/acme/shop --token *** --name app1 --labels codeb,app1"
        ),
        "{}",
        dry.all()
    );
    assert!(!dry.all().contains(TOKEN), "token printed: {}", dry.all());
    assert_eq!(snapshot(r), before);
    assert!(
        dry.stdout.contains(
            "create file /etc/sudoers.d/codeb-runner (root:root, 0440): codeb-runner may run \
             codeb-quadlet-update deploy|rollback as root (checked with visudo -cf"
        ),
        "the dry run shows the sudoers rule: {}",
        dry.all()
    );

    let mut c = codeb("codeb-install");
    c.arg("--root")
        .arg(r)
        .arg("--bin-dir")
        .arg(bins.path())
        .args(runner_args)
        .env("CODEB_RUNNER_TOKEN", TOKEN);
    let out = run(&mut c);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(!out.all().contains(TOKEN), "token printed: {}", out.all());

    let (uid, gid) = ids(r, "codeb-runner");
    let codeb_gid = group_id(r, "codeb");
    // The deploy steps' sudoers rule: root's, 0440, exactly codeb's rule for the user, and
    // no temporary file left beside it (sudo would skip one, but it is litter).
    assert_eq!(stat(r, "/etc/sudoers.d/codeb-runner"), (0o440, 0, 0));
    let rule = fs::read_to_string(r.join("etc/sudoers.d/codeb-runner")).expect("sudoers");
    assert!(
        rule.contains(
            "Cmnd_Alias CODEB_DEPLOY = /usr/local/bin/codeb-quadlet-update deploy, \
             /usr/local/bin/codeb-quadlet-update rollback\n"
        ),
        "{rule}"
    );
    assert!(
        rule.contains("codeb-runner ALL = (root) NOPASSWD: CODEB_DEPLOY"),
        "{rule}"
    );
    assert_eq!(
        fs::read_dir(r.join("etc/sudoers.d")).expect("ls").count(),
        1,
        "only the rule is in /etc/sudoers.d"
    );
    let dir = "/home/codeb-runner/actions-runner";
    assert_eq!(stat(r, "/home/codeb-runner"), (0o750, uid, gid));
    assert_eq!(stat(r, dir), (0o750, uid, gid));
    assert_eq!(
        stat(r, &format!("{dir}/bin/Runner.Listener")).1,
        uid,
        "unpacked as the runner's"
    );
    let calls = fs::read_to_string(r.join("home/codeb-runner/actions-runner/calls.log"))
        .expect("calls.log");
    let lines: Vec<&str> = calls.lines().collect();
    let rd = r.join("home/codeb-runner/actions-runner");
    assert_eq!(lines.len(), 3, "{calls}");
    assert_eq!(
        lines[0],
        format!(
            "config.sh uid={uid} groups={gid} {codeb_gid} home=/home/codeb-runner pwd={} token_env=0 \
             args=--unattended --url https://github.com/acme/shop --name app1 --labels codeb,app1 \
             --replace --token {TOKEN}",
            rd.display()
        ),
        "{calls}"
    );
    assert!(
        lines[1].starts_with("svc.sh uid=0 ") && lines[1].ends_with("args=install codeb-runner"),
        "{calls}"
    );
    assert!(
        lines[2].starts_with("svc.sh uid=0 ") && lines[2].ends_with("args=start"),
        "{calls}"
    );

    // Registered and installed: a second run (the token has expired by then) does nothing.
    let before = snapshot(r);
    let again = install(r, bins.path(), &runner_args);
    assert_eq!(again.code, 0, "{}", again.all());
    assert!(
        again.stdout.starts_with("codeb-install: nothing to change"),
        "{}",
        again.all()
    );
    assert_eq!(snapshot(r), before);

    // Uninstall removes the service and, given a removal token, the registration.
    let token_file = work.path().join("removal-token");
    fs::write(&token_file, "REMOVALTOKEN123\n").expect("token file");
    let mut c = codeb("codeb-install");
    c.arg("--root")
        .arg(r)
        .arg("--bin-dir")
        .arg(bins.path())
        .arg("--uninstall")
        .arg("--runner-token-file")
        .arg(&token_file);
    let un = run(&mut c);
    assert_eq!(un.code, 0, "{}", un.all());
    assert!(!un.all().contains("REMOVALTOKEN123"), "{}", un.all());
    let calls = fs::read_to_string(rd.join("calls.log")).expect("calls.log");
    let lines: Vec<&str> = calls.lines().collect();
    assert_eq!(lines.len(), 5, "{calls}");
    assert!(lines[3].ends_with("args=uninstall"), "{calls}");
    assert!(
        lines[4].starts_with(&format!("config.sh uid={uid} "))
            && lines[4].ends_with("args=remove --token REMOVALTOKEN123"),
        "{calls}"
    );
    assert!(!rd.join(".runner").exists() && !rd.join(".service").exists());
    assert!(
        !r.join("etc/sudoers.d/codeb-runner").exists(),
        "--uninstall removes the sudoers rule: {}",
        un.all()
    );

    let purge = install(r, bins.path(), &["--uninstall", "--purge"]);
    assert_eq!(purge.code, 0, "{}", purge.all());
    assert!(!r.join("home/codeb-runner").exists(), "{}", purge.all());
    let passwd = fs::read_to_string(r.join("etc/passwd")).expect("passwd");
    assert!(!passwd.contains("codeb-runner"), "{passwd}");
}
