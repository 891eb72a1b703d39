//! Which podman versions' Quadlet generators accept each `[Container]` key, and the rewrite of a
//! unit for a podman that lacks some of them.
//!
//! podman's generator skips a whole unit when it meets a key it does not know ("unsupported
//! key"), and `systemctl start` then says the unit does not exist. Quadlet gained keys release
//! by release, so a unit that podman 5.8 runs is no unit at all for podman 5.4 (Debian 13).
//!
//! The table is what podman's own generators say, not what its documentation says: it is
//! checked against each generator in [`CHECKED_GENERATORS`] by
//! `crates/codeb-quadlet/tests/generator.rs` (`scripts/setup` fetches them from Debian's podman
//! packages). A key's "since" is the oldest *checked* generator that accepts it: for the keys
//! podman 5.4 rejects that is 5.8 (they may have arrived in a release in between). Using the
//! checked version is the safe side: a 5.5–5.7 host gets the `PodmanArgs=` equivalent,
//! which every Quadlet podman accepts. A podman older than the oldest checked generator is
//! treated as that generator (codeb cannot check it; the deploy engine says so).

use std::cmp::Ordering;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use crate::container::{ContainerUnit, SUPPORTED_CONTAINER_KEYS};
use crate::error::{Location, QuadletError, VersionGap};
use crate::unit::UnitFile;

/// A podman version, `MAJOR.MINOR[.PATCH]`. Ordered numerically; a missing patch is 0.
#[derive(Debug, Clone, Copy)]
pub struct PodmanVersion {
    pub major: u32,
    pub minor: u32,
    /// `None` when only `MAJOR.MINOR` was given (it then also prints that way).
    pub patch: Option<u32>,
}

impl PodmanVersion {
    /// `MAJOR.MINOR`.
    pub const fn new(major: u32, minor: u32) -> Self {
        Self {
            major,
            minor,
            patch: None,
        }
    }

    fn key(&self) -> (u32, u32, u32) {
        (self.major, self.minor, self.patch.unwrap_or(0))
    }

    /// The same version without its patch level.
    pub fn minor_version(&self) -> Self {
        Self::new(self.major, self.minor)
    }
}

impl PartialEq for PodmanVersion {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for PodmanVersion {}

impl std::hash::Hash for PodmanVersion {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key().hash(state);
    }
}

impl Ord for PodmanVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(&other.key())
    }
}

impl PartialOrd for PodmanVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for PodmanVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.patch {
            Some(patch) => write!(f, "{}.{}.{patch}", self.major, self.minor),
            None => write!(f, "{}.{}", self.major, self.minor),
        }
    }
}

/// A version string that is not `MAJOR.MINOR[.PATCH][suffix]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a podman version: expected MAJOR.MINOR[.PATCH], for example 5.4 or 5.4.2")]
pub struct InvalidVersion(pub String);

impl FromStr for PodmanVersion {
    type Err = InvalidVersion;

    /// Reads `5.4`, `5.4.2`, `v5.4.2`, and versions with a suffix after the numbers
    /// (`5.8.6+ds1`, `5.6.0-dev`), as `podman version` prints them on distributions.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || InvalidVersion(s.to_string());
        let t = s.trim();
        let t = t.strip_prefix('v').unwrap_or(t);
        let numeric_end = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let mut parts = t[..numeric_end].split('.');
        let mut number = |required: bool| -> Result<Option<u32>, InvalidVersion> {
            match parts.next() {
                Some(p) if !p.is_empty() => p.parse().map(Some).map_err(|_| bad()),
                Some(_) => Err(bad()),
                None if required => Err(bad()),
                None => Ok(None),
            }
        };
        let major = number(true)?.ok_or_else(bad)?;
        let minor = number(true)?.ok_or_else(bad)?;
        let patch = number(false)?;
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(Self {
            major,
            minor,
            patch,
        })
    }
}

/// The podman generators the table below is checked against, oldest first (Debian 13's and
/// Debian unstable's podman at the time of writing).
pub const CHECKED_GENERATORS: &[PodmanVersion] =
    &[PodmanVersion::new(5, 4), PodmanVersion::new(5, 8)];

const OLDEST_CHECKED: PodmanVersion = PodmanVersion::new(5, 4);

/// The supported `[Container]` keys the oldest checked generator rejects, with the oldest
/// checked generator that accepts each. Every other supported key is accepted by all of
/// [`CHECKED_GENERATORS`].
const NEWER_KEYS: &[(&str, PodmanVersion)] = &[
    ("AppArmor", PodmanVersion::new(5, 8)),
    ("HttpProxy", PodmanVersion::new(5, 8)),
    ("Memory", PodmanVersion::new(5, 8)),
    ("Retry", PodmanVersion::new(5, 8)),
    ("RetryDelay", PodmanVersion::new(5, 8)),
];

/// Keys whose whole meaning is `podman run` flags, so that `PodmanArgs=` with the same flags
/// is an exact equivalent on a podman whose generator lacks the key (or mistranslates it).
const PODMAN_ARGS_EQUIVALENT: &[&str] = &[
    "AppArmor",
    "Entrypoint",
    "Environment",
    "HealthCmd",
    "HealthStartupCmd",
    "HttpProxy",
    "Memory",
    "Retry",
    "RetryDelay",
];

/// Values of supported keys that an older generator accepts but translates differently from
/// codeb (and from the newer generator), found by comparing the generators on podman's corpus:
/// (key, the oldest checked generator that agrees with codeb, what goes wrong, test).
type ValueTest = fn(&str) -> bool;
const VALUE_GAPS: &[(&str, PodmanVersion, &str, ValueTest)] = &[
    (
        "HealthCmd",
        PodmanVersion::new(5, 8),
        "with a value that ends in a double quote loses that quote",
        ends_with_quote,
    ),
    (
        "HealthStartupCmd",
        PodmanVersion::new(5, 8),
        "with a value that ends in a double quote loses that quote",
        ends_with_quote,
    ),
    (
        "Environment",
        PodmanVersion::new(5, 8),
        "with a NAME without =VALUE (take it from the host) is dropped",
        has_name_only,
    ),
    (
        "Entrypoint",
        PodmanVersion::new(5, 8),
        "with an empty value (clear the image's entrypoint) is dropped",
        str::is_empty,
    ),
];

fn ends_with_quote(v: &str) -> bool {
    v.trim_end().ends_with('"')
}

fn has_name_only(v: &str) -> bool {
    crate::split::split_words(v, crate::split::SplitMode::Args)
        .is_ok_and(|words| words.iter().any(|w| !w.contains('=')))
}

/// Why podman `version`'s generator would not run `entry` as codeb does: (problem, the
/// version from which it does).
fn gap(entry: &crate::unit::Entry, version: PodmanVersion) -> Option<(String, PodmanVersion)> {
    let v = version.max(OLDEST_CHECKED);
    let key = entry.key();
    match accepted_since(key) {
        Some(since) if since > v => {
            return Some(("is not a known [Container] key".to_string(), since));
        }
        None => return None,
        Some(_) => {}
    }
    VALUE_GAPS
        .iter()
        .find(|(k, since, _, test)| *k == key && v < *since && test(entry.value()))
        .map(|(_, since, problem, _)| ((*problem).to_string(), *since))
}

/// The oldest checked podman whose generator accepts `key` in `[Container]`; `None` for a key
/// this crate does not translate.
pub fn accepted_since(key: &str) -> Option<PodmanVersion> {
    if !SUPPORTED_CONTAINER_KEYS.contains(&key) {
        return None;
    }
    Some(
        NEWER_KEYS
            .iter()
            .find(|(k, _)| *k == key)
            .map_or(OLDEST_CHECKED, |(_, v)| *v),
    )
}

/// Whether podman `version`'s generator accepts `key` (versions older than the oldest checked
/// generator are taken as that generator).
pub fn accepts(key: &str, version: PodmanVersion) -> bool {
    accepted_since(key).is_some_and(|since| since <= version.max(OLDEST_CHECKED))
}

/// The supported keys that some checked generator rejects, with the version that accepts them.
pub fn newer_keys() -> impl Iterator<Item = (&'static str, PodmanVersion)> {
    NEWER_KEYS.iter().copied()
}

/// Whether `key` can be written as `PodmanArgs=` for a podman whose generator lacks it.
pub fn has_podman_args_equivalent(key: &str) -> bool {
    PODMAN_ARGS_EQUIVALENT.contains(&key)
}

/// One line for humans: which podman versions accept `key`.
pub fn describe(key: &str) -> String {
    match accepted_since(key) {
        None => format!("{key}= is not a [Container] key codeb translates"),
        Some(since) if since == OLDEST_CHECKED => format!(
            "{key}= is accepted by podman {OLDEST_CHECKED} and later (every checked generator: {})",
            checked_list()
        ),
        Some(since) => {
            let rejecting: Vec<String> = CHECKED_GENERATORS
                .iter()
                .filter(|v| **v < since)
                .map(ToString::to_string)
                .collect();
            let equivalent = if has_podman_args_equivalent(key) {
                "; older podman gets the same flags through PodmanArgs="
            } else {
                ""
            };
            format!(
                "{key}= is accepted by podman {since} and later; podman {} rejects it{equivalent}",
                rejecting.join(", ")
            )
        }
    }
}

fn checked_list() -> String {
    CHECKED_GENERATORS
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `PodmanArgs=` flags equivalent to the effective assignments of `key` in `unit`'s
/// `[Container]` section, as this crate translates them.
fn equivalent_flags(unit: &UnitFile, key: &str) -> Result<Vec<String>, QuadletError> {
    let mut text = String::from("[Container]\nImage=localhost/codeb-compat-probe\n");
    if let Some(section) = unit.section("Container") {
        for entry in section.entries().iter().filter(|e| e.key() == key) {
            text.push_str(&format!("{key}={}\n", entry.value()));
        }
    }
    let probe = ContainerUnit::parse(unit.path(), &text)?;
    let mut args = probe.podman_run_args();
    args.pop(); // the probe's image
    Ok(args)
}

/// Quotes one argument for `PodmanArgs=` (systemd `Exec=`-style splitting, C escapes).
fn quote_arg(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_./:=,@+-%".contains(c));
    if plain {
        return arg.to_string();
    }
    let mut out = String::from("\"");
    for c in arg.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn needs_newer(
    location: &Location,
    key: &str,
    (problem, since): (String, PodmanVersion),
    version: PodmanVersion,
    fix: impl Into<String>,
) -> QuadletError {
    QuadletError::NeedsNewerPodman(Box::new(VersionGap {
        location: location.clone(),
        key: key.to_string(),
        problem,
        version: version.to_string(),
        since: since.to_string(),
        fix: fix.into(),
    }))
}

impl ContainerUnit {
    /// Refuses the unit when podman `version`'s generator would reject one of its
    /// `[Container]` keys, naming the first such key, the versions that accept it and the fix.
    pub fn check_podman_version(&self, version: PodmanVersion) -> Result<(), QuadletError> {
        let Some(section) = self.section("Container") else {
            return Ok(());
        };
        for entry in section.entries() {
            let key = entry.key();
            let Some(why) = gap(entry, version) else {
                continue;
            };
            let fix = if has_podman_args_equivalent(key) {
                let flags = equivalent_flags(self.unit(), key)?;
                let line: Vec<String> = flags.iter().map(|a| quote_arg(a)).collect();
                format!("write PodmanArgs={} instead", line.join(" "))
            } else {
                "remove it or upgrade podman".to_string()
            };
            return Err(needs_newer(entry.location(), key, why, version, fix));
        }
        Ok(())
    }
}

/// A unit rewritten for one podman version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lowered {
    /// The unit text to write.
    pub text: String,
    /// The keys that became `PodmanArgs=`, in order of first appearance.
    pub rewritten: Vec<String>,
}

/// Rewrites unit `text` (named `path`, drop-ins are not read) so that podman `version`'s
/// generator runs it as codeb does: each `[Container]` key it lacks (or whose value it
/// mistranslates) becomes the equivalent `PodmanArgs=`
/// line (placed after the section's last line, so that an earlier `PodmanArgs=` reset cannot
/// clear it); a key without an equivalent is refused by name. Text the version accepts as it
/// is comes back unchanged.
pub fn lower_for(path: &Path, text: &str, version: PodmanVersion) -> Result<Lowered, QuadletError> {
    let unit = UnitFile::parse(path, text)?;
    let Some(section) = unit.section("Container") else {
        return Ok(Lowered {
            text: text.to_string(),
            rewritten: Vec::new(),
        });
    };
    let mut rewritten: Vec<String> = Vec::new();
    for entry in section.entries() {
        let key = entry.key();
        if rewritten.iter().any(|k| k == key) {
            continue;
        }
        let Some(why) = gap(entry, version) else {
            continue;
        };
        if !has_podman_args_equivalent(key) {
            return Err(needs_newer(
                entry.location(),
                key,
                why,
                version,
                "codeb knows no PodmanArgs= equivalent for it: remove it or upgrade podman",
            ));
        }
        rewritten.push(key.to_string());
    }
    if rewritten.is_empty() {
        return Ok(Lowered {
            text: text.to_string(),
            rewritten,
        });
    }

    let lines: Vec<&str> = text.lines().collect();
    let continued = |i: usize| lines.get(i).is_some_and(|l| l.trim_end().ends_with('\\'));
    let mut drop = vec![false; lines.len()];
    let mut flags = Vec::new();
    for key in &rewritten {
        for entry in section.entries().iter().filter(|e| e.key() == key) {
            let Some(line) = entry.location().line else {
                continue;
            };
            if continued(line - 1) {
                return Err(QuadletError::Invalid {
                    location: entry.location().clone(),
                    message: format!(
                        "{key}= continues on the next line; write it on one line so that codeb can rewrite it for podman {version}"
                    ),
                });
            }
            drop[line - 1] = true;
        }
        flags.extend(equivalent_flags(&unit, key)?);
    }
    // After the section's last line that stays (and after its continuation lines).
    let mut anchor = section
        .entries()
        .iter()
        .filter_map(|e| e.location().line)
        .filter(|l| !drop[l - 1])
        .max()
        .map_or_else(
            || {
                lines
                    .iter()
                    .position(|l| l.trim() == "[Container]")
                    .unwrap_or(0)
            },
            |l| l - 1,
        );
    while continued(anchor) && anchor + 1 < lines.len() {
        anchor += 1;
    }

    let mut out = String::with_capacity(text.len() + 64);
    for (i, line) in lines.iter().enumerate() {
        if !drop[i] {
            out.push_str(line);
            out.push('\n');
        }
        if i == anchor && !flags.is_empty() {
            let quoted: Vec<String> = flags.iter().map(|a| quote_arg(a)).collect();
            out.push_str(&format!(
                "# {} written as PodmanArgs= for podman {version} (its Quadlet generator lacks or mistranslates them)\n",
                rewritten.join(", ")
            ));
            out.push_str(&format!("PodmanArgs={}\n", quoted.join(" ")));
        }
    }
    Ok(Lowered {
        text: out,
        rewritten,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::split::{SplitMode, split_words};

    fn v(s: &str) -> PodmanVersion {
        s.parse().expect("version")
    }

    #[test]
    fn versions_parse_like_podman_prints_them_and_order_numerically() {
        assert_eq!(
            v("5.4.2"),
            PodmanVersion {
                major: 5,
                minor: 4,
                patch: Some(2)
            }
        );
        assert_eq!(v("v5.8.6+ds1").to_string(), "5.8.6");
        assert_eq!(v("5.6.0-dev").to_string(), "5.6.0");
        assert_eq!(v("5.10").to_string(), "5.10");
        assert!(v("5.10") > v("5.9.3"));
        assert!(v("5.4") == v("5.4.0"));
        for bad in ["", "5", "five.4", "5..4", "5.4.2.1", "x5.4"] {
            assert!(bad.parse::<PodmanVersion>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn newer_keys_are_refused_for_podman_5_4_with_the_podman_args_fix() {
        let unit = ContainerUnit::parse(
            "/x/app.container",
            "[Container]\nImage=localhost/app:1\nMemory=512m\n",
        )
        .expect("valid");
        let err = unit
            .check_podman_version(v("5.4.2"))
            .expect_err("5.4 lacks Memory");
        assert_eq!(err.key(), Some("Memory"));
        let msg = err.to_string();
        assert!(msg.contains("podman 5.4.2") && msg.contains("5.8"), "{msg}");
        assert!(msg.contains("PodmanArgs=--memory 512m"), "{msg}");
        unit.check_podman_version(v("5.8.6"))
            .expect("5.8 has Memory");
        unit.check_podman_version(v("6.0"))
            .expect("later versions too");
    }

    #[test]
    fn lowering_rewrites_to_podman_args_with_the_same_flags() {
        let text = "[Container]\nImage=localhost/app:1\nMemory=1g\nHttpProxy=false\nAppArmor=my profile\nMemory=512m\nPodmanArgs=\nLabel=a=b\n\n[Service]\nRestart=always\n";
        let original = ContainerUnit::parse("/x/app.container", text).expect("valid");
        let lowered = lower_for(Path::new("/x/app.container"), text, v("5.4.2")).expect("lowers");
        assert_eq!(lowered.rewritten, ["Memory", "HttpProxy", "AppArmor"]);
        let unit = ContainerUnit::parse("/x/app.container", &lowered.text).expect("valid");
        unit.check_podman_version(v("5.4.2"))
            .expect("5.4 accepts the rewrite");
        let mut a = original.podman_run_args();
        let mut b = unit.podman_run_args();
        a.sort();
        b.sort();
        assert_eq!(a, b, "{}", lowered.text);
        assert!(lowered.text.contains("[Service]\nRestart=always\n"));
        // Nothing to do for 5.8.
        let same = lower_for(Path::new("/x/app.container"), text, v("5.8")).expect("lowers");
        assert_eq!(same.text, text);
        assert!(same.rewritten.is_empty());
    }

    #[test]
    fn a_health_cmd_ending_in_a_quote_goes_through_podman_args_for_podman_5_4() {
        let text = "[Container]\nImage=localhost/app:1\nHealthCmd=node -e \"process.exit(0)\"\n";
        let unit = ContainerUnit::parse("/x/app.container", text).expect("valid");
        let err = unit
            .check_podman_version(v("5.4.2"))
            .expect_err("5.4 drops the quote");
        assert_eq!(err.key(), Some("HealthCmd"), "{err}");
        let lowered = lower_for(Path::new("/x/app.container"), text, v("5.4.2")).expect("lowers");
        assert_eq!(lowered.rewritten, ["HealthCmd"]);
        assert!(
            lowered
                .text
                .contains("PodmanArgs=--health-cmd \"node -e \\\"process.exit(0)\\\"\"\n"),
            "{}",
            lowered.text
        );
        unit.check_podman_version(v("5.8")).expect("5.8 keeps it");
    }

    #[test]
    fn quoted_podman_args_split_back_to_the_same_words() {
        for arg in [
            "plain",
            "with space",
            "quote\"d",
            "back\\slash",
            "tab\tnl\n",
            "%h/x",
            "",
        ] {
            let words = split_words(&quote_arg(arg), SplitMode::Args).expect("splits");
            assert_eq!(words, [arg], "{arg:?} -> {}", quote_arg(arg));
        }
    }

    #[test]
    fn every_supported_key_has_a_version_and_unknown_keys_have_none() {
        for key in SUPPORTED_CONTAINER_KEYS {
            assert!(accepted_since(key).is_some(), "{key}");
        }
        assert_eq!(accepted_since("Notify"), None);
        assert!(
            describe("Memory").contains("podman 5.4 rejects it"),
            "{}",
            describe("Memory")
        );
        assert!(
            describe("Image").contains("5.4 and later"),
            "{}",
            describe("Image")
        );
        // A podman older than every checked generator is taken as the oldest one.
        assert!(accepts("Image", v("4.9.3")));
        assert!(!accepts("Memory", v("4.9.3")));
    }
}
