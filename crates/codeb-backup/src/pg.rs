//! Running PostgreSQL's and pgBackRest's own tools (as the cluster's OS user) and the naming
//! rule that finds a project's database.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use codeb_runtime::Cmd;

use crate::Error;

/// A project name: a DNS label (`[a-z0-9-]`, 1-63, no leading/trailing `-`).
pub fn check_project(p: &str) -> Result<(), String> {
    let ok = (1..=63).contains(&p.len())
        && p.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !p.starts_with('-')
        && !p.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "project name {p:?} is not a DNS label ([a-z0-9-], 1-63 characters)"
        ))
    }
}

/// The project's production database: `<project>_db` with `-` made `_` (what
/// `we workflow init` creates). The one place that knows the rule.
pub fn project_database(project: &str) -> String {
    format!("{}_db", project.replace('-', "_"))
}

/// The project's role: `<project>_user`.
pub fn project_role(project: &str) -> String {
    format!("{}_user", project.replace('-', "_"))
}

/// Where and as whom the tools run.
#[derive(Debug, Clone)]
pub struct Tools {
    pub bin: PathBuf,
    /// `runuser -u <user> --` when we are root.
    pub user: Option<String>,
    pub pgbackrest_conf: PathBuf,
    pub stanza: String,
}

impl Tools {
    pub fn new(cfg: &crate::Config) -> Tools {
        Tools {
            bin: cfg.pg_bin.clone(),
            user: rustix_is_root().then(|| cfg.os_user.clone()),
            pgbackrest_conf: cfg.pgbackrest_conf.clone(),
            stanza: cfg.stanza.clone(),
        }
    }

    /// A command for `program` (a PostgreSQL binary name or a path) as the cluster's user,
    /// with a 12 h limit (a backup or restore of a large cluster takes hours).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Cmd {
        let program = program.as_ref();
        let exe = if Path::new(program).components().count() == 1 && program != "pgbackrest" {
            self.bin.join(program).into_os_string()
        } else {
            program.to_owned()
        };
        let c = match &self.user {
            Some(u) => Cmd::new("runuser").args(["-u", u.as_str(), "--"]).arg(exe),
            None => Cmd::new(exe.to_string_lossy().into_owned()),
        };
        c.env("PGCONNECT_TIMEOUT", "10")
            .timeout(Duration::from_secs(12 * 3600))
    }

    /// `pgbackrest --config=... --stanza=... <args>`.
    pub fn pgbackrest(&self) -> Cmd {
        self.command("pgbackrest")
            .arg(format!("--config={}", self.pgbackrest_conf.display()))
            .arg(format!("--stanza={}", self.stanza))
    }
}

/// Runs `cmd`, returning stdout; a failure carries `what` and the tool's stderr.
pub fn run(what: &str, cmd: Cmd) -> Result<String, Error> {
    match cmd.output_blocking() {
        Ok(o) => Ok(o.stdout),
        Err(codeb_runtime::RuntimeError::Failed { code, stderr, .. }) => Err(Error::Tool {
            what: what.to_owned(),
            message: format!("{} (exit {code})", last_lines(&stderr, 6)),
        }),
        Err(e) => Err(Error::Tool {
            what: what.to_owned(),
            message: e.to_string(),
        }),
    }
}

pub fn last_lines(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A connection to a cluster through its Unix socket.
#[derive(Debug, Clone)]
pub struct Conn {
    pub socket: PathBuf,
    pub port: u16,
}

impl Conn {
    /// `psql` running `sql` in `db`, unaligned tuples only, stopping at the first error.
    pub fn psql(&self, tools: &Tools, db: &str, sql: &str) -> Result<String, Error> {
        let c = tools
            .command("psql")
            .timeout(Duration::from_secs(600))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-F", "\t"])
            .arg("-h")
            .arg(&self.socket)
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-d")
            .arg(db)
            .arg("-c")
            .arg(sql);
        run(&format!("psql {db}"), c).map(|s| s.trim_end().to_owned())
    }

    /// Connection arguments for pg_dump/pg_restore.
    pub fn args(&self) -> Vec<std::ffi::OsString> {
        vec![
            "-h".into(),
            self.socket.clone().into_os_string(),
            "-p".into(),
            self.port.to_string().into(),
        ]
    }

    pub fn database_exists(&self, tools: &Tools, db: &str) -> Result<bool, Error> {
        let out = self.psql(
            tools,
            "postgres",
            &format!("SELECT 1 FROM pg_database WHERE datname = {}", literal(db)),
        )?;
        Ok(out.trim() == "1")
    }

    pub fn role_exists(&self, tools: &Tools, role: &str) -> Result<bool, Error> {
        let out = self.psql(
            tools,
            "postgres",
            &format!("SELECT 1 FROM pg_roles WHERE rolname = {}", literal(role)),
        )?;
        Ok(out.trim() == "1")
    }
}

/// A SQL string literal.
pub fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A SQL identifier.
pub fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// A TCP port nothing listens on right now.
pub fn free_port() -> Result<u16, Error> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

fn rustix_is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Chowns `path` to the cluster's user (when we are root), so PostgreSQL/pgBackRest can
/// write there.
pub fn chown_to(tools: &Tools, path: &Path) -> Result<(), Error> {
    if let Some(u) = &tools.user {
        run(
            &format!("chown {}", path.display()),
            Cmd::new("chown").arg(format!("{u}:")).arg(path),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn naming_rule() {
        assert_eq!(project_database("my-app"), "my_app_db");
        assert_eq!(project_role("my-app"), "my_app_user");
        assert!(check_project("my-app").is_ok());
        assert!(check_project("My_App").is_err());
        assert!(check_project("-x").is_err());
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(literal("it's"), "'it''s'");
    }
}
