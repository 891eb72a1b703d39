//! Provisioning of a project's data stores on the storage server, for `we workflow init`:
//! for production and for staging each, a PostgreSQL role (`<project>_user`,
//! `<project>_staging_user`: LOGIN only, no superuser, CREATEDB or CREATEROLE) with a
//! generated password owning one database (`<project>_db`, `<project>_staging_db`;
//! `CONNECT` revoked from `PUBLIC`), and a Redis ACL user (`<project>`,
//! `<project>.staging`) limited to its key prefix with no admin or dangerous commands.
//!
//! - [`names`]: the names derived from a project name, checked against PostgreSQL's and
//!   Redis' limits before anything is sent.
//! - [`pg`]: tokio-postgres on an admin URL. Identifiers are validated (`[a-z0-9_]`) and then
//!   quoted by PostgreSQL itself (`format('%I')`), so no name is ever spliced into SQL
//!   unquoted; passwords travel only as SCRAM-SHA-256 verifiers computed here. Everything
//!   codeb creates carries the marker comment `codeb:<project>`; a role or database of the
//!   same name without it is someone else's and is refused.
//! - [`redis`]: the `redis` crate on an admin URL: ACL support (`ACL WHOAMI`, `ACL CAT`),
//!   users (`ACL GETUSER`/`SETUSER`/`DELUSER`), the password sent only as its SHA-256.
//! - [`preview`]: a pull request preview's own role, database (the staging schema and the
//!   repository's seed, run as that role) and ACL user; removal and the list of what exists.
//! - [`secret`]: passwords and keys from the OS CSPRNG (256 bits, URL-safe base64).
//!
//! Every operation is idempotent (create if absent, recognise what is codeb's), so a caller
//! that records its plan first can re-run it after any interruption.

pub mod names;
pub mod pg;
pub mod preview;
pub mod redis;
pub mod secret;

pub use names::{NameError, Names, PreviewNames};
pub use secret::generate;

/// The marker codeb puts on what it made for `project` (a PostgreSQL `COMMENT`).
pub fn marker(project: &str) -> String {
    format!("codeb:{project}")
}
