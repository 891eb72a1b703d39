//! The host's podman and the units codeb writes for it.
//!
//! podman's Quadlet generator skips a unit with a `[Container]` key it does not know, and
//! older generators translate some values differently (see `codeb_quadlet::compat`). The
//! engine reads `podman version` once and writes each rendered unit in a form that version
//! runs as codeb means it: keys it lacks become the same flags through `PodmanArgs=`; a key
//! that cannot be expressed so is refused before anything changes (exit 2), by name.
//! A podman older than the oldest generator codeb checks against (5.4) gets units for that
//! generator; an unreadable version is treated the same way.

use std::path::Path;

use codeb_quadlet::{CHECKED_GENERATORS, PodmanVersion};
use codeb_runtime::Podman;

use crate::error::DeployError;

/// The podman version units are written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostPodman {
    version: Option<PodmanVersion>,
}

impl HostPodman {
    /// Asks the host's `podman version`.
    pub async fn detect(podman: &Podman) -> Self {
        let version = match podman.version().await {
            Ok((major, minor)) if major > 0 => Some(PodmanVersion::new(major, minor)),
            _ => None,
        };
        Self { version }
    }

    /// Units for a given podman (tests, and hosts whose version is known otherwise).
    pub fn fixed(version: PodmanVersion) -> Self {
        Self {
            version: Some(version),
        }
    }

    /// The host's podman version, when it could be read.
    pub fn version(&self) -> Option<PodmanVersion> {
        self.version
    }

    /// The version units are written for.
    pub fn target(&self) -> PodmanVersion {
        self.version.unwrap_or(CHECKED_GENERATORS[0])
    }

    /// Rewrites the rendered unit `text` (to be written as `unit_file`) for this podman.
    pub fn adapt(&self, unit_file: &Path, text: String) -> Result<String, DeployError> {
        let target = self.target();
        match codeb_quadlet::lower_for(unit_file, &text, target) {
            Ok(lowered) => Ok(lowered.text),
            Err(e @ codeb_quadlet::QuadletError::NeedsNewerPodman(_)) => {
                Err(DeployError::Input(format!(
                    "the unit for {} cannot be written for this host's podman {target}: {e}",
                    unit_file.display()
                )))
            }
            Err(e) => Err(DeployError::Template(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_becomes_podman_args_for_podman_5_4_and_stays_for_5_8() {
        let text = "[Container]\nImage=localhost/app@sha256:00\nMemory=512m\n".to_string();
        let path = Path::new("/etc/containers/systemd/app-production-blue.container");
        let old = HostPodman::fixed(PodmanVersion::new(5, 4))
            .adapt(path, text.clone())
            .expect("adapts");
        assert!(
            old.contains("PodmanArgs=--memory 512m\n") && !old.contains("\nMemory="),
            "{old}"
        );
        let new = HostPodman::fixed(PodmanVersion::new(5, 8))
            .adapt(path, text.clone())
            .expect("adapts");
        assert_eq!(new, text);
        // An unknown version is written for the oldest checked generator.
        assert_eq!(
            HostPodman { version: None }.target(),
            PodmanVersion::new(5, 4)
        );
    }
}
