//! A pull request preview's own data: a PostgreSQL role and database `<p>_pr_<N>` made from
//! the staging database's schema (and the repository's optional seed SQL), and a Redis ACL
//! user `<project>.pr-<N>` limited to the key prefix `<project>:pr-<N>:`.
//!
//! Isolation: the preview's role is a plain LOGIN role of its own that owns only its
//! database; every codeb database revokes `CONNECT` from `PUBLIC`, so the preview's
//! credentials cannot open staging or production. The schema and the seed run connected
//! *as the preview's role* (never as the admin, never through `psql`, so neither a `\!`
//! meta-command nor a `RESET ROLE` can reach past that role), each in one implicit
//! transaction.
//!
//! All or nothing: the database gets its marker comment only once schema and seed are in,
//! so a database of the preview's role without the marker is an interrupted creation that
//! the next run drops and makes again; a failure removes what this run created.

use std::time::Duration;

use codeb_secret::Secret;

use crate::names::{PreviewNames, parse_preview_marker};
use crate::pg::{Pg, PgError};
use crate::redis::{Redis, RedisProvisionError};

#[derive(Debug, thiserror::Error)]
pub enum PreviewDataError {
    #[error(transparent)]
    Pg(#[from] PgError),
    #[error(transparent)]
    Redis(#[from] RedisProvisionError),
    #[error("the schema of {db} could not be read with pg_dump: {message}")]
    Dump { db: String, message: String },
    /// The repository's seed SQL failed; nothing of the preview's database is kept.
    #[error(
        "codeb/seed.sql of the pull request failed on the preview's database: {0}; fix the seed (plain SQL statements, no psql meta-commands or COPY FROM STDIN) and push again"
    )]
    Seed(String),
    /// A role or database of the preview's name exists and is not codeb's.
    #[error("{0}")]
    NotOurs(String),
}

impl PreviewDataError {
    /// True when running again cannot help until someone changes something.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::Seed(_) | Self::NotOurs(_))
    }
}

/// What [`ensure_pg`] found or did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PgDone {
    pub created_role: bool,
    pub created_db: bool,
}

/// Removes the `\restrict KEY` / `\unrestrict KEY` lines newer `pg_dump`s write around a
/// plain dump; any other backslash line (a psql meta-command) is refused.
pub fn plain_sql(dump: &str) -> Result<String, String> {
    let mut out = String::with_capacity(dump.len());
    for (i, line) in dump.lines().enumerate() {
        if let Some(rest) = line.strip_prefix('\\') {
            let word = rest.split_whitespace().next().unwrap_or_default();
            if word == "restrict" || word == "unrestrict" {
                continue;
            }
            return Err(format!(
                "line {}: the psql meta-command `\\{word}` is not SQL",
                i + 1
            ));
        }
        out.push_str(line);
        out.push('\n');
    }
    Ok(out)
}

/// The schema of `db` (`pg_dump --schema-only`, without owners, privileges, publications,
/// subscriptions, security labels or tablespaces), as plain SQL. The admin password reaches
/// pg_dump through its environment only.
pub async fn schema_of(
    pg_dump: &str,
    admin: &Secret,
    db: &str,
) -> Result<String, PreviewDataError> {
    let failed = |message: String| PreviewDataError::Dump {
        db: db.to_owned(),
        message,
    };
    let c: tokio_postgres::Config = admin
        .expose()
        .parse()
        .map_err(|e: tokio_postgres::Error| failed(e.to_string()))?;
    let target = crate::pg::url_target(admin.expose());
    let (host, port) = target.rsplit_once(':').unwrap_or((target.as_str(), "5432"));
    let mut cmd = codeb_runtime::Cmd::new(pg_dump.to_owned())
        .env_clear()
        .env("PATH", "/usr/bin:/bin:/usr/lib/postgresql/15/bin")
        .args([
            "--schema-only",
            "--no-owner",
            "--no-privileges",
            "--no-publications",
            "--no-subscriptions",
            "--no-security-labels",
            "--no-tablespaces",
            "--no-password",
        ])
        .arg(format!("--host={host}"))
        .arg(format!("--port={port}"))
        .arg(format!("--username={}", c.get_user().unwrap_or("postgres")))
        .arg(db)
        .timeout(Duration::from_secs(600));
    if let Some(pw) = c.get_password() {
        cmd = cmd.env("PGPASSWORD", String::from_utf8_lossy(pw).into_owned());
    }
    let out = cmd.output().await.map_err(|e| failed(e.to_string()))?;
    plain_sql(&out.stdout).map_err(failed)
}

/// Where a preview's schema comes from: `pg_dump` of the project's staging database.
#[derive(Debug, Clone)]
pub struct SchemaSource {
    pub pg_dump: String,
    pub db: String,
}

/// Makes the preview's role (LOGIN only, `password`) and database from the schema of
/// `schema.db` and `seed`, or finds them complete. On failure, what this run created is
/// dropped again.
pub async fn ensure_pg(
    admin_url: &Secret,
    n: &PreviewNames,
    password: &Secret,
    schema: &SchemaSource,
    seed: Option<&str>,
) -> Result<PgDone, PreviewDataError> {
    let admin = Pg::connect(admin_url).await?;
    let mut done = PgDone::default();
    match admin.role(&n.pg).await? {
        Some(r) if r.comment.as_deref() != Some(n.marker.as_str()) => {
            return Err(PreviewDataError::NotOurs(format!(
                "PostgreSQL role `{}` exists and is not codeb's (it lacks the comment `{}`); the preview gets no database until it is dropped or renamed",
                n.pg, n.marker
            )));
        }
        Some(_) => admin.set_password(&n.pg, password).await?,
        None => {
            admin.create_role(&n.pg, password, &n.marker).await?;
            done.created_role = true;
        }
    }
    let r = ensure_db(&admin, admin_url, n, password, schema, seed, &mut done).await;
    if let Err(e) = r {
        if done.created_db {
            let _ = admin.drop_database(&n.pg).await;
        }
        if done.created_role {
            let _ = admin.drop_role(&n.pg).await;
        }
        return Err(e);
    }
    Ok(done)
}

async fn ensure_db(
    admin: &Pg,
    admin_url: &Secret,
    n: &PreviewNames,
    password: &Secret,
    schema: &SchemaSource,
    seed: Option<&str>,
    done: &mut PgDone,
) -> Result<(), PreviewDataError> {
    match admin.database(&n.pg).await? {
        Some(d) if d.comment.as_deref() == Some(n.marker.as_str()) => return Ok(()),
        // Made by an earlier run that did not finish: made again from the start.
        Some(d) if d.comment.is_none() && d.owner == n.pg => admin.drop_database(&n.pg).await?,
        Some(d) => {
            return Err(PreviewDataError::NotOurs(format!(
                "PostgreSQL database `{}` exists and is not codeb's (owner `{}`, no comment `{}`); the preview gets no database until it is dropped or renamed",
                n.pg, d.owner, n.marker
            )));
        }
        None => {}
    }
    let sql = schema_of(&schema.pg_dump, admin_url, &schema.db).await?;
    admin.create_database(&n.pg, &n.pg).await?;
    done.created_db = true;
    admin.restrict_connect(&n.pg, &n.pg).await?;
    {
        let own = Pg::connect_as(admin_url, &n.pg, password, &n.pg).await?;
        own.batch(&sql).await?;
    }
    if let Some(seed) = seed.filter(|s| !s.trim().is_empty()) {
        // A fresh session: the dump's `set_config('search_path', '', false)` is gone.
        let own = Pg::connect_as(admin_url, &n.pg, password, &n.pg).await?;
        own.batch(seed).await.map_err(|e| match e {
            PgError::Sql(m) => PreviewDataError::Seed(m),
            other => PreviewDataError::Pg(other),
        })?;
    }
    admin.mark_database(&n.pg, &n.marker).await?;
    Ok(())
}

/// Drops the preview's database and role (only codeb's: the role by its marker, the
/// database by its marker or its owner). Idempotent; returns what was dropped.
pub async fn remove_pg(
    admin_url: &Secret,
    n: &PreviewNames,
) -> Result<Vec<String>, PreviewDataError> {
    let admin = Pg::connect(admin_url).await?;
    let mut gone = Vec::new();
    if let Some(d) = admin.database(&n.pg).await?
        && (d.comment.as_deref() == Some(n.marker.as_str()) || d.owner == n.pg)
    {
        admin.drop_database(&n.pg).await?;
        gone.push(format!("database {}", n.pg));
    }
    if let Some(r) = admin.role(&n.pg).await?
        && r.comment.as_deref() == Some(n.marker.as_str())
    {
        admin.drop_role(&n.pg).await?;
        gone.push(format!("role {}", n.pg));
    }
    Ok(gone)
}

/// The previews (`project`, PR) that have a marked role on the server.
pub async fn pg_previews(admin_url: &Secret) -> Result<Vec<(String, u64)>, PreviewDataError> {
    let admin = Pg::connect(admin_url).await?;
    Ok(admin
        .preview_roles()
        .await?
        .into_iter()
        .filter_map(|(_, m)| parse_preview_marker(&m))
        .collect())
}

/// Creates or resets the preview's ACL user (its prefix only, no admin or dangerous
/// command).
pub async fn ensure_redis(
    admin_url: &Secret,
    n: &PreviewNames,
    password: &Secret,
) -> Result<(), PreviewDataError> {
    let mut r = Redis::connect(admin_url).await?;
    r.check_acl().await?;
    r.set_user(&n.redis_user, password, &n.redis_prefix).await?;
    Ok(())
}

/// Deletes the preview's keys (in `dbs`) and its ACL user. Idempotent.
pub async fn remove_redis(
    admin_url: &Secret,
    n: &PreviewNames,
    dbs: &[u8],
) -> Result<Vec<String>, PreviewDataError> {
    let mut r = Redis::connect(admin_url).await?;
    let mut gone = Vec::new();
    let mut keys = 0;
    for db in dbs {
        keys += r.delete_prefix(*db, &n.redis_prefix).await?;
    }
    if keys > 0 {
        gone.push(format!("{keys} Redis keys under {}", n.redis_prefix));
    }
    if r.user(&n.redis_user).await?.is_some() {
        r.delete_user(&n.redis_user).await?;
        gone.push(format!("ACL user {}", n.redis_user));
    }
    Ok(gone)
}

/// The previews (`project` of `projects`, PR) that have an ACL user on the server.
pub async fn redis_previews(
    admin_url: &Secret,
    projects: &[String],
) -> Result<Vec<(String, u64)>, PreviewDataError> {
    let mut r = Redis::connect(admin_url).await?;
    Ok(r.users()
        .await?
        .into_iter()
        .filter_map(|u| {
            let (project, n) = u.rsplit_once(".pr-")?;
            if !projects.iter().any(|p| p == project)
                || n.is_empty()
                || n.starts_with('0')
                || !n.bytes().all(|b| b.is_ascii_digit())
            {
                return None;
            }
            Some((project.to_owned(), n.parse().ok()?))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dump_keeps_its_sql_and_loses_only_restrict_lines() {
        let d = "\\restrict abc\nSET x = 1;\nCREATE TABLE t (id int);\n\\unrestrict abc\n";
        assert_eq!(
            plain_sql(d).expect("plain"),
            "SET x = 1;\nCREATE TABLE t (id int);\n"
        );
        let e = plain_sql("SELECT 1;\n\\! rm -rf /\n").expect_err("meta-command");
        assert!(e.contains("line 2") && e.contains("\\!"), "{e}");
    }
}
