use crate::Digest;

/// Why an image reference could not be parsed or resolved. Each message is one line: what
/// failed, on which image, and what to do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    #[error("malformed image reference {input:?}: {problem}")]
    MalformedReference { input: String, problem: String },

    #[error(
        "malformed digest {input:?}: {problem}; a digest is sha256: followed by 64 lowercase hex \
         digits"
    )]
    MalformedDigest { input: String, problem: String },

    #[error(
        "tag {tag:?} not found in {registry}/{repository}{}; was the image pushed? check the tag",
        available_tags(.available)
    )]
    TagNotFound {
        registry: String,
        repository: String,
        tag: String,
        /// Some of the tags the repository does have, when the registry would list them.
        available: Vec<String>,
    },

    #[error(
        "manifest {digest} not found in {registry}/{repository}; check the digest, or resolve \
         the tag again (the image may have been deleted)"
    )]
    ManifestNotFound {
        registry: String,
        repository: String,
        digest: Digest,
    },

    #[error(
        "repository {repository} not found on {registry}; check the image name and that the \
         image was pushed"
    )]
    RepositoryNotFound {
        registry: String,
        repository: String,
    },

    #[error("{registry} refused access to {repository} with {auth} ({detail}); {hint}")]
    AuthRefused {
        registry: String,
        repository: String,
        /// Which credentials were used (never the secret itself).
        auth: String,
        detail: String,
        hint: String,
    },

    #[error(
        "registry {host} is unreachable ({reason}); check the registry address, the network, \
         and that the registry is up"
    )]
    Unreachable {
        /// The registry, with its port if the reference has one.
        host: String,
        reason: String,
    },

    #[error(
        "TLS with registry {host} failed ({reason}); check the registry address and its \
         certificate (plain HTTP is used only for loopback registries)"
    )]
    Tls {
        /// The registry, with its port if the reference has one.
        host: String,
        reason: String,
    },

    #[error(
        "digest mismatch for {image}: expected {expected}, got {got}; do not deploy it, the \
         registry or something in between served other content"
    )]
    DigestMismatch {
        image: String,
        expected: String,
        got: String,
    },

    #[error(
        "unexpected answer from registry {registry} for {image}: {detail}; retry later, and \
         check that {registry} is an OCI registry"
    )]
    Unexpected {
        registry: String,
        image: String,
        detail: String,
    },
}

/// At most this many tags are named in a "tag not found" message.
const TAGS_SHOWN: usize = 10;

fn available_tags(tags: &[String]) -> String {
    match tags.len() {
        0 => String::new(),
        n if n <= TAGS_SHOWN => format!(" (it has: {})", tags.join(", ")),
        n => format!(
            " (it has: {}, and {} more)",
            tags[..TAGS_SHOWN].join(", "),
            n - TAGS_SHOWN
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_not_found_names_a_few_tags() {
        let err = |available: Vec<String>| RegistryError::TagNotFound {
            registry: "ghcr.io".into(),
            repository: "org/app".into(),
            tag: "v3".into(),
            available,
        };
        assert_eq!(
            err(vec![]).to_string(),
            "tag \"v3\" not found in ghcr.io/org/app; was the image pushed? check the tag"
        );
        assert!(
            err(vec!["v1".into(), "v2".into()])
                .to_string()
                .contains("org/app (it has: v1, v2);")
        );
        let many: Vec<String> = (0..15).map(|i| format!("t{i}")).collect();
        assert!(err(many).to_string().contains("t9, and 5 more)"));
    }
}
