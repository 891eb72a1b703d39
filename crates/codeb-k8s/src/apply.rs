//! Server-side apply through kube-rs, and the wait for the rollout. Thin on purpose: the
//! objects come from [`crate::render`], the patch parameters from [`patch_params`], the
//! rollout verdict from [`crate::rollout::state`]; this module only sends them.

use std::fmt::Debug;
use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::render::{FIELD_MANAGER, Manifests};
use crate::rollout::{self, Rollout};

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("kubeconfig {source_name}: {message}")]
    Kubeconfig {
        source_name: String,
        message: String,
    },
    #[error(
        "context `{context}` is not in {source_name} (it has: {have}); pick one with --context (`kubectl config get-contexts` lists them)"
    )]
    NoContext {
        context: String,
        source_name: String,
        have: String,
    },
    #[error("cannot build a Kubernetes client for context `{context}`: {message}")]
    Client { context: String, message: String },
    #[error("cannot reach the Kubernetes API server ({what}): {message}")]
    Unreachable { what: String, message: String },
    #[error("{kind} {namespace}/{name}: {message}")]
    Apply {
        kind: &'static str,
        namespace: String,
        name: String,
        message: String,
    },
    #[error("Deployment {namespace}/{name}: {message}")]
    Rollout {
        namespace: String,
        name: String,
        message: String,
    },
    #[error(
        "Deployment {namespace}/{name} did not finish rolling out within {waited:?}: {last}; look with `kubectl -n {namespace} rollout status deployment/{name}`"
    )]
    Timeout {
        namespace: String,
        name: String,
        waited: Duration,
        last: String,
    },
}

/// The parameters of every apply: field manager `codeb`, conflicts forced (codeb owns the
/// fields it renders; someone's `kubectl edit` of them is overwritten, as a deploy would),
/// and the server's dry run when asked (`dryRun=All`: admission and validation run,
/// nothing is stored).
pub fn patch_params(dry_run: bool) -> PatchParams {
    let p = PatchParams::apply(FIELD_MANAGER).force();
    if dry_run { p.dry_run() } else { p }
}

/// A client for `context` of the kubeconfig at `path` (or `$KUBECONFIG`, else
/// `~/.kube/config`). Nothing is contacted yet.
pub async fn client(context: &str, path: Option<&Path>) -> Result<Client, ApplyError> {
    let (kc, source_name) = match path {
        Some(p) => (Kubeconfig::read_from(p), p.display().to_string()),
        // kube-rs reads $KUBECONFIG itself (a list of files, merged).
        None => (
            Kubeconfig::read(),
            "$KUBECONFIG or ~/.kube/config".to_owned(),
        ),
    };
    let kc = kc.map_err(|e| ApplyError::Kubeconfig {
        source_name: source_name.clone(),
        message: format!("{e}; give a readable kubeconfig with --kubeconfig or $KUBECONFIG"),
    })?;
    if !kc.contexts.iter().any(|c| c.name == context) {
        let have: Vec<&str> = kc.contexts.iter().map(|c| c.name.as_str()).collect();
        return Err(ApplyError::NoContext {
            context: context.to_owned(),
            source_name,
            have: if have.is_empty() {
                "no contexts".to_owned()
            } else {
                have.join(", ")
            },
        });
    }
    let options = KubeConfigOptions {
        context: Some(context.to_owned()),
        ..KubeConfigOptions::default()
    };
    let config = Config::from_custom_kubeconfig(kc, &options)
        .await
        .map_err(|e| ApplyError::Kubeconfig {
            source_name,
            message: format!("context `{context}`: {e}"),
        })?;
    Client::try_from(config).map_err(|e| ApplyError::Client {
        context: context.to_owned(),
        message: e.to_string(),
    })
}

/// One object the API server accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Applied {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    /// `metadata.generation` after the apply (what the rollout must reach).
    pub generation: Option<i64>,
}

fn explain(e: &kube::Error, namespace: &str) -> String {
    match e {
        kube::Error::Api(s) if s.code == 404 => format!(
            "{} (does namespace `{namespace}` exist? `kubectl create namespace {namespace}`)",
            s.message
        ),
        kube::Error::Api(s) if s.code == 403 => format!(
            "{} (the context's user may not apply this; ask the cluster's admin for a Role with patch on it)",
            s.message
        ),
        kube::Error::Api(s) => format!("{} ({} {})", s.message, s.code, s.reason),
        other => other.to_string(),
    }
}

async fn one<K>(
    client: &Client,
    namespace: &str,
    obj: &K,
    pp: &PatchParams,
) -> Result<Applied, ApplyError>
where
    K: k8s_openapi::Resource
        + Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Serialize
        + Debug,
{
    let kind = <K as k8s_openapi::Resource>::KIND;
    let name = Resource::meta(obj).name.clone().unwrap_or_default();
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let back = api
        .patch(&name, pp, &Patch::Apply(obj))
        .await
        .map_err(|e| match e {
            kube::Error::Api(_) => ApplyError::Apply {
                kind,
                namespace: namespace.to_owned(),
                name: name.clone(),
                message: explain(&e, namespace),
            },
            other => ApplyError::Unreachable {
                what: format!("applying {kind} {namespace}/{name}"),
                message: other.to_string(),
            },
        })?;
    Ok(Applied {
        kind,
        namespace: namespace.to_owned(),
        name,
        generation: Resource::meta(&back).generation,
    })
}

/// Applies every object of `m` in order: the Secret (when rendered), the Deployment, the
/// Service, the HPA, the PDB, the Ingress. Stops at the first refusal.
pub async fn apply(
    client: &Client,
    m: &Manifests,
    dry_run: bool,
) -> Result<Vec<Applied>, ApplyError> {
    let pp = patch_params(dry_run);
    let ns = m.namespace.as_str();
    let mut out = Vec::new();
    if let Some(s) = &m.secret {
        out.push(one(client, ns, s, &pp).await?);
    }
    out.push(one(client, ns, &m.deployment, &pp).await?);
    out.push(one(client, ns, &m.service, &pp).await?);
    out.push(one(client, ns, &m.hpa, &pp).await?);
    out.push(one(client, ns, &m.pdb, &pp).await?);
    out.push(one(client, ns, &m.ingress, &pp).await?);
    Ok(out)
}

/// Polls the Deployment's status every `poll` until [`rollout::state`] says complete (Ok),
/// failed, or `timeout` passes; `progress` hears each new waiting sentence.
pub async fn wait_rollout(
    client: &Client,
    namespace: &str,
    name: &str,
    generation: Option<i64>,
    timeout: Duration,
    poll: Duration,
    mut progress: impl FnMut(&str),
) -> Result<(), ApplyError> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let start = Instant::now();
    let mut last = String::from("no status read yet");
    loop {
        let d = api
            .get_status(name)
            .await
            .map_err(|e| ApplyError::Rollout {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                message: explain(&e, namespace),
            })?;
        match rollout::state(&d, generation) {
            Rollout::Complete => return Ok(()),
            Rollout::Failed(message) => {
                return Err(ApplyError::Rollout {
                    namespace: namespace.to_owned(),
                    name: name.to_owned(),
                    message,
                });
            }
            Rollout::Waiting(m) => {
                if m != last {
                    progress(&m);
                    last = m;
                }
            }
        }
        if start.elapsed() + poll > timeout {
            return Err(ApplyError::Timeout {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                waited: timeout,
                last,
            });
        }
        tokio::time::sleep(poll).await;
    }
}
