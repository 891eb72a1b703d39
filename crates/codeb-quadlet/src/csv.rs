//! The one-record CSV that `--mount` options use, with the rules of Go's `encoding/csv` (which
//! podman uses to read and rewrite them): `"`-quoted fields may contain commas, `""` is a quote
//! inside a quoted field, and a bare `"` inside an unquoted field is an error.

/// Splits one comma-separated record.
pub(crate) fn parse_record(input: &str) -> Result<Vec<String>, String> {
    if input.is_empty() {
        return Err("the value is empty".into());
    }
    let mut fields = Vec::new();
    let mut chars = input.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err("a quoted field is not closed (missing \")".into()),
                    Some('"') => match chars.peek() {
                        Some('"') => {
                            chars.next();
                            field.push('"');
                        }
                        None | Some(',') => break,
                        Some(_) => {
                            return Err("extraneous or missing \" in a quoted field".into());
                        }
                    },
                    Some(c) => field.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                match c {
                    ',' => break,
                    '"' => {
                        return Err("bare \" in a non-quoted field; quote the whole field".into());
                    }
                    '\n' | '\r' => return Err("the value contains a line break".into()),
                    _ => {
                        field.push(c);
                        chars.next();
                    }
                }
            }
        }
        fields.push(field);
        match chars.next() {
            None => return Ok(fields),
            Some(',') => {}
            Some(c) => return Err(format!("unexpected {c:?} after a field")),
        }
    }
}

/// Joins fields into one record, quoting the fields that need it like Go's `csv.Writer`.
pub(crate) fn write_record(fields: &[String]) -> String {
    fields
        .iter()
        .map(|f| {
            if needs_quotes(f) {
                format!("\"{}\"", f.replace('"', "\"\""))
            } else {
                f.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn needs_quotes(field: &str) -> bool {
    if field.is_empty() {
        return false;
    }
    if field == r"\." || field.contains([',', '"', '\r', '\n']) {
        return true;
    }
    field.chars().next().is_some_and(char::is_whitespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_quoted_comma() {
        let fields = parse_record(r#"type=bind,src=/tmp,"dst=/path,1""#).expect("valid");
        assert_eq!(fields, ["type=bind", "src=/tmp", "dst=/path,1"]);
        assert_eq!(write_record(&fields), r#"type=bind,src=/tmp,"dst=/path,1""#);
    }

    #[test]
    fn doubled_quotes_and_errors() {
        assert_eq!(parse_record(r#""a""b",c"#).expect("valid"), [r#"a"b"#, "c"]);
        assert!(parse_record(r#"a"b"#).is_err());
        assert!(parse_record(r#""ab"c"#).is_err());
        assert!(parse_record(r#""ab"#).is_err());
        assert_eq!(parse_record("a,,b").expect("valid"), ["a", "", "b"]);
    }

    #[test]
    fn spaces_inside_are_not_quoted() {
        let f = vec!["source=/path with spaces".to_string(), " lead".to_string()];
        assert_eq!(write_record(&f), r#"source=/path with spaces," lead""#);
    }
}
