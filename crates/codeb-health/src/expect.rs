//! `--expect KEY=VALUE` expectations on the health body.

use std::fmt;
use std::str::FromStr;

use crate::HealthError;

/// One `KEY=VALUE` expectation: the health body must be a JSON object whose
/// `KEY` equals `VALUE`.
///
/// `KEY` may be dotted (`build.sha`) to address nested objects; a top-level
/// key that literally contains the dots is preferred when present. Values
/// compare as strings: a JSON string by its contents, anything else (number,
/// bool, null, object, array) by its compact JSON text, so `--expect
/// replicas=3` matches `"replicas": 3` and `"replicas": "3"`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Expectation {
    key: String,
    value: String,
}

impl Expectation {
    /// Builds an expectation, validating the key (non-empty, no empty dotted
    /// segment). The value may be empty (it then expects `""`).
    ///
    /// # Errors
    /// [`HealthError::InvalidExpectation`] naming `key=value`.
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Result<Self, HealthError> {
        let key = key.into();
        let value = value.into();
        if let Some(hint) = key_problem(&key) {
            return Err(HealthError::InvalidExpectation {
                input: format!("{key}={value}"),
                hint: hint.to_owned(),
            });
        }
        Ok(Self { key, value })
    }

    /// Parses `KEY=VALUE`, splitting at the first `=` (so the value may
    /// itself contain `=`).
    ///
    /// # Errors
    /// [`HealthError::InvalidExpectation`], whose message names the input:
    /// `--expect 'foo' must be KEY=VALUE`.
    pub fn parse(input: &str) -> Result<Self, HealthError> {
        let Some((key, value)) = input.split_once('=') else {
            return Err(HealthError::InvalidExpectation {
                input: input.to_owned(),
                hint: String::new(),
            });
        };
        if let Some(hint) = key_problem(key) {
            return Err(HealthError::InvalidExpectation {
                input: input.to_owned(),
                hint: hint.to_owned(),
            });
        }
        Ok(Self {
            key: key.to_owned(),
            value: value.to_owned(),
        })
    }

    /// Parses every input, stopping at the first bad one.
    ///
    /// # Errors
    /// As [`Expectation::parse`].
    pub fn parse_all<I, S>(inputs: I) -> Result<Vec<Self>, HealthError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        inputs
            .into_iter()
            .map(|s| Self::parse(s.as_ref()))
            .collect()
    }

    /// The (possibly dotted) key.
    #[must_use]
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The expected value, as text.
    #[must_use]
    pub fn value(&self) -> &str {
        &self.value
    }
}

fn key_problem(key: &str) -> Option<&'static str> {
    if key.is_empty() {
        Some(" (the key is empty)")
    } else if key.split('.').any(str::is_empty) {
        Some(" (the dotted key has an empty segment)")
    } else {
        None
    }
}

impl FromStr for Expectation {
    type Err = HealthError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for Expectation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.key, self.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_key_value() {
        let e = Expectation::parse("version=abc").expect("valid");
        assert_eq!((e.key(), e.value()), ("version", "abc"));
        let e: Expectation = "build.sha=a=b".parse().expect("valid");
        assert_eq!((e.key(), e.value()), ("build.sha", "a=b"));
        let e = Expectation::parse("status=").expect("empty value is allowed");
        assert_eq!(e.value(), "");
        assert_eq!(e.to_string(), "status=");
    }

    #[test]
    fn rejects_bad_input_naming_it() {
        let err = Expectation::parse("foo").expect_err("no =");
        assert_eq!(err.to_string(), "--expect 'foo' must be KEY=VALUE");
        let err = Expectation::parse("=x").expect_err("empty key");
        assert!(
            err.to_string()
                .starts_with("--expect '=x' must be KEY=VALUE")
        );
        let err = Expectation::parse("a..b=x").expect_err("empty segment");
        assert!(err.to_string().contains("'a..b=x'"), "{err}");
        let err = Expectation::new("", "x").expect_err("empty key");
        assert!(err.to_string().contains("'=x'"), "{err}");
        let err = Expectation::parse_all(["a=1", "b"]).expect_err("second is bad");
        assert!(err.to_string().contains("'b'"), "{err}");
    }
}
