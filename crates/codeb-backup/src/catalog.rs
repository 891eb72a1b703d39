//! The run catalog: one row per backup, dump, check and restore run (start, end, size,
//! checksum, result), in a local SQLite file. A run is stored as `running` before it starts,
//! so a run that dies half way stays visible (never counted as good).

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::Error;
use crate::config::Kind;

/// One recorded run.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Run {
    pub id: i64,
    pub kind: String,
    /// The stanza, database, `state` or project the run was about.
    pub target: String,
    pub started_ms: i64,
    pub ended_ms: Option<i64>,
    /// `running`, `ok` or `failed`.
    pub result: String,
    pub size_bytes: Option<i64>,
    pub sha256: Option<String>,
    /// Where the backup is (a file, a directory, a pgBackRest label).
    pub location: Option<String>,
    pub message: Option<String>,
}

pub struct Catalog {
    conn: Connection,
}

/// What a finished run produced.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    pub size_bytes: Option<i64>,
    pub sha256: Option<String>,
    pub location: Option<String>,
    pub message: Option<String>,
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Catalog {
    pub fn open(path: &Path) -> Result<Catalog, Error> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;
             CREATE TABLE IF NOT EXISTS backup_runs (
               id INTEGER PRIMARY KEY,
               kind TEXT NOT NULL,
               target TEXT NOT NULL,
               started_ms INTEGER NOT NULL,
               ended_ms INTEGER,
               result TEXT NOT NULL CHECK (result IN ('running','ok','failed')),
               size_bytes INTEGER,
               sha256 TEXT,
               location TEXT,
               message TEXT
             );
             CREATE INDEX IF NOT EXISTS backup_runs_kind ON backup_runs(kind, result, ended_ms);",
        )?;
        Ok(Catalog { conn })
    }

    /// Records the start of a run.
    pub fn start(&self, kind: Kind, target: &str) -> Result<i64, Error> {
        self.conn.execute(
            "INSERT INTO backup_runs (kind, target, started_ms, result) VALUES (?1, ?2, ?3, 'running')",
            params![kind.as_str(), target, now_ms()],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Records the end of run `id`.
    pub fn finish(&self, id: i64, ok: bool, o: &Outcome) -> Result<(), Error> {
        self.conn.execute(
            "UPDATE backup_runs SET ended_ms = ?2, result = ?3, size_bytes = ?4, sha256 = ?5,
               location = ?6, message = ?7 WHERE id = ?1",
            params![
                id,
                now_ms(),
                if ok { "ok" } else { "failed" },
                o.size_bytes,
                o.sha256,
                o.location,
                o.message
            ],
        )?;
        Ok(())
    }

    /// Runs, newest first; `kind`/`target` filter when given.
    pub fn list(
        &self,
        kind: Option<Kind>,
        target: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Run>, Error> {
        let mut st = self.conn.prepare(
            "SELECT id, kind, target, started_ms, ended_ms, result, size_bytes, sha256, location, message
             FROM backup_runs WHERE (?1 IS NULL OR kind = ?1) AND (?2 IS NULL OR target = ?2)
             ORDER BY started_ms DESC, id DESC LIMIT ?3",
        )?;
        let rows = st.query_map(
            params![
                kind.map(Kind::as_str),
                target,
                i64::try_from(limit).unwrap_or(i64::MAX)
            ],
            row,
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The newest good run of `kind` (for `target` when given).
    pub fn last_good(&self, kind: Kind, target: Option<&str>) -> Result<Option<Run>, Error> {
        Ok(self
            .conn
            .query_row(
                "SELECT id, kind, target, started_ms, ended_ms, result, size_bytes, sha256, location, message
                 FROM backup_runs WHERE kind = ?1 AND result = 'ok' AND (?2 IS NULL OR target = ?2)
                 ORDER BY ended_ms DESC, id DESC LIMIT 1",
                params![kind.as_str(), target],
                row,
            )
            .optional()?)
    }

    /// The newest finished run of `kind`, good or not.
    pub fn last_finished(&self, kind: Kind) -> Result<Option<Run>, Error> {
        Ok(self
            .conn
            .query_row(
                "SELECT id, kind, target, started_ms, ended_ms, result, size_bytes, sha256, location, message
                 FROM backup_runs WHERE kind = ?1 AND result != 'running'
                 ORDER BY ended_ms DESC, id DESC LIMIT 1",
                params![kind.as_str()],
                row,
            )
            .optional()?)
    }

    /// Marks a run's backup as removed by retention (kept in the history).
    pub fn pruned(&self, id: i64) -> Result<(), Error> {
        self.conn.execute(
            "UPDATE backup_runs SET message = 'removed by retention', location = NULL WHERE id = ?1",
            params![id],
        )?;
        Ok(())
    }
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Run> {
    Ok(Run {
        id: r.get(0)?,
        kind: r.get(1)?,
        target: r.get(2)?,
        started_ms: r.get(3)?,
        ended_ms: r.get(4)?,
        result: r.get(5)?,
        size_bytes: r.get(6)?,
        sha256: r.get(7)?,
        location: r.get(8)?,
        message: r.get(9)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_recorded_and_a_running_one_is_never_good() {
        let dir = tempfile::tempdir().expect("tmp");
        let c = Catalog::open(&dir.path().join("c.sqlite")).expect("open");
        let a = c.start(Kind::Dump, "a_db").expect("start");
        assert!(c.last_good(Kind::Dump, None).expect("q").is_none());
        c.finish(
            a,
            true,
            &Outcome {
                size_bytes: Some(10),
                sha256: Some("ab".into()),
                ..Outcome::default()
            },
        )
        .expect("finish");
        let b = c.start(Kind::Dump, "a_db").expect("start");
        c.finish(b, false, &Outcome::default()).expect("finish");
        assert_eq!(
            c.last_good(Kind::Dump, Some("a_db"))
                .expect("q")
                .map(|r| r.id),
            Some(a)
        );
        assert_eq!(
            c.last_finished(Kind::Dump).expect("q").map(|r| r.result),
            Some("failed".into())
        );
        assert_eq!(c.list(Some(Kind::Dump), None, 10).expect("l").len(), 2);
    }
}
