//! The test bed (crates/codeb-testbed): Podman with the test-only containers.conf, the
//! registry, Caddy, the sample app's images and the one HTTP client, shared with codeb-bench.
//! Re-exported here so that the tests name it `crate::infra::...`; its self-test stays here.

pub use codeb_testbed::*;

use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Self-test
// ---------------------------------------------------------------------------------------------

/// Waits until the app behind `port` reports `version` on /api/health.
fn wait_version(port: u16, version: &str) -> Result<(u16, String), String> {
    let needle = format!("\"version\":\"{version}\"");
    wait_http_until(
        &format!("http://127.0.0.1:{port}/api/health"),
        Duration::from_secs(30),
        |_, body| body.contains(&needle),
    )
}

#[test]
fn infra_selftest() {
    let t0 = Instant::now();
    let podman = Podman::new();
    let registry = Registry::start();
    let caddy = Caddy::start();
    let t_daemons = t0.elapsed();
    podman.trust_insecure(&registry.host_port());

    let t = Instant::now();
    sample_app_binary();
    let t_cargo = t.elapsed();
    let t = Instant::now();
    sample_local_images(&podman);
    let t_build = t.elapsed();
    let t = Instant::now();
    let images = SampleImages::build_and_push(&podman, &registry);
    let t_push = t.elapsed();
    eprintln!(
        "infra timings: registry+caddy up {t_daemons:?}, cargo build {t_cargo:?}, \
         podman build v1..v3 {t_build:?}, push v1..v3 {t_push:?}"
    );
    assert_eq!(images.images.len(), 3);
    for i in &images.images {
        assert!(i.digest.starts_with("sha256:"), "{i:?}");
        assert!(podman.image_exists(&i.local), "{i:?}");
    }
    let (v1, v3) = (images.get("v1"), images.get("v3"));
    assert!(v1.healthy && !v3.healthy);
    // The registry serves the manifest under the digest podman reported.
    let (status, _) = http_request(
        "HEAD",
        &format!(
            "http://{}/v2/{}/manifests/{}",
            registry.host_port(),
            SampleImages::REPO,
            v1.digest
        ),
        &[("accept", "application/vnd.oci.image.manifest.v1+json")],
        &[],
        Duration::from_secs(10),
    )
    .expect("HEAD manifest");
    assert_eq!(status, 200);

    let mut guard = podman.label_guard();
    guard.untag_on_drop(&registry);
    // v1 pulled with --tls-verify=false (as the brief's product tests will).
    let p1 = free_port();
    let t = Instant::now();
    podman
        .run_sample(&guard, p1, &v1.reference, &["--tls-verify=false"])
        .expect("run v1");
    let (status, body) = wait_version(p1, "v1").expect("v1 healthy");
    eprintln!("v1 up in {:?}: {status} {body}", t.elapsed());
    assert_eq!(status, 200);
    assert!(body.contains(r#""status":"ok""#), "{body}");
    let (status, body) =
        http_get(&format!("http://127.0.0.1:{p1}/"), Duration::from_secs(5)).expect("GET / on v1");
    assert_eq!((status, body.as_str()), (200, "hello from v1"));
    let t = Instant::now();
    let (status, body) = http_get(
        &format!("http://127.0.0.1:{p1}/slow?ms=300"),
        Duration::from_secs(5),
    )
    .expect("GET /slow");
    assert_eq!(status, 200, "{body}");
    assert!(t.elapsed() >= Duration::from_millis(300));
    let (status, _) = http_get(
        &format!("http://127.0.0.1:{p1}/nope"),
        Duration::from_secs(5),
    )
    .expect("GET /nope");
    assert_eq!(status, 404);

    // v3 by digest, pulled as the product does (plain podman: the registry is marked
    // insecure in this helper's registries.conf).
    let p3 = free_port();
    podman
        .run_sample(&guard, p3, &v3.by_digest(), &[])
        .expect("run v3 by digest");
    let (status, body) = wait_version(p3, "v3").expect("v3 answers");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains(r#""status":"error""#), "{body}");

    // Caddy in front of v1.
    let front = free_port();
    caddy
        .reverse_proxy(front, &format!("127.0.0.1:{p1}"))
        .expect("load caddy config");
    let (status, body) = wait_version(front, "v1").expect("v1 through caddy");
    assert_eq!(status, 200, "{body}");
    let config = caddy.config().expect("caddy config");
    assert!(config.contains(&format!("127.0.0.1:{front}")), "{config}");
    assert!(config.contains(&caddy.admin_port().to_string()), "{config}");
    // Switch the upstream to v3: Caddy passes the 503 through.
    caddy
        .reverse_proxy(front, &format!("127.0.0.1:{p3}"))
        .expect("reload caddy config");
    let (status, _) = wait_version(front, "v3").expect("v3 through caddy");
    assert_eq!(status, 503);

    // A stop with --init is immediate.
    assert_eq!(podman.containers_with_label(guard.label()).len(), 2);
    let t = Instant::now();
    podman
        .run(&[
            "stop",
            "-t",
            "10",
            &podman.containers_with_label(guard.label())[0],
        ])
        .expect("podman stop");
    eprintln!("podman stop (--init) took {:?}", t.elapsed());
    assert!(t.elapsed() < Duration::from_secs(5));

    // Auth registry: pushing without credentials fails, with them it works.
    let secure = Registry::start_with_auth();
    podman.trust_insecure(&secure.host_port());
    let dest = secure.image("codeb/sample:v2");
    let anonymous = podman.run(&["push", "--tls-verify=false", &images.get("v2").local, &dest]);
    assert!(anonymous.is_err(), "anonymous push must fail");
    push_image(&podman, &secure, &images.get("v2").local, &dest).expect("push with creds");
    podman.login(&secure).expect("podman login");
    podman
        .run(&["pull", "-q", &dest])
        .expect("pull after login");
    podman.untag_registry(&secure.host_port());
    assert!(!podman.image_exists(&dest));

    let label = guard.label().to_owned();
    drop(guard);
    assert!(podman.containers_with_label(&label).is_empty());
    assert!(!podman.image_exists(&v1.reference), "untagged on drop");
    assert!(podman.image_exists(&v1.local));
    eprintln!("infra self-test took {:?}", t0.elapsed());
}
