//! Turns the marked YAML tree into a [`Manifest`], collecting every structural error with its
//! line, and records the layout that [`super::edit`] needs to insert entries in place.

use super::edit::{Layout, Place};
use super::tree::{self, Kind, Node};
use super::{
    Manifest, PREVIEW_FIELDS, PROJECT_FIELDS, ParseError, Preview, Project, ReservedEntry,
    SLOT_FIELDS, Slot, VERSION,
};
use crate::names::ProjectName;
use std::fmt;

/// What a message is about. Messages are rare, so the description is only formatted when one
/// is written: `Dotted(a, b)` reads `a.b`, `Quoted(a, b)` reads ``a `b` ``.
struct Dotted<'a>(&'a dyn fmt::Display, &'a str);
struct Quoted<'a>(&'a str, &'a dyn fmt::Display);

impl fmt::Display for Dotted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.0, self.1)
    }
}

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} `{}`", self.0, self.1)
    }
}

/// Mappings with more entries than this are checked for duplicate keys through a hash set.
const SCAN_KEYS: usize = 16;

struct Cx {
    errors: Vec<ParseError>,
}

impl Cx {
    fn err(&mut self, line: usize, message: impl Into<String>) {
        self.errors.push(ParseError {
            line,
            message: message.into(),
        });
    }

    /// The entries of a mapping node, or an error naming what was expected.
    fn map<'n>(&mut self, node: &'n Node, what: &dyn fmt::Display) -> Option<&'n [(Node, Node)]> {
        match &node.kind {
            Kind::Map(entries) => Some(entries),
            Kind::Alias => {
                self.err(
                    node.line,
                    format!("{what}: YAML aliases are not supported in the port manifest; write the value out"),
                );
                None
            }
            _ => {
                self.err(
                    node.line,
                    format!("{what} must be a mapping, found {}", node.describe()),
                );
                None
            }
        }
    }

    fn key<'n>(&mut self, node: &'n Node, what: &dyn fmt::Display) -> Option<&'n str> {
        match &node.kind {
            Kind::Scalar { value, .. } => Some(value),
            _ => {
                self.err(node.line, format!("{what}: keys must be plain names"));
                None
            }
        }
    }

    fn scalar<'n>(&mut self, node: &'n Node, what: &dyn fmt::Display) -> Option<&'n str> {
        match &node.kind {
            Kind::Scalar { value, .. } if !node.is_null() => Some(value),
            _ => {
                self.err(
                    node.line,
                    format!("{what} must be a single value, found {}", node.describe()),
                );
                None
            }
        }
    }

    fn number(&mut self, node: &Node, what: &dyn fmt::Display) -> Option<u64> {
        let text = self.scalar(node, what)?;
        let plain = matches!(node.kind, Kind::Scalar { plain: true, .. });
        match text.parse::<u64>() {
            Ok(n) if plain => Some(n),
            _ => {
                self.err(
                    node.line,
                    format!("{what} must be a whole number, found `{text}`"),
                );
                None
            }
        }
    }

    fn port(&mut self, node: &Node, what: &dyn fmt::Display) -> Option<u16> {
        let n = self.number(node, what)?;
        match u16::try_from(n) {
            Ok(p) if p > 0 => Some(p),
            _ => {
                self.err(
                    node.line,
                    format!("{what} {n} is not a TCP port; ports are 1-65535"),
                );
                None
            }
        }
    }

    fn project_name(&mut self, node: &Node, text: &str) -> Option<ProjectName> {
        match ProjectName::new(text) {
            Ok(n) => Some(n),
            Err(e) => {
                self.err(node.line, e.to_string());
                None
            }
        }
    }

    /// Checks every key of `entries` against `allowed` and for duplicates.
    fn keys_ok(&mut self, entries: &[(Node, Node)], allowed: &[&str], what: &dyn fmt::Display) {
        // Entries are few except in the big sections: scan small mappings, hash large ones.
        let mut seen = (entries.len() > SCAN_KEYS)
            .then(|| std::collections::HashSet::<&str>::with_capacity(entries.len()));
        for (i, (k, _)) in entries.iter().enumerate() {
            let Some(key) = self.key(k, what) else {
                continue;
            };
            let duplicate = match &mut seen {
                Some(seen) => !seen.insert(key),
                None => entries[..i]
                    .iter()
                    .any(|(e, _)| matches!(&e.kind, Kind::Scalar { value, .. } if value == key)),
            };
            if duplicate {
                self.err(k.line, format!("{what}: duplicate key `{key}`"));
            }
            if !allowed.is_empty() && !allowed.contains(&key) {
                self.err(
                    k.line,
                    format!(
                        "{what}: unknown key `{key}`; allowed keys are: {}",
                        allowed.join(", ")
                    ),
                );
            }
        }
    }

    /// The optional descriptive fields of an entry, as strings (numbers checked).
    fn fields(
        &mut self,
        entries: &[(Node, Node)],
        skip: &[&str],
        what: &dyn fmt::Display,
    ) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (k, v) in entries {
            let Kind::Scalar { value: key, .. } = &k.kind else {
                continue;
            };
            if skip.contains(&key.as_str()) {
                continue;
            }
            if key == "container_port" {
                if let Some(p) = self.port(v, &Dotted(what, "container_port")) {
                    out.push((key.clone(), p.to_string()));
                }
            } else if let Some(s) = self.scalar(v, &Dotted(what, key)) {
                out.push((key.clone(), s.to_owned()));
            }
        }
        out
    }
}

fn get<'n>(entries: &'n [(Node, Node)], key: &str) -> Option<&'n Node> {
    entries.iter().find_map(|(k, v)| match &k.kind {
        Kind::Scalar { value, .. } if value == key => Some(v),
        _ => None,
    })
}

fn place(key: &Node, value: &Node) -> Place {
    Place {
        key_line: key.line,
        key_col: key.col,
        value_line: value.line,
        last_line: value.last_line.max(key.line),
        flow: value.flow,
        null: value.is_null(),
        empty: matches!(&value.kind, Kind::Map(e) if e.is_empty()),
        child_col: match &value.kind {
            Kind::Map(e) => e.first().map(|(k, _)| k.col),
            _ => None,
        },
    }
}

pub(super) fn convert(text: &str) -> Result<(Manifest, Layout), Vec<ParseError>> {
    // Plain ASCII text without control characters (the common case) needs no closer look.
    let plain = text
        .bytes()
        .all(|b| matches!(b, b'\t' | b'\n' | b' '..=b'~'));
    if let Some((n, line)) = text
        .lines()
        .enumerate()
        .take_while(|_| !plain)
        .find(|(_, l)| l.chars().any(|c| c.is_control() && c != '\t'))
    {
        let c = line
            .chars()
            .find(|c| c.is_control() && *c != '\t')
            .unwrap_or_default();
        return Err(vec![ParseError {
            line: n + 1,
            message: format!(
                "the manifest holds a control character (U+{:04X}); it must be plain YAML text",
                u32::from(c)
            ),
        }]);
    }
    let docs = tree::parse(text).map_err(|e| {
        vec![ParseError {
            line: e.line,
            message: format!("invalid YAML: {} (column {})", e.message, e.col),
        }]
    })?;
    let mut cx = Cx { errors: Vec::new() };
    let root = match docs.as_slice() {
        [] => {
            cx.err(1, "the manifest is empty; it must start with `version: 1`");
            return Err(cx.errors);
        }
        [one] => one,
        [_, second, ..] => {
            cx.err(second.line, "the manifest must be a single YAML document");
            return Err(cx.errors);
        }
    };
    let mut manifest = Manifest::default();
    let mut layout = Layout::default();
    let Some(top) = cx.map(root, &"the manifest") else {
        return Err(cx.errors);
    };
    cx.keys_ok(
        top,
        &["version", "reserved", "projects", "previews"],
        &"the manifest",
    );
    layout.top_col = top.first().map(|(k, _)| k.col).unwrap_or(0);

    match get(top, "version") {
        None => cx.err(
            1,
            format!("the manifest has no `version`; add `version: {VERSION}` at the top"),
        ),
        Some(v) => {
            if let Some(n) = cx.number(v, &"version") {
                if n != VERSION {
                    cx.err(v.line, format!("manifest version {n} is not supported; this codeb reads version {VERSION}"));
                }
                manifest.version = n;
            }
        }
    }

    if let Some(list) = get(top, "reserved").filter(|n| !n.is_null()) {
        match &list.kind {
            Kind::Seq(items) => {
                for item in items {
                    let Some(e) = cx.map(item, &"a reserved entry") else {
                        continue;
                    };
                    cx.keys_ok(e, &["port", "name", "description"], &"a reserved entry");
                    let port = match get(e, "port") {
                        Some(p) => cx.port(p, &"reserved port"),
                        None => {
                            cx.err(item.line, "a reserved entry needs a `port`");
                            None
                        }
                    };
                    let name = match get(e, "name") {
                        Some(n) => cx.scalar(n, &"reserved name").map(str::to_owned),
                        None => {
                            cx.err(
                                item.line,
                                "a reserved entry needs a `name` saying what uses the port",
                            );
                            None
                        }
                    };
                    let description = get(e, "description")
                        .and_then(|d| cx.scalar(d, &"reserved description").map(str::to_owned));
                    if let (Some(port), Some(name)) = (port, name) {
                        let line = get(e, "port").map_or(item.line, |p| p.line);
                        manifest.reserved.push(ReservedEntry {
                            port,
                            name,
                            description,
                            line,
                        });
                    }
                }
            }
            _ => cx.err(
                list.line,
                format!(
                    "`reserved` must be a list of {{port, name}} entries, found {}",
                    list.describe()
                ),
            ),
        }
    }

    if let Some((key, value)) = top
        .iter()
        .find(|(k, _)| matches!(&k.kind, Kind::Scalar { value, .. } if value == "projects"))
    {
        layout.projects = Some(place(key, value));
        let project_keys: Vec<&str> = ["production", "staging"]
            .iter()
            .chain(PROJECT_FIELDS)
            .copied()
            .collect();
        let entries = if value.is_null() {
            None
        } else {
            cx.map(value, &"`projects`")
        };
        if let Some(entries) = entries {
            cx.keys_ok(entries, &[], &"`projects`");
            // Collected first and built in one go: much cheaper than inserting one by one.
            // Duplicate names are errors; either way the last one would win.
            let mut projects = Vec::with_capacity(entries.len());
            let mut places = Vec::with_capacity(entries.len());
            for (k, v) in entries {
                let Some(name) = cx.key(k, &"`projects`") else {
                    continue;
                };
                let Some(name) = cx.project_name(k, name) else {
                    continue;
                };
                places.push((name.clone(), place(k, v)));
                let mut project = Project {
                    line: k.line,
                    ..Project::default()
                };
                if !v.is_null() {
                    let what = Quoted("project", &name);
                    let Some(pe) = cx.map(v, &what) else { continue };
                    cx.keys_ok(pe, &project_keys, &what);
                    project.fields = cx.fields(pe, &["production", "staging"], &what);
                    for env in ["production", "staging"] {
                        let Some(sv) = get(pe, env) else { continue };
                        let what = Dotted(&name, env);
                        let Some(se) = cx.map(sv, &what) else {
                            continue;
                        };
                        cx.keys_ok(se, SLOT_FIELDS, &what);
                        let Some(pnode) = get(se, "port") else {
                            cx.err(
                                sv.line,
                                format!(
                                    "{what} needs a `port` (or remove the entry and use --allocate)"
                                ),
                            );
                            continue;
                        };
                        let Some(port) = cx.port(pnode, &Dotted(&what, "port")) else {
                            continue;
                        };
                        let slot = Slot {
                            port,
                            line: pnode.line,
                            fields: cx.fields(se, &["port"], &what),
                        };
                        if env == "production" {
                            project.production = Some(slot);
                        } else {
                            project.staging = Some(slot);
                        }
                    }
                }
                projects.push((name, project));
            }
            manifest.projects = projects.into_iter().collect();
            layout.project_places = places.into_iter().collect();
        }
    }

    if let Some((key, value)) = top
        .iter()
        .find(|(k, _)| matches!(&k.kind, Kind::Scalar { value, .. } if value == "previews"))
    {
        layout.previews = Some(place(key, value));
        let entries = if value.is_null() {
            None
        } else {
            cx.map(value, &"`previews`")
        };
        if let Some(entries) = entries {
            cx.keys_ok(entries, &[], &"`previews`");
            let mut previews = Vec::with_capacity(entries.len());
            for (k, v) in entries {
                let Some(pkey) = cx.key(k, &"`previews`") else {
                    continue;
                };
                let what = Quoted("preview", &pkey);
                let Some(pe) = cx.map(v, &what) else { continue };
                cx.keys_ok(pe, PREVIEW_FIELDS, &what);
                let missing = |field: &str, cx: &mut Cx| {
                    cx.err(k.line, format!("{what} needs `{field}`"));
                };
                let project = match get(pe, "project") {
                    Some(n) => cx
                        .scalar(n, &Dotted(&what, "project"))
                        .and_then(|s| cx.project_name(n, s)),
                    None => {
                        missing("project", &mut cx);
                        None
                    }
                };
                let pr = match get(pe, "pr") {
                    Some(n) => cx.number(n, &Dotted(&what, "pr")),
                    None => {
                        missing("pr", &mut cx);
                        None
                    }
                };
                let pnode = get(pe, "port");
                let port = match pnode {
                    Some(n) => cx.port(n, &Dotted(&what, "port")),
                    None => {
                        missing("port", &mut cx);
                        None
                    }
                };
                let fields = cx.fields(pe, &["project", "pr", "port"], &what);
                if let (Some(project), Some(pr), Some(port), Some(pnode)) =
                    (project, pr, port, pnode)
                {
                    previews.push((
                        pkey.to_owned(),
                        Preview {
                            key: pkey.to_owned(),
                            project,
                            pr,
                            port,
                            line: pnode.line,
                            fields,
                        },
                    ));
                }
            }
            manifest.previews = previews.into_iter().collect();
        }
    }

    if cx.errors.is_empty() {
        Ok((manifest, layout))
    } else {
        cx.errors.sort_by_key(|e| e.line);
        Err(cx.errors)
    }
}
