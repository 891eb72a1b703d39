//! A YAML tree that remembers where every node came from (line, column, flow or block style),
//! built from yaml-rust2's marked events. The manifest is small; keeping positions lets every
//! error name its line and lets allocation insert one line instead of rewriting the file.

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Node {
    pub kind: Kind,
    /// 1-based line of the node's first character.
    pub line: usize,
    /// 0-based column (in characters) of the node's first character.
    pub col: usize,
    /// The last line holding any part of this node.
    pub last_line: usize,
    /// Written in flow style (`{...}` / `[...]`).
    pub flow: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    Scalar { value: String, plain: bool },
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
    Alias,
}

impl Node {
    pub fn is_null(&self) -> bool {
        matches!(&self.kind, Kind::Scalar { value, plain: true } if matches!(value.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    pub fn describe(&self) -> &'static str {
        match &self.kind {
            Kind::Scalar { .. } if self.is_null() => "nothing (null)",
            Kind::Scalar { .. } => "a scalar",
            Kind::Seq(_) => "a list",
            Kind::Map(_) => "a mapping",
            Kind::Alias => "an alias",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SyntaxError {
    pub line: usize,
    pub col: usize,
    pub message: String,
}

enum Open {
    Seq(Node, Vec<Node>),
    Map(Node, Vec<(Node, Node)>, Option<Node>),
}

struct Builder<'a> {
    lines: Vec<&'a str>,
    stack: Vec<Open>,
    docs: Vec<Node>,
}

impl Builder<'_> {
    fn starts_flow(&self, mark: Marker) -> bool {
        self.lines
            .get(mark.line().saturating_sub(1))
            .and_then(|l| l.chars().nth(mark.col()))
            .is_some_and(|c| c == '{' || c == '[')
    }

    fn node(&self, kind: Kind, mark: Marker) -> Node {
        let flow = self.starts_flow(mark);
        Node {
            kind,
            line: mark.line(),
            col: mark.col(),
            last_line: mark.line(),
            flow,
        }
    }

    fn push(&mut self, node: Node) {
        match self.stack.last_mut() {
            None => self.docs.push(node),
            Some(Open::Seq(_, items)) => items.push(node),
            Some(Open::Map(_, entries, pending)) => match pending.take() {
                None => *pending = Some(node),
                Some(key) => entries.push((key, node)),
            },
        }
    }
}

impl MarkedEventReceiver for Builder<'_> {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::Scalar(value, style, _, _) => {
                let plain = style == TScalarStyle::Plain;
                let extra = if matches!(style, TScalarStyle::Literal | TScalarStyle::Folded) {
                    value.matches('\n').count()
                } else {
                    0
                };
                let mut node = self.node(Kind::Scalar { value, plain }, mark);
                node.flow = false;
                node.last_line += extra;
                self.push(node);
            }
            Event::Alias(_) => {
                let node = self.node(Kind::Alias, mark);
                self.push(node);
            }
            Event::SequenceStart(..) => {
                let node = self.node(Kind::Seq(Vec::new()), mark);
                self.stack.push(Open::Seq(node, Vec::new()));
            }
            Event::MappingStart(..) => {
                let node = self.node(Kind::Map(Vec::new()), mark);
                self.stack.push(Open::Map(node, Vec::new(), None));
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let Some(open) = self.stack.pop() else { return };
                let mut node = match open {
                    Open::Seq(mut node, items) => {
                        node.last_line = items
                            .iter()
                            .map(|n| n.last_line)
                            .fold(node.line, usize::max);
                        node.kind = Kind::Seq(items);
                        node
                    }
                    Open::Map(mut node, entries, _) => {
                        node.last_line = entries
                            .iter()
                            .map(|(_, v)| v.last_line)
                            .fold(node.line, usize::max);
                        node.kind = Kind::Map(entries);
                        node
                    }
                };
                if node.flow {
                    // The closing bracket may sit on a later line than the last child.
                    node.last_line = node.last_line.max(mark.line());
                }
                self.push(node);
            }
            Event::Nothing
            | Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart
            | Event::DocumentEnd => {}
        }
    }
}

/// Parses `text` into documents of marked nodes with yaml-rust2.
pub(crate) fn parse(text: &str) -> Result<Vec<Node>, SyntaxError> {
    let mut builder = Builder {
        lines: text.lines().collect(),
        stack: Vec::new(),
        docs: Vec::new(),
    };
    let mut parser = Parser::new_from_str(text);
    parser.load(&mut builder, true).map_err(|e| SyntaxError {
        line: e.marker().line(),
        col: e.marker().col() + 1,
        message: e.info().to_owned(),
    })?;
    Ok(builder.docs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_and_styles() {
        let text = "a:\n  b: {c: 1}\n  d:\n    - 2\n    - 3\n";
        let docs = parse(text).expect("valid yaml");
        let Kind::Map(top) = &docs[0].kind else {
            panic!("map")
        };
        let (_, a) = &top[0];
        assert!(!a.flow);
        assert_eq!((a.line, a.last_line), (2, 5));
        let Kind::Map(inner) = &a.kind else {
            panic!("map")
        };
        assert!(inner[0].1.flow);
        assert_eq!(inner[1].1.last_line, 5);
    }

    #[test]
    fn syntax_error_has_line() {
        let err = parse("a: [1, 2\nb: 3\n").expect_err("unclosed flow");
        assert!(err.line >= 1, "{err:?}");
    }
}
