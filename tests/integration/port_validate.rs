//! codeb-port-validate against real files and real sockets.

use crate::util::{codeb, listen_in, output, run, tempdir};
use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

const EXAMPLE: &str = "\
version: 1
reserved:                # optional; these four are always reserved
  - {port: 3000, name: nextjs-default}
  - {port: 3102, name: ssot-registry-api}
  - {port: 3103, name: domain-manager-api}
  - {port: 5432, name: postgresql}
projects:
  myapp:
    production: {port: 4001}
    staging: {port: 4500}
previews:
  myapp-pr-123: {project: myapp, pr: 123, port: 5000}
";

fn pv(manifest: &Path) -> Command {
    let mut c = codeb("codeb-port-validate");
    c.arg("--manifest").arg(manifest);
    c
}

fn write(dir: &Path, text: &str) -> std::path::PathBuf {
    let p = dir.join("port-manifest.yaml");
    fs::write(&p, text).expect("write manifest");
    p
}

#[test]
fn valid_port_prints_it_and_sets_the_output() {
    let dir = tempdir();
    let m = write(dir.path(), EXAMPLE);
    let out_file = dir.path().join("out");
    let r = run(pv(&m)
        .args([
            "--project",
            "myapp",
            "--environment",
            "staging",
            "--no-host-check",
        ])
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_OUTPUT", &out_file));
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(r.stdout.lines().last(), Some("4500"));
    assert_eq!(output(&out_file, "port").as_deref(), Some("4500"));
    assert_eq!(output(&out_file, "allocated").as_deref(), Some("false"));
}

#[test]
fn inputs_work_like_flags() {
    let dir = tempdir();
    let m = write(dir.path(), EXAMPLE);
    let r = run(codeb("codeb-port-validate")
        .env("INPUT_MANIFEST", &m)
        .env("INPUT_PROJECT", "myapp")
        .env("INPUT_ENVIRONMENT", "production")
        .env("INPUT_NO-HOST-CHECK", "true"));
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(r.stdout.trim(), "4001");
    // The manifest can also come from CODEB_MANIFEST.
    let r = run(codeb("codeb-port-validate")
        .env("CODEB_MANIFEST", &m)
        .args(["--all", "--no-host-check"]));
    assert_eq!(r.code, 0, "{}", r.all());
}

#[test]
fn every_problem_is_an_annotation_with_its_line_and_a_summary_row() {
    let dir = tempdir();
    let m = write(
        dir.path(),
        "version: 1\nprojects:\n  a:\n    production: {port: 4600}\n  b:\n    staging: {port: 4500}\n  c:\n    staging: {port: 4500}\n  d:\n    production: {port: 3102}\npreviews:\n  d-pr-1: {project: d, pr: 1, port: 5432}\n",
    );
    let summary = dir.path().join("summary.md");
    let r = run(pv(&m)
        .args(["--all", "--no-host-check"])
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_STEP_SUMMARY", &summary));
    assert_eq!(r.code, 1, "{}", r.all());
    let file = m.display().to_string();
    for (line, title) in [
        (4, "Port out of range"),
        (8, "Duplicate port"),
        (10, "Reserved port"),
        (10, "Port out of range"),
        (12, "Reserved port"),
    ] {
        let needle = format!("::error file={file},line={line},title={title}::");
        assert!(r.stdout.contains(&needle), "missing {needle}\n{}", r.all());
    }
    assert_eq!(r.stdout.matches("::error ").count(), 5, "{}", r.all());
    let md = fs::read_to_string(&summary).expect("summary written");
    assert!(md.contains("| Line | Problem | Port | Details |"), "{md}");
    assert_eq!(
        md.lines()
            .filter(|l| l.starts_with("| ") && !l.starts_with("| Line"))
            .count(),
        5,
        "{md}"
    );

    // Outside Actions: plain text, no workflow commands.
    let r = run(pv(&m).args(["--all", "--no-host-check"]));
    assert_eq!(r.code, 1);
    assert!(
        !r.stdout.contains("::") && !r.stderr.contains("::error"),
        "{}",
        r.all()
    );
    assert!(
        r.stderr
            .contains(&format!("error: {file}:8: Duplicate port: port 4500")),
        "{}",
        r.all()
    );
}

#[test]
fn json_format() {
    let dir = tempdir();
    let m = write(dir.path(), EXAMPLE);
    let r = run(pv(&m).args([
        "--project",
        "myapp",
        "--environment",
        "preview",
        "--pr",
        "123",
        "--no-host-check",
        "--format",
        "json",
    ]));
    assert_eq!(r.code, 0, "{}", r.all());
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("json on stdout");
    assert_eq!(v["valid"], true);
    assert_eq!(v["port"], 5000);
    assert_eq!(v["environment"], "preview");
}

#[test]
fn allocation_takes_the_lowest_free_port_and_keeps_comments() {
    let dir = tempdir();
    let m = write(dir.path(), EXAMPLE);
    let out_file = dir.path().join("out");
    let r = run(pv(&m)
        .args([
            "--project",
            "blog",
            "--environment",
            "production",
            "--allocate",
            "--no-host-check",
        ])
        .env("GITHUB_OUTPUT", &out_file));
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(r.stdout.trim(), "4000");
    assert_eq!(output(&out_file, "allocated").as_deref(), Some("true"));
    let text = fs::read_to_string(&m).expect("read");
    assert!(
        text.contains("reserved:                # optional"),
        "{text}"
    );
    assert!(
        text.contains("  blog:\n    production: {port: 4000}\n"),
        "{text}"
    );
    // Allocating again is idempotent.
    let r = run(pv(&m).args([
        "--project",
        "blog",
        "--environment",
        "production",
        "--allocate",
        "--no-host-check",
    ]));
    assert_eq!(r.stdout.trim(), "4000");
    assert_eq!(fs::read_to_string(&m).expect("read"), text);
    // A preview skips 5000 (taken); a missing manifest is created.
    let fresh = dir.path().join("fresh.yaml");
    let r = run(pv(&fresh).args([
        "--project",
        "blog",
        "--environment",
        "preview",
        "--pr",
        "9",
        "--allocate",
        "--no-host-check",
    ]));
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(r.stdout.trim(), "5000");
    // A manifest in a directory that does not exist is not created.
    let r = run(pv(&dir.path().join("missing/m.yaml")).args([
        "--project",
        "blog",
        "--environment",
        "staging",
        "--allocate",
        "--no-host-check",
    ]));
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("directory") && r.stderr.contains("does not exist"),
        "{}",
        r.all()
    );
}

#[test]
fn host_check_sees_a_real_listening_socket() {
    let dir = tempdir();
    let listener = listen_in(4100..=4499);
    let port = listener.local_addr().expect("addr").port();
    let m = write(
        dir.path(),
        &format!("version: 1\nprojects:\n  busy:\n    production: {{port: {port}}}\n"),
    );
    let r = run(pv(&m)
        .args(["--project", "busy", "--environment", "production"])
        .env("GITHUB_ACTIONS", "true"));
    assert_eq!(r.code, 1, "{}", r.all());
    let pid = std::process::id();
    assert!(
        r.stdout.contains(&format!(
            "title=Port in use::port {port} of busy production is already listening"
        )),
        "{}",
        r.all()
    );
    assert!(
        r.stdout.contains(&format!("pid {pid}")),
        "the holder is named: {}",
        r.all()
    );
    let r = run(pv(&m).args([
        "--project",
        "busy",
        "--environment",
        "production",
        "--no-host-check",
    ]));
    assert_eq!(r.code, 0, "{}", r.all());

    // Allocation skips a port that is listening.
    let text = format!(
        "version: 1\nprojects:\n  other:\n    production: {{port: {}}}\n",
        port - 1
    );
    let m = write(dir.path(), &text);
    let mut lower = Vec::new();
    for p in 4000..port - 1 {
        if let Ok(l) = std::net::TcpListener::bind(("127.0.0.1", p)) {
            lower.push(l);
        }
    }
    let r = run(pv(&m).args([
        "--project",
        "new",
        "--environment",
        "production",
        "--allocate",
    ]));
    assert_eq!(r.code, 0, "{}", r.all());
    let got: u16 = r.stdout.trim().parse().expect("a port");
    assert!(
        got > port,
        "allocated {got}, which must skip the listening {port} and everything below"
    );
    drop(listener);
}

#[test]
fn fifty_concurrent_allocations_get_fifty_distinct_ports() {
    let dir = tempdir();
    let m = write(dir.path(), "version: 1\nprojects: {}\n");
    let children: Vec<_> = (0..50)
        .map(|i| {
            pv(&m)
                .args([
                    "--project",
                    &format!("app{i}"),
                    "--environment",
                    "production",
                    "--allocate",
                    "--no-host-check",
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
    let mut printed = BTreeSet::new();
    for c in children {
        let out = c.wait_with_output().expect("wait");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port: u16 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("port");
        printed.insert(port);
    }
    assert_eq!(printed.len(), 50, "every process printed a distinct port");
    let r = run(pv(&m).args(["--all", "--no-host-check", "--format", "json"]));
    assert_eq!(r.code, 0, "the file is valid: {}", r.all());
    let text = fs::read_to_string(&m).expect("read");
    let in_file: BTreeSet<u16> = text
        .lines()
        .filter_map(|l| l.split("port: ").nth(1))
        .filter_map(|p| p.trim_end_matches('}').parse().ok())
        .collect();
    assert_eq!(in_file, printed);
    assert_eq!(in_file, (4000..4050).collect::<BTreeSet<u16>>());
    let leftovers: Vec<_> = fs::read_dir(dir.path())
        .expect("ls")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn bad_input_is_a_clear_error_and_never_a_partial_write() {
    let dir = tempdir();
    let cases: &[(&str, &str, i32, &str)] = &[
        (
            "malformed yaml",
            "version: 1\nprojects:\n  a: {production: {port: 4001}\n",
            2,
            "port-manifest.yaml:4: ",
        ),
        (
            "unknown key",
            "version: 1\nprojects:\n  a:\n    production: {prot: 4001}\n",
            2,
            "unknown key `prot`",
        ),
        (
            "port not a number",
            "version: 1\nprojects:\n  a:\n    production: {port: four}\n",
            2,
            "whole number",
        ),
        (
            "port too large",
            "version: 1\nprojects:\n  a:\n    production: {port: 99999}\n",
            2,
            "not a TCP port",
        ),
        (
            "invalid project name",
            "version: 1\nprojects:\n  My_App:\n    production: {port: 4001}\n",
            2,
            "DNS label",
        ),
        (
            "duplicate ports",
            "version: 1\nprojects:\n  a:\n    production: {port: 4001}\n  b:\n    production: {port: 4001}\n",
            1,
            "every port must be unique",
        ),
        (
            "out of range",
            "version: 1\nprojects:\n  a:\n    staging: {port: 4001}\n",
            1,
            "outside the staging range 4500-4999",
        ),
        (
            "binary garbage",
            "\u{0}\u{1}version",
            2,
            "control character",
        ),
    ];
    for (what, text, code, needle) in cases {
        let m = write(dir.path(), text);
        let before = fs::read(&m).expect("read");
        let r = run(pv(&m).args(["--all", "--no-host-check"]));
        assert_eq!(r.code, *code, "{what}: {}", r.all());
        assert!(
            r.all().contains(needle),
            "{what}: expected {needle:?} in {}",
            r.all()
        );
        assert!(
            r.all().contains(&m.display().to_string()),
            "{what}: names the file: {}",
            r.all()
        );
        assert!(!r.all().contains("panicked"), "{what}: {}", r.all());
        if *code != 2 {
            continue;
        }
        // An allocation on a malformed manifest leaves it byte for byte as it was.
        let _ = run(pv(&m).args([
            "--project",
            "z",
            "--environment",
            "staging",
            "--allocate",
            "--no-host-check",
        ]));
        assert_eq!(
            fs::read(&m).expect("read"),
            before,
            "{what}: manifest untouched"
        );
    }

    // Structural errors become annotations with their line.
    let m = write(
        dir.path(),
        "version: 1\nprojects:\n  a:\n    production: {prot: 4001}\n",
    );
    let r = run(pv(&m).arg("--all").env("GITHUB_ACTIONS", "true"));
    assert!(
        r.stdout.contains(",line=4,title=Malformed port manifest::"),
        "{}",
        r.all()
    );

    // A directory, a path through a file, a missing file, non-UTF-8.
    let r = run(pv(dir.path()).arg("--all"));
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("is a directory"), "{}", r.all());
    let r = run(pv(&m.join("sub")).arg("--all"));
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("cannot read manifest"), "{}", r.all());
    let r = run(pv(&dir.path().join("nope.yaml")).arg("--all"));
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("does not exist"), "{}", r.all());
    fs::write(&m, b"version: 1\n\xff\xfe\n").expect("write");
    let r = run(pv(&m).arg("--all"));
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("not UTF-8"), "{}", r.all());

    // Usage errors.
    let m = write(dir.path(), EXAMPLE);
    for (args, needle) in [
        (vec!["--project", "myapp"], "--environment"),
        (
            vec!["--project", "MyApp", "--environment", "production"],
            "DNS label",
        ),
        (
            vec!["--project", "a/../b", "--environment", "production"],
            "DNS label",
        ),
        (
            vec!["--project", "myapp", "--environment", "qa"],
            "expected one of",
        ),
        (
            vec!["--project", "myapp", "--environment", "preview"],
            "--pr",
        ),
        (vec!["--all", "--allocate"], "cannot be used with"),
    ] {
        let r = run(pv(&m).args(&args));
        assert_eq!(r.code, 2, "{args:?}: {}", r.all());
        assert!(
            r.stderr.contains(needle),
            "{args:?}: expected {needle:?} in {}",
            r.all()
        );
    }
    let r = run(codeb("codeb-port-validate")
        .env("INPUT_NO_HOST_CHECK", "perhaps")
        .arg("--all"));
    assert_eq!(r.code, 2);
    assert!(r.all().contains("must be true or false"), "{}", r.all());
}

#[test]
fn help_teaches() {
    let r = run(codeb("codeb-port-validate").arg("--help"));
    assert_eq!(r.code, 0);
    for needle in [
        "--allocate",
        "Examples:",
        "Exit codes",
        "4000-4499",
        "INPUT_",
    ] {
        assert!(
            r.stdout.contains(needle),
            "help lacks {needle}: {}",
            r.stdout
        );
    }
}

/// Issue 9 #5: the manifest lock `.NAME.lock` was created by whoever came first (root's
/// daemon, 0600 under its unit's UMask=0077) and opened for writing, so the runner's user
/// could never take it again. It is opened read-only and created group-writable with the
/// manifest's owner and group.
#[test]
fn manifest_lock_created_by_root_does_not_block_an_unprivileged_runner() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt, chown};
    let uid = fs::metadata("/proc/self").expect("/proc/self").uid();
    assert_eq!(
        uid, 0,
        "this test needs root (scripts/test runs as root): it creates the lock as root and then runs as nobody"
    );
    const NOBODY: u32 = 65534;
    let dir = tempdir();
    // A manifest directory shared by root and the runner's group (nogroup here).
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o2775)).expect("chmod dir");
    chown(dir.path(), Some(0), Some(NOBODY)).expect("chown dir");
    let m = write(
        dir.path(),
        "version: 1\nprojects:\n  rootapp: {}\n  runnerapp: {}\n",
    );
    fs::set_permissions(&m, fs::Permissions::from_mode(0o664)).expect("chmod manifest");
    chown(&m, Some(0), Some(NOBODY)).expect("chown manifest");

    // Root comes first, with the daemon unit's umask.
    let r = run(crate::util::scrubbed("sh")
        .arg("-c")
        .arg("umask 077; exec \"$0\" \"$@\"")
        .arg(crate::util::bin("codeb-port-validate"))
        .args([
            "--project",
            "rootapp",
            "--environment",
            "production",
            "--allocate",
            "--no-host-check",
            "--manifest",
        ])
        .arg(&m));
    assert_eq!(r.code, 0, "root allocates: {}", r.all());
    let lock = dir.path().join(".port-manifest.yaml.lock");
    let meta = fs::metadata(&lock).expect("the lock file exists");
    assert_eq!(
        meta.mode() & 0o777,
        0o660,
        "group-writable whatever the umask"
    );
    assert_eq!(
        (meta.uid(), meta.gid()),
        (0, NOBODY),
        "the manifest's owner and group"
    );

    // Then the runner's user (not root, in the manifest's group).
    let r = run(crate::util::scrubbed("setpriv")
        .args([
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            "--",
        ])
        .arg(crate::util::bin("codeb-port-validate"))
        .args([
            "--project",
            "runnerapp",
            "--environment",
            "production",
            "--allocate",
            "--no-host-check",
            "--manifest",
        ])
        .arg(&m));
    assert_eq!(
        r.code,
        0,
        "the runner's user allocates after root: {}",
        r.all()
    );
    let text = fs::read_to_string(&m).expect("manifest");
    assert!(
        text.contains("rootapp:") && text.contains("runnerapp:"),
        "{text}"
    );
    let ports: BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.split("port: ").nth(1))
        .collect();
    assert_eq!(ports.len(), 2, "two distinct ports: {text}");
}
