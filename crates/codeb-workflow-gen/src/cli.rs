//! The `codeb-workflow-gen` command line (also run as the `workflow-gen` action: every flag
//! can come from its input, `INPUT_<NAME>`).

use crate::{ActionsSource, OnDisk, Options, TemplateSet, inspect, render};
use clap::{Parser, Subcommand, ValueEnum};
use codeb_actions::{Annotation, Exit, Level, Step};
use codeb_core::{ProjectName, vars};
use codeb_secret::Secret;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

const AFTER_HELP: &str = "\
Examples:
  # .github/workflows/myapp-deploy.yml for a Next.js app with PostgreSQL in its tests
  codeb-workflow-gen --project myapp --type nextjs --database

  # Fail (exit 1) when the committed workflow is not what these flags generate (CI drift check)
  codeb-workflow-gen --project myapp --type nextjs --database --check

  # Print it; or render with your own templates (any file of templates/workflows/)
  codeb-workflow-gen --project blog --type static --environments production --stdout
  codeb-workflow-gen --project api --type rust --templates ci/codeb-templates

  # Can a fork's pull request reach the self-hosted runner? (reads GitHub's settings)
  codeb-workflow-gen doctor --repo acme/myapp --workflow .github/workflows/myapp-deploy.yml

A file that was edited by hand (its body no longer matches the hash in its header) or that
codeb-workflow-gen did not write is never overwritten without --force.

The deploy jobs pass env.CODEB_MANIFEST, env.CODEB_QUADLET_DIR, env.CODEB_RUNTIME,
env.CODEB_CADDY_ADMIN and env.CODEB_DRAIN to codeb's actions: empty unless defined, so
codeb's defaults apply on GitHub; test runs set them (act --env).

Exit codes: 0 written or already up to date, 1 the file on disk is not what would be
generated and was left alone (--check, or a hand-edited file without --force), 2 usage,
template or I/O error (nothing written).";

#[derive(Debug, Parser)]
#[command(
    name = "codeb-workflow-gen",
    args_override_self = true,
    version,
    about = "Generate a secure-by-default deploy workflow for a project",
    after_help = AFTER_HELP,
    subcommand_negates_reqs = true,
    args_conflicts_with_subcommands = true
)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,

    /// Project name (a DNS label: a-z, 0-9, -)
    #[arg(long, value_name = "NAME", required = true)]
    project: Option<String>,

    /// Project type: nextjs, node, rust, static, dockerfile (or a type of --templates' types.toml)
    #[arg(long = "type", value_name = "TYPE", default_value = "nextjs")]
    kind: String,

    /// Run the tests with a PostgreSQL service container (DATABASE_URL)
    #[arg(long)]
    database: bool,

    /// Run the tests with a Redis service container (REDIS_URL)
    #[arg(long)]
    redis: bool,

    /// Environments to deploy to: staging (from develop), production (from main)
    #[arg(long, value_name = "LIST", default_value = "staging,production")]
    environments: String,

    /// Registry the image is pushed to and deployed from
    #[arg(long, value_name = "HOST", default_value = "ghcr.io")]
    registry: String,

    /// Labels of the app server's runner (must include self-hosted)
    #[arg(long, value_name = "LIST", default_value = "self-hosted")]
    runner_labels: String,

    /// Where the deploy jobs take codeb's actions from: remote (codeb/<action>@v1) or local
    /// (./actions/<action> of the same repository)
    #[arg(long, value_enum, default_value_t = ActionsArg::Remote)]
    actions: ActionsArg,

    /// Output file [default: .github/workflows/<project>-deploy.yml]; its directory must exist
    #[arg(long, value_name = "PATH", conflicts_with = "stdout")]
    output: Option<PathBuf>,

    /// Print the workflow instead of writing it
    #[arg(long, conflicts_with_all = ["check", "force"])]
    stdout: bool,

    /// Write nothing; exit 1 when the file differs from what would be generated
    #[arg(long, conflicts_with = "force")]
    check: bool,

    /// Overwrite a file that was edited by hand or not written by codeb-workflow-gen
    #[arg(long)]
    force: bool,

    /// Directory whose files replace the embedded templates of the same name
    /// (deploy.yml.tera, setup-node.tera, setup-rust.tera, types.toml, pins.toml)
    #[arg(long, value_name = "DIR")]
    templates: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check on GitHub that no fork pull request can reach the repository's self-hosted
    /// runners (fork approval policy, visibility, runner groups' workflow restrictions).
    /// Exit 0 safe, 1 a fork could reach a runner (with the setting to change), 2 error.
    /// Token: CODEB_GITHUB_TOKEN or GITHUB_TOKEN (an administrator's); API: GITHUB_API_URL.
    Doctor {
        /// The repository, OWNER/NAME
        #[arg(long, value_name = "OWNER/NAME")]
        repo: String,
        /// The deploy workflow, for the setting to pin ([default: .github/workflows/<NAME>-deploy.yml])
        #[arg(long, value_name = "PATH")]
        workflow: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ActionsArg {
    Remote,
    Local,
}

pub fn main() -> ExitCode {
    let step = Step::from_env();
    let args: Args = match codeb_actions::parse_args(&step, "codeb-workflow-gen") {
        Ok(a) => a,
        Err(code) => return code,
    };
    let outcome = match &args.command {
        Some(Command::Doctor { repo, workflow }) => run_doctor(&step, repo, workflow.as_deref()),
        None => run(&step, &args),
    };
    outcome.into()
}

fn fail(step: &Step, location: Option<(&str, Option<usize>)>, message: &str) {
    step.annotate(
        Level::Error,
        &Annotation {
            file: location.map(|(f, _)| f.to_owned()),
            line: location.and_then(|(_, l)| l),
            title: Some("codeb-workflow-gen".into()),
            message: message.to_owned(),
        },
    );
}

fn run_doctor(step: &Step, repo: &str, workflow: Option<&str>) -> Exit {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let repo = match crate::doctor::RepoName::parse(repo) {
        Ok(r) => r,
        Err(e) => {
            fail(step, None, &e.to_string());
            return Exit::Usage;
        }
    };
    let token = env(vars::CODEB_GITHUB_TOKEN)
        .or_else(|| env(vars::GITHUB_TOKEN))
        .map(|t| Secret::new(t.trim()));
    if let Some(t) = &token {
        step.mask(t);
    }
    let api = env(vars::GITHUB_API_URL).unwrap_or_else(|| vars::DEFAULT_GITHUB_API_URL.into());
    let workflow = workflow
        .map(str::to_owned)
        .unwrap_or_else(|| format!(".github/workflows/{}-deploy.yml", repo.name));
    match crate::doctor::doctor(&api, token, &repo, &workflow) {
        Err(e) => {
            fail(step, None, &e.to_string());
            Exit::Usage
        }
        Ok((_, verdict)) => {
            for n in &verdict.notes {
                step.log(&format!("- {n}"));
            }
            if verdict.safe() {
                step.result(&format!(
                    "ok: no fork pull request can reach a self-hosted runner of {repo}"
                ));
                return Exit::Success;
            }
            for f in &verdict.findings {
                fail(step, None, &format!("{}. Change: {}", f.problem, f.fix));
            }
            step.result(&format!(
                "a fork's pull request could reach a self-hosted runner of {repo}: {} setting(s) to change (above)",
                verdict.findings.len()
            ));
            Exit::Failure
        }
    }
}

fn options(args: &Args) -> Result<Options, String> {
    let project = args.project.as_deref().unwrap_or_default();
    let project = ProjectName::new(project).map_err(|e| e.to_string())?;
    let mut o = Options::new(project, &args.kind);
    o.database = args.database;
    o.redis = args.redis;
    o.environments = Options::parse_environments(&args.environments).map_err(|e| e.to_string())?;
    o.registry = Options::parse_registry(&args.registry).map_err(|e| e.to_string())?;
    o.runner_labels =
        Options::parse_runner_labels(&args.runner_labels).map_err(|e| e.to_string())?;
    o.actions = match args.actions {
        ActionsArg::Remote => ActionsSource::Remote,
        ActionsArg::Local => ActionsSource::Local,
    };
    Ok(o)
}

fn run(step: &Step, args: &Args) -> Exit {
    let opts = match options(args) {
        Ok(o) => o,
        Err(e) => {
            fail(step, None, &e);
            return Exit::Usage;
        }
    };
    let set = match &args.templates {
        Some(dir) => TemplateSet::with_overrides(dir),
        None => TemplateSet::embedded(),
    };
    let text = match set
        .map_err(crate::RenderError::from)
        .and_then(|set| render(&opts, &set))
    {
        Ok(t) => t,
        Err(crate::RenderError::Template(e)) => {
            let message = match e.line {
                Some((_, column)) => format!("column {column}: {}", e.message),
                None => e.message.clone(),
            };
            fail(step, Some((&e.file, e.line.map(|l| l.0))), &message);
            return Exit::Usage;
        }
        Err(e) => {
            fail(step, None, &e.to_string());
            return Exit::Usage;
        }
    };
    if args.stdout {
        step.result(text.trim_end_matches('\n'));
        return Exit::Success;
    }
    let path = args.output.clone().unwrap_or_else(|| {
        Path::new(".github/workflows").join(format!("{}-deploy.yml", opts.project))
    });
    let shown = path.display().to_string();
    let existing = match std::fs::read_to_string(&path) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            fail(step, None, &format!("cannot read {shown}: {e}"));
            return Exit::Usage;
        }
    };
    let state = inspect(existing.as_deref(), &text);
    let _ = step.set_output("path", &shown);
    let _ = step.set_output("state", state.as_str());
    let regenerate = opts.command_line();
    if args.check {
        let why = match state {
            OnDisk::UpToDate => {
                step.result(&format!("{shown} is up to date"));
                return Exit::Success;
            }
            OnDisk::Missing => "does not exist".to_owned(),
            OnDisk::Stale => format!(
                "is out of date (other flags, templates or pins); regenerate it with `{regenerate}`"
            ),
            OnDisk::HandEdited => format!(
                "was edited by hand since it was generated; move the change into the flags or templates, then run `{regenerate} --force`"
            ),
            OnDisk::NotGenerated => {
                "was not written by codeb-workflow-gen (no codeb-workflow-gen header)".to_owned()
            }
        };
        fail(step, Some((&shown, None)), &format!("{shown} {why}"));
        return Exit::Failure;
    }
    match state {
        OnDisk::UpToDate => {
            step.result(&format!("{shown} is up to date"));
            return Exit::Success;
        }
        OnDisk::HandEdited | OnDisk::NotGenerated if !args.force => {
            let why = if state == OnDisk::HandEdited {
                "was edited by hand since it was generated"
            } else {
                "was not written by codeb-workflow-gen"
            };
            fail(
                step,
                Some((&shown, None)),
                &format!("{shown} {why}; left unchanged (overwrite it with --force)"),
            );
            return Exit::Failure;
        }
        _ => {}
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        fail(
            step,
            None,
            &format!(
                "cannot write {shown}: directory {} does not exist (create it, e.g. `mkdir -p {}`)",
                dir.display(),
                dir.display()
            ),
        );
        return Exit::Usage;
    }
    if let Err(e) = codeb_host::atomic::write(&path, text.as_bytes(), 0o644) {
        fail(step, None, &format!("cannot write {shown}: {e}"));
        return Exit::Usage;
    }
    let _ = step.set_output("state", "written");
    step.result(&format!("wrote {shown}"));
    Exit::Success
}
