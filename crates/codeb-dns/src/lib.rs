//! Domains for `we domain`: [`name`] parses and normalises a host name (IDN to punycode,
//! labels, wildcards, underscores) and finds the managed zone it lies in; [`pdns`] is a
//! client of PowerDNS Authoritative's HTTP API (rrsets replaced with `changetype: REPLACE`,
//! canonical names with the trailing dot, `X-API-Key`); [`cert`] reads the expiry of the
//! certificate a TLS listener serves for a name.
//!
//! No process is spawned and nothing is served; the daemon's `api/domain.rs` uses both.

pub mod cert;
pub mod name;
pub mod pdns;

pub use name::{DomainName, NameError};
pub use pdns::{Pdns, PdnsError};
