//! Daily logical dumps: `pg_dump -Fc` of each project database, streamed through SHA-256
//! into a temp file on the backup host, fsynced and renamed; a sidecar `<file>.sha256`
//! (sha256sum format). A failure (the disk filling, pg_dump dying) removes the partial file
//! and records the run as failed. Retention keeps the newest `dump_retention` per database.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::catalog::{Catalog, Outcome};
use crate::config::{Config, Kind};
use crate::pg::{self, Tools};
use crate::pitr::{hex, live};
use crate::{Error, Progress};

/// The result of one database's dump.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Dumped {
    pub database: String,
    pub path: PathBuf,
    pub size_bytes: u64,
    pub sha256: String,
}

/// Dumps every project's database; returns each result (a failure of one does not stop the
/// others; the caller reports them all).
pub fn dump_all(
    cfg: &Config,
    catalog: &Catalog,
    projects: &[String],
    progress: &dyn Progress,
) -> Vec<(String, Result<Dumped, Error>)> {
    projects
        .iter()
        .map(|p| {
            let r = dump_project(cfg, catalog, p);
            match &r {
                Ok(d) => progress.step(&format!(
                    "{}: {} bytes, sha256 {}",
                    d.database, d.size_bytes, d.sha256
                )),
                Err(e) => progress.step(&format!("{p}: FAILED: {e}")),
            }
            (p.clone(), r)
        })
        .collect()
}

/// Dumps `<project>_db`, recorded as a `dump` run.
pub fn dump_project(cfg: &Config, catalog: &Catalog, project: &str) -> Result<Dumped, Error> {
    pg::check_project(project).map_err(Error::Usage)?;
    let db = pg::project_database(project);
    let tools = Tools::new(cfg);
    let id = catalog.start(Kind::Dump, &db)?;
    let r = (|| {
        let conn = live(cfg);
        if !conn.database_exists(&tools, &db)? {
            return Err(Error::NoDatabase {
                project: project.to_owned(),
                database: db.clone(),
            });
        }
        let dir = cfg.dump_dir.join(&db);
        std::fs::create_dir_all(&dir)?;
        let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
        let path = dir.join(format!("{db}-{stamp}.dump"));
        dump_to(&tools, &conn, &db, &path)
    })();
    match r {
        Ok(d) => {
            catalog.finish(
                id,
                true,
                &Outcome {
                    size_bytes: i64::try_from(d.size_bytes).ok(),
                    sha256: Some(d.sha256.clone()),
                    location: Some(d.path.display().to_string()),
                    message: None,
                },
            )?;
            prune(cfg, catalog, &db)?;
            Ok(d)
        }
        Err(e) => {
            catalog.finish(
                id,
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

/// `pg_dump -Fc` of `db` into `path` (temp + fsync + rename), hashing on the way.
pub fn dump_to(tools: &Tools, conn: &pg::Conn, db: &str, path: &Path) -> Result<Dumped, Error> {
    let dir = path
        .parent()
        .ok_or_else(|| Error::Usage(format!("{} has no directory", path.display())))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".partial-")
        .suffix(".dump")
        .tempfile_in(dir)
        .map_err(|e| Error::Failed(format!("cannot create a file in {}: {e}", dir.display())))?;
    let mut child = tools
        .command("pg_dump")
        .arg("-Fc")
        .args(conn.args())
        .arg("-d")
        .arg(db)
        .spawn_stdout()
        .map_err(|e| Error::Failed(format!("cannot start pg_dump: {e}")))?;
    let mut out = child
        .stdout
        .take()
        .ok_or_else(|| Error::Failed("pg_dump has no stdout".into()))?;
    let mut stderr = child
        .stderr
        .take()
        .ok_or_else(|| Error::Failed("pg_dump has no stderr".into()))?;
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let mut h = Sha256::new();
    let mut size: u64 = 0;
    let mut buf = vec![0u8; 1 << 20];
    let copied: Result<(), std::io::Error> = (|| {
        loop {
            let n = out.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            tmp.as_file_mut().write_all(&buf[..n])?;
            size += n as u64;
        }
        tmp.as_file_mut().sync_all()
    })();
    if copied.is_err() {
        let _ = child.kill();
    }
    drop(out);
    let status = child.wait()?;
    let stderr = err_reader.join().unwrap_or_default();
    if let Err(e) = copied {
        // `tmp` is removed when dropped: no partial file stays.
        return Err(Error::Failed(format!(
            "writing the dump of {db} to {} failed after {size} bytes: {e}; the partial file was removed",
            dir.display()
        )));
    }
    if !status.success() {
        return Err(Error::Failed(format!(
            "pg_dump of {db} failed ({status}): {}; the partial file was removed",
            pg::last_lines(stderr.trim(), 4)
        )));
    }
    let sha = hex(&h.finalize());
    tmp.persist(path)
        .map_err(|e| Error::Failed(format!("cannot rename the dump to {}: {e}", path.display())))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let side = sidecar(path);
    if let Err(e) = codeb_host::atomic::write(&side, format!("{sha}  {name}\n").as_bytes(), 0o640) {
        let _ = std::fs::remove_file(path);
        return Err(Error::Failed(format!(
            "cannot write {}: {e}; the dump was removed",
            side.display()
        )));
    }
    File::open(dir).and_then(|d| d.sync_all())?;
    Ok(Dumped {
        database: db.to_owned(),
        path: path.to_owned(),
        size_bytes: size,
        sha256: sha,
    })
}

pub fn sidecar(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".sha256");
    PathBuf::from(s)
}

/// Checks a dump file against the SHA-256 the catalog recorded; refuses on any mismatch.
pub fn verify(path: &Path, want: &str) -> Result<(), Error> {
    let got = crate::pitr::sha256_file(path)?;
    if got != want {
        return Err(Error::Checksum {
            path: path.to_owned(),
            want: want.to_owned(),
            got,
        });
    }
    Ok(())
}

/// Removes dumps of `db` beyond the newest `dump_retention` good ones.
fn prune(cfg: &Config, catalog: &Catalog, db: &str) -> Result<(), Error> {
    let runs = catalog.list(Some(Kind::Dump), Some(db), 10_000)?;
    let good: Vec<_> = runs
        .into_iter()
        .filter(|r| r.result == "ok" && r.location.is_some())
        .collect();
    let keep = usize::try_from(cfg.dump_retention).unwrap_or(usize::MAX);
    for r in good.iter().skip(keep) {
        if let Some(loc) = &r.location {
            let p = Path::new(loc);
            let _ = std::fs::remove_file(sidecar(p));
            match std::fs::remove_file(p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        catalog.pruned(r.id)?;
    }
    Ok(())
}
