//! A project's restore to a point in time. PITR restores whole clusters, so:
//!
//! 1. `pgbackrest check` on the live cluster (the current WAL reaches the archive);
//! 2. `pgbackrest restore --type=time` into a scratch data directory, started on a free
//!    port with a socket of its own, archiving off, promoted at the target;
//! 3. `pg_dump -Fc` of the project's database from it (SHA-256 checked before use);
//! 4. a new database `<project>_db_restored_<stamp>` owned by `<project>_user`, filled by
//!    `pg_restore --no-owner --role=<project>_user` one section at a time (pre-data, data,
//!    post-data; never parallel), each `--single-transaction --exit-on-error`;
//! 5. verified: the same tables with the same row counts as the scratch copy;
//! 6. with `--into <project>_db --yes`: the live database's connections are closed and it is
//!    renamed `<project>_db_old_<stamp>` (kept), the restored one takes its name;
//! 7. then, when the project has a running release (the deploy history's active slot), the
//!    app itself must answer: its health endpoint, probed with the deploy engine's health
//!    checker, gives two healthy answers in a row within `deploy.health_deadline`. If it
//!    answered healthy before the swap and does not after, the swap is undone (the old
//!    database is live again, the restored copy kept as `<project>_db_restored_<stamp>`) and
//!    the restore fails naming the health failure.
//!
//! [`restore_locked`] holds the project's deploy lock (the one deploys take) for the whole
//! run; the daemon takes the same lock itself and calls [`restore`].
//!
//! The scratch instance and its directory are removed whatever happens; a failed restore
//! drops the half-made database and never touches the live one.

use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, NaiveTime, TimeZone, Utc};
use serde::Serialize;

use crate::catalog::{Catalog, Outcome};
use crate::config::{Config, Kind};
use crate::pg::{self, Conn, Tools, ident, literal};
use crate::pitr::{self, live};
use crate::{Error, Progress};

/// Where the restored data comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// pgBackRest point-in-time recovery (the default).
    Pitr,
    /// The newest good daily dump at or before the target, its checksum verified.
    Dump,
}

#[derive(Debug, Clone)]
pub struct Request {
    pub project: String,
    pub date: String,
    pub time: Option<String>,
    pub into: Option<String>,
    pub dry_run: bool,
    pub yes: bool,
    pub source: Source,
}

/// The point to restore to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "at", rename_all = "lowercase")]
pub enum Target {
    /// A time (UTC).
    Time(DateTime<Utc>),
    /// The end of the archive (the date is today).
    Latest,
}

/// What a restore will do (`--dry-run` prints it) or did.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub project: String,
    pub source: Source,
    pub target: Target,
    /// The restorable range (UTC, RFC 3339).
    pub range_from: String,
    pub range_to: String,
    pub source_database: String,
    /// The database the restore creates (then renamed when replacing).
    pub database: String,
    /// Set when the live database is replaced: its new name (kept until dropped by hand).
    pub replaced: Option<String>,
    pub owner: String,
    pub dry_run: bool,
    /// Tables and their row counts, verified equal to the source.
    pub tables: Vec<(String, i64)>,
    pub dump_sha256: Option<String>,
    pub dump_bytes: Option<u64>,
    /// The pgBackRest backup or dump the restore starts from.
    pub from: String,
    /// The running release whose health proves a replaced database (none: not deployed, or
    /// the live database is not replaced).
    pub release: Option<crate::release::Running>,
    /// What its health endpoint answered before the swap.
    pub health_before: Option<crate::release::Health>,
    /// What it answered after the swap (healthy: the proof).
    pub health: Option<crate::release::Health>,
    pub warnings: Vec<String>,
}

/// Parses `--date YYYY-MM-DD` and `--time HH:MM[:SS]` (UTC).
pub fn parse_when(date: &str, time: Option<&str>) -> Result<(NaiveDate, Option<NaiveTime>), Error> {
    let d = (date.len() == 10)
        .then(|| NaiveDate::parse_from_str(date, "%Y-%m-%d").ok())
        .flatten()
        .ok_or_else(|| {
            Error::Usage(format!(
                "--date {date:?} is not a date: write YYYY-MM-DD, e.g. --date 2024-12-20"
            ))
        })?;
    let t = match time {
        None => None,
        Some(t) => Some(
            NaiveTime::parse_from_str(t, "%H:%M")
                .or_else(|_| NaiveTime::parse_from_str(t, "%H:%M:%S"))
                .ok()
                .filter(|_| t.len() == 5 || t.len() == 8)
                .ok_or_else(|| {
                    Error::Usage(format!(
                        "--time {t:?} is not a time of day: write HH:MM (24h, UTC), e.g. --time 14:30"
                    ))
                })?,
        ),
    };
    Ok((d, t))
}

/// The target for the request within `[from, now]`; refuses outside it naming the range.
pub fn resolve_target(
    date: NaiveDate,
    time: Option<NaiveTime>,
    from: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Target, Error> {
    let out_of_range = |what: String| {
        Error::OutOfRange(format!(
            "{what} is outside the restorable range {} to {} (UTC); pick a date in it",
            from.format("%Y-%m-%d %H:%M:%S"),
            now.format("%Y-%m-%d %H:%M:%S")
        ))
    };
    match time {
        Some(t) => {
            let at = Utc.from_utc_datetime(&date.and_time(t));
            if at < from || at > now {
                return Err(out_of_range(format!("{}", at.format("%Y-%m-%d %H:%M:%S"))));
            }
            Ok(Target::Time(at))
        }
        None => {
            if date < from.date_naive() || date > now.date_naive() {
                return Err(out_of_range(format!("{date}")));
            }
            if date == now.date_naive() {
                return Ok(Target::Latest);
            }
            let end = date
                .and_hms_micro_opt(23, 59, 59, 999_999)
                .ok_or_else(|| Error::Usage(format!("{date} has no end of day")))?;
            Ok(Target::Time(Utc.from_utc_datetime(&end)))
        }
    }
}

fn pg_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string()
}

fn valid_db_name(n: &str) -> bool {
    (1..=63).contains(&n.len())
        && n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !n.starts_with(|c: char| c.is_ascii_digit())
}

/// [`restore`] while holding the project's deploy lock (waiting up to `lock_timeout` for a
/// deploy of it to finish, then failing naming the holder); `holder` is what a deploy that
/// waits for this restore is told.
pub fn restore_locked(
    cfg: &Config,
    catalog: &Catalog,
    req: &Request,
    progress: &dyn Progress,
    lock_timeout: Duration,
    holder: &str,
) -> Result<Report, Error> {
    pg::check_project(&req.project).map_err(Error::Usage)?;
    progress.step(&format!(
        "taking the deploy lock of {} (waiting up to {}s)",
        crate::release::unit(&req.project),
        lock_timeout.as_secs()
    ));
    let _lock = crate::release::lock(cfg, &req.project, lock_timeout, holder)?;
    restore(cfg, catalog, req, progress)
}

/// Plans and (unless `dry_run`) runs a restore. The caller holds the project's deploy lock.
pub fn restore(
    cfg: &Config,
    catalog: &Catalog,
    req: &Request,
    progress: &dyn Progress,
) -> Result<Report, Error> {
    pg::check_project(&req.project).map_err(Error::Usage)?;
    let (date, time) = parse_when(&req.date, req.time.as_deref())?;
    let tools = Tools::new(cfg);
    let conn = live(cfg);
    let source_db = pg::project_database(&req.project);
    let owner = pg::project_role(&req.project);
    if !conn.database_exists(&tools, &source_db)? {
        return Err(Error::NoDatabase {
            project: req.project.clone(),
            database: source_db,
        });
    }
    if !conn.role_exists(&tools, &owner)? {
        return Err(Error::Failed(format!(
            "project {} has no role {owner} on the cluster (`we workflow init` creates it)",
            req.project
        )));
    }
    let now = Utc::now();
    let stamp = now.format("%Y%m%d%H%M%S").to_string();
    let staging = format!("{source_db}_restored_{stamp}");
    // Where the restore ends up, and whether the live database is replaced.
    let (database, replace) = match &req.into {
        None => (staging.clone(), false),
        Some(n) if !valid_db_name(n) => {
            return Err(Error::Usage(format!(
                "--into {n:?} is not a database name codeb uses: [a-z0-9_], 1-63 characters, e.g. --into {source_db}"
            )));
        }
        Some(n) if *n == source_db => {
            if !req.yes && !req.dry_run {
                return Err(Error::Usage(format!(
                    "--into {n} replaces the live database of {}: add --yes (the old one is kept as {source_db}_old_{stamp})",
                    req.project
                )));
            }
            (n.clone(), true)
        }
        Some(n) => {
            if conn.database_exists(&tools, n)? {
                return Err(Error::Usage(format!(
                    "--into {n}: that database exists; give a new name, or --into {source_db} --yes to replace the live one"
                )));
            }
            (n.clone(), false)
        }
    };
    if staging.len() > 63 {
        return Err(Error::Usage(format!(
            "the restore database name {staging} is longer than PostgreSQL's 63 characters; pass --into <shorter name>"
        )));
    }

    let mut warnings = Vec::new();
    let (from_time, from_label, dump_run) = match req.source {
        Source::Pitr => {
            let info = pitr::info(cfg)?;
            let oldest = info.backup.first().ok_or_else(|| {
                Error::OutOfRange(format!(
                    "the repository holds no backup of stanza {} yet: run `codeb-backup backup --type full` first",
                    cfg.stanza
                ))
            })?;
            let from = Utc
                .timestamp_opt(oldest.timestamp.stop, 0)
                .single()
                .ok_or_else(|| Error::Failed("pgbackrest info has a bad timestamp".into()))?;
            (from, oldest.label.clone(), None)
        }
        Source::Dump => {
            let runs = catalog.list(Some(Kind::Dump), Some(&source_db), 10_000)?;
            let good: Vec<_> = runs
                .into_iter()
                .filter(|r| r.result == "ok" && r.location.is_some() && r.sha256.is_some())
                .collect();
            let oldest = good.last().ok_or_else(|| {
                Error::OutOfRange(format!("no good dump of {source_db} is recorded"))
            })?;
            let from = Utc
                .timestamp_millis_opt(oldest.ended_ms.unwrap_or(oldest.started_ms))
                .single()
                .ok_or_else(|| Error::Failed("bad dump time in the catalog".into()))?;
            (from, String::new(), Some(good))
        }
    };
    let target = resolve_target(date, time, from_time, now)?;
    // The release whose health proves a replaced database.
    let running = if replace {
        match crate::release::running(cfg, &req.project) {
            Ok(r) => r,
            Err(e) => {
                warnings.push(format!(
                    "the app's health cannot be checked after the restore: {e}"
                ));
                None
            }
        }
    } else {
        None
    };
    let mut report = Report {
        project: req.project.clone(),
        source: req.source,
        target,
        range_from: from_time.to_rfc3339(),
        range_to: now.to_rfc3339(),
        source_database: source_db.clone(),
        database: database.clone(),
        replaced: replace.then(|| format!("{source_db}_old_{stamp}")),
        owner: owner.clone(),
        dry_run: req.dry_run,
        tables: Vec::new(),
        dump_sha256: None,
        dump_bytes: None,
        from: from_label,
        release: running.clone(),
        health_before: None,
        health: None,
        warnings: Vec::new(),
    };
    // The dump to restore from, for `Source::Dump`: the newest at or before the target.
    let chosen_dump = dump_run.map(|good| {
        let limit = match target {
            Target::Time(t) => t.timestamp_millis(),
            Target::Latest => i64::MAX,
        };
        good.into_iter()
            .find(|r| r.ended_ms.unwrap_or(r.started_ms) <= limit)
    });
    if let Some(d) = &chosen_dump {
        match d {
            Some(r) => report.from = r.location.clone().unwrap_or_default(),
            None => {
                return Err(Error::OutOfRange(format!(
                    "no dump of {source_db} was taken at or before the target"
                )));
            }
        }
    }
    if req.dry_run {
        report.warnings = warnings;
        return Ok(report);
    }

    let run_id = catalog.start(Kind::Restore, &req.project)?;
    let result = (|| -> Result<(), Error> {
        let scratch = Scratch::create(cfg, &tools)?;
        let dump_path = scratch.dir.join("source.dump");
        let mut source_tables = None;
        match (&chosen_dump, req.source) {
            (Some(Some(r)), Source::Dump) => {
                let loc = PathBuf::from(r.location.clone().unwrap_or_default());
                let want = r.sha256.clone().unwrap_or_default();
                progress.step(&format!("verifying {} (sha256 {want})", loc.display()));
                crate::dump::verify(&loc, &want)?;
                std::fs::copy(&loc, &dump_path)?;
                pg::chown_to(&tools, &dump_path)?;
                crate::dump::verify(&dump_path, &want)?;
                report.dump_sha256 = Some(want);
            }
            _ => {
                progress
                    .step("pgbackrest check: the live cluster's current WAL reaches the archive");
                if let Err(e) = pg::run("pgbackrest check", tools.pgbackrest().arg("check")) {
                    warnings.push(format!(
                        "pgbackrest check failed, so the newest WAL may be missing from the archive: {e}"
                    ));
                }
                let t = match target {
                    Target::Time(t) => Some(pg_time(t)),
                    Target::Latest => None,
                };
                progress.step(&format!(
                    "pgbackrest restore into a scratch cluster ({})",
                    t.as_deref().unwrap_or("end of the archive")
                ));
                pitr::restore_into(&tools, &scratch.data, t.as_deref(), false)?;
                let inst = match scratch.start(cfg, &tools) {
                    Ok(i) => i,
                    Err(StartError::BeforeTarget(log)) => {
                        // No commit after the target in the archive: the end of the archive
                        // is the state at the target.
                        warnings.push(format!(
                            "the archive ends before the target ({}); restored to its end, which holds every transaction committed before the target",
                            pg::last_lines(&log, 1)
                        ));
                        pitr::restore_into(&tools, &scratch.data, None, true)?;
                        scratch.start(cfg, &tools).map_err(StartError::into_error)?
                    }
                    Err(e) => return Err(e.into_error()),
                };
                if !inst.conn.database_exists(&tools, &source_db)? {
                    return Err(Error::Failed(format!(
                        "{source_db} did not exist at the target time; pick a later time"
                    )));
                }
                progress.step(&format!("pg_dump -Fc {source_db} from the scratch cluster"));
                let dumped = crate::dump::dump_to(&tools, &inst.conn, &source_db, &dump_path)?;
                pg::chown_to(&tools, &dump_path)?;
                crate::dump::verify(&dump_path, &dumped.sha256)?;
                report.dump_sha256 = Some(dumped.sha256);
                report.dump_bytes = Some(dumped.size_bytes);
                source_tables = Some(table_counts(&tools, &inst.conn, &source_db)?);
                drop(inst);
            }
        }
        progress.step(&format!("creating {staging} owned by {owner}"));
        let enc = conn.psql(
            &tools,
            "postgres",
            &format!(
                "SELECT pg_encoding_to_char(encoding), datcollate, datctype FROM pg_database WHERE datname = {}",
                literal(&source_db)
            ),
        )?;
        let f: Vec<&str> = enc.split('\t').collect();
        let (e, coll, ctype) = (
            f.first().copied().unwrap_or("UTF8"),
            f.get(1).copied().unwrap_or("C"),
            f.get(2).copied().unwrap_or("C"),
        );
        conn.psql(
            &tools,
            "postgres",
            &format!(
                "CREATE DATABASE {} OWNER {} TEMPLATE template0 ENCODING {} LC_COLLATE {} LC_CTYPE {}",
                ident(&staging),
                ident(&owner),
                literal(e),
                literal(coll),
                literal(ctype)
            ),
        )?;
        let filled = (|| -> Result<Vec<(String, i64)>, Error> {
            for section in ["pre-data", "data", "post-data"] {
                progress.step(&format!("pg_restore --section={section}"));
                pg::run(
                    &format!("pg_restore --section={section} into {staging}"),
                    tools
                        .command("pg_restore")
                        .args(conn.args())
                        .arg("-d")
                        .arg(&staging)
                        .args(["--no-owner", "--exit-on-error", "--single-transaction"])
                        .arg(format!("--role={owner}"))
                        .arg(format!("--section={section}"))
                        .arg(&dump_path),
                )?;
            }
            let got = table_counts(&tools, &conn, &staging)?;
            if let Some(want) = &source_tables
                && *want != got
            {
                return Err(Error::Failed(format!(
                    "the restored database does not match the scratch copy (tables and row counts): want {want:?}, got {got:?}"
                )));
            }
            Ok(got)
        })();
        match filled {
            Ok(t) => report.tables = t,
            Err(e) => {
                let _ = conn.psql(
                    &tools,
                    "postgres",
                    &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", ident(&staging)),
                );
                return Err(e);
            }
        }
        if replace {
            let old = report.replaced.clone().unwrap_or_default();
            if let Some(r) = &running {
                progress.step(&format!(
                    "the running release {} ({} slot): probing {}",
                    r.image, r.slot, r.url
                ));
                report.health_before = Some(crate::release::probe_once(&r.url)?);
            }
            progress.step(&format!(
                "closing connections to {source_db}, renaming it {old}, {staging} becomes {source_db}"
            ));
            swap(&tools, &conn, &source_db, &old, &staging)?;
            if let Some(r) = &running {
                let deadline = cfg.health_deadline();
                progress.step(&format!(
                    "waiting up to {}s for {} to answer healthy with the restored database",
                    deadline.as_secs(),
                    r.url
                ));
                let after = crate::release::wait_healthy(&r.url, deadline)?;
                let was_healthy = report.health_before.as_ref().is_some_and(|h| h.healthy);
                let failure = after.failure.clone().unwrap_or_default();
                report.health = Some(after.clone());
                if !after.healthy {
                    if was_healthy {
                        progress.step(&format!(
                            "{} is not healthy ({failure}): putting {old} back as {source_db}",
                            r.url
                        ));
                        swap(&tools, &conn, &source_db, &staging, &old)?;
                        return Err(Error::Failed(format!(
                            "the running release {} answered healthy at {} before the restore but not within {}s after it ({failure}); the previous database is live again as {source_db}, the restored copy is kept as {staging}",
                            r.image,
                            r.url,
                            deadline.as_secs()
                        )));
                    }
                    warnings.push(format!(
                        "the running release {} was not healthy at {} before the restore and is not after it ({failure}); the restored database stays live, the old one is kept as {old}",
                        r.image, r.url
                    ));
                } else {
                    progress.step(&format!(
                        "{} answers healthy with the restored database",
                        r.url
                    ));
                }
            }
        } else if database != staging {
            conn.psql(
                &tools,
                "postgres",
                &format!(
                    "ALTER DATABASE {} RENAME TO {}",
                    ident(&staging),
                    ident(&database)
                ),
            )?;
        }
        Ok(())
    })();
    report.warnings = warnings;
    match result {
        Ok(()) => {
            catalog.finish(
                run_id,
                true,
                &Outcome {
                    size_bytes: report.dump_bytes.and_then(|b| i64::try_from(b).ok()),
                    sha256: report.dump_sha256.clone(),
                    location: Some(report.database.clone()),
                    message: Some(format!("restored to {:?}", report.target)),
                },
            )?;
            Ok(report)
        }
        Err(e) => {
            catalog.finish(
                run_id,
                false,
                &Outcome {
                    message: Some(e.to_string()),
                    ..Outcome::default()
                },
            )?;
            Err(e)
        }
    }
}

/// Replaces `live` with `restored`, keeping the old one as `old`. New connections to the
/// live database are refused first, then the open ones are closed.
fn swap(tools: &Tools, conn: &Conn, live_db: &str, old: &str, restored: &str) -> Result<(), Error> {
    conn.psql(
        tools,
        "postgres",
        &format!(
            "ALTER DATABASE {} WITH ALLOW_CONNECTIONS false",
            ident(live_db)
        ),
    )?;
    let mut last = None;
    for _ in 0..50 {
        conn.psql(
            tools,
            "postgres",
            &format!(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = {} AND pid <> pg_backend_pid()",
                literal(live_db)
            ),
        )?;
        std::thread::sleep(Duration::from_millis(100));
        match conn.psql(
            tools,
            "postgres",
            &format!(
                "BEGIN; ALTER DATABASE {l} RENAME TO {o}; ALTER DATABASE {r} RENAME TO {l}; COMMIT;",
                l = ident(live_db),
                o = ident(old),
                r = ident(restored)
            ),
        ) {
            Ok(_) => {
                conn.psql(
                    tools,
                    "postgres",
                    &format!("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true", ident(old)),
                )?;
                return Ok(());
            }
            Err(e) => last = Some(e),
        }
    }
    let _ = conn.psql(
        tools,
        "postgres",
        &format!(
            "ALTER DATABASE {} WITH ALLOW_CONNECTIONS true",
            ident(live_db)
        ),
    );
    Err(last.unwrap_or_else(|| Error::Failed("cannot rename the live database".into())))
}

/// Every user table with its exact row count, sorted.
pub fn table_counts(tools: &Tools, conn: &Conn, db: &str) -> Result<Vec<(String, i64)>, Error> {
    let out = conn.psql(
        tools,
        db,
        "SELECT n.nspname || '.' || c.relname,
           (xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM %I.%I', n.nspname, c.relname), false, true, '')))[1]::text::bigint
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
           AND n.nspname NOT LIKE 'pg_toast%'
         ORDER BY 1",
    )?;
    out.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (t, n) = l
                .split_once('\t')
                .ok_or_else(|| Error::Failed(format!("unexpected row {l:?}")))?;
            Ok((
                t.to_owned(),
                n.trim()
                    .parse()
                    .map_err(|_| Error::Failed(format!("unexpected count {n:?}")))?,
            ))
        })
        .collect()
}

/// A scratch directory for the restored cluster (removed on drop).
struct Scratch {
    dir: PathBuf,
    data: PathBuf,
    _tmp: tempfile::TempDir,
}

enum StartError {
    /// PostgreSQL stopped: the archive ends before the recovery target.
    BeforeTarget(String),
    Other(Error),
}

impl StartError {
    fn into_error(self) -> Error {
        match self {
            StartError::BeforeTarget(log) => Error::Failed(format!(
                "the scratch cluster's recovery ended before the target: {}",
                pg::last_lines(&log, 3)
            )),
            StartError::Other(e) => e,
        }
    }
}

impl From<std::io::Error> for StartError {
    fn from(e: std::io::Error) -> Self {
        StartError::Other(e.into())
    }
}

impl From<Error> for StartError {
    fn from(e: Error) -> Self {
        StartError::Other(e)
    }
}

impl Scratch {
    fn create(cfg: &Config, tools: &Tools) -> Result<Scratch, Error> {
        std::fs::create_dir_all(&cfg.scratch_dir)?;
        let tmp = tempfile::Builder::new()
            .prefix("codeb-restore-")
            .tempdir_in(&cfg.scratch_dir)?;
        let dir = tmp.path().to_owned();
        let data = dir.join("data");
        std::fs::create_dir(&data)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700))?;
        pg::chown_to(tools, &dir)?;
        pg::chown_to(tools, &data)?;
        Ok(Scratch {
            dir,
            data,
            _tmp: tmp,
        })
    }

    /// Starts the restored cluster on a free port with its socket in the scratch directory,
    /// no TCP, archiving off; waits until recovery has promoted it.
    fn start(&self, _cfg: &Config, tools: &Tools) -> Result<Instance, StartError> {
        let port = pg::free_port()?;
        let hba = self.dir.join("pg_hba.conf");
        let ident_file = self.dir.join("pg_ident.conf");
        let conf = self.dir.join("postgresql.conf");
        // Only the cluster's user can reach the socket (the directory is 0700).
        std::fs::write(&hba, "local all all trust\n")?;
        std::fs::write(&ident_file, "")?;
        if !self.data.join("postgresql.conf").exists() {
            std::fs::write(&conf, "")?;
        }
        for p in [&hba, &ident_file] {
            pg::chown_to(tools, p)?;
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700))?;
        let log = self.dir.join("postgres.log");
        let logf = std::fs::File::create(&log)?;
        pg::chown_to(tools, &log)?;
        let mut c = tools.command("postgres").arg("-D").arg(&self.data);
        if conf.exists() {
            c = c.arg("-c").arg(format!("config_file={}", conf.display()));
        }
        for s in [
            format!("port={port}"),
            format!("unix_socket_directories={}", self.dir.display()),
            "listen_addresses=".into(),
            "archive_mode=off".into(),
            "hot_standby=off".into(),
            format!("hba_file={}", hba.display()),
            format!("ident_file={}", ident_file.display()),
            "logging_collector=off".into(),
            "max_wal_senders=0".into(),
            "wal_level=replica".into(),
            "fsync=off".into(),
            "synchronous_commit=off".into(),
        ] {
            c = c.arg("-c").arg(s);
        }
        let child = c
            .spawn_logged(logf)
            .map_err(|e| Error::Failed(format!("cannot start the scratch PostgreSQL: {e}")))?;
        let mut inst = Instance {
            child: Some(child),
            data: self.data.clone(),
            tools: tools.clone(),
            conn: Conn {
                socket: self.dir.clone(),
                port,
            },
        };
        let start = Instant::now();
        loop {
            if let Some(ch) = inst.child.as_mut()
                && let Ok(Some(status)) = ch.try_wait()
            {
                inst.child = None;
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                if text.contains("recovery ended before configured recovery target was reached") {
                    return Err(StartError::BeforeTarget(text));
                }
                return Err(StartError::Other(Error::Failed(format!(
                    "the scratch PostgreSQL stopped ({status}): {}",
                    pg::last_lines(&text, 5)
                ))));
            }
            if let Ok(s) = inst
                .conn
                .psql(tools, "postgres", "SELECT pg_is_in_recovery()")
                && s.trim() == "f"
            {
                return Ok(inst);
            }
            if start.elapsed() > Duration::from_secs(6 * 3600) {
                return Err(StartError::Other(Error::Failed(
                    "the scratch cluster did not finish recovery in 6h".into(),
                )));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// A running scratch PostgreSQL; stopped on drop.
struct Instance {
    child: Option<Child>,
    data: PathBuf,
    tools: Tools,
    conn: Conn,
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Some(mut ch) = self.child.take() {
            let _ = self
                .tools
                .command("pg_ctl")
                .arg("-D")
                .arg(&self.data)
                .args(["-m", "immediate", "-w", "stop"])
                .timeout(std::time::Duration::from_secs(60))
                .output_blocking();
            if !matches!(ch.try_wait(), Ok(Some(_))) {
                let _ = ch.kill();
            }
            let _ = ch.wait();
        }
    }
}

/// Exposed for the CLI's dry-run display.
pub fn describe(target: &Target) -> String {
    match target {
        Target::Time(t) => format!("{} UTC", t.format("%Y-%m-%d %H:%M:%S")),
        Target::Latest => "the end of the archive (latest point today)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("rfc3339")
            .with_timezone(&Utc)
    }

    #[test]
    fn dates_and_times_are_parsed_strictly_with_an_example() {
        assert!(parse_when("2024-12-20", Some("14:30")).is_ok());
        for bad in ["20-12-2024", "2024-12-32", "2024-1-2", "yesterday", ""] {
            let e = parse_when(bad, None).expect_err(bad).to_string();
            assert!(e.contains("--date 2024-12-20"), "{e}");
        }
        for bad in ["2pm", "25:00", "14:3", "14.30"] {
            let e = parse_when("2024-12-20", Some(bad))
                .expect_err(bad)
                .to_string();
            assert!(e.contains("--time 14:30"), "{e}");
        }
    }

    #[test]
    fn targets_inside_the_range_and_refusals_name_it() {
        let from = utc("2024-12-18T03:00:00Z");
        let now = utc("2024-12-21T10:00:00Z");
        let d = |s| NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("date");
        assert_eq!(
            resolve_target(d("2024-12-20"), None, from, now).expect("ok"),
            Target::Time(utc("2024-12-20T23:59:59.999999Z"))
        );
        assert_eq!(
            resolve_target(d("2024-12-21"), None, from, now).expect("ok"),
            Target::Latest
        );
        let t = NaiveTime::from_hms_opt(14, 30, 0);
        assert_eq!(
            resolve_target(d("2024-12-20"), t, from, now).expect("ok"),
            Target::Time(utc("2024-12-20T14:30:00Z"))
        );
        for (date, time) in [
            ("2024-12-17", None),
            ("2024-12-22", None),
            ("2024-12-18", NaiveTime::from_hms_opt(2, 0, 0)),
        ] {
            let e = resolve_target(d(date), time, from, now)
                .expect_err(date)
                .to_string();
            assert!(
                e.contains("2024-12-18 03:00:00 to 2024-12-21 10:00:00"),
                "{e}"
            );
        }
    }
}
