//! PostgreSQL through tokio-postgres, connected with the admin URL from the daemon's config.
//!
//! Identifiers are first checked with [`is_plain_ident`] and then quoted by the server
//! (`SELECT format('... %I ...', $1)`), literals likewise with `%L`: no name or comment is
//! ever spliced into SQL by this code. Passwords are sent only as SCRAM-SHA-256 verifiers
//! computed here, so the plain password never reaches the server or its logs.

use std::time::Duration;

use codeb_secret::Secret;
use tokio_postgres::{Client, NoTls};

use crate::names::is_plain_ident;

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error(
        "PostgreSQL admin URL: {0} (the [api.provision] postgres_admin_url_file holds e.g. postgresql://postgres:PASSWORD@127.0.0.1:5432/postgres)"
    )]
    Url(String),
    #[error("cannot connect to PostgreSQL at {target}: {message}")]
    Connect { target: String, message: String },
    #[error("PostgreSQL: {0}")]
    Sql(String),
    #[error("`{0}` is not an identifier codeb makes ([a-z_][a-z0-9_]*, at most 63)")]
    Ident(String),
}

fn sql(e: tokio_postgres::Error) -> PgError {
    match e.as_db_error() {
        Some(d) => PgError::Sql(format!("{} ({})", d.message(), d.code().code())),
        None => PgError::Sql(e.to_string()),
    }
}

/// Like [`sql`], with the position and detail PostgreSQL gives (for a seed's mistakes).
fn sql_err_detail(e: tokio_postgres::Error) -> PgError {
    match e.as_db_error() {
        Some(d) => {
            let mut m = format!("{} ({})", d.message(), d.code().code());
            if let Some(detail) = d.detail() {
                m.push_str(&format!("; {detail}"));
            }
            if let Some(w) = d.where_() {
                m.push_str(&format!("; where: {w}"));
            }
            if let Some(tokio_postgres::error::ErrorPosition::Original(p)) = d.position() {
                m.push_str(&format!("; at character {p}"));
            }
            PgError::Sql(m)
        }
        None => PgError::Sql(e.to_string()),
    }
}

fn ident(s: &str) -> Result<&str, PgError> {
    if is_plain_ident(s) {
        Ok(s)
    } else {
        Err(PgError::Ident(s.to_owned()))
    }
}

/// What exists of a role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleFacts {
    pub superuser: bool,
    pub createdb: bool,
    pub createrole: bool,
    pub login: bool,
    pub comment: Option<String>,
}

/// What exists of a database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbFacts {
    pub owner: String,
    pub comment: Option<String>,
    /// Whether PUBLIC may connect (the default for a new database).
    pub public_connect: bool,
}

/// A connection as the admin role.
pub struct Pg {
    client: Client,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Pg {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Host and port of a PostgreSQL URL, for messages (never the password).
pub fn url_target(url: &str) -> String {
    match url.parse::<tokio_postgres::Config>() {
        Ok(c) => {
            let host = c
                .get_hosts()
                .first()
                .map(|h| match h {
                    tokio_postgres::config::Host::Tcp(s) => s.clone(),
                    tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
                })
                .unwrap_or_else(|| "localhost".into());
            let port = c.get_ports().first().copied().unwrap_or(5432);
            format!("{host}:{port}")
        }
        Err(_) => "(unparsable URL)".into(),
    }
}

/// The admin URL parsed, with codeb's connect timeout and application name.
fn admin_config(url: &Secret) -> Result<tokio_postgres::Config, PgError> {
    let mut cfg: tokio_postgres::Config = url
        .expose()
        .parse()
        .map_err(|e: tokio_postgres::Error| PgError::Url(e.to_string()))?;
    cfg.connect_timeout(Duration::from_secs(10))
        .application_name("codeb-daemon");
    Ok(cfg)
}

impl Pg {
    /// Connects (10 s timeout) to `url`.
    pub async fn connect(url: &Secret) -> Result<Pg, PgError> {
        let cfg = admin_config(url)?;
        Self::open(cfg, url_target(url.expose())).await
    }

    /// Connects as the admin to `db` instead of the admin URL's database.
    pub async fn connect_to(url: &Secret, db: &str) -> Result<Pg, PgError> {
        let mut cfg = admin_config(url)?;
        cfg.dbname(ident(db)?);
        let target = format!("{} (database {db})", url_target(url.expose()));
        Self::open(cfg, target).await
    }

    /// Connects as `user` with `password` to `db` on the admin URL's server (for running a
    /// preview's schema and seed with that role's privileges only, never the admin's).
    pub async fn connect_as(
        admin: &Secret,
        user: &str,
        password: &Secret,
        db: &str,
    ) -> Result<Pg, PgError> {
        let mut cfg = admin_config(admin)?;
        cfg.user(user).password(password.expose()).dbname(db);
        let target = format!("{} as {user}", url_target(admin.expose()));
        Self::open(cfg, target).await
    }

    /// Connects with `cfg` (10 s timeout) and drives the connection on its own task;
    /// `target` names the server in the error.
    async fn open(cfg: tokio_postgres::Config, target: String) -> Result<Pg, PgError> {
        let (client, conn) = cfg.connect(NoTls).await.map_err(|e| PgError::Connect {
            target,
            message: match e.as_db_error() {
                Some(d) => d.message().to_owned(),
                None => e.to_string(),
            },
        })?;
        let task = tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Pg { client, task })
    }

    /// Runs `sql` (any number of statements, no psql meta-commands) in one simple-protocol
    /// message: without its own BEGIN/COMMIT it is one implicit transaction, all or nothing.
    /// Only for connections made with [`Self::connect_as`]: never untrusted SQL as the admin.
    pub async fn batch(&self, sql: &str) -> Result<(), PgError> {
        self.client.batch_execute(sql).await.map_err(sql_err_detail)
    }

    /// Roles whose comment is a preview marker (`codeb:<project>:pr-<N>`): name, comment.
    pub async fn preview_roles(&self) -> Result<Vec<(String, String)>, PgError> {
        let rows = self
            .client
            .query(
                "SELECT rolname::text, shobj_description(oid, 'pg_authid') FROM pg_roles \
                 WHERE shobj_description(oid, 'pg_authid') LIKE 'codeb:%:pr-%' ORDER BY 1",
                &[],
            )
            .await
            .map_err(sql)?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    pub async fn role(&self, name: &str) -> Result<Option<RoleFacts>, PgError> {
        let row = self
            .client
            .query_opt(
                "SELECT rolsuper, rolcreatedb, rolcreaterole, rolcanlogin, \
                 shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = $1",
                &[&name],
            )
            .await
            .map_err(sql)?;
        Ok(row.map(|r| RoleFacts {
            superuser: r.get(0),
            createdb: r.get(1),
            createrole: r.get(2),
            login: r.get(3),
            comment: r.get(4),
        }))
    }

    pub async fn database(&self, name: &str) -> Result<Option<DbFacts>, PgError> {
        let row = self
            .client
            .query_opt(
                "SELECT pg_get_userbyid(datdba)::text, shobj_description(oid, 'pg_database'), \
                 has_database_privilege('public', oid, 'CONNECT') \
                 FROM pg_database WHERE datname = $1",
                &[&name],
            )
            .await
            .map_err(sql)?;
        Ok(row.map(|r| DbFacts {
            owner: r.get(0),
            comment: r.get(1),
            public_connect: r.get(2),
        }))
    }

    /// Each `(template, idents, literals)` formatted by the server's `format()` (`%I` for
    /// each of `idents`, then `%L` for each of `literals`), all in one round trip.
    async fn format_many(
        &self,
        stmts: &[(&str, &[&str], &[&str])],
    ) -> Result<Vec<String>, PgError> {
        let mut args: Vec<&str> = Vec::new();
        let mut cols = Vec::new();
        for (template, idents, literals) in stmts {
            let first = args.len() + 1;
            args.push(template);
            for i in *idents {
                args.push(ident(i)?);
            }
            args.extend_from_slice(literals);
            let rest: String = (first + 1..=args.len())
                .map(|i| format!(", ${i}::text"))
                .collect();
            cols.push(format!("format(${first}::text{rest})"));
        }
        let q = format!("SELECT {}", cols.join(", "));
        let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = args
            .iter()
            .map(|a| a as &(dyn tokio_postgres::types::ToSql + Sync))
            .collect();
        let row = self.client.query_one(&q, &params).await.map_err(sql)?;
        Ok((0..stmts.len()).map(|i| row.get(i)).collect())
    }

    async fn format(
        &self,
        template: &str,
        idents: &[&str],
        literals: &[&str],
    ) -> Result<String, PgError> {
        let mut v = self.format_many(&[(template, idents, literals)]).await?;
        Ok(v.remove(0))
    }

    async fn exec(
        &self,
        template: &str,
        idents: &[&str],
        literals: &[&str],
    ) -> Result<(), PgError> {
        let stmt = self.format(template, idents, literals).await?;
        self.client.batch_execute(&stmt).await.map_err(sql)
    }

    /// Creates `db` owned by `owner` when `create`, then (in one implicit transaction) puts
    /// the marker on it when `mark` and lets only `owner` connect when `restrict`. CREATE
    /// DATABASE cannot run in a transaction, so a crash between the two leaves a database
    /// owned by codeb's role without the marker: the caller recognises that as an
    /// interrupted creation and completes it.
    pub async fn ensure_database(
        &self,
        db: &str,
        owner: &str,
        marker: &str,
        create: bool,
        mark: bool,
        restrict: bool,
    ) -> Result<(), PgError> {
        let mut t: Vec<(&str, &[&str], &[&str])> = Vec::new();
        let dbo = [db, owner];
        let dbs = [db];
        let m = [marker];
        if create {
            t.push(("CREATE DATABASE %I OWNER %I", &dbo, &[]));
        }
        if mark || create {
            t.push(("COMMENT ON DATABASE %I IS %L", &dbs, &m));
        }
        if restrict || create {
            t.push((
                "REVOKE CONNECT, TEMPORARY ON DATABASE %I FROM PUBLIC",
                &dbs,
                &[],
            ));
            t.push(("GRANT CONNECT, TEMPORARY ON DATABASE %I TO %I", &dbo, &[]));
        }
        if t.is_empty() {
            return Ok(());
        }
        let mut stmts = self.format_many(&t).await?;
        if create {
            let c = stmts.remove(0);
            self.client.batch_execute(&c).await.map_err(sql)?;
        }
        if !stmts.is_empty() {
            self.client
                .batch_execute(&stmts.join("; "))
                .await
                .map_err(sql)?;
        }
        Ok(())
    }

    /// Creates `role` (LOGIN, nothing else) with `password` and the marker comment, in one
    /// transaction: a role is never left without its marker.
    pub async fn create_role(
        &self,
        role: &str,
        password: &Secret,
        marker: &str,
    ) -> Result<(), PgError> {
        let verifier = postgres_protocol::password::scram_sha_256(password.expose().as_bytes());
        let r = [role];
        let v = [verifier.as_str()];
        let m = [marker];
        let stmts = self
            .format_many(&[
                (
                    "CREATE ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD %L",
                    &r,
                    &v,
                ),
                ("COMMENT ON ROLE %I IS %L", &r, &m),
            ])
            .await?;
        let (create, comment) = (&stmts[0], &stmts[1]);
        // One simple-protocol message with two statements runs as one implicit transaction.
        self.client
            .batch_execute(&format!("{create}; {comment}"))
            .await
            .map_err(sql)
    }

    /// Sets `role`'s password (as its SCRAM verifier) and makes sure it holds no privilege
    /// beyond LOGIN.
    pub async fn set_password(&self, role: &str, password: &Secret) -> Result<(), PgError> {
        let verifier = postgres_protocol::password::scram_sha_256(password.expose().as_bytes());
        self.exec(
            "ALTER ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD %L",
            &[role],
            &[&verifier],
        )
        .await
    }

    /// Creates `db` owned by `owner`. CREATE DATABASE cannot run in a transaction, so the
    /// marker comes in a second statement: a database owned by codeb's role without the
    /// marker is recognised as an interrupted creation and completed by [`Self::mark_database`].
    pub async fn create_database(&self, db: &str, owner: &str) -> Result<(), PgError> {
        self.exec("CREATE DATABASE %I OWNER %I", &[db, owner], &[])
            .await
    }

    pub async fn mark_database(&self, db: &str, marker: &str) -> Result<(), PgError> {
        self.exec("COMMENT ON DATABASE %I IS %L", &[db], &[marker])
            .await
    }

    /// Only `role` (and superusers) may connect to `db`.
    pub async fn restrict_connect(&self, db: &str, role: &str) -> Result<(), PgError> {
        self.exec(
            "REVOKE CONNECT, TEMPORARY ON DATABASE %I FROM PUBLIC",
            &[db],
            &[],
        )
        .await?;
        self.exec(
            "GRANT CONNECT, TEMPORARY ON DATABASE %I TO %I",
            &[db, role],
            &[],
        )
        .await
    }

    /// Gives `staging_db`, which `prod_role` owns (a project provisioned before staging had
    /// a role of its own), and everything in it to `staging_role`, and lets only
    /// `staging_role` connect to it. `self` must be connected to `staging_db` (REASSIGN
    /// OWNED works on the current database). Runs as one transaction: REASSIGN OWNED also
    /// moves the databases `prod_role` owns, so `prod_db` is given back within it and no
    /// other session ever sees production changed (its ACL comes back as it was, since
    /// `staging_role` held no privilege on it).
    pub async fn move_staging_database(
        &self,
        staging_db: &str,
        staging_role: &str,
        prod_db: &str,
        prod_role: &str,
    ) -> Result<(), PgError> {
        let sdb_srole = [staging_db, staging_role];
        let prole_srole = [prod_role, staging_role];
        let pdb_prole = [prod_db, prod_role];
        let sdb_prole = [staging_db, prod_role];
        let sdb = [staging_db];
        let stmts = self
            .format_many(&[
                ("ALTER DATABASE %I OWNER TO %I", &sdb_srole, &[]),
                ("REASSIGN OWNED BY %I TO %I", &prole_srole, &[]),
                ("ALTER DATABASE %I OWNER TO %I", &pdb_prole, &[]),
                (
                    "REVOKE CONNECT, TEMPORARY ON DATABASE %I FROM PUBLIC",
                    &sdb,
                    &[],
                ),
                ("REVOKE ALL ON DATABASE %I FROM %I", &sdb_prole, &[]),
                (
                    "GRANT CONNECT, TEMPORARY ON DATABASE %I TO %I",
                    &sdb_srole,
                    &[],
                ),
            ])
            .await?;
        self.client
            .batch_execute(&stmts.join("; "))
            .await
            .map_err(sql)
    }

    /// Drops `db` (disconnecting its sessions) if it exists.
    pub async fn drop_database(&self, db: &str) -> Result<(), PgError> {
        self.exec("DROP DATABASE IF EXISTS %I WITH (FORCE)", &[db], &[])
            .await
    }

    pub async fn drop_role(&self, role: &str) -> Result<(), PgError> {
        self.exec("DROP ROLE IF EXISTS %I", &[role], &[]).await
    }

    /// Creates `db` from `template` (its schema and data), owned by `owner`. The template
    /// must have no other sessions.
    pub async fn create_database_from(
        &self,
        db: &str,
        template: &str,
        owner: &str,
    ) -> Result<(), PgError> {
        self.exec(
            "CREATE DATABASE %I TEMPLATE %I OWNER %I",
            &[db, template, owner],
            &[],
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn url_target_names_host_and_port_without_the_password() {
        let t = super::url_target("postgresql://admin:hunter2@db.example:6543/postgres");
        assert_eq!(t, "db.example:6543");
        assert!(!t.contains("hunter2"));
    }
}
