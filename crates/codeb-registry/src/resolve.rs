//! Asking a registry which manifest a reference points at.

use std::time::Duration;

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{DigestError, OciDistributionError, OciErrorCode};
use oci_client::manifest::{
    IMAGE_MANIFEST_LIST_MEDIA_TYPE, IMAGE_MANIFEST_MEDIA_TYPE, OCI_IMAGE_INDEX_MEDIA_TYPE,
    OCI_IMAGE_MEDIA_TYPE,
};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};

use crate::{Auth, Digest, ImageRef, RegistryError};

/// The manifest kinds asked for: an image manifest or an index (multi-platform), OCI or Docker.
/// Asking for all four makes the registry answer with what is stored, so the digest is the one
/// `podman pull` sees for the tag.
const ACCEPTED: &[&str] = &[
    OCI_IMAGE_MEDIA_TYPE,
    OCI_IMAGE_INDEX_MEDIA_TYPE,
    IMAGE_MANIFEST_MEDIA_TYPE,
    IMAGE_MANIFEST_LIST_MEDIA_TYPE,
];

const USER_AGENT: &str = concat!("codeb-registry/", env!("CARGO_PKG_VERSION"));

/// What a reference resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The sha256 of the manifest bytes the registry served (checked here, not taken on trust).
    pub digest: Digest,
    /// The manifest's media type: an image manifest or an index (manifest list).
    pub media_type: String,
}

impl Resolved {
    /// Whether the digest names an index (a multi-platform image) rather than one image.
    pub fn is_index(&self) -> bool {
        self.media_type == OCI_IMAGE_INDEX_MEDIA_TYPE
            || self.media_type == IMAGE_MANIFEST_LIST_MEDIA_TYPE
    }
}

/// Resolves references through the OCI distribution API (oci-client).
///
/// Each call builds its own oci-client `Client`: that client remembers the first credentials it
/// saw for a registry and its tokens, so sharing one between calls with different [`Auth`]
/// would silently reuse the first.
#[derive(Debug, Clone)]
pub struct Resolver {
    connect_timeout: Duration,
    read_timeout: Duration,
    total_timeout: Duration,
}

impl Default for Resolver {
    fn default() -> Self {
        Self::new()
    }
}

impl Resolver {
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
    pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(30);
    /// The whole of one `resolve` (token exchange, manifest, and a tag listing on a miss).
    pub const DEFAULT_TOTAL_TIMEOUT: Duration = Duration::from_secs(90);

    pub fn new() -> Self {
        Self::with_timeouts(
            Self::DEFAULT_CONNECT_TIMEOUT,
            Self::DEFAULT_READ_TIMEOUT,
            Self::DEFAULT_TOTAL_TIMEOUT,
        )
    }

    /// `connect` bounds each TCP (+TLS) connect, `read` each wait for data, `total` a whole
    /// `resolve`.
    pub fn with_timeouts(connect: Duration, read: Duration, total: Duration) -> Self {
        Self {
            connect_timeout: connect,
            read_timeout: read,
            total_timeout: total,
        }
    }

    /// Resolves `image` to the digest of its manifest. A reference that carries a digest is
    /// verified instead: the registry must have that manifest and its bytes must hash to it.
    pub async fn resolve(&self, image: &ImageRef, auth: &Auth) -> Result<Resolved, RegistryError> {
        let call = Call {
            image,
            auth,
            reference: oci_reference(image),
            oci_auth: auth.to_oci(),
        };
        let client = self.client_for(&call)?;
        tracing::debug!(%image, auth = %auth.describe(), "resolving image");
        match tokio::time::timeout(self.total_timeout, call.resolve(&client)).await {
            Ok(result) => result,
            Err(_) => Err(RegistryError::Unreachable {
                host: image.registry().to_string(),
                reason: format!(
                    "no complete answer within {}s",
                    self.total_timeout.as_secs_f64()
                ),
            }),
        }
    }

    /// The `org.opencontainers.image.revision` label of the image `image` names (the commit it
    /// was built from), read from the image's config blob; `None` for an image without the
    /// label, or a multi-platform index (its per-platform configs may differ).
    pub async fn revision(
        &self,
        image: &ImageRef,
        digest: &Digest,
        auth: &Auth,
    ) -> Result<Option<String>, RegistryError> {
        let pinned = ImageRef::parse(&image.pinned(digest))?;
        let call = Call {
            image: &pinned,
            auth,
            reference: oci_reference(&pinned),
            oci_auth: auth.to_oci(),
        };
        let client = self.client_for(&call)?;
        let fetch = async {
            client
                .auth(&call.reference, &call.oci_auth, RegistryOperation::Pull)
                .await
                .map_err(|e| call.map_error(e))?;
            match client
                .pull_manifest_and_config(&call.reference, &call.oci_auth)
                .await
            {
                Ok((_, _, config)) => Ok(revision_label(&config)),
                // An index has no single config.
                Err(
                    OciDistributionError::ImageManifestNotFoundError(_)
                    | OciDistributionError::ImageIndexParsingNoPlatformResolverError,
                ) => Ok(None),
                Err(e) => Err(call.map_error(e)),
            }
        };
        match tokio::time::timeout(self.total_timeout, fetch).await {
            Ok(r) => r,
            Err(_) => Err(RegistryError::Unreachable {
                host: image.registry().to_string(),
                reason: format!(
                    "no complete answer within {}s",
                    self.total_timeout.as_secs_f64()
                ),
            }),
        }
    }

    fn client_for(&self, call: &Call<'_>) -> Result<Client, RegistryError> {
        let protocol = if call.image.is_loopback() {
            ClientProtocol::HttpsExcept(vec![call.reference.resolve_registry().to_string()])
        } else {
            ClientProtocol::Https
        };
        let config = ClientConfig {
            protocol,
            connect_timeout: Some(self.connect_timeout),
            read_timeout: Some(self.read_timeout),
            user_agent: USER_AGENT,
            platform_resolver: None,
            ..ClientConfig::default()
        };
        // Not `Client::new`: on a build failure it logs and falls back to a default client
        // (HTTPS everywhere, no timeouts).
        Client::try_from(config).map_err(|e| call.unexpected(format!("cannot set up HTTP: {e}")))
    }
}

fn oci_reference(image: &ImageRef) -> Reference {
    let registry = image.registry().to_string();
    let mut repository = image.repository().to_string();
    // Docker Hub's API wants official images under library/; podman does the same.
    if registry == "docker.io" && !repository.contains('/') {
        repository = format!("library/{repository}");
    }
    match (image.tag(), image.digest()) {
        (_, Some(digest)) => Reference::with_digest(registry, repository, digest.to_string()),
        (Some(tag), None) => Reference::with_tag(registry, repository, tag.to_string()),
        // ImageRef::parse guarantees a tag or a digest.
        (None, None) => Reference::with_tag(registry, repository, "latest".to_string()),
    }
}

/// One resolution: the image, its credentials, and the error mapping that needs them.
struct Call<'a> {
    image: &'a ImageRef,
    auth: &'a Auth,
    reference: Reference,
    oci_auth: RegistryAuth,
}

impl Call<'_> {
    async fn resolve(&self, client: &Client) -> Result<Resolved, RegistryError> {
        // Authenticating first surfaces a refused token exchange as such: later requests
        // swallow that failure and go on anonymously.
        client
            .auth(&self.reference, &self.oci_auth, RegistryOperation::Pull)
            .await
            .map_err(|e| self.map_error(e))?;

        let (body, registry_digest) = match client
            .pull_manifest_raw(&self.reference, &self.oci_auth, ACCEPTED)
            .await
        {
            Ok(answer) => answer,
            Err(e) => return Err(self.not_found_or(client, e).await),
        };

        let computed = Digest::of_bytes(&body);
        // oci-client already checks the body against the registry's Docker-Content-Digest
        // header; the manifest's own hash is what counts, so check it here as well.
        if registry_digest.starts_with("sha256:") && registry_digest != computed.as_str() {
            return Err(RegistryError::DigestMismatch {
                image: self.image.to_string(),
                expected: registry_digest,
                got: computed.to_string(),
            });
        }
        if let Some(expected) = self.image.digest() {
            verify(self.image, expected, &body)?;
        }
        let media_type = media_type(&body).map_err(|detail| self.unexpected(detail))?;
        tracing::debug!(image = %self.image, digest = %computed, %media_type, "resolved");
        Ok(Resolved {
            digest: computed,
            media_type,
        })
    }

    /// A missing manifest can mean a missing tag or a missing repository (distribution answers
    /// MANIFEST_UNKNOWN for both): the tag list tells them apart.
    async fn not_found_or(&self, client: &Client, error: OciDistributionError) -> RegistryError {
        let mapped = self.map_error(error);
        let missing_tag = matches!(mapped, RegistryError::TagNotFound { .. });
        let missing_digest = matches!(mapped, RegistryError::ManifestNotFound { .. });
        if !(missing_tag || missing_digest) {
            return mapped;
        }
        match client
            .list_tags(&self.reference, &self.oci_auth, None, None)
            .await
        {
            Ok(listing) => match mapped {
                RegistryError::TagNotFound {
                    registry,
                    repository,
                    tag,
                    ..
                } => RegistryError::TagNotFound {
                    registry,
                    repository,
                    tag,
                    available: listing.tags,
                },
                other => other,
            },
            Err(e) => match self.map_error(e) {
                repo @ RegistryError::RepositoryNotFound { .. } => repo,
                _ => mapped,
            },
        }
    }

    fn map_error(&self, error: OciDistributionError) -> RegistryError {
        match error {
            OciDistributionError::RequestError(e) => {
                let reason = self.redact(&error_chain(&e));
                let host = self.image.registry().to_string();
                if is_tls_error(&e) {
                    RegistryError::Tls { host, reason }
                } else if e.is_timeout() {
                    RegistryError::Unreachable {
                        host,
                        reason: format!("timed out: {reason}"),
                    }
                } else {
                    RegistryError::Unreachable { host, reason }
                }
            }
            OciDistributionError::UnauthorizedError { .. } => {
                self.auth_refused("401 Unauthorized".to_string())
            }
            OciDistributionError::AuthenticationFailure(reason) => {
                let reason = reason.trim();
                let detail = if reason.is_empty() {
                    "the token exchange was refused".to_string()
                } else {
                    format!("the token exchange was refused: {}", one_line(reason))
                };
                self.auth_refused(self.redact(&detail))
            }
            OciDistributionError::RegistryError { envelope, .. } => {
                let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
                let messages: Vec<String> = envelope
                    .errors
                    .iter()
                    .map(|e| format!("{:?}: {}", e.code, e.message))
                    .collect();
                let detail = self.redact(&messages.join("; "));
                let has = |code: OciErrorCode| codes.contains(&&code);
                if has(OciErrorCode::NameUnknown) {
                    self.repository_not_found()
                } else if has(OciErrorCode::ManifestUnknown)
                    || has(OciErrorCode::NotFound)
                    || has(OciErrorCode::TagInvalid)
                {
                    self.manifest_not_found()
                } else if has(OciErrorCode::Unauthorized) || has(OciErrorCode::Denied) {
                    self.auth_refused(detail)
                } else if has(OciErrorCode::Toomanyrequests) {
                    self.unexpected(format!("rate limited: {detail}"))
                } else {
                    self.unexpected(detail)
                }
            }
            OciDistributionError::ServerError { code, message, .. } => match code {
                401 | 403 => self.auth_refused(format!("HTTP {code}")),
                404 => self.manifest_not_found(),
                _ => {
                    let message = one_line(message.trim());
                    self.unexpected(self.redact(&format!("HTTP {code} {message}")))
                }
            },
            OciDistributionError::DigestError(DigestError::VerificationError {
                expected,
                actual,
            }) => RegistryError::DigestMismatch {
                image: self.image.to_string(),
                expected,
                got: actual,
            },
            other => self.unexpected(self.redact(&other.to_string())),
        }
    }

    fn manifest_not_found(&self) -> RegistryError {
        match (self.image.digest(), self.image.tag()) {
            (Some(digest), _) => RegistryError::ManifestNotFound {
                registry: self.image.registry().to_string(),
                repository: self.image.repository().to_string(),
                digest: digest.clone(),
            },
            (None, tag) => RegistryError::TagNotFound {
                registry: self.image.registry().to_string(),
                repository: self.image.repository().to_string(),
                tag: tag.unwrap_or_default().to_string(),
                available: Vec::new(),
            },
        }
    }

    fn repository_not_found(&self) -> RegistryError {
        RegistryError::RepositoryNotFound {
            registry: self.image.registry().to_string(),
            repository: self.image.repository().to_string(),
        }
    }

    fn auth_refused(&self, detail: String) -> RegistryError {
        RegistryError::AuthRefused {
            registry: self.image.registry().to_string(),
            repository: self.image.repository().to_string(),
            auth: self.auth.describe(),
            detail,
            hint: self.auth.hint(self.image),
        }
    }

    fn unexpected(&self, detail: String) -> RegistryError {
        RegistryError::Unexpected {
            registry: self.image.registry().to_string(),
            image: self.image.to_string(),
            detail,
        }
    }

    /// Registry answers are not expected to echo credentials; make sure.
    fn redact(&self, text: &str) -> String {
        match self.auth.secret() {
            Some(secret) if !secret.expose().is_empty() => text.replace(secret.expose(), "***"),
            _ => text.to_string(),
        }
    }
}

/// Checks that `body` hashes to `expected`.
fn verify(image: &ImageRef, expected: &Digest, body: &[u8]) -> Result<(), RegistryError> {
    let got = Digest::of_bytes(body);
    if &got == expected {
        Ok(())
    } else {
        Err(RegistryError::DigestMismatch {
            image: image.to_string(),
            expected: expected.to_string(),
            got: got.to_string(),
        })
    }
}

/// The manifest's `mediaType`, or, for an OCI manifest without one, what its shape says.
fn media_type(body: &[u8]) -> Result<String, String> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("the manifest is not JSON ({e})"))?;
    let Some(object) = value.as_object() else {
        return Err("the manifest is not a JSON object".to_string());
    };
    if let Some(media_type) = object.get("mediaType").and_then(|v| v.as_str()) {
        return Ok(media_type.to_string());
    }
    if object.contains_key("manifests") {
        Ok(OCI_IMAGE_INDEX_MEDIA_TYPE.to_string())
    } else if object.contains_key("config") || object.contains_key("layers") {
        Ok(OCI_IMAGE_MEDIA_TYPE.to_string())
    } else {
        Err("the manifest has no mediaType and is neither an image manifest nor an index".into())
    }
}

/// `error: source: source ...`, skipping a source whose text its parent already includes.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

/// rustls and webpki errors reach here only as text inside the source chain. The top-level
/// message is skipped: it holds the URL, and a host name may contain "tls".
fn is_tls_error(error: &dyn std::error::Error) -> bool {
    let mut source = error.source();
    while let Some(s) = source {
        if looks_like_tls(&s.to_string()) {
            return true;
        }
        source = s.source();
    }
    false
}

fn looks_like_tls(reason: &str) -> bool {
    let reason = reason.to_ascii_lowercase();
    [
        "certificate",
        "tls",
        "ssl",
        "handshake",
        "corrupt message",
        "invalidcontenttype",
    ]
    .iter()
    .any(|needle| reason.contains(needle))
}

fn one_line(text: &str) -> String {
    let line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() > 300 {
        let cut: String = line.chars().take(300).collect();
        format!("{cut}...")
    } else {
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_reports_a_mismatch_with_both_digests() {
        let image = ImageRef::parse("127.0.0.1:1/org/app:v1").expect("valid");
        let body = br#"{"schemaVersion":2}"#;
        let right = Digest::of_bytes(body);
        verify(&image, &right, body).expect("the body hashes to its own digest");
        let wrong = Digest::of_bytes(b"other");
        match verify(&image, &wrong, body) {
            Err(err @ RegistryError::DigestMismatch { .. }) => {
                let message = err.to_string();
                assert!(message.contains(wrong.as_str()), "{message}");
                assert!(message.contains(right.as_str()), "{message}");
                assert!(message.starts_with("digest mismatch for 127.0.0.1:1/org/app:v1"));
            }
            other => panic!("expected a mismatch, got {other:?}"),
        }
    }

    #[test]
    fn media_types() {
        assert_eq!(
            media_type(br#"{"schemaVersion":2,"mediaType":"application/x"}"#),
            Ok("application/x".to_string())
        );
        assert_eq!(
            media_type(br#"{"schemaVersion":2,"manifests":[]}"#),
            Ok(OCI_IMAGE_INDEX_MEDIA_TYPE.to_string())
        );
        assert_eq!(
            media_type(br#"{"schemaVersion":2,"config":{},"layers":[]}"#),
            Ok(OCI_IMAGE_MEDIA_TYPE.to_string())
        );
        assert!(media_type(b"<html>").is_err());
        assert!(media_type(b"[]").is_err());
        assert!(media_type(b"{}").is_err());
    }

    #[test]
    fn docker_hub_official_images_live_under_library() {
        let image = ImageRef::parse("docker.io/nginx:1").expect("valid");
        assert_eq!(oci_reference(&image).repository(), "library/nginx");
        let image = ImageRef::parse("docker.io/org/app:1").expect("valid");
        assert_eq!(oci_reference(&image).repository(), "org/app");
    }

    #[test]
    fn tls_detection() {
        assert!(looks_like_tls("invalid peer certificate: UnknownIssuer"));
        assert!(looks_like_tls(
            "received corrupt message of type InvalidContentType"
        ));
        assert!(!looks_like_tls(
            "tcp connect error: Connection refused (os error 111)"
        ));
    }
}

/// The revision label of an image config (`{"config": {"Labels": {...}}}`).
fn revision_label(config: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(config).ok()?;
    v.pointer("/config/Labels/org.opencontainers.image.revision")
        .and_then(serde_json::Value::as_str)
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod revision_tests {
    #[test]
    fn reads_the_revision_label_of_a_config() {
        let c = r#"{"architecture":"amd64","config":{"Labels":{"org.opencontainers.image.revision":"ABC123"}}}"#;
        assert_eq!(super::revision_label(c).as_deref(), Some("abc123"));
        assert_eq!(super::revision_label(r#"{"config":{}}"#), None);
        assert_eq!(super::revision_label("not json"), None);
    }
}
