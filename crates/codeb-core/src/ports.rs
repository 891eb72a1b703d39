//! Port ranges per environment and the ports that are always reserved.

use crate::names::Environment;
use std::fmt;

/// An inclusive range of TCP ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub start: u16,
    pub end: u16,
}

impl PortRange {
    pub const fn new(start: u16, end: u16) -> Self {
        Self { start, end }
    }
    pub fn contains(self, port: u16) -> bool {
        (self.start..=self.end).contains(&port)
    }
    pub fn iter(self) -> impl Iterator<Item = u16> {
        self.start..=self.end
    }
    pub fn len(self) -> usize {
        usize::from(self.end - self.start) + 1
    }
    pub fn is_empty(self) -> bool {
        false
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}

/// System services (databases, internal APIs). Never allocated to apps.
pub const SYSTEM: PortRange = PortRange::new(1, 3999);
pub const PRODUCTION: PortRange = PortRange::new(4000, 4499);
pub const STAGING: PortRange = PortRange::new(4500, 4999);
pub const PREVIEW: PortRange = PortRange::new(5000, 5999);

impl Environment {
    /// The port range this environment's public (manifest) ports come from.
    pub fn range(self) -> PortRange {
        match self {
            Environment::Production => PRODUCTION,
            Environment::Staging => STAGING,
            Environment::Preview => PREVIEW,
        }
    }
}

/// A port that no app may take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reserved {
    pub port: u16,
    pub name: String,
}

/// Ports reserved on every codeb host, whether or not the manifest lists them.
pub const ALWAYS_RESERVED: [(u16, &str); 4] = [
    (3000, "nextjs-default"),
    (3102, "ssot-registry-api"),
    (3103, "domain-manager-api"),
    (5432, "postgresql"),
];

/// Internal ports of the two blue-green slots behind a public manifest port.
///
/// The public port `P` (4000-5999) is where Caddy listens; the slots are `10000 + P` (blue)
/// and `20000 + P` (green). Both stay below the kernel's ephemeral range (32768+) and outside
/// every manifest range, so they never collide with an allocated port.
pub fn slot_ports(public: u16) -> Option<(u16, u16)> {
    let blue = public.checked_add(10_000)?;
    let green = public.checked_add(20_000)?;
    Some((blue, green))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_do_not_overlap() {
        assert!(!PRODUCTION.contains(STAGING.start));
        assert!(!STAGING.contains(PREVIEW.start));
        assert_eq!(PREVIEW.len(), 1000);
    }

    #[test]
    fn slots_stay_outside_manifest_ranges() {
        for env in Environment::ALL {
            for p in env.range().iter() {
                let (b, g) = slot_ports(p).expect("slot ports fit in u16");
                assert!(b > PREVIEW.end && g > b && g < 32768);
            }
        }
    }
}
