//! codeb's Kubernetes target (scale-out phase 2, `we scale k8s`).
//!
//! [`render`] turns a project definition ([`codeb_api::ProjectSpec`], its `kubernetes`
//! section and one environment) into typed k8s-openapi objects: a Deployment (requests,
//! readiness and liveness probes on the health path, RollingUpdate with maxUnavailable 0,
//! no `spec.replicas`: the HPA owns it), a Service, an autoscaling/v2
//! HorizontalPodAutoscaler (CPU utilization), a PodDisruptionBudget, an Ingress and, from
//! the env file, a Secret. [`check::problems`] makes the checks a schema cannot;
//! [`rollout::state`] says when a rollout is done. With the `apply` feature, [`apply`] sends
//! the objects by server-side apply (field manager `codeb`) through kube-rs and waits for
//! the rollout.
//!
//! The objects use the API of Kubernetes 1.33 (k8s-openapi's `v1_33`), the oldest version
//! supported; the tests validate them against 1.33 to 1.37 (`kubernetes-validate --strict`).

#[cfg(feature = "apply")]
pub mod apply;
pub mod check;
pub mod render;
pub mod rollout;
pub mod yaml;

pub use render::{EnvSource, Input, Manifests, RenderError, Secrets, render};

/// The Kubernetes minor versions the rendered objects are validated against.
pub const SUPPORTED_VERSIONS: &[&str] = &["1.33.0", "1.34.0", "1.35.0", "1.36.0", "1.37.0"];
