//! Serde types for the few webhook payload fields codeb reads. Unknown fields are skipped
//! (GitHub adds fields all the time); a missing required field or a wrong type is an error
//! naming the field. Shapes follow GitHub's payload schemas (octokit/webhooks).

use serde::Deserialize;

/// Fields every event may carry; used for events codeb does not act on, and for `ping`.
#[derive(Debug, Deserialize)]
pub struct Envelope {
    #[serde(default)]
    pub action: Option<String>,
    #[serde(default)]
    pub repository: Option<Repository>,
}

#[derive(Debug, Deserialize)]
pub struct Repository {
    /// `owner/name`.
    pub full_name: String,
}

#[derive(Debug, Deserialize)]
pub struct Label {
    pub name: String,
}

/// `X-GitHub-Event: pull_request`.
#[derive(Debug, Deserialize)]
pub struct PullRequestEvent {
    pub action: String,
    /// The pull request number.
    pub number: u64,
    pub pull_request: PullRequest,
    pub repository: Repository,
    /// The label added or removed (`labeled`, `unlabeled`).
    #[serde(default)]
    pub label: Option<Label>,
}

#[derive(Debug, Deserialize)]
pub struct PullRequest {
    pub head: Head,
    #[serde(default)]
    pub labels: Vec<Label>,
    #[serde(default)]
    pub draft: bool,
}

#[derive(Debug, Deserialize)]
pub struct Head {
    pub sha: String,
    /// `null` when the fork was deleted.
    pub repo: Option<Repository>,
}

/// `X-GitHub-Event: package` (the `package` key) or `registry_package` (the
/// `registry_package` key): the same shape under two names.
#[derive(Debug, Deserialize)]
pub struct PackageEvent {
    pub action: String,
    #[serde(alias = "registry_package")]
    pub package: Package,
    /// Absent for packages not linked to a repository.
    #[serde(default)]
    pub repository: Option<Repository>,
}

#[derive(Debug, Deserialize)]
pub struct Package {
    pub name: String,
    /// `CONTAINER` for ghcr.io images (`docker` for images migrated from
    /// docker.pkg.github.com), `npm`, `maven`, ...
    pub package_type: String,
    pub owner: Owner,
    #[serde(default)]
    pub package_version: Option<PackageVersion>,
}

#[derive(Debug, Deserialize)]
pub struct Owner {
    pub login: String,
}

#[derive(Debug, Deserialize)]
pub struct PackageVersion {
    #[serde(default)]
    pub container_metadata: Option<ContainerMetadata>,
}

#[derive(Debug, Deserialize)]
pub struct ContainerMetadata {
    #[serde(default)]
    pub tag: Option<Tag>,
    #[serde(default)]
    pub labels: Option<ImageLabels>,
}

#[derive(Debug, Deserialize)]
pub struct Tag {
    /// Empty for an untagged push.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub digest: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct ImageLabels {
    /// `org.opencontainers.image.revision` as docker/metadata-action sets it: the commit.
    #[serde(default)]
    pub revision: Option<String>,
}

/// `X-GitHub-Event: workflow_run`.
#[derive(Debug, Deserialize)]
pub struct WorkflowRunEvent {
    pub action: String,
    pub workflow_run: WorkflowRun,
    pub repository: Repository,
}

#[derive(Debug, Deserialize)]
pub struct WorkflowRun {
    /// The event that triggered the run (`pull_request`, `push`, ...).
    pub event: String,
    #[serde(default)]
    pub conclusion: Option<String>,
    pub head_sha: String,
    /// Empty when the head branch is in a fork (a GitHub limitation).
    #[serde(default)]
    pub pull_requests: Vec<RunPullRequest>,
    #[serde(default)]
    pub head_repository: Option<Repository>,
}

#[derive(Debug, Deserialize)]
pub struct RunPullRequest {
    pub number: u64,
}
