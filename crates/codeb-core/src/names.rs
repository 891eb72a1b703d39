//! Validated names: project names are DNS labels, environments are a closed set.

use std::fmt;
use std::str::FromStr;

/// A project name: a DNS label (`[a-z0-9-]`, 1-63 characters, no leading or trailing `-`).
///
/// Project names end up in container names, systemd unit names, file names and host names,
/// so anything that could escape one of those (`/`, `..`, upper case, spaces) is refused here.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct ProjectName(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("project name is empty; use a DNS label such as `myapp`")]
    Empty,
    #[error("project name `{name}` is {len} characters long; a DNS label has at most 63")]
    TooLong { name: String, len: usize },
    #[error(
        "project name `{name}` contains {ch:?}; use only lower-case letters, digits and `-` (a DNS label)"
    )]
    BadChar { name: String, ch: char },
    #[error("project name `{name}` starts or ends with `-`; a DNS label may not")]
    Hyphen { name: String },
}

impl ProjectName {
    pub fn new(name: &str) -> Result<Self, NameError> {
        if name.is_empty() {
            return Err(NameError::Empty);
        }
        if let Some(ch) = name
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return Err(NameError::BadChar {
                name: name.to_owned(),
                ch,
            });
        }
        if name.len() > 63 {
            return Err(NameError::TooLong {
                name: name.to_owned(),
                len: name.len(),
            });
        }
        if name.starts_with('-') || name.ends_with('-') {
            return Err(NameError::Hyphen {
                name: name.to_owned(),
            });
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ProjectName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl fmt::Display for ProjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a release runs. Each environment owns one port range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    Production,
    Staging,
    Preview,
}

impl Environment {
    pub const ALL: [Environment; 3] = [Self::Production, Self::Staging, Self::Preview];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Production => "production",
            Self::Staging => "staging",
            Self::Preview => "preview",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown environment `{0}`; expected one of: production, staging, preview")]
pub struct UnknownEnvironment(pub String);

impl FromStr for Environment {
    type Err = UnknownEnvironment;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "production" | "prod" => Ok(Self::Production),
            "staging" | "stage" => Ok(Self::Staging),
            "preview" => Ok(Self::Preview),
            other => Err(UnknownEnvironment(other.to_owned())),
        }
    }
}

impl fmt::Display for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_dns_labels() {
        for ok in ["a", "myapp", "my-app-2", "0abc", &"a".repeat(63)] {
            assert!(ProjectName::new(ok).is_ok(), "{ok} should be accepted");
        }
    }

    #[test]
    fn refuses_everything_else() {
        for bad in [
            "", "-a", "a-", "MyApp", "my_app", "my.app", "../etc", "a/b", "a b", "é",
        ] {
            assert!(ProjectName::new(bad).is_err(), "{bad:?} should be refused");
        }
        let long = "a".repeat(64);
        assert_eq!(
            ProjectName::new(&long),
            Err(NameError::TooLong {
                name: long,
                len: 64
            })
        );
    }

    #[test]
    fn environments_parse() {
        assert_eq!("production".parse(), Ok(Environment::Production));
        assert_eq!("staging".parse(), Ok(Environment::Staging));
        assert!("qa".parse::<Environment>().is_err());
    }
}
