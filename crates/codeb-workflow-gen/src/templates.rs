//! The template set: the Tera templates, the type table and the pin table, embedded in the
//! binary from the repository's `templates/workflows/`, each file overridable from a directory.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;
use tera::{Tera, Value};

/// The main template.
pub const MAIN: &str = "deploy.yml.tera";
const TYPES: &str = "types.toml";
const PINS: &str = "pins.toml";

/// Every file of the set, as embedded.
const EMBEDDED: [(&str, &str); 5] = [
    (
        MAIN,
        include_str!("../../../templates/workflows/deploy.yml.tera"),
    ),
    (
        "setup-node.tera",
        include_str!("../../../templates/workflows/setup-node.tera"),
    ),
    (
        "setup-rust.tera",
        include_str!("../../../templates/workflows/setup-rust.tera"),
    ),
    (
        TYPES,
        include_str!("../../../templates/workflows/types.toml"),
    ),
    (PINS, include_str!("../../../templates/workflows/pins.toml")),
];

/// Actions the templates reference; pins.toml must have each.
pub const ACTIONS: [&str; 8] = [
    "actions/checkout",
    "actions/setup-node",
    "docker/setup-buildx-action",
    "docker/login-action",
    "docker/build-push-action",
    "codeb/port-validate",
    "codeb/quadlet-update",
    "codeb/healthcheck",
];

/// Service images the templates reference; pins.toml must have each.
const IMAGES: [&str; 2] = ["postgres", "redis"];

/// A problem with one file of the template set, located as precisely as the parser allows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct TemplateError {
    /// The file as the user knows it: `DIR/deploy.yml.tera`, or `templates/workflows/…
    /// (embedded)`.
    pub file: String,
    /// 1-based line and column, when known.
    pub line: Option<(usize, usize)>,
    pub message: String,
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some((l, c)) => write!(f, "{}:{l}:{c}: {}", self.file, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

/// What a project type changes in the workflow (one table of types.toml).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TypeSpec {
    pub setup: String,
    pub install: String,
    pub lint: Vec<StepSpec>,
    pub test: Vec<StepSpec>,
    pub context: String,
    pub dockerfile: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    pub name: String,
    pub run: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct PinsFile {
    actions: BTreeMap<String, ActionPin>,
    #[serde(default)]
    images: BTreeMap<String, ImagePin>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionPin {
    /// Required (checked by `parse_pins`, which names the line of an entry without one).
    sha: Option<String>,
    version: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct ImagePin {
    image: String,
    digest: Option<String>,
}

/// The parsed, checked template set.
#[derive(Debug)]
pub struct TemplateSet {
    tera: Tera,
    types: BTreeMap<String, TypeSpec>,
    pins: PinsFile,
    origins: BTreeMap<&'static str, String>,
}

impl TemplateSet {
    /// The templates built into the binary.
    pub fn embedded() -> Result<Self, TemplateError> {
        Self::load(
            EMBEDDED
                .iter()
                .map(|(name, text)| {
                    (
                        *name,
                        format!("templates/workflows/{name} (embedded)"),
                        (*text).to_owned(),
                    )
                })
                .collect(),
        )
    }

    /// The embedded templates, with every file that `dir` has replacing its namesake.
    /// Another `.tera` or `.toml` file in `dir` is an error (most likely a typo).
    pub fn with_overrides(dir: &Path) -> Result<Self, TemplateError> {
        let io_err = |what: &Path, e: std::io::Error| TemplateError {
            file: what.display().to_string(),
            line: None,
            message: format!("cannot read the template directory: {e}"),
        };
        let entries = std::fs::read_dir(dir).map_err(|e| io_err(dir, e))?;
        let mut overrides: HashMap<String, (String, String)> = HashMap::new();
        for entry in entries {
            let path = entry.map_err(|e| io_err(dir, e))?.path();
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let known = EMBEDDED.iter().any(|(n, _)| *n == name);
            if !known {
                if name.ends_with(".tera") || name.ends_with(".toml") {
                    let list: Vec<&str> = EMBEDDED.iter().map(|(n, _)| *n).collect();
                    return Err(TemplateError {
                        file: path.display().to_string(),
                        line: None,
                        message: format!(
                            "not a file codeb-workflow-gen reads; the template files are {}",
                            list.join(", ")
                        ),
                    });
                }
                continue;
            }
            let text = std::fs::read_to_string(&path).map_err(|e| io_err(&path, e))?;
            overrides.insert(name, (path.display().to_string(), text));
        }
        Self::load(
            EMBEDDED
                .iter()
                .map(|(name, text)| match overrides.remove(*name) {
                    Some((origin, text)) => (*name, origin, text),
                    None => (
                        *name,
                        format!("templates/workflows/{name} (embedded)"),
                        (*text).to_owned(),
                    ),
                })
                .collect(),
        )
    }

    fn load(files: Vec<(&'static str, String, String)>) -> Result<Self, TemplateError> {
        let mut tera = Tera::default();
        tera.autoescape_on(vec![]);
        tera.register_filter("yaml", yaml_filter);
        let mut types = None;
        let mut pins = None;
        let mut origins = BTreeMap::new();
        for (name, origin, text) in files {
            match name {
                TYPES => types = Some(parse_types(&origin, &text)?),
                PINS => pins = Some(parse_pins(&origin, &text)?),
                _ => {
                    // Partials are included inside the main template's lines: their final
                    // newline belongs to the including line.
                    let text = if name == MAIN {
                        text.as_str()
                    } else {
                        text.trim_end()
                    };
                    tera.add_raw_template(name, &escape_github_expressions(text))
                        .map_err(|e| tera_error(&origin, &e))?;
                }
            }
            origins.insert(name, origin);
        }
        let (Some(types), Some(pins)) = (types, pins) else {
            return Err(TemplateError {
                file: "templates/workflows".into(),
                line: None,
                message: "types.toml or pins.toml is missing from the template set".into(),
            });
        };
        Ok(Self {
            tera,
            types,
            pins,
            origins,
        })
    }

    /// The known project types.
    pub fn types(&self) -> impl Iterator<Item = (&str, &TypeSpec)> {
        self.types.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn type_spec(&self, kind: &str) -> Option<&TypeSpec> {
        self.types.get(kind)
    }

    /// `uses:` values by action name: `name@sha # version` (codeb's own actions too), or
    /// `./actions/<name>` for codeb's actions when `local`.
    pub fn uses(&self, local: bool) -> BTreeMap<String, String> {
        self.pins
            .actions
            .iter()
            .map(|(name, pin)| {
                let value = match name.strip_prefix("codeb/") {
                    Some(short) if local => format!("./actions/{short}"),
                    _ => format!(
                        "{name}@{} # {}",
                        pin.sha.as_deref().unwrap_or_default(),
                        pin.version
                    ),
                };
                (name.clone(), value)
            })
            .collect()
    }

    /// Service images by name: `image` or `image@digest`.
    pub fn images(&self) -> BTreeMap<String, String> {
        self.pins
            .images
            .iter()
            .map(|(name, pin)| {
                let value = match &pin.digest {
                    Some(d) => format!("{}@{d}", pin.image),
                    None => pin.image.clone(),
                };
                (name.clone(), value)
            })
            .collect()
    }

    /// Renders the main template.
    pub(crate) fn render_main(&self, ctx: &tera::Context) -> Result<String, TemplateError> {
        self.tera
            .render(MAIN, ctx)
            .map_err(|e| tera_error(&self.origin(MAIN), &e))
    }

    fn origin(&self, name: &str) -> String {
        self.origins
            .get(name)
            .cloned()
            .unwrap_or_else(|| name.to_owned())
    }
}

/// `${{` opens a GitHub Actions expression, which Tera would take for its own `{{`: it is
/// turned into a Tera string that prints it. Lines and therefore error positions stay the same.
fn escape_github_expressions(text: &str) -> String {
    text.replace("${{", "{{ \"${{\" }}")
}

/// Tera's error and its causes as one line; the parser's ` --> LINE:COL` becomes the location
/// and its `= expected ...` the message, with the offending source line.
fn tera_error(file: &str, e: &tera::Error) -> TemplateError {
    let mut parts = vec![e.to_string()];
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        parts.push(s.to_string());
        source = s.source();
    }
    let mut line = None;
    let mut detail = Vec::new();
    // The first part only says "Failed to parse/render <name>": keep the causes.
    for p in parts.iter().skip(usize::from(parts.len() > 1)) {
        let Some(rest) = p.split(" --> ").nth(1) else {
            detail.push(p.trim().to_owned());
            continue;
        };
        let pos: String = rest
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == ':')
            .collect();
        if let Some((l, c)) = pos.split_once(':')
            && let (Ok(l), Ok(c)) = (l.parse(), c.parse())
        {
            line = Some((l, c));
        }
        let expected: Vec<&str> = p
            .lines()
            .filter_map(|l| l.trim_start().strip_prefix("= "))
            .collect();
        let snippet = p.lines().find_map(|l| {
            let (num, text) = l.split_once(" | ")?;
            num.trim().parse::<usize>().ok().map(|_| text.trim())
        });
        let mut msg = expected.join("; ");
        if let Some(text) = snippet {
            msg.push_str(&format!(" (at `{text}`)"));
        }
        detail.push(msg);
    }
    TemplateError {
        file: file.to_owned(),
        line,
        message: detail.join(": "),
    }
}

fn toml_error(file: &str, text: &str, e: &toml::de::Error) -> TemplateError {
    let line = e.span().map(|span| {
        let before = &text[..span.start.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        (line, col)
    });
    TemplateError {
        file: file.to_owned(),
        line,
        message: e.message().trim().to_owned(),
    }
}

fn invalid(file: &str, text: &str, needle: &str, message: String) -> TemplateError {
    // Point at the first line that mentions the offending key, when there is one.
    let line = text
        .lines()
        .position(|l| l.contains(needle))
        .map(|i| (i + 1, 1));
    TemplateError {
        file: file.to_owned(),
        line,
        message,
    }
}

fn one_line(s: &str) -> bool {
    !s.contains(['\n', '\r'])
}

fn parse_types(file: &str, text: &str) -> Result<BTreeMap<String, TypeSpec>, TemplateError> {
    let types: BTreeMap<String, TypeSpec> =
        toml::from_str(text).map_err(|e| toml_error(file, text, &e))?;
    if types.is_empty() {
        return Err(invalid(file, text, "", "defines no project type".into()));
    }
    for (name, t) in &types {
        let bad = |msg: String| invalid(file, text, &format!("[{name}]"), msg);
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(bad(format!(
                "type name `{name}` must be lower-case letters, digits and `-`"
            )));
        }
        if !["node", "rust", "none"].contains(&t.setup.as_str()) {
            return Err(bad(format!(
                "[{name}] setup = {:?}: use \"node\", \"rust\" or \"none\"",
                t.setup
            )));
        }
        let steps = t.lint.iter().chain(&t.test);
        let texts = [&t.install, &t.context, &t.dockerfile]
            .into_iter()
            .chain(steps.flat_map(|s| [&s.name, &s.run]));
        for s in texts {
            if !one_line(s) {
                return Err(bad(format!("[{name}] {s:?}: commands are one line each")));
            }
        }
        if t.context.is_empty() || t.dockerfile.is_empty() {
            return Err(bad(format!(
                "[{name}] context and dockerfile may not be empty"
            )));
        }
        if t.lint
            .iter()
            .chain(&t.test)
            .any(|s| s.name.is_empty() || s.run.is_empty())
        {
            return Err(bad(format!("[{name}] every step needs a name and a run")));
        }
    }
    Ok(types)
}

fn parse_pins(file: &str, text: &str) -> Result<PinsFile, TemplateError> {
    let pins: PinsFile = toml::from_str(text).map_err(|e| toml_error(file, text, &e))?;
    for (name, pin) in &pins.actions {
        let bad = |msg: String| invalid(file, text, &format!("\"{name}\""), msg);
        let valid_name = name.split('/').count() == 2
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "/._-".contains(c));
        if !valid_name {
            return Err(bad(format!("`{name}` is not an owner/repository name")));
        }
        if pin.version.is_empty()
            || !pin
                .version
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            return Err(bad(format!(
                "{name}: version {:?} must be a tag such as v4.2.2",
                pin.version
            )));
        }
        let Some(sha) = &pin.sha else {
            return Err(bad(format!(
                "{name} has no sha: every action is pinned to a full commit SHA, codeb's own too"
            )));
        };
        if sha.len() != 40
            || !sha
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
        {
            return Err(bad(format!(
                "{name}: sha {sha:?} must be a full 40-character lower-case commit SHA: every action is pinned to a commit, codeb's own too"
            )));
        }
    }
    for name in ACTIONS {
        if !pins.actions.contains_key(name) {
            return Err(invalid(
                file,
                text,
                "[actions]",
                format!("[actions] has no entry for {name}, which the templates use"),
            ));
        }
    }
    for (name, pin) in &pins.images {
        let bad = |msg: String| invalid(file, text, &format!("{name} ="), msg);
        if pin.image.is_empty()
            || !pin
                .image
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "/._-:".contains(c))
        {
            return Err(bad(format!(
                "{name}: image {:?} is not an image reference",
                pin.image
            )));
        }
        if let Some(d) = &pin.digest {
            let hex = d.strip_prefix("sha256:").unwrap_or_default();
            if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(bad(format!("{name}: digest {d:?} must be sha256:<64 hex>")));
            }
        }
    }
    for name in IMAGES {
        if !pins.images.contains_key(name) {
            return Err(invalid(
                file,
                text,
                "[images]",
                format!("[images] has no entry for {name}, which the templates use"),
            ));
        }
    }
    Ok(pins)
}

/// `{{ value | yaml }}`: a one-line YAML scalar, plain when that reads back as the same
/// string, single-quoted otherwise.
fn yaml_filter(value: &Value, _: &HashMap<String, Value>) -> tera::Result<Value> {
    let s = value
        .as_str()
        .ok_or_else(|| tera::Error::msg("the yaml filter takes a string"))?;
    Ok(Value::String(yaml_scalar(s)))
}

pub(crate) fn yaml_scalar(s: &str) -> String {
    let plain_chars = s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || " ._/=+,-".contains(c));
    let first_ok = s
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || "./".contains(c));
    let lower = s.to_ascii_lowercase();
    let reserved = ["true", "false", "yes", "no", "on", "off", "null", "y", "n"]
        .contains(&lower.as_str())
        || s.parse::<f64>().is_ok();
    if plain_chars && first_ok && !reserved && !s.ends_with(' ') {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_set_loads() {
        let set = TemplateSet::embedded().expect("the embedded templates are valid");
        let kinds: Vec<&str> = set.types().map(|(k, _)| k).collect();
        assert_eq!(kinds, ["dockerfile", "nextjs", "node", "rust", "static"]);
        let uses = set.uses(false);
        assert_eq!(
            uses["actions/checkout"],
            "actions/checkout@11bd71901bbe5b1630ceea73d27597364c9af683 # v4.2.2"
        );
        let pinned = &uses["codeb/port-validate"];
        let (sha, version) = pinned
            .strip_prefix("codeb/port-validate@")
            .and_then(|rest| rest.split_once(" # "))
            .expect("codeb/port-validate@<sha> # <version>");
        assert_eq!(sha.len(), 40, "{pinned}");
        assert!(
            !version.is_empty() && !pinned.contains("zizmor"),
            "{pinned}"
        );
        assert_eq!(set.uses(true)["codeb/healthcheck"], "./actions/healthcheck");
    }

    #[test]
    fn yaml_scalars() {
        assert_eq!(yaml_scalar("npm run lint"), "npm run lint");
        assert_eq!(yaml_scalar("."), ".");
        assert_eq!(yaml_scalar("a: b"), "'a: b'");
        assert_eq!(yaml_scalar("it's"), "'it''s'");
        assert_eq!(yaml_scalar("yes"), "'yes'");
        assert_eq!(yaml_scalar("22"), "'22'");
        assert_eq!(yaml_scalar("-x"), "'-x'");
        assert_eq!(yaml_scalar("echo $HOME"), "'echo $HOME'");
    }

    fn with_file(name: &str, text: &str) -> Result<TemplateSet, TemplateError> {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(name), text).expect("write");
        TemplateSet::with_overrides(dir.path())
    }

    #[test]
    fn a_template_syntax_error_names_file_and_line() {
        let e = with_file("deploy.yml.tera", "name: x\non: push\n{% if %}\n")
            .expect_err("syntax error");
        assert!(e.file.ends_with("/deploy.yml.tera"), "{e}");
        assert_eq!(e.line, Some((3, 7)), "{e}");
        let e = with_file("setup-node.tera", "a\nb\n   {{ x | }}\n").expect_err("syntax error");
        assert!(e.file.ends_with("/setup-node.tera"), "{e}");
        assert_eq!(e.line.map(|l| l.0), Some(3), "{e}");
    }

    #[test]
    fn bad_tables_are_refused_with_their_line() {
        let e = with_file(
            "pins.toml",
            "[actions]\n\"actions/checkout\" = { version = \"v4\" }\n",
        )
        .expect_err("unpinned third-party action");
        assert_eq!(e.line, Some((2, 1)), "{e}");
        assert!(e.message.contains("full commit SHA"), "{e}");
        let e = with_file(
            "pins.toml",
            "[actions]\n\"codeb/healthcheck\" = { version = \"v1\" }\n",
        )
        .expect_err("codeb's own actions are pinned too");
        assert_eq!(e.line, Some((2, 1)), "{e}");
        assert!(e.message.contains("codeb's own too"), "{e}");
        let e =
            with_file("types.toml", "[x]\nsetup = \"node\"\nbogus = 1\n").expect_err("unknown key");
        assert!(e.line.is_some_and(|(l, _)| l >= 1), "{e}");
        assert!(
            e.message.contains("bogus") || e.message.contains("missing"),
            "{e}"
        );
        let e = with_file("deploy.yml.tea", "x").map(|_| ()).err();
        assert!(e.is_none(), "other extensions are ignored");
        let e = with_file("deploy.tera", "x").expect_err("unknown template file");
        assert!(e.message.contains("deploy.yml.tera"), "{e}");
    }
}
