//! `apply` offline: kube-rs's real `Client` in front of a recording tower service (no API
//! server can run here). Proves the requests codeb sends (method, path, server-side apply
//! query: fieldManager=codeb, force, dryRun), that each body is the rendered object, the
//! rollout wait over Deployment status fixtures, and the kubeconfig/context errors.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use codeb_api::ProjectSpec;
use codeb_k8s::apply::{self, ApplyError};
use codeb_k8s::{EnvSource, Input, Manifests, render};
use http_body_util::BodyExt;
use kube::client::Body;
use serde_json::{Value, json};

#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    query: BTreeMap<String, String>,
    content_type: String,
    body: Value,
}

/// Answers every PATCH with the object sent plus `metadata.generation: 7`, and every
/// status GET with the next fixture (the last one repeats); records every request.
#[derive(Clone)]
struct Fake {
    seen: Arc<Mutex<Vec<Seen>>>,
    statuses: Arc<Mutex<VecDeque<Value>>>,
    patch_status: u16,
}

impl Fake {
    fn new(statuses: Vec<Value>) -> Self {
        Self {
            seen: Arc::default(),
            statuses: Arc::new(Mutex::new(statuses.into())),
            patch_status: 200,
        }
    }

    fn client(&self) -> kube::Client {
        let me = self.clone();
        let svc = tower::service_fn(move |req: http::Request<Body>| {
            let me = me.clone();
            async move {
                let (parts, body) = req.into_parts();
                let bytes = body.collect().await?.to_bytes();
                let body: Value = if bytes.is_empty() {
                    Value::Null
                } else {
                    serde_json::from_slice(&bytes)?
                };
                let query = parts
                    .uri
                    .query()
                    .unwrap_or("")
                    .split('&')
                    .filter(|kv| !kv.is_empty())
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect();
                let seen = Seen {
                    method: parts.method.to_string(),
                    path: parts.uri.path().to_owned(),
                    query,
                    content_type: parts
                        .headers
                        .get(http::header::CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned(),
                    body: body.clone(),
                };
                me.seen.lock().expect("lock").push(seen);
                let (status, answer) = if parts.method == http::Method::PATCH {
                    if me.patch_status == 200 {
                        let mut b = body;
                        b["metadata"]["generation"] = json!(7);
                        (200, b)
                    } else {
                        (
                            me.patch_status,
                            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                   "message": "namespaces \"myapp\" not found", "reason": "NotFound",
                                   "code": me.patch_status}),
                        )
                    }
                } else {
                    let mut q = me.statuses.lock().expect("lock");
                    let next = if q.len() > 1 {
                        q.pop_front()
                    } else {
                        q.front().cloned()
                    };
                    (200, next.unwrap_or(Value::Null))
                };
                let resp = http::Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .body(Body::from(serde_json::to_vec(&answer)?))?;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(resp)
            }
        });
        kube::Client::new(svc, "default")
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }
}

fn manifests() -> Manifests {
    let spec: ProjectSpec = serde_json::from_value(json!({
        "name": "myapp", "type": "node", "repository": "acme/myapp",
        "image": "ghcr.io/acme/myapp", "container_port": 3000,
        "environments": [{"name": "production", "env_file": "/etc/x.env"}],
    }))
    .expect("spec");
    render(&Input {
        spec: &spec,
        environment: "production",
        image: "ghcr.io/acme/myapp:main".into(),
        env: EnvSource::Values(BTreeMap::from([("K".into(), "v4lue-xyz".into())])),
    })
    .expect("render")
}

fn status(generation: i64, observed: i64, replicas: i32, updated: i32, available: i32) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "myapp-production", "namespace": "myapp", "generation": generation},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"a": "b"}},
                 "template": {"metadata": {"labels": {"a": "b"}},
                              "spec": {"containers": [{"name": "app", "image": "x"}]}}},
        "status": {"observedGeneration": observed, "replicas": replicas,
                   "updatedReplicas": updated, "availableReplicas": available},
    })
}

#[test]
fn patch_params_are_server_side_apply_by_codeb_forced() {
    let p = apply::patch_params(false);
    assert_eq!(p.field_manager.as_deref(), Some("codeb"));
    assert!(p.force);
    assert!(!p.dry_run);
    assert!(apply::patch_params(true).dry_run);
}

#[tokio::test]
async fn apply_sends_each_rendered_object_by_server_side_apply_in_order() {
    let m = manifests();
    for dry_run in [false, true] {
        let fake = Fake::new(vec![]);
        let applied = apply::apply(&fake.client(), &m, dry_run)
            .await
            .expect("apply");
        let kinds: Vec<&str> = applied.iter().map(|a| a.kind).collect();
        assert_eq!(
            kinds,
            [
                "Secret",
                "Deployment",
                "Service",
                "HorizontalPodAutoscaler",
                "PodDisruptionBudget",
                "Ingress"
            ]
        );
        assert!(applied.iter().all(|a| a.generation == Some(7)));
        let seen = fake.seen();
        let paths: Vec<&str> = seen.iter().map(|s| s.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/api/v1/namespaces/myapp/secrets/myapp-production-env",
                "/apis/apps/v1/namespaces/myapp/deployments/myapp-production",
                "/api/v1/namespaces/myapp/services/myapp-production",
                "/apis/autoscaling/v2/namespaces/myapp/horizontalpodautoscalers/myapp-production",
                "/apis/policy/v1/namespaces/myapp/poddisruptionbudgets/myapp-production",
                "/apis/networking.k8s.io/v1/namespaces/myapp/ingresses/myapp-production",
            ]
        );
        let objects = m.objects(codeb_k8s::Secrets::Include).expect("json");
        for (s, o) in seen.iter().zip(&objects) {
            assert_eq!(s.method, "PATCH");
            assert_eq!(s.content_type, "application/apply-patch+yaml");
            assert_eq!(
                s.query.get("fieldManager").map(String::as_str),
                Some("codeb")
            );
            assert_eq!(s.query.get("force").map(String::as_str), Some("true"));
            assert_eq!(
                s.query.get("dryRun").map(String::as_str),
                dry_run.then_some("All"),
                "{}",
                s.path
            );
            assert_eq!(&s.body, o, "the body is the rendered object");
        }
    }
}

#[tokio::test]
async fn an_api_refusal_names_the_object_and_the_fix() {
    let mut fake = Fake::new(vec![]);
    fake.patch_status = 404;
    let e = apply::apply(&fake.client(), &manifests(), false)
        .await
        .expect_err("404");
    let msg = e.to_string();
    assert!(msg.contains("Secret myapp/myapp-production-env"), "{msg}");
    assert!(msg.contains("kubectl create namespace myapp"), "{msg}");
    assert!(!msg.contains("v4lue-xyz"), "{msg}");
    assert_eq!(fake.seen().len(), 1, "stops at the first refusal");
}

#[tokio::test]
async fn the_rollout_wait_follows_the_status_to_completion() {
    let fake = Fake::new(vec![
        status(7, 6, 2, 2, 2),
        status(7, 7, 3, 1, 2),
        status(7, 7, 3, 2, 2),
        status(7, 7, 2, 2, 1),
        status(7, 7, 2, 2, 2),
    ]);
    let mut heard = Vec::new();
    apply::wait_rollout(
        &fake.client(),
        "myapp",
        "myapp-production",
        Some(7),
        Duration::from_secs(60),
        Duration::from_millis(1),
        |m| heard.push(m.to_owned()),
    )
    .await
    .expect("complete");
    assert_eq!(heard.len(), 4, "{heard:?}");
    assert!(heard[0].contains("generation 7"), "{heard:?}");
    assert!(heard[1].contains("1 of 2 replicas"), "{heard:?}");
    assert!(heard[2].contains("old replica"), "{heard:?}");
    assert!(
        heard[3].contains("1 of 2 updated replicas available"),
        "{heard:?}"
    );
    let seen = fake.seen();
    assert!(seen.iter().all(|s| s.method == "GET"
        && s.path == "/apis/apps/v1/namespaces/myapp/deployments/myapp-production/status"));
    assert_eq!(seen.len(), 5);
}

#[tokio::test]
async fn a_stuck_or_failed_rollout_is_an_error() {
    let mut failed = status(7, 7, 3, 1, 2);
    failed["status"]["conditions"] = json!([{"type": "Progressing", "status": "False",
        "reason": "ProgressDeadlineExceeded", "message": "ReplicaSet has timed out progressing."}]);
    let fake = Fake::new(vec![failed]);
    let e = apply::wait_rollout(
        &fake.client(),
        "myapp",
        "myapp-production",
        Some(7),
        Duration::from_secs(60),
        Duration::from_millis(1),
        |_| {},
    )
    .await
    .expect_err("deadline");
    assert!(matches!(e, ApplyError::Rollout { .. }), "{e}");
    assert!(e.to_string().contains("timed out progressing"), "{e}");

    let fake = Fake::new(vec![status(7, 7, 3, 1, 2)]);
    let e = apply::wait_rollout(
        &fake.client(),
        "myapp",
        "myapp-production",
        Some(7),
        Duration::from_millis(20),
        Duration::from_millis(2),
        |_| {},
    )
    .await
    .expect_err("timeout");
    assert!(matches!(e, ApplyError::Timeout { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("kubectl -n myapp rollout status deployment/myapp-production"),
        "{e}"
    );
}

const KUBECONFIG: &str = "apiVersion: v1
kind: Config
current-context: dev
clusters:
- name: c1
  cluster: {server: 'https://127.0.0.1:6443'}
contexts:
- name: dev
  context: {cluster: c1, user: u1, namespace: apps}
- name: prod
  context: {cluster: c1, user: u1}
users:
- name: u1
  user: {token: not-a-real-token}
";

#[tokio::test]
async fn kubeconfig_and_context_errors_are_clear() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config");
    std::fs::write(&path, KUBECONFIG).expect("write");

    let Err(e) = apply::client("staging", Some(&path)).await else {
        panic!("no such context")
    };
    let msg = e.to_string();
    assert!(msg.contains("context `staging` is not in"), "{msg}");
    assert!(msg.contains("dev, prod"), "{msg}");
    assert!(msg.contains("--context"), "{msg}");

    let missing = dir.path().join("nope");
    let Err(e) = apply::client("dev", Some(&missing)).await else {
        panic!("missing file")
    };
    let msg = e.to_string();
    assert!(msg.contains(&missing.display().to_string()), "{msg}");
    assert!(msg.contains("--kubeconfig"), "{msg}");

    let broken = dir.path().join("broken");
    std::fs::write(&broken, "contexts: [this is: not, a kubeconfig").expect("write");
    assert!(matches!(
        apply::client("dev", Some(&broken)).await,
        Err(ApplyError::Kubeconfig { .. })
    ));

    // A good context builds a client without contacting anything.
    if let Err(e) = apply::client("prod", Some(&path)).await {
        panic!("client for prod: {e}");
    }
}
