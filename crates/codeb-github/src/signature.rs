//! `X-Hub-Signature-256`: HMAC-SHA256 of the raw request body, keyed with the webhook secret,
//! sent as `sha256=<64 lowercase hex digits>`. Verification is constant-time (hmac's
//! `verify_slice`) and accepts any of several secrets, so a secret can be rotated without
//! losing deliveries: configure old and new, change GitHub's, then drop the old one.

use std::fmt;

use codeb_secret::Secret;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// A webhook secret (a [`Secret`]). Never printed: `Debug` shows `WebhookSecret(***)`.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(Secret);

impl WebhookSecret {
    /// A secret from its text. Leading and trailing whitespace is *not* trimmed here.
    pub fn new(value: impl Into<String>) -> Self {
        Self(Secret::new(value))
    }

    /// Secrets from a comma-separated list (`CODEB_WEBHOOK_SECRET=new,old`), each trimmed;
    /// empty entries are skipped.
    pub fn parse_list(list: &str) -> Vec<Self> {
        list.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(Self::new)
            .collect()
    }

    /// The secret itself, for the one place that must use it (the HMAC key).
    pub fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(***)")
    }
}

/// Why a delivery's signature was refused. Every variant means: answer 401.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error(
        "no X-Hub-Signature-256 header: set a secret on the GitHub webhook (Settings → Webhooks) \
         equal to one of the daemon's secrets"
    )]
    Missing,
    #[error(
        "only the SHA-1 X-Hub-Signature header was sent; codeb requires X-Hub-Signature-256 \
         (sent by GitHub for every webhook that has a secret)"
    )]
    OnlySha1,
    #[error("X-Hub-Signature-256 is malformed ({0}); expected `sha256=` and 64 hex digits")]
    Malformed(&'static str),
    #[error(
        "X-Hub-Signature-256 does not match the body under any configured secret: the secret on \
         GitHub differs from the daemon's, or the body was altered on the way"
    )]
    Mismatch,
    #[error("no webhook secret is configured, so no signature can be checked")]
    NoSecrets,
}

impl SignatureError {
    /// A short stable label for metrics (`missing`, `sha1_only`, `malformed`, `mismatch`,
    /// `no_secrets`).
    pub fn reason(&self) -> &'static str {
        match self {
            SignatureError::Missing => "missing",
            SignatureError::OnlySha1 => "sha1_only",
            SignatureError::Malformed(_) => "malformed",
            SignatureError::Mismatch => "mismatch",
            SignatureError::NoSecrets => "no_secrets",
        }
    }
}

/// The `X-Hub-Signature-256` value GitHub would send for `body` under `secret`.
pub fn sign(secret: &WebhookSecret, body: &[u8]) -> String {
    let mut mac = mac(secret);
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for b in digest {
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 0xf)] as char);
    }
    out
}

/// Checks a delivery's signature headers against `secrets`; on success returns the index of
/// the secret that matched (useful to log that an old secret is still in use).
///
/// `sha256` is the `X-Hub-Signature-256` header, `sha1` the legacy `X-Hub-Signature` one
/// (only used to explain a refusal: SHA-1 alone is never accepted). The hex digits may be
/// upper or lower case. Comparison is constant-time for each secret.
pub fn verify(
    secrets: &[WebhookSecret],
    sha256: Option<&[u8]>,
    sha1: Option<&[u8]>,
    body: &[u8],
) -> Result<usize, SignatureError> {
    if secrets.is_empty() {
        return Err(SignatureError::NoSecrets);
    }
    let header = match (sha256, sha1) {
        (Some(h), _) => h,
        (None, Some(_)) => return Err(SignatureError::OnlySha1),
        (None, None) => return Err(SignatureError::Missing),
    };
    let hex = header
        .strip_prefix(b"sha256=")
        .ok_or(SignatureError::Malformed(
            "it does not start with `sha256=`",
        ))?;
    if hex.len() != 64 {
        return Err(SignatureError::Malformed(
            "the digest is not 64 hex digits long",
        ));
    }
    let mut expected = [0u8; 32];
    for (i, pair) in hex.chunks_exact(2).enumerate() {
        let (Some(hi), Some(lo)) = (nibble(pair[0]), nibble(pair[1])) else {
            return Err(SignatureError::Malformed(
                "the digest has a non-hex character",
            ));
        };
        expected[i] = (hi << 4) | lo;
    }
    for (i, secret) in secrets.iter().enumerate() {
        let mut mac = mac(secret);
        mac.update(body);
        if mac.verify_slice(&expected).is_ok() {
            return Ok(i);
        }
    }
    Err(SignatureError::Mismatch)
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn mac(secret: &WebhookSecret) -> HmacSha256 {
    // HMAC accepts keys of any length (long keys are hashed, short ones padded).
    HmacSha256::new_from_slice(secret.expose()).expect("HMAC accepts keys of any length")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> WebhookSecret {
        WebhookSecret::new(v)
    }

    #[test]
    fn github_docs_vector() {
        let secret = s("It's a Secret to Everybody");
        let want = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(sign(&secret, b"Hello, World!"), want);
        assert_eq!(
            verify(&[secret], Some(want.as_bytes()), None, b"Hello, World!"),
            Ok(0)
        );
    }

    #[test]
    fn any_configured_secret_may_match() {
        let body = b"{}";
        let header = sign(&s("new"), body);
        let secrets = [s("old"), s("new")];
        assert_eq!(verify(&secrets, Some(header.as_bytes()), None, body), Ok(1));
        assert_eq!(
            verify(&[s("old")], Some(header.as_bytes()), None, body),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn upper_case_hex_is_accepted() {
        let body = b"x";
        let header = sign(&s("k"), body);
        let upper = format!("sha256={}", header["sha256=".len()..].to_ascii_uppercase());
        assert_eq!(verify(&[s("k")], Some(upper.as_bytes()), None, body), Ok(0));
    }

    #[test]
    fn refusals_say_why() {
        let body = b"{}";
        let secrets = [s("k")];
        let good = sign(&secrets[0], body);
        type Case<'a> = (Option<&'a [u8]>, Option<&'a [u8]>, SignatureError);
        let cases: Vec<Case> = vec![
            (None, None, SignatureError::Missing),
            (None, Some(b"sha1=0123"), SignatureError::OnlySha1),
            (Some(b""), None, SignatureError::Malformed("")),
            (Some(b"sha1=abc"), None, SignatureError::Malformed("")),
            (
                Some(&good.as_bytes()[..70]),
                None,
                SignatureError::Malformed(""),
            ),
            (Some(b"sha256="), None, SignatureError::Malformed("")),
            (
                Some(b"sha256=zz07ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"),
                None,
                SignatureError::Malformed(""),
            ),
            (
                Some(b"sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"),
                None,
                SignatureError::Mismatch,
            ),
        ];
        for (h256, h1, want) in cases {
            let got = verify(&secrets, h256, h1, body);
            let Err(err) = got else {
                panic!("{h256:?} was accepted");
            };
            assert_eq!(err.reason(), want.reason(), "{h256:?}");
        }
        assert_eq!(
            verify(&[], Some(good.as_bytes()), None, body),
            Err(SignatureError::NoSecrets)
        );
    }

    #[test]
    fn secret_list_and_redaction() {
        let list = WebhookSecret::parse_list(" new , ,old,");
        assert_eq!(list, vec![s("new"), s("old")]);
        assert_eq!(format!("{:?}", list[0]), "WebhookSecret(***)");
    }
}
