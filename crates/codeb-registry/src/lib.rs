//! Image references and their content digests: this crate owns parsing and validating an image
//! reference (`ghcr.io/org/app:v1`), choosing registry credentials, and asking the registry,
//! through the OCI distribution API, which manifest digest a tag points at, so that a deploy can
//! pin `Image=<registry>/<repository>@sha256:...` instead of a tag that may move.
//!
//! ```no_run
//! # async fn demo() -> Result<(), codeb_registry::RegistryError> {
//! use codeb_registry::{Auth, ImageRef, Resolver};
//! let image = ImageRef::parse("ghcr.io/org/app:v1")?;
//! let resolved = Resolver::new().resolve(&image, &Auth::from_env(&image)).await?;
//! let pinned = image.pinned(&resolved.digest); // ghcr.io/org/app@sha256:...
//! # let _ = pinned; Ok(()) }
//! ```
//!
//! Plain HTTP is used only for loopback registries (`127.0.0.0/8`, `localhost`, `[::1]`); every
//! other registry is reached over HTTPS.

mod auth;
mod error;
mod reference;
mod resolve;

pub use auth::{Auth, GHCR, TOKEN_USERNAME};
pub use error::RegistryError;
pub use reference::{Digest, ImageRef};
pub use resolve::{Resolved, Resolver};
