//! The command line of `we`, with the command names of the operations manual.

use clap::{Args, Parser, Subcommand, ValueEnum};

pub const AFTER_HELP: &str = "\
Log in once per machine (the token is shown once by `codeb-daemon bootstrap-admin` or
`we team add`); CI sets CODEB_SERVER and CODEB_TOKEN instead:
  we login --server https://n1.example.com
  echo \"$TOKEN\" | we login --server https://n1.example.com

Examples:
  we up                                      # containers and ports on the server
  we scan myapp --diff                       # in myapp's repository: local against server
  we deploy myapp --environment staging      # scan, then deploy develop's image
  we deploy myapp --environment production --image ghcr.io/acme/myapp:sha-1a2b3c --dry-run
  we rollback myapp --environment production
  we logs myapp -f                           # follow the container's output
  we health --verbose
  we audit --project myapp --since 1d --json
  we env backups myapp                       # dumps, backups, WAL checks and their ages
  we env restore myapp --date 2024-12-20 --time 14:30
  we scale status                            # is phase 2 (Kubernetes) due?
  we scale k8s render myapp                  # Deployment, Service, HPA, PDB, Ingress as YAML
  we scale k8s apply myapp --context prod --dry-run=server
  we domain setup myapp --domain myapp.codeb.kr --ssl   # DNS + Caddy HTTPS

Every command takes --json (JSON lines when streaming). Data goes to stdout, messages to
stderr; NO_COLOR turns colour off. Credentials: $XDG_CONFIG_HOME/codeb/credentials.toml
(mode 0600).

Exit codes: 0 ok; 1 the thing checked is wrong (unhealthy, drift, a deploy that failed or
rolled back); 2 usage or bad input, or the server could not be reached; 3 forbidden (the
token's role may not do that); 4 not logged in, or the token is expired or revoked.";

#[derive(Debug, Parser)]
#[command(
    name = "we",
    version,
    about = "Operate your codeb projects through the control plane: deploy, roll back, logs, health",
    after_help = AFTER_HELP,
    args_override_self = true
)]
pub struct Cli {
    /// Machine-readable output: one JSON value, or JSON lines when streaming
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Store the server and a token (from a prompt, stdin or CODEB_TOKEN) after checking it
    Login(LoginArgs),
    /// Revoke the stored token on the server and remove it from this machine
    Logout,
    /// Who this token is
    Whoami,
    /// Team members, roles and tokens
    #[command(subcommand)]
    Team(TeamCommand),
    /// The registry (single source of truth) against the host
    #[command(subcommand)]
    Ssot(SsotCommand),
    /// Compare a project's repository with the server, or look at the server's side
    Scan(ScanArgs),
    /// Deploy a project environment (scans first; refuses on drift unless --force)
    Deploy(DeployArgs),
    /// Roll a project environment back to its previous release
    Rollback(RollbackArgs),
    /// What runs on the server: codeb's containers and the port manifest against listeners
    Up(UpArgs),
    /// Probe every project's health endpoint (or one project's)
    Health(HealthArgs),
    /// A project's container output (-f follows, reconnecting)
    Logs(LogsArgs),
    /// The audit log (admins)
    Audit(AuditArgs),
    /// A project's environment: backups and point-in-time restore
    #[command(subcommand)]
    Env(EnvCommand),
    /// A project's workflow and provisioning: `we workflow init` (admins)
    #[command(subcommand)]
    Workflow(WorkflowCommand),
    /// Projects as a whole: `we project remove` (admins)
    #[command(subcommand)]
    Project(ProjectCommand),
    /// Scale out: the phase-2 thresholds (`we scale status`), the Kubernetes target (`we scale k8s`)
    #[command(subcommand)]
    Scale(crate::scale::ScaleCommand),
    /// Domains: DNS in PowerDNS and HTTPS in Caddy for a project, by one command
    #[command(subcommand, after_help = crate::domain::AFTER_HELP)]
    Domain(crate::domain::DomainCommand),
    /// Shell completions: `we completions bash > /etc/bash_completion.d/we`
    Completions {
        #[arg(value_enum)]
        shell: Shell,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The control plane: https://host (http only to a loopback address)
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum TeamCommand {
    /// Every member with role, state and projects
    List,
    /// Add a member; prints their first token once
    Add {
        /// User name ([a-z0-9._-], starting with a letter or digit)
        name: String,
        #[arg(long, value_enum, default_value_t = RoleArg::Developer)]
        role: RoleArg,
        /// Projects the member owns (comma-separated)
        #[arg(long, value_name = "LIST", value_delimiter = ',')]
        projects: Vec<String>,
        /// Lifetime of the first token (humantime: 90d, 12h)
        #[arg(long, value_name = "DURATION")]
        expires_in: Option<String>,
    },
    /// Change a member's role
    Role {
        id: i64,
        #[arg(value_enum)]
        role: RoleArg,
    },
    /// Enable or disable a member (a disabled member's tokens stop working)
    Toggle { id: i64 },
    /// Counts by role, active and soon expiring tokens, and who you are
    Status,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    Admin,
    Developer,
    Viewer,
}

#[derive(Debug, Subcommand)]
pub enum SsotCommand {
    /// Registry against host in numbers
    Status,
    /// Every registry project with its manifest ports, units, containers and routes
    Projects,
    /// Repair what differs between registry and host (admins)
    Sync {
        /// Print the plan, change nothing
        #[arg(long)]
        dry_run: bool,
        /// Also remove orphan containers that are running
        #[arg(long)]
        force: bool,
    },
    /// Check the registry; --fix repairs the registry side (admins)
    Validate {
        #[arg(long)]
        fix: bool,
    },
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("mode").required(true).args(["diff", "server_only", "ports"]))]
pub struct ScanArgs {
    /// The project (required with --diff)
    pub project: Option<String>,
    /// Compare the repository in the current directory with the server
    #[arg(long)]
    pub diff: bool,
    /// Only the server's side (of one project, or of every project)
    #[arg(long)]
    pub server_only: bool,
    /// The port manifest against the sockets listening on the server, with conflicts
    #[arg(long)]
    pub ports: bool,
    /// Environment compared by --diff
    #[arg(long, short = 'e', value_enum, default_value_t = EnvArg::Production)]
    pub environment: EnvArg,
    /// The project's repository [default: the current directory]
    #[arg(long, value_name = "DIR")]
    pub dir: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EnvArg {
    Production,
    Staging,
}

impl EnvArg {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Production => "production",
            Self::Staging => "staging",
        }
    }
    pub fn environment(self) -> codeb_core::Environment {
        match self {
            Self::Production => codeb_core::Environment::Production,
            Self::Staging => codeb_core::Environment::Staging,
        }
    }
}

#[derive(Debug, Args)]
pub struct DeployArgs {
    pub project: String,
    #[arg(long, short = 'e', value_enum)]
    pub environment: EnvArg,
    /// Image to deploy (repo:tag or repo@sha256:…) [default: the image the workflow built
    /// for the environment's branch: main for production, develop for staging]
    #[arg(long, value_name = "REF")]
    pub image: Option<String>,
    /// Do not compare the repository with the server first
    #[arg(long)]
    pub skip_scan: bool,
    /// Deploy even when the scan finds drift
    #[arg(long)]
    pub force: bool,
    /// Print what the deploy would do (digest, slot, port, health URL); change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// How long to wait for another deploy of the same target (humantime)
    #[arg(long, value_name = "DURATION", default_value = "10m")]
    pub lock_timeout: String,
    /// The project's repository, for the scan [default: the current directory]
    #[arg(long, value_name = "DIR")]
    pub dir: Option<std::path::PathBuf>,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    pub project: String,
    #[arg(long, short = 'e', value_enum)]
    pub environment: EnvArg,
    /// Print what the rollback would do; change nothing
    #[arg(long)]
    pub dry_run: bool,
    #[arg(long, value_name = "DURATION", default_value = "10m")]
    pub lock_timeout: String,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Only the containers
    #[arg(long, conflicts_with = "ports")]
    pub containers: bool,
    /// Only the ports
    #[arg(long)]
    pub ports: bool,
}

#[derive(Debug, Args)]
pub struct HealthArgs {
    pub project: Option<String>,
    /// Also the URL, HTTP status, latency, image and the failure
    #[arg(long, short = 'v')]
    pub verbose: bool,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    pub project: String,
    #[arg(long, short = 'e', value_enum, default_value_t = EnvArg::Production)]
    pub environment: EnvArg,
    /// Lines from the end
    #[arg(long, short = 'n', value_name = "N", default_value_t = 100)]
    pub tail: usize,
    /// Keep following (reconnects when the connection drops)
    #[arg(long, short = 'f')]
    pub follow: bool,
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    #[arg(long, value_name = "P")]
    pub project: Option<String>,
    /// Only entries newer than this (humantime: 1d, 2h, 30m)
    #[arg(long, value_name = "DURATION")]
    pub since: Option<String>,
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
}

#[derive(Debug, Subcommand)]
pub enum EnvCommand {
    /// Every backup run: kind, time, size, checksum, result; and each kind's age
    Backups {
        /// Only this project's dumps and restores
        project: Option<String>,
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
    },
    /// Restore a project's database to a point in time (admins). Times are UTC.
    #[command(after_help = "\
Restores the cluster to a scratch instance at that time (pgBackRest), dumps the project's
database from it and restores it into a new database <project>_db_restored_<stamp>; with
--into <project>_db --yes it replaces the live one (its connections are closed first and
the old database is kept as <project>_db_old_<stamp>). Holds the project's deploy lock.

Examples:
  we env restore shop --date 2024-12-20                 # the latest point of that day
  we env restore shop --date 2024-12-20 --time 14:30 --dry-run
  we env restore shop --date 2024-12-20 --time 14:30 --into shop_db --yes")]
    Restore(RestoreArgs),
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    pub project: String,
    /// The day (YYYY-MM-DD, UTC); alone: the latest point of that day that exists
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub date: String,
    /// The time of day (HH:MM, UTC)
    #[arg(long, value_name = "HH:MM")]
    pub time: Option<String>,
    /// The database to restore into; the project's own (<project>_db) with --yes replaces it
    #[arg(long, value_name = "DB")]
    pub into: Option<String>,
    /// Print the plan (target, range, databases); change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Confirm replacing the live database
    #[arg(long)]
    pub yes: bool,
    /// Restore from the daily dump (checksum verified) instead of the WAL archive
    #[arg(long, value_enum, default_value_t = RestoreFrom::Pitr)]
    pub from: RestoreFrom,
    /// How long to wait for a running deploy of the project (humantime; default 30s)
    #[arg(long, value_name = "DURATION")]
    pub lock_timeout: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RestoreFrom {
    Pitr,
    Dump,
}

#[derive(Debug, Subcommand)]
pub enum WorkflowCommand {
    /// Set up a new project in one command: register it, create its PostgreSQL role and
    /// databases and its Redis ACL user, allocate its ports, write the server's env files, then
    /// here `.github/workflows/<project>-deploy.yml` and `.env` (0600). Running it again
    /// changes nothing; after an interruption it completes the project.
    #[command(after_help = INIT_HELP)]
    Init(InitArgs),
}

pub const INIT_HELP: &str = "\
Examples:
  we workflow init my-new-app --type nextjs --database --redis   # then: git push
  we workflow init my-new-app --type nextjs --database --redis --dry-run
  we workflow init my-new-app --type nextjs --database --redis --rotate-secrets

The database is my_new_app_db, owned by the role my_new_app_user; staging's is
my_new_app_staging_db, owned by its own role my_new_app_staging_user (both LOGIN only;
CONNECT revoked from PUBLIC). The Redis ACL user my-new-app may touch only keys under
`my-new-app:`, staging's my-new-app.staging only `my-new-app:staging:`; no admin or dangerous
command. `.env` gets NODE_ENV,
PORT, DATABASE_URL, REDIS_URL, REDIS_PREFIX and the CENTRIFUGO_* keys; keys of your own are
kept and the previous file is saved as .env.bak (0600).";

#[derive(Debug, Args)]
pub struct InitArgs {
    /// The project (a DNS label: a-z, 0-9, -)
    pub project: String,
    /// The project type, as codeb-workflow-gen knows it (nextjs, node, rust, static, dockerfile)
    #[arg(long = "type", value_name = "TYPE")]
    pub kind: String,
    /// A PostgreSQL role and databases (production and staging)
    #[arg(long)]
    pub database: bool,
    /// A Redis ACL user and a DB index of its own
    #[arg(long)]
    pub redis: bool,
    /// Share DB 0 under the key prefix `<project>:` instead of a DB index (implies --redis)
    #[arg(long)]
    pub redis_prefix: bool,
    /// The port the app listens on in its container [default: 3000 for nextjs/node, else 8080]
    #[arg(long, value_name = "PORT")]
    pub container_port: Option<u16>,
    /// The path the health check probes [default: /api/health for nextjs/node, else /health]
    #[arg(long, value_name = "PATH")]
    pub health_path: Option<String>,
    /// Print the plan; change nothing (neither on the server nor here)
    #[arg(long)]
    pub dry_run: bool,
    /// Generate new passwords and keys and put them on the role, the ACL user and the env files
    #[arg(long)]
    pub rotate_secrets: bool,
    /// The project's directory [default: the current directory]
    #[arg(long, value_name = "DIR")]
    pub dir: Option<std::path::PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum ProjectCommand {
    /// Undo `we workflow init`: a final dump of the databases to the backup directory, then
    /// drop them, the role and the Redis ACL user, free the ports and the Redis DB index
    Remove {
        project: String,
        /// Really remove (required)
        #[arg(long)]
        yes: bool,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("we").chain(args.iter().copied()))
    }

    #[test]
    fn the_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn manual_commands_parse() {
        for ok in [
            &["login", "--server", "https://n1.example.com"][..],
            &["team", "list"],
            &[
                "team",
                "add",
                "alice",
                "--role",
                "viewer",
                "--projects",
                "a,b",
            ],
            &["team", "role", "3", "admin"],
            &["team", "toggle", "3"],
            &["team", "status"],
            &["ssot", "status"],
            &["ssot", "projects"],
            &["ssot", "sync", "--dry-run", "--force"],
            &["ssot", "validate", "--fix"],
            &["scan", "myapp", "--diff"],
            &["scan", "--server-only"],
            &["scan", "--ports"],
            &[
                "deploy",
                "myapp",
                "--environment",
                "staging",
                "--image",
                "x:1",
                "--skip-scan",
                "--force",
                "--dry-run",
            ],
            &["rollback", "myapp", "--environment", "production"],
            &["up"],
            &["up", "--containers"],
            &["up", "--ports", "--json"],
            &["health"],
            &["health", "myapp", "--verbose"],
            &[
                "logs",
                "myapp",
                "--environment",
                "staging",
                "--tail",
                "100",
                "-f",
            ],
            &["audit", "--project", "p", "--since", "1d", "--json"],
            &["completions", "zsh"],
            &["env", "backups"],
            &["env", "backups", "myapp", "--json"],
            &["env", "restore", "myapp", "--date", "2024-12-20"],
            &[
                "env",
                "restore",
                "myapp",
                "--date",
                "2024-12-20",
                "--time",
                "14:30",
                "--into",
                "myapp_db",
                "--dry-run",
                "--yes",
            ],
            &[
                "workflow",
                "init",
                "my-new-app",
                "--type",
                "nextjs",
                "--database",
                "--redis",
                "--dry-run",
            ],
            &[
                "workflow",
                "init",
                "a",
                "--type",
                "static",
                "--redis-prefix",
            ],
            &["project", "remove", "a", "--yes"],
            &[
                "scale", "k8s", "render", "myapp", "-e", "staging", "-o", "json",
            ],
            &["scale", "k8s", "render", "myapp", "--include-secrets"],
            &["scale", "status", "--window", "2s", "--json"],
            &[
                "scale",
                "k8s",
                "apply",
                "myapp",
                "--context",
                "c",
                "--dry-run=server",
            ],
            &[
                "scale",
                "k8s",
                "apply",
                "myapp",
                "--context",
                "c",
                "--dry-run",
            ],
            &[
                "scale",
                "k8s",
                "apply",
                "myapp",
                "--context",
                "c",
                "--kubeconfig",
                "/k",
                "--timeout",
                "5m",
            ],
        ] {
            parse(ok).unwrap_or_else(|e| panic!("{ok:?}: {e}"));
        }
        let c = parse(&["--json", "up"]).expect("global json");
        assert!(c.json);
    }

    #[test]
    fn usage_errors_are_errors() {
        for bad in [
            &["deploy", "myapp"][..],
            &["deploy", "myapp", "--environment", "qa"],
            &["scan", "myapp"],
            &["scan", "myapp", "--diff", "--ports"],
            &["up", "--containers", "--ports"],
            &["team", "role", "x", "admin"],
            &["team", "role", "3", "root"],
            &["completions", "powershell"],
            &["env", "restore", "myapp"],
            &["frobnicate"],
            &["workflow", "init", "a"],
            &["workflow", "init", "--type", "node"],
            &["scale", "k8s", "apply", "myapp"],
            &[
                "scale",
                "k8s",
                "apply",
                "myapp",
                "--context",
                "c",
                "--dry-run=client",
            ],
            &["scale", "k8s", "render", "myapp", "-o", "toml"],
        ] {
            let e = parse(bad).expect_err(&format!("{bad:?}"));
            assert!(e.use_stderr(), "{bad:?}");
            assert_eq!(e.exit_code(), 2, "{bad:?}");
        }
    }
}
