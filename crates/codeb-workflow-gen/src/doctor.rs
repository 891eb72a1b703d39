//! `codeb-workflow-gen doctor --repo OWNER/NAME`: can a fork's pull request reach the
//! self-hosted runner that holds deploy rights?
//!
//! The generated workflow sends only push and dispatch runs to the self-hosted runner, but that
//! guard is an `if:` in a workflow file, and a fork's `pull_request` run takes its workflow
//! file from the fork: the fork can delete the `if:` and name `runs-on: self-hosted`. What
//! really keeps forks off the runner is configured on GitHub, and this module reads it
//! through the REST API (API version 2022-11-28):
//!
//! - `GET /repos/{owner}/{repo}` — `private`, `visibility`, `owner.type`
//!   (docs.github.com/en/rest/repos/repos#get-a-repository);
//! - public repositories: `GET /repos/{owner}/{repo}/actions/permissions/fork-pr-contributor-approval`
//!   → `{"approval_policy": "first_time_contributors"}`, one of
//!   `first_time_contributors_new_to_github`, `first_time_contributors`,
//!   `all_external_contributors` (docs.github.com/en/rest/actions/permissions#get-fork-pr-contributor-approval-permissions-for-a-repository);
//! - private repositories: `GET /repos/{owner}/{repo}/actions/permissions/fork-pr-workflows-private-repos`
//!   → `{"run_workflows_from_fork_pull_requests": true, "send_write_tokens_to_workflows": false,
//!   "send_secrets_and_variables": false, "require_approval_for_fork_pr_workflows": true}`
//!   (docs.github.com/en/rest/actions/permissions#get-private-repo-fork-pr-workflow-settings-for-a-repository);
//! - `GET /repos/{owner}/{repo}/actions/runners` → `{"total_count": 2, "runners": [{"id": 23,
//!   "name": "MBP", "os": "macos", "status": "online", "busy": true, "labels": [{"id": 5,
//!   "name": "self-hosted", "type": "read-only"}]}]}` (docs.github.com/en/rest/actions/self-hosted-runners#list-self-hosted-runners-for-a-repository);
//! - organizations: `GET /orgs/{org}/actions/runner-groups?visible_to_repository={repo}` →
//!   `{"total_count": 3, "runner_groups": [{"id": 2, "name": "octo-runner-group", "visibility":
//!   "selected", "default": false, "runners_url": "…", "inherited": false,
//!   "allows_public_repositories": true, "restricted_to_workflows": true, "selected_workflows":
//!   ["octo-org/octo-repo/.github/workflows/deploy.yaml@refs/heads/main"],
//!   "workflow_restrictions_read_only": false}]}` and, per group,
//!   `GET /orgs/{org}/actions/runner-groups/{id}/runners` (same shape as the repository's
//!   runners) (docs.github.com/en/rest/actions/self-hosted-runner-groups).
//!
//! A fork could reach a runner when fork pull requests run workflows at all (every public
//! repository; a private one with "Run workflows from fork pull requests") and some runner the
//! repository may use takes jobs from any of its workflow runs: a repository runner (those
//! cannot be restricted), or an organization group without "Selected workflows" pinned to a
//! branch, tag or SHA (a fork's run has the ref `refs/pull/N/merge`). Approval of fork runs is
//! reported beside it, but it does not make the runner safe: one approved run executes the
//! fork's workflow file as written.

use codeb_secret::Secret;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::fmt;
use std::time::Duration;

const USER_AGENT: &str = concat!("codeb-workflow-gen/", env!("CARGO_PKG_VERSION"));
const API_VERSION: &str = "2022-11-28";
/// Pages of 100 followed at most per list (10,000 runners or groups).
const MAX_PAGES: u32 = 100;

/// `OWNER/NAME`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoName {
    pub owner: String,
    pub name: String,
}

impl RepoName {
    pub fn parse(s: &str) -> Result<Self, DoctorError> {
        let bad = || DoctorError::BadRepo(s.to_owned());
        let (owner, name) = s.split_once('/').ok_or_else(bad)?;
        let ok = |p: &str| {
            !p.is_empty()
                && p.len() <= 100
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                && p != "."
                && p != ".."
        };
        if !ok(owner) || !ok(name) {
            return Err(bad());
        }
        Ok(Self {
            owner: owner.to_owned(),
            name: name.to_owned(),
        })
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.owner, self.name)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DoctorError {
    #[error("--repo `{0}` is not OWNER/NAME (e.g. --repo acme/myapp)")]
    BadRepo(String),
    #[error("GITHUB_API_URL `{0}` is not an http(s) URL (e.g. https://api.github.com)")]
    BadApiUrl(String),
    #[error(
        "GitHub answered 401 Unauthorized to GET {url}: {why}; set CODEB_GITHUB_TOKEN (or GITHUB_TOKEN) to a token of an administrator of the repository"
    )]
    Unauthorized { url: String, why: &'static str },
    #[error("GitHub answered 403 Forbidden to GET {url} ({message}); reading {what} needs {needs}")]
    Forbidden {
        url: String,
        message: String,
        what: &'static str,
        needs: &'static str,
    },
    #[error(
        "GitHub answered 404 Not Found to GET {url}: {what} not found; check --repo (GitHub also answers 404 when the token may not see the repository or lacks the permission: {needs})"
    )]
    NotFound {
        url: String,
        what: &'static str,
        needs: &'static str,
    },
    #[error("GitHub answered {status} to GET {url}: {message}")]
    Status {
        url: String,
        status: u16,
        message: String,
    },
    #[error("GET {url} failed: {source}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("GET {url}: the answer is not the JSON GitHub documents ({source})")]
    Decode {
        url: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot start the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

// --- the response shapes (only the fields used; GitHub's documented names) -----------------

#[derive(Debug, Clone, Deserialize)]
pub struct Repository {
    pub full_name: String,
    pub private: bool,
    #[serde(default)]
    pub visibility: Option<String>,
    pub owner: Owner,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Owner {
    pub login: String,
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Debug, Clone, Deserialize)]
struct ApprovalPolicy {
    approval_policy: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PrivateForkSettings {
    pub run_workflows_from_fork_pull_requests: bool,
    #[serde(default)]
    pub require_approval_for_fork_pr_workflows: bool,
}

#[derive(Debug, Clone, Deserialize)]
struct RunnerList {
    #[serde(default)]
    runners: Vec<Runner>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Runner {
    pub id: u64,
    pub name: String,
}

#[derive(Debug, Clone, Deserialize)]
struct GroupList {
    #[serde(default)]
    runner_groups: Vec<RunnerGroup>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RunnerGroup {
    pub id: u64,
    pub name: String,
    #[serde(default)]
    pub allows_public_repositories: bool,
    #[serde(default)]
    pub restricted_to_workflows: bool,
    #[serde(default)]
    pub selected_workflows: Vec<String>,
    #[serde(skip)]
    pub runners: Vec<Runner>,
}

/// Everything the verdict is made of, as GitHub reported it.
#[derive(Debug, Clone)]
pub struct Facts {
    pub repo: RepoName,
    pub repository: Repository,
    /// Public repositories: who needs approval before a fork's run starts.
    pub approval_policy: Option<String>,
    /// Private repositories: whether fork pull requests run workflows.
    pub private_forks: Option<PrivateForkSettings>,
    pub repo_runners: Vec<Runner>,
    /// Organization runner groups this repository may use (with their runners).
    pub groups: Vec<RunnerGroup>,
}

/// One way a fork could reach a runner, and the setting that closes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub problem: String,
    pub fix: String,
}

/// The verdict: no findings means no fork pull request can reach a self-hosted runner.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub findings: Vec<Finding>,
    /// Why it is safe (or what else was seen), one line each.
    pub notes: Vec<String>,
}

impl Verdict {
    pub fn safe(&self) -> bool {
        self.findings.is_empty()
    }
}

/// The ref of a `selected_workflows` entry (`OWNER/REPO/PATH@REF`) when it names this
/// repository; `None` for another repository's workflow.
fn entry_ref<'a>(entry: &'a str, repo: &RepoName) -> Option<Option<&'a str>> {
    let prefix = format!("{}/{}/", repo.owner, repo.name).to_ascii_lowercase();
    if !entry.to_ascii_lowercase().starts_with(&prefix) {
        return None;
    }
    Some(entry.rsplit_once('@').map(|(_, r)| r))
}

/// Whether a fork's pull_request run (ref `refs/pull/N/merge`, or `refs/pull/N/head`) could
/// match a selected-workflow ref.
fn fork_ref_matches(r: Option<&str>) -> bool {
    match r {
        None => true,
        Some(r) => r.is_empty() || r.contains('*') || r.starts_with("refs/pull/"),
    }
}

/// Judges the facts (pure).
pub fn assess(f: &Facts, workflow: &str) -> Verdict {
    let repo = &f.repo;
    let public = !f.repository.private;
    let org = f.repository.owner.kind == "Organization";
    let pinned = format!("{repo}/{workflow}@refs/heads/main");
    let mut findings = Vec::new();
    let mut notes = Vec::new();

    let forks_run = if public {
        true
    } else {
        f.private_forks
            .as_ref()
            .is_some_and(|p| p.run_workflows_from_fork_pull_requests)
    };
    if !forks_run {
        notes.push(format!(
            "{repo} is private and does not run workflows from fork pull requests (Settings → Actions → General → Fork pull request workflows in private repositories: \"Run workflows from fork pull requests\" is off)"
        ));
        return Verdict { findings, notes };
    }
    let why_forks = if public {
        format!("{repo} is public, so pull requests from forks run its workflows")
    } else {
        format!(
            "{repo} is private but runs workflows from fork pull requests (run_workflows_from_fork_pull_requests=true)"
        )
    };
    let close_private = if public {
        String::new()
    } else {
        " Or turn off Settings → Actions → General → Fork pull request workflows in private repositories → \"Run workflows from fork pull requests\" (run_workflows_from_fork_pull_requests=false).".to_owned()
    };

    if !f.repo_runners.is_empty() {
        let names: Vec<&str> = f.repo_runners.iter().map(|r| r.name.as_str()).collect();
        let fix = if org {
            format!(
                "Remove them from the repository (Settings → Actions → Runners) and register them in an organization runner group that only this workflow may use: Organization settings → Actions → Runner groups → New runner group → Repository access: Selected repositories ({repo}) → Workflow access: Selected workflows → `{pinned}` (API: restricted_to_workflows=true, selected_workflows=[\"{pinned}\"]).{close_private}"
            )
        } else if public {
            format!(
                "A repository of a personal account cannot restrict its runners to workflows: make {repo} private (Settings → General → Danger Zone → Change visibility, and keep \"Run workflows from fork pull requests\" off), or move it to an organization and use a runner group restricted to `{pinned}`."
            )
        } else {
            close_private.trim_start().to_owned()
        };
        findings.push(Finding {
            problem: format!(
                "{why_forks}, and the repository runner(s) {} take jobs from any of its workflow runs; a fork's pull_request run uses the fork's copy of the workflow, so it can drop the `if:` guard and ask for `runs-on: self-hosted`",
                names.join(", ")
            ),
            fix,
        });
    }

    for g in &f.groups {
        if g.runners.is_empty() {
            continue;
        }
        if public && !g.allows_public_repositories {
            notes.push(format!(
                "runner group `{}` does not allow public repositories (allows_public_repositories=false)",
                g.name
            ));
            continue;
        }
        let setting = format!(
            "Organization settings → Actions → Runner groups → {} → Workflow access: Selected workflows → `{pinned}` (API: PATCH /orgs/{}/actions/runner-groups/{} with restricted_to_workflows=true, selected_workflows=[\"{pinned}\"])",
            g.name, repo.owner, g.id
        );
        if !g.restricted_to_workflows {
            findings.push(Finding {
                problem: format!(
                    "{why_forks}, and runner group `{}` ({} runner(s)) takes jobs from any workflow of the repository (restricted_to_workflows=false)",
                    g.name,
                    g.runners.len()
                ),
                fix: format!("{setting}.{close_private}"),
            });
            continue;
        }
        let ours: Vec<(&str, Option<&str>)> = g
            .selected_workflows
            .iter()
            .filter_map(|e| entry_ref(e, repo).map(|r| (e.as_str(), r)))
            .collect();
        let open: Vec<&str> = ours
            .iter()
            .filter(|(_, r)| fork_ref_matches(*r))
            .map(|(e, _)| *e)
            .collect();
        if !open.is_empty() {
            findings.push(Finding {
                problem: format!(
                    "{why_forks}, and runner group `{}` allows the workflow(s) {} at a ref a fork's pull request run can have (a wildcard or refs/pull/…)",
                    g.name,
                    open.join(", ")
                ),
                fix: format!(
                    "Pin each selected workflow of `{}` to a branch, tag or SHA: {setting}.{close_private}",
                    g.name
                ),
            });
        } else if ours.is_empty() {
            notes.push(format!(
                "runner group `{}` is restricted to workflows of other repositories; {repo}'s deploy jobs cannot use it",
                g.name
            ));
        } else {
            let list: Vec<&str> = ours.iter().map(|(e, _)| *e).collect();
            notes.push(format!(
                "runner group `{}` only runs {} (a fork's run has ref refs/pull/N/merge)",
                g.name,
                list.join(", ")
            ));
        }
    }

    if !findings.is_empty() && public {
        match f.approval_policy.as_deref() {
            Some("all_external_contributors") => notes.push(
                "fork runs need a maintainer's approval for every outside contributor; that slows an attack, it does not stop one: an approved run executes the fork's workflow file as written".into(),
            ),
            Some(p) => findings.push(Finding {
                problem: format!(
                    "fork pull request runs from contributors start without approval unless they are first-time contributors (approval_policy={p})"
                ),
                fix: "Settings → Actions → General → Approval for running fork pull request workflows from contributors → \"Require approval for all external contributors\" (API: PUT /repos/OWNER/NAME/actions/permissions/fork-pr-contributor-approval with approval_policy=all_external_contributors). This only slows an attack; the runner settings above close it.".replace("OWNER/NAME", &repo.to_string()),
            }),
            None => {}
        }
    }
    if findings.is_empty() {
        if f.repo_runners.is_empty() && f.groups.iter().all(|g| g.runners.is_empty()) {
            notes.push(format!("{repo} has no self-hosted runner"));
        }
        notes.push(format!(
            "{why_forks}, but none of them can reach a self-hosted runner"
        ));
    }
    Verdict { findings, notes }
}

/// A small GitHub REST client (reqwest, with timeouts and a user agent).
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<Secret>,
}

impl Client {
    pub fn new(base: &str, token: Option<Secret>) -> Result<Self, DoctorError> {
        let base = base.trim_end_matches('/');
        if !(base.starts_with("https://") || base.starts_with("http://")) {
            return Err(DoctorError::BadApiUrl(base.to_owned()));
        }
        let http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(DoctorError::Client)?;
        Ok(Self {
            http,
            base: base.to_owned(),
            token: token.filter(|t| !t.is_empty()),
        })
    }

    async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        what: &'static str,
        needs: &'static str,
    ) -> Result<T, DoctorError> {
        let url = format!("{}{path}", self.base);
        let mut req = self
            .http
            .get(&url)
            .header("accept", "application/vnd.github+json")
            .header("x-github-api-version", API_VERSION);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t.expose());
        }
        let resp = req.send().await.map_err(|source| DoctorError::Http {
            url: url.clone(),
            source,
        })?;
        let status = resp.status().as_u16();
        let body = resp.bytes().await.map_err(|source| DoctorError::Http {
            url: url.clone(),
            source,
        })?;
        let message = || {
            serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["message"].as_str().map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(200).collect())
        };
        match status {
            200 => {
                serde_json::from_slice(&body).map_err(|source| DoctorError::Decode { url, source })
            }
            401 => Err(DoctorError::Unauthorized {
                url,
                why: if self.token.is_some() {
                    "the token was refused (expired, revoked or mistyped)"
                } else {
                    "no token was sent (CODEB_GITHUB_TOKEN and GITHUB_TOKEN are unset)"
                },
            }),
            403 => Err(DoctorError::Forbidden {
                url,
                message: message(),
                what,
                needs,
            }),
            404 => Err(DoctorError::NotFound { url, what, needs }),
            _ => Err(DoctorError::Status {
                url,
                status,
                message: message(),
            }),
        }
    }

    async fn runners(
        &self,
        path: &str,
        what: &'static str,
        needs: &'static str,
    ) -> Result<Vec<Runner>, DoctorError> {
        let mut all = Vec::new();
        for page in 1..=MAX_PAGES {
            let sep = if path.contains('?') { '&' } else { '?' };
            let list: RunnerList = self
                .get(&format!("{path}{sep}per_page=100&page={page}"), what, needs)
                .await?;
            let n = list.runners.len();
            all.extend(list.runners);
            if n < 100 {
                break;
            }
        }
        Ok(all)
    }

    /// Reads every fact [`assess`] needs.
    pub async fn facts(&self, repo: &RepoName) -> Result<Facts, DoctorError> {
        const REPO_NEEDS: &str = "read access to the repository (fine-grained token: Metadata read; classic: repo for a private repository)";
        const ADMIN_NEEDS: &str = "an administrator's token (fine-grained: repository Administration read; classic: repo)";
        const ORG_NEEDS: &str = "an organization owner's token (fine-grained: organization Self-hosted runners read; classic: admin:org)";
        let base = format!("/repos/{}/{}", repo.owner, repo.name);
        let repository: Repository = self.get(&base, "the repository", REPO_NEEDS).await?;
        let (approval_policy, private_forks) = if repository.private {
            let s: PrivateForkSettings = self
                .get(
                    &format!("{base}/actions/permissions/fork-pr-workflows-private-repos"),
                    "the fork pull request workflow settings",
                    ADMIN_NEEDS,
                )
                .await?;
            (None, Some(s))
        } else {
            let p: ApprovalPolicy = self
                .get(
                    &format!("{base}/actions/permissions/fork-pr-contributor-approval"),
                    "the fork pull request approval policy",
                    ADMIN_NEEDS,
                )
                .await?;
            (Some(p.approval_policy), None)
        };
        let repo_runners = self
            .runners(
                &format!("{base}/actions/runners"),
                "the repository's self-hosted runners",
                ADMIN_NEEDS,
            )
            .await?;
        let mut groups = Vec::new();
        if repository.owner.kind == "Organization" {
            let org = &repository.owner.login;
            for page in 1..=MAX_PAGES {
                let list: GroupList = self
                    .get(
                        &format!(
                            "/orgs/{org}/actions/runner-groups?visible_to_repository={}&per_page=100&page={page}",
                            repo.name
                        ),
                        "the organization's runner groups",
                        ORG_NEEDS,
                    )
                    .await?;
                let n = list.runner_groups.len();
                groups.extend(list.runner_groups);
                if n < 100 {
                    break;
                }
            }
            for g in &mut groups {
                g.runners = self
                    .runners(
                        &format!("/orgs/{org}/actions/runner-groups/{}/runners", g.id),
                        "a runner group's runners",
                        ORG_NEEDS,
                    )
                    .await?;
            }
        }
        Ok(Facts {
            repo: repo.clone(),
            repository,
            approval_policy,
            private_forks,
            repo_runners,
            groups,
        })
    }
}

/// Reads the settings of `repo` and judges them.
pub fn doctor(
    api_url: &str,
    token: Option<Secret>,
    repo: &RepoName,
    workflow: &str,
) -> Result<(Facts, Verdict), DoctorError> {
    let client = Client::new(api_url, token)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| DoctorError::Status {
            url: api_url.to_owned(),
            status: 0,
            message: format!("cannot start the async runtime: {e}"),
        })?;
    let facts = rt.block_on(client.facts(repo))?;
    let verdict = assess(&facts, workflow);
    Ok((facts, verdict))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(public: bool, org: bool) -> Facts {
        Facts {
            repo: RepoName::parse("acme/app").expect("valid"),
            repository: Repository {
                full_name: "acme/app".into(),
                private: !public,
                visibility: None,
                owner: Owner {
                    login: "acme".into(),
                    kind: if org { "Organization" } else { "User" }.into(),
                },
            },
            approval_policy: public.then(|| "first_time_contributors".into()),
            private_forks: (!public).then_some(PrivateForkSettings {
                run_workflows_from_fork_pull_requests: false,
                require_approval_for_fork_pr_workflows: true,
            }),
            repo_runners: vec![],
            groups: vec![],
        }
    }

    fn group(restricted: bool, workflows: &[&str]) -> RunnerGroup {
        RunnerGroup {
            id: 7,
            name: "deploy".into(),
            allows_public_repositories: true,
            restricted_to_workflows: restricted,
            selected_workflows: workflows.iter().map(|s| (*s).to_owned()).collect(),
            runners: vec![Runner {
                id: 1,
                name: "app1".into(),
            }],
        }
    }

    const WF: &str = ".github/workflows/app-deploy.yml";

    #[test]
    fn repo_names() {
        assert!(RepoName::parse("acme/app").is_ok());
        for bad in ["acme", "acme/", "/app", "a/b/c", "acme/a p", "acme/.."] {
            assert!(RepoName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn fork_reaches_a_public_repository_runner_through_its_own_workflow_copy() {
        let mut f = facts(true, true);
        f.repo_runners.push(Runner {
            id: 1,
            name: "app1".into(),
        });
        let v = assess(&f, WF);
        assert!(!v.safe());
        assert!(v.findings[0].problem.contains("app1"), "{v:?}");
        assert!(
            v.findings[0]
                .fix
                .contains("acme/app/.github/workflows/app-deploy.yml@refs/heads/main"),
            "{v:?}"
        );
        assert!(
            v.findings
                .iter()
                .any(|x| x.fix.contains("all_external_contributors"))
        );
    }

    #[test]
    fn restricted_group_pinned_to_a_branch_is_safe_and_a_wildcard_is_not() {
        let mut f = facts(true, true);
        f.groups.push(group(
            true,
            &["acme/app/.github/workflows/app-deploy.yml@refs/heads/main"],
        ));
        assert!(assess(&f, WF).safe(), "{:?}", assess(&f, WF));
        f.groups[0].selected_workflows = vec!["acme/app/.github/workflows/app-deploy.yml@*".into()];
        assert!(!assess(&f, WF).safe());
        f.groups[0].restricted_to_workflows = false;
        let v = assess(&f, WF);
        assert!(
            v.findings[0].fix.contains("restricted_to_workflows=true"),
            "{v:?}"
        );
    }

    #[test]
    fn private_repository_without_fork_runs_is_safe_even_with_runners() {
        let mut f = facts(false, false);
        f.repo_runners.push(Runner {
            id: 1,
            name: "app1".into(),
        });
        assert!(assess(&f, WF).safe());
        f.private_forks = Some(PrivateForkSettings {
            run_workflows_from_fork_pull_requests: true,
            require_approval_for_fork_pr_workflows: true,
        });
        let v = assess(&f, WF);
        assert!(!v.safe());
        assert!(
            v.findings[0]
                .fix
                .contains("run_workflows_from_fork_pull_requests=false"),
            "{v:?}"
        );
    }
}
