//! [`Secret`]: a value that must never reach a log, an annotation or `--json` output (a
//! registry password, a GitHub token, a webhook secret). `Debug` and `Display` print `***`;
//! the value is reachable only through [`Secret::expose`], at the one place that sends it.
//!
//! Pure and dependency-free, so that every crate can hold secrets in it (`codeb-actions`
//! re-exports it for the step binaries and also masks it with `::add-mask::`).

use std::fmt;

/// A secret string: never printed by `Debug` or `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself, for the one place that must send it (an HTTP header, a file).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The value's bytes (an HMAC key).
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_prints_its_value() {
        let s = Secret::new("hunter2");
        let shown = format!("{s} {s:?} {:?}", Some(&s));
        assert_eq!(shown, "*** Secret(***) Some(Secret(***))");
        assert!(!shown.contains("hunter2"));
        assert_eq!(s.expose(), "hunter2");
        assert_eq!(s.as_bytes(), b"hunter2");
    }
}
