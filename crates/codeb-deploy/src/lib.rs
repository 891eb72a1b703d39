//! The deploy engine behind `codeb-quadlet-update` and the preview daemon: resolve
//! the image tag to a digest, render a digest-pinned Quadlet `.container` unit, start it,
//! prove it healthy, switch traffic to it through Caddy, and keep a history to roll back to.
//!
//! The public port `P` from the manifest belongs to a Caddy front that proxies to one of two
//! slots, blue (`10000 + P`) and green (`20000 + P`); see ARCHITECTURE.md. [`restore`] rebuilds
//! the fronts and preview routes from `.codeb/` when Caddy lost them.

mod caddy;
pub mod compat;
mod engine;
mod error;
pub mod hostcheck;
pub mod restore;
mod state;
mod template;

pub use caddy::{AdminAddress, BalancerPolicy, Caddy, UpstreamView, balancer_json};
pub use engine::{
    DEFAULT_HEALTH_CMD, DeployOptions, DeployReport, Engine, Outcome, PreviewContainer, Progress,
    RollbackOptions, RuntimeChoice, Strategy, TargetLocation,
};
pub use error::DeployError;
pub use restore::{HostRoute, RestoreReport, restore_routes};
pub use state::{
    Active, Front, History, KEEP as KEEP_RELEASES, Release, ReleaseOutcome, Settings, Slot,
    TargetLock,
};
pub use template::{KeyValue, UnitContext, render_unit};
