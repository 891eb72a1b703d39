use std::path::PathBuf;

/// Why a deploy did not happen. A deploy's preflight refuses with any variant and leaves the
/// host as it was (exit 2); its apply phase wraps every failure in [`DeployError::Applied`]
/// (exit 1). [`DeployError::changed_host`] tells the two apart.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("{0}")]
    Input(String),
    #[error(transparent)]
    Manifest(#[from] codeb_host::StoreError),
    #[error(transparent)]
    Registry(#[from] codeb_registry::RegistryError),
    #[error("pulling {image} failed: {source}")]
    Pull {
        image: String,
        source: codeb_runtime::RuntimeError,
    },
    #[error(
        "another deploy of {target} holds the lock ({holder}); waited {waited}; try again later or raise --lock-timeout"
    )]
    Locked {
        target: String,
        holder: String,
        waited: String,
    },
    #[error("cannot use {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("Caddy admin API at {url}: {detail}")]
    Caddy { url: String, detail: String },
    #[error("starting the release failed: {0}")]
    Runtime(#[from] codeb_runtime::RuntimeError),
    #[error("the rendered unit is not valid Quadlet (a codeb bug, please report): {0}")]
    Template(String),
    #[error("{0}")]
    NothingToRollBack(String),
    /// A failure after the deploy began changing the host (the previous release was put
    /// back where it could be).
    #[error(transparent)]
    Applied(Box<DeployError>),
}

impl DeployError {
    /// True when the host may have been changed before the error (exit code 1 rather than 2).
    pub fn changed_host(&self) -> bool {
        matches!(
            self,
            Self::Applied(_) | Self::Runtime(_) | Self::Caddy { .. }
        )
    }
}
