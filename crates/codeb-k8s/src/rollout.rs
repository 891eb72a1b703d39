//! When a Deployment's rollout is done: a pure function over the object the API server
//! returns, the conditions `kubectl rollout status` uses.

use k8s_openapi::api::apps::v1::Deployment;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rollout {
    /// Every replica runs the new template and is available.
    Complete,
    /// Not yet; the sentence says what is awaited.
    Waiting(String),
    /// The controller gave up (`ProgressDeadlineExceeded`): waiting longer will not help.
    Failed(String),
}

/// The rollout state of `d`, once its controller has seen at least `generation` (the
/// generation the apply answered with; `None`: the object's own `metadata.generation`).
pub fn state(d: &Deployment, generation: Option<i64>) -> Rollout {
    let name = d.metadata.name.as_deref().unwrap_or("?");
    let want_gen = generation.or(d.metadata.generation).unwrap_or(0);
    let Some(st) = &d.status else {
        return Rollout::Waiting(format!("Deployment {name} has no status yet"));
    };
    let observed = st.observed_generation.unwrap_or(0);
    if observed < want_gen {
        return Rollout::Waiting(format!(
            "waiting for the deployment controller to observe generation {want_gen} (it has seen {observed})"
        ));
    }
    if let Some(c) = st.conditions.iter().flatten().find(|c| {
        c.type_ == "Progressing" && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
    }) {
        return Rollout::Failed(format!(
            "Deployment {name} exceeded its progress deadline: {}",
            c.message.as_deref().unwrap_or("no message")
        ));
    }
    let desired = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let updated = st.updated_replicas.unwrap_or(0);
    let replicas = st.replicas.unwrap_or(0);
    let available = st.available_replicas.unwrap_or(0);
    if updated < desired {
        return Rollout::Waiting(format!(
            "{updated} of {desired} replicas run the new template"
        ));
    }
    if replicas > updated {
        return Rollout::Waiting(format!(
            "{} old replica(s) pending termination",
            replicas - updated
        ));
    }
    if available < updated {
        return Rollout::Waiting(format!(
            "{available} of {updated} updated replicas available"
        ));
    }
    Rollout::Complete
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dep(v: serde_json::Value) -> Deployment {
        serde_json::from_value(v).expect("deployment fixture")
    }

    fn fixture(generation: i64, spec_replicas: i32, status: serde_json::Value) -> Deployment {
        dep(serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "myapp-production", "generation": generation},
            "spec": {"replicas": spec_replicas, "selector": {"matchLabels": {"a": "b"}},
                     "template": {"metadata": {"labels": {"a": "b"}},
                                  "spec": {"containers": [{"name": "app", "image": "x"}]}}},
            "status": status,
        }))
    }

    #[test]
    fn each_stage_of_a_rollout() {
        let cases = [
            (serde_json::json!({}), "observe generation 3"),
            (
                serde_json::json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}),
                "observe generation 3",
            ),
            (
                serde_json::json!({"observedGeneration": 3, "replicas": 3, "updatedReplicas": 1, "availableReplicas": 2}),
                "1 of 2 replicas",
            ),
            (
                serde_json::json!({"observedGeneration": 3, "replicas": 3, "updatedReplicas": 2, "availableReplicas": 2}),
                "1 old replica",
            ),
            (
                serde_json::json!({"observedGeneration": 3, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 1}),
                "1 of 2 updated replicas available",
            ),
        ];
        for (status, expect) in cases {
            match state(&fixture(3, 2, status.clone()), None) {
                Rollout::Waiting(m) => assert!(m.contains(expect), "{status}: {m}"),
                other => panic!("{status}: {other:?}"),
            }
        }
        let done = fixture(
            3,
            2,
            serde_json::json!({"observedGeneration": 3, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}),
        );
        assert_eq!(state(&done, None), Rollout::Complete);
        // The apply's generation wins over a stale object.
        assert!(matches!(state(&done, Some(4)), Rollout::Waiting(_)));
        // More available than desired while the HPA scales up is still complete.
        let scaled = fixture(
            3,
            4,
            serde_json::json!({"observedGeneration": 3, "replicas": 4, "updatedReplicas": 4, "availableReplicas": 4}),
        );
        assert_eq!(state(&scaled, Some(3)), Rollout::Complete);
    }

    #[test]
    fn a_passed_deadline_fails() {
        let d = fixture(
            3,
            2,
            serde_json::json!({
                "observedGeneration": 3, "replicas": 3, "updatedReplicas": 1, "availableReplicas": 2,
                "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                                "message": "ReplicaSet \"myapp-production-7d9\" has timed out progressing."}]
            }),
        );
        match state(&d, None) {
            Rollout::Failed(m) => assert!(m.contains("timed out progressing"), "{m}"),
            other => panic!("{other:?}"),
        }
        // A progressing condition with another reason is not a failure.
        let d = fixture(
            3,
            2,
            serde_json::json!({
                "observedGeneration": 3, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2,
                "conditions": [{"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}]
            }),
        );
        assert_eq!(state(&d, None), Rollout::Complete);
    }
}
