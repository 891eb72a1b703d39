//! The one typed reason a probe failed, and text helpers that keep every
//! rendering of it on a single, terminal-safe line.

use std::fmt;
use std::time::Duration;

/// Longest body excerpt carried by [`Failure::HttpStatus`], in characters.
pub const EXCERPT_CHARS: usize = 120;

/// Longest rendering of any other text that came from the network
/// (an `error` field, an unexpected value, a library error message).
const DETAIL_CHARS: usize = 200;

/// Why one probe did not prove the app healthy.
///
/// Exactly one reason per failed probe. [`Display`](fmt::Display) renders a
/// single line (no newlines, no control characters) naming the key facts, so
/// a caller can print it as-is after a prefix such as `attempt 3: `.
///
/// Text fields hold what was observed; `Display` sanitises them again, so a
/// hand-built `Failure` still renders on one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The TCP connection was actively refused: nothing listens there.
    ConnectionRefused {
        /// `host:port` that refused.
        addr: String,
    },
    /// The host name could not be resolved.
    Dns {
        /// The host name that did not resolve.
        host: String,
        /// The resolver's message (may be empty).
        detail: String,
    },
    /// No complete answer arrived within the probe timeout.
    Timeout {
        /// The timeout that was in force for this probe (possibly clamped to
        /// the time left before the deadline).
        after: Duration,
    },
    /// The app answered with a status outside 2xx.
    HttpStatus {
        /// The HTTP status code.
        status: u16,
        /// The first ~[`EXCERPT_CHARS`] characters of the body, whitespace
        /// collapsed and control characters removed (see [`excerpt`]).
        excerpt: String,
        /// For a 3xx that was not followed: its `Location` header.
        location: Option<String>,
    },
    /// The body had to be JSON (expectations were given) and was not.
    InvalidJson {
        /// The JSON parser's message.
        detail: String,
    },
    /// The body is JSON with a `status` field that is not `"ok"`.
    StatusNotOk {
        /// The `status` value: the string itself, or the JSON text of a
        /// non-string value.
        status: String,
        /// The body's `error` field, when present.
        error: Option<String>,
    },
    /// An `--expect KEY=VALUE` did not hold.
    ExpectationMismatch {
        /// The (possibly dotted) key.
        key: String,
        /// The expected value.
        expected: String,
        /// What the body held, or `None` when the key was missing.
        actual: Option<String>,
    },
    /// The TLS handshake or certificate validation failed.
    Tls {
        /// The TLS library's message.
        detail: String,
    },
    /// Any other transport-level error (connection reset, protocol error,
    /// body read error, ...).
    Transport {
        /// The underlying error chain, joined with `: `.
        detail: String,
    },
}

impl Failure {
    /// A short, stable, machine-readable name for the kind of failure, e.g.
    /// for JSON output or metrics: `connection_refused`, `dns`, `timeout`,
    /// `http_status`, `invalid_json`, `status_not_ok`,
    /// `expectation_mismatch`, `tls`, `transport`.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::ConnectionRefused { .. } => "connection_refused",
            Self::Dns { .. } => "dns",
            Self::Timeout { .. } => "timeout",
            Self::HttpStatus { .. } => "http_status",
            Self::InvalidJson { .. } => "invalid_json",
            Self::StatusNotOk { .. } => "status_not_ok",
            Self::ExpectationMismatch { .. } => "expectation_mismatch",
            Self::Tls { .. } => "tls",
            Self::Transport { .. } => "transport",
        }
    }

    /// True for failures where the app was reached and answered (status,
    /// body or expectation problems), false for transport-level failures
    /// where no answer was obtained.
    #[must_use]
    pub fn app_answered(&self) -> bool {
        matches!(
            self,
            Self::HttpStatus { .. }
                | Self::InvalidJson { .. }
                | Self::StatusNotOk { .. }
                | Self::ExpectationMismatch { .. }
        )
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ConnectionRefused { addr } => {
                write!(f, "connection refused by {}", one_line(addr, DETAIL_CHARS))
            }
            Self::Dns { host, detail } => {
                write!(
                    f,
                    "DNS failure: cannot resolve host '{}'",
                    one_line(host, DETAIL_CHARS)
                )?;
                let detail = one_line(detail, DETAIL_CHARS);
                if !detail.is_empty() {
                    write!(f, " ({detail})")?;
                }
                Ok(())
            }
            Self::Timeout { after } => write!(f, "timed out after {}", format_secs(*after)),
            Self::HttpStatus {
                status,
                excerpt: body,
                location,
            } => {
                write!(f, "HTTP {status}")?;
                if let Some(reason) = reqwest::StatusCode::from_u16(*status)
                    .ok()
                    .and_then(|s| s.canonical_reason())
                {
                    write!(f, " {reason}")?;
                }
                if let Some(location) = location {
                    write!(
                        f,
                        " (redirect to {} not followed)",
                        one_line(location, DETAIL_CHARS)
                    )?;
                }
                let body = one_line(body, EXCERPT_CHARS);
                if body.is_empty() {
                    write!(f, " (empty body)")
                } else {
                    write!(f, ": {body}")
                }
            }
            Self::InvalidJson { detail } => write!(
                f,
                "invalid JSON in response body: {}",
                one_line(detail, DETAIL_CHARS)
            ),
            Self::StatusNotOk { status, error } => {
                write!(
                    f,
                    "status is \"{}\", expected \"ok\"",
                    one_line(status, DETAIL_CHARS)
                )?;
                if let Some(error) = error {
                    write!(f, " (error: {})", one_line(error, DETAIL_CHARS))?;
                }
                Ok(())
            }
            Self::ExpectationMismatch {
                key,
                expected,
                actual,
            } => {
                write!(
                    f,
                    "expectation failed: {}: expected \"{}\", ",
                    one_line(key, DETAIL_CHARS),
                    one_line(expected, DETAIL_CHARS)
                )?;
                match actual {
                    Some(actual) => write!(f, "got \"{}\"", one_line(actual, DETAIL_CHARS)),
                    None => write!(f, "key missing"),
                }
            }
            Self::Tls { detail } => write!(f, "TLS error: {}", one_line(detail, DETAIL_CHARS)),
            Self::Transport { detail } => {
                write!(f, "transport error: {}", one_line(detail, DETAIL_CHARS))
            }
        }
    }
}

impl std::error::Error for Failure {}

/// Renders `body` as a one-line excerpt of at most [`EXCERPT_CHARS`]
/// characters: invalid UTF-8 replaced, control and invisible formatting
/// characters removed, whitespace runs collapsed to one space, trimmed, and
/// `…` appended when cut.
#[must_use]
pub fn excerpt(body: &[u8]) -> String {
    // Only look at a bounded prefix: an excerpt never needs more.
    let prefix = &body[..body.len().min(EXCERPT_CHARS * 8)];
    let text = String::from_utf8_lossy(prefix);
    let truncated_input = prefix.len() < body.len();
    let mut out = one_line(&text, EXCERPT_CHARS);
    if truncated_input && !out.ends_with('…') {
        out.push('…');
    }
    out
}

/// Collapses `text` to a single line of at most `max` characters (plus a
/// trailing `…` when cut): whitespace runs become one space, control
/// characters and invisible bidi/zero-width formatting characters are dropped.
#[must_use]
pub fn one_line(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max + 4));
    let mut count = 0usize;
    let mut pending_space = false;
    for c in text.chars() {
        if c.is_whitespace() {
            pending_space = count > 0;
            continue;
        }
        if c.is_control() || is_invisible_format(c) {
            continue;
        }
        if pending_space {
            if count + 1 >= max {
                out.push('…');
                return out;
            }
            out.push(' ');
            count += 1;
            pending_space = false;
        }
        if count >= max {
            out.push('…');
            return out;
        }
        out.push(c);
        count += 1;
    }
    out
}

/// Unicode format characters that could reorder or hide terminal output.
fn is_invisible_format(c: char) -> bool {
    matches!(
        c,
        '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}'
    )
}

/// Formats a duration as seconds with at most three decimals: `0.2s`, `5s`,
/// `1.25s`.
#[must_use]
pub fn format_secs(d: Duration) -> String {
    let millis = d.as_millis();
    let whole = millis / 1000;
    let frac = millis % 1000;
    if frac == 0 {
        format!("{whole}s")
    } else {
        let frac = format!("{frac:03}");
        format!("{whole}.{}s", frac.trim_end_matches('0'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_collapses_and_strips() {
        assert_eq!(one_line("  a\n\n b\t\tc  ", 100), "a b c");
        assert_eq!(one_line("x\u{1b}[31my\u{7}z", 100), "x[31myz");
        assert_eq!(one_line("a\u{202E}b\u{200B}c", 100), "abc");
        assert_eq!(one_line("", 10), "");
        assert_eq!(one_line("   ", 10), "");
    }

    #[test]
    fn one_line_truncates_with_ellipsis() {
        assert_eq!(one_line("abcdef", 3), "abc…");
        assert_eq!(one_line("abc", 3), "abc");
        assert_eq!(one_line("ab cd", 3), "ab…");
        assert_eq!(one_line("é".repeat(10).as_str(), 4), "éééé…");
    }

    #[test]
    fn excerpt_is_bounded() {
        let body = "x ".repeat(10_000);
        let e = excerpt(body.as_bytes());
        assert!(e.chars().count() <= EXCERPT_CHARS + 1, "{e}");
        assert!(e.ends_with('…'));
        assert_eq!(excerpt(b"\xff\xfeok"), "\u{FFFD}\u{FFFD}ok");
    }

    #[test]
    fn format_secs_is_compact() {
        assert_eq!(format_secs(Duration::from_millis(200)), "0.2s");
        assert_eq!(format_secs(Duration::from_secs(5)), "5s");
        assert_eq!(format_secs(Duration::from_millis(1250)), "1.25s");
        assert_eq!(format_secs(Duration::from_millis(1001)), "1.001s");
        assert_eq!(format_secs(Duration::ZERO), "0s");
    }

    #[test]
    fn every_display_is_one_line() {
        let nasty = "line1\nline2\r\n\u{1b}[2Jline3\u{0}";
        let all = [
            Failure::ConnectionRefused { addr: nasty.into() },
            Failure::Dns {
                host: nasty.into(),
                detail: nasty.into(),
            },
            Failure::Timeout {
                after: Duration::from_millis(1500),
            },
            Failure::HttpStatus {
                status: 503,
                excerpt: nasty.into(),
                location: Some(nasty.into()),
            },
            Failure::InvalidJson {
                detail: nasty.into(),
            },
            Failure::StatusNotOk {
                status: nasty.into(),
                error: Some(nasty.into()),
            },
            Failure::ExpectationMismatch {
                key: nasty.into(),
                expected: nasty.into(),
                actual: Some(nasty.into()),
            },
            Failure::Tls {
                detail: nasty.into(),
            },
            Failure::Transport {
                detail: nasty.into(),
            },
        ];
        for f in all {
            let s = f.to_string();
            assert!(!s.chars().any(char::is_control), "{s:?}");
            assert!(!s.is_empty());
            assert!(!f.kind().is_empty());
        }
    }

    #[test]
    fn display_names_key_facts() {
        let f = Failure::HttpStatus {
            status: 503,
            excerpt: r#"{"status":"error","error":"db down"}"#.into(),
            location: None,
        };
        assert_eq!(
            f.to_string(),
            r#"HTTP 503 Service Unavailable: {"status":"error","error":"db down"}"#
        );
        let f = Failure::HttpStatus {
            status: 502,
            excerpt: String::new(),
            location: None,
        };
        assert_eq!(f.to_string(), "HTTP 502 Bad Gateway (empty body)");
        let f = Failure::StatusNotOk {
            status: "degraded".into(),
            error: Some("cache cold".into()),
        };
        assert_eq!(
            f.to_string(),
            r#"status is "degraded", expected "ok" (error: cache cold)"#
        );
        let f = Failure::ExpectationMismatch {
            key: "version".into(),
            expected: "def".into(),
            actual: None,
        };
        assert_eq!(
            f.to_string(),
            r#"expectation failed: version: expected "def", key missing"#
        );
        let f = Failure::Timeout {
            after: Duration::from_millis(200),
        };
        assert_eq!(f.to_string(), "timed out after 0.2s");
    }
}
