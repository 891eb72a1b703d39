//! Phase 1 of the scale-out (issue 14) with real hosts: three network namespaces on a bridge
//! (10.201.N.0/24), each running `codeb-daemon agent`, its own Caddy front and real podman
//! containers, and the control plane's Caddy as the balancer in front: the harness
//! `codeb_testbed::netns`, shared with `codeb-bench roll`. A bounded load loop through the
//! balancer counts failed requests during a rolling deploy, while a host is cut off (`ip link
//! set down`; also how soon the balancer stops sending to it), during a roll that fails on
//! host 2 and during a rolling rollback (`we rollback`).

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::infra::netns::{ControlPlane, Hosts, Load, LoadReport, free_production_port};
use crate::infra::{
    Caddy, CaddyBuild, Podman, Registry, ScratchDir, http_get, push_image, sample_local_images,
};
use crate::util::{bin, codeb, run};

/// `(status, JSON body)` of a control plane request as `token`.
fn api(
    cp: &ControlPlane,
    method: &str,
    path: &str,
    token: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    cp.api_as(token, method, path, body)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// `we` pointed at the control plane as `token`.
fn we(cp: &ControlPlane, token: &str) -> Command {
    let mut c = codeb("we");
    cp.we_env(&mut c, token);
    c
}

/// A deploy through the control plane, waited for; the job as it ended.
fn deploy(cp: &ControlPlane, project: &str, image: &str) -> Value {
    cp.deploy(project, image)
        .unwrap_or_else(|e| panic!("{e}\n{}", cp.log()))
}

fn wait_for_load(load: &Load, more: u64) {
    load.wait(more).unwrap_or_else(|e| panic!("{e}"));
}

fn wait_balancer(cp: &ControlPlane, upstream: &str, healthy: bool, what: &str) {
    assert!(
        cp.wait_balancer(upstream, healthy),
        "{what}: the balancer never saw {upstream} as healthy={healthy}"
    );
}

/// Digests the hosts' agents report for `unit`, by host.
fn host_digests(cp: &ControlPlane, unit: &str) -> Vec<(String, Option<String>, bool)> {
    cp.host_digests(unit).unwrap_or_else(|e| panic!("{e}"))
}

fn assert_no_failures(what: &str, r: &LoadReport) {
    eprintln!(
        "{what}: {} requests, {} failed, answers {:?}",
        r.requests, r.failed, r.answers
    );
    assert_eq!(
        r.failed, 0,
        "{what}: {} of {} requests failed: {:?}",
        r.failed, r.requests, r.failures
    );
}

#[test]
fn three_hosts_behind_the_balancer_roll_without_a_failed_request() {
    let podman = Podman::new();
    let images = sample_local_images(&podman);
    let registry = Registry::start();
    let pid = std::process::id();
    let project = format!("scale{pid}");
    let repo = registry.image(&format!("codeb-test/scale-{pid}"));
    let mut digests = Vec::new();
    for (i, tag) in ["v1", "v2"].iter().enumerate() {
        let dest = format!("{repo}:{tag}");
        let d = push_image(&podman, &registry, &images[i], &dest).expect("push");
        // The hosts read images from the machine's store (read-only), as if they had pulled.
        podman
            .run(&[
                "pull",
                "--quiet",
                "--tls-verify=false",
                &format!("{repo}@{d}"),
            ])
            .expect("pull");
        digests.push(d);
    }

    let mut lab = Hosts::new("cb", 201, 3, &podman).expect("the namespace hosts");
    let scratch = ScratchDir::new("scale-cp");
    let dir = scratch.path().to_owned();
    let public = free_production_port().expect("a production port");
    let unit = format!("{project}-production");

    // The control plane, its Caddy as the balancer; each host's token minted on the control
    // plane (never printed), its hash given to the agent; Caddy and the agent in the namespace.
    let balancer = Caddy::start_build(CaddyBuild::Debian);
    let cp = ControlPlane::start(
        &bin("codeb-daemon"),
        &dir,
        &balancer.admin_url(),
        &project,
        public,
        &podman,
    )
    .expect("the control plane");
    lab.start_agents(&bin("codeb-daemon"), &cp.tokens_dir())
        .unwrap_or_else(|e| panic!("{e}\n{}", cp.log()));

    // Users who may not add hosts, and the project.
    let mut others = Vec::new();
    for (name, role) in [("dev", "developer"), ("viewer", "viewer")] {
        let (s, v) = api(
            &cp,
            "POST",
            "/api/v1/team",
            &cp.admin,
            Some(&json!({"name": name, "role": role})),
        );
        assert!((200..300).contains(&s), "{name}: {s} {v}");
        others.push(v["token"]["token"].as_str().expect("token").to_owned());
    }
    let (s, v) = api(
        &cp,
        "POST",
        "/api/v1/projects",
        &cp.admin,
        Some(
            &json!({"name": project, "type": "node", "repository": "acme/scale",
            "image": repo, "container_port": 3000, "health_path": "/api/health",
            "environments": [{"name": "production"}], "owners": ["dev"]}),
        ),
    );
    assert!((200..300).contains(&s), "project: {s} {v}");
    let h1 = &lab.hosts[0];
    for t in &others {
        let r = run(we(&cp, t).args([
            "scale",
            "app",
            "--add",
            &h1.name,
            "--agent-url",
            &h1.agent_url(),
        ]));
        assert_eq!(r.code, 3, "a non-admin add is refused: {}", r.all());
        assert!(r.stderr.contains("scale.host.add"), "{}", r.all());
        let r = run(we(&cp, t).args(["scale", "app", "--remove", &h1.name]));
        assert_eq!(r.code, 3, "a non-admin remove is refused: {}", r.all());
        assert!(r.stderr.contains("scale.host.remove"), "{}", r.all());
    }
    // A token file others can read is refused, naming the fix; nothing is registered.
    let t1 = dir.join("state/hosts/h1.token");
    std::fs::set_permissions(&t1, std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .expect("chmod");
    let r = run(we(&cp, &cp.admin).args([
        "scale",
        "app",
        "--add",
        "h1",
        "--agent-url",
        &h1.agent_url(),
    ]));
    assert_ne!(r.code, 0, "{}", r.all());
    assert!(r.stderr.contains("chmod 600"), "{}", r.all());
    std::fs::set_permissions(&t1, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    // An agent that is not there: a clear error, nothing registered.
    let r = run(we(&cp, &cp.admin).args([
        "scale",
        "app",
        "--add",
        "h1",
        "--agent-url",
        &format!("http://{}:7070", lab.unused_address()),
    ]));
    assert_ne!(r.code, 0, "{}", r.all());
    assert!(r.stderr.contains("agent"), "{}", r.all());
    assert!(host_digests(&cp, &unit).is_empty(), "nothing registered");

    // Three hosts (no release yet: registered, nothing deployed), then the first roll.
    for h in &lab.hosts {
        let r = run(we(&cp, &cp.admin).args([
            "scale",
            "app",
            "--add",
            &h.name,
            "--agent-url",
            &h.agent_url(),
        ]));
        assert_eq!(
            r.code,
            0,
            "add {}: {} {}",
            h.name,
            r.all(),
            h.log("agent.log")
        );
    }
    let j = deploy(&cp, &project, &format!("{repo}:v1"));
    assert_eq!(j["state"], "done", "first roll: {j}\n{}", cp.log());
    let lb = format!("http://127.0.0.1:{public}/");
    let (s, body) = http_get(&lb, Duration::from_secs(5)).expect("through the balancer");
    assert_eq!((s, body.as_str()), (200, "hello from v1"));
    for (h, d, healthy) in host_digests(&cp, &unit) {
        assert_eq!(d.as_deref(), Some(digests[0].as_str()), "{h}");
        assert!(healthy, "{h}");
    }
    // Only v1 has served: a rollback is refused before a job exists (bad input: exit 2).
    let r = run(we(&cp, &cp.admin).args(["rollback", &project, "--environment", "production"]));
    assert_eq!(r.code, 2, "nothing to roll back to: {}", r.all());
    assert!(
        r.stderr.contains("no earlier release") && r.stderr.contains("we deploy"),
        "{}",
        r.all()
    );

    // A rolling deploy under load: not one failed request.
    let load = Load::start(&lb, 1);
    wait_for_load(&load, 50);
    let j = deploy(&cp, &project, &format!("{repo}:v2"));
    assert_eq!(j["state"], "done", "second roll: {j}\n{}", cp.log());
    wait_for_load(&load, 50);
    let report = load.finish();
    assert_no_failures("rolling deploy over 3 hosts", &report);
    assert_eq!(report.last.as_deref(), Some("hello from v2"), "{report:?}");
    for (h, d, healthy) in host_digests(&cp, &unit) {
        assert_eq!(d.as_deref(), Some(digests[1].as_str()), "{h}");
        assert!(healthy, "{h}");
    }

    // Host 2 cut off: the balancer's health checks take it out, requests keep succeeding.
    // Three workers, so that a request stuck on the cut host (in flight, or sent on a pooled
    // connection before the balancer noticed) does not hide when the others recover.
    let h2 = &lab.hosts[1];
    let up2 = format!("{}:{public}", h2.address);
    wait_balancer(&cp, &up2, true, "before the cut");
    let load = Load::start(&lb, 3);
    wait_for_load(&load, 50);
    h2.set_link(false).expect("cut host 2 off");
    let cut = Instant::now();
    wait_balancer(&cp, &up2, false, "after the cut");
    wait_for_load(&load, 200);
    let back = Instant::now();
    h2.set_link(true).expect("bring host 2 back");
    wait_balancer(&cp, &up2, true, "after the link is back");
    wait_for_load(&load, 50);
    let report = load.finish();
    assert_no_failures("host 2 cut off", &report);
    // A request sent to the cut host waits at least the dial timeout before it is retried:
    // the last such request started when the balancer last sent one there.
    let policy = codeb_deploy::BalancerPolicy::new("/api/health");
    let slow = policy.dial_timeout - Duration::from_millis(50);
    let figures = report.after_cut(cut, back, slow);
    eprintln!("host 2 cut off: {figures:?}");
    let bound = policy.interval + policy.health_timeout + Duration::from_secs(3);
    if let Some(after) = figures.stopped_sending_after {
        assert!(
            after <= bound,
            "the balancer still sent requests to the cut host {after:?} after the cut (health interval {:?}, check timeout {:?}): {figures:?}",
            policy.interval,
            policy.health_timeout
        );
    }

    // A release that cannot become healthy on host 2 (probes of its blue slot are dropped there): the
    // roll stops at host 2, host 1 goes back, and v2 serves everywhere.
    let blue = (u32::from(public) + 10000).to_string();
    // The raw table sees the probe before podman's port mapping rewrites its destination.
    let rule = ["-p", "tcp", "--dport", blue.as_str(), "-j", "DROP"];
    let iptables = |op: &str| {
        let mut a = vec!["iptables", "-t", "raw", op, "OUTPUT"];
        a.extend(rule);
        h2.exec(&a).unwrap_or_else(|e| panic!("{e}"));
    };
    iptables("-I");
    let load = Load::start(&lb, 1);
    wait_for_load(&load, 50);
    let j = deploy(&cp, &project, &format!("{repo}:v1"));
    iptables("-D");
    assert_eq!(j["state"], "failed", "the roll fails: {j}");
    let msg = j["message"].as_str().unwrap_or_default().to_owned();
    assert!(msg.contains("h2") && msg.contains("rolled back"), "{j}");
    wait_for_load(&load, 50);
    let report = load.finish();
    assert_no_failures("roll failing on host 2", &report);
    assert_eq!(
        report.last.as_deref(),
        Some("hello from v2"),
        "{:?}",
        report.answers
    );
    for (h, d, healthy) in host_digests(&cp, &unit) {
        assert_eq!(d.as_deref(), Some(digests[1].as_str()), "{h} is back on v2");
        assert!(healthy, "{h}");
    }

    // A rolling rollback under load: back to v1 (the release before v2) host after host,
    // not one failed request.
    let load = Load::start(&lb, 1);
    wait_for_load(&load, 50);
    let r = run(we(&cp, &cp.admin).args(["rollback", &project, "--environment", "production"]));
    wait_for_load(&load, 50);
    let report = load.finish();
    assert_eq!(r.code, 0, "rolling rollback: {}\n{}", r.all(), cp.log());
    for needle in ["rolling back from", "rolling back to", "rolled back"] {
        assert!(r.all().contains(needle), "{needle}: {}", r.all());
    }
    assert_no_failures("rolling rollback over 3 hosts", &report);
    assert_eq!(
        report.last.as_deref(),
        Some("hello from v1"),
        "{:?}",
        report.answers
    );
    for (h, d, healthy) in host_digests(&cp, &unit) {
        assert_eq!(d.as_deref(), Some(digests[0].as_str()), "{h} serves v1");
        assert!(healthy, "{h}");
    }
    // Both rollback requests are audited: the refused one and the one that ran.
    let (s, audit) = api(
        &cp,
        "GET",
        &format!("/api/v1/audit?project={project}"),
        &cp.admin,
        None,
    );
    assert_eq!(s, 200, "{audit}");
    let results: Vec<String> = audit
        .as_array()
        .expect("audit rows")
        .iter()
        .filter(|e| e["action"] == "rollback")
        .map(|e| e["result"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(
        results.iter().any(|r| r.starts_with("refused:"))
            && results.iter().any(|r| r.starts_with("queued job")),
        "{results:?}"
    );

    // we scale status shows the hosts, their releases and the balancer.
    let r = run(we(&cp, &others[1]).args(["scale", "status", "--window", "1s"]));
    assert_eq!(r.code, 0, "{}", r.all());
    for needle in ["h1", "h2", "h3", &unit, &format!("balancer {unit}")] {
        assert!(r.stdout.contains(needle), "{needle}: {}", r.stdout);
    }

    // Removing host 3: drained out of the balancer first, then its release stopped.
    let h3 = &lab.hosts[2];
    let r = run(we(&cp, &cp.admin).args(["scale", "app", "--remove", &h3.name]));
    assert_eq!(r.code, 0, "{}", r.all());
    let drained = r.stdout.find("drained").expect("drained step");
    let stopped = r.stdout.find("stopped").expect("stopped step");
    assert!(drained < stopped, "{}", r.stdout);
    let (_, report) = api(&cp, "GET", "/api/v1/scale/hosts", &cp.admin, None);
    let ups: Vec<String> = report["balancers"][0]["upstreams"]
        .as_array()
        .expect("upstreams")
        .iter()
        .map(|u| u["address"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(ups.len(), 2, "{report}");
    assert!(
        !ups.iter()
            .any(|u| u.starts_with(&format!("{}:", h3.address)))
    );
    let left = h3.podman(&podman, &["ps", "-aq"]).expect("podman ps");
    assert!(left.trim().is_empty(), "h3 runs nothing: {left}");
    let (s, _) = http_get(&lb, Duration::from_secs(5)).expect("still served");
    assert_eq!(s, 200);
}
