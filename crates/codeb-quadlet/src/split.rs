//! systemd's word splitting (`extract_first_word`) in the two flavours Quadlet uses:
//!
//! - [`SplitMode::Args`]: like `Exec=` lines. Quotes (`"` and `'`) group words and are removed,
//!   C escapes (`\n`, `\t`, `\x41`, `\101`, `\u00e9`, ...) are decoded, and an unbalanced quote or a
//!   trailing backslash is tolerated. An unknown escape (`\.`) is an error.
//! - [`SplitMode::Strv`]: like `WantedBy=` lists. Quotes group words and are removed; backslashes
//!   are ordinary characters.
//!
//! Deviation from podman's Go port: a word made only of quotes (`""`) yields an empty word, as in
//! systemd itself; the Go port stops splitting there and drops the rest of the line.

/// Which splitting rules to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitMode {
    /// `Exec=`-style: unquote and decode C escapes.
    Args,
    /// List-style: unquote, keep backslashes as they are.
    Strv,
}

/// Splits `input` into words. The error message describes the offending escape.
pub fn split_words(input: &str, mode: SplitMode) -> Result<Vec<String>, String> {
    let bytes = input.as_bytes();
    let mut words = Vec::new();
    let mut rest = 0;
    while let Some((word, next)) = extract_first_word(&bytes[rest..], mode)? {
        let word = String::from_utf8(word)
            .map_err(|_| "the value decodes to invalid UTF-8".to_string())?;
        words.push(word);
        rest += next;
    }
    Ok(words)
}

fn is_separator(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// Returns the first word and how many bytes of `input` it consumed (including the separators
/// after it), or `None` when only separators are left.
fn extract_first_word(input: &[u8], mode: SplitMode) -> Result<Option<(Vec<u8>, usize)>, String> {
    let relax = mode == SplitMode::Args;
    let c_unescape = mode == SplitMode::Args;
    let retain_escape = mode == SplitMode::Strv;

    let mut p = 0;
    while p < input.len() && is_separator(input[p]) {
        p += 1;
    }
    if p >= input.len() {
        return Ok(None);
    }

    let mut word = Vec::new();
    let mut quote: Option<u8> = None;
    let mut backslash = false;
    loop {
        let c = input.get(p).copied();
        if backslash {
            let Some(ch) = c else {
                if relax {
                    break;
                }
                return Err("the value ends with an unfinished escape (trailing backslash)".into());
            };
            if c_unescape {
                match c_unescape_one(&input[p..]) {
                    Some((count, decoded)) => {
                        p += count - 1;
                        let mut buf = [0u8; 4];
                        word.extend_from_slice(decoded.encode_utf8(&mut buf).as_bytes());
                    }
                    None => {
                        let shown = String::from_utf8_lossy(&input[p..input.len().min(p + 1)]);
                        return Err(format!(
                            "unsupported escape char '\\{shown}' (write '\\\\' for a literal backslash)"
                        ));
                    }
                }
            } else {
                word.push(ch);
            }
            backslash = false;
            p += 1;
            continue;
        }

        if let Some(q) = quote {
            match c {
                None => {
                    if relax {
                        break;
                    }
                    return Err("unbalanced quotes".into());
                }
                Some(ch) if ch == q => quote = None,
                Some(b'\\') if !retain_escape => backslash = true,
                Some(ch) => word.push(ch),
            }
            p += 1;
            continue;
        }

        match c {
            None => break,
            Some(ch @ (b'\'' | b'"')) => quote = Some(ch),
            Some(b'\\') if !retain_escape => backslash = true,
            Some(ch) if is_separator(ch) => {
                while p < input.len() && is_separator(input[p]) {
                    p += 1;
                }
                return Ok(Some((word, p)));
            }
            Some(ch) => word.push(ch),
        }
        p += 1;
    }
    Ok(Some((word, input.len())))
}

fn hex(b: u8) -> Option<u32> {
    (b as char).to_digit(16)
}

fn oct(b: u8) -> Option<u32> {
    (b as char).to_digit(8)
}

/// Decodes one C escape; `p` starts after the backslash. Returns the number of bytes used and
/// the character. NUL is never accepted.
fn c_unescape_one(p: &[u8]) -> Option<(usize, char)> {
    let first = *p.first()?;
    let simple = match first {
        b'a' => Some('\u{7}'),
        b'b' => Some('\u{8}'),
        b'f' => Some('\u{c}'),
        b'n' => Some('\n'),
        b'r' => Some('\r'),
        b't' => Some('\t'),
        b'v' => Some('\u{b}'),
        b'\\' => Some('\\'),
        b'"' => Some('"'),
        b'\'' => Some('\''),
        b's' => Some(' '),
        _ => None,
    };
    if let Some(ch) = simple {
        return Some((1, ch));
    }
    let digits = |n: usize, radix: fn(u8) -> Option<u32>, shift: u32| -> Option<u32> {
        let mut value = 0u32;
        for &b in p.get(1..=n)? {
            value = (value << shift) | radix(b)?;
        }
        Some(value)
    };
    let (count, code) = match first {
        b'x' => (3, digits(2, hex, 4)?),
        b'u' => (5, digits(4, hex, 4)?),
        b'U' => (9, digits(8, hex, 4)?),
        b'0'..=b'7' => {
            let a = oct(first)?;
            let b = oct(*p.get(1)?)?;
            let c = oct(*p.get(2)?)?;
            let m = (a << 6) | (b << 3) | c;
            if m > 255 {
                return None;
            }
            (3, m)
        }
        _ => return None,
    };
    if code == 0 {
        return None;
    }
    char::from_u32(code).map(|ch| (count, ch))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        split_words(s, SplitMode::Args).expect("valid args")
    }

    #[test]
    fn quotes_and_escapes_like_exec() {
        assert_eq!(
            args(r#"/some/path "an arg" "a;b\nc\td'e" a;b\nc\td 'a"b' '\110ello \127orld'"#),
            vec![
                "/some/path",
                "an arg",
                "a;b\nc\td'e",
                "a;b\nc\td",
                "a\"b",
                "Hello World"
            ]
        );
    }

    #[test]
    fn hex_and_unicode_escapes() {
        assert_eq!(args(r"\x41\u00e9\U0001F600"), vec!["Aé😀"]);
    }

    #[test]
    fn unknown_escape_is_an_error() {
        let err = split_words(r"'test\.com'", SplitMode::Args).expect_err("\\. is unknown");
        assert!(err.contains("unsupported escape char"), "{err}");
    }

    #[test]
    fn relaxed_about_unbalanced_quote_and_trailing_backslash() {
        assert_eq!(args(r#""foo bar"#), vec!["foo bar"]);
        assert_eq!(args(r"foo\"), vec!["foo"]);
    }

    #[test]
    fn empty_quoted_word_is_kept() {
        assert_eq!(args(r#"a "" b"#), vec!["a", "", "b"]);
    }

    #[test]
    fn strv_keeps_backslashes() {
        assert_eq!(
            split_words(r#"tag="{{.Name}}" a\b"#, SplitMode::Strv).expect("valid strv"),
            vec!["tag={{.Name}}", r"a\b"]
        );
    }

    #[test]
    fn only_separators_gives_nothing() {
        assert!(args("  \t ").is_empty());
        assert!(args("").is_empty());
    }
}
