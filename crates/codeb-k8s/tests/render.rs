//! Rendered manifests: snapshots of the output, the semantic checks on every case (and that
//! each check catches the broken object it is about), strict schema validation with
//! `kubernetes-validate` against every supported Kubernetes version, and secrets that
//! appear only in the Secret and only when asked for.

use std::collections::BTreeMap;
use std::process::Command;

use codeb_api::{KubernetesSpec, ProjectSpec};
use codeb_k8s::check::problems;
use codeb_k8s::{EnvSource, Input, Manifests, SUPPORTED_VERSIONS, Secrets, render, yaml};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

const SECRET_A: &str = "s3cr3t-Zq9v-db-password";
const SECRET_B: &str = "tok_live_51Hx9k2Qw";

fn spec(kubernetes: Option<KubernetesSpec>) -> ProjectSpec {
    let mut s: ProjectSpec = serde_json::from_value(serde_json::json!({
        "name": "myapp", "type": "node", "repository": "acme/myapp",
        "image": "ghcr.io/acme/myapp", "container_port": 3000, "health_path": "/api/health",
        "environments": [{"name": "production", "env_file": "/etc/codeb/env/myapp-production.env"},
                         {"name": "staging", "branch": "feature/next"}],
    }))
    .expect("spec");
    s.kubernetes = kubernetes;
    s
}

fn values() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("DATABASE_PASSWORD".to_owned(), SECRET_A.to_owned()),
        ("STRIPE_KEY".to_owned(), SECRET_B.to_owned()),
    ])
}

const DIGEST: &str =
    "ghcr.io/acme/myapp@sha256:4f3c2b1a0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b";

/// The cases every test walks: (snapshot name, spec, environment, env source).
fn cases() -> Vec<(&'static str, ProjectSpec, &'static str, EnvSource)> {
    let custom = KubernetesSpec {
        namespace: Some("apps".into()),
        min_replicas: 3,
        max_replicas: 6,
        cpu_percent: 60,
        cpu_request: "250m".into(),
        memory_request: "256Mi".into(),
        memory_limit: Some("512Mi".into()),
        hosts: BTreeMap::from([("production".into(), "myapp.example.com".into())]),
        ingress_class: Some("nginx".into()),
    };
    vec![
        (
            "production_defaults_with_secret",
            spec(None),
            "production",
            EnvSource::Values(values()),
        ),
        (
            "production_custom_withheld_secret",
            spec(Some(custom)),
            "production",
            EnvSource::Withheld {
                keys: vec!["DATABASE_PASSWORD".into(), "STRIPE_KEY".into()],
            },
        ),
        (
            "staging_without_env_file",
            spec(Some(KubernetesSpec {
                min_replicas: 1,
                max_replicas: 1,
                ..KubernetesSpec::default()
            })),
            "staging",
            EnvSource::None,
        ),
    ]
}

fn image_for(s: &ProjectSpec, env: &str) -> String {
    if env == "production" {
        codeb_k8s::render::default_image(s, env, Some(DIGEST))
    } else {
        codeb_k8s::render::default_image(s, env, None)
    }
}

fn rendered() -> Vec<(&'static str, ProjectSpec, Manifests)> {
    cases()
        .into_iter()
        .map(|(n, s, env, src)| {
            let m = render(&Input {
                spec: &s,
                environment: env,
                image: image_for(&s, env),
                env: src,
            })
            .unwrap_or_else(|e| panic!("{n}: {e}"));
            (n, s, m)
        })
        .collect()
}

fn yaml_of(m: &Manifests) -> String {
    yaml::documents(&m.objects(Secrets::Include).expect("json")).expect("yaml")
}

#[test]
fn snapshots_of_the_rendered_yaml_and_json() {
    for (name, _, m) in rendered() {
        let text = yaml_of(&m);
        insta::assert_snapshot!(format!("{name}.yaml"), text);
        // Rendering twice gives the same bytes (stable ordering).
        assert_eq!(text, yaml_of(&m), "{name}");
        let json = yaml::json_list(&m.objects(Secrets::Include).expect("json")).expect("json");
        let back: serde_json::Value = serde_json::from_str(&json).expect("parse");
        assert_eq!(back["kind"], "List");
        assert_eq!(
            back["items"].as_array().map(Vec::len),
            Some(5 + usize::from(m.secret.is_some())),
            "{name}"
        );
    }
    let (_, s, m) = &rendered()[2];
    assert_eq!(
        m.deployment
            .spec
            .as_ref()
            .expect("spec")
            .template
            .spec
            .as_ref()
            .expect("pod")
            .containers[0]
            .image
            .as_deref(),
        Some("ghcr.io/acme/myapp:feature-next"),
        "{s:?}"
    );
}

#[test]
fn every_rendered_manifest_passes_the_semantic_checks() {
    for (name, s, m) in rendered() {
        assert_eq!(problems(&m, &s), Vec::<String>::new(), "{name}");
        let d = m.deployment.spec.as_ref().expect("spec");
        assert_eq!(d.replicas, None, "{name}: the HPA owns the replicas");
        let hpa = m.hpa.spec.as_ref().expect("hpa");
        let k = s.kubernetes.clone().unwrap_or_default();
        assert_eq!(
            (hpa.min_replicas, hpa.max_replicas),
            (Some(k.min_replicas), k.max_replicas),
            "{name}"
        );
    }
    let (_, _, m) = &rendered()[0];
    let hpa = m.hpa.spec.as_ref().expect("hpa");
    assert_eq!((hpa.min_replicas, hpa.max_replicas), (Some(2), 10));
    let cpu = hpa.metrics.as_ref().expect("metrics")[0]
        .resource
        .as_ref()
        .expect("resource");
    assert_eq!(cpu.target.average_utilization, Some(70));
}

/// Each check catches what it is about: a broken copy of a good manifest fails with the
/// sentence naming it.
#[test]
fn each_semantic_check_catches_its_fault() {
    let (_, s, good) = rendered().swap_remove(0);
    type Break = Box<dyn Fn(&mut Manifests)>;
    fn dep(m: &mut Manifests) -> &mut k8s_openapi::api::apps::v1::DeploymentSpec {
        m.deployment.spec.as_mut().expect("spec")
    }
    fn container(m: &mut Manifests) -> &mut k8s_openapi::api::core::v1::Container {
        &mut dep(m).template.spec.as_mut().expect("pod").containers[0]
    }
    let breaks: Vec<(&str, Break)> = vec![
        (
            "minReplicas 5 is greater than maxReplicas 4",
            Box::new(|m| {
                let h = m.hpa.spec.as_mut().expect("hpa");
                h.min_replicas = Some(5);
                h.max_replicas = 4;
            }),
        ),
        (
            "minReplicas 0 is below 1",
            Box::new(|m| m.hpa.spec.as_mut().expect("hpa").min_replicas = Some(0)),
        ),
        (
            "sets spec.replicas (3)",
            Box::new(|m| dep(m).replicas = Some(3)),
        ),
        (
            "no cpu request",
            Box::new(|m| {
                container(m)
                    .resources
                    .as_mut()
                    .expect("res")
                    .requests
                    .as_mut()
                    .expect("req")
                    .remove("cpu");
            }),
        ),
        (
            "no memory request",
            Box::new(|m| container(m).resources = None),
        ),
        (
            "readinessProbe path is Some(\"/\")",
            Box::new(|m| {
                container(m)
                    .readiness_probe
                    .as_mut()
                    .expect("probe")
                    .http_get
                    .as_mut()
                    .expect("get")
                    .path = Some("/".into());
            }),
        ),
        (
            "livenessProbe port is Int(8080)",
            Box::new(|m| {
                container(m)
                    .liveness_probe
                    .as_mut()
                    .expect("probe")
                    .http_get
                    .as_mut()
                    .expect("get")
                    .port = IntOrString::Int(8080);
            }),
        ),
        (
            "no livenessProbe httpGet",
            Box::new(|m| container(m).liveness_probe = None),
        ),
        (
            "spec.selector does not match",
            Box::new(|m| {
                dep(m)
                    .selector
                    .match_labels
                    .as_mut()
                    .expect("labels")
                    .insert("app.kubernetes.io/name".into(), "other".into());
            }),
        ),
        (
            "Service myapp-production: its selector",
            Box::new(|m| {
                m.service.spec.as_mut().expect("svc").selector =
                    Some(BTreeMap::from([("x".into(), "y".into())]));
            }),
        ),
        (
            "PodDisruptionBudget myapp-production: its selector",
            Box::new(|m| m.pdb.spec.as_mut().expect("pdb").selector = None),
        ),
        (
            "maxUnavailable 0",
            Box::new(|m| {
                dep(m)
                    .strategy
                    .as_mut()
                    .expect("strategy")
                    .rolling_update
                    .as_mut()
                    .expect("ru")
                    .max_unavailable = Some(IntOrString::String("25%".into()));
            }),
        ),
        (
            "scaleTargetRef",
            Box::new(|m| m.hpa.spec.as_mut().expect("hpa").scale_target_ref.name = "x".into()),
        ),
        (
            "does not read Secret myapp-production-env",
            Box::new(|m| container(m).env_from = None),
        ),
        (
            "a backend is not Service",
            Box::new(|m| {
                let r = &mut m
                    .ingress
                    .spec
                    .as_mut()
                    .expect("ing")
                    .rules
                    .as_mut()
                    .expect("rules")[0];
                r.http.as_mut().expect("http").paths[0]
                    .backend
                    .service
                    .as_mut()
                    .expect("svc")
                    .name = "elsewhere".into();
            }),
        ),
        (
            "is not in namespace myapp",
            Box::new(|m| m.pdb.metadata.namespace = Some("other".into())),
        ),
    ];
    for (expect, f) in breaks {
        let mut m = good.clone();
        f(&mut m);
        let found = problems(&m, &s);
        assert!(
            found.iter().any(|p| p.contains(expect)),
            "{expect:?} not among {found:#?}"
        );
    }
}

#[test]
fn strict_schema_validation_against_every_supported_version() {
    let bin = "kubernetes-validate";
    let dir = tempfile::tempdir().expect("tempdir");
    let mut files = Vec::new();
    for (name, _, m) in rendered() {
        let p = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&p, yaml_of(&m)).expect("write");
        files.push(p);
    }
    // A manifest with an unknown field, to prove --strict refuses what it should.
    let bad = dir.path().join("bad.yaml");
    let (_, _, m) = &rendered()[0];
    let mut v = serde_json::to_value(&m.deployment).expect("json");
    v["spec"]["replicaz"] = serde_json::json!(2);
    std::fs::write(&bad, yaml::documents(&[v]).expect("yaml")).expect("write");
    for version in SUPPORTED_VERSIONS {
        let out = Command::new(bin)
            .args(["--strict", "--quiet", "-k", version])
            .args(&files)
            .output()
            .unwrap_or_else(|e| {
                panic!("{bin} does not run ({e}): run scripts/setup (PyPI kubernetes-validate)")
            });
        assert!(
            out.status.success(),
            "Kubernetes {version}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let out = Command::new(bin)
            .args(["--strict", "--quiet", "-k", version])
            .arg(&bad)
            .output()
            .expect("run");
        assert!(
            !out.status.success(),
            "Kubernetes {version}: --strict accepted an unknown field"
        );
    }
}

#[test]
fn secret_values_appear_only_in_the_secret_and_only_when_asked_for() {
    let (_, _, m) = rendered().swap_remove(0);
    let secret = m.secret.as_ref().expect("rendered secret");
    let data = secret.data.as_ref().expect("data");
    assert_eq!(data["DATABASE_PASSWORD"].0, SECRET_A.as_bytes());
    let json = serde_json::to_value(secret).expect("json");
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(SECRET_A);
    assert_eq!(json["data"]["DATABASE_PASSWORD"], b64.as_str());
    assert!(json.get("stringData").is_none());

    let with = yaml_of(&m);
    let without = yaml::documents(&m.objects(Secrets::Omit).expect("json")).expect("yaml");
    for s in [SECRET_A, SECRET_B] {
        let b = base64::engine::general_purpose::STANDARD.encode(s);
        assert!(with.contains(&b), "the Secret carries {s} in base64");
        assert!(!with.contains(s), "no plain value in the output");
        assert!(!without.contains(&b) && !without.contains(s), "{without}");
        assert!(!format!("{m:?}").contains(s) && !format!("{m:?}").contains(&b));
    }
    assert!(!without.contains("kind: Secret"));
    // The Deployment reads the Secret either way.
    assert!(without.contains("myapp-production-env"));

    let (_, _, withheld) = rendered().swap_remove(1);
    assert!(withheld.secret.is_none());
    assert!(
        withheld.notes.iter().any(|n| n.contains("--include-secrets")
            && n.contains("DATABASE_PASSWORD, STRIPE_KEY")),
        "{:?}",
        withheld.notes
    );
}

#[test]
fn bad_definitions_are_refused_with_the_reason() {
    let s = spec(Some(KubernetesSpec {
        min_replicas: 4,
        max_replicas: 2,
        ..KubernetesSpec::default()
    }));
    fn input<'a>(s: &'a ProjectSpec, env: &'static str) -> Input<'a> {
        Input {
            spec: s,
            environment: env,
            image: "x:1".into(),
            env: EnvSource::None,
        }
    }
    let e = render(&input(&s, "production")).expect_err("min > max");
    assert!(
        e.to_string()
            .contains("min_replicas (4) is greater than max_replicas (2)"),
        "{e}"
    );

    let mut s = spec(None);
    s.environments.truncate(1);
    let e = render(&input(&s, "staging")).expect_err("no staging");
    assert!(e.to_string().contains("no staging environment"), "{e}");

    let mut s = spec(None);
    s.name = "9lives".into();
    let e = render(&input(&s, "production")).expect_err("digit first");
    assert!(e.to_string().contains("DNS-1035"), "{e}");

    let s = spec(None);
    let e = render(&Input {
        env: EnvSource::Values(BTreeMap::from([("BAD KEY".into(), "v".into())])),
        ..input(&s, "production")
    })
    .expect_err("bad key");
    assert!(e.to_string().contains("BAD KEY"), "{e}");
    assert!(!e.to_string().contains("\"v\""));
}
