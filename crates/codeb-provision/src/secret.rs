//! Generated secrets: 32 bytes (256 bits) from the OS CSPRNG, URL-safe base64 without
//! padding (43 characters of `[A-Za-z0-9_-]`), so they go into URLs and env files unquoted.

use base64::Engine;
use codeb_secret::Secret;
use rand::TryRngCore;

/// A new secret, or the OS's error when its random source fails.
pub fn try_generate() -> Result<Secret, rand::rand_core::OsError> {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.try_fill_bytes(&mut bytes)?;
    Ok(Secret::new(
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes),
    ))
}

/// A new secret; the OS's random source failing is not recoverable.
pub fn generate() -> Secret {
    #[allow(clippy::expect_used)]
    try_generate().expect("the OS random source failed")
}

#[cfg(test)]
mod tests {
    #[test]
    fn secrets_are_url_safe_256_bits_and_differ() {
        let a = super::generate();
        let b = super::generate();
        assert_eq!(a.expose().len(), 43);
        assert!(
            a.expose()
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
        assert_ne!(a, b);
    }
}
