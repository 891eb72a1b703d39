//! Adding an entry to the manifest text, and the canonical rendering.
//!
//! The manifest is edited by people too, so an allocation inserts the new entry's lines and
//! leaves every other byte alone. Where the file's shape makes that unsafe (flow-style
//! sections, odd indentation) the whole manifest is rendered canonically instead. Both
//! results are parsed again and must mean exactly the intended manifest.

use super::{Document, Manifest, Preview, Slot, Target};
use crate::names::{Environment, ProjectName};
use std::collections::BTreeMap;
use std::fmt::Write as _;

pub(super) const HEADER: &str = "# codeb port manifest: the single source of truth for ports on this host.\n# Ranges: production 4000-4499, staging 4500-4999, preview 5000-5999.\n";

/// Where a mapping value sits in the source.
#[derive(Debug, Clone, Default)]
pub(super) struct Place {
    pub key_line: usize,
    pub key_col: usize,
    pub value_line: usize,
    pub last_line: usize,
    pub flow: bool,
    pub null: bool,
    pub empty: bool,
    pub child_col: Option<usize>,
}

#[derive(Debug, Clone, Default)]
pub(super) struct Layout {
    pub top_col: usize,
    pub projects: Option<Place>,
    pub previews: Option<Place>,
    pub project_places: BTreeMap<ProjectName, Place>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    #[error("{0} already has a port in the manifest")]
    AlreadyAssigned(String),
    #[error("internal error: the edited manifest does not parse back ({0}); nothing was written")]
    Roundtrip(String),
}

pub(super) fn with_port(doc: &Document, target: &Target, port: u16) -> Result<String, EditError> {
    if doc.manifest.assignment(target).is_some() {
        return Err(EditError::AlreadyAssigned(target.to_string()));
    }
    let mut want = doc.manifest.clone();
    match target.pr {
        Some(pr) => {
            let key = Target::preview_key(&target.project, pr);
            want.previews.insert(
                key.clone(),
                Preview {
                    key,
                    project: target.project.clone(),
                    pr,
                    port,
                    line: 0,
                    fields: Vec::new(),
                },
            );
        }
        None => {
            let project = want.projects.entry(target.project.clone()).or_default();
            let slot = Some(Slot {
                port,
                line: 0,
                fields: Vec::new(),
            });
            match target.environment {
                Environment::Staging => project.staging = slot,
                _ => project.production = slot,
            }
        }
    }
    let expected = render(&want);
    if let Some(text) = insert_in_place(doc, target, port)
        .filter(|text| Document::parse(text).is_ok_and(|d| render(&d.manifest) == expected))
    {
        return Ok(text);
    }
    match Document::parse(&expected) {
        Ok(d) if render(&d.manifest) == expected => Ok(expected),
        Ok(_) => Err(EditError::Roundtrip(
            "canonical render is not stable".into(),
        )),
        Err(e) => Err(EditError::Roundtrip(
            e.first().map(ToString::to_string).unwrap_or_default(),
        )),
    }
}

pub(super) fn without(doc: &Document, target: &Target) -> Result<Option<String>, EditError> {
    let Some(assignment) = doc.manifest.assignment(target) else {
        return Ok(None);
    };
    let mut want = doc.manifest.clone();
    let key = match target.pr {
        Some(pr) => {
            let key = Target::preview_key(&target.project, pr);
            want.previews.remove(&key);
            key
        }
        None => {
            if let Some(p) = want.projects.get_mut(&target.project) {
                match target.environment {
                    Environment::Staging => p.staging = None,
                    _ => p.production = None,
                }
            }
            target.environment.to_string()
        }
    };
    // A project left with no port and no field goes entirely (no empty `name:` entry).
    let emptied = target.pr.is_none()
        && want
            .projects
            .get(&target.project)
            .is_some_and(|p| p.production.is_none() && p.staging.is_none() && p.fields.is_empty());
    if emptied {
        want.projects.remove(&target.project);
    }
    let expected = render(&want);
    // The entry's port stands on its key's line in the usual `key: {port: N}` form: drop it.
    let mut lines: Vec<String> = doc.text.lines().map(str::to_owned).collect();
    let idx = assignment.line.saturating_sub(1);
    let one_line = lines.get(idx).is_some_and(|l| {
        let t = l.trim_start();
        t.starts_with(&format!("{key}:")) && t.contains('{') && t.trim_end().ends_with('}')
    });
    if one_line {
        lines.remove(idx);
        if emptied {
            // The project's own key line above, past blank and comment lines.
            let name = format!("{}:", target.project);
            let mut i = idx;
            while i > 0 {
                i -= 1;
                let t = lines[i].trim();
                if t.is_empty() || t.starts_with('#') {
                    continue;
                }
                if t == name || t.starts_with(&format!("{name} #")) {
                    lines.remove(i);
                }
                break;
            }
        }
        let text = finish(lines);
        if Document::parse(&text).is_ok_and(|d| render(&d.manifest) == expected) {
            return Ok(Some(text));
        }
    }
    match Document::parse(&expected) {
        Ok(_) => Ok(Some(expected)),
        Err(e) => Err(EditError::Roundtrip(
            e.first().map(ToString::to_string).unwrap_or_default(),
        )),
    }
}

/// Inserts `block` (lines without indentation, each indented by `indent`) after line `after`.
fn insert_lines(lines: &mut Vec<String>, after: usize, indent: usize, block: &[String]) {
    let pad = " ".repeat(indent);
    let at = after.min(lines.len());
    for (i, l) in block.iter().enumerate() {
        lines.insert(at + i, format!("{pad}{l}"));
    }
}

/// Makes `key: {}` or `key:` (null) on `line` a plain `key:` ready for block children.
fn open_block(lines: &mut [String], place: &Place) -> Option<()> {
    let line = lines.get_mut(place.key_line.checked_sub(1)?)?;
    let (code, comment) = match line.find(" #") {
        Some(i) => (line[..i].to_owned(), line[i..].to_owned()),
        None => (line.clone(), String::new()),
    };
    let trimmed = code.trim_end();
    let opened = if place.empty && place.flow && place.value_line == place.key_line {
        trimmed.strip_suffix("{}")?.trim_end().to_owned()
    } else if place.null && trimmed.ends_with(':') {
        trimmed.to_owned()
    } else if place.null {
        let t = trimmed
            .strip_suffix('~')
            .or_else(|| trimmed.strip_suffix("null"))?;
        t.trim_end().to_owned()
    } else {
        return None;
    };
    if !opened.ends_with(':') {
        return None;
    }
    *line = format!("{opened}{comment}");
    Some(())
}

fn insert_in_place(doc: &Document, target: &Target, port: u16) -> Option<String> {
    let layout = &doc.layout;
    let mut lines: Vec<String> = doc.text.lines().map(str::to_owned).collect();
    let step = 2;
    let (section, place, block): (&str, Option<&Place>, Vec<String>) = match target.pr {
        Some(pr) => {
            let key = Target::preview_key(&target.project, pr);
            let entry = format!(
                "{key}: {{project: {}, pr: {pr}, port: {port}}}",
                target.project
            );
            ("previews", layout.previews.as_ref(), vec![entry])
        }
        None => {
            let entry = format!("{}: {{port: {port}}}", target.environment);
            if let Some(p) = layout.project_places.get(&target.project) {
                // The project exists: add the environment inside it.
                if p.flow && !p.empty {
                    return None;
                }
                if p.child_col.is_some() && !p.flow {
                    let col = p.child_col?;
                    insert_lines(&mut lines, p.last_line, col, &[entry]);
                } else {
                    open_block(&mut lines, p)?;
                    insert_lines(&mut lines, p.key_line, p.key_col + step, &[entry]);
                }
                return Some(finish(lines));
            }
            let block = vec![
                format!("{}:", target.project),
                format!("{}{entry}", " ".repeat(step)),
            ];
            ("projects", layout.projects.as_ref(), block)
        }
    };
    match place {
        Some(p) if !p.flow && p.child_col.is_some() => {
            insert_lines(&mut lines, p.last_line, p.child_col?, &block);
        }
        Some(p) if p.null || p.empty => {
            open_block(&mut lines, p)?;
            insert_lines(&mut lines, p.key_line, p.key_col + step, &block);
        }
        Some(_) => return None,
        None => {
            let at = lines.len();
            insert_lines(&mut lines, at, layout.top_col, &[format!("{section}:")]);
            let at = lines.len();
            insert_lines(&mut lines, at, layout.top_col + step, &block);
        }
    }
    Some(finish(lines))
}

fn finish(lines: Vec<String>) -> String {
    let mut s = lines.join("\n");
    s.push('\n');
    s
}

/// A YAML scalar that reads back as the same string.
fn scalar(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '/')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
        && s.parse::<f64>().is_err()
        && !matches!(
            s.to_ascii_lowercase().as_str(),
            "true" | "false" | "yes" | "no" | "on" | "off" | "null" | "y" | "n"
        );
    if plain {
        return s.to_owned();
    }
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn field_list(fields: &[(String, String)]) -> String {
    fields
        .iter()
        .map(|(k, v)| {
            if k == "container_port" {
                format!(", {k}: {v}")
            } else {
                format!(", {k}: {}", scalar(v))
            }
        })
        .collect()
}

pub(super) fn render(m: &Manifest) -> String {
    let mut out = String::from(HEADER);
    let _ = writeln!(out, "version: {}", m.version);
    if !m.reserved.is_empty() {
        out.push_str("reserved:\n");
        for r in &m.reserved {
            let _ = write!(out, "  - {{port: {}, name: {}", r.port, scalar(&r.name));
            if let Some(d) = &r.description {
                let _ = write!(out, ", description: {}", scalar(d));
            }
            out.push_str("}\n");
        }
    }
    if !m.projects.is_empty() {
        out.push_str("projects:\n");
        for (name, p) in &m.projects {
            let _ = writeln!(out, "  {name}:");
            for (k, v) in &p.fields {
                let v = if k == "container_port" {
                    v.clone()
                } else {
                    scalar(v)
                };
                let _ = writeln!(out, "    {k}: {v}");
            }
            for (env, slot) in [("production", &p.production), ("staging", &p.staging)] {
                if let Some(s) = slot {
                    let _ = writeln!(
                        out,
                        "    {env}: {{port: {}{}}}",
                        s.port,
                        field_list(&s.fields)
                    );
                }
            }
        }
    }
    if !m.previews.is_empty() {
        out.push_str("previews:\n");
        for (key, p) in &m.previews {
            let _ = writeln!(
                out,
                "  {}: {{project: {}, pr: {}, port: {}{}}}",
                scalar(key),
                p.project,
                p.pr,
                p.port,
                field_list(&p.fields)
            );
        }
    }
    out
}
