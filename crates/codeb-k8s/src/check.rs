//! The checks a schema cannot make: relations between fields and objects, and between the
//! objects and the project definition they came from. [`problems`] runs them all; `we scale
//! k8s render` and `apply` refuse manifests with a problem, and the tests run them on every
//! rendered manifest.

use std::collections::BTreeMap;

use codeb_api::ProjectSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::render::{Manifests, PORT_NAME};

fn selects(sel: Option<&LabelSelector>, labels: &BTreeMap<String, String>) -> bool {
    let Some(sel) = sel else { return false };
    if sel
        .match_expressions
        .as_ref()
        .is_some_and(|e| !e.is_empty())
    {
        return false;
    }
    match &sel.match_labels {
        Some(m) if !m.is_empty() => m.iter().all(|(k, v)| labels.get(k) == Some(v)),
        _ => false,
    }
}

/// Every problem found, each a sentence naming the object and the field.
pub fn problems(m: &Manifests, spec: &ProjectSpec) -> Vec<String> {
    let mut p = Vec::new();
    let name = &m.name;

    // HPA bounds.
    match &m.hpa.spec {
        None => p.push(format!("HorizontalPodAutoscaler {name} has no spec")),
        Some(h) => {
            let min = h.min_replicas.unwrap_or(1);
            if min < 1 {
                p.push(format!(
                    "HorizontalPodAutoscaler {name}: minReplicas {min} is below 1"
                ));
            }
            if min > h.max_replicas {
                p.push(format!(
                    "HorizontalPodAutoscaler {name}: minReplicas {min} is greater than maxReplicas {}",
                    h.max_replicas
                ));
            }
            let t = &h.scale_target_ref;
            if t.kind != "Deployment"
                || t.api_version.as_deref() != Some("apps/v1")
                || &t.name != name
            {
                p.push(format!(
                    "HorizontalPodAutoscaler {name}: scaleTargetRef is {:?}/{}/{}, not apps/v1/Deployment/{name}",
                    t.api_version, t.kind, t.name
                ));
            }
            let cpu = h.metrics.iter().flatten().any(|mt| {
                mt.type_ == "Resource"
                    && mt.resource.as_ref().is_some_and(|r| {
                        r.name == "cpu"
                            && r.target.type_ == "Utilization"
                            && r.target.average_utilization.is_some_and(|u| u > 0)
                    })
            });
            if !cpu {
                p.push(format!(
                    "HorizontalPodAutoscaler {name} has no CPU utilization target"
                ));
            }
        }
    }

    // The Deployment.
    let Some(d) = &m.deployment.spec else {
        p.push(format!("Deployment {name} has no spec"));
        return p;
    };
    if let Some(r) = d.replicas {
        p.push(format!(
            "Deployment {name} sets spec.replicas ({r}) while HorizontalPodAutoscaler {name} owns the count: every apply would reset the scale"
        ));
    }
    let tpl_labels = d
        .template
        .metadata
        .as_ref()
        .and_then(|md| md.labels.clone())
        .unwrap_or_default();
    if !selects(Some(&d.selector), &tpl_labels) {
        p.push(format!(
            "Deployment {name}: spec.selector does not match the pod template's labels"
        ));
    }
    match d.strategy.as_ref() {
        Some(s)
            if s.type_.as_deref() == Some("RollingUpdate")
                && s.rolling_update.as_ref().is_some_and(|r| {
                    r.max_unavailable == Some(IntOrString::Int(0))
                        && r.max_surge.as_ref().is_some_and(|s| match s {
                            IntOrString::Int(i) => *i > 0,
                            IntOrString::String(s) => s != "0" && s != "0%",
                        })
                }) => {}
        _ => p.push(format!(
            "Deployment {name}: the strategy must be RollingUpdate with maxUnavailable 0 and a maxSurge above 0"
        )),
    }
    let containers = d
        .template
        .spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or_default();
    if containers.is_empty() {
        p.push(format!("Deployment {name} has no container"));
    }
    let port = i32::from(spec.container_port);
    for c in containers {
        let cn = &c.name;
        let req = c.resources.as_ref().and_then(|r| r.requests.as_ref());
        for r in ["cpu", "memory"] {
            if req.is_none_or(|q| q.get(r).is_none_or(|v| v.0.is_empty())) {
                p.push(format!(
                    "Deployment {name}, container {cn}: no {r} request (the HPA's utilization is a share of the CPU request; the scheduler needs both)"
                ));
            }
        }
        if !c
            .ports
            .iter()
            .flatten()
            .any(|cp| cp.container_port == port && cp.name.as_deref() == Some(PORT_NAME))
        {
            p.push(format!(
                "Deployment {name}, container {cn}: no port {PORT_NAME} = {port} (the project's container_port)"
            ));
        }
        for (which, probe) in [
            ("readinessProbe", &c.readiness_probe),
            ("livenessProbe", &c.liveness_probe),
        ] {
            let g = probe.as_ref().and_then(|pr| pr.http_get.as_ref());
            match g {
                None => p.push(format!(
                    "Deployment {name}, container {cn}: no {which} httpGet"
                )),
                Some(g) => {
                    if g.path.as_deref() != Some(spec.health_path.as_str()) {
                        p.push(format!(
                            "Deployment {name}, container {cn}: {which} path is {:?}, not the health path {:?}",
                            g.path, spec.health_path
                        ));
                    }
                    if g.port != IntOrString::Int(port)
                        && g.port != IntOrString::String(PORT_NAME.into())
                    {
                        p.push(format!(
                            "Deployment {name}, container {cn}: {which} port is {:?}, not the container port {port}",
                            g.port
                        ));
                    }
                }
            }
        }
        let refs: Vec<&str> = c
            .env_from
            .iter()
            .flatten()
            .filter_map(|e| e.secret_ref.as_ref().map(|s| s.name.as_str()))
            .collect();
        match &m.secret_name {
            Some(s) if !refs.contains(&s.as_str()) => p.push(format!(
                "Deployment {name}, container {cn}: does not read Secret {s} (envFrom)"
            )),
            None if !refs.is_empty() => p.push(format!(
                "Deployment {name}, container {cn}: reads Secret(s) {refs:?} that codeb does not render"
            )),
            _ => {}
        }
    }
    if let (Some(s), Some(sec)) = (&m.secret_name, &m.secret)
        && sec.metadata.name.as_deref() != Some(s.as_str())
    {
        p.push(format!(
            "Secret is named {:?}, the Deployment reads {s}",
            sec.metadata.name
        ));
    }

    // Service, PDB, Ingress point at the pods and at each other.
    match &m.service.spec {
        None => p.push(format!("Service {name} has no spec")),
        Some(s) => {
            let sel_ok = s.selector.as_ref().is_some_and(|sel| {
                !sel.is_empty() && sel.iter().all(|(k, v)| tpl_labels.get(k) == Some(v))
            });
            if !sel_ok {
                p.push(format!(
                    "Service {name}: its selector does not match the pod template's labels"
                ));
            }
            let targets_ok = s.ports.iter().flatten().all(|sp| match &sp.target_port {
                Some(IntOrString::Int(i)) => *i == port,
                Some(IntOrString::String(n)) => n == PORT_NAME,
                None => sp.port == port,
            });
            if !targets_ok || s.ports.as_ref().is_none_or(Vec::is_empty) {
                p.push(format!(
                    "Service {name}: a port does not target the container port {port}"
                ));
            }
        }
    }
    let pdb_sel = m.pdb.spec.as_ref().and_then(|s| s.selector.as_ref());
    if !selects(pdb_sel, &tpl_labels) {
        p.push(format!(
            "PodDisruptionBudget {name}: its selector does not match the pod template's labels"
        ));
    }
    let svc_ports: Vec<(Option<&str>, i32)> = m
        .service
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .into_iter()
        .flatten()
        .map(|sp| (sp.name.as_deref(), sp.port))
        .collect();
    let backends = m
        .ingress
        .spec
        .as_ref()
        .and_then(|s| s.rules.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|r| r.http.as_ref())
        .flat_map(|h| h.paths.iter())
        .map(|path| path.backend.service.as_ref());
    let mut any = false;
    for b in backends {
        any = true;
        let ok = b.is_some_and(|b| {
            &b.name == name
                && b.port.as_ref().is_some_and(|bp| {
                    svc_ports.iter().any(|(n, num)| {
                        bp.name.as_deref().is_some_and(|x| Some(x) == *n) || bp.number == Some(*num)
                    })
                })
        });
        if !ok {
            p.push(format!(
                "Ingress {name}: a backend is not Service {name} on one of its ports"
            ));
        }
    }
    if !any {
        p.push(format!("Ingress {name} has no backend path"));
    }

    // Every object in the namespace, under the same labels.
    let metas = [
        ("Deployment", &m.deployment.metadata),
        ("Service", &m.service.metadata),
        ("HorizontalPodAutoscaler", &m.hpa.metadata),
        ("PodDisruptionBudget", &m.pdb.metadata),
        ("Ingress", &m.ingress.metadata),
    ];
    for (kind, md) in metas
        .into_iter()
        .chain(m.secret.as_ref().map(|s| ("Secret", &s.metadata)))
    {
        if md.namespace.as_deref() != Some(m.namespace.as_str()) {
            p.push(format!(
                "{kind} {:?} is not in namespace {}",
                md.name, m.namespace
            ));
        }
    }
    p
}
