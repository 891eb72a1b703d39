//! The pure core of codeb: validated names, environments and their port ranges, and the port
//! manifest (parse, validate, allocate, edit). Nothing here does I/O: callers read and write
//! files, look at the host and talk to networks, then hand the facts to these functions.

pub mod manifest;
pub mod names;
pub mod ports;
pub mod vars;

pub use manifest::{Manifest, Problem};
pub use names::{Environment, NameError, ProjectName};
pub use ports::{PortRange, Reserved};
