//! The port manifest: the single source of truth for which project and environment owns which
//! port on a host.
//!
//! ```yaml
//! version: 1
//! reserved:                # optional; ALWAYS_RESERVED are reserved regardless
//!   - {port: 3000, name: nextjs-default}
//! projects:
//!   myapp:
//!     production: {port: 4001}
//!     staging: {port: 4500}
//! previews:
//!   myapp-pr-123: {project: myapp, pr: 123, port: 5000}
//! ```
//!
//! [`Document::parse`] keeps the source positions so that every error names its line and so
//! that [`Document::with_port`] can add one entry by inserting lines (comments and layout of
//! the rest of the file survive), falling back to a canonical rewrite only when the file's
//! shape makes a surgical insert unsafe. Either way the result is re-parsed and compared
//! before it is handed back.

mod convert;
mod edit;
mod tree;

use crate::names::{Environment, ProjectName};
use crate::ports::{ALWAYS_RESERVED, PortRange};
use std::collections::{BTreeMap, HashMap};
use std::fmt;

pub use edit::EditError;

/// Where codeb looks for the manifest when neither `--manifest` nor `CODEB_MANIFEST` is given.
pub const DEFAULT_PATH: &str = "/home/codeb/config/port-manifest.yaml";

/// The only manifest format version this codeb reads and writes.
pub const VERSION: u64 = 1;

/// Extra, optional fields allowed on a project.
pub const PROJECT_FIELDS: &[&str] = &[
    "image",
    "domain",
    "repo",
    "description",
    "container_port",
    "health_path",
];
/// Fields allowed on a production or staging entry (`port` is required).
pub const SLOT_FIELDS: &[&str] = &["port", "domain", "image", "container_port", "health_path"];
/// Fields allowed on a preview (`project`, `pr`, `port` are required).
pub const PREVIEW_FIELDS: &[&str] = &["project", "pr", "port", "image", "domain", "sha", "created"];

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Manifest {
    pub version: u64,
    pub reserved: Vec<ReservedEntry>,
    pub projects: BTreeMap<ProjectName, Project>,
    pub previews: BTreeMap<String, Preview>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservedEntry {
    pub port: u16,
    pub name: String,
    pub description: Option<String>,
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Project {
    pub line: usize,
    /// Optional descriptive fields ([`PROJECT_FIELDS`]) in file order.
    pub fields: Vec<(String, String)>,
    pub production: Option<Slot>,
    pub staging: Option<Slot>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub port: u16,
    /// Line of the `port` value.
    pub line: usize,
    pub fields: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preview {
    pub key: String,
    pub project: ProjectName,
    pub pr: u64,
    pub port: u16,
    pub line: usize,
    pub fields: Vec<(String, String)>,
}

/// One project environment, or one pull request preview of a project.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    pub project: ProjectName,
    pub environment: Environment,
    /// Set exactly when `environment` is [`Environment::Preview`].
    pub pr: Option<u64>,
}

impl Target {
    pub fn new(
        project: ProjectName,
        environment: Environment,
        pr: Option<u64>,
    ) -> Result<Self, TargetError> {
        match (environment, pr) {
            (Environment::Preview, None) => Err(TargetError::PreviewNeedsPr),
            (Environment::Production | Environment::Staging, Some(_)) => {
                Err(TargetError::PrOnlyForPreview(environment))
            }
            _ => Ok(Self {
                project,
                environment,
                pr,
            }),
        }
    }

    /// The manifest key of a preview: `<project>-pr-<N>`.
    pub fn preview_key(project: &ProjectName, pr: u64) -> String {
        format!("{project}-pr-{pr}")
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.pr {
            Some(pr) => write!(f, "{} preview (PR #{pr})", self.project),
            None => write!(f, "{} {}", self.project, self.environment),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("the preview environment needs a pull request number: pass --pr N")]
    PreviewNeedsPr,
    #[error("--pr only applies to the preview environment, not {0}")]
    PrOnlyForPreview(Environment),
}

/// Who a port in the manifest belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    Slot(ProjectName, Environment),
    Preview {
        key: String,
        project: ProjectName,
        pr: u64,
    },
    Reserved(String),
}

impl Owner {
    pub fn target(&self) -> Option<Target> {
        match self {
            Owner::Slot(p, e) => Some(Target {
                project: p.clone(),
                environment: *e,
                pr: None,
            }),
            Owner::Preview { project, pr, .. } => Some(Target {
                project: project.clone(),
                environment: Environment::Preview,
                pr: Some(*pr),
            }),
            Owner::Reserved(_) => None,
        }
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Owner::Slot(p, e) => write!(f, "{p} {e}"),
            Owner::Preview { key, .. } => write!(f, "preview {key}"),
            Owner::Reserved(name) => write!(f, "reserved port `{name}`"),
        }
    }
}

/// A port as the manifest assigns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub owner: Owner,
    pub port: u16,
    pub line: usize,
}

/// What the host says about a port (the caller looks; the core decides).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortUse {
    Free,
    /// Listening, but by the assignment's own running deployment.
    Own,
    /// Listening, by something else (described for the user).
    Busy(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProblemKind {
    OutOfRange,
    Reserved,
    Duplicate,
    InUse,
    Inconsistent,
    Missing,
}

/// A validation failure (exit code 1): the manifest parses but breaks a rule.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    pub kind: ProblemKind,
    pub line: usize,
    pub title: String,
    pub message: String,
    pub port: Option<u16>,
}

/// A structural error (exit code 2): the file is not a manifest codeb can read.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// Which entries a validation looks at.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    All,
    Target(&'a Target),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    #[error(
        "the {environment} port pool {range} is exhausted: every port is assigned, reserved or in use on this host; free one by removing an entry from the manifest"
    )]
    PoolExhausted {
        environment: Environment,
        range: PortRange,
    },
}

/// A parsed manifest together with its source text and layout, ready to be edited.
#[derive(Debug, Clone)]
pub struct Document {
    pub manifest: Manifest,
    text: String,
    layout: edit::Layout,
}

impl Document {
    /// Parses manifest text. All structural errors are collected, each with its line.
    pub fn parse(text: &str) -> Result<Self, Vec<ParseError>> {
        let (manifest, layout) = convert::convert(text)?;
        Ok(Self {
            manifest,
            text: text.to_owned(),
            layout,
        })
    }

    /// An empty manifest, as used when `--allocate` creates a new file.
    pub fn empty() -> Self {
        let text = format!("{}version: {VERSION}\n", edit::HEADER);
        let manifest = Manifest {
            version: VERSION,
            ..Manifest::default()
        };
        Self {
            layout: edit::Layout::default(),
            manifest,
            text,
        }
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// The file text with `target` assigned `port`, keeping the rest of the file as written.
    pub fn with_port(&self, target: &Target, port: u16) -> Result<String, EditError> {
        edit::with_port(self, target, port)
    }

    /// The file text without `target`'s port (its line removed where it stands on one line),
    /// or `None` when the manifest does not assign it.
    pub fn without(&self, target: &Target) -> Result<Option<String>, EditError> {
        edit::without(self, target)
    }
}

impl Manifest {
    /// Every port the manifest assigns, reserved entries first, then projects, then previews.
    pub fn assignments(&self) -> Vec<Assignment> {
        let mut out = Vec::new();
        for r in &self.reserved {
            out.push(Assignment {
                owner: Owner::Reserved(r.name.clone()),
                port: r.port,
                line: r.line,
            });
        }
        for (name, project) in &self.projects {
            for (env, slot) in [
                (Environment::Production, &project.production),
                (Environment::Staging, &project.staging),
            ] {
                if let Some(slot) = slot {
                    out.push(Assignment {
                        owner: Owner::Slot(name.clone(), env),
                        port: slot.port,
                        line: slot.line,
                    });
                }
            }
        }
        for preview in self.previews.values() {
            out.push(Assignment {
                owner: Owner::Preview {
                    key: preview.key.clone(),
                    project: preview.project.clone(),
                    pr: preview.pr,
                },
                port: preview.port,
                line: preview.line,
            });
        }
        out
    }

    /// The assignment of one target, if the manifest has it.
    pub fn assignment(&self, target: &Target) -> Option<Assignment> {
        self.assignments()
            .into_iter()
            .find(|a| a.owner.target().as_ref() == Some(target))
    }

    /// All reserved ports: those listed in the file and [`ALWAYS_RESERVED`].
    pub fn reserved_ports(&self) -> BTreeMap<u16, String> {
        let mut out: BTreeMap<u16, String> = ALWAYS_RESERVED
            .iter()
            .map(|(p, n)| (*p, (*n).to_owned()))
            .collect();
        for r in &self.reserved {
            out.entry(r.port).or_insert_with(|| r.name.clone());
        }
        out
    }

    /// Checks every rule for the entries in `scope`. `host` reports whether a port is already
    /// listening on this machine; pass `|_| PortUse::Free` to skip the host check.
    pub fn validate(
        &self,
        scope: Scope<'_>,
        host: &mut dyn FnMut(&Assignment) -> PortUse,
    ) -> Vec<Problem> {
        let all = self.assignments();
        let reserved = self.reserved_ports();
        let targets: Vec<Option<Target>> = all.iter().map(|a| a.owner.target()).collect();
        // Port -> indices of the app (non-reserved) assignments using it, in file order.
        let mut by_port: HashMap<u16, Vec<usize>> = HashMap::with_capacity(all.len());
        for (i, t) in targets.iter().enumerate() {
            if t.is_some() {
                by_port.entry(all[i].port).or_default().push(i);
            }
        }
        let mut problems = Vec::new();

        // A target the manifest does not have is the only problem worth reporting.
        let missing = match scope {
            Scope::Target(t) if !targets.iter().any(|x| x.as_ref() == Some(t)) => Some(t),
            _ => None,
        };
        if let Some(t) = missing {
            problems.push(Problem {
                kind: ProblemKind::Missing,
                line: 1,
                title: "No port assigned".into(),
                message: format!(
                    "{t} has no port in the manifest; add one, or run with --allocate to take the lowest free port in {}",
                    t.environment.range()
                ),
                port: None,
            });
            return problems;
        }

        for (i, a) in all.iter().enumerate() {
            let Some(target) = &targets[i] else {
                // Reserved entries are checked through the ports they reserve.
                continue;
            };
            let in_scope = match scope {
                Scope::All => true,
                Scope::Target(t) => t == target,
            };
            if !in_scope {
                continue;
            }
            let range = target.environment.range();
            if !range.contains(a.port) {
                problems.push(Problem {
                    kind: ProblemKind::OutOfRange,
                    line: a.line,
                    title: "Port out of range".into(),
                    message: format!(
                        "{} has port {}, outside the {} range {range}; pick a port in that range or run --allocate",
                        a.owner, a.port, target.environment
                    ),
                    port: Some(a.port),
                });
            }
            if let Some(name) = reserved.get(&a.port) {
                problems.push(Problem {
                    kind: ProblemKind::Reserved,
                    line: a.line,
                    title: "Reserved port".into(),
                    message: format!(
                        "{} has port {}, which is reserved for {name}; pick another port",
                        a.owner, a.port
                    ),
                    port: Some(a.port),
                });
            }
            if let Owner::Preview { key, project, pr } = &a.owner {
                let want = Target::preview_key(project, *pr);
                if *key != want {
                    problems.push(Problem {
                        kind: ProblemKind::Inconsistent,
                        line: a.line,
                        title: "Preview key mismatch".into(),
                        message: format!(
                            "preview `{key}` is for project {project} PR {pr}, so it must be named `{want}`"
                        ),
                        port: Some(a.port),
                    });
                }
            }
            // Uniqueness. Over the whole manifest, each later user of a port is reported
            // against the first; for one target, the target is reported against any other.
            let users = by_port.get(&a.port).map(Vec::as_slice).unwrap_or_default();
            let other = match scope {
                Scope::All => users.first().filter(|&&first| first != i),
                Scope::Target(_) => users.iter().find(|&&j| j != i),
            };
            if let Some(&j) = other {
                let o = &all[j];
                problems.push(Problem {
                    kind: ProblemKind::Duplicate,
                    line: a.line,
                    title: "Duplicate port".into(),
                    message: format!(
                        "port {} is assigned to both {} (line {}) and {} (line {}); every port must be unique",
                        a.port, o.owner, o.line, a.owner, a.line
                    ),
                    port: Some(a.port),
                });
            }
            if let PortUse::Busy(by) = host(a) {
                problems.push(Problem {
                    kind: ProblemKind::InUse,
                    line: a.line,
                    title: "Port in use".into(),
                    message: format!(
                        "port {} of {} is already listening on this host ({by}); stop that process or pick another port",
                        a.port, a.owner
                    ),
                    port: Some(a.port),
                });
            }
        }
        problems
    }

    /// The lowest port of `target`'s range that the manifest does not assign, that is not
    /// reserved, and that `host_free` says nothing listens on.
    pub fn allocate(
        &self,
        target: &Target,
        host_free: &mut dyn FnMut(u16) -> bool,
    ) -> Result<u16, AllocError> {
        let taken: std::collections::HashSet<u16> =
            self.assignments().iter().map(|a| a.port).collect();
        let reserved = self.reserved_ports();
        let range = target.environment.range();
        range
            .iter()
            .find(|p| !taken.contains(p) && !reserved.contains_key(p) && host_free(*p))
            .ok_or(AllocError::PoolExhausted {
                environment: target.environment,
                range,
            })
    }

    /// Renders the manifest in codeb's canonical layout (used when an edit cannot be made in
    /// place, and to compare two manifests for meaning).
    pub fn render(&self) -> String {
        edit::render(self)
    }
}

#[cfg(test)]
mod tests;

impl Target {
    /// The systemd unit and container name of this target: `<project>-<environment>`, or
    /// `<project>-pr-<N>` for a preview. Blue-green slots add `-blue` / `-green`.
    pub fn unit_name(&self) -> String {
        match self.pr {
            Some(pr) => Self::preview_key(&self.project, pr),
            None => format!("{}-{}", self.project, self.environment),
        }
    }

    /// Whether a container called `name` is one of this target's deployments.
    pub fn owns_container(&self, name: &str) -> bool {
        let base = self.unit_name();
        name == base
            || name
                .strip_prefix(base.as_str())
                .is_some_and(|rest| rest == "-blue" || rest == "-green")
    }
}
