//! `we domain`: the requests and answers of `/api/v1/domains` (see the endpoint table in the
//! crate docs).

use serde::{Deserialize, Serialize};

/// `POST /api/v1/domains`: DNS records for `domain` (in PowerDNS) and an HTTPS route (in
/// Caddy) to `project`'s production port. Setting up what is already there is a no-op.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainSetup {
    pub project: String,
    /// A host name in a managed zone; IDNs are converted to punycode, uppercase lowered.
    pub domain: String,
}

/// One domain in the registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Domain {
    /// The A-label form (`xn--...` for IDNs), lowercase, no trailing dot.
    pub domain: String,
    pub project: String,
    /// The managed zone the records are in.
    pub zone: String,
    /// The addresses its A/AAAA records hold.
    pub addresses: Vec<String>,
    /// The loopback port its Caddy route proxies to (the project's production port).
    pub upstream_port: u16,
    /// The Caddy route's `@id`.
    pub route_id: String,
    pub created_ms: i64,
    pub created_by: String,
}

/// The answer of a setup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainSetupResult {
    pub domain: Domain,
    /// False when everything was in place already (a no-op).
    pub changed: bool,
    /// What was done, step by step (`dns: wrote A 203.0.113.10`, `route: added`).
    pub steps: Vec<String>,
}

/// `GET /api/v1/domains`: a domain with what PowerDNS and Caddy say now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainStatus {
    #[serde(flatten)]
    pub domain: Domain,
    /// `ok` (PowerDNS answers the registered addresses), `missing`, `differs: ...` or
    /// `error: ...`.
    pub dns: String,
    /// What PowerDNS answers (A and AAAA contents).
    pub dns_answer: Vec<String>,
    /// `present`, `missing` or `error: ...`.
    pub route: String,
    /// The certificate served for the name: its expiry (Unix ms), when a TLS handshake
    /// with the name on the HTTPS listener succeeded.
    pub cert_expires_ms: Option<i64>,
    /// `ok`, or why there is no expiry (`no certificate yet: ...`).
    pub cert: String,
}

/// `GET /api/v1/domains/zones`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Zone {
    /// The zone (no trailing dot).
    pub name: String,
    /// Whether PowerDNS holds the zone (`false` with `error` set when it cannot be asked).
    pub in_pdns: bool,
    /// The zone's SOA serial in PowerDNS.
    pub serial: Option<u64>,
    /// Whether preview domains (`pr-<N>.<zone>`) get records in it.
    pub previews: bool,
    pub domains: usize,
    pub error: Option<String>,
}

/// `DELETE /api/v1/domains/{domain}?project=P`: `project`, when given, must own it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainRemoveQuery {
    pub project: Option<String>,
}

/// The answer of a remove.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainRemoved {
    pub domain: Domain,
    pub steps: Vec<String>,
}
