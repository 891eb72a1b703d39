//! `we scan <project> --diff`, the local side: what the project's repository says (the
//! workflow file measured against what codeb-workflow-gen's library generates from the flags
//! in its header, the keys of `.env`, its `PORT`, the commit checked out), and the comparison
//! with what the server says ([`ServerFacts`]). Values of `.env` are never read into memory
//! beyond the key names and `PORT`.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use codeb_core::{Environment, ProjectName};
use codeb_workflow_gen::{ActionsSource, OnDisk, Options, TemplateSet, inspect, render};
use serde::Serialize;

use crate::exit::WeError;

/// What the repository says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LocalFacts {
    pub root: PathBuf,
    pub workflow: WorkflowFact,
    /// The env file read (`.env.<environment>` when present, else `.env`), if any.
    pub env_file: Option<PathBuf>,
    pub env_keys: BTreeSet<String>,
    /// `PORT=` of the env file: the port the app listens on inside the container.
    pub env_port: Option<u16>,
    /// The commit checked out (`HEAD`), when the directory is a git repository.
    pub head: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorkflowFact {
    pub path: PathBuf,
    /// missing, up-to-date, stale, hand-edited, not-generated, or unreadable-header.
    pub state: String,
    /// The flags recorded in the header (`codeb-workflow-gen --project … --type …`).
    pub command_line: Option<String>,
    /// The project type of those flags.
    pub kind: Option<String>,
    /// The registry the workflow pushes to.
    pub registry: Option<String>,
    /// Why the header's flags could not be used, when they could not.
    pub problem: Option<String>,
}

/// What the server says about the project and environment.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct ServerFacts {
    pub kind: Option<String>,
    /// The image repository deploys use (`ghcr.io/acme/myapp`).
    pub image: Option<String>,
    /// Key names of the environment's env file on the server (never values).
    pub env_keys: Option<BTreeSet<String>>,
    pub container_port: Option<u16>,
    /// The manifest's public port for the environment (`None`: no entry).
    pub manifest_port: Option<u16>,
    /// The digest deployed now and the commit it was built from.
    pub deployed_digest: Option<String>,
    pub deployed_sha: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Ok,
    Drift,
    /// Worth knowing, not wrong (e.g. the checkout is ahead of what is deployed).
    Info,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub check: &'static str,
    pub local: String,
    pub server: String,
    pub verdict: Verdict,
    /// What to do about a drift.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

/// The repository root: the nearest ancestor of `start` with a `.git`, else `start`.
pub fn repo_root(start: &Path) -> PathBuf {
    let mut dir = Some(start);
    while let Some(d) = dir {
        if d.join(".git").exists() {
            return d.to_owned();
        }
        dir = d.parent();
    }
    start.to_owned()
}

/// Reads the local facts of `project` in the repository at `root`.
pub fn local_facts(
    root: &Path,
    project: &ProjectName,
    env: Environment,
) -> Result<LocalFacts, WeError> {
    let workflow = workflow_fact(root, project)?;
    let candidates = [
        root.join(format!(".env.{}", env.as_str())),
        root.join(".env"),
    ];
    let env_file = candidates.into_iter().find(|p| p.is_file());
    let (env_keys, env_port) = match &env_file {
        Some(p) => {
            let text = fs::read_to_string(p)
                .map_err(|e| WeError::Io(format!("cannot read {}: {e}", p.display())))?;
            parse_env(&text).map_err(|(line, why)| {
                WeError::Usage(format!(
                    "{}:{line}: {why}; write KEY=VALUE lines (comments start with #)",
                    p.display()
                ))
            })?
        }
        None => (BTreeSet::new(), None),
    };
    Ok(LocalFacts {
        root: root.to_owned(),
        workflow,
        env_file,
        env_keys,
        env_port,
        head: git_head(root),
    })
}

fn workflow_fact(root: &Path, project: &ProjectName) -> Result<WorkflowFact, WeError> {
    let rel = PathBuf::from(".github/workflows").join(format!("{project}-deploy.yml"));
    let path = root.join(&rel);
    let text = match fs::read_to_string(&path) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(WeError::Io(format!("cannot read {}: {e}", path.display()))),
    };
    let mut fact = WorkflowFact {
        path: rel,
        state: OnDisk::Missing.as_str().into(),
        command_line: None,
        kind: None,
        registry: None,
        problem: None,
    };
    let Some(text) = text else {
        return Ok(fact);
    };
    let Some(line) = header_command_line(&text) else {
        fact.state = OnDisk::NotGenerated.as_str().into();
        return Ok(fact);
    };
    fact.command_line = Some(line.clone());
    let opts = match options_from_command_line(&line) {
        Ok(o) => o,
        Err(why) => {
            fact.state = "unreadable-header".into();
            fact.problem = Some(why);
            return Ok(fact);
        }
    };
    fact.kind = Some(opts.kind.clone());
    fact.registry = Some(opts.registry.clone());
    if opts.project != *project {
        fact.state = "unreadable-header".into();
        fact.problem = Some(format!(
            "the header was generated for project `{}`, not `{project}`",
            opts.project
        ));
        return Ok(fact);
    }
    let generated = TemplateSet::embedded()
        .map_err(codeb_workflow_gen::RenderError::from)
        .and_then(|set| render(&opts, &set));
    match generated {
        Ok(g) => fact.state = inspect(Some(&text), &g).as_str().into(),
        Err(e) => {
            fact.state = "unreadable-header".into();
            fact.problem = Some(e.to_string());
        }
    }
    Ok(fact)
}

/// The `codeb-workflow-gen …` line of a generated file's header.
fn header_command_line(text: &str) -> Option<String> {
    for line in text.lines() {
        if !line.starts_with('#') {
            return None;
        }
        let rest = line.trim_start_matches('#').trim();
        if rest.starts_with("codeb-workflow-gen ") {
            return Some(rest.to_owned());
        }
    }
    None
}

/// The [`Options`] of the flags recorded in a header (the inverse of
/// [`Options::command_line`]), validated by the generator's own parsers.
pub fn options_from_command_line(line: &str) -> Result<Options, String> {
    let words = shell_words::split(line).map_err(|e| format!("cannot split `{line}`: {e}"))?;
    let mut it = words.iter().map(String::as_str);
    if it.next() != Some("codeb-workflow-gen") {
        return Err(format!("`{line}` is not a codeb-workflow-gen command line"));
    }
    let mut project = None;
    let mut kind = "nextjs".to_owned();
    let mut flags = Vec::new();
    while let Some(w) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .map(str::to_owned)
                .ok_or_else(|| format!("{name} has no value in `{line}`"))
        };
        match w {
            "--project" => project = Some(value(w)?),
            "--type" => kind = value(w)?,
            "--database" | "--redis" => flags.push((w.to_owned(), String::new())),
            "--environments" | "--registry" | "--runner-labels" | "--actions" => {
                let v = value(w)?;
                flags.push((w.to_owned(), v));
            }
            other => return Err(format!("unknown flag `{other}` in `{line}`")),
        }
    }
    let project = project.ok_or_else(|| format!("no --project in `{line}`"))?;
    let project = ProjectName::new(&project).map_err(|e| e.to_string())?;
    let mut o = Options::new(project, &kind);
    for (flag, v) in flags {
        match flag.as_str() {
            "--database" => o.database = true,
            "--redis" => o.redis = true,
            "--environments" => {
                o.environments = Options::parse_environments(&v).map_err(|e| e.to_string())?;
            }
            "--registry" => o.registry = Options::parse_registry(&v).map_err(|e| e.to_string())?,
            "--runner-labels" => {
                o.runner_labels = Options::parse_runner_labels(&v).map_err(|e| e.to_string())?;
            }
            _ => {
                o.actions = match v.as_str() {
                    "local" => ActionsSource::Local,
                    "remote" => ActionsSource::Remote,
                    other => return Err(format!("--actions `{other}`: use local or remote")),
                };
            }
        }
    }
    Ok(o)
}

/// Key names and `PORT` of a dotenv file. `Err((line, why))` for a line that is not
/// `KEY=VALUE` (an optional `export ` prefix, comments and blank lines allowed).
pub fn parse_env(text: &str) -> Result<(BTreeSet<String>, Option<u16>), (usize, String)> {
    let mut keys = BTreeSet::new();
    let mut port = None;
    let mut lines = text.lines().enumerate();
    while let Some((i, raw)) = lines.next() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
        let Some((key, value)) = line.split_once('=') else {
            return Err((i + 1, "the line has no `=`".into()));
        };
        let key = key.trim();
        let valid = !key.is_empty()
            && !key.starts_with(|c: char| c.is_ascii_digit())
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err((
                i + 1,
                "the key is not a variable name (letters, digits, _; not starting with a digit)"
                    .into(),
            ));
        }
        let value = value.trim();
        // A quoted value may span lines: skip to its closing quote.
        for q in ['"', '\''] {
            if value.starts_with(q) && (value.len() == 1 || !value[1..].contains(q)) {
                loop {
                    match lines.next() {
                        Some((_, l)) if l.contains(q) => break,
                        Some(_) => {}
                        None => return Err((i + 1, format!("the value's {q} is never closed"))),
                    }
                }
            }
        }
        if key == "PORT" {
            port = value.trim_matches(['"', '\'']).parse::<u16>().ok();
        }
        keys.insert(key.to_owned());
    }
    Ok((keys, port))
}

/// The commit `HEAD` points at, read from the repository's files (a `.git` directory, or a
/// `.git` file of a worktree); `None` when it cannot be told.
pub fn git_head(root: &Path) -> Option<String> {
    let dot_git = root.join(".git");
    let git_dir = if dot_git.is_file() {
        let text = fs::read_to_string(&dot_git).ok()?;
        let p = PathBuf::from(text.trim().strip_prefix("gitdir:")?.trim());
        if p.is_absolute() { p } else { root.join(p) }
    } else {
        dot_git
    };
    // A worktree's refs live in the common directory.
    let common = fs::read_to_string(git_dir.join("commondir"))
        .ok()
        .map(|c| git_dir.join(c.trim()))
        .unwrap_or_else(|| git_dir.clone());
    let head = fs::read_to_string(git_dir.join("HEAD")).ok()?;
    let head = head.trim();
    let Some(reference) = head.strip_prefix("ref:").map(str::trim) else {
        return is_sha(head).then(|| head.to_owned());
    };
    for dir in [&git_dir, &common] {
        if let Ok(s) = fs::read_to_string(dir.join(reference)) {
            let s = s.trim();
            if is_sha(s) {
                return Some(s.to_owned());
            }
        }
    }
    let packed = fs::read_to_string(common.join("packed-refs")).ok()?;
    packed.lines().find_map(|l| {
        let (sha, name) = l.split_once(' ')?;
        (name.trim() == reference && is_sha(sha)).then(|| sha.to_owned())
    })
}

fn is_sha(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.chars().all(|c| c.is_ascii_hexdigit())
}

fn or_none<T: ToString>(v: &Option<T>) -> String {
    v.as_ref()
        .map_or_else(|| "-".to_owned(), ToString::to_string)
}

/// Local against server, one [`Check`] per fact.
pub fn compare(project: &ProjectName, local: &LocalFacts, server: &ServerFacts) -> Vec<Check> {
    let mut checks = Vec::new();
    let regen = local.workflow.command_line.clone().unwrap_or_else(|| {
        format!(
            "codeb-workflow-gen --project {project} --type {}",
            server.kind.as_deref().unwrap_or("<type>")
        )
    });
    // The workflow file against what the generator makes of its own flags.
    let wf = &local.workflow;
    let (verdict, fix) = match wf.state.as_str() {
        "up-to-date" => (Verdict::Ok, None),
        "stale" => (Verdict::Drift, Some(format!("regenerate it: `{regen}`"))),
        "hand-edited" => (
            Verdict::Drift,
            Some(format!(
                "move the edit into the flags or templates, then `{regen} --force`"
            )),
        ),
        "missing" => (Verdict::Drift, Some(format!("generate it: `{regen}`"))),
        "not-generated" => (
            Verdict::Drift,
            Some(format!(
                "it was not written by codeb-workflow-gen; replace it: `{regen} --force`"
            )),
        ),
        _ => (
            Verdict::Drift,
            Some(format!(
                "{}; regenerate it with `{regen} --force`",
                wf.problem.as_deref().unwrap_or("its header cannot be read")
            )),
        ),
    };
    checks.push(Check {
        check: "workflow",
        local: format!("{} ({})", wf.path.display(), wf.state),
        server: "what codeb-workflow-gen generates".into(),
        verdict,
        fix,
    });
    // The project type the workflow was generated for against the registry's.
    if let (Some(l), Some(s)) = (&wf.kind, &server.kind) {
        let same = l == s;
        checks.push(Check {
            check: "type",
            local: l.clone(),
            server: s.clone(),
            verdict: if same { Verdict::Ok } else { Verdict::Drift },
            fix: (!same).then(|| {
                format!("regenerate the workflow with --type {s}, or correct the registry's type")
            }),
        });
    }
    // The registry the workflow pushes to against the image the server deploys.
    if let (Some(reg), Some(image)) = (&wf.registry, &server.image) {
        let server_host = image.split('/').next().unwrap_or_default();
        let same = server_host == reg;
        checks.push(Check {
            check: "registry",
            local: reg.clone(),
            server: image.clone(),
            verdict: if same { Verdict::Ok } else { Verdict::Drift },
            fix: (!same).then(|| {
                format!("the workflow pushes to {reg} but the server deploys from {image}: regenerate with --registry {server_host}, or correct the registry's image")
            }),
        });
    }
    // Env keys (names only).
    if let Some(server_keys) = &server.env_keys {
        let missing: Vec<&String> = local.env_keys.difference(server_keys).collect();
        let extra: Vec<&String> = server_keys.difference(&local.env_keys).collect();
        let file = local
            .env_file
            .as_ref()
            .map_or_else(|| "no .env".to_owned(), |p| p.display().to_string());
        let mut fix = Vec::new();
        if !missing.is_empty() {
            fix.push(format!(
                "not on the server: {}",
                missing
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if !extra.is_empty() {
            fix.push(format!(
                "only on the server: {}",
                extra
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        checks.push(Check {
            check: "env keys",
            local: format!("{} keys in {file}", local.env_keys.len()),
            server: format!("{} keys", server_keys.len()),
            verdict: if fix.is_empty() {
                Verdict::Ok
            } else {
                Verdict::Drift
            },
            fix: (!fix.is_empty()).then(|| fix.join("; ")),
        });
    }
    // The manifest's public port, and PORT inside the container.
    checks.push(Check {
        check: "manifest port",
        local: "-".into(),
        server: or_none(&server.manifest_port),
        verdict: if server.manifest_port.is_some() {
            Verdict::Ok
        } else {
            Verdict::Drift
        },
        fix: server.manifest_port.is_none().then(|| {
            "the port manifest has no entry for this environment: an admin allocates one (codeb-port-validate --allocate)".to_owned()
        }),
    });
    if let (Some(l), Some(s)) = (local.env_port, server.container_port) {
        checks.push(Check {
            check: "container port",
            local: format!("PORT={l}"),
            server: s.to_string(),
            verdict: if l == s { Verdict::Ok } else { Verdict::Drift },
            fix: (l != s).then(|| {
                format!("the app listens on {l} but the server expects {s}: change PORT or the registry's container port")
            }),
        });
    }
    // What is deployed now against the checkout.
    let deployed = match (&server.deployed_digest, &server.deployed_sha) {
        (None, _) => "nothing deployed".to_owned(),
        (Some(d), Some(s)) => format!("{} ({})", short(s), short_digest(d)),
        (Some(d), None) => short_digest(d),
    };
    let same = matches!((&local.head, &server.deployed_sha), (Some(l), Some(s)) if l == s);
    checks.push(Check {
        check: "deployed",
        local: local
            .head
            .as_deref()
            .map_or_else(|| "-".to_owned(), |h| format!("HEAD {}", short(h))),
        server: deployed,
        verdict: if same { Verdict::Ok } else { Verdict::Info },
        fix: None,
    });
    checks
}

fn short(sha: &str) -> String {
    sha.chars().take(12).collect()
}

fn short_digest(d: &str) -> String {
    match d.strip_prefix("sha256:") {
        Some(h) => format!("sha256:{}", &h[..h.len().min(12)]),
        None => d.to_owned(),
    }
}

/// Whether any check drifted.
pub fn drifted(checks: &[Check]) -> bool {
    checks.iter().any(|c| c.verdict == Verdict::Drift)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project() -> ProjectName {
        ProjectName::new("myapp").expect("name")
    }

    fn generate(root: &Path, flags: &str) -> String {
        let opts =
            options_from_command_line(&format!("codeb-workflow-gen --project myapp {flags}"))
                .expect("options");
        let text = render(&opts, &TemplateSet::embedded().expect("templates")).expect("render");
        let dir = root.join(".github/workflows");
        fs::create_dir_all(&dir).expect("mkdir");
        fs::write(dir.join("myapp-deploy.yml"), &text).expect("write");
        text
    }

    #[test]
    fn header_flags_round_trip_through_the_generator() {
        for flags in [
            "--type nextjs",
            "--type rust --database --redis",
            "--type static --environments production --registry registry.example.com:5000",
            "--type node --runner-labels self-hosted,linux --actions local",
        ] {
            let line = format!("codeb-workflow-gen --project myapp {flags}");
            let o = options_from_command_line(&line).expect(flags);
            assert_eq!(o.command_line(), line);
        }
        for bad in [
            "codeb-workflow-gen --type nextjs",
            "codeb-workflow-gen --project myapp --bogus",
            "codeb-workflow-gen --project myapp --environments qa",
            "other --project myapp",
            "codeb-workflow-gen --project ../x",
        ] {
            assert!(options_from_command_line(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn workflow_states_come_from_the_generator() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let f = local_facts(root, &project(), Environment::Production).expect("facts");
        assert_eq!(f.workflow.state, "missing");
        let text = generate(root, "--type rust --database");
        let f = local_facts(root, &project(), Environment::Production).expect("facts");
        assert_eq!(f.workflow.state, "up-to-date");
        assert_eq!(f.workflow.kind.as_deref(), Some("rust"));
        let path = root.join(".github/workflows/myapp-deploy.yml");
        fs::write(&path, text.replace("timeout-minutes", "timeout-minutes ")).expect("edit");
        let f = local_facts(root, &project(), Environment::Production).expect("facts");
        assert_eq!(f.workflow.state, "hand-edited");
        fs::write(&path, "name: mine\non: push\n").expect("foreign");
        let f = local_facts(root, &project(), Environment::Production).expect("facts");
        assert_eq!(f.workflow.state, "not-generated");
    }

    #[test]
    fn env_keys_without_values() {
        let (keys, port) = parse_env(
            "# c\n\nexport DATABASE_URL=postgres://u:p@h/db\nPORT=3000\nMULTI=\"a\nb\"\nEMPTY=\n",
        )
        .expect("parse");
        assert_eq!(
            keys.into_iter().collect::<Vec<_>>(),
            vec!["DATABASE_URL", "EMPTY", "MULTI", "PORT"]
        );
        assert_eq!(port, Some(3000));
        assert_eq!(parse_env("A=1\nnot a line\n").expect_err("bad").0, 2);
        assert_eq!(parse_env("1A=1\n").expect_err("bad").0, 1);
        assert_eq!(parse_env("A=\"open\n").expect_err("bad").0, 1);
    }

    #[test]
    fn git_head_from_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let git = dir.path().join(".git");
        fs::create_dir_all(git.join("refs/heads")).expect("mkdir");
        let sha = "0123456789abcdef0123456789abcdef01234567";
        fs::write(git.join("HEAD"), "ref: refs/heads/main\n").expect("head");
        assert_eq!(git_head(dir.path()), None);
        fs::write(
            git.join("packed-refs"),
            format!("# pack\n{sha} refs/heads/main\n"),
        )
        .expect("packed");
        assert_eq!(git_head(dir.path()).as_deref(), Some(sha));
        let other = "fedcba9876543210fedcba9876543210fedcba98";
        fs::write(git.join("refs/heads/main"), format!("{other}\n")).expect("loose");
        assert_eq!(git_head(dir.path()).as_deref(), Some(other));
        fs::write(git.join("HEAD"), format!("{sha}\n")).expect("detached");
        assert_eq!(git_head(dir.path()).as_deref(), Some(sha));
    }

    #[test]
    fn compare_finds_each_drift() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        generate(root, "--type node");
        fs::write(root.join(".env"), "PORT=3000\nDATABASE_URL=x\nAPI_KEY=y\n").expect("env");
        let local = local_facts(root, &project(), Environment::Production).expect("facts");
        let mut server = ServerFacts {
            kind: Some("node".into()),
            image: Some("ghcr.io/acme/myapp".into()),
            env_keys: Some(["PORT", "DATABASE_URL", "API_KEY"].map(String::from).into()),
            container_port: Some(3000),
            manifest_port: Some(4001),
            deployed_digest: Some(format!("sha256:{}", "a".repeat(64))),
            deployed_sha: None,
        };
        let checks = compare(&project(), &local, &server);
        assert!(!drifted(&checks), "{checks:#?}");
        server.kind = Some("nextjs".into());
        server.image = Some("registry.example.com/acme/myapp".into());
        server.env_keys = Some(
            ["PORT", "DATABASE_URL", "SMTP_URL"]
                .map(String::from)
                .into(),
        );
        server.container_port = Some(8080);
        server.manifest_port = None;
        let checks = compare(&project(), &local, &server);
        let drifts: Vec<&str> = checks
            .iter()
            .filter(|c| c.verdict == Verdict::Drift)
            .map(|c| c.check)
            .collect();
        assert_eq!(
            drifts,
            [
                "type",
                "registry",
                "env keys",
                "manifest port",
                "container port"
            ]
        );
        let env = checks.iter().find(|c| c.check == "env keys").expect("env");
        let fix = env.fix.as_deref().expect("fix");
        assert!(fix.contains("not on the server: API_KEY"), "{fix}");
        assert!(fix.contains("only on the server: SMTP_URL"), "{fix}");
        // Values never appear.
        let json = serde_json::to_string(&checks).expect("json");
        assert!(
            !json.contains("DATABASE_URL=x") && !json.contains("=y"),
            "{json}"
        );
    }
}
