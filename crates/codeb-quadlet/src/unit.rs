//! systemd unit-file syntax as podman's Quadlet parser reads it.
//!
//! - `[Section]` headers; a section that appears twice is merged into the first.
//! - `Key=Value` lines; whitespace around the line and after `=` is dropped.
//! - `#` and `;` start comment lines; blank lines are ignored.
//! - A line ending in `\` continues on the next line (comment and blank lines in between are
//!   skipped). A file that ends while a continuation is still open is an error here; podman
//!   silently drops the unfinished line.
//! - Keys may repeat; order is preserved. For list lookups ([`Section::all`]) an empty assignment
//!   (`Key=`) clears everything assigned before it.
//! - Drop-ins ([`UnitFile::load`]): `*.conf` files from `NAME.container.d/` and the broader
//!   directories podman also searches (`container.d/`, `PREFIX-.container.d/`,
//!   `TEMPLATE@.container.d/`), all next to the unit. A `.conf` name found in a more specific
//!   directory hides the same name in a broader one; the survivors are applied in lexical order
//!   of their file names.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Location, QuadletError};

/// One `Key=Value` assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    key: String,
    value: String,
    location: Location,
}

impl Entry {
    /// The key, as written.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The raw value (continuations joined, leading whitespace removed, quotes kept).
    pub fn value(&self) -> &str {
        &self.value
    }

    /// File and line of the assignment (the first line of a continued line).
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// The value the way podman's `Lookup` sees it: trailing whitespace removed, and one pair of
    /// surrounding double quotes stripped when the value both starts and ends with `"`.
    pub fn unquoted(&self) -> &str {
        let v = self.value.trim_end();
        if v.len() >= 2 && v.starts_with('"') && v.ends_with('"') {
            &v[1..v.len() - 1]
        } else {
            v
        }
    }
}

/// A `[Section]` with its assignments in file order (drop-ins appended).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    name: String,
    entries: Vec<Entry>,
}

impl Section {
    /// The section name without brackets.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Every assignment, in order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The distinct keys, in order of first appearance.
    pub fn keys(&self) -> Vec<&str> {
        let mut keys: Vec<&str> = Vec::new();
        for entry in &self.entries {
            if !keys.contains(&entry.key.as_str()) {
                keys.push(&entry.key);
            }
        }
        keys
    }

    /// The last assignment of `key`, even if its value is empty.
    pub fn last(&self, key: &str) -> Option<&Entry> {
        self.entries.iter().rev().find(|e| e.key == key)
    }

    /// The last value of `key` as podman's `Lookup` returns it (see [`Entry::unquoted`]).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.last(key).map(Entry::unquoted)
    }

    /// All assignments of `key` that are still in effect: an empty assignment clears the ones
    /// before it and is not returned itself.
    pub fn all(&self, key: &str) -> Vec<&Entry> {
        let mut found = Vec::new();
        for entry in self.entries.iter().filter(|e| e.key == key) {
            if entry.value.is_empty() {
                found.clear();
            } else {
                found.push(entry);
            }
        }
        found
    }
}

/// A parsed unit file, possibly with drop-ins merged in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitFile {
    path: PathBuf,
    sections: Vec<Section>,
}

impl UnitFile {
    /// Parses `text` as the unit at `path`. Nothing is read from disk: `path` names the unit (its
    /// file name decides the unit kind and default names, its directory anchors relative paths in
    /// values) and appears in error messages.
    pub fn parse(path: impl Into<PathBuf>, text: &str) -> Result<Self, QuadletError> {
        let path = path.into();
        let mut unit = Self {
            path: path.clone(),
            sections: Vec::new(),
        };
        let mut current: Option<usize> = None;

        let text = text.strip_suffix('\n').unwrap_or(text);
        let lines: Vec<&str> = text.split('\n').collect();
        let last_index = lines.len().saturating_sub(1);
        // A continued line being assembled: its text so far and its first line number.
        let mut pending: Option<(String, usize)> = None;

        for (index, raw) in lines.iter().enumerate() {
            let line_nr = index + 1;
            let mut line = raw.trim().to_string();
            let mut start = line_nr;
            if is_comment(&line) {
                // Comments and blank lines inside a continuation are skipped; outside they are
                // simply ignored.
                continue;
            }
            if line.ends_with('\\') {
                line.pop();
                if index != last_index {
                    match &mut pending {
                        Some((text, _)) => text.push_str(&line),
                        None => pending = Some((line, line_nr)),
                    }
                    continue;
                }
            }
            if let Some((before, first_line)) = pending.take() {
                line = before + &line;
                start = first_line;
            }
            unit.parse_line(&line, start, &mut current)?;
        }

        if let Some((text, first_line)) = pending {
            return Err(QuadletError::Syntax {
                location: Location::new(&path, first_line),
                message: format!(
                    "the line continues ('\\' at its end) but only comments or blank lines follow \
                     up to the end of the file: “{}”; remove the trailing backslash or add the \
                     continuation line",
                    text.trim_end()
                ),
            });
        }
        Ok(unit)
    }

    fn parse_line(
        &mut self,
        line: &str,
        line_nr: usize,
        current: &mut Option<usize>,
    ) -> Result<(), QuadletError> {
        let location = || Location::new(&self.path, line_nr);
        if let Some(name) = group_name(line) {
            if name.is_empty() || name.chars().any(|c| c == '[' || c == ']' || c.is_control()) {
                return Err(QuadletError::Syntax {
                    location: location(),
                    message: format!("invalid section name “[{name}]”"),
                });
            }
            *current = Some(self.ensure_section(name));
            return Ok(());
        }
        match line.find('=') {
            Some(eq) if eq > 0 => {
                let key = line[..eq].trim_end();
                let value = line[eq + 1..].trim_start();
                if key.is_empty() || key.starts_with(' ') {
                    return Err(QuadletError::Syntax {
                        location: location(),
                        message: format!("invalid key name “{key}”"),
                    });
                }
                let Some(section) = current.and_then(|i| self.sections.get_mut(i)) else {
                    return Err(QuadletError::Syntax {
                        location: location(),
                        message: format!(
                            "“{line}” comes before any [Section] header; put it under [Container] \
                             (or another section)"
                        ),
                    });
                };
                section.entries.push(Entry {
                    key: key.to_string(),
                    value: value.to_string(),
                    location: Location::new(&self.path, line_nr),
                });
                Ok(())
            }
            _ => Err(QuadletError::Syntax {
                location: location(),
                message: format!(
                    "“{line}” is not a Key=Value assignment, a [Section] header or a comment"
                ),
            }),
        }
    }

    fn ensure_section(&mut self, name: &str) -> usize {
        if let Some(i) = self.sections.iter().position(|s| s.name == name) {
            return i;
        }
        self.sections.push(Section {
            name: name.to_string(),
            entries: Vec::new(),
        });
        self.sections.len() - 1
    }

    /// Reads the unit at `path` and applies its drop-ins (see the module docs). A relative
    /// `path` is made absolute against the current directory first.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, QuadletError> {
        let path = std::path::absolute(path.as_ref()).map_err(|source| QuadletError::Io {
            path: path.as_ref().to_path_buf(),
            source,
        })?;
        let text = read(&path)?;
        let mut unit = Self::parse(&path, &text)?;

        let dir = path.parent().unwrap_or(Path::new("/"));
        let mut chosen: BTreeMap<String, PathBuf> = BTreeMap::new();
        for dropin_dir in drop_in_dirs(unit.file_name()) {
            let dir_path = dir.join(&dropin_dir);
            let listing = match std::fs::read_dir(&dir_path) {
                Ok(listing) => listing,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => continue,
                Err(source) => {
                    return Err(QuadletError::Io {
                        path: dir_path,
                        source,
                    });
                }
            };
            for item in listing {
                let item = item.map_err(|source| QuadletError::Io {
                    path: dir_path.clone(),
                    source,
                })?;
                let name = item.file_name().to_string_lossy().into_owned();
                if !name.ends_with(".conf") {
                    continue;
                }
                chosen.entry(name).or_insert_with(|| item.path());
            }
        }
        for dropin in chosen.values() {
            let text = read(dropin)?;
            let parsed = Self::parse(dropin, &text)?;
            unit.merge(parsed);
        }
        Ok(unit)
    }

    /// Appends the sections of `other` (a drop-in) to this unit.
    pub fn merge(&mut self, other: UnitFile) {
        for section in other.sections {
            let i = self.ensure_section(&section.name);
            if let Some(target) = self.sections.get_mut(i) {
                target.entries.extend(section.entries);
            }
        }
    }

    /// The path the unit was parsed or loaded as.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file name, e.g. `web.container`.
    pub fn file_name(&self) -> &str {
        self.path.file_name().and_then(|n| n.to_str()).unwrap_or("")
    }

    /// All sections in order of first appearance.
    pub fn sections(&self) -> &[Section] {
        &self.sections
    }

    /// The section called `name`, if present.
    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.name == name)
    }
}

fn read(path: &Path) -> Result<String, QuadletError> {
    std::fs::read_to_string(path).map_err(|source| QuadletError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn is_comment(line: &str) -> bool {
    line.is_empty() || line.starts_with('#') || line.starts_with(';')
}

/// `[Name]` followed only by spaces or tabs → `Some("Name")`.
fn group_name(line: &str) -> Option<&str> {
    let rest = line.strip_prefix('[')?;
    let end = rest.find(']')?;
    rest[end + 1..]
        .chars()
        .all(|c| c == ' ' || c == '\t')
        .then(|| &rest[..end])
}

/// The drop-in directory names podman searches for a unit file name, most specific first.
///
/// `foo-bar@inst.container` → `foo-bar@inst.container.d`, `foo-bar@.container.d`,
/// `foo-@.container.d`, `foo-.container.d`, `container.d`.
pub fn drop_in_dirs(file_name: &str) -> Vec<String> {
    let (base, ext) = match file_name.rfind('.') {
        Some(dot) => (&file_name[..dot], &file_name[dot..]),
        None => (file_name, ""),
    };
    let (unit_name, instance, is_template) = match base.split_once('@') {
        Some((unit, instance)) => (unit, instance, true),
        None => (base, "", false),
    };
    let dropin_ext = format!("{ext}.d");

    let mut dirs = vec![dropin_ext.trim_start_matches('.').to_string()];
    let parts: Vec<&str> = unit_name.split('-').collect();
    if parts.len() > 1 {
        for i in 0..parts.len() - 1 {
            let prefix = format!("{}-", parts[..=i].join("-"));
            dirs.push(format!("{prefix}{dropin_ext}"));
            if is_template {
                dirs.push(format!("{prefix}@{dropin_ext}"));
            }
        }
    }
    if !instance.is_empty() {
        dirs.push(format!("{unit_name}@{dropin_ext}"));
    }
    dirs.push(format!("{file_name}.d"));
    dirs.reverse();
    dirs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> UnitFile {
        UnitFile::parse("/units/web.container", text).expect("valid unit")
    }

    fn values(unit: &UnitFile, section: &str, key: &str) -> Vec<String> {
        unit.section(section)
            .expect("section exists")
            .all(key)
            .iter()
            .map(|e| e.value().to_string())
            .collect()
    }

    #[test]
    fn sections_keys_and_repeats_in_order() {
        let unit =
            parse("[Unit]\nDescription=web\n\n[Container]\nImage=img\nLabel=a=1\nLabel=b=2\n");
        let names: Vec<&str> = unit.sections().iter().map(Section::name).collect();
        assert_eq!(names, ["Unit", "Container"]);
        assert_eq!(values(&unit, "Container", "Label"), ["a=1", "b=2"]);
        let container = unit.section("Container").expect("container");
        assert_eq!(container.keys(), ["Image", "Label"]);
        assert_eq!(
            container.last("Label").map(|e| e.location().line),
            Some(Some(7))
        );
    }

    #[test]
    fn repeated_section_is_merged() {
        let unit =
            parse("[Container]\nImage=a\n[Service]\nRestart=always\n[Container]\nExec=run\n");
        assert_eq!(unit.sections().len(), 2);
        let keys = unit.section("Container").expect("container").keys();
        assert_eq!(keys, ["Image", "Exec"]);
    }

    #[test]
    fn comments_with_hash_and_semicolon_are_ignored() {
        let unit = parse("# top\n[Container]\n; Image=old\n# Image=older\nImage=new\n");
        assert_eq!(values(&unit, "Container", "Image"), ["new"]);
    }

    #[test]
    fn continuation_lines_join_and_keep_first_line_number() {
        let text = "[Container]\nExec=\"/bin/app\" --flag \\\n   # a comment inside\n\n  second\nImage=x\n";
        let unit = parse(text);
        let exec = unit
            .section("Container")
            .and_then(|s| s.last("Exec"))
            .expect("exec");
        assert_eq!(exec.value(), "\"/bin/app\" --flag second");
        assert_eq!(exec.location().line, Some(2));
        // Whitespace after the trailing backslash does not matter.
        let unit = parse("[Container]\nExec=a \\  \n  b\n");
        assert_eq!(values(&unit, "Container", "Exec"), ["a b"]);
    }

    #[test]
    fn backslash_on_the_last_line_is_dropped() {
        let unit = parse("[Container]\nImage=x \\");
        assert_eq!(values(&unit, "Container", "Image"), ["x "]);
    }

    #[test]
    fn empty_assignment_resets_a_list() {
        let unit = parse("[Container]\nEnvironment=A=1\nEnvironment=\nEnvironment=B=2\n");
        assert_eq!(values(&unit, "Container", "Environment"), ["B=2"]);
        let unit = parse("[Container]\nEnvironment=A=1\nEnvironment=\n");
        assert!(values(&unit, "Container", "Environment").is_empty());
    }

    #[test]
    fn lookup_strips_one_pair_of_double_quotes() {
        let unit = parse("[Container]\nImage=\"img\"\nContainerName=\"a\"b\"\nHealthCmd='x'\n");
        let c = unit.section("Container").expect("container");
        assert_eq!(c.get("Image"), Some("img"));
        assert_eq!(c.get("ContainerName"), Some("a\"b"));
        assert_eq!(c.get("HealthCmd"), Some("'x'"));
    }

    #[test]
    fn errors_carry_file_and_line() {
        let err = UnitFile::parse("/u/web.container", "[Container]\nImage=x\njust words\n")
            .expect_err("line 3 is garbage");
        assert_eq!(err.location(), Some(&Location::new("/u/web.container", 3)));
        assert!(err.to_string().starts_with("/u/web.container:3: "), "{err}");

        let err = UnitFile::parse("/u/web.container", "Image=x\n").expect_err("no section");
        assert!(err.to_string().contains("/u/web.container:1:"), "{err}");

        let err = UnitFile::parse("/u/web.container", "[Container]\n=x\n").expect_err("no key");
        assert!(err.to_string().contains(":2:"), "{err}");

        let err = UnitFile::parse("/u/web.container", "[]\n").expect_err("empty section");
        assert!(
            err.to_string().contains(":1: invalid section name"),
            "{err}"
        );
    }

    #[test]
    fn unfinished_continuation_is_an_error() {
        let err = UnitFile::parse("/u/a.container", "[Container]\nExec=true \\\n\n# c\n")
            .expect_err("continuation never finished");
        assert!(err.to_string().starts_with("/u/a.container:2: "), "{err}");
    }

    #[test]
    fn section_header_may_have_trailing_blanks() {
        let unit = parse("[Container]  \t\nImage=x\n");
        assert!(unit.section("Container").is_some());
    }

    #[test]
    fn drop_in_search_order() {
        assert_eq!(
            drop_in_dirs("foo-bar@inst.container"),
            [
                "foo-bar@inst.container.d",
                "foo-bar@.container.d",
                "foo-@.container.d",
                "foo-.container.d",
                "container.d"
            ]
        );
        assert_eq!(
            drop_in_dirs("web.container"),
            ["web.container.d", "container.d"]
        );
    }

    #[test]
    fn load_applies_drop_ins_in_lexical_order_most_specific_wins() -> Result<(), QuadletError> {
        let tmp = tempfile::tempdir().expect("temporary directory");
        let dir = tmp.path().to_path_buf();
        let write = |rel: &str, text: &str| {
            let p = dir.join(rel);
            std::fs::create_dir_all(p.parent().expect("has parent")).expect("mkdir");
            std::fs::write(p, text).expect("write");
        };
        write(
            "web.container",
            "[Container]\nImage=a\nEnvironment=MAIN=1\n",
        );
        write(
            "web.container.d/20-b.conf",
            "[Container]\nEnvironment=\nEnvironment=B=2\n",
        );
        write(
            "web.container.d/10-a.conf",
            "[Container]\nEnvironment=A=1\n",
        );
        write(
            "container.d/10-a.conf",
            "[Container]\nEnvironment=HIDDEN=1\n",
        );
        write("container.d/30-c.conf", "[Service]\nRestart=always\n");
        write("web.container.d/notes.txt", "not a drop-in");

        let unit = UnitFile::load(dir.join("web.container"))?;
        let env: Vec<&str> = unit
            .section("Container")
            .expect("container")
            .all("Environment")
            .iter()
            .map(|e| e.value())
            .collect();
        assert_eq!(env, ["B=2"]);
        let restart = unit.section("Service").and_then(|s| s.get("Restart"));
        assert_eq!(restart, Some("always"));
        let b = unit
            .section("Container")
            .and_then(|s| s.last("Environment"))
            .expect("B");
        assert!(b.location().file.ends_with("web.container.d/20-b.conf"));
        assert_eq!(b.location().line, Some(3));
        Ok(())
    }

    #[test]
    fn load_reports_missing_file() {
        let err = UnitFile::load("/nonexistent/codeb/web.container").expect_err("missing");
        assert!(
            err.to_string().contains("/nonexistent/codeb/web.container"),
            "{err}"
        );
    }
}
