//! Options + template set → the workflow file (header + body).

use crate::options::{ActionsSource, DEFAULT_ENVIRONMENTS, Options};
use crate::stamp;
use crate::templates::{TemplateError, TemplateSet, TypeSpec};
use codeb_core::{Environment, ProjectName};
use serde::Serialize;
use std::collections::BTreeMap;

/// The Node.js major version the JavaScript types set up.
const NODE_VERSION: &str = "22";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("unknown project type `{kind}`; the types are {}", known.join(", "))]
    UnknownType { kind: String, known: Vec<String> },
    #[error("{0}")]
    Template(#[from] TemplateError),
}

#[derive(Serialize)]
struct Context<'a> {
    project: &'a str,
    r#type: &'a str,
    database: bool,
    redis: bool,
    registry: &'a str,
    ghcr: bool,
    environments: Vec<&'static str>,
    has_staging: bool,
    has_production: bool,
    push_branches: Vec<&'static str>,
    runs_on: String,
    local_actions: bool,
    node_version: &'static str,
    t: &'a TypeSpec,
    uses: BTreeMap<String, String>,
    images: BTreeMap<String, String>,
}

/// Renders the workflow of `opts`: the header (with the body's hash), then the body.
pub fn render(opts: &Options, set: &TemplateSet) -> Result<String, RenderError> {
    let t = set
        .type_spec(&opts.kind)
        .ok_or_else(|| RenderError::UnknownType {
            kind: opts.kind.clone(),
            known: set.types().map(|(k, _)| k.to_owned()).collect(),
        })?;
    // `--database`/`--redis` say what the app uses. A type with a test job gets service
    // containers for its tests; a type without one (static, dockerfile) gets none, and the
    // flags stay in the header's command line, which provisioning reads later.
    let has = |e: Environment| opts.environments.contains(&e);
    let mut push_branches = vec!["main"];
    if has(Environment::Staging) {
        push_branches.push("develop");
    }
    let runs_on = match opts.runner_labels.as_slice() {
        [one] => one.clone(),
        many => format!("[{}]", many.join(", ")),
    };
    let ctx = Context {
        project: opts.project.as_str(),
        r#type: &opts.kind,
        database: opts.database,
        redis: opts.redis,
        registry: &opts.registry,
        ghcr: opts.registry == "ghcr.io",
        environments: opts.environments.iter().map(|e| e.as_str()).collect(),
        has_staging: has(Environment::Staging),
        has_production: has(Environment::Production),
        push_branches,
        runs_on,
        local_actions: opts.actions == ActionsSource::Local,
        node_version: NODE_VERSION,
        t,
        uses: set.uses(opts.actions == ActionsSource::Local),
        images: set.images(),
    };
    let ctx = tera::Context::from_serialize(&ctx).map_err(|e| TemplateError {
        file: crate::templates::MAIN.into(),
        line: None,
        message: e.to_string(),
    })?;
    let rendered = set.render_main(&ctx)?;
    let mut body = rendered.trim_start_matches('\n').trim_end().to_owned();
    body.push('\n');
    Ok(format!(
        "{}{body}",
        stamp::header(&opts.command_line(), &body)
    ))
}

/// Every variant the proof covers: each type of `set`, with and without a database and Redis,
/// for each environment set.
pub fn variant_matrix(set: &TemplateSet, project: &ProjectName) -> Vec<Options> {
    let env_sets: [&[Environment]; 3] = [
        &[Environment::Staging],
        &[Environment::Production],
        &DEFAULT_ENVIRONMENTS,
    ];
    let mut out = Vec::new();
    for (kind, _) in set.types() {
        for (database, redis) in [(false, false), (true, false), (false, true), (true, true)] {
            for envs in env_sets {
                let mut o = Options::new(project.clone(), kind);
                o.database = database;
                o.redis = redis;
                o.environments = envs.to_vec();
                out.push(o);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set() -> TemplateSet {
        TemplateSet::embedded().expect("embedded templates")
    }

    fn project() -> ProjectName {
        ProjectName::new("myapp").expect("valid name")
    }

    /// A short, stable name for a variant's snapshot.
    fn variant_name(o: &Options) -> String {
        let envs: Vec<&str> = o.environments.iter().map(|e| e.as_str()).collect();
        let mut name = format!("{}-{}", o.kind, envs.join("+"));
        if o.database {
            name.push_str("-database");
        }
        if o.redis {
            name.push_str("-redis");
        }
        name
    }

    #[test]
    fn every_variant_matches_its_snapshot() {
        let set = set();
        let matrix = variant_matrix(&set, &project());
        assert_eq!(matrix.len(), 5 * 4 * 3);
        for o in &matrix {
            let text = render(o, &set).expect("renders");
            assert!(!text.contains("{{") || text.contains("${{"), "{text}");
            insta::assert_snapshot!(variant_name(o), text);
        }
    }

    #[test]
    fn local_actions_and_another_registry() {
        let set = set();
        let mut o = Options::new(project(), "node");
        o.actions = ActionsSource::Local;
        o.registry = "registry.example.com:5000".into();
        o.runner_labels = vec!["self-hosted".into(), "linux".into(), "app1".into()];
        let text = render(&o, &set).expect("renders");
        insta::assert_snapshot!("node-local-actions-other-registry", text);
    }

    #[test]
    fn static_and_dockerfile_accept_database_and_redis_without_service_containers() {
        let set = set();
        for kind in ["static", "dockerfile"] {
            let mut o = Options::new(project(), kind);
            let plain = render(&o, &set).expect("renders");
            o.database = true;
            o.redis = true;
            let text = render(&o, &set).expect("--database/--redis are accepted");
            assert!(
                text.contains(&format!("--type {kind} --database --redis")),
                "the header keeps the flags for provisioning:\n{text}"
            );
            assert!(
                !text.contains("services:"),
                "no test job, no services:\n{text}"
            );
            let body = |t: &str| {
                t.split_once(stamp::HASH_LINE)
                    .and_then(|(_, rest)| rest.split_once('\n'))
                    .map(|(_, b)| b.to_owned())
            };
            assert_eq!(body(&text), body(&plain), "only the header differs");
        }
        let e = render(&Options::new(project(), "php"), &set).expect_err("unknown type");
        assert_eq!(
            e.to_string(),
            "unknown project type `php`; the types are dockerfile, nextjs, node, rust, static"
        );
    }

    #[test]
    fn the_header_hash_covers_the_body() {
        let set = set();
        let text = render(&Options::new(project(), "nextjs"), &set).expect("renders");
        assert_eq!(stamp::inspect(Some(&text), &text), crate::OnDisk::UpToDate);
        let edited = text.replace("timeout-minutes: 30", "timeout-minutes: 31");
        assert_eq!(
            stamp::inspect(Some(&edited), &text),
            crate::OnDisk::HandEdited
        );
    }
}
