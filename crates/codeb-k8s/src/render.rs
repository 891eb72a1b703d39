//! From a project definition to typed Kubernetes objects.

use std::collections::BTreeMap;

use codeb_api::{KubernetesSpec, ProjectSpec};
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, ResourceMetricSource,
};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvFromSource, HTTPGetAction, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, Secret, SecretEnvSource, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec, ServiceBackendPort,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// The field manager of every server-side apply, and the `managed-by` label's value.
pub const FIELD_MANAGER: &str = "codeb";
/// The container's name in the pod.
pub const CONTAINER: &str = "app";
/// The container port's name, used by the Service and the Ingress.
pub const PORT_NAME: &str = "http";
/// The Service's port.
pub const SERVICE_PORT: i32 = 80;

/// What the env file gives the render.
#[derive(Clone, PartialEq, Eq)]
pub enum EnvSource {
    /// The environment has no env file: no Secret, no `envFrom`.
    None,
    /// There is an env file, its values were not asked for (`--include-secrets` not given):
    /// the Deployment still reads the Secret, which is left out of the output.
    Withheld { keys: Vec<String> },
    /// The values: the Secret is rendered.
    Values(BTreeMap<String, String>),
}

impl std::fmt::Debug for EnvSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::Withheld { keys } => f.debug_struct("Withheld").field("keys", keys).finish(),
            Self::Values(v) => f
                .debug_tuple("Values")
                .field(&v.keys().collect::<Vec<_>>())
                .finish(),
        }
    }
}

/// Everything one render needs.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    pub spec: &'a ProjectSpec,
    /// `production` or `staging`; must be one of the project's environments.
    pub environment: &'a str,
    /// The image reference the pods run (`repo@sha256:…` or `repo:tag`).
    pub image: String,
    pub env: EnvSource,
}

/// The rendered objects of one project environment. `Debug` shows the Secret's keys only.
#[derive(Clone, PartialEq)]
pub struct Manifests {
    pub namespace: String,
    /// `<project>-<environment>`: the name of the Deployment, Service, HPA, PDB and Ingress.
    pub name: String,
    /// `<name>-env`, when the environment has an env file.
    pub secret_name: Option<String>,
    /// The Secret, when the values were given ([`EnvSource::Values`]).
    pub secret: Option<Secret>,
    pub deployment: Deployment,
    pub service: Service,
    pub hpa: HorizontalPodAutoscaler,
    pub pdb: PodDisruptionBudget,
    pub ingress: Ingress,
    /// What a reader of the output should know (a withheld Secret, an Ingress without host).
    pub notes: Vec<String>,
}

impl std::fmt::Debug for Manifests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secret_keys = self
            .secret
            .as_ref()
            .and_then(|s| s.data.as_ref())
            .map(|d| d.keys().collect::<Vec<_>>());
        f.debug_struct("Manifests")
            .field("namespace", &self.namespace)
            .field("name", &self.name)
            .field("secret_name", &self.secret_name)
            .field("secret_keys", &secret_keys)
            .field("deployment", &self.deployment)
            .field("service", &self.service)
            .field("hpa", &self.hpa)
            .field("pdb", &self.pdb)
            .field("ingress", &self.ingress)
            .field("notes", &self.notes)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("project `{project}`: {message}")]
    Spec { project: String, message: String },
    #[error(
        "project `{project}` has no {environment} environment in the registry (it has: {have})"
    )]
    NoEnvironment {
        project: String,
        environment: String,
        have: String,
    },
    #[error(
        "the Kubernetes name `{name}` is not a DNS-1035 label (a letter first, [a-z0-9-], at most 63): rename the project to at most {max} characters starting with a letter"
    )]
    Name { name: String, max: usize },
    #[error("env file key {key:?} cannot be a Secret key ([-._a-zA-Z0-9], at most 253)")]
    SecretKey { key: String },
    #[error("the image reference is empty")]
    NoImage,
}

fn is_dns1035_label(s: &str) -> bool {
    codeb_api::k8s::is_dns_label(s) && s.starts_with(|c: char| c.is_ascii_lowercase())
}

/// The labels every object carries; [`selector_labels`] is the subset selectors use.
pub fn labels(project: &str, environment: &str) -> BTreeMap<String, String> {
    let mut l = selector_labels(project, environment);
    l.insert("app.kubernetes.io/managed-by".into(), FIELD_MANAGER.into());
    l.insert("codeb.dev/environment".into(), environment.into());
    l
}

/// The labels the Deployment, Service and PDB select pods by.
pub fn selector_labels(project: &str, environment: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), project.to_owned()),
        (
            "app.kubernetes.io/instance".to_owned(),
            format!("{project}-{environment}"),
        ),
    ])
}

fn q(s: &str) -> Quantity {
    Quantity(s.to_owned())
}

/// Renders the objects. The spec's `kubernetes` section is checked again here (defaults
/// when absent), so a definition that got past no server still renders only valid bounds.
pub fn render(input: &Input<'_>) -> Result<Manifests, RenderError> {
    let spec = input.spec;
    let project = spec.name.as_str();
    let env = input.environment;
    let k = spec.kubernetes.clone().unwrap_or_default();
    k.check().map_err(|message| RenderError::Spec {
        project: project.into(),
        message,
    })?;
    if !spec.environments.iter().any(|e| e.name == env) {
        return Err(RenderError::NoEnvironment {
            project: project.into(),
            environment: env.into(),
            have: spec
                .environments
                .iter()
                .map(|e| e.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    if input.image.trim().is_empty() {
        return Err(RenderError::NoImage);
    }
    let name = format!("{project}-{env}");
    if !is_dns1035_label(&name) {
        return Err(RenderError::Name {
            max: 63usize.saturating_sub(env.len() + 1),
            name,
        });
    }
    let namespace = k.namespace.clone().unwrap_or_else(|| project.to_owned());
    let labels = labels(project, env);
    let selector = selector_labels(project, env);
    let meta = |n: &str| ObjectMeta {
        name: Some(n.to_owned()),
        namespace: Some(namespace.clone()),
        labels: Some(labels.clone()),
        ..ObjectMeta::default()
    };
    let label_selector = LabelSelector {
        match_labels: Some(selector.clone()),
        ..LabelSelector::default()
    };
    let mut notes = Vec::new();

    let (secret_name, secret) = match &input.env {
        EnvSource::None => (None, None),
        EnvSource::Withheld { keys } => {
            let s = format!("{name}-env");
            notes.push(format!(
                "Secret {s} (from the env file: {}) is left out: its values are printed only with --include-secrets; `we scale k8s apply` sends it",
                if keys.is_empty() {
                    "no keys".to_owned()
                } else {
                    keys.join(", ")
                }
            ));
            (Some(s), None)
        }
        EnvSource::Values(values) => {
            let s = format!("{name}-env");
            let mut data = BTreeMap::new();
            for (key, v) in values {
                let ok = !key.is_empty()
                    && key.len() <= 253
                    && key
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
                if !ok {
                    return Err(RenderError::SecretKey { key: key.clone() });
                }
                data.insert(key.clone(), ByteString(v.as_bytes().to_vec()));
            }
            let secret = Secret {
                metadata: meta(&s),
                type_: Some("Opaque".into()),
                data: Some(data),
                ..Secret::default()
            };
            (Some(s), Some(secret))
        }
    };

    let port = i32::from(spec.container_port);
    let probe = |period: i32, failures: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(spec.health_path.clone()),
            port: IntOrString::Int(port),
            scheme: Some("HTTP".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(2),
        failure_threshold: Some(failures),
        ..Probe::default()
    };
    let mut limits = BTreeMap::new();
    if let Some(m) = &k.memory_limit {
        limits.insert("memory".to_owned(), q(m));
    }
    let container = Container {
        name: CONTAINER.into(),
        image: Some(input.image.clone()),
        ports: Some(vec![ContainerPort {
            name: Some(PORT_NAME.into()),
            container_port: port,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        env_from: secret_name.as_ref().map(|s| {
            vec![EnvFromSource {
                secret_ref: Some(SecretEnvSource {
                    name: s.clone(),
                    optional: Some(false),
                }),
                ..EnvFromSource::default()
            }]
        }),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_owned(), q(&k.cpu_request)),
                ("memory".to_owned(), q(&k.memory_request)),
            ])),
            limits: (!limits.is_empty()).then_some(limits),
            ..ResourceRequirements::default()
        }),
        // Ready within a few seconds of answering; restarted after 30 s of not answering.
        readiness_probe: Some(probe(5, 3)),
        liveness_probe: Some(Probe {
            initial_delay_seconds: Some(10),
            ..probe(10, 3)
        }),
        ..Container::default()
    };
    let deployment = Deployment {
        metadata: meta(&name),
        spec: Some(DeploymentSpec {
            // No `replicas`: the HorizontalPodAutoscaler owns the count.
            replicas: None,
            selector: label_selector.clone(),
            revision_history_limit: Some(5),
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_unavailable: Some(IntOrString::Int(0)),
                    max_surge: Some(IntOrString::String("25%".into())),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels.clone()),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    automount_service_account_token: Some(false),
                    termination_grace_period_seconds: Some(30),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    };

    let service = Service {
        metadata: meta(&name),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(selector.clone()),
            ports: Some(vec![ServicePort {
                name: Some(PORT_NAME.into()),
                port: SERVICE_PORT,
                target_port: Some(IntOrString::String(PORT_NAME.into())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };

    let hpa = HorizontalPodAutoscaler {
        metadata: meta(&name),
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".into()),
                kind: "Deployment".into(),
                name: name.clone(),
            },
            min_replicas: Some(k.min_replicas),
            max_replicas: k.max_replicas,
            metrics: Some(vec![MetricSpec {
                type_: "Resource".into(),
                resource: Some(ResourceMetricSource {
                    name: "cpu".into(),
                    target: MetricTarget {
                        type_: "Utilization".into(),
                        average_utilization: Some(k.cpu_percent),
                        ..MetricTarget::default()
                    },
                }),
                ..MetricSpec::default()
            }]),
            ..HorizontalPodAutoscalerSpec::default()
        }),
        ..HorizontalPodAutoscaler::default()
    };

    // maxUnavailable 1: a node drain evicts one pod at a time and is never blocked (a
    // minAvailable would block drains forever at min_replicas 1).
    let pdb = PodDisruptionBudget {
        metadata: meta(&name),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(label_selector),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    };

    let host = k.hosts.get(env).cloned();
    if host.is_none() {
        notes.push(format!(
            "Ingress {name} has no host (kubernetes.hosts.{env} is not set): it answers every host its controller serves"
        ));
    }
    let ingress = Ingress {
        metadata: meta(&name),
        spec: Some(IngressSpec {
            ingress_class_name: k.ingress_class.clone(),
            rules: Some(vec![IngressRule {
                host,
                http: Some(HTTPIngressRuleValue {
                    paths: vec![HTTPIngressPath {
                        path: Some("/".into()),
                        path_type: "Prefix".into(),
                        backend: IngressBackend {
                            service: Some(IngressServiceBackend {
                                name: name.clone(),
                                port: Some(ServiceBackendPort {
                                    name: Some(PORT_NAME.into()),
                                    ..ServiceBackendPort::default()
                                }),
                            }),
                            ..IngressBackend::default()
                        },
                    }],
                }),
            }]),
            ..IngressSpec::default()
        }),
        ..Ingress::default()
    };

    Ok(Manifests {
        namespace,
        name,
        secret_name,
        secret,
        deployment,
        service,
        hpa,
        pdb,
        ingress,
        notes,
    })
}

/// Whether [`Manifests::objects`] includes the Secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Secrets {
    Include,
    Omit,
}

impl Manifests {
    /// The objects as JSON, in apply order (the Secret first, so pods never start without
    /// it; the Deployment before the objects that point at it). Map keys come out sorted,
    /// so the output is stable.
    pub fn objects(&self, secrets: Secrets) -> Result<Vec<serde_json::Value>, serde_json::Error> {
        let mut out = Vec::new();
        if secrets == Secrets::Include
            && let Some(s) = &self.secret
        {
            out.push(serde_json::to_value(s)?);
        }
        out.push(serde_json::to_value(&self.deployment)?);
        out.push(serde_json::to_value(&self.service)?);
        out.push(serde_json::to_value(&self.hpa)?);
        out.push(serde_json::to_value(&self.pdb)?);
        out.push(serde_json::to_value(&self.ingress)?);
        Ok(out)
    }

    /// The HPA bounds rendered (for messages).
    pub fn replicas(&self) -> (i32, i32) {
        let s = self.hpa.spec.as_ref();
        (
            s.and_then(|s| s.min_replicas).unwrap_or(1),
            s.map_or(0, |s| s.max_replicas),
        )
    }
}

/// The image a render uses when none is given: the release serving the environment now
/// (`repo@sha256:…`), else what the workflow builds for the environment's branch.
pub fn default_image(spec: &ProjectSpec, environment: &str, deployed: Option<&str>) -> String {
    if let Some(d) = deployed {
        return d.to_owned();
    }
    let branch = spec
        .environments
        .iter()
        .find(|e| e.name == environment)
        .map_or("main", |e| e.effective_branch());
    // The control plane's deploy derives the same tag (`feature/x` -> `feature-x`).
    let tag: String = branch
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(128)
        .collect();
    format!("{}:{tag}", spec.image)
}

/// The spec's Kubernetes section with defaults filled in.
pub fn settings(spec: &ProjectSpec) -> KubernetesSpec {
    spec.kubernetes.clone().unwrap_or_default()
}
