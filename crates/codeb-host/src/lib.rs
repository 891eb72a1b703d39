//! codeb's contact with the local host, synchronous and dependency-light: reading and writing
//! the port manifest (exclusive lock, atomic replace) and reading the kernel's TCP listener
//! tables to see which ports are in use and by whom, and lock files nobody else can redirect. No network, no child processes.

pub mod atomic;
pub mod listeners;
pub mod lockfile;
pub mod store;

pub use listeners::HostPorts;
pub use store::{AllocateError, ManifestStore, StoreError};
