//! GitHub for codeb: webhook payload types, `X-Hub-Signature-256` verification, and the
//! [`Intent`] a delivery turns into. Pure: no I/O, no clock, no async.
//!
//! - [`signature`]: [`WebhookSecret`], [`sign`] and [`verify`] (HMAC-SHA256 over the raw body,
//!   compared in constant time; any of several secrets may match, for rotation).
//! - [`events`]: serde types for the few payload fields codeb reads; everything else is
//!   tolerated and skipped.
//! - [`intent`]: [`interpret`] / [`intents`]: event name + raw body → what to do.

pub mod events;
pub mod intent;
pub mod signature;

pub use intent::{EventError, Interpretation, SUPPORTED_EVENTS, image_key, intents, interpret};
pub use signature::{SignatureError, WebhookSecret, sign, verify};

/// Header names GitHub sends with every delivery.
pub mod headers {
    /// `sha256=<hex HMAC-SHA256 of the body>`.
    pub const SIGNATURE_256: &str = "x-hub-signature-256";
    /// The legacy `sha1=<hex>` signature; codeb never accepts it alone.
    pub const SIGNATURE_SHA1: &str = "x-hub-signature";
    /// The event name (`pull_request`, `ping`, ...).
    pub const EVENT: &str = "x-github-event";
    /// A GUID unique per delivery; a redelivery repeats it.
    pub const DELIVERY: &str = "x-github-delivery";
    /// The id of the webhook that sent the delivery.
    pub const HOOK_ID: &str = "x-github-hook-id";
}

/// GitHub refuses to send payloads above 25 MB; nothing larger is a genuine delivery.
pub const MAX_PAYLOAD_BYTES: usize = 25 * 1024 * 1024;

/// The body cap of the intake: 1 MiB. The events codeb acts on (`pull_request`, `package`,
/// `registry_package`, `workflow_run`) are at most 32 KB in GitHub's example corpus
/// (`tests/corpora/github-webhooks`, measured by a test); what makes real ones bigger is the
/// pull request's body (at most 65,536 characters, up to 6 bytes each once JSON-escaped:
/// 384 KiB) and its labels. 1 MiB holds that with room, and bounds what a client can make the
/// daemon buffer to 1 MiB per request in flight.
pub const MAX_ACTED_ON_PAYLOAD_BYTES: usize = 1024 * 1024;

/// What a webhook delivery asks the daemon to do.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Intent {
    /// Create or refresh the preview of a pull request.
    EnsurePreview {
        /// `owner/name`.
        repo: String,
        pr: u64,
        head_sha: String,
        /// The head branch lives in another repository (a fork).
        fork: bool,
        labels: Vec<String>,
        /// Set when a published image triggered it (tag `pr-<N>`).
        image_tag: Option<String>,
        /// The delivery is a maintainer adding the approve label: it approves a fork's
        /// preview of `head_sha` (and of no later commit).
        #[serde(default)]
        approves: bool,
    },
    /// Tear the preview of a pull request down.
    DestroyPreview { repo: String, pr: u64 },
    /// The reconciler found the preview idle past its TTL (or its pull request closed): run
    /// in the pull request's queue, it checks again and removes the preview if that still
    /// holds.
    ExpirePreview { repo: String, pr: u64 },
    /// Pull an image so that the self-hosted runner's deploy finds it locally.
    PullImage { image: String },
}

impl Intent {
    /// `ensure_preview`, `destroy_preview`, `expire_preview` or `pull_image` (the serde tag).
    pub fn kind(&self) -> &'static str {
        match self {
            Intent::EnsurePreview { .. } => "ensure_preview",
            Intent::DestroyPreview { .. } => "destroy_preview",
            Intent::ExpirePreview { .. } => "expire_preview",
            Intent::PullImage { .. } => "pull_image",
        }
    }

    /// The serialisation key: work with the same key runs in order, one at a time.
    /// `<owner/name>#<pr>` for preview work, `image:<reference>` for pulls.
    pub fn key(&self) -> String {
        match self {
            Intent::EnsurePreview { repo, pr, .. }
            | Intent::DestroyPreview { repo, pr }
            | Intent::ExpirePreview { repo, pr } => format!("{repo}#{pr}"),
            Intent::PullImage { image } => image_key(image),
        }
    }

    /// The repository and pull request this intent is about, if any.
    pub fn pull_request(&self) -> Option<(&str, u64)> {
        match self {
            Intent::EnsurePreview { repo, pr, .. }
            | Intent::DestroyPreview { repo, pr }
            | Intent::ExpirePreview { repo, pr } => Some((repo, *pr)),
            Intent::PullImage { .. } => None,
        }
    }
}
