//! A fast path for the strictly line-oriented subset of YAML that codeb writes and that people
//! hand-write in the documented shape. It builds exactly the tree [`super::tree`] builds from
//! yaml-rust2's events (same values, positions and styles), and gives up (`None`) on anything
//! outside the subset, in which case yaml-rust2 parses the text as usual. It never reports an
//! error: syntax errors always come from yaml-rust2.
//!
//! The subset, line by line (blank lines and comment lines are skipped anywhere):
//!
//! - indentation by spaces only; a line more indented than its parent opens that parent's
//!   value, and a dedent must come back to an enclosing level exactly;
//! - `key:` (the value is the block on the following, more indented lines, or an indentless
//!   `- ` list at the key's own indentation, or null when neither follows),
//!   `key: scalar`, `key: {a: b, c: d}`, `key: {}`, `key: []`;
//! - list entries `- scalar`, `- {a: b}`, `- {}`, `- []`;
//! - plain scalars only: keys are `[A-Za-z0-9_./@+-]` starting with a letter, digit or `_`;
//!   block values may also hold spaces, `,` and `:` not followed by a space, and may start
//!   with `/`; values inside `{...}` hold none of those;
//! - a comment ` #...` may end any line.
//!
//! No tabs, carriage returns, quotes, anchors, aliases, tags, directives, document markers,
//! block scalars, multi-line scalars or multi-line flow collections: for all of those (and for
//! lines longer than [`MAX_LINE`]) the parser returns `None`.
//!
//! Positions follow yaml-rust2's marks, which are not always where one would look: a block
//! mapping starts at its first `:`, a block sequence at its first `-`, an indentless sequence
//! at its first entry's value (and counts as flow style, ending at the next token, when that
//! value is `{...}` or `[]`), and an empty value sits at the next token or where the text ends
//! (see `Parser::next_mark`). The tests compare every accepted text with yaml-rust2's tree.

use super::tree::{Kind, Node};

/// Longer lines go to yaml-rust2 (which, like the YAML spec, limits implicit keys to 1024
/// characters).
const MAX_LINE: usize = 512;
/// Deeper nesting goes to yaml-rust2.
const MAX_DEPTH: usize = 32;

#[derive(Clone, Copy)]
struct Line<'a> {
    /// 1-based line number.
    no: usize,
    /// Leading spaces.
    indent: usize,
    /// The text after the indentation, without a trailing comment and trailing spaces;
    /// never empty, always ASCII.
    code: &'a str,
}

struct Parser<'a> {
    lines: Vec<Line<'a>>,
    pos: usize,
    /// The last line (1-based), and its length in characters: where yaml-rust2's scanner
    /// stands when it reaches the end of the text.
    end: (usize, usize),
}

/// Parses `text` if it lies entirely within the subset, else `None`.
pub(crate) fn parse(text: &str) -> Option<Vec<Node>> {
    let mut lines = Vec::with_capacity(text.len() / 16 + 1);
    let mut no = 0;
    let mut last = "";
    for raw in text.split('\n') {
        no += 1;
        last = raw;
        if raw.len() > MAX_LINE {
            return None;
        }
        let bytes = raw.as_bytes();
        let indent = bytes.iter().take_while(|&&b| b == b' ').count();
        let end = match bytes.iter().position(|&b| b == b'#') {
            Some(h) => {
                // A comment starts a line or follows a space; `a#b` is a scalar.
                if h > indent && bytes[h - 1] != b' ' {
                    return None;
                }
                if !raw[h..].chars().all(comment_char) {
                    return None;
                }
                h
            }
            None => bytes.len(),
        };
        let code = raw[indent..end].trim_end_matches(' ');
        if !code.bytes().all(code_byte) {
            return None;
        }
        if !code.is_empty() {
            lines.push(Line { no, indent, code });
        }
    }
    let end = (no, last.chars().count());
    if lines.is_empty() {
        return Some(Vec::new());
    }
    let mut p = Parser { lines, pos: 0, end };
    let root = p.block(0)?;
    if p.pos != p.lines.len() {
        return None;
    }
    Some(vec![root])
}

/// Anything a comment may hold: no line breaks or other control characters, and nothing that
/// some YAML reader might take for a line break or byte order mark.
fn comment_char(c: char) -> bool {
    !c.is_control() && !matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}')
}

/// The bytes the code part of a line may hold at all (the grammar below is stricter).
fn code_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b' ' | b'_'
                | b'.'
                | b'/'
                | b'@'
                | b'+'
                | b'-'
                | b':'
                | b'{'
                | b'}'
                | b','
                | b'['
                | b']'
        )
}

/// A character of a key, or of a value inside `{...}`.
fn word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'/' | b'@' | b'+' | b'-')
}

/// How a key may start.
fn key_start(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// How a value may start.
fn value_start(b: u8) -> bool {
    key_start(b) || b == b'/'
}

fn is_entry(code: &str) -> bool {
    code.starts_with("- ")
}

fn scalar(value: &str, line: usize, col: usize) -> Node {
    Node {
        kind: Kind::Scalar {
            value: value.to_owned(),
            plain: true,
        },
        line,
        col,
        last_line: line,
        flow: false,
    }
}

/// A block collection, its last line being the last line of its last child.
fn block_node(kind: Kind, line: usize, col: usize) -> Node {
    let last_line = match &kind {
        Kind::Map(entries) => entries
            .iter()
            .map(|(_, v)| v.last_line)
            .fold(line, usize::max),
        Kind::Seq(items) => items.iter().map(|n| n.last_line).fold(line, usize::max),
        _ => line,
    };
    Node {
        kind,
        line,
        col,
        last_line,
        flow: false,
    }
}

/// Splits `key: rest` (or `key:`), returning the key and the rest with its offset in `code`.
fn split_key(code: &str) -> Option<(&str, &str, usize)> {
    let b = code.as_bytes();
    if !key_start(*b.first()?) {
        return None;
    }
    let n = b.iter().take_while(|&&c| word_byte(c)).count();
    if b.get(n) != Some(&b':') {
        return None;
    }
    match b.get(n + 1) {
        None => Some((&code[..n], "", code.len())),
        Some(b' ') => {
            let rest = code[n + 1..].trim_start_matches(' ');
            Some((&code[..n], rest, code.len() - rest.len()))
        }
        Some(_) => None,
    }
}

/// A value written on the line itself: a plain scalar, `{...}` or `[]`.
fn inline(s: &str, line: usize, col: usize) -> Option<Node> {
    let b = s.as_bytes();
    match *b.first()? {
        b'{' => flow_map(s, line, col),
        b'[' if s == "[]" => Some(Node {
            kind: Kind::Seq(Vec::new()),
            line,
            col,
            last_line: line,
            flow: true,
        }),
        c if value_start(c) => {
            for (i, &c) in b.iter().enumerate() {
                let ok = word_byte(c)
                    || c == b' '
                    || c == b','
                    // `a:b` is one scalar; `a: b` would be a nested mapping.
                    || (c == b':' && b.get(i + 1).is_some_and(|&n| n != b' '));
                if !ok {
                    return None;
                }
            }
            Some(scalar(s, line, col))
        }
        _ => None,
    }
}

/// `{a: b, c: d}` or `{}`, entirely on this line, with plain keys and values.
fn flow_map(s: &str, line: usize, col: usize) -> Option<Node> {
    let b = s.as_bytes();
    let spaces = |mut i: usize| {
        while b.get(i) == Some(&b' ') {
            i += 1;
        }
        i
    };
    let word = |i: usize| {
        let n = b[i..].iter().take_while(|&&c| word_byte(c)).count();
        (n > 0).then_some(i + n)
    };
    let mut entries = Vec::new();
    let mut i = spaces(1);
    if b.get(i) == Some(&b'}') {
        i += 1;
    } else {
        loop {
            if !key_start(*b.get(i)?) {
                return None;
            }
            let end = word(i)?;
            let key = scalar(&s[i..end], line, col + i);
            if b.get(end) != Some(&b':') || b.get(end + 1) != Some(&b' ') {
                return None;
            }
            i = spaces(end + 1);
            if !value_start(*b.get(i)?) {
                return None;
            }
            let end = word(i)?;
            entries.push((key, scalar(&s[i..end], line, col + i)));
            i = spaces(end);
            match b.get(i) {
                Some(b',') => i = spaces(i + 1),
                Some(b'}') => {
                    i += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    if i != b.len() {
        return None;
    }
    Some(Node {
        kind: Kind::Map(entries),
        line,
        col,
        last_line: line,
        flow: true,
    })
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<Line<'a>> {
        self.lines.get(self.pos).copied()
    }

    /// Where yaml-rust2 marks the next token (and so an empty value, or the end of an
    /// indentless sequence) after the current line, inside a block at `indent`: the start of
    /// the next line with content. At the end of the text, the block ends where the scanner
    /// stands if that is left of `indent`; else the stream ends at the start of a line, which
    /// the scanner adds when the text does not end with a line break.
    fn next_mark(&self, indent: usize) -> (usize, usize) {
        match self.peek() {
            Some(l) => (l.no, l.indent),
            None => match self.end {
                (line, col) if col < indent => (line, col),
                (line, 0) => (line, 0),
                (line, _) => (line + 1, 0),
            },
        }
    }

    /// A value on the line itself cannot continue on more indented lines.
    fn no_continuation(&self, indent: usize) -> Option<()> {
        match self.peek() {
            Some(l) if l.indent > indent => None,
            _ => Some(()),
        }
    }

    /// The block collection starting at the current line.
    fn block(&mut self, depth: usize) -> Option<Node> {
        if depth > MAX_DEPTH {
            return None;
        }
        let first = self.peek()?;
        if is_entry(first.code) {
            self.seq(first.indent, false)
        } else {
            self.map(first.indent, depth)
        }
    }

    fn map(&mut self, indent: usize, depth: usize) -> Option<Node> {
        let start = self.peek()?.no;
        // yaml-rust2 marks a block mapping where its first `:` is.
        let mut col = None;
        let mut entries = Vec::new();
        while let Some(line) = self.peek() {
            if line.indent != indent {
                break;
            }
            let (key, rest, offset) = split_key(line.code)?;
            col.get_or_insert(indent + key.len());
            let key = scalar(key, line.no, indent);
            self.pos += 1;
            let value = if rest.is_empty() {
                match self.peek() {
                    Some(next) if next.indent > indent => self.block(depth + 1)?,
                    Some(next) if next.indent == indent && is_entry(next.code) => {
                        self.seq(indent, true)?
                    }
                    _ => {
                        let (l, c) = self.next_mark(indent);
                        scalar("", l, c)
                    }
                }
            } else {
                let value = inline(rest, line.no, indent + offset)?;
                self.no_continuation(indent)?;
                value
            };
            entries.push((key, value));
        }
        Some(block_node(Kind::Map(entries), start, col?))
    }

    /// A block sequence; `indentless` when its `- ` sit at the indentation of the key that
    /// holds it.
    fn seq(&mut self, indent: usize, indentless: bool) -> Option<Node> {
        let start = self.peek()?.no;
        let mut items = Vec::new();
        while let Some(line) = self.peek() {
            if line.indent != indent || !is_entry(line.code) {
                break;
            }
            let rest = line.code[1..].trim_start_matches(' ');
            let col = indent + line.code.len() - rest.len();
            self.pos += 1;
            items.push(inline(rest, line.no, col)?);
            self.no_continuation(indent)?;
        }
        let mut node = block_node(Kind::Seq(items), start, indent);
        if indentless {
            // yaml-rust2 marks an indentless sequence at its first entry's value (so it looks
            // like flow style when that value is `{...}` or `[]`), and ends it at the next
            // token.
            let Kind::Seq(items) = &node.kind else {
                return None;
            };
            let first = items.first()?;
            node.col = first.col;
            node.flow = first.flow;
            if node.flow {
                node.last_line = node.last_line.max(self.next_mark(indent).0);
            }
        }
        Some(node)
    }
}

#[cfg(test)]
#[path = "fast_tests.rs"]
mod tests;
