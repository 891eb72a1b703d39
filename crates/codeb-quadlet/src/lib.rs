//! Quadlet `.container` units for codeb: this crate owns reading systemd unit-file syntax the way
//! podman's Quadlet generator reads it (sections, continuations, comments, repeated and reset
//! keys, drop-in directories) and turning a unit's `[Container]` section into the `podman run`
//! argument list with the meaning podman gives each key. `[Unit]`, `[Service]`, `[Install]` and
//! other sections are kept as data for the caller.
//!
//! It is pure: no processes, no network. Files are read only by the explicit `load` functions
//! ([`UnitFile::load`], [`ContainerUnit::load`]).
//!
//! [`ContainerUnit::podman_run_args`] leaves out the generator's systemd-only prefix (`--name`,
//! `--replace`, `--rm`, `--cgroups=split`, `--sdnotify=…`, `-d`); the caller runs
//! `podman run -d --name <name> <args…>` itself.
//!
//! Which podman versions' generators accept each `[Container]` key is in [`accepted_since`]
//! (checked against podman's own generators); [`lower_for`] rewrites a unit for an older
//! podman through `PodmanArgs=`.
//!
//! Anything it cannot translate faithfully is refused with an error naming the file, line and
//! key — an unknown key, a reference to another Quadlet unit, a systemd-only key — never
//! silently dropped.
//!
//! ```
//! use codeb_quadlet::ContainerUnit;
//!
//! let unit = ContainerUnit::parse(
//!     "/etc/containers/systemd/web.container",
//!     "[Container]\nImage=ghcr.io/acme/web:1\nPublishPort=127.0.0.1:4001:3000\n",
//! )?;
//! assert_eq!(
//!     unit.podman_run_args(),
//!     ["--publish", "127.0.0.1:4001:3000", "ghcr.io/acme/web:1"]
//! );
//! # Ok::<(), codeb_quadlet::QuadletError>(())
//! ```

mod compat;
mod container;
mod csv;
mod error;
mod port;
mod split;
mod unit;

pub use compat::{
    CHECKED_GENERATORS, InvalidVersion, Lowered, PodmanVersion, accepted_since, accepts, describe,
    has_podman_args_equivalent, lower_for, newer_keys,
};
pub use container::{ContainerUnit, SUPPORTED_CONTAINER_KEYS, UNIT_DEPENDENCY_KEYS, Warning};
pub use error::{Location, QuadletError, VersionGap};
pub use port::PortMapping;
pub use split::{SplitMode, split_words};
pub use unit::{Entry, Section, UnitFile, drop_in_dirs};
