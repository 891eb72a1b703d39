//! Image references (`registry/repository[:tag][@sha256:...]`) and content digests.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

use crate::RegistryError;

/// Longest `registry/repository` accepted, as in the distribution reference grammar.
const NAME_MAX_LEN: usize = 255;
/// Longest tag accepted (the grammar's `[\w][\w.-]{0,127}`).
const TAG_MAX_LEN: usize = 128;

/// A content digest: `sha256:` followed by 64 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    /// Validates `s` as `sha256:<64 lowercase hex digits>`.
    pub fn parse(s: &str) -> Result<Self, RegistryError> {
        let malformed = |problem: String| RegistryError::MalformedDigest {
            input: s.to_string(),
            problem,
        };
        let Some((algorithm, hex)) = s.split_once(':') else {
            return Err(malformed(
                "no algorithm prefix (expected sha256:...)".into(),
            ));
        };
        if algorithm != "sha256" {
            return Err(malformed(format!(
                "algorithm {algorithm:?} is not supported, only sha256"
            )));
        }
        if hex.len() != 64 {
            return Err(malformed(format!(
                "{} hex digits after sha256:, expected 64",
                hex.chars().count()
            )));
        }
        if let Some(bad) = hex.chars().find(|c| !matches!(c, '0'..='9' | 'a'..='f')) {
            return Err(malformed(format!("{bad:?} is not a lowercase hex digit")));
        }
        Ok(Self(s.to_string()))
    }

    /// The sha256 digest of `bytes`.
    pub fn of_bytes(bytes: &[u8]) -> Self {
        let hash = Sha256::digest(bytes);
        let mut s = String::with_capacity(7 + 64);
        s.push_str("sha256:");
        for byte in hash {
            s.push_str(&format!("{byte:02x}"));
        }
        Self(s)
    }

    /// The whole digest, `sha256:...`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The 64 hex digits, without the `sha256:` prefix.
    pub fn hex(&self) -> &str {
        self.0.strip_prefix("sha256:").unwrap_or(&self.0)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Digest {
    type Err = RegistryError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// A validated image reference with an explicit registry and a tag, a digest, or both.
///
/// `Display` prints it back as parsed: `registry/repository[:tag][@digest]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl ImageRef {
    /// Parses `registry/repository:tag`, `registry/repository@sha256:...` or
    /// `registry/repository:tag@sha256:...` (the digest then wins).
    ///
    /// The registry must be written out (`ghcr.io/org/app:v1`, `127.0.0.1:15000/org/app:v1`):
    /// `org/app:v1` is refused rather than read as Docker Hub. A tag or a digest is required:
    /// there is no implicit `:latest`.
    pub fn parse(s: &str) -> Result<Self, RegistryError> {
        let malformed = |problem: String| RegistryError::MalformedReference {
            input: s.to_string(),
            problem,
        };
        if s.is_empty() {
            return Err(malformed("the reference is empty".into()));
        }
        if let Some(c) = s.chars().find(|c| c.is_whitespace() || c.is_control()) {
            return Err(malformed(format!(
                "it contains {c:?}; an image reference has no spaces or control characters"
            )));
        }

        let (rest, digest) = match s.split_once('@') {
            Some((_, "")) => return Err(malformed("nothing follows '@'".into())),
            Some((rest, digest)) => {
                let digest = Digest::parse(digest).map_err(|e| match e {
                    RegistryError::MalformedDigest { problem, .. } => {
                        malformed(format!("bad digest {digest:?}: {problem}"))
                    }
                    other => other,
                })?;
                (rest, Some(digest))
            }
            None => (s, None),
        };

        // The tag is after the last ':' that follows the last '/' (a ':' before it is a port).
        let last_slash = rest.rfind('/');
        let tag_colon = rest
            .rfind(':')
            .filter(|&colon| last_slash.is_none_or(|slash| colon > slash));
        let (name, tag) = match tag_colon {
            Some(colon) => (&rest[..colon], Some(&rest[colon + 1..])),
            None => (rest, None),
        };
        if let Some(tag) = tag {
            check_tag(tag).map_err(malformed)?;
        }

        let (registry, repository) = match name.split_once('/') {
            Some((first, repository)) if looks_like_registry(first) => (first, repository),
            _ => {
                return Err(malformed(format!(
                    "it names no registry; write the registry explicitly, e.g. ghcr.io/{name} \
                     (docker.io is not assumed)"
                )));
            }
        };
        check_registry(registry).map_err(malformed)?;
        check_repository(repository).map_err(malformed)?;
        if name.len() > NAME_MAX_LEN {
            return Err(malformed(format!(
                "the name is {} characters long, the limit is {NAME_MAX_LEN}",
                name.len()
            )));
        }

        if tag.is_none() && digest.is_none() {
            return Err(malformed(
                "it has neither a tag nor a digest; add one (e.g. :v1 or @sha256:...), \
                 there is no implicit :latest"
                    .into(),
            ));
        }

        Ok(Self {
            registry: registry.to_string(),
            repository: repository.to_string(),
            tag: tag.map(str::to_string),
            digest,
        })
    }

    /// The registry host, with its port if one was given (`ghcr.io`, `127.0.0.1:15000`).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository path inside the registry (`org/app`).
    pub fn repository(&self) -> &str {
        &self.repository
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// `registry/repository@digest`: the reference a deploy pins.
    pub fn pinned(&self, digest: &Digest) -> String {
        format!("{}/{}@{}", self.registry, self.repository, digest)
    }

    /// Whether the registry is on this machine: `localhost`, `127.0.0.0/8` or `[::1]`,
    /// the only registries reached over plain HTTP.
    pub fn is_loopback(&self) -> bool {
        let host = self.host();
        if host.eq_ignore_ascii_case("localhost") {
            return true;
        }
        if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            return v6.parse::<Ipv6Addr>().is_ok_and(|ip| ip.is_loopback());
        }
        host.parse::<Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
    }

    /// The registry host without its port (`[::1]` keeps its brackets).
    pub(crate) fn host(&self) -> &str {
        registry_host(&self.registry)
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl FromStr for ImageRef {
    type Err = RegistryError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// The docker rule: a first path component is a registry when it has a '.' or a ':', is
/// `localhost`, or is a bracketed IPv6 address. (Docker also takes any component with an
/// uppercase letter as a host; here `Org/app:v1` is refused as naming no registry instead.)
fn looks_like_registry(first: &str) -> bool {
    first.contains('.')
        || first.contains(':')
        || first.starts_with('[')
        || first.eq_ignore_ascii_case("localhost")
}

fn registry_host(registry: &str) -> &str {
    if registry.starts_with('[') {
        match registry.find(']') {
            Some(end) => &registry[..=end],
            None => registry,
        }
    } else {
        registry.split_once(':').map_or(registry, |(host, _)| host)
    }
}

fn check_registry(registry: &str) -> Result<(), String> {
    let (host, port) = if let Some(inner) = registry.strip_prefix('[') {
        let Some((v6, after)) = inner.split_once(']') else {
            return Err(format!("registry {registry:?} has '[' without ']'"));
        };
        if v6.parse::<Ipv6Addr>().is_err() {
            return Err(format!(
                "registry {registry:?}: {v6:?} is not an IPv6 address"
            ));
        }
        let port = match after {
            "" => None,
            _ => match after.strip_prefix(':') {
                Some(port) => Some(port),
                None => {
                    return Err(format!(
                        "registry {registry:?}: unexpected {after:?} after ']'"
                    ));
                }
            },
        };
        (None, port)
    } else {
        match registry.split_once(':') {
            Some((host, port)) => (Some(host), Some(port)),
            None => (Some(registry), None),
        }
    };
    if let Some(host) = host {
        let valid_label = |label: &str| {
            !label.is_empty()
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        };
        if !host.split('.').all(valid_label) {
            return Err(format!(
                "registry host {host:?} is not a valid host name (letters, digits, '-' and '.')"
            ));
        }
    }
    if let Some(port) = port {
        let valid = !port.is_empty()
            && port.len() <= 5
            && port.chars().all(|c| c.is_ascii_digit())
            && port.parse::<u32>().is_ok_and(|p| (1..=65535).contains(&p));
        if !valid {
            return Err(format!(
                "registry port {port:?} is not a port number (1-65535)"
            ));
        }
    }
    Ok(())
}

/// Path components are `[a-z0-9]+` joined by `.`, `_`, `__` or runs of `-`.
fn check_repository(repository: &str) -> Result<(), String> {
    if repository.is_empty() {
        return Err("the repository path after the registry is empty".into());
    }
    if repository.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(format!(
            "repository {repository:?} has uppercase letters; repositories are lowercase \
             (write {:?})",
            repository.to_ascii_lowercase()
        ));
    }
    for component in repository.split('/') {
        if component.is_empty() {
            return Err(format!(
                "repository {repository:?} has an empty path component (a doubled or trailing '/')"
            ));
        }
        if component == "." || component == ".." {
            return Err(format!(
                "repository {repository:?} has a {component:?} path component"
            ));
        }
        if !valid_path_component(component) {
            return Err(format!(
                "repository path component {component:?} is invalid: use lowercase letters and \
                 digits, separated by '.', '_', '__' or '-'"
            ));
        }
    }
    Ok(())
}

fn valid_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let mut i = 0;
    // alnum+ ( separator alnum+ )*
    loop {
        let start = i;
        while i < bytes.len() && alnum(bytes[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == bytes.len() {
            return true;
        }
        let sep_start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let separator = &component[sep_start..i];
        let valid_separator =
            matches!(separator, "." | "_" | "__") || separator.chars().all(|c| c == '-');
        if !valid_separator {
            return false;
        }
    }
}

fn check_tag(tag: &str) -> Result<(), String> {
    if tag.is_empty() {
        return Err("the tag after ':' is empty".into());
    }
    if tag.len() > TAG_MAX_LEN {
        return Err(format!(
            "the tag is {} characters long, the limit is {TAG_MAX_LEN}",
            tag.len()
        ));
    }
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    if !tag.starts_with(word) {
        return Err(format!(
            "tag {tag:?} must start with a letter, digit or '_'"
        ));
    }
    if let Some(bad) = tag.chars().find(|&c| !(word(c) || c == '.' || c == '-')) {
        return Err(format!(
            "tag {tag:?} has {bad:?}; tags use letters, digits, '_', '.' and '-'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn accepted_references_round_trip() {
        let digest = format!("sha256:{HEX}");
        let cases = [
            "ghcr.io/org/app:v1".to_string(),
            "127.0.0.1:15000/org/app:sha-abc".to_string(),
            format!("ghcr.io/org/app@{digest}"),
            format!("ghcr.io/org/app:v1@{digest}"),
            "localhost/app:latest".to_string(),
            "localhost:8080/a/b/c:1.0.0-rc.1".to_string(),
            "[::1]:15000/org/app:v1".to_string(),
            "registry.example.com/my-org/my_app__x.y:_tag".to_string(),
            "docker.io/library/nginx:1.25".to_string(),
        ];
        for case in cases {
            let image = ImageRef::parse(&case).expect("a valid reference parses");
            assert_eq!(image.to_string(), case, "Display round-trips");
            let again: ImageRef = image.to_string().parse().expect("Display output parses");
            assert_eq!(again, image);
        }
    }

    #[test]
    fn parts() {
        let image = ImageRef::parse("127.0.0.1:15000/org/app:sha-abc").expect("valid");
        assert_eq!(image.registry(), "127.0.0.1:15000");
        assert_eq!(image.repository(), "org/app");
        assert_eq!(image.tag(), Some("sha-abc"));
        assert_eq!(image.digest(), None);
        assert_eq!(image.host(), "127.0.0.1");
        let digest = Digest::parse(&format!("sha256:{HEX}")).expect("valid digest");
        assert_eq!(
            image.pinned(&digest),
            format!("127.0.0.1:15000/org/app@sha256:{HEX}")
        );
        assert_eq!(digest.hex(), HEX);

        let both = ImageRef::parse(&format!("ghcr.io/org/app:v1@sha256:{HEX}")).expect("valid");
        assert_eq!(both.tag(), Some("v1"));
        assert_eq!(both.digest(), Some(&digest));
    }

    #[test]
    fn loopback() {
        let cases = [
            ("127.0.0.1:15000/org/app:v1", true),
            ("127.8.9.10/org/app:v1", true),
            ("localhost:15000/org/app:v1", true),
            ("LOCALHOST/org/app:v1", true),
            ("[::1]:15000/org/app:v1", true),
            ("[::1]/org/app:v1", true),
            ("ghcr.io/org/app:v1", false),
            ("128.0.0.1/org/app:v1", false),
            ("127.1/org/app:v1", false),
            ("localhost.example.com/org/app:v1", false),
            ("[::2]:15000/org/app:v1", false),
            ("10.0.0.1:5000/org/app:v1", false),
        ];
        for (input, expected) in cases {
            let image = ImageRef::parse(input).expect("valid reference");
            assert_eq!(image.is_loopback(), expected, "{input}");
        }
    }

    #[test]
    fn malformed_references_are_refused_with_the_reason() {
        let cases: &[(&str, &str)] = &[
            ("", "empty"),
            ("org/app:tag", "write the registry explicitly"),
            ("app:tag", "write the registry explicitly"),
            ("Org/app:tag", "write the registry explicitly"),
            ("ghcr.io/Org/app:v1", "lowercase"),
            ("ghcr.io/org/app :v1", "no spaces"),
            (" ghcr.io/org/app:v1", "no spaces"),
            ("ghcr.io/org/app:v1\n", "control"),
            ("ghcr.io/org/../app:v1", "\"..\""),
            ("ghcr.io/org/a..b:v1", "invalid"),
            ("ghcr.io/org/app:", "tag after ':' is empty"),
            ("ghcr.io/org/app", "neither a tag nor a digest"),
            ("ghcr.io/org/app@", "nothing follows '@'"),
            ("ghcr.io/org/app@sha256:abc", "expected 64"),
            ("ghcr.io/org/app@md5:abc", "only sha256"),
            ("ghcr.io/org/app@0123", "no algorithm"),
            ("ghcr.io//app:v1", "empty path component"),
            ("ghcr.io/org/app/:v1", "empty path component"),
            ("ghcr.io/:v1", "empty"),
            ("ghcr.io/org/-app:v1", "invalid"),
            ("ghcr.io/org/app_:v1", "invalid"),
            ("ghcr.io/org/app:-v1", "must start with"),
            ("ghcr.io/org/app:v1/x", "invalid"),
            ("ghcr.io/org/app:v+1", "'+'"),
            ("ghcr.io:99999/org/app:v1", "port"),
            ("ghcr.io:/org/app:v1", "port"),
            ("gh_cr.io/org/app:v1", "valid host name"),
            ("[::1/org/app:v1", "without ']'"),
            ("[fe80::zz]:1/org/app:v1", "IPv6"),
        ];
        for (input, needle) in cases {
            match ImageRef::parse(input) {
                Err(err @ RegistryError::MalformedReference { .. }) => {
                    let message = err.to_string();
                    assert!(
                        message.contains(needle),
                        "{input:?}: {message:?} should mention {needle:?}"
                    );
                    assert!(
                        message.contains(&format!("{input:?}")),
                        "names the input: {message}"
                    );
                }
                other => panic!("{input:?} should be a malformed reference, got {other:?}"),
            }
        }
        let long_tag = format!("ghcr.io/org/app:{}", "a".repeat(129));
        assert!(ImageRef::parse(&long_tag).is_err());
        let long_name = format!("ghcr.io/{}:v1", "a".repeat(250));
        assert!(ImageRef::parse(&long_name).is_err());
        let uppercase_digest = format!("ghcr.io/org/app@sha256:{}", HEX.to_uppercase());
        assert!(ImageRef::parse(&uppercase_digest).is_err());
    }

    #[test]
    fn digests() {
        assert_eq!(
            Digest::of_bytes(b"").as_str(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        for bad in [
            "",
            "sha256:",
            "sha256",
            HEX,
            &format!("sha512:{HEX}"),
            &format!("sha256:{}", HEX.to_uppercase()),
            &format!("sha256:{HEX}0"),
            &format!("sha256:{}g", &HEX[1..]),
            &format!("SHA256:{HEX}"),
        ] {
            match Digest::parse(bad) {
                Err(RegistryError::MalformedDigest { input, .. }) => assert_eq!(input, bad),
                other => panic!("{bad:?} should be refused, got {other:?}"),
            }
        }
    }
}
