//! `codeb-port-validate`: checks that a project's port is valid before a deploy (in its
//! environment's range, unique across the manifest, not reserved, not taken on the host),
//! and with `--allocate` assigns the lowest free port and writes the manifest.
//!
//! Exit codes: 0 valid, 1 validation failure, 2 usage or I/O error.

use clap::{Parser, ValueEnum};
use codeb_actions::{Annotation, Exit, Level, Step, md_cell};
use codeb_core::manifest::{Manifest, PortUse, Problem, Scope, Target};
use codeb_core::{Environment, ProjectName};
use codeb_host::{AllocateError, HostPorts, ManifestStore, StoreError};
use std::path::PathBuf;
use std::process::ExitCode;

const AFTER_HELP: &str = "\
Examples:
  # Is myapp's production port valid? Prints the port.
  codeb-port-validate --project myapp --environment production

  # Give myapp a staging port if it has none (lowest free in 4500-4999), write the manifest.
  codeb-port-validate --project myapp --environment staging --allocate

  # A port for pull request 42's preview (5000-5999).
  codeb-port-validate --project myapp --environment preview --pr 42 --allocate

  # Check the whole manifest.
  codeb-port-validate --all

Ranges: production 4000-4499, staging 4500-4999, preview 5000-5999. Always reserved:
3000, 3102, 3103, 5432. Every flag can also come from its action input (INPUT_<NAME>).

Exit codes: 0 valid, 1 validation failure, 2 usage or I/O error (unreadable or malformed manifest).";

#[derive(Debug, Parser)]
#[command(
    name = "codeb-port-validate",
    args_override_self = true,
    version,
    about = "Validate a project's port against the codeb port manifest and this host",
    after_help = AFTER_HELP
)]
struct Args {
    /// The port manifest [default: $CODEB_MANIFEST, else /home/codeb/config/port-manifest.yaml]
    #[arg(long, value_name = "PATH")]
    manifest: Option<PathBuf>,

    /// Project name (a DNS label: a-z, 0-9, -)
    #[arg(long, value_name = "NAME", required_unless_present = "all", value_parser = parse_project)]
    project: Option<ProjectName>,

    /// Which environment's port to check
    #[arg(long, value_name = "ENV", required_unless_present = "all", value_parser = parse_env)]
    environment: Option<Environment>,

    /// Pull request number (preview environment only)
    #[arg(long, value_name = "N")]
    pr: Option<u64>,

    /// Take the lowest free port in the environment's range if none is assigned, and write
    /// the manifest (atomically, under a lock)
    #[arg(long, conflicts_with = "all")]
    allocate: bool,

    /// Check every entry of the manifest
    #[arg(long, conflicts_with_all = ["project", "environment", "pr"])]
    all: bool,

    /// Do not look at the host's listening ports
    #[arg(long)]
    no_host_check: bool,

    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Text,
    Json,
}

fn parse_project(s: &str) -> Result<ProjectName, String> {
    ProjectName::new(s).map_err(|e| e.to_string())
}

fn parse_env(s: &str) -> Result<Environment, String> {
    s.parse()
        .map_err(|e: codeb_core::names::UnknownEnvironment| e.to_string())
}

/// How a run ended; each maps to a documented exit code.
enum Outcome {
    Valid,
    Invalid,
    Error,
}

pub fn main() -> ExitCode {
    let step = Step::from_env();
    let args: Args = match codeb_actions::parse_args(&step, "codeb-port-validate") {
        Ok(a) => a,
        Err(code) => return code,
    };
    match run(&step, &args) {
        Outcome::Valid => Exit::Success,
        Outcome::Invalid => Exit::Failure,
        Outcome::Error => Exit::Usage,
    }
    .into()
}

fn fail(step: &Step, file: Option<&str>, message: &str) {
    step.annotate(
        Level::Error,
        &Annotation {
            file: file.map(str::to_owned),
            line: None,
            title: Some("codeb-port-validate".into()),
            message: message.to_owned(),
        },
    );
}

fn run(step: &Step, args: &Args) -> Outcome {
    let store = ManifestStore::resolve(args.manifest.clone());
    let file = store.path().display().to_string();
    let target = match (&args.project, args.environment) {
        (Some(p), Some(e)) if !args.all => match Target::new(p.clone(), e, args.pr) {
            Ok(t) => Some(t),
            Err(e) => {
                fail(step, None, &e.to_string());
                return Outcome::Error;
            }
        },
        _ => None,
    };
    let host = if args.no_host_check {
        None
    } else {
        match HostPorts::read() {
            Ok(h) => Some(h),
            Err(e) => {
                fail(
                    step,
                    None,
                    &format!("cannot read the host's listening ports: {e}"),
                );
                return Outcome::Error;
            }
        }
    };

    let mut allocated = None;
    let doc = if let (true, Some(t)) = (args.allocate, &target) {
        match store.allocate(t, host.as_ref()) {
            Ok((doc, port)) => {
                allocated = port;
                doc
            }
            Err(AllocateError::Store(e)) => return store_error(step, &file, &e),
            Err(AllocateError::Pool(e)) => {
                let msg = e.to_string();
                report(
                    step,
                    args.format,
                    &file,
                    target.as_ref(),
                    None,
                    &[Problem {
                        kind: codeb_core::manifest::ProblemKind::Missing,
                        line: 1,
                        title: "Port pool exhausted".into(),
                        message: msg,
                        port: None,
                    }],
                );
                return Outcome::Invalid;
            }
        }
    } else {
        match store.load() {
            Ok(d) => d,
            Err(e) => return store_error(step, &file, &e),
        }
    };

    let problems = validate(&doc.manifest, target.as_ref(), host.as_ref());
    let port = target
        .as_ref()
        .and_then(|t| doc.manifest.assignment(t))
        .map(|a| a.port);
    report(step, args.format, &file, target.as_ref(), port, &problems);
    if problems.is_empty() {
        if let Some(port) = port {
            if let Err(e) = step.set_output("port", &port.to_string()) {
                fail(step, None, &format!("cannot write $GITHUB_OUTPUT: {e}"));
                return Outcome::Error;
            }
            let _ = step.set_output(
                "allocated",
                if allocated.is_some() { "true" } else { "false" },
            );
        }
        Outcome::Valid
    } else {
        Outcome::Invalid
    }
}

fn validate(m: &Manifest, target: Option<&Target>, host: Option<&HostPorts>) -> Vec<Problem> {
    let scope = match target {
        Some(t) => Scope::Target(t),
        None => Scope::All,
    };
    let mut use_of = |a: &codeb_core::manifest::Assignment| match host {
        Some(h) => h.use_of(a),
        None => PortUse::Free,
    };
    m.validate(scope, &mut use_of)
}

fn store_error(step: &Step, file: &str, e: &StoreError) -> Outcome {
    match e {
        StoreError::Parse { errors, .. } => {
            for err in errors {
                step.annotate(
                    Level::Error,
                    &Annotation {
                        file: Some(file.to_owned()),
                        line: Some(err.line),
                        title: Some("Malformed port manifest".into()),
                        message: err.message.clone(),
                    },
                );
            }
            let mut md =
                String::from("### Port manifest is malformed\n\n| Line | Problem |\n|---|---|\n");
            for err in errors {
                md.push_str(&format!("| {} | {} |\n", err.line, md_cell(&err.message)));
            }
            let _ = step.append_summary(&md);
        }
        other => fail(step, Some(file), &other.to_string()),
    }
    Outcome::Error
}

#[derive(serde::Serialize)]
struct JsonReport<'a> {
    manifest: &'a str,
    valid: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    project: Option<&'a ProjectName>,
    #[serde(skip_serializing_if = "Option::is_none")]
    environment: Option<Environment>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pr: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    port: Option<u16>,
    problems: &'a [Problem],
}

fn report(
    step: &Step,
    format: Format,
    file: &str,
    target: Option<&Target>,
    port: Option<u16>,
    problems: &[Problem],
) {
    for p in problems {
        step.annotate(
            Level::Error,
            &Annotation {
                file: Some(file.to_owned()),
                line: Some(p.line),
                title: Some(p.title.clone()),
                message: p.message.clone(),
            },
        );
    }
    if !problems.is_empty() {
        let mut md = format!(
            "### Port validation failed: {} problem{}\n\n| Line | Problem | Port | Details |\n|---|---|---|---|\n",
            problems.len(),
            if problems.len() == 1 { "" } else { "s" }
        );
        for p in problems {
            md.push_str(&format!(
                "| {} | {} | {} | {} |\n",
                p.line,
                md_cell(&p.title),
                p.port.map(|p| p.to_string()).unwrap_or_default(),
                md_cell(&p.message)
            ));
        }
        let _ = step.append_summary(&md);
    }
    match format {
        Format::Json => {
            let r = JsonReport {
                manifest: file,
                valid: problems.is_empty(),
                project: target.map(|t| &t.project),
                environment: target.map(|t| t.environment),
                pr: target.and_then(|t| t.pr),
                port,
                problems,
            };
            match serde_json::to_string_pretty(&r) {
                Ok(s) => step.result(&s),
                Err(e) => fail(step, None, &format!("cannot encode the JSON report: {e}")),
            }
        }
        Format::Text if problems.is_empty() => match (target, port) {
            (Some(t), Some(port)) => {
                step.log(&format!("{t}: port {port} is valid ({file})"));
                step.result(&port.to_string());
            }
            _ => step.result(&format!("{file}: every port is valid")),
        },
        Format::Text => {}
    }
}
