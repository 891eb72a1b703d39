//! The token format: `codeb_` + 43 base62 characters (the 32 random bytes) + 6 base62
//! characters (the CRC32 of everything before them), 55 characters in all, like GitHub's
//! `ghp_` tokens.
//!
//! The checksum lets a client or a secret scanner recognize a mistyped or truncated token
//! without asking the server; it is no protection (anyone can compute it). The server keeps
//! only [`TokenHash`] (SHA-256 of the whole token) and finds a token by that hash, so
//! checking a token never compares secret bytes one by one.
//!
//! Nothing here does I/O: the caller supplies the 32 random bytes (the daemon takes them from
//! the OS CSPRNG).

use std::fmt;

use sha2::{Digest, Sha256};

/// Every token starts with this.
pub const PREFIX: &str = "codeb_";
/// Base62 characters of the random part (⌈256 / log2 62⌉).
pub const BODY_LEN: usize = 43;
/// Base62 characters of the checksum (⌈32 / log2 62⌉).
pub const CHECKSUM_LEN: usize = 6;
/// The length of a whole token.
pub const TOKEN_LEN: usize = PREFIX.len() + BODY_LEN + CHECKSUM_LEN;

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Why a string is not a well-formed codeb token. The messages never repeat the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token does not start with `codeb_`; copy the whole token as it was shown")]
    Prefix,
    #[error(
        "the token is {len} characters long, a codeb token has {TOKEN_LEN}; copy the whole token"
    )]
    Length { len: usize },
    #[error("the token contains a character outside [0-9A-Za-z] after `codeb_`")]
    Charset,
    #[error("the token's checksum does not match; it was mistyped or truncated")]
    Checksum,
}

/// A well-formed token (prefix, length, alphabet and checksum checked). `Debug` and
/// `Display` never show it; [`Token::expose`] does, for the one place it is shown or sent.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// The token for 32 random bytes (take them from the OS CSPRNG).
    pub fn from_random(bytes: [u8; 32]) -> Self {
        let mut s = String::with_capacity(TOKEN_LEN);
        s.push_str(PREFIX);
        s.push_str(&base62_fixed(&bytes, BODY_LEN));
        let crc = crc32(s.as_bytes());
        s.push_str(&base62_fixed(&crc.to_be_bytes(), CHECKSUM_LEN));
        Self(s)
    }

    /// Checks the format and the checksum.
    pub fn parse(text: &str) -> Result<Self, TokenError> {
        let text = text.trim();
        if !text.starts_with(PREFIX) {
            return Err(TokenError::Prefix);
        }
        if text.len() != TOKEN_LEN {
            return Err(TokenError::Length { len: text.len() });
        }
        let rest = &text.as_bytes()[PREFIX.len()..];
        if !rest.iter().all(u8::is_ascii_alphanumeric) {
            return Err(TokenError::Charset);
        }
        let (head, sum) = text.split_at(PREFIX.len() + BODY_LEN);
        let want = base62_fixed(&crc32(head.as_bytes()).to_be_bytes(), CHECKSUM_LEN);
        if want != sum {
            return Err(TokenError::Checksum);
        }
        Ok(Self(text.to_owned()))
    }

    /// The token itself: only to show it once or to put it in an `Authorization` header.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// What the server stores and looks the token up by.
    pub fn hash(&self) -> TokenHash {
        TokenHash(Sha256::digest(self.0.as_bytes()).into())
    }

    /// `codeb_` and the first 4 characters of the random part: enough to tell a user's tokens
    /// apart in a listing, far too little to guess the rest (250 random bits remain).
    pub fn hint(&self) -> String {
        format!("{}…", &self.0[..PREFIX.len() + 4])
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted token>")
    }
}

/// SHA-256 of a token: the only form in which the server keeps it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenHash(pub [u8; 32]);

impl TokenHash {
    pub fn to_hex(&self) -> String {
        use fmt::Write as _;
        let mut s = String::with_capacity(64);
        for b in self.0 {
            let _ = write!(s, "{b:02x}");
        }
        s
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenHash({})", self.to_hex())
    }
}

/// The bearer token in an `Authorization` header value (`Bearer codeb_…`), if any.
pub fn from_authorization(value: &str) -> Option<&str> {
    let (scheme, rest) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

/// `bytes` as a big-endian number in base62, left-padded with `0` to `width` characters.
fn base62_fixed(bytes: &[u8], width: usize) -> String {
    let mut num: Vec<u8> = bytes.to_vec();
    let mut digits = Vec::with_capacity(width);
    while num.iter().any(|&b| b != 0) {
        let mut rem: u32 = 0;
        for b in num.iter_mut() {
            let cur = (rem << 8) | u32::from(*b);
            *b = (cur / 62) as u8;
            rem = cur % 62;
        }
        digits.push(ALPHABET[rem as usize]);
    }
    while digits.len() < width {
        digits.push(b'0');
    }
    digits.reverse();
    digits.into_iter().map(char::from).collect()
}

/// CRC-32 (IEEE 802.3, the one zlib and GitHub's token checksum use).
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn a_generated_token_parses_and_has_the_documented_shape() {
        for seed in [[0u8; 32], [0xff; 32], [7; 32]] {
            let t = Token::from_random(seed);
            assert_eq!(t.expose().len(), TOKEN_LEN);
            assert!(t.expose().starts_with("codeb_"));
            assert_eq!(Token::parse(t.expose()).as_ref(), Ok(&t));
        }
    }

    #[test]
    fn base62_of_all_ones_fits_in_43_characters() {
        assert_eq!(base62_fixed(&[0xff; 32], BODY_LEN).len(), BODY_LEN);
        assert_eq!(base62_fixed(&[0xff; 4], CHECKSUM_LEN).len(), CHECKSUM_LEN);
        assert_eq!(base62_fixed(&[0, 61], 3), "00z");
        assert_eq!(base62_fixed(&[0, 62], 3), "010");
    }

    #[test]
    fn every_single_character_change_breaks_the_checksum_or_charset() {
        let t = Token::from_random([42; 32]);
        let s = t.expose();
        for i in PREFIX.len()..s.len() {
            let mut b = s.as_bytes().to_vec();
            b[i] = if b[i] == b'a' { b'b' } else { b'a' };
            let changed = String::from_utf8(b).expect("ascii");
            assert_eq!(
                Token::parse(&changed),
                Err(TokenError::Checksum),
                "position {i}"
            );
        }
    }

    #[test]
    fn malformed_tokens_are_refused_by_rule() {
        let t = Token::from_random([1; 32]);
        let s = t.expose();
        assert_eq!(
            Token::parse(&s.replace("codeb_", "ghp_")),
            Err(TokenError::Prefix)
        );
        assert_eq!(
            Token::parse(&s[..s.len() - 1]),
            Err(TokenError::Length { len: TOKEN_LEN - 1 })
        );
        let mut bad = s.to_owned();
        bad.replace_range(10..11, "-");
        assert_eq!(Token::parse(&bad), Err(TokenError::Charset));
    }

    #[test]
    fn debug_and_display_never_show_the_token() {
        let t = Token::from_random([9; 32]);
        assert!(!format!("{t:?} {t}").contains(&t.expose()[6..]));
        assert!(t.hint().len() < 16);
    }

    #[test]
    fn bearer_header_is_split_case_insensitively() {
        assert_eq!(from_authorization("Bearer abc"), Some("abc"));
        assert_eq!(from_authorization("bearer  abc "), Some("abc"));
        assert_eq!(from_authorization("Basic abc"), None);
        assert_eq!(from_authorization("Bearerabc"), None);
    }
}
