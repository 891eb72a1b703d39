//! `codeb-backup`: what the systemd timers run (setup, check, backup, dump, files) and the
//! host-side restore. Exit codes: 0 ok, 1 a backup/check/restore failed, 2 bad input.
#![allow(clippy::print_stdout, clippy::print_stderr)] // the binary's one output path

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use codeb_backup::restore::{Request, Source};
use codeb_backup::{Catalog, Config, Error, Kind, Progress};

#[derive(Parser)]
#[command(
    name = "codeb-backup",
    version,
    about = "codeb's backups: pgBackRest WAL archiving and point-in-time restore, daily pg_dump per project, weekly codeb state",
    long_about = "codeb's backups, driving pgBackRest, pg_dump and pg_restore.\n\n\
        Every run is recorded in the catalog (start, end, size, checksum, result); `codeb-backup health` \
        fails when a kind's last good backup is older than its schedule allows. The systemd timers in \
        templates/systemd/ run these commands (Persistent=true: a missed run happens at boot).\n\n\
        Exit codes: 0 ok, 1 a backup, check or restore failed, 2 bad input."
)]
struct Cli {
    /// The backup config.
    #[arg(long, global = true, env = codeb_core::vars::CODEB_BACKUP_CONFIG, default_value = codeb_backup::config::DEFAULT_PATH)]
    config: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Write pgBackRest's config and PostgreSQL's archive settings, create the stanza, check.
    Setup {
        /// Restart PostgreSQL (pg_ctl) when archive_mode needs it.
        #[arg(long)]
        restart: bool,
    },
    /// `pgbackrest check`: a WAL switch reaches the repository (hourly timer).
    Check,
    /// A pgBackRest backup (full weekly, diff daily).
    Backup {
        #[arg(long = "type", value_enum)]
        kind: BackupType,
    },
    /// `pg_dump -Fc` of each project database (the config's `projects`, or --project).
    Dump {
        #[arg(long = "project")]
        projects: Vec<String>,
    },
    /// Copy codeb's state (registry database, /etc/codeb, ...) to the backup host.
    Files,
    /// Restore a project's database to a point in time (UTC) into a new database.
    #[command(
        after_help = "Examples:\n  codeb-backup restore shop --date 2024-12-20 --time 14:30\n  codeb-backup restore shop --date 2024-12-20 --into shop_db --yes"
    )]
    Restore {
        project: String,
        /// The day, YYYY-MM-DD (UTC). Alone: the latest point of that day.
        #[arg(long)]
        date: String,
        /// The time of day, HH:MM (UTC).
        #[arg(long)]
        time: Option<String>,
        /// The database to restore into; `<project>_db` with --yes replaces the live one.
        #[arg(long)]
        into: Option<String>,
        /// Restore from the daily dump instead of the WAL archive.
        #[arg(long, value_enum, default_value = "pitr")]
        from: From,
        /// Print the plan only.
        #[arg(long)]
        dry_run: bool,
        /// Confirm replacing the live database.
        #[arg(long)]
        yes: bool,
        /// Wait this long for a deploy of the project to finish (it holds the deploy lock)
        /// [default: the config's deploy.lock_timeout, 30s]
        #[arg(long, value_name = "DURATION")]
        lock_timeout: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Put a project volume back from a file-system backup (checksum checked, `podman volume
    /// import` into a new or empty volume).
    #[command(
        after_help = "Examples:\n  codeb-backup restore-volume shop-uploads\n  codeb-backup restore-volume shop-uploads --into shop-uploads-restored --from /srv/n4/files/20241220T030000.000Z"
    )]
    RestoreVolume {
        volume: String,
        /// The backup directory [default: the newest good file-system backup]
        #[arg(long, value_name = "DIR")]
        from: Option<PathBuf>,
        /// The volume to restore into [default: the same name; it must be absent or empty]
        #[arg(long, value_name = "VOLUME")]
        into: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// The recorded runs, newest first.
    List {
        /// Only this project's dumps and restores.
        #[arg(long)]
        project: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// The age of the last good backup per kind; exit 1 when one is too old or failed.
    Health {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum BackupType {
    Full,
    Diff,
}

#[derive(Clone, Copy, ValueEnum)]
enum From {
    Pitr,
    Dump,
}

struct Stderr;
impl Progress for Stderr {
    fn step(&self, what: &str) {
        eprintln!("codeb-backup: {what}");
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("codeb-backup: {e}");
            ExitCode::from(if e.is_usage() { 2 } else { 1 })
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode, Error> {
    let cfg = Config::load(&cli.config)?;
    let catalog = Catalog::open(&cfg.catalog)?;
    match cli.cmd {
        Cmd::Setup { restart } => {
            codeb_backup::pitr::setup(&cfg, restart, &Stderr)?;
        }
        Cmd::Check => {
            codeb_backup::pitr::check(&cfg, &catalog)?;
            eprintln!("codeb-backup: WAL archiving works (pgbackrest check passed)");
        }
        Cmd::Backup { kind } => {
            let k = match kind {
                BackupType::Full => Kind::Full,
                BackupType::Diff => Kind::Diff,
            };
            let o = codeb_backup::pitr::backup(&cfg, &catalog, k)?;
            println!("{}", o.message.unwrap_or_default());
        }
        Cmd::Dump { projects } => {
            let projects = if projects.is_empty() {
                cfg.projects.clone()
            } else {
                projects
            };
            if projects.is_empty() {
                return Err(Error::Usage(
                    "no projects to dump: list them in the config's `projects` or pass --project"
                        .into(),
                ));
            }
            let results = codeb_backup::dump::dump_all(&cfg, &catalog, &projects, &Stderr);
            let mut failed = 0;
            for (p, r) in &results {
                match r {
                    Ok(d) => println!(
                        "{}\t{}\t{}\t{}",
                        d.database,
                        d.size_bytes,
                        d.sha256,
                        d.path.display()
                    ),
                    Err(e) => {
                        failed += 1;
                        eprintln!("codeb-backup: dump of {p} failed: {e}");
                    }
                }
            }
            if failed > 0 {
                return Ok(ExitCode::from(1));
            }
        }
        Cmd::Files => {
            let o = codeb_backup::files::backup(&cfg, &catalog)?;
            println!("{}", o.location.unwrap_or_default());
        }
        Cmd::Restore {
            project,
            date,
            time,
            into,
            from,
            dry_run,
            yes,
            lock_timeout,
            json,
        } => {
            let wait = match &lock_timeout {
                Some(v) => {
                    codeb_backup::config::parse_wait("--lock-timeout", v).map_err(Error::Usage)?
                }
                None => cfg.lock_timeout(),
            };
            let req = Request {
                project,
                date,
                time,
                into,
                dry_run,
                yes,
                source: match from {
                    From::Pitr => Source::Pitr,
                    From::Dump => Source::Dump,
                },
            };
            let holder = format!(
                "codeb-backup restore of {} by {} (pid {})",
                req.project,
                std::env::var(codeb_core::vars::SUDO_USER)
                    .or_else(|_| std::env::var(codeb_core::vars::USER))
                    .unwrap_or_else(|_| "root".into()),
                std::process::id()
            );
            let r = codeb_backup::restore::restore_locked(
                &cfg, &catalog, &req, &Stderr, wait, &holder,
            )?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
            } else {
                for w in &r.warnings {
                    eprintln!("codeb-backup: warning: {w}");
                }
                let verb = if r.dry_run {
                    "would restore"
                } else {
                    "restored"
                };
                println!(
                    "{verb} {} from {} at {} into {}{}",
                    r.source_database,
                    r.from,
                    codeb_backup::restore::describe(&r.target),
                    r.database,
                    r.replaced
                        .as_ref()
                        .map(|o| format!(
                            " (the old database is kept as {o}; drop it once the app is verified)"
                        ))
                        .unwrap_or_default()
                );
                for (t, n) in &r.tables {
                    println!("  {t}: {n} rows");
                }
                match (&r.release, &r.health) {
                    (Some(rel), Some(h)) => println!(
                        "the running release {} answers {} at {}{}",
                        rel.image,
                        if h.healthy { "healthy" } else { "UNHEALTHY" },
                        h.url,
                        h.status.map(|s| format!(" (HTTP {s})")).unwrap_or_default()
                    ),
                    (Some(rel), None) => println!(
                        "would prove the running release {} healthy at {}",
                        rel.image, rel.url
                    ),
                    _ => {}
                }
            }
        }
        Cmd::RestoreVolume {
            volume,
            from,
            into,
            json,
        } => {
            let r = codeb_backup::files::restore_volume(
                &catalog,
                &volume,
                from.as_deref(),
                into.as_deref(),
            )?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
            } else {
                println!(
                    "restored volume {} from {} into {} ({} bytes, sha256 {})",
                    r.volume, r.backup, r.into, r.size_bytes, r.sha256
                );
            }
        }
        Cmd::List {
            project,
            limit,
            json,
        } => {
            let mut runs = catalog.list(None, None, limit.max(1) * 4)?;
            if let Some(p) = &project {
                let db = codeb_backup::pg::project_database(p);
                runs.retain(|r| r.target == db || r.target == *p);
            }
            runs.truncate(limit);
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&runs).unwrap_or_default()
                );
            } else {
                println!("KIND\tTARGET\tSTARTED\tRESULT\tSIZE\tSHA256\tLOCATION");
                for r in runs {
                    println!(
                        "{}\t{}\t{}\t{}\t{}\t{}\t{}",
                        r.kind,
                        r.target,
                        chrono::DateTime::from_timestamp_millis(r.started_ms)
                            .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                            .unwrap_or_default(),
                        r.result,
                        r.size_bytes
                            .map(|s| s.to_string())
                            .unwrap_or_else(|| "-".into()),
                        r.sha256.as_deref().unwrap_or("-"),
                        r.location
                            .as_deref()
                            .or(r.message.as_deref())
                            .unwrap_or("-"),
                    );
                }
            }
        }
        Cmd::Health { json } => {
            let st = codeb_backup::health::status(&cfg, &catalog)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&st).unwrap_or_default());
            } else {
                for k in &st {
                    println!(
                        "{}\t{}\t{}",
                        k.kind,
                        if k.ok { "ok" } else { "FAIL" },
                        k.problem.clone().unwrap_or_else(|| format!(
                            "last good {}s ago (allowed {}s)",
                            k.age_seconds.unwrap_or(-1),
                            k.max_age_seconds
                        ))
                    );
                }
            }
            if st.iter().any(|k| !k.ok) {
                return Ok(ExitCode::from(1));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
