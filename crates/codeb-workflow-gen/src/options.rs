//! What one generated workflow is made of, validated.

use codeb_core::{Environment, ProjectName};

/// The environments a workflow deploys to when `--environments` is not given.
pub const DEFAULT_ENVIRONMENTS: [Environment; 2] = [Environment::Staging, Environment::Production];

/// Where the self-hosted jobs take codeb's actions from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ActionsSource {
    /// `codeb/port-validate@v1`, … (one repository per action; pinned per pins.toml).
    #[default]
    Remote,
    /// `./actions/port-validate`, … in the workflow's own repository (codeb's own repository,
    /// or a repository that vendors the actions); the job checks the repository out first.
    Local,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionsError {
    #[error("{0}")]
    Project(#[from] codeb_core::NameError),
    #[error(
        "unknown environment `{0}` in --environments; use staging, production or both (staging,production)"
    )]
    UnknownEnvironment(String),
    #[error(
        "--environments may not list preview: previews are built from pull requests here and deployed by codeb-daemon"
    )]
    Preview,
    #[error("--environments is empty; use staging, production or both")]
    NoEnvironment,
    #[error(
        "registry `{0}` is not a registry host (e.g. ghcr.io, registry.example.com:5000): no scheme, path or spaces"
    )]
    Registry(String),
    #[error(
        "runner label `{0}` is not valid: use letters, digits, `.`, `_` and `-` (e.g. self-hosted,linux)"
    )]
    RunnerLabel(String),
    #[error(
        "--runner-labels must include self-hosted: the deploy jobs run on the app server's own runner, never on GitHub-hosted machines"
    )]
    NotSelfHosted,
}

/// One workflow variant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub project: ProjectName,
    /// A key of types.toml (`nextjs`, `node`, `rust`, `static`, `dockerfile` by default).
    pub kind: String,
    pub database: bool,
    pub redis: bool,
    /// Staging and/or production, in that order, no duplicates.
    pub environments: Vec<Environment>,
    pub registry: String,
    pub runner_labels: Vec<String>,
    pub actions: ActionsSource,
}

impl Options {
    /// The defaults of the command line for `project` and `kind`.
    pub fn new(project: ProjectName, kind: &str) -> Self {
        Self {
            project,
            kind: kind.to_owned(),
            database: false,
            redis: false,
            environments: DEFAULT_ENVIRONMENTS.to_vec(),
            registry: "ghcr.io".into(),
            runner_labels: vec!["self-hosted".into()],
            actions: ActionsSource::Remote,
        }
    }

    /// Parses `staging,production` (any order, duplicates allowed) into staging-then-production.
    pub fn parse_environments(list: &str) -> Result<Vec<Environment>, OptionsError> {
        let mut found = Vec::new();
        for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let env: Environment = part
                .parse()
                .map_err(|_| OptionsError::UnknownEnvironment(part.to_owned()))?;
            if env == Environment::Preview {
                return Err(OptionsError::Preview);
            }
            found.push(env);
        }
        let ordered: Vec<Environment> = DEFAULT_ENVIRONMENTS
            .into_iter()
            .filter(|e| found.contains(e))
            .collect();
        if ordered.is_empty() {
            return Err(OptionsError::NoEnvironment);
        }
        Ok(ordered)
    }

    /// Checks a registry host: `host[:port]`, lower-case DNS characters.
    pub fn parse_registry(s: &str) -> Result<String, OptionsError> {
        let ok = !s.is_empty()
            && s.len() <= 253
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || ".-:".contains(c))
            && !s.starts_with(['.', '-', ':'])
            && s.split(':').count() <= 2
            && s.split(':').nth(1).is_none_or(|p| p.parse::<u16>().is_ok());
        if ok {
            Ok(s.to_owned())
        } else {
            Err(OptionsError::Registry(s.to_owned()))
        }
    }

    /// Parses `self-hosted,linux` into labels; `self-hosted` must be one of them.
    pub fn parse_runner_labels(list: &str) -> Result<Vec<String>, OptionsError> {
        let mut labels: Vec<String> = Vec::new();
        for l in list.split(',').map(str::trim).filter(|l| !l.is_empty()) {
            if l.len() > 100
                || !l
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            {
                return Err(OptionsError::RunnerLabel(l.to_owned()));
            }
            if !labels.iter().any(|x| x == l) {
                labels.push(l.to_owned());
            }
        }
        if !labels.iter().any(|l| l == "self-hosted") {
            return Err(OptionsError::NotSelfHosted);
        }
        Ok(labels)
    }

    /// The flags that reproduce this variant (defaults left out), for the file's header.
    pub fn command_line(&self) -> String {
        let mut s = format!(
            "codeb-workflow-gen --project {} --type {}",
            self.project, self.kind
        );
        if self.database {
            s.push_str(" --database");
        }
        if self.redis {
            s.push_str(" --redis");
        }
        if self.environments != DEFAULT_ENVIRONMENTS {
            let list: Vec<&str> = self.environments.iter().map(|e| e.as_str()).collect();
            s.push_str(&format!(" --environments {}", list.join(",")));
        }
        if self.registry != "ghcr.io" {
            s.push_str(&format!(" --registry {}", self.registry));
        }
        if self.runner_labels != ["self-hosted"] {
            s.push_str(&format!(
                " --runner-labels {}",
                self.runner_labels.join(",")
            ));
        }
        if self.actions == ActionsSource::Local {
            s.push_str(" --actions local");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environments_are_ordered_and_checked() {
        assert_eq!(
            Options::parse_environments("production, staging,production"),
            Ok(vec![Environment::Staging, Environment::Production])
        );
        assert_eq!(
            Options::parse_environments("qa"),
            Err(OptionsError::UnknownEnvironment("qa".into()))
        );
        assert_eq!(
            Options::parse_environments("preview"),
            Err(OptionsError::Preview)
        );
        assert_eq!(
            Options::parse_environments(" , "),
            Err(OptionsError::NoEnvironment)
        );
    }

    #[test]
    fn registries_and_labels() {
        for ok in ["ghcr.io", "registry.example.com:5000", "127.0.0.1:15000"] {
            assert_eq!(Options::parse_registry(ok), Ok(ok.to_owned()));
        }
        for bad in [
            "https://ghcr.io",
            "ghcr.io/acme",
            "GHCR.io",
            "",
            "a:b:c",
            "x:99999",
        ] {
            assert!(Options::parse_registry(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Options::parse_runner_labels("self-hosted, linux,self-hosted"),
            Ok(vec!["self-hosted".into(), "linux".into()])
        );
        assert_eq!(
            Options::parse_runner_labels("ubuntu-latest"),
            Err(OptionsError::NotSelfHosted)
        );
        assert!(Options::parse_runner_labels("self-hosted,a b").is_err());
        assert!(Options::parse_runner_labels("self-hosted,${{x}}").is_err());
    }
}
