//! The contract of codeb's control plane (`codeb-daemon`'s `/api/v1`, used by `we`): the
//! serde types of every request and response, the error body, the token format
//! ([`token`]) and the permission table ([`perm`]). No I/O, no HTTP client or server.
//!
//! # Conventions
//! - Every request carries `Authorization: Bearer codeb_…`. Missing, malformed, wrong-checksum,
//!   unknown, expired or revoked tokens, and tokens of disabled users, get 401.
//! - Every error is `{"error": {"code": "...", "message": "..."}}` ([`ErrorBody`]); `code` is one
//!   of [`codes`]. 400 bad input (the message names the field and the rule), 401, 403 (the
//!   message names the action and the role), 404, 409 conflict, 413, 429/503 overloaded,
//!   504 lock wait timed out, 500.
//! - Times are Unix milliseconds (`*_ms`); durations in requests are humantime strings
//!   (`"90d"`, `"2h"`).
//! - Project names are DNS labels (`[a-z0-9-]`, 1-63, no leading/trailing `-`); user names are
//!   `[a-z0-9._-]`, 1-64, starting with a letter or digit. Anything else is a 400 `invalid_name`.
//! - Streams (`/jobs/{id}/events`, `/logs`) are `application/x-ndjson`: one JSON object per line,
//!   sent as it happens, the last line says why the stream ended.
//! - Reads are open to every role unless the table says otherwise; a developer's `owner`
//!   cells apply to projects whose `owners` list their name.
//!
//! # Endpoints
//!
//! | method | path | action ([`perm::Action`]) | admin / developer / viewer | request | response |
//! |---|---|---|---|---|---|
//! | GET | `/api/v1/whoami` | whoami | all | – | [`Whoami`] |
//! | POST | `/api/v1/logout` | whoami | all | – | [`Ok`] (revokes the calling token) |
//! | GET | `/api/v1/projects` | project_list | all | – | `Vec<`[`Project`]`>` |
//! | POST | `/api/v1/projects` | project_create | admin | [`ProjectSpec`] | 201 [`Project`] |
//! | GET | `/api/v1/projects/{name}` | project_get | all | – | [`Project`] |
//! | PUT | `/api/v1/projects/{name}` | project_update | admin | [`ProjectSpec`] (name must match) | [`Project`] |
//! | DELETE | `/api/v1/projects/{name}` | project_delete | admin | – | [`Ok`] |
//! | GET | `/api/v1/projects/{name}/scan` | scan | all | – | [`ScanData`] |
//! | POST | `/api/v1/projects/{name}/deploy` | deploy | admin / owner / – | [`DeployRequest`] | 202 [`Job`], or 200 [`DeployPlan`] when `dry_run` |
//! | POST | `/api/v1/projects/{name}/rollback` | rollback | admin / owner / – | [`RollbackRequest`] | 202 [`Job`], or 200 [`DeployPlan`] when `dry_run` |
//! | GET | `/api/v1/projects/{name}/logs?environment=E&tail=N&follow=true` | logs | admin / owner / – | [`LogsQuery`] | NDJSON [`LogEvent`] |
//! | GET | `/api/v1/projects/{name}/env?environment=E` | env_read | admin / owner / – | [`EnvQuery`] | [`EnvValues`] (the env file's values, for `we scale k8s`'s Secret; audited by key) |
//! | GET | `/api/v1/jobs?project=P&limit=N` | job_list | all | [`JobsQuery`] | `Vec<`[`Job`]`>` |
//! | GET | `/api/v1/jobs/{id}` | job_get | all | – | [`Job`] |
//! | GET | `/api/v1/jobs/{id}/events` | job_get | all | – | NDJSON [`JobEvent`] (from the first event; ends after the terminal one) |
//! | GET | `/api/v1/health?project=P` | health | all | [`HealthQuery`] | [`HealthReport`] |
//! | GET | `/api/v1/up` | up | all | – | [`UpReport`] |
//! | GET | `/api/v1/ports` | up | all | – | [`PortsReport`] |
//! | GET | `/api/v1/ssot/status` | ssot_status | all | – | [`SsotStatus`] |
//! | GET | `/api/v1/ssot/projects` | ssot_status | all | – | `Vec<`[`SsotProject`]`>` |
//! | POST | `/api/v1/ssot/sync` | ssot_sync | admin | [`SyncRequest`] | [`SyncPlan`] |
//! | POST | `/api/v1/ssot/validate` | ssot_validate (ssot_fix with `fix`) | all (admin with `fix`) | [`ValidateRequest`] | [`ValidateReport`] |
//! | GET | `/api/v1/team` | team_list | all | – | `Vec<`[`User`]`>` |
//! | POST | `/api/v1/team` | team_add | admin | [`NewUser`] | 201 [`UserCreated`] (the token, shown once) |
//! | GET | `/api/v1/team/status` | team_status | all | – | [`TeamStatus`] |
//! | POST | `/api/v1/team/{id}/role` | team_role | admin | [`RoleChange`] | [`User`] |
//! | POST | `/api/v1/team/{id}/toggle` | team_toggle | admin | – | [`User`] (enabled flipped) |
//! | PUT | `/api/v1/team/{id}/projects` | team_projects | admin | [`ProjectAssignment`] | [`User`] |
//! | GET | `/api/v1/tokens` | token_list | admin | – | `Vec<`[`TokenInfo`]`>` |
//! | POST | `/api/v1/tokens` | token_create | admin | [`NewToken`] | 201 [`TokenCreated`] (shown once) |
//! | DELETE | `/api/v1/tokens/{id}` | token_revoke | admin | – | [`TokenInfo`] |
//! | GET | `/api/v1/scale/status?window=5s` | scale_status | all | [`ScaleQuery`] | [`ScaleStatus`] (the manual's phase-2 thresholds, measured) |
//! | GET | `/api/v1/scale/hosts` | scale_host_list | all | – | [`scale::HostsReport`] (app hosts, their releases and health, the balancers) |
//! | POST | `/api/v1/scale/hosts` | scale_host_add | admin | [`scale::HostAdd`] | [`scale::HostChange`] (502 `upstream` when the agent fails; nothing is left half-added) |
//! | DELETE | `/api/v1/scale/hosts/{host}` | scale_host_remove | admin | – | [`scale::HostChange`] |
//! | GET | `/api/v1/audit?project=P&since=1d&limit=N` | audit_list | admin | [`AuditQuery`] | `Vec<`[`AuditEntry`]`>` |
//! | GET | `/api/v1/backups?project=P&limit=N` | backup_list | all | [`BackupsQuery`] | [`BackupsReport`] |
//! | POST | `/api/v1/projects/{name}/restore` | restore | admin | [`RestoreRequest`] | NDJSON [`RestoreEvent`] |
//! | POST | `/api/v1/projects/{name}/init` | project_init | admin | [`InitRequest`] | [`InitReport`] (the env values, secrets included, only here) |
//! | POST | `/api/v1/projects/{name}/remove` | project_remove | admin | [`RemoveRequest`] (`yes` required) | [`RemoveReport`] |
//! | POST | `/api/v1/domains` | domain_setup | admin | [`domain::DomainSetup`] | [`domain::DomainSetupResult`] (502 `upstream` when PowerDNS or Caddy fail) |
//! | GET | `/api/v1/domains` | domain_list | all | – | `Vec<`[`domain::DomainStatus`]`>` |
//! | DELETE | `/api/v1/domains/{domain}?project=P` | domain_remove | admin | [`domain::DomainRemoveQuery`] | [`domain::DomainRemoved`] |
//! | GET | `/api/v1/domains/zones` | domain_zones | all | – | `Vec<`[`domain::Zone`]`>` |
//! | GET | `/api/v1/tls/ask?domain=D` | – (no token: Caddy's on-demand TLS `ask`) | – | – | 200 when D is in the domain registry, else 404 |
//!
//! `GET /healthz` and `POST /webhook/github` stay outside `/api/v1` and take no token.
//!
//! An admin, disabling or demoting themselves as the last enabled admin, gets 409: the team
//! always keeps one admin. The first admin's token comes from `codeb-daemon bootstrap-admin`.

pub mod backup;
pub mod domain;
pub mod k8s;
pub mod perm;
pub mod scale;
pub mod token;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use backup::{
    BackupKindHealth, BackupRun, BackupsQuery, BackupsReport, RestoreEvent, RestoreRequest,
};
pub use k8s::{EnvQuery, EnvValues, KubernetesSpec};
pub use perm::{Access, Action, Role};
pub use scale::{ScaleQuery, ScaleStatus};
pub use token::{Token, TokenError, TokenHash};

/// The path prefix of every endpoint.
pub const PREFIX: &str = "/api/v1";
/// The content type of streamed responses.
pub const NDJSON: &str = "application/x-ndjson";

/// Paths, for clients (the server's router spells the same strings).
pub mod paths {
    pub const WHOAMI: &str = "/api/v1/whoami";
    pub const LOGOUT: &str = "/api/v1/logout";
    pub const PROJECTS: &str = "/api/v1/projects";
    pub const JOBS: &str = "/api/v1/jobs";
    pub const HEALTH: &str = "/api/v1/health";
    pub const UP: &str = "/api/v1/up";
    pub const PORTS: &str = "/api/v1/ports";
    pub const SSOT_STATUS: &str = "/api/v1/ssot/status";
    pub const SSOT_PROJECTS: &str = "/api/v1/ssot/projects";
    pub const SSOT_SYNC: &str = "/api/v1/ssot/sync";
    pub const SSOT_VALIDATE: &str = "/api/v1/ssot/validate";
    pub const TEAM: &str = "/api/v1/team";
    pub const TEAM_STATUS: &str = "/api/v1/team/status";
    pub const TOKENS: &str = "/api/v1/tokens";
    pub const AUDIT: &str = "/api/v1/audit";
    pub const BACKUPS: &str = "/api/v1/backups";
    pub const SCALE_STATUS: &str = "/api/v1/scale/status";
    pub const SCALE_HOSTS: &str = "/api/v1/scale/hosts";
    pub fn scale_host(host: &str) -> String {
        format!("/api/v1/scale/hosts/{host}")
    }
    pub const DOMAINS: &str = "/api/v1/domains";
    pub const DOMAIN_ZONES: &str = "/api/v1/domains/zones";
    pub const TLS_ASK: &str = "/api/v1/tls/ask";

    pub fn project(name: &str) -> String {
        format!("{PROJECTS}/{name}")
    }
    pub fn scan(name: &str) -> String {
        format!("{PROJECTS}/{name}/scan")
    }
    pub fn deploy(name: &str) -> String {
        format!("{PROJECTS}/{name}/deploy")
    }
    pub fn rollback(name: &str) -> String {
        format!("{PROJECTS}/{name}/rollback")
    }
    pub fn restore(name: &str) -> String {
        format!("{PROJECTS}/{name}/restore")
    }
    pub fn logs(name: &str) -> String {
        format!("{PROJECTS}/{name}/logs")
    }
    pub fn env(name: &str) -> String {
        format!("{PROJECTS}/{name}/env")
    }
    pub fn job(id: i64) -> String {
        format!("{JOBS}/{id}")
    }
    pub fn job_events(id: i64) -> String {
        format!("{JOBS}/{id}/events")
    }
    pub fn user_role(id: i64) -> String {
        format!("{TEAM}/{id}/role")
    }
    pub fn user_toggle(id: i64) -> String {
        format!("{TEAM}/{id}/toggle")
    }
    pub fn user_projects(id: i64) -> String {
        format!("{TEAM}/{id}/projects")
    }
    pub fn token(id: i64) -> String {
        format!("{TOKENS}/{id}")
    }
    pub fn init(name: &str) -> String {
        format!("{PROJECTS}/{name}/init")
    }
    pub fn remove(name: &str) -> String {
        format!("{PROJECTS}/{name}/remove")
    }
}

// ---------------------------------------------------------------------------------------
// Errors

/// Every error response: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// One of [`codes`].
    pub code: String,
    /// For people: what was wrong, with which input, and what to do.
    pub message: String,
}

impl ErrorBody {
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            error: ErrorDetail {
                code: code.to_owned(),
                message: message.into(),
            },
        }
    }
}

/// The values of [`ErrorDetail::code`].
pub mod codes {
    /// 400: a field is missing, malformed or out of range.
    pub const BAD_REQUEST: &str = "bad_request";
    /// 400: a project, user or environment name breaks the naming rule.
    pub const INVALID_NAME: &str = "invalid_name";
    /// 401: no token, or one that is malformed, wrong-checksum, unknown, revoked or of a
    /// disabled user.
    pub const UNAUTHORIZED: &str = "unauthorized";
    /// 401: the token is past its expiry.
    pub const TOKEN_EXPIRED: &str = "token_expired";
    /// 403: the role (or project ownership) does not allow the action.
    pub const FORBIDDEN: &str = "forbidden";
    /// 404.
    pub const NOT_FOUND: &str = "not_found";
    /// 409: exists already, or would leave the team without an admin.
    pub const CONFLICT: &str = "conflict";
    /// 413.
    pub const TOO_LARGE: &str = "too_large";
    /// 429/503: the API's concurrency limit is reached; retry later.
    pub const OVERLOADED: &str = "overloaded";
    /// 504: another deploy held the target's lock past the wait limit (the message names it).
    pub const LOCK_TIMEOUT: &str = "lock_timeout";
    /// 422: the deploy would not work (no image for the branch, no manifest port, ...).
    pub const UNPROCESSABLE: &str = "unprocessable";
    /// 502: a service the request needs (PowerDNS, Caddy) failed or is unreachable; the
    /// message names it, what was left behind and the fix.
    pub const UPSTREAM: &str = "upstream";
    /// 500.
    pub const INTERNAL: &str = "internal";
}

/// A plain success (`{"ok": true}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ok {
    pub ok: bool,
}

// ---------------------------------------------------------------------------------------
// Identity, team, tokens

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Whoami {
    pub user: User,
    pub token: TokenInfo,
}

/// A team member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: i64,
    pub name: String,
    pub role: Role,
    pub enabled: bool,
    pub created_ms: i64,
    /// The projects this user owns (where a developer may deploy, roll back, read logs).
    pub projects: Vec<String>,
    /// The last authenticated request of any of the user's tokens.
    pub last_seen_ms: Option<i64>,
}

/// `POST /api/v1/team`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewUser {
    pub name: String,
    pub role: Role,
    /// Projects to own (must exist).
    #[serde(default)]
    pub projects: Vec<String>,
    /// Lifetime of the user's first token, humantime (`"90d"` when absent).
    #[serde(default)]
    pub token_expires_in: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserCreated {
    pub user: User,
    pub token: TokenCreated,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleChange {
    pub role: Role,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectAssignment {
    pub projects: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TeamStatus {
    /// The caller.
    pub me: User,
    pub users: usize,
    pub enabled: usize,
    /// Enabled users per role.
    pub by_role: BTreeMap<Role, usize>,
    /// Tokens neither revoked nor expired.
    pub active_tokens: usize,
    /// Active tokens that expire within 7 days.
    pub expiring_soon: usize,
}

/// A token as listed: never the token itself, never its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    pub id: i64,
    pub user_id: i64,
    pub user: String,
    /// A label given at creation (`"laptop"`, `"ci"`).
    pub name: String,
    /// `codeb_` and four characters: enough to recognize it.
    pub hint: String,
    pub created_ms: i64,
    pub expires_ms: i64,
    pub revoked_ms: Option<i64>,
    pub last_used_ms: Option<i64>,
}

/// `POST /api/v1/tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewToken {
    /// The user the token authenticates.
    pub user_id: i64,
    pub name: String,
    /// humantime; `"90d"` when absent; at most 366 days.
    #[serde(default)]
    pub expires_in: Option<String>,
}

/// The one response that carries a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenCreated {
    /// The token (`codeb_…`): shown once, stored nowhere but its SHA-256.
    pub token: String,
    pub info: TokenInfo,
}

// ---------------------------------------------------------------------------------------
// Registry

/// `POST`/`PUT /api/v1/projects`: what the registry stores about a project. Ports are not
/// here: the port manifest is their one source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectSpec {
    pub name: String,
    /// The workflow-gen project type (`node`, `static`, ...).
    #[serde(rename = "type")]
    pub kind: String,
    /// GitHub `owner/name`.
    pub repository: String,
    /// The image repository without tag (`ghcr.io/org/app`).
    pub image: String,
    pub container_port: u16,
    /// Path the health checker probes (`/health`).
    #[serde(default = "default_health_path")]
    pub health_path: String,
    pub environments: Vec<ProjectEnvironment>,
    /// User names that own the project.
    #[serde(default)]
    pub owners: Vec<String>,
    /// How the project runs on Kubernetes (`we scale k8s`); defaults when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<KubernetesSpec>,
}

fn default_health_path() -> String {
    "/health".to_owned()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectEnvironment {
    /// `production` or `staging`.
    pub name: String,
    /// Absolute path of the env file on the host (mode 0600), if any.
    #[serde(default)]
    pub env_file: Option<String>,
    /// The branch whose image is deployed when no image is given; `main` for production
    /// and `develop` for staging when absent.
    #[serde(default)]
    pub branch: Option<String>,
}

impl ProjectEnvironment {
    /// The branch the workflow builds this environment's image from.
    pub fn effective_branch(&self) -> &str {
        match (&self.branch, self.name.as_str()) {
            (Some(b), _) => b,
            (None, "production") => "main",
            (None, _) => "develop",
        }
    }
}

/// A registry entry as served: the spec plus facts read from elsewhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Project {
    #[serde(flatten)]
    pub spec: ProjectSpec,
    /// Public port per environment, read from the port manifest at request time (absent:
    /// no manifest entry).
    pub ports: BTreeMap<String, u16>,
    pub created_ms: i64,
    pub updated_ms: i64,
}

// ---------------------------------------------------------------------------------------
// Scan, up, ports

/// `GET /api/v1/projects/{name}/scan`: the server side of `we scan --diff`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanData {
    pub project: Project,
    pub environments: Vec<EnvironmentScan>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvironmentScan {
    pub environment: String,
    /// The manifest's port for this environment.
    pub manifest_port: Option<u16>,
    /// The release serving now (from the deploy state), if any.
    pub deployed: Option<Release>,
    /// The keys (never the values) of the environment's env file; `None` when there is no
    /// env file or it cannot be read (see `env_file_error`).
    pub env_keys: Option<Vec<String>>,
    pub env_file_error: Option<String>,
}

/// A release as the deploy engine records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    /// `repo@sha256:…`.
    pub image: String,
    pub digest: Option<String>,
    /// The commit (the `version` the health check expected), if known.
    pub sha: Option<String>,
    pub slot: Option<String>,
    /// `active`, `previous`, `rolled-back`, `interrupted`, ...
    pub status: String,
    pub deployed_ms: Option<i64>,
}

/// `GET /api/v1/up`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpReport {
    pub containers: Vec<ContainerInfo>,
    pub ports: PortsReport,
}

/// A container carrying codeb's labels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerInfo {
    pub name: String,
    pub project: Option<String>,
    pub environment: Option<String>,
    pub slot: Option<String>,
    pub image: String,
    /// podman's state (`running`, `exited`, ...).
    pub state: String,
    /// Whether a registry project claims it.
    pub known: bool,
}

/// `GET /api/v1/ports`: manifest against listening sockets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortsReport {
    pub entries: Vec<PortEntry>,
    pub listening: Vec<Listener>,
    pub conflicts: Vec<PortConflict>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortEntry {
    pub project: String,
    pub environment: String,
    pub port: u16,
    /// Whether something listens on it.
    pub listening: bool,
    /// Who listens (process or container name), if known.
    pub holder: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listener {
    pub port: u16,
    pub address: String,
    pub holder: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortConflict {
    pub port: u16,
    pub message: String,
}

// ---------------------------------------------------------------------------------------
// Deploys, rollbacks, jobs

/// `POST /api/v1/projects/{name}/deploy`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployRequest {
    pub environment: String,
    /// `repo:tag` or `repo@sha256:…`; absent: the image the workflow built for the
    /// environment's branch (`<image>:<branch>`), resolved to a digest.
    #[serde(default)]
    pub image: Option<String>,
    /// The commit the release must report (`version=` in the health body), if any.
    #[serde(default)]
    pub sha: Option<String>,
    /// Return the plan, change nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// How long to wait for another deploy's lock, humantime (`"10m"` when absent).
    #[serde(default)]
    pub lock_timeout: Option<String>,
}

/// `POST /api/v1/projects/{name}/rollback`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollbackRequest {
    pub environment: String,
    #[serde(default)]
    pub dry_run: bool,
    #[serde(default)]
    pub lock_timeout: Option<String>,
}

/// What a deploy or rollback would do (a dry run changes nothing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployPlan {
    pub project: String,
    pub environment: String,
    pub kind: JobKind,
    /// The reference asked for (or derived from the branch).
    pub image: String,
    /// The digest it resolves to now.
    pub digest: String,
    /// The slot the release would start in (`blue`/`green`).
    pub slot: String,
    /// The public port (manifest).
    pub port: u16,
    /// The slot's internal port.
    pub slot_port: u16,
    /// Where the health checker would probe.
    pub health_url: String,
    /// The release serving now.
    pub current: Option<Release>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    Deploy,
    Rollback,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Running,
    Done,
    Failed,
    /// The daemon stopped while the job ran; nothing is retried by itself (the deploy
    /// engine closes the half-made release and releases the lock).
    Interrupted,
}

impl JobState {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Done | JobState::Failed | JobState::Interrupted
        )
    }
}

/// A deploy or rollback requested through the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub id: i64,
    pub kind: JobKind,
    pub project: String,
    pub environment: String,
    pub state: JobState,
    /// The user who asked.
    pub requested_by: String,
    /// The image asked for or derived (`repo:tag`).
    pub image: Option<String>,
    /// The digest deployed (or rolled back to), once known.
    pub digest: Option<String>,
    pub created_ms: i64,
    pub started_ms: Option<i64>,
    pub finished_ms: Option<i64>,
    /// The outcome in one sentence (the error when failed).
    pub message: Option<String>,
}

/// `GET /api/v1/jobs`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobsQuery {
    #[serde(default)]
    pub project: Option<String>,
    #[serde(default)]
    pub limit: Option<usize>,
}

/// One line of `GET /api/v1/jobs/{id}/events`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobEvent {
    pub job: i64,
    /// 1, 2, ... per job.
    pub seq: i64,
    pub time_ms: i64,
    #[serde(flatten)]
    pub kind: JobEventKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum JobEventKind {
    Queued,
    /// Another deploy holds the target's lock.
    Waiting {
        holder: String,
    },
    Started,
    /// A step of the deploy engine (`pulling`, `starting blue`, `healthy`, `switched`, ...).
    Progress {
        message: String,
    },
    /// Terminal.
    Done {
        message: String,
        digest: Option<String>,
    },
    /// Terminal. `code` is one of [`codes`] (`lock_timeout` when the lock wait ran out).
    Failed {
        code: String,
        message: String,
    },
    /// Terminal: the daemon stopped during the job.
    Interrupted {
        message: String,
    },
}

impl JobEventKind {
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            JobEventKind::Done { .. }
                | JobEventKind::Failed { .. }
                | JobEventKind::Interrupted { .. }
        )
    }
}

// ---------------------------------------------------------------------------------------
// Logs, health

/// `GET /api/v1/projects/{name}/logs`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogsQuery {
    /// `production` when absent.
    #[serde(default)]
    pub environment: Option<String>,
    /// Lines from the end (100 when absent, at most 10000).
    #[serde(default)]
    pub tail: Option<usize>,
    #[serde(default)]
    pub follow: bool,
}

/// One line of a log stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LogEvent {
    /// First: which container the lines come from.
    Source {
        container: String,
        slot: Option<String>,
    },
    Line {
        stream: LogStream,
        line: String,
    },
    /// Last: why the stream ended (`container stopped`, `tail complete`, an error).
    End {
        reason: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    Stdout,
    Stderr,
}

/// `GET /api/v1/health`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthQuery {
    #[serde(default)]
    pub project: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthReport {
    pub checked_ms: i64,
    pub targets: Vec<TargetHealth>,
    /// The age of the last good backup per kind (empty when backups are not configured).
    #[serde(default)]
    pub backups: Vec<BackupKindHealth>,
}

impl HealthReport {
    pub fn all_healthy(&self) -> bool {
        self.targets.iter().all(|t| t.healthy) && self.backups.iter().all(|b| b.ok)
    }
}

/// One project environment's probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetHealth {
    pub project: String,
    pub environment: String,
    /// The URL probed (`http://127.0.0.1:<port><health_path>`), if the manifest has a port.
    pub url: Option<String>,
    pub healthy: bool,
    pub status: Option<u16>,
    /// Why it is unhealthy (the health checker's failure).
    pub failure: Option<String>,
    pub latency_ms: Option<u64>,
    /// The last successful deploy (deploy state), and its age at `checked_ms`.
    pub last_deploy_ms: Option<i64>,
    pub last_deploy_age_s: Option<u64>,
    pub image: Option<String>,
}

// ---------------------------------------------------------------------------------------
// SSOT

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SsotStatus {
    pub projects: usize,
    pub manifest_entries: usize,
    /// Findings a sync would report (dry run computed now).
    pub findings: usize,
    pub in_sync: bool,
    pub last_sync_ms: Option<i64>,
}

/// A registry project with what the host says about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SsotProject {
    pub name: String,
    pub environments: Vec<SsotTarget>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SsotTarget {
    pub environment: String,
    pub manifest_port: Option<u16>,
    /// Quadlet units of the target present in the Quadlet directory.
    pub units: Vec<String>,
    /// codeb containers of the target.
    pub containers: Vec<String>,
    /// Whether Caddy has the target's front route.
    pub route: bool,
}

/// `POST /api/v1/ssot/sync`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncRequest {
    /// Return the plan, change nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Also remove orphan containers that are running (without it only stopped orphans
    /// are removed and running ones are reported).
    #[serde(default)]
    pub force: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncPlan {
    pub dry_run: bool,
    pub findings: Vec<SyncFinding>,
}

impl SyncPlan {
    pub fn in_sync(&self) -> bool {
        self.findings.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncFinding {
    pub kind: SyncKind,
    /// What it is about (`myapp/production`, a container name, a port).
    pub target: String,
    pub detail: String,
    /// What sync does about it (`None`: only reported).
    pub repair: Option<String>,
    /// After a real sync: whether the repair was made; `None` in a dry run or when only
    /// reported.
    pub repaired: Option<bool>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncKind {
    /// A deployed target has no Caddy front route: recreated from the deploy state.
    MissingRoute,
    /// A container with codeb's labels that no registry project claims: removed.
    OrphanContainer,
    /// A manifest entry whose project is not in the registry: reported.
    ManifestWithoutProject,
    /// A registry environment with no manifest entry: reported.
    ProjectWithoutPort,
    /// A Quadlet unit for no registry project: reported.
    OrphanUnit,
}

/// `POST /api/v1/ssot/validate`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidateRequest {
    /// Fix what can be fixed in the registry (admin only).
    #[serde(default)]
    pub fix: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidateReport {
    pub problems: Vec<ValidateProblem>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidateProblem {
    pub project: String,
    pub field: String,
    pub message: String,
    /// What `fix` does about it, if anything.
    pub fix: Option<String>,
    pub fixed: bool,
}

// ---------------------------------------------------------------------------------------
// Audit

/// `GET /api/v1/audit`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditQuery {
    #[serde(default)]
    pub project: Option<String>,
    /// humantime (`1d`, `2h`): only entries newer than that.
    #[serde(default)]
    pub since: Option<String>,
    /// 1000 when absent.
    #[serde(default)]
    pub limit: Option<usize>,
}

/// One row of the append-only audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub id: i64,
    pub time_ms: i64,
    /// The user name, or `bootstrap` / `anonymous`.
    pub actor: String,
    pub token_id: Option<i64>,
    /// A [`perm::Action`] name.
    pub action: String,
    /// What was acted on (`project:myapp`, `user:3`, `token:7`, `myapp/production`).
    pub target: String,
    /// The request's parameters with every secret removed.
    pub params: serde_json::Value,
    /// `ok`, `denied`, `failed: …`, `queued job N`.
    pub result: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_body_has_the_documented_shape() {
        let j = serde_json::to_value(ErrorBody::new(codes::FORBIDDEN, "no")).expect("json");
        assert_eq!(
            j,
            serde_json::json!({"error": {"code": "forbidden", "message": "no"}})
        );
    }

    #[test]
    fn job_events_are_flat_tagged_objects() {
        let e = JobEvent {
            job: 3,
            seq: 2,
            time_ms: 10,
            kind: JobEventKind::Waiting {
                holder: "pid 12 (runner deploy of x@sha256:1)".into(),
            },
        };
        let j = serde_json::to_value(&e).expect("json");
        assert_eq!(j["type"], "waiting");
        assert_eq!(j["job"], 3);
        let back: JobEvent = serde_json::from_value(j).expect("parse");
        assert_eq!(back, e);
        assert!(!e.kind.is_terminal());
    }

    #[test]
    fn a_project_spec_uses_type_on_the_wire_and_defaults_the_health_path() {
        let p: ProjectSpec = serde_json::from_value(serde_json::json!({
            "name": "myapp", "type": "node", "repository": "org/myapp",
            "image": "ghcr.io/org/myapp", "container_port": 3000,
            "environments": [{"name": "production"}, {"name": "staging"}]
        }))
        .expect("parse");
        assert_eq!(p.health_path, "/health");
        assert_eq!(p.environments[0].effective_branch(), "main");
        assert_eq!(p.environments[1].effective_branch(), "develop");
        let project = Project {
            spec: p,
            ports: BTreeMap::from([("production".to_owned(), 4001)]),
            created_ms: 1,
            updated_ms: 2,
        };
        let j = serde_json::to_value(&project).expect("json");
        assert_eq!(j["type"], "node");
        assert_eq!(j["ports"]["production"], 4001);
    }
}

// ---------------------------------------------------------------------------------------
// Provisioning (`we workflow init`, `we project remove`)

/// `POST /api/v1/projects/{name}/init`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitRequest {
    /// The workflow-gen project type (`nextjs`, `node`, `rust`, `static`, `dockerfile`).
    #[serde(rename = "type")]
    pub kind: String,
    /// GitHub `owner/name` from `git remote`; `None` when the directory is not a repository.
    #[serde(default)]
    pub repository: Option<String>,
    /// A PostgreSQL role and databases.
    #[serde(default)]
    pub database: bool,
    /// A Redis ACL user (and a DB index unless `redis_prefix`).
    #[serde(default)]
    pub redis: bool,
    /// Share DB 0 under the key prefix instead of holding a DB index of its own.
    #[serde(default)]
    pub redis_prefix: bool,
    /// The port the app listens on in its container [default: by type].
    #[serde(default)]
    pub container_port: Option<u16>,
    #[serde(default)]
    pub health_path: Option<String>,
    /// Print the plan; change nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Generate new passwords and keys, set them on the role and ACL user and in the env files.
    #[serde(default)]
    pub rotate_secrets: bool,
}

/// One step of provisioning and what happened to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitStep {
    /// `registry`, `port:production`, `postgres:role`, `postgres:database <name>`,
    /// `redis:user`, `redis:index`, `env-file:production`, ...
    pub step: String,
    /// The object (a name, a path, a port).
    pub target: String,
    /// `exists` (nothing to do), `create`/`update` (dry run), `created`, `updated`.
    pub state: String,
}

/// What init did (or, with `dry_run`, would do).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitReport {
    pub project: String,
    pub dry_run: bool,
    pub steps: Vec<InitStep>,
    /// Manifest ports by environment.
    pub ports: BTreeMap<String, u16>,
    pub redis_db: Option<u8>,
    pub redis_prefix: Option<String>,
    /// The `.env` keys codeb manages, with their values (secrets included): the one answer
    /// that carries them, for `we` to write into the project's `.env`. Empty on a dry run.
    pub env: BTreeMap<String, String>,
    pub warnings: Vec<String>,
}

impl InitReport {
    /// Whether this run changed anything.
    pub fn changed(&self) -> bool {
        self.steps.iter().any(|s| s.state != "exists")
    }
}

/// `POST /api/v1/projects/{name}/remove`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoveRequest {
    /// Required: removal drops the databases (after the final dump).
    #[serde(default)]
    pub yes: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoveReport {
    pub project: String,
    pub steps: Vec<InitStep>,
    /// The final dumps written before anything was dropped.
    pub dumps: Vec<String>,
}
