//! Host names as codeb accepts them for `we domain`.
//!
//! The rules, checked in this order so that the message names the first thing wrong:
//! - surrounding whitespace and one trailing dot are dropped; the name is lowercased
//!   (`MyApp.Codeb.KR` is `myapp.codeb.kr`);
//! - wildcards (`*`) are refused: every name gets its own record, route and certificate;
//! - underscores are refused (they are not valid in host names; `_acme-challenge` and the
//!   like are not served by codeb);
//! - an internationalised name (any non-ASCII character) is converted to its punycode
//!   A-label form (`bücher.codeb.kr` is `xn--bcher-kva.codeb.kr`) with UTS #46 mapping
//!   (the `idna` crate), then held to the rules below; records, routes and certificates use the A-label; an ASCII label
//!   starting with `xn--` must decode;
//! - each label is 1-63 bytes (after punycode) of `[a-z0-9-]`, neither starting nor ending
//!   with `-`; the whole name is at most 253 bytes and has at least two labels.

use std::fmt;

/// A valid, normalised host name (ASCII, lowercase, no trailing dot).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DomainName(String);

/// Why a name is refused; the message names the input and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("domain name is empty; give a host name such as myapp.codeb.kr")]
    Empty,
    #[error(
        "domain {input:?} is a wildcard: wildcards are refused (each name gets its own record, route and certificate); set up each name, e.g. app.{rest}"
    )]
    Wildcard { input: String, rest: String },
    #[error(
        "domain {input:?} contains an underscore: host names allow only letters, digits and '-' (replace `_` with `-`)"
    )]
    Underscore { input: String },
    #[error("domain {input:?} is not a valid internationalised name ({why}); check its spelling")]
    Idn { input: String, why: String },
    #[error(
        "domain {input:?}: label {label:?} is {len} bytes; DNS labels are at most 63 bytes: shorten it"
    )]
    LabelTooLong {
        input: String,
        label: String,
        len: usize,
    },
    #[error("domain {input:?} has an empty label (two dots in a row, or a leading dot)")]
    EmptyLabel { input: String },
    #[error(
        "domain {input:?}: label {label:?} starts or ends with '-': labels must begin and end with a letter or digit"
    )]
    Dash { input: String, label: String },
    #[error(
        "domain {input:?}: label {label:?} has {ch:?}; host names allow only letters, digits and '-'"
    )]
    Char {
        input: String,
        label: String,
        ch: char,
    },
    #[error("domain {input:?} is {len} bytes; DNS names are at most 253")]
    TooLong { input: String, len: usize },
    #[error(
        "domain {input:?} has a single label; give a full name inside a managed zone, e.g. {input}.codeb.kr"
    )]
    SingleLabel { input: String },
}

impl DomainName {
    /// Parses and normalises `input` (see the module docs for the rules).
    pub fn parse(input: &str) -> Result<Self, NameError> {
        let shown: String = input.trim().chars().take(300).collect();
        let trimmed = input.trim();
        let trimmed = trimmed.strip_suffix('.').unwrap_or(trimmed);
        if trimmed.is_empty() {
            return Err(NameError::Empty);
        }
        if trimmed.contains('*') {
            let rest = trimmed
                .trim_start_matches('*')
                .trim_start_matches('.')
                .to_ascii_lowercase();
            return Err(NameError::Wildcard { input: shown, rest });
        }
        if trimmed.contains('_') {
            return Err(NameError::Underscore { input: shown });
        }
        let ascii = if trimmed.is_ascii() {
            trimmed.to_ascii_lowercase()
        } else {
            // UTS #46 mapping and punycode; the length, character and dash rules are
            // checked below on the A-labels, so their messages name the label.
            idna::domain_to_ascii(trimmed).map_err(|e| NameError::Idn {
                input: shown.clone(),
                why: e.to_string(),
            })?
        };
        check_ascii(&shown, &ascii)?;
        Ok(Self(ascii))
    }

    /// The name as written in routes and the registry (`myapp.codeb.kr`).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The canonical form PowerDNS wants (`myapp.codeb.kr.`).
    pub fn canonical(&self) -> String {
        format!("{}.", self.0)
    }

    /// Whether this name is `zone` or lies below it.
    pub fn is_in(&self, zone: &DomainName) -> bool {
        self.0 == zone.0
            || (self.0.len() > zone.0.len()
                && self.0.ends_with(&zone.0)
                && self.0.as_bytes()[self.0.len() - zone.0.len() - 1] == b'.')
    }

    /// The most specific of `zones` that holds this name.
    pub fn zone_in<'z>(&self, zones: &'z [DomainName]) -> Option<&'z DomainName> {
        zones
            .iter()
            .filter(|z| self.is_in(z))
            .max_by_key(|z| z.0.len())
    }
}

/// A zone name: the same rules, one label allowed (`kr` would be odd but is a zone).
pub fn parse_zone(input: &str) -> Result<DomainName, NameError> {
    match DomainName::parse(input) {
        Err(NameError::SingleLabel { .. }) => {
            let t = input.trim().trim_end_matches('.').to_ascii_lowercase();
            Ok(DomainName(t))
        }
        other => other,
    }
}

fn check_ascii(input: &str, name: &str) -> Result<(), NameError> {
    if name.len() > 253 {
        return Err(NameError::TooLong {
            input: input.to_owned(),
            len: name.len(),
        });
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err(NameError::EmptyLabel {
                input: input.to_owned(),
            });
        }
        if label.len() > 63 {
            return Err(NameError::LabelTooLong {
                input: input.to_owned(),
                label: label.to_owned(),
                len: label.len(),
            });
        }
        if let Some(ch) = label
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return Err(NameError::Char {
                input: input.to_owned(),
                label: label.to_owned(),
                ch,
            });
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(NameError::Dash {
                input: input.to_owned(),
                label: label.to_owned(),
            });
        }
        if label.starts_with("xn--") {
            let (_, r) = idna::domain_to_unicode(label);
            if let Err(e) = r {
                return Err(NameError::Idn {
                    input: input.to_owned(),
                    why: format!("label {label:?} is not valid punycode: {e}"),
                });
            }
        }
    }
    if !name.contains('.') {
        return Err(NameError::SingleLabel {
            input: input.to_owned(),
        });
    }
    Ok(())
}

impl fmt::Display for DomainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> String {
        DomainName::parse(s)
            .unwrap_or_else(|e| panic!("{s}: {e}"))
            .as_str()
            .to_owned()
    }

    #[test]
    fn names_are_normalised() {
        assert_eq!(ok("MyApp.Codeb.KR"), "myapp.codeb.kr");
        assert_eq!(ok(" myapp.codeb.kr. "), "myapp.codeb.kr");
        assert_eq!(ok("a-1.b2.codeb.kr"), "a-1.b2.codeb.kr");
        assert_eq!(ok("bücher.codeb.kr"), "xn--bcher-kva.codeb.kr");
        assert_eq!(ok("BÜCHER.codeb.kr"), "xn--bcher-kva.codeb.kr");
        assert_eq!(ok("xn--bcher-kva.codeb.kr"), "xn--bcher-kva.codeb.kr");
        assert_eq!(
            DomainName::parse("myapp.codeb.kr")
                .expect("name")
                .canonical(),
            "myapp.codeb.kr."
        );
        let label63 = "a".repeat(63);
        assert_eq!(
            ok(&format!("{label63}.codeb.kr")),
            format!("{label63}.codeb.kr")
        );
    }

    #[test]
    fn bad_names_are_refused_with_the_rule() {
        let err = |s: &str| DomainName::parse(s).expect_err(s);
        assert!(matches!(err("*.codeb.kr"), NameError::Wildcard { .. }));
        assert!(err("*.codeb.kr").to_string().contains("app.codeb.kr"));
        assert!(matches!(
            err("my_app.codeb.kr"),
            NameError::Underscore { .. }
        ));
        assert!(matches!(
            err(&format!("{}.codeb.kr", "a".repeat(64))),
            NameError::LabelTooLong { len: 64, .. }
        ));
        assert!(matches!(err("myapp-.codeb.kr"), NameError::Dash { .. }));
        assert!(matches!(err("-myapp.codeb.kr"), NameError::Dash { .. }));
        assert!(matches!(err("my..codeb.kr"), NameError::EmptyLabel { .. }));
        assert!(matches!(err("my app.codeb.kr"), NameError::Char { .. }));
        assert!(matches!(err("myapp"), NameError::SingleLabel { .. }));
        assert!(matches!(err(""), NameError::Empty));
        assert!(matches!(err("."), NameError::Empty));
        assert!(matches!(err("xn--zz.codeb.kr"), NameError::Idn { .. }));
        // An IDN label whose punycode is longer than 63 bytes.
        // 60 ASCII letters and one ü: 61 characters, but `xn--` + 60 + `-` + the delta.
        let idn = format!("{}ü.codeb.kr", "a".repeat(60));
        assert!(
            matches!(DomainName::parse(&idn), Err(NameError::LabelTooLong { .. })),
            "{:?}",
            DomainName::parse(&idn)
        );
        assert!(matches!(
            err("a\u{2028}b.codeb.kr"),
            NameError::Idn { .. } | NameError::Char { .. }
        ));
        let long = format!("{}.codeb.kr", ["abcdefghij"; 25].join("."));
        assert!(matches!(err(&long), NameError::TooLong { .. }));
    }

    #[test]
    fn zones_match_whole_labels_and_the_most_specific_wins() {
        let zones: Vec<DomainName> = ["codeb.kr", "preview.codeb.kr"]
            .iter()
            .map(|z| parse_zone(z).expect("zone"))
            .collect();
        let n = |s: &str| DomainName::parse(s).expect("name");
        assert_eq!(
            n("myapp.codeb.kr").zone_in(&zones).map(DomainName::as_str),
            Some("codeb.kr")
        );
        assert_eq!(
            n("pr-1.preview.codeb.kr")
                .zone_in(&zones)
                .map(DomainName::as_str),
            Some("preview.codeb.kr")
        );
        assert_eq!(
            n("codeb.kr").zone_in(&zones).map(DomainName::as_str),
            Some("codeb.kr")
        );
        assert_eq!(n("notcodeb.kr").zone_in(&zones), None);
        assert_eq!(n("myapp.example.com").zone_in(&zones), None);
    }
}
