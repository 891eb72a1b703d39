//! One function per command: check the input, call the API, render, and say which exit
//! status the answer means. The server authorizes every call; nothing here decides a
//! permission.

use std::collections::BTreeSet;
use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::CommandFactory;
use codeb_api::{
    DeployPlan, DeployRequest, HealthReport, Job, JobEvent, JobEventKind, LogEvent, NewUser,
    PortsReport, RoleChange, RollbackRequest, ScanData, SsotProject, SsotStatus, SyncPlan,
    SyncRequest, TeamStatus, Token, UpReport, User, UserCreated, ValidateReport, ValidateRequest,
    Whoami, paths,
};
use codeb_core::ProjectName;
use reqwest::{Method, StatusCode};
use serde::Serialize;

use crate::cli::{self, Command, EnvArg, RoleArg, Shell, SsotCommand, TeamCommand};
use crate::client::{Api, StreamEnd};
use crate::config::{self, Credentials, Env, ServerUrl};
use crate::exit::{Exit, WeError};
use crate::output::{Cell, Out, Style};
use crate::scan::{self, Check, ServerFacts, Verdict};

pub async fn dispatch(cmd: Command, env: &Env, out: &Out) -> Result<Exit, WeError> {
    match cmd {
        Command::Completions { shell } => completions(shell),
        Command::Login(a) => login(a, env, out).await,
        Command::Logout => logout(env, out).await,
        Command::Whoami => whoami(&connect(env)?, out).await,
        Command::Team(t) => team(t, &connect(env)?, out).await,
        Command::Ssot(s) => ssot(s, &connect(env)?, out).await,
        Command::Scan(a) => scan_cmd(a, &connect(env)?, out).await,
        Command::Deploy(a) => deploy(a, &connect(env)?, out).await,
        Command::Rollback(a) => rollback(a, &connect(env)?, out).await,
        Command::Up(a) => up(a, &connect(env)?, out).await,
        Command::Health(a) => health(a, &connect(env)?, out).await,
        Command::Logs(a) => logs(a, &connect(env)?, out).await,
        Command::Audit(a) => audit(a, &connect(env)?, out).await,
        Command::Env(c) => crate::backup::env(c, &connect(env)?, out).await,
        Command::Workflow(cli::WorkflowCommand::Init(a)) => {
            crate::init::init(a, connect(env), out).await
        }
        Command::Project(cli::ProjectCommand::Remove { project, yes }) => {
            crate::init::remove(&project, yes, connect(env), out).await
        }
        Command::Scale(s) => crate::scale::scale(s, &connect(env)?, out).await,
        Command::Domain(d) => crate::domain::run(d, &connect(env)?, out).await,
    }
}

fn connect(env: &Env) -> Result<Api, WeError> {
    let creds = config::resolve(env)?;
    Api::new(creds.server, creds.token)
}

fn project_name(s: &str) -> Result<ProjectName, WeError> {
    ProjectName::new(s).map_err(|e| WeError::Usage(format!("project `{s}`: {e}")))
}

fn duration_arg(flag: &str, s: &str) -> Result<String, WeError> {
    humantime::parse_duration(s.trim())
        .map(|_| s.trim().to_owned())
        .map_err(|e| {
            WeError::Usage(format!(
                "{flag} `{s}` is not a duration ({e}); write e.g. 30m, 2h or 1d"
            ))
        })
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// `2026-12-01T21:37:07Z`.
pub(crate) fn when(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_seconds(t).to_string()
}

/// `42s`, `5m`, `3h`, `2d`.
pub fn age(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

fn ago(ms: Option<i64>) -> String {
    ms.map_or_else(
        || "never".to_owned(),
        |m| {
            let secs = u64::try_from((now_ms() - m).max(0) / 1000).unwrap_or(0);
            format!("{} ago", age(secs))
        },
    )
}

fn role_of(r: RoleArg) -> codeb_api::Role {
    match r {
        RoleArg::Admin => codeb_api::Role::Admin,
        RoleArg::Developer => codeb_api::Role::Developer,
        RoleArg::Viewer => codeb_api::Role::Viewer,
    }
}

fn short_digest(d: &str) -> String {
    match d.split_once("sha256:") {
        Some((_, h)) => format!("sha256:{}", &h[..h.len().min(12)]),
        None => d.to_owned(),
    }
}

// ---------------------------------------------------------------------------------------
// completions, login, logout, whoami

fn completions(shell: Shell) -> Result<Exit, WeError> {
    let shell = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cli::Cli::command(), "we", &mut buf);
    let text = String::from_utf8(buf)
        .map_err(|e| WeError::Io(format!("completion script is not UTF-8: {e}")))?;
    Out::new(false, true).line(text.trim_end_matches('\n'))?;
    Ok(Exit::Ok)
}

/// The token for `we login`: `CODEB_TOKEN`, else stdin when it is not a terminal, else a
/// prompt on the terminal that does not echo.
fn read_token(env: &Env, server: &ServerUrl) -> Result<String, WeError> {
    if let Some(t) = &env.token {
        return Ok(t.clone());
    }
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        let mut text = String::new();
        stdin
            .lock()
            .take(4096)
            .read_to_string(&mut text)
            .map_err(|e| WeError::Io(format!("cannot read the token from stdin: {e}")))?;
        let first = text.lines().map(str::trim).find(|l| !l.is_empty());
        return first.map(str::to_owned).ok_or_else(|| {
            WeError::NotLoggedIn(format!(
                "no token on stdin: pipe it in (`echo \"$TOKEN\" | we login --server {server}`) or set {}",
                codeb_core::vars::CODEB_TOKEN
            ))
        });
    }
    rpassword::prompt_password(format!("Token for {server}: "))
        .map_err(|e| WeError::Io(format!("cannot read the token from the terminal: {e}")))
}

async fn login(a: cli::LoginArgs, env: &Env, out: &Out) -> Result<Exit, WeError> {
    let path = env.credentials_path()?;
    let stored = config::load_file(&path).ok().flatten();
    let server = match (&a.server, &env.server, &stored) {
        (Some(s), _, _) => ServerUrl::parse(s)?,
        (None, Some(s), _) => ServerUrl::parse(s)?,
        (None, None, Some(c)) => c.server.clone(),
        (None, None, None) => {
            return Err(WeError::Usage(
                "which server? `we login --server https://n1.example.com` (the first time)".into(),
            ));
        }
    };
    let text = read_token(env, &server)?;
    let token = Token::parse(&text).map_err(|e| WeError::NotLoggedIn(e.to_string()))?;
    let api = Api::new(server.clone(), token.clone())?;
    let who: Whoami = {
        let _p = out.progress(&format!("checking the token with {server}"));
        api.get(paths::WHOAMI, &[]).await?
    };
    config::save_file(
        &path,
        &Credentials {
            server: server.clone(),
            token,
        },
    )?;
    if out.json {
        out.json_line(&who)?;
    } else {
        out.info(&format!(
            "logged in to {server} as {} ({}); token {} expires {} ({}); saved to {}",
            who.user.name,
            who.user.role.as_str(),
            who.token.hint,
            when(who.token.expires_ms),
            in_time(who.token.expires_ms),
            path.display()
        ));
    }
    Ok(Exit::Ok)
}

fn in_time(ms: i64) -> String {
    let d = ms - now_ms();
    if d <= 0 {
        "expired".into()
    } else {
        format!("in {}", age(u64::try_from(d / 1000).unwrap_or(0)))
    }
}

async fn logout(env: &Env, out: &Out) -> Result<Exit, WeError> {
    let path = env.credentials_path()?;
    let creds = config::resolve(env)?;
    let api = Api::new(creds.server, creds.token)?;
    let revoked = match api
        .send_json::<(), serde_json::Value>(Method::POST, paths::LOGOUT, None)
        .await
    {
        Ok(_) => true,
        // Already revoked or expired: nothing left to revoke.
        Err(WeError::Unauthorized(_)) => false,
        Err(e) => return Err(e),
    };
    let removed = config::remove_file(&path)?;
    if out.json {
        out.json_line(&serde_json::json!({"revoked": revoked, "removed": removed}))?;
    } else {
        out.info(&format!(
            "{}{}",
            if revoked {
                "token revoked on the server"
            } else {
                "the server no longer accepted the token"
            },
            if removed {
                format!("; removed {}", path.display())
            } else {
                String::new()
            }
        ));
    }
    Ok(Exit::Ok)
}

async fn whoami(api: &Api, out: &Out) -> Result<Exit, WeError> {
    let who: Whoami = api.get(paths::WHOAMI, &[]).await?;
    if out.json {
        out.json_line(&who)?;
    } else {
        out.pairs(&[
            ("server", api.server().to_string().into()),
            (
                "user",
                format!("{} (id {})", who.user.name, who.user.id).into(),
            ),
            ("role", who.user.role.as_str().into()),
            ("projects", who.user.projects.join(", ").into()),
            (
                "token",
                format!(
                    "{} {}, expires {}",
                    who.token.hint,
                    who.token.name,
                    when(who.token.expires_ms)
                )
                .into(),
            ),
        ])?;
    }
    Ok(Exit::Ok)
}

// ---------------------------------------------------------------------------------------
// team

fn user_row(u: &User) -> Vec<Cell> {
    vec![
        u.id.to_string().into(),
        u.name.clone().into(),
        u.role.as_str().into(),
        if u.enabled {
            Cell::new("enabled", Style::Good)
        } else {
            Cell::new("disabled", Style::Dim)
        },
        u.projects.join(",").into(),
        ago(u.last_seen_ms).into(),
    ]
}

const USER_HEADERS: [&str; 6] = ["id", "name", "role", "state", "projects", "last seen"];

async fn team(t: TeamCommand, api: &Api, out: &Out) -> Result<Exit, WeError> {
    match t {
        TeamCommand::List => {
            let users: Vec<User> = api.get(paths::TEAM, &[]).await?;
            if out.json {
                out.json_line(&users)?;
            } else {
                let rows: Vec<_> = users.iter().map(user_row).collect();
                out.table(&USER_HEADERS, &rows)?;
            }
        }
        TeamCommand::Add {
            name,
            role,
            projects,
            expires_in,
        } => {
            let expires = expires_in
                .map(|e| duration_arg("--expires-in", &e))
                .transpose()?;
            for p in &projects {
                project_name(p)?;
            }
            let created: UserCreated = api
                .send_json(
                    Method::POST,
                    paths::TEAM,
                    Some(&NewUser {
                        name,
                        role: role_of(role),
                        projects,
                        token_expires_in: expires,
                    }),
                )
                .await?
                .body;
            // The one output that carries a token: it is shown once, here.
            if out.json {
                out.json_line(&created)?;
            } else {
                out.info(&format!(
                    "added {} ({}, id {}); their token, shown once (expires {}):",
                    created.user.name,
                    created.user.role.as_str(),
                    created.user.id,
                    when(created.token.info.expires_ms)
                ));
                out.line(&created.token.token)?;
            }
        }
        TeamCommand::Role { id, role } => {
            let u: User = api
                .post(
                    &paths::user_role(id),
                    &RoleChange {
                        role: role_of(role),
                    },
                )
                .await?;
            show_user(&u, out)?;
        }
        TeamCommand::Toggle { id } => {
            let u: User = api
                .send_json::<(), User>(Method::POST, &paths::user_toggle(id), None)
                .await?
                .body;
            show_user(&u, out)?;
        }
        TeamCommand::Status => {
            let s: TeamStatus = api.get(paths::TEAM_STATUS, &[]).await?;
            if out.json {
                out.json_line(&s)?;
            } else {
                let roles: Vec<String> = s
                    .by_role
                    .iter()
                    .map(|(r, n)| format!("{} {n}", r.as_str()))
                    .collect();
                out.pairs(&[
                    (
                        "you",
                        format!("{} ({})", s.me.name, s.me.role.as_str()).into(),
                    ),
                    (
                        "members",
                        format!("{} ({} enabled)", s.users, s.enabled).into(),
                    ),
                    ("enabled by role", roles.join(", ").into()),
                    ("active tokens", s.active_tokens.to_string().into()),
                    (
                        "expiring in 7 days",
                        Cell::new(
                            s.expiring_soon.to_string(),
                            if s.expiring_soon > 0 {
                                Style::Warn
                            } else {
                                Style::Plain
                            },
                        ),
                    ),
                ])?;
            }
        }
    }
    Ok(Exit::Ok)
}

fn show_user(u: &User, out: &Out) -> Result<(), WeError> {
    if out.json {
        out.json_line(u)
    } else {
        out.table(&USER_HEADERS, &[user_row(u)])
    }
}

// ---------------------------------------------------------------------------------------
// ssot

async fn ssot(s: SsotCommand, api: &Api, out: &Out) -> Result<Exit, WeError> {
    match s {
        SsotCommand::Status => {
            let st: SsotStatus = api.get(paths::SSOT_STATUS, &[]).await?;
            if out.json {
                out.json_line(&st)?;
            } else {
                out.pairs(&[
                    ("projects", st.projects.to_string().into()),
                    ("manifest entries", st.manifest_entries.to_string().into()),
                    (
                        "in sync",
                        if st.in_sync {
                            Cell::new("yes", Style::Good)
                        } else {
                            Cell::new(format!("no, {} findings", st.findings), Style::Bad)
                        },
                    ),
                    ("last sync", ago(st.last_sync_ms).into()),
                ])?;
                if !st.in_sync {
                    out.info("see them with `we ssot sync --dry-run`");
                }
            }
            Ok(if st.in_sync { Exit::Ok } else { Exit::Wrong })
        }
        SsotCommand::Projects => {
            let ps: Vec<SsotProject> = api.get(paths::SSOT_PROJECTS, &[]).await?;
            render_ssot_projects(&ps, out)?;
            Ok(Exit::Ok)
        }
        SsotCommand::Sync { dry_run, force } => {
            let plan: SyncPlan = {
                let _p = out.progress("comparing the registry with the host");
                api.post(paths::SSOT_SYNC, &SyncRequest { dry_run, force })
                    .await?
            };
            if out.json {
                out.json_line(&plan)?;
            } else if plan.in_sync() {
                out.info("registry and host agree: nothing to do");
            } else {
                let rows: Vec<Vec<Cell>> = plan
                    .findings
                    .iter()
                    .map(|f| {
                        let result = match (&f.repaired, &f.error) {
                            (_, Some(e)) => Cell::new(format!("failed: {e}"), Style::Bad),
                            (Some(true), _) => Cell::new("repaired", Style::Good),
                            (Some(false), _) => Cell::new("not repaired", Style::Bad),
                            (None, _) if dry_run && f.repair.is_some() => {
                                Cell::new("would repair", Style::Warn)
                            }
                            (None, _) => Cell::new("reported", Style::Warn),
                        };
                        vec![
                            format!("{:?}", f.kind).into(),
                            f.target.clone().into(),
                            f.detail.clone().into(),
                            f.repair.clone().unwrap_or_else(|| "-".into()).into(),
                            result,
                        ]
                    })
                    .collect();
                out.table(&["finding", "target", "detail", "repair", "result"], &rows)?;
            }
            let clean = plan
                .findings
                .iter()
                .all(|f| !dry_run && f.repaired == Some(true) && f.error.is_none());
            Ok(if clean { Exit::Ok } else { Exit::Wrong })
        }
        SsotCommand::Validate { fix } => {
            let r: ValidateReport = api
                .post(paths::SSOT_VALIDATE, &ValidateRequest { fix })
                .await?;
            if out.json {
                out.json_line(&r)?;
            } else if r.problems.is_empty() {
                out.info("the registry is valid");
            } else {
                let rows: Vec<Vec<Cell>> = r
                    .problems
                    .iter()
                    .map(|p| {
                        vec![
                            p.project.clone().into(),
                            p.field.clone().into(),
                            p.message.clone().into(),
                            if p.fixed {
                                Cell::new("fixed", Style::Good)
                            } else {
                                Cell::new(
                                    p.fix.clone().map_or_else(
                                        || "fix by hand".to_owned(),
                                        |f| format!("--fix: {f}"),
                                    ),
                                    Style::Bad,
                                )
                            },
                        ]
                    })
                    .collect();
                out.table(&["project", "field", "problem", "fix"], &rows)?;
            }
            let ok = r.problems.iter().all(|p| p.fixed);
            Ok(if ok { Exit::Ok } else { Exit::Wrong })
        }
    }
}

fn render_ssot_projects(ps: &[SsotProject], out: &Out) -> Result<(), WeError> {
    if out.json {
        return out.json_line(&ps);
    }
    let mut rows = Vec::new();
    for p in ps {
        for t in &p.environments {
            rows.push(vec![
                p.name.clone().into(),
                t.environment.clone().into(),
                t.manifest_port
                    .map_or_else(|| Cell::new("none", Style::Bad), |x| x.to_string().into()),
                t.units.join(",").into(),
                t.containers.join(",").into(),
                if t.route {
                    Cell::new("yes", Style::Good)
                } else {
                    Cell::new("no", Style::Dim)
                },
            ]);
        }
    }
    out.table(
        &["project", "env", "port", "units", "containers", "route"],
        &rows,
    )
}

// ---------------------------------------------------------------------------------------
// scan

/// The server's facts about one environment of a scan.
fn server_facts(data: &ScanData, environment: &str) -> Result<ServerFacts, WeError> {
    let es = data
        .environments
        .iter()
        .find(|e| e.environment == environment)
        .ok_or_else(|| {
            let have: Vec<&str> = data
                .environments
                .iter()
                .map(|e| e.environment.as_str())
                .collect();
            WeError::Usage(format!(
                "project {} has no environment {environment} in the registry (it has: {})",
                data.project.spec.name,
                if have.is_empty() {
                    "none".to_owned()
                } else {
                    have.join(", ")
                }
            ))
        })?;
    let spec = &data.project.spec;
    Ok(ServerFacts {
        kind: Some(spec.kind.clone()),
        image: Some(spec.image.clone()),
        env_keys: es
            .env_keys
            .as_ref()
            .map(|k| k.iter().cloned().collect::<BTreeSet<_>>()),
        container_port: Some(spec.container_port),
        manifest_port: es.manifest_port,
        deployed_digest: es
            .deployed
            .as_ref()
            .map(|r| r.digest.clone().unwrap_or_else(|| r.image.clone())),
        deployed_sha: es.deployed.as_ref().and_then(|r| r.sha.clone()),
    })
}

/// Local against server for `project`'s `environment`: the checks, and the env-file problem
/// the server reported (if any).
async fn scan_diff(
    api: &Api,
    out: &Out,
    project: &ProjectName,
    environment: EnvArg,
    dir: Option<PathBuf>,
) -> Result<Vec<Check>, WeError> {
    let start = match dir {
        Some(d) => d,
        None => std::env::current_dir()
            .map_err(|e| WeError::Io(format!("cannot tell the current directory: {e}")))?,
    };
    let root = scan::repo_root(&start);
    let local = scan::local_facts(&root, project, environment.environment())?;
    let data: ScanData = {
        let _p = out.progress("asking the server");
        api.get(&paths::scan(project.as_str()), &[]).await?
    };
    let server = server_facts(&data, environment.as_str())?;
    if let Some(es) = data
        .environments
        .iter()
        .find(|e| e.environment == environment.as_str())
        && let Some(err) = &es.env_file_error
    {
        out.warn(&format!("the server's env file: {err}"));
    }
    Ok(scan::compare(project, &local, &server))
}

fn render_checks(checks: &[Check], out: &Out) -> Result<(), WeError> {
    let rows: Vec<Vec<Cell>> = checks
        .iter()
        .map(|c| {
            vec![
                c.check.into(),
                c.local.clone().into(),
                c.server.clone().into(),
                match c.verdict {
                    Verdict::Ok => Cell::new("ok", Style::Good),
                    Verdict::Drift => Cell::new("drift", Style::Bad),
                    Verdict::Info => Cell::new("differs", Style::Dim),
                },
            ]
        })
        .collect();
    out.table(&["check", "local", "server", "verdict"], &rows)?;
    for c in checks {
        if let Some(f) = &c.fix {
            out.info(&format!("{}: {f}", c.check));
        }
    }
    Ok(())
}

#[derive(Serialize)]
struct ScanResult<'a> {
    project: &'a str,
    environment: &'a str,
    drift: bool,
    checks: &'a [Check],
}

async fn scan_cmd(a: cli::ScanArgs, api: &Api, out: &Out) -> Result<Exit, WeError> {
    if a.ports {
        let r: PortsReport = api.get(paths::PORTS, &[]).await?;
        render_ports(&r, out)?;
        return Ok(if r.conflicts.is_empty() {
            Exit::Ok
        } else {
            Exit::Wrong
        });
    }
    if a.server_only {
        return match &a.project {
            Some(p) => {
                let project = project_name(p)?;
                let data: ScanData = api.get(&paths::scan(project.as_str()), &[]).await?;
                if out.json {
                    out.json_line(&data)?;
                } else {
                    let spec = &data.project.spec;
                    out.pairs(&[
                        ("project", spec.name.clone().into()),
                        ("type", spec.kind.clone().into()),
                        ("repository", spec.repository.clone().into()),
                        ("image", spec.image.clone().into()),
                        ("container port", spec.container_port.to_string().into()),
                        ("health path", spec.health_path.clone().into()),
                        ("owners", spec.owners.join(", ").into()),
                    ])?;
                    let rows: Vec<Vec<Cell>> = data
                        .environments
                        .iter()
                        .map(|e| {
                            vec![
                                e.environment.clone().into(),
                                e.manifest_port.map_or_else(
                                    || Cell::new("none", Style::Bad),
                                    |p| p.to_string().into(),
                                ),
                                e.deployed.as_ref().map_or_else(
                                    || Cell::new("nothing", Style::Dim),
                                    |r| {
                                        r.digest
                                            .as_deref()
                                            .map_or_else(|| r.image.clone(), short_digest)
                                            .into()
                                    },
                                ),
                                e.deployed
                                    .as_ref()
                                    .and_then(|r| r.sha.clone())
                                    .unwrap_or_else(|| "-".into())
                                    .into(),
                                match (&e.env_keys, &e.env_file_error) {
                                    (_, Some(err)) => Cell::new(err.clone(), Style::Bad),
                                    (Some(k), None) => format!("{} keys", k.len()).into(),
                                    (None, None) => "no env file".into(),
                                },
                            ]
                        })
                        .collect();
                    out.table(&["env", "port", "deployed", "sha", "env file"], &rows)?;
                }
                Ok(Exit::Ok)
            }
            None => {
                let ps: Vec<SsotProject> = api.get(paths::SSOT_PROJECTS, &[]).await?;
                render_ssot_projects(&ps, out)?;
                Ok(Exit::Ok)
            }
        };
    }
    let Some(p) = &a.project else {
        return Err(WeError::Usage(
            "scan --diff needs the project: `we scan myapp --diff` in its repository".into(),
        ));
    };
    let project = project_name(p)?;
    let checks = scan_diff(api, out, &project, a.environment, a.dir).await?;
    let drift = scan::drifted(&checks);
    if out.json {
        out.json_line(&ScanResult {
            project: project.as_str(),
            environment: a.environment.as_str(),
            drift,
            checks: &checks,
        })?;
    } else {
        render_checks(&checks, out)?;
    }
    Ok(if drift { Exit::Wrong } else { Exit::Ok })
}

fn render_ports(r: &PortsReport, out: &Out) -> Result<(), WeError> {
    if out.json {
        return out.json_line(r);
    }
    let rows: Vec<Vec<Cell>> = r
        .entries
        .iter()
        .map(|e| {
            vec![
                e.port.to_string().into(),
                e.project.clone().into(),
                e.environment.clone().into(),
                if e.listening {
                    Cell::new("yes", Style::Good)
                } else {
                    Cell::new("no", Style::Dim)
                },
                e.holder.clone().unwrap_or_else(|| "-".into()).into(),
            ]
        })
        .collect();
    out.table(&["port", "project", "env", "listening", "holder"], &rows)?;
    for c in &r.conflicts {
        out.warn(&format!("port {}: {}", c.port, c.message));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// deploy, rollback, jobs

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum DeployLine<'a> {
    Scan { drift: bool, checks: &'a [Check] },
    Plan { plan: &'a DeployPlan },
    Job { job: &'a Job },
}

async fn deploy(a: cli::DeployArgs, api: &Api, out: &Out) -> Result<Exit, WeError> {
    let project = project_name(&a.project)?;
    let lock_timeout = duration_arg("--lock-timeout", &a.lock_timeout)?;
    if let Some(image) = &a.image
        && (image.trim().is_empty() || image.chars().any(char::is_whitespace))
    {
        return Err(WeError::Usage(format!(
            "--image `{image}` is not an image reference; write e.g. ghcr.io/acme/myapp:sha-1a2b3c"
        )));
    }
    if a.skip_scan {
        out.info("scan skipped (--skip-scan)");
    } else {
        let checks = scan_diff(api, out, &project, a.environment, a.dir.clone()).await?;
        let drift = scan::drifted(&checks);
        if out.json {
            out.json_line(&DeployLine::Scan {
                drift,
                checks: &checks,
            })?;
        }
        if drift {
            let names: Vec<&str> = checks
                .iter()
                .filter(|c| c.verdict == Verdict::Drift)
                .map(|c| c.check)
                .collect();
            if !out.json {
                for c in checks.iter().filter(|c| c.verdict == Verdict::Drift) {
                    out.warn(&format!(
                        "drift in {}: local {}, server {}{}",
                        c.check,
                        c.local,
                        c.server,
                        c.fix
                            .as_ref()
                            .map_or_else(String::new, |f| format!(" ({f})"))
                    ));
                }
            }
            if a.force {
                out.warn(&format!(
                    "deploying despite drift in {} (--force)",
                    names.join(", ")
                ));
            } else {
                return Err(WeError::Failed(format!(
                    "not deploying {project} {}: the scan found drift in {} (see `we scan {project} --diff`); fix it, or deploy anyway with --force",
                    a.environment.as_str(),
                    names.join(", ")
                )));
            }
        } else {
            out.info("scan: repository and server agree");
        }
    }
    let req = DeployRequest {
        environment: a.environment.as_str().to_owned(),
        image: a.image.clone(),
        sha: None,
        dry_run: a.dry_run,
        lock_timeout: Some(lock_timeout),
    };
    let answer = {
        let _p = out.progress("asking the server");
        api.send_json::<_, serde_json::Value>(
            Method::POST,
            &paths::deploy(project.as_str()),
            Some(&req),
        )
        .await?
    };
    job_or_plan(api, out, answer.status, answer.body).await
}

async fn rollback(a: cli::RollbackArgs, api: &Api, out: &Out) -> Result<Exit, WeError> {
    let project = project_name(&a.project)?;
    let lock_timeout = duration_arg("--lock-timeout", &a.lock_timeout)?;
    let req = RollbackRequest {
        environment: a.environment.as_str().to_owned(),
        dry_run: a.dry_run,
        lock_timeout: Some(lock_timeout),
    };
    let answer = {
        let _p = out.progress("asking the server");
        api.send_json::<_, serde_json::Value>(
            Method::POST,
            &paths::rollback(project.as_str()),
            Some(&req),
        )
        .await?
    };
    job_or_plan(api, out, answer.status, answer.body).await
}

fn unreadable(what: &str, e: &serde_json::Error) -> WeError {
    WeError::Server(format!(
        "the server's {what} cannot be read by this `we` ({e}); is `we` as new as the server?"
    ))
}

/// 200 with a plan (dry run) or 202 with a job that is then followed to its end.
async fn job_or_plan(
    api: &Api,
    out: &Out,
    status: StatusCode,
    body: serde_json::Value,
) -> Result<Exit, WeError> {
    if status == StatusCode::ACCEPTED {
        let job: Job = serde_json::from_value(body).map_err(|e| unreadable("job", &e))?;
        if out.json {
            out.json_line(&DeployLine::Job { job: &job })?;
        } else {
            out.info(&format!(
                "job {}: {} {} {} (requested by {})",
                job.id,
                match job.kind {
                    codeb_api::JobKind::Deploy => "deploy",
                    codeb_api::JobKind::Rollback => "rollback",
                },
                job.project,
                job.environment,
                job.requested_by
            ));
        }
        return follow_job(api, out, &job).await;
    }
    let plan: DeployPlan = serde_json::from_value(body).map_err(|e| unreadable("plan", &e))?;
    if out.json {
        out.json_line(&DeployLine::Plan { plan: &plan })?;
    } else {
        out.info("dry run: nothing was changed");
        let current = plan.current.as_ref().map_or_else(
            || "nothing deployed".to_owned(),
            |r| {
                format!(
                    "{} ({})",
                    r.digest.as_deref().map_or(r.image.as_str(), |d| d),
                    r.slot.as_deref().unwrap_or("-")
                )
            },
        );
        out.pairs(&[
            (
                "action",
                format!("{:?} {} {}", plan.kind, plan.project, plan.environment)
                    .to_lowercase()
                    .into(),
            ),
            ("image", plan.image.clone().into()),
            ("digest", plan.digest.clone().into()),
            (
                "slot",
                format!("{} (port {})", plan.slot, plan.slot_port).into(),
            ),
            ("public port", plan.port.to_string().into()),
            ("health url", plan.health_url.clone().into()),
            ("serving now", current.into()),
        ])?;
    }
    Ok(Exit::Ok)
}

/// Streams the job's events until the terminal one, reconnecting when the connection drops
/// (events already shown are skipped by their sequence number).
async fn follow_job(api: &Api, out: &Out, job: &Job) -> Result<Exit, WeError> {
    let mut last_seq = 0;
    let mut failures = 0u32;
    loop {
        match api.stream(&paths::job_events(job.id), &[]).await {
            Ok(mut lines) => {
                failures = 0;
                loop {
                    match lines.next::<JobEvent>().await? {
                        Ok(ev) => {
                            if ev.seq <= last_seq {
                                continue;
                            }
                            last_seq = ev.seq;
                            if let Some(exit) = show_event(out, job, &ev)? {
                                return exit;
                            }
                        }
                        Err(StreamEnd::Closed) => break,
                        Err(StreamEnd::Broken(why)) => {
                            out.warn(&format!(
                                "lost the job's event stream ({why}); reconnecting"
                            ));
                            break;
                        }
                    }
                }
            }
            Err(e @ WeError::Unreachable { .. }) | Err(e @ WeError::Server(_)) => {
                failures += 1;
                if failures > 30 {
                    return Err(e);
                }
                out.warn(&format!("{e}; retrying"));
            }
            Err(e) => return Err(e),
        }
        // The stream ended without a terminal event: the job's own state decides.
        if let Ok(j) = api.get::<Job>(&paths::job(job.id), &[]).await
            && j.state.is_terminal()
        {
            return finish(out, &j);
        }
        tokio::time::sleep(Duration::from_secs(u64::from(failures.clamp(1, 5)))).await;
    }
}

fn show_event(
    out: &Out,
    job: &Job,
    ev: &JobEvent,
) -> Result<Option<Result<Exit, WeError>>, WeError> {
    if out.json {
        out.json_line(ev)?;
    }
    let human = !out.json;
    match &ev.kind {
        JobEventKind::Queued => {
            if human {
                out.info("  queued");
            }
        }
        JobEventKind::Waiting { holder } => {
            if human {
                out.info(&format!("  waiting for the lock: {holder}"));
            }
        }
        JobEventKind::Started => {
            if human {
                out.info("  started");
            }
        }
        JobEventKind::Progress { message } => {
            if human {
                out.info(&format!("  {message}"));
            }
        }
        JobEventKind::Done { message, digest } => {
            if human {
                out.pairs(&[
                    ("job", job.id.to_string().into()),
                    ("result", Cell::new("done", Style::Good)),
                    (
                        "project",
                        format!("{} {}", job.project, job.environment).into(),
                    ),
                    (
                        "digest",
                        digest.clone().unwrap_or_else(|| "-".into()).into(),
                    ),
                    ("message", message.clone().into()),
                ])?;
            }
            return Ok(Some(Ok(Exit::Ok)));
        }
        JobEventKind::Failed { code, message } => {
            return Ok(Some(Err(if code == codeb_api::codes::FORBIDDEN {
                WeError::Forbidden(message.clone())
            } else {
                WeError::Failed(format!("job {} failed: {message}", job.id))
            })));
        }
        JobEventKind::Interrupted { message } => {
            return Ok(Some(Err(WeError::Failed(format!(
                "job {} was interrupted: {message}",
                job.id
            )))));
        }
    }
    Ok(None)
}

fn finish(out: &Out, j: &Job) -> Result<Exit, WeError> {
    let message = j.message.clone().unwrap_or_default();
    match j.state {
        codeb_api::JobState::Done => {
            if out.json {
                out.json_line(&DeployLine::Job { job: j })?;
            } else {
                out.info(&format!("job {} done: {message}", j.id));
            }
            Ok(Exit::Ok)
        }
        _ => Err(WeError::Failed(format!(
            "job {} {:?}: {message}",
            j.id, j.state
        ))),
    }
}

// ---------------------------------------------------------------------------------------
// up, health, logs, audit

async fn up(a: cli::UpArgs, api: &Api, out: &Out) -> Result<Exit, WeError> {
    if a.ports {
        let r: PortsReport = api.get(paths::PORTS, &[]).await?;
        render_ports(&r, out)?;
        return Ok(Exit::Ok);
    }
    let r: UpReport = api.get(paths::UP, &[]).await?;
    if out.json {
        if a.containers {
            out.json_line(&r.containers)?;
        } else {
            out.json_line(&r)?;
        }
        return Ok(Exit::Ok);
    }
    let rows: Vec<Vec<Cell>> = r
        .containers
        .iter()
        .map(|c| {
            vec![
                c.name.clone().into(),
                c.project.clone().unwrap_or_else(|| "-".into()).into(),
                c.environment.clone().unwrap_or_else(|| "-".into()).into(),
                c.slot.clone().unwrap_or_else(|| "-".into()).into(),
                Cell::new(
                    c.state.clone(),
                    if c.state == "running" {
                        Style::Good
                    } else {
                        Style::Bad
                    },
                ),
                if c.known {
                    c.image.clone().into()
                } else {
                    Cell::new(format!("{} (no project)", c.image), Style::Warn)
                },
            ]
        })
        .collect();
    out.table(
        &["container", "project", "env", "slot", "state", "image"],
        &rows,
    )?;
    if !a.containers {
        out.line("")?;
        render_ports(&r.ports, out)?;
    }
    Ok(Exit::Ok)
}

async fn health(a: cli::HealthArgs, api: &Api, out: &Out) -> Result<Exit, WeError> {
    let mut query = Vec::new();
    if let Some(p) = &a.project {
        query.push(("project", project_name(p)?.as_str().to_owned()));
    }
    let r: HealthReport = {
        let _p = out.progress("probing");
        api.get(paths::HEALTH, &query).await?
    };
    if out.json {
        out.json_line(&r)?;
    } else {
        let mut headers = vec!["project", "env", "health", "last deploy"];
        if a.verbose {
            headers.extend(["url", "status", "latency", "image", "failure"]);
        }
        let rows: Vec<Vec<Cell>> = r
            .targets
            .iter()
            .map(|t| {
                let mut row = vec![
                    t.project.clone().into(),
                    t.environment.clone().into(),
                    if t.healthy {
                        Cell::new("healthy", Style::Good)
                    } else {
                        Cell::new("unhealthy", Style::Bad)
                    },
                    t.last_deploy_age_s
                        .map_or_else(|| "never".into(), |s| format!("{} ago", age(s)))
                        .into(),
                ];
                if a.verbose {
                    row.extend([
                        t.url.clone().unwrap_or_else(|| "-".into()).into(),
                        t.status
                            .map_or_else(|| "-".into(), |s| s.to_string())
                            .into(),
                        t.latency_ms
                            .map_or_else(|| "-".into(), |l| format!("{l}ms"))
                            .into(),
                        t.image.clone().unwrap_or_else(|| "-".into()).into(),
                        t.failure.clone().unwrap_or_default().into(),
                    ]);
                }
                row
            })
            .collect();
        out.table(&headers, &rows)?;
        if !a.verbose {
            for t in r.targets.iter().filter(|t| !t.healthy) {
                if let Some(f) = &t.failure {
                    out.info(&format!("{} {}: {f}", t.project, t.environment));
                }
            }
        }
        if !r.backups.is_empty() {
            out.line("")?;
            out.table(
                &crate::backup::KIND_HEADERS,
                &crate::backup::kind_rows(&r.backups),
            )?;
        }
    }
    Ok(if r.all_healthy() {
        Exit::Ok
    } else {
        Exit::Wrong
    })
}

fn show_log(out: &Out, ev: &LogEvent) -> Result<(), WeError> {
    if out.json {
        return out.json_line(ev);
    }
    match ev {
        LogEvent::Source { container, slot } => out.info(&format!(
            "== {container}{}",
            slot.as_ref()
                .map_or_else(String::new, |s| format!(" ({s})"))
        )),
        LogEvent::Line { line, .. } => out.line(line)?,
        LogEvent::End { reason } => out.info(&format!("== {reason}")),
    }
    Ok(())
}

/// `we logs`: the tail, and with `-f` the stream, reconnected when it ends or breaks (a
/// deploy that switches slots ends the old container's stream) until interrupted.
async fn logs(a: cli::LogsArgs, api: &Api, out: &Out) -> Result<Exit, WeError> {
    let project = project_name(&a.project)?;
    let path = paths::logs(project.as_str());
    let mut follower = crate::follow::Follower::new();
    let mut connected_once = false;
    let mut failures = 0u32;
    loop {
        let tail = follower.next_tail(a.tail);
        let query = [
            ("environment", a.environment.as_str().to_owned()),
            ("tail", tail.to_string()),
            ("follow", a.follow.to_string()),
        ];
        let retry_after = match api.stream(&path, &query).await {
            Ok(mut lines) => {
                follower.connected(tail, connected_once);
                connected_once = true;
                failures = 0;
                let why = loop {
                    match lines.next::<LogEvent>().await? {
                        Ok(ev) => {
                            let ended = matches!(ev, LogEvent::End { .. });
                            for e in follower.event(ev) {
                                show_log(out, &e)?;
                            }
                            if ended {
                                if !a.follow {
                                    return Ok(Exit::Ok);
                                }
                                break "the stream ended".to_owned();
                            }
                        }
                        Err(StreamEnd::Closed) => break "the server closed the stream".into(),
                        Err(StreamEnd::Broken(why)) => break why,
                    }
                };
                for e in follower.flush() {
                    show_log(out, &e)?;
                }
                if !a.follow {
                    return Err(WeError::Unreachable {
                        server: api.server().to_string(),
                        reason: format!("the log stream broke off: {why}"),
                    });
                }
                if !out.json {
                    out.info(&format!("== {why}; reconnecting"));
                }
                Duration::from_millis(500)
            }
            Err(e) => {
                let retryable = matches!(
                    e,
                    WeError::Unreachable { .. } | WeError::Server(_) | WeError::Usage(_)
                );
                if !a.follow
                    || !retryable
                    || (!connected_once && !matches!(e, WeError::Unreachable { .. }))
                {
                    return Err(e);
                }
                failures += 1;
                let wait = Duration::from_secs(u64::from(failures.min(5)));
                if !out.json {
                    out.info(&format!("== {e}; retrying in {}s", wait.as_secs()));
                }
                wait
            }
        };
        tokio::time::sleep(retry_after).await;
    }
}

async fn audit(a: cli::AuditArgs, api: &Api, out: &Out) -> Result<Exit, WeError> {
    let mut query = Vec::new();
    if let Some(p) = &a.project {
        query.push(("project", project_name(p)?.as_str().to_owned()));
    }
    if let Some(s) = &a.since {
        query.push(("since", duration_arg("--since", s)?));
    }
    if let Some(l) = a.limit {
        query.push(("limit", l.to_string()));
    }
    let entries: Vec<codeb_api::AuditEntry> = api.get(paths::AUDIT, &query).await?;
    if out.json {
        out.json_line(&entries)?;
    } else {
        let rows: Vec<Vec<Cell>> = entries
            .iter()
            .map(|e| {
                vec![
                    when(e.time_ms).into(),
                    e.actor.clone().into(),
                    e.action.clone().into(),
                    e.target.clone().into(),
                    Cell::new(
                        e.result.clone(),
                        if e.result == "ok" {
                            Style::Plain
                        } else if e.result == "denied" || e.result.starts_with("failed") {
                            Style::Bad
                        } else {
                            Style::Plain
                        },
                    ),
                ]
            })
            .collect();
        out.table(&["time", "actor", "action", "target", "result"], &rows)?;
    }
    Ok(Exit::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages() {
        assert_eq!(age(5), "5s");
        assert_eq!(age(125), "2m");
        assert_eq!(age(7200), "2h");
        assert_eq!(age(3 * 86_400 + 5), "3d");
    }
}
