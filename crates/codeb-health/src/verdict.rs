//! The health rules, with no I/O: given what the app answered, is it
//! healthy, and if not, why?
//!
//! - Healthy = a 2xx status AND, when the body is JSON with a top-level
//!   `status` field, `status == "ok"` (exactly).
//! - A 2xx whose body is not JSON is healthy, unless expectations are given:
//!   then the body must be JSON ([`Failure::InvalidJson`]).
//! - Every expectation must hold ([`Failure::ExpectationMismatch`]); they are
//!   checked in order and the first that fails is reported.
//! - A non-2xx status fails with [`Failure::HttpStatus`] carrying a one-line
//!   body excerpt, whatever the body says.

use serde_json::Value;

use crate::Expectation;
use crate::failure::{Failure, excerpt};

/// What a healthy answer told us.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Healthy {
    /// The body's top-level `version` field (a string, or the JSON text of a
    /// number), e.g. the deployed git sha.
    pub version: Option<String>,
}

/// Judges one answer: `status` is the HTTP status code, `body` the (possibly
/// truncated) response body.
///
/// # Errors
/// The single [`Failure`] reason the answer is not healthy.
pub fn evaluate(status: u16, body: &[u8], expect: &[Expectation]) -> Result<Healthy, Failure> {
    if !(200..300).contains(&status) {
        return Err(Failure::HttpStatus {
            status,
            excerpt: excerpt(body),
            location: None,
        });
    }

    let json = match parse_json(body) {
        Ok(json) => json,
        Err(_) if expect.is_empty() => return Ok(Healthy::default()),
        Err(e) => {
            return Err(Failure::InvalidJson {
                detail: e.to_string(),
            });
        }
    };

    if let Some(s) = json.get("status").filter(|s| s.as_str() != Some("ok")) {
        return Err(Failure::StatusNotOk {
            status: value_text(s),
            error: json.get("error").map(value_text),
        });
    }

    for e in expect {
        let actual = lookup(&json, e.key()).map(value_text);
        if actual.as_deref() != Some(e.value()) {
            return Err(Failure::ExpectationMismatch {
                key: e.key().to_owned(),
                expected: e.value().to_owned(),
                actual,
            });
        }
    }

    let version = json
        .get("version")
        .filter(|v| v.is_string() || v.is_number())
        .map(value_text);
    Ok(Healthy { version })
}

fn parse_json(body: &[u8]) -> Result<Value, serde_json::Error> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    serde_json::from_slice(body)
}

/// Finds `key` in `json`: a top-level key spelled exactly `key` wins;
/// otherwise a dotted key walks nested objects (`build.sha` →
/// `json["build"]["sha"]`). Only objects are walked (no array indices).
#[must_use]
pub fn lookup<'a>(json: &'a Value, key: &str) -> Option<&'a Value> {
    if let Some(v) = json.get(key) {
        return Some(v);
    }
    if !key.contains('.') {
        return None;
    }
    key.split('.')
        .try_fold(json, |node, segment| node.as_object()?.get(segment))
}

/// The text a JSON value compares by: a string's contents, or the compact
/// JSON text of anything else (`3`, `true`, `null`, `{"a":1}`).
#[must_use]
pub fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exp(s: &str) -> Expectation {
        Expectation::parse(s).expect("test expectation is valid")
    }

    #[test]
    fn healthy_contract_body() {
        let body = br#"{"status":"ok","timestamp":"2024-01-01T00:00:00Z","uptime":12.5,"version":"abc123"}"#;
        let h = evaluate(200, body, &[]).expect("healthy");
        assert_eq!(h.version.as_deref(), Some("abc123"));
        assert_eq!(evaluate(204, b"", &[]), Ok(Healthy::default()));
    }

    #[test]
    fn non_2xx_fails_with_excerpt() {
        let body = b"{\"status\":\"error\",\n  \"error\":\"db down\"}";
        let f = evaluate(503, body, &[]).expect_err("503");
        assert_eq!(
            f,
            Failure::HttpStatus {
                status: 503,
                excerpt: r#"{"status":"error", "error":"db down"}"#.into(),
                location: None,
            }
        );
        // Even a body claiming "ok" does not rescue a 500.
        let f = evaluate(500, br#"{"status":"ok"}"#, &[]).expect_err("500");
        assert!(matches!(f, Failure::HttpStatus { status: 500, .. }));
        let f = evaluate(301, b"", &[]).expect_err("3xx");
        assert!(matches!(f, Failure::HttpStatus { status: 301, .. }));
    }

    #[test]
    fn non_json_is_healthy_only_without_expectations() {
        assert_eq!(evaluate(200, b"OK", &[]), Ok(Healthy::default()));
        assert_eq!(
            evaluate(200, b"<html>hi</html>", &[]),
            Ok(Healthy::default())
        );
        let f = evaluate(200, b"OK", &[exp("version=abc")]).expect_err("must be JSON");
        assert!(matches!(f, Failure::InvalidJson { .. }), "{f:?}");
        assert!(f.to_string().starts_with("invalid JSON"), "{f}");
    }

    #[test]
    fn status_must_be_ok() {
        let f = evaluate(200, br#"{"status":"degraded"}"#, &[]).expect_err("degraded");
        assert_eq!(
            f,
            Failure::StatusNotOk {
                status: "degraded".into(),
                error: None
            }
        );
        let f = evaluate(200, br#"{"status":"error","error":"db down"}"#, &[]).expect_err("error");
        assert!(f.to_string().contains("db down"), "{f}");
        let f = evaluate(200, br#"{"status":true}"#, &[]).expect_err("non-string");
        assert!(f.to_string().contains("\"true\""), "{f}");
        let f = evaluate(200, br#"{"status":"OK"}"#, &[]).expect_err("exact match");
        assert!(matches!(f, Failure::StatusNotOk { .. }));
        // JSON without a status field (or not an object) is fine.
        assert!(evaluate(200, br#"{"uptime":1}"#, &[]).is_ok());
        assert!(evaluate(200, br#"["ok"]"#, &[]).is_ok());
        assert!(evaluate(200, b"\xEF\xBB\xBF{\"status\":\"ok\"}", &[exp("status=ok")]).is_ok());
    }

    #[test]
    fn expectations_compare_as_text() {
        let body = br#"{"status":"ok","version":"abc","replicas":3,"ready":true,"note":null,
                       "build":{"sha":"f00","n":7},"a.b":"literal"}"#;
        for good in [
            "version=abc",
            "replicas=3",
            "ready=true",
            "note=null",
            "build.sha=f00",
            "build.n=7",
            "a.b=literal",
            "status=ok",
        ] {
            assert!(evaluate(200, body, &[exp(good)]).is_ok(), "{good}");
        }
        let f =
            evaluate(200, body, &[exp("version=abc"), exp("version=def")]).expect_err("mismatch");
        assert_eq!(
            f,
            Failure::ExpectationMismatch {
                key: "version".into(),
                expected: "def".into(),
                actual: Some("abc".into()),
            }
        );
        assert!(f.to_string().contains("version"), "{f}");
        let f = evaluate(200, body, &[exp("commit=abc")]).expect_err("missing");
        assert!(matches!(
            f,
            Failure::ExpectationMismatch { actual: None, .. }
        ));
        assert!(f.to_string().contains("missing"), "{f}");
        let f = evaluate(200, body, &[exp("build.sha.x=1")]).expect_err("walks objects only");
        assert!(matches!(
            f,
            Failure::ExpectationMismatch { actual: None, .. }
        ));
        let f = evaluate(200, body, &[exp("replicas=3.0")]).expect_err("text compare");
        assert!(f.to_string().contains("got \"3\""), "{f}");
    }

    #[test]
    fn status_is_checked_before_expectations() {
        let f = evaluate(
            200,
            br#"{"status":"degraded","version":"x"}"#,
            &[exp("version=y")],
        )
        .expect_err("degraded");
        assert!(matches!(f, Failure::StatusNotOk { .. }));
    }
}
