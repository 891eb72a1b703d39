//! `codeb-workflow-gen`: renders a project's deploy workflow (`.github/workflows/<project>-
//! deploy.yml`) from Tera templates, secure by default, and keeps it honest on disk.
//!
//! - [`TemplateSet`]: the templates (`templates/workflows/` of the repository, embedded in the
//!   binary; a directory may override any of its files), the type table (`types.toml`) and
//!   the pin table (`pins.toml`), all parsed and checked when loaded.
//! - [`Options`] → [`render`] → the workflow text, with a header that records the sha256 of
//!   the body so that a later run can tell a hand edit from a stale generated file
//!   ([`inspect`]).
//! - [`cli::main`]: the binary (exit codes 0 written or up to date, 1 the file on disk is not
//!   what would be generated and was left alone, 2 usage, template or I/O error).
//!
//! - [`doctor`]: reads the repository's settings through GitHub's REST API and says whether a
//!   fork's pull request could reach a self-hosted runner, and which setting closes it.
//!
//! The library does no output and no I/O apart from reading an override template directory
//! and the doctor's GitHub API calls.

pub mod cli;
pub mod doctor;
mod options;
mod render;
mod stamp;
mod templates;

pub use codeb_core::ProjectName;
pub use options::{ActionsSource, DEFAULT_ENVIRONMENTS, Options, OptionsError};
pub use render::{RenderError, render, variant_matrix};
pub use stamp::{OnDisk, body_hash, inspect};
pub use templates::{TemplateError, TemplateSet};
