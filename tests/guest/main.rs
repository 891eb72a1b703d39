//! The guest tests: codeb on a real systemd + Quadlet host. One Debian 13 guest (systemd 257
//! as PID 1, podman 5.4 with Quadlet, Debian's Caddy) is booted by `scripts/vm` for the whole
//! run and the tests run against it one after another: the production path
//! (`--runtime systemd`: units in /etc/containers/systemd, `systemctl daemon-reload`,
//! `systemctl restart`) that the host's podman 4.3 without systemd cannot run.
//!
//! The sample app's images are built on the host and pushed to a registry on the host's
//! loopback; the guest pulls them as `127.0.0.1:15000/codeb/sample:<tag>` through QEMU's
//! guestfwd (see scripts/vm `--forward`). The codeb binaries reach the guest over the 9p
//! share and are installed to /usr/local/bin as on a real host.
//!
//! A custom harness (`harness = false`): the guest is booted once, each test runs in order,
//! and the last line is cargo's `test result:` summary. Arguments that do not start with `-`
//! filter the tests by substring, as with libtest.

#![allow(clippy::print_stdout, clippy::print_stderr)] // tests report what they measured

#[path = "../integration/fake_github.rs"]
mod fake_github;
use codeb_testbed as infra;

mod daemon;
mod deploy;
mod install;
mod vm;

use fake_github::FakeGitHub;
use infra::{Podman, Registry, SampleImages, push_image};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use vm::{Guest, share_file};

/// Where the guest reaches the host's test registry (its loopback; forwarded).
pub const GUEST_REGISTRY: &str = "127.0.0.1:15000";
const GUEST_REGISTRY_PORT: u16 = 15000;
/// The head commit of pull request 7, whose preview the daemon tests deploy.
pub const PR_SHA: &str = "7777777777777777777777777777777777777777";
/// Where the guest reaches the fake GitHub API on the host (forwarded).
pub const GUEST_GITHUB: &str = "127.0.0.1:15001";
const GUEST_GITHUB_PORT: u16 = 15001;

/// Everything the tests share: the guest, and on the host the registry with the images.
pub struct Ctx {
    pub guest: Guest,
    /// GitHub's REST API for the daemon in the guest (the suite's one stand-in).
    pub github: FakeGitHub,
    pub images: SampleImages,
    pub podman: Podman,
    pub registry: Registry,
}

impl Ctx {
    /// `127.0.0.1:15000/codeb/sample:<tag>`: the image as the guest names it.
    pub fn image(&self, tag: &str) -> String {
        format!("{GUEST_REGISTRY}/{}:{tag}", SampleImages::REPO)
    }

    fn start() -> Result<Self, String> {
        let t = Instant::now();
        let podman = Podman::new();
        let registry = Registry::start();
        podman.trust_insecure(&registry.host_port());
        let images = SampleImages::build_and_push(&podman, &registry);
        // The preview of pull request 7 runs v2's app, built from the PR's head commit (its
        // revision label, as docker/metadata-action writes it), under its pr-7 tag.
        let ctx_dir = infra::ScratchDir::new("pr-7-image");
        std::fs::write(
            ctx_dir.path().join("Containerfile"),
            format!(
                "FROM {}\nLABEL org.opencontainers.image.revision={PR_SHA}\n",
                images.get("v2").local
            ),
        )
        .map_err(|e| format!("write the pr-7 Containerfile: {e}"))?;
        let dir = ctx_dir.path().to_string_lossy().into_owned();
        let local = "localhost/codeb-test/sample-rev:pr-7";
        podman.run(&[
            "build",
            "--quiet",
            "--timestamp",
            "0",
            "--layers=false",
            "-t",
            local,
            "-f",
            &format!("{dir}/Containerfile"),
            &dir,
        ])?;
        push_image(
            &podman,
            &registry,
            local,
            &registry.image(&format!("{}:pr-7", SampleImages::REPO)),
        )?;
        println!(
            "images pushed to {} in {:?}",
            registry.host_port(),
            t.elapsed()
        );
        let github = FakeGitHub::start();
        let github_port: u16 = github
            .url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| format!("fake GitHub url {}", github.url))?;
        let guest = Guest::start(&[
            (GUEST_REGISTRY_PORT, registry.port()),
            (GUEST_GITHUB_PORT, github_port),
        ])?;
        let bins = bin_dir();
        for name in [
            "codeb-quadlet-update",
            "codeb-daemon",
            "codeb-healthcheck",
            "codeb-port-validate",
        ] {
            let path = bins.join(name);
            if !path.is_file() {
                return Err(format!(
                    "{} is missing: run `cargo build --workspace --bins` first (scripts/test does)",
                    path.display()
                ));
            }
            share_file(&guest, &path, &format!("bin/{name}"));
        }
        let root = infra::workspace_root();
        for rel in [
            "templates/systemd/codeb-daemon.service",
            "templates/systemd/codeb-restore-routes.service",
            "templates/sysctl/90-codeb.conf",
        ] {
            share_file(&guest, &root.join(rel), rel);
        }
        // What an installed codeb host has: the binaries, the sysctl file, the manifest
        // directory; plus the test registry marked as plain HTTP for podman.
        guest.ok(
            "the guest setup",
            &format!(
                r#"install -m 0755 /mnt/host/bin/* /usr/local/bin/
install -m 0644 /mnt/host/templates/sysctl/90-codeb.conf /etc/sysctl.d/90-codeb.conf
sysctl -q --system
mkdir -p /etc/containers/registries.conf.d /home/codeb/config
cat >/home/codeb/config/port-manifest.yaml <<'EOF'
{manifest}EOF
printf '[[registry]]\nlocation = "{GUEST_REGISTRY}"\ninsecure = true\n' \
  > /etc/containers/registries.conf.d/50-codeb-test.conf
test "$(cat /proc/sys/net/ipv4/tcp_migrate_req)" = 1
# Preview units run with UserNS=auto (the daemon's sandbox): rootful podman takes those
# ids from the subordinate ranges of the user "containers", which a fresh Debian 13 lacks
# ("no subuid ranges found for user containers"). codeb-install adds them on a real host; this
# shared guest is not installed by it, so the harness adds the same range.
grep -q '^containers:' /etc/subuid || echo 'containers:2147483647:2147483648' >>/etc/subuid
grep -q '^containers:' /etc/subgid || echo 'containers:2147483647:2147483648' >>/etc/subgid
systemctl is-active caddy
podman --version
curl -sf http://{GUEST_REGISTRY}/v2/ >/dev/null
"#,
                manifest = deploy::manifest()
            ),
            Duration::from_secs(180),
        );
        Ok(Self {
            guest,
            github,
            images,
            podman,
            registry,
        })
    }
}

impl Drop for Ctx {
    fn drop(&mut self) {
        self.podman.untag_registry(&self.registry.host_port());
    }
}

/// Where cargo put the workspace's binaries (`target/<profile>`).
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/guest-<hash>
    exe.parent()
        .and_then(std::path::Path::parent)
        .expect("target/<profile> directory")
        .to_owned()
}

type Test = (&'static str, fn(&Ctx));

/// In the order they run.
const TESTS: &[Test] = &[
    (
        "deploy::blue_green_under_load_through_systemd_loses_no_request",
        deploy::blue_green_under_load_through_systemd_loses_no_request,
    ),
    (
        "deploy::broken_release_is_rolled_back_and_the_old_one_keeps_serving",
        deploy::broken_release_is_rolled_back_and_the_old_one_keeps_serving,
    ),
    (
        "deploy::rollback_returns_to_the_previous_release",
        deploy::rollback_returns_to_the_previous_release,
    ),
    (
        "deploy::deploy_sigkilled_midway_is_reconciled_by_the_next_deploy",
        deploy::deploy_sigkilled_midway_is_reconciled_by_the_next_deploy,
    ),
    (
        "daemon::daemon_unit_starts_and_serves",
        daemon::daemon_unit_starts_and_serves,
    ),
    (
        "daemon::daemon_unit_deploys_a_pull_request_preview",
        daemon::daemon_unit_deploys_a_pull_request_preview,
    ),
    (
        "daemon::routes_answer_again_after_a_reboot",
        daemon::routes_answer_again_after_a_reboot,
    ),
    (
        "install::installer_turns_a_fresh_guest_into_a_codeb_host",
        install::installer_turns_a_fresh_guest_into_a_codeb_host,
    ),
];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    if args.iter().any(|a| a == "--list") {
        for (name, _) in TESTS {
            println!("{name}: test");
        }
        return ExitCode::SUCCESS;
    }
    let selected: Vec<&Test> = TESTS
        .iter()
        .filter(|(name, _)| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str())))
        .collect();
    let filtered_out = TESTS.len() - selected.len();
    let t0 = Instant::now();
    println!("\nrunning {} tests", selected.len());
    let (mut passed, mut failed) = (0usize, Vec::new());
    if !selected.is_empty() {
        match catch_unwind(Ctx::start) {
            Ok(Ok(ctx)) => {
                for (name, test) in &selected {
                    let t = Instant::now();
                    println!("\n--- {name}");
                    let result = catch_unwind(AssertUnwindSafe(|| test(&ctx)));
                    let took = t.elapsed();
                    match result {
                        Ok(()) => {
                            passed += 1;
                            println!("test {name} ... ok ({took:.1?})");
                        }
                        Err(_) => {
                            failed.push(*name);
                            println!("test {name} ... FAILED ({took:.1?})");
                        }
                    }
                }
            }
            Ok(Err(e)) => {
                eprintln!("the guest test bed did not start: {e}");
                failed.extend(selected.iter().map(|(n, _)| *n));
            }
            Err(_) => {
                eprintln!("the guest test bed did not start (see the panic above)");
                failed.extend(selected.iter().map(|(n, _)| *n));
            }
        }
    }
    if !failed.is_empty() {
        println!("\nfailures:");
        for name in &failed {
            println!("    {name}");
        }
    }
    println!(
        "\ntest result: {}. {passed} passed; {} failed; 0 ignored; 0 measured; {filtered_out} filtered out; finished in {:.2}s\n",
        if failed.is_empty() { "ok" } else { "FAILED" },
        failed.len(),
        t0.elapsed().as_secs_f64()
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
