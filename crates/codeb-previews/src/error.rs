//! Why a preview job failed, and whether trying again can help.

use std::path::PathBuf;

/// What went wrong while applying an intent or reconciling.
///
/// [`PreviewError::is_permanent`] tells the worker whether a retry can succeed: a wrong
/// configuration, an exhausted port pool or a refused deploy stays wrong until a person acts,
/// so the job fails at once; a network error, a GitHub 5xx or a busy lock may pass.
#[derive(Debug, thiserror::Error)]
pub enum PreviewError {
    /// The `[previews]` configuration cannot be used.
    #[error("configuration: {0}")]
    Config(String),
    /// A GitHub REST call failed.
    #[error("GitHub API: {what}: {detail}")]
    GitHub {
        what: String,
        detail: String,
        /// The HTTP status GitHub answered, when it answered.
        status: Option<u16>,
    },
    /// GitHub answered with a body of another shape than documented.
    #[error("GitHub API: {what} answered an unexpected body: {detail}")]
    Unexpected { what: String, detail: String },
    /// Every port of 5000-5999 is taken.
    #[error("the preview port pool is exhausted: {0}")]
    PoolExhausted(#[source] codeb_core::manifest::AllocError),
    /// The port manifest could not be read or written.
    #[error(transparent)]
    Manifest(#[from] codeb_host::StoreError),
    /// The deploy engine refused or failed.
    #[error(transparent)]
    Deploy(#[from] codeb_deploy::DeployError),
    /// The image registry could not be asked.
    #[error(transparent)]
    Registry(#[from] codeb_registry::RegistryError),
    /// The host's listening sockets could not be read (the port check would be blind).
    #[error("cannot read the host's listening ports: {0}")]
    HostPorts(String),
    /// Preview bookkeeping in `state_dir` could not be read or written.
    #[error("preview state {}: {source}", path.display())]
    State {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A preview record in `state_dir` is not readable JSON.
    #[error("preview state {}: {detail}; remove the file to start that preview afresh", path.display())]
    BadState { path: PathBuf, detail: String },
    /// The new release of the preview did not become healthy (the previous one serves).
    #[error("{0}")]
    Unhealthy(String),
    /// The preview's own data (database, Redis user, env file) could not be made or
    /// removed; trying again may help (a server down).
    #[error("the preview's data: {0}")]
    Data(String),
    /// The preview's data cannot be made until someone acts (its seed SQL failed, a name
    /// of someone else's is in the way, a name too long).
    #[error("the preview's data: {0}")]
    DataRefused(String),
    /// The preview's DNS records could not be written or removed.
    #[error("the preview's DNS records: {0}")]
    Dns(String),
    /// The allocation succeeded but the manifest has no port for the target (a bug).
    #[error("the manifest has no port for {0} right after allocating one")]
    NoPort(String),
}

impl PreviewError {
    /// True when trying the same job again cannot succeed without someone changing
    /// something (configuration, the manifest, a GitHub permission).
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::Config(_)
            | Self::PoolExhausted(_)
            | Self::BadState { .. }
            | Self::NoPort(_)
            | Self::DataRefused(_) => true,
            // 401/403/404/422 stay so; 429 and 5xx pass.
            Self::GitHub { status, .. } => {
                matches!(status, Some(s) if (400..500).contains(s) && *s != 429 && *s != 408)
            }
            Self::Deploy(e) => matches!(
                e,
                codeb_deploy::DeployError::Input(_) | codeb_deploy::DeployError::Template(_)
            ),
            Self::Registry(e) => matches!(
                e,
                codeb_registry::RegistryError::AuthRefused { .. }
                    | codeb_registry::RegistryError::MalformedReference { .. }
                    | codeb_registry::RegistryError::MalformedDigest { .. }
            ),
            Self::Unexpected { .. }
            | Self::Manifest(_)
            | Self::HostPorts(_)
            | Self::State { .. }
            | Self::Unhealthy(_)
            | Self::Data(_)
            | Self::Dns(_) => false,
        }
    }
}
