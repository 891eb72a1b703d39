//! The durable store: deliveries and jobs in SQLite, in `state_dir/daemon.sqlite3`.
//!
//! One thread owns the connection. Requests reach it through a channel; whatever has queued
//! up meanwhile is executed as one transaction (group commit), each request in its own
//! savepoint, and every requester is answered only after that transaction has committed.
//! So "accepted" always means "on disk": the webhook handler answers 2xx only after the
//! delivery and its jobs are committed.
//!
//! Durability: WAL journal with `synchronous=FULL`. Every commit is fsynced to the WAL file
//! before any requester is answered, so neither a crash of the process (SIGKILL, panic, OOM)
//! nor a power loss or kernel crash loses a delivery that was answered 2xx (GitHub does not
//! redeliver by itself). Group commit amortises the fsync: one per batch of requests that
//! queued up while the previous commit was syncing.
//!
//! Jobs: `queued` → `running` → `done` | `failed`, or back to `queued` with a delay when a
//! run failed and attempts remain; `superseded` when coalesced away. At open, jobs left
//! `running` by a crash go back to `queued` (their apply is idempotent); `done` jobs are
//! never claimed again. Per key (`<repo>#<pr>`, `image:<ref>`) one job runs at a time, in
//! id order, after coalescing: a queued `ensure_preview` is superseded by any later queued
//! `ensure_preview` or `destroy_preview` of its key (a later ensure inherits what it lacks,
//! e.g. the commit id); a `destroy_preview` by a later `destroy_preview`; a `pull_image` by a
//! later `pull_image`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use codeb_github::Intent;
use rusqlite::{Connection, OpenFlags, Transaction, params};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS deliveries (
    hook_id     TEXT NOT NULL,
    delivery_id TEXT NOT NULL,
    event       TEXT NOT NULL,
    action      TEXT,
    repo        TEXT,
    pr          INTEGER,
    received_at INTEGER NOT NULL,
    outcome     TEXT NOT NULL,
    note        TEXT,
    PRIMARY KEY (hook_id, delivery_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS deliveries_received ON deliveries(received_at);
CREATE TABLE IF NOT EXISTS jobs (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    key           TEXT NOT NULL,
    kind          TEXT NOT NULL,
    intent        TEXT NOT NULL,
    hook_id       TEXT NOT NULL,
    delivery_id   TEXT NOT NULL,
    state         TEXT NOT NULL
                  CHECK (state IN ('queued', 'running', 'done', 'failed', 'superseded')),
    attempts      INTEGER NOT NULL DEFAULT 0,
    runs          INTEGER NOT NULL DEFAULT 0,
    not_before    INTEGER NOT NULL DEFAULT 0,
    last_error    TEXT,
    result        TEXT,
    superseded_by INTEGER,
    created_at    INTEGER NOT NULL,
    started_at    INTEGER,
    finished_at   INTEGER
);
CREATE INDEX IF NOT EXISTS jobs_state_key ON jobs(state, key, id);
";

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error(
        "cannot open the job store {path}: {message}; check that state_dir exists and is \
         writable by the daemon's user"
    )]
    Open { path: PathBuf, message: String },
    #[error(
        "the job store {path} was written by a newer codeb-daemon (schema {found}, this one knows {SCHEMA_VERSION}); upgrade codeb-daemon"
    )]
    NewerSchema { path: PathBuf, found: i64 },
    #[error("job store: {what} failed: {message}")]
    Sql { what: &'static str, message: String },
    #[error("job store: stored intent of job {id} is unreadable: {message}")]
    BadIntent { id: i64, message: String },
    #[error("the job store thread has stopped")]
    Closed,
}

fn sql(what: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |e| StoreError::Sql {
        what,
        message: e.to_string(),
    }
}

/// A delivery to remember (for deduplication and the record).
#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub hook_id: String,
    pub delivery_id: String,
    pub event: String,
    pub action: Option<String>,
    pub repo: Option<String>,
    pub pr: Option<u64>,
    /// `queued` (it created jobs) or `ignored`.
    pub outcome: &'static str,
    /// Why it was ignored.
    pub note: Option<String>,
    pub received_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// This (hook id, delivery id) was accepted before; nothing was stored.
    Duplicate,
    /// Stored, with the ids of the jobs created.
    Stored { jobs: Vec<i64> },
}

/// A job handed to a worker.
#[derive(Debug, Clone)]
pub struct ClaimedJob {
    pub id: i64,
    pub key: String,
    pub kind: String,
    pub intent: Intent,
    pub hook_id: String,
    pub delivery_id: String,
    /// Including this run.
    pub attempts: u32,
}

#[derive(Debug, Default)]
pub struct Claim {
    pub jobs: Vec<ClaimedJob>,
    /// Kinds of the jobs coalesced away while claiming.
    pub superseded: Vec<String>,
    /// When the earliest job waiting for a retry becomes due (ms since the epoch).
    pub next_due: Option<i64>,
}

/// How a job run ended.
#[derive(Debug, Clone)]
pub enum Finish {
    Done { result: String },
    Retry { error: String, not_before: i64 },
    Failed { error: String },
}

/// One row of `jobs`, as `codeb-daemon jobs` prints it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct JobRow {
    pub id: i64,
    pub key: String,
    pub kind: String,
    pub state: String,
    pub attempts: u32,
    /// Finished runs (done, failed or retried); a `done` job has exactly one successful run.
    pub runs: u32,
    pub last_error: Option<String>,
    pub result: Option<String>,
    pub superseded_by: Option<i64>,
    pub hook_id: String,
    pub delivery_id: String,
    pub intent: serde_json::Value,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub not_before: i64,
}

/// One row of `deliveries`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DeliveryRow {
    pub hook_id: String,
    pub delivery_id: String,
    pub event: String,
    pub action: Option<String>,
    pub repo: Option<String>,
    pub pr: Option<i64>,
    pub received_at: i64,
    pub outcome: String,
    pub note: Option<String>,
}

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

enum Cmd {
    Accept(NewDelivery, Vec<Intent>, Reply<Accepted>),
    Claim {
        busy: Vec<String>,
        limit: usize,
        now: i64,
        reply: Reply<Claim>,
    },
    Finish {
        id: i64,
        finish: Finish,
        now: i64,
        reply: Reply<()>,
    },
    Enqueue {
        intents: Vec<Intent>,
        source: String,
        now: i64,
        reply: Reply<Vec<i64>>,
    },
    Counts(Reply<Vec<(String, u64)>>),
    Prune {
        before: i64,
        reply: Reply<(usize, usize)>,
    },
}

/// A handle on the store thread; cheap to clone.
#[derive(Clone)]
pub struct Store {
    tx: mpsc::Sender<Cmd>,
    path: PathBuf,
}

/// What opening the store found.
#[derive(Debug, Clone, Copy)]
pub struct Opened {
    /// Jobs that were `running` when the previous process stopped, now `queued` again.
    pub requeued: usize,
}

impl Store {
    /// Opens (creating if needed) the database at `path`, requeues interrupted jobs and
    /// starts the store thread.
    pub fn open(path: &Path) -> Result<(Store, Opened), StoreError> {
        let open_err = |e: rusqlite::Error| StoreError::Open {
            path: path.to_owned(),
            message: e.to_string(),
        };
        let mut conn = Connection::open(path).map_err(open_err)?;
        let _mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(open_err)?;
        conn.execute_batch(
            "PRAGMA synchronous=FULL; PRAGMA busy_timeout=5000; PRAGMA foreign_keys=ON;",
        )
        .map_err(open_err)?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(open_err)?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::NewerSchema {
                path: path.to_owned(),
                found: version,
            });
        }
        let tx = conn.transaction().map_err(open_err)?;
        tx.execute_batch(SCHEMA).map_err(open_err)?;
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(open_err)?;
        let requeued = tx
            .execute(
                "UPDATE jobs SET state = 'queued' WHERE state = 'running'",
                [],
            )
            .map_err(open_err)?;
        tx.commit().map_err(open_err)?;

        // Checkpoints (copying the WAL into the database, with an fsync) run on their own
        // connection and thread, so a commit, and the answer waiting for it, never does one.
        conn.pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(open_err)?;
        let checkpointer = Connection::open(path).map_err(open_err)?;
        checkpointer
            .busy_timeout(std::time::Duration::from_secs(5))
            .map_err(open_err)?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread_err = |e: std::io::Error| StoreError::Open {
            path: path.to_owned(),
            message: format!("cannot start a store thread: {e}"),
        };
        let stopped = stop.clone();
        std::thread::Builder::new()
            .name("codeb-checkpoint".into())
            .spawn(move || checkpoints(checkpointer, &stopped))
            .map_err(thread_err)?;
        let (tx, rx) = mpsc::channel(4096);
        std::thread::Builder::new()
            .name("codeb-store".into())
            .spawn(move || {
                serve(conn, rx);
                stop.store(true, Ordering::Relaxed);
            })
            .map_err(thread_err)?;
        Ok((
            Store {
                tx,
                path: path.to_owned(),
            },
            Opened { requeued },
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Cmd) -> Result<T, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Records a delivery and creates its jobs, atomically; `Duplicate` if the (hook id,
    /// delivery id) pair was seen before. Returns after the commit.
    pub async fn accept(
        &self,
        delivery: NewDelivery,
        intents: Vec<Intent>,
    ) -> Result<Accepted, StoreError> {
        self.call(|r| Cmd::Accept(delivery, intents, r)).await
    }

    /// Claims up to `limit` runnable jobs, none with a key in `busy`, marking them running.
    pub async fn claim(&self, busy: Vec<String>, limit: usize) -> Result<Claim, StoreError> {
        let now = now_ms();
        self.call(|reply| Cmd::Claim {
            busy,
            limit,
            now,
            reply,
        })
        .await
    }

    /// Records how a run of job `id` ended.
    pub async fn finish(&self, id: i64, finish: Finish) -> Result<(), StoreError> {
        let now = now_ms();
        self.call(|reply| Cmd::Finish {
            id,
            finish,
            now,
            reply,
        })
        .await
    }

    /// Queues jobs the daemon decided on itself (the reconciler's expiries), with hook id
    /// `daemon` and delivery id `source`, so they run in their pull request's queue like
    /// webhook jobs. An intent whose key already has a queued or running job is skipped
    /// (that job decides). Returns the ids of the jobs created.
    pub async fn enqueue(
        &self,
        intents: Vec<Intent>,
        source: &str,
    ) -> Result<Vec<i64>, StoreError> {
        let now = now_ms();
        let source = source.to_owned();
        self.call(|reply| Cmd::Enqueue {
            intents,
            source,
            now,
            reply,
        })
        .await
    }

    /// Jobs by state.
    pub async fn counts(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.call(Cmd::Counts).await
    }

    /// Deletes finished jobs and delivery records older than `before` (ms since the epoch);
    /// returns (deliveries, jobs) deleted.
    pub async fn prune(&self, before: i64) -> Result<(usize, usize), StoreError> {
        self.call(|reply| Cmd::Prune { before, reply }).await
    }
}

/// Runs one command against the open transaction. Returns the function that answers the
/// requester once the transaction's fate is known.
type Answer = Box<dyn FnOnce(Option<&StoreError>) + Send>;

fn answer<T: Send + 'static>(reply: Reply<T>, result: Result<T, StoreError>) -> Answer {
    Box::new(move |commit_error| {
        let out = match (result, commit_error) {
            (Ok(_), Some(e)) => Err(e.clone()),
            (r, _) => r,
        };
        let _ = reply.send(out);
    })
}

/// Checkpoints the WAL every 250 ms (PASSIVE: never waits for, nor blocks, the writer),
/// and once more when the store stops.
fn checkpoints(conn: Connection, stop: &AtomicBool) {
    loop {
        let last = stop.load(Ordering::Relaxed);
        std::thread::sleep(std::time::Duration::from_millis(250));
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(error = %e, "WAL checkpoint failed; will retry");
        }
        if last {
            return;
        }
    }
}

fn serve(mut conn: Connection, mut rx: mpsc::Receiver<Cmd>) {
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < 1024 {
            match rx.try_recv() {
                Ok(c) => batch.push(c),
                Err(_) => break,
            }
        }
        let mut tx = match conn.transaction() {
            Ok(tx) => tx,
            Err(e) => {
                let err = sql("begin")(e);
                for cmd in batch {
                    fail(cmd, &err);
                }
                continue;
            }
        };
        let mut answers = Vec::with_capacity(batch.len());
        for cmd in batch {
            answers.push(execute(&mut tx, cmd));
        }
        match tx.commit() {
            Ok(()) => answers.into_iter().for_each(|a| a(None)),
            Err(e) => {
                let err = sql("commit")(e);
                answers.into_iter().for_each(|a| a(Some(&err)));
            }
        }
    }
}

fn fail(cmd: Cmd, err: &StoreError) {
    let e = err.clone();
    match cmd {
        Cmd::Accept(_, _, r) => drop(r.send(Err(e))),
        Cmd::Claim { reply, .. } => drop(reply.send(Err(e))),
        Cmd::Finish { reply, .. } => drop(reply.send(Err(e))),
        Cmd::Enqueue { reply, .. } => drop(reply.send(Err(e))),
        Cmd::Counts(r) => drop(r.send(Err(e))),
        Cmd::Prune { reply, .. } => drop(reply.send(Err(e))),
    }
}

/// Runs `f` in a savepoint: its changes are kept only if it succeeds.
fn in_savepoint<T>(
    tx: &mut Transaction<'_>,
    f: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let sp = tx.savepoint().map_err(sql("savepoint"))?;
    let out = f(&sp)?;
    sp.commit().map_err(sql("release savepoint"))?;
    Ok(out)
}

fn execute(tx: &mut Transaction<'_>, cmd: Cmd) -> Answer {
    match cmd {
        Cmd::Accept(d, intents, reply) => {
            answer(reply, in_savepoint(tx, |c| accept(c, &d, &intents)))
        }
        Cmd::Claim {
            busy,
            limit,
            now,
            reply,
        } => answer(reply, in_savepoint(tx, |c| claim(c, &busy, limit, now))),
        Cmd::Finish {
            id,
            finish,
            now,
            reply,
        } => answer(reply, in_savepoint(tx, |c| finish_job(c, id, &finish, now))),
        Cmd::Enqueue {
            intents,
            source,
            now,
            reply,
        } => answer(
            reply,
            in_savepoint(tx, |c| enqueue(c, &intents, &source, now)),
        ),
        Cmd::Counts(reply) => answer(reply, counts(tx)),
        Cmd::Prune { before, reply } => answer(reply, in_savepoint(tx, |c| prune(c, before))),
    }
}

fn accept(c: &Connection, d: &NewDelivery, intents: &[Intent]) -> Result<Accepted, StoreError> {
    let pr = d.pr.and_then(|p| i64::try_from(p).ok());
    let inserted = c
        .prepare_cached(
            "INSERT INTO deliveries (hook_id, delivery_id, event, action, repo, pr, received_at, outcome, note)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT DO NOTHING",
        )
        .and_then(|mut s| {
            s.execute(params![
                d.hook_id,
                d.delivery_id,
                d.event,
                d.action,
                d.repo,
                pr,
                d.received_at,
                d.outcome,
                d.note
            ])
        })
        .map_err(sql("insert delivery"))?;
    if inserted == 0 {
        return Ok(Accepted::Duplicate);
    }
    let mut jobs = Vec::with_capacity(intents.len());
    let mut stmt = c
        .prepare_cached(
            "INSERT INTO jobs (key, kind, intent, hook_id, delivery_id, state, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, 'queued', ?6)",
        )
        .map_err(sql("insert job"))?;
    for intent in intents {
        let json = serde_json::to_string(intent).map_err(|e| StoreError::Sql {
            what: "serialise intent",
            message: e.to_string(),
        })?;
        stmt.execute(params![
            intent.key(),
            intent.kind(),
            json,
            d.hook_id,
            d.delivery_id,
            d.received_at
        ])
        .map_err(sql("insert job"))?;
        jobs.push(c.last_insert_rowid());
    }
    Ok(Accepted::Stored { jobs })
}

fn enqueue(
    c: &Connection,
    intents: &[Intent],
    source: &str,
    now: i64,
) -> Result<Vec<i64>, StoreError> {
    let mut ids = Vec::new();
    for intent in intents {
        let key = intent.key();
        let pending: i64 = c
            .prepare_cached(
                "SELECT COUNT(*) FROM jobs WHERE key = ?1 AND state IN ('queued', 'running')",
            )
            .and_then(|mut s| s.query_row([&key], |r| r.get(0)))
            .map_err(sql("count pending jobs"))?;
        if pending > 0 {
            continue;
        }
        let json = serde_json::to_string(intent).map_err(|e| StoreError::Sql {
            what: "serialise intent",
            message: e.to_string(),
        })?;
        c.prepare_cached(
            "INSERT INTO jobs (key, kind, intent, hook_id, delivery_id, state, created_at)
             VALUES (?1, ?2, ?3, 'daemon', ?4, 'queued', ?5)",
        )
        .and_then(|mut s| s.execute(params![key, intent.kind(), json, source, now]))
        .map_err(sql("insert job"))?;
        ids.push(c.last_insert_rowid());
    }
    Ok(ids)
}

struct Queued {
    id: i64,
    kind: String,
    intent: Intent,
    not_before: i64,
    attempts: u32,
    hook_id: String,
    delivery_id: String,
}

fn claim(c: &Connection, busy: &[String], limit: usize, now: i64) -> Result<Claim, StoreError> {
    let mut out = Claim::default();
    if limit == 0 {
        return Ok(out);
    }
    let keys: Vec<String> = c
        .prepare_cached("SELECT key FROM jobs WHERE state = 'queued' GROUP BY key ORDER BY MIN(id)")
        .and_then(|mut s| {
            s.query_map([], |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(sql("list queued keys"))?;
    for key in keys {
        if out.jobs.len() >= limit {
            break;
        }
        if busy.contains(&key) {
            continue;
        }
        let mut queue = queued_for(c, &key)?;
        let head = coalesce(c, &mut queue, now, &mut out.superseded)?;
        if head.not_before > now {
            out.next_due = Some(
                out.next_due
                    .map_or(head.not_before, |d| d.min(head.not_before)),
            );
            continue;
        }
        c.prepare_cached(
            "UPDATE jobs SET state = 'running', attempts = attempts + 1, started_at = ?2 WHERE id = ?1",
        )
        .and_then(|mut s| s.execute(params![head.id, now]))
        .map_err(sql("mark job running"))?;
        out.jobs.push(ClaimedJob {
            id: head.id,
            key,
            kind: head.kind,
            intent: head.intent,
            hook_id: head.hook_id,
            delivery_id: head.delivery_id,
            attempts: head.attempts + 1,
        });
    }
    Ok(out)
}

fn queued_for(c: &Connection, key: &str) -> Result<Vec<Queued>, StoreError> {
    let rows: Vec<(i64, String, String, i64, u32, String, String)> = c
        .prepare_cached(
            "SELECT id, kind, intent, not_before, attempts, hook_id, delivery_id FROM jobs
             WHERE state = 'queued' AND key = ?1 ORDER BY id",
        )
        .and_then(|mut s| {
            s.query_map([key], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()
        })
        .map_err(sql("read queue"))?;
    rows.into_iter()
        .map(
            |(id, kind, intent, not_before, attempts, hook_id, delivery_id)| {
                let intent = serde_json::from_str(&intent).map_err(|e| StoreError::BadIntent {
                    id,
                    message: e.to_string(),
                })?;
                Ok(Queued {
                    id,
                    kind,
                    intent,
                    not_before,
                    attempts,
                    hook_id,
                    delivery_id,
                })
            },
        )
        .collect()
}

/// Marks the jobs of one key's queue that later ones supersede and returns the first that
/// must run. `queue` is non-empty and in id order.
fn coalesce(
    c: &Connection,
    queue: &mut Vec<Queued>,
    now: i64,
    superseded: &mut Vec<String>,
) -> Result<Queued, StoreError> {
    let mut i = 0;
    while i + 1 < queue.len() {
        let later = queue[i + 1..]
            .iter()
            .position(|l| supersedes(&l.intent, &queue[i].intent));
        let Some(offset) = later else {
            break;
        };
        let j = i + 1 + offset;
        if let Some(merged) = merge(&queue[i].intent, &queue[j].intent) {
            let json = serde_json::to_string(&merged).map_err(|e| StoreError::Sql {
                what: "serialise intent",
                message: e.to_string(),
            })?;
            c.prepare_cached("UPDATE jobs SET intent = ?2 WHERE id = ?1")
                .and_then(|mut s| s.execute(params![queue[j].id, json]))
                .map_err(sql("merge intents"))?;
            queue[j].intent = merged;
        }
        c.prepare_cached(
            "UPDATE jobs SET state = 'superseded', superseded_by = ?2, finished_at = ?3 WHERE id = ?1",
        )
        .and_then(|mut s| s.execute(params![queue[i].id, queue[j].id, now]))
        .map_err(sql("mark job superseded"))?;
        superseded.push(queue[i].kind.clone());
        i += 1;
    }
    Ok(queue.swap_remove(i))
}

/// Whether a queued `later` job makes an earlier queued `earlier` job of the same key moot.
/// An expiry never supersedes an ensure (the push it stands for would be lost); a later
/// ensure supersedes an expiry (it refreshes the preview's activity anyway).
fn supersedes(later: &Intent, earlier: &Intent) -> bool {
    matches!(
        (earlier, later),
        (
            Intent::EnsurePreview { .. },
            Intent::EnsurePreview { .. } | Intent::DestroyPreview { .. }
        ) | (Intent::DestroyPreview { .. }, Intent::DestroyPreview { .. })
            | (
                Intent::ExpirePreview { .. },
                Intent::ExpirePreview { .. }
                    | Intent::DestroyPreview { .. }
                    | Intent::EnsurePreview { .. }
            )
            | (Intent::PullImage { .. }, Intent::PullImage { .. })
    )
}

/// A later ensure inherits from an earlier one what it does not know: the commit id (a
/// package event has none), the image tag, the labels; and stays a fork if either says so.
/// An approval carries over only to the very commit it was given on.
fn merge(earlier: &Intent, later: &Intent) -> Option<Intent> {
    let (
        Intent::EnsurePreview {
            head_sha: e_sha,
            fork: e_fork,
            labels: e_labels,
            image_tag: e_tag,
            approves: e_approves,
            ..
        },
        Intent::EnsurePreview {
            repo,
            pr,
            head_sha,
            fork,
            labels,
            image_tag,
            approves,
        },
    ) = (earlier, later)
    else {
        return None;
    };
    let sha = if head_sha.is_empty() {
        e_sha.clone()
    } else {
        head_sha.clone()
    };
    let merged = Intent::EnsurePreview {
        repo: repo.clone(),
        pr: *pr,
        approves: *approves || (*e_approves && *e_sha == sha),
        head_sha: sha,
        fork: *fork || *e_fork,
        labels: if labels.is_empty() {
            e_labels.clone()
        } else {
            labels.clone()
        },
        image_tag: image_tag.clone().or_else(|| e_tag.clone()),
    };
    (merged != *later).then_some(merged)
}

fn finish_job(c: &Connection, id: i64, f: &Finish, now: i64) -> Result<(), StoreError> {
    let (state, result, error, not_before, finished) = match f {
        Finish::Done { result } => ("done", Some(result.as_str()), None, 0, Some(now)),
        Finish::Retry { error, not_before } => {
            ("queued", None, Some(error.as_str()), *not_before, None)
        }
        Finish::Failed { error } => ("failed", None, Some(error.as_str()), 0, Some(now)),
    };
    c.prepare_cached(
        "UPDATE jobs SET state = ?2, result = ?3, last_error = COALESCE(?4, last_error),
                not_before = ?5, finished_at = ?6, runs = runs + 1
         WHERE id = ?1 AND state = 'running'",
    )
    .and_then(|mut s| s.execute(params![id, state, result, error, not_before, finished]))
    .map_err(sql("record job result"))?;
    Ok(())
}

fn counts(c: &Connection) -> Result<Vec<(String, u64)>, StoreError> {
    c.prepare_cached("SELECT state, COUNT(*) FROM jobs GROUP BY state ORDER BY state")
        .and_then(|mut s| {
            s.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?
                .map(|r| r.map(|(s, n)| (s, u64::try_from(n).unwrap_or(0))))
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(sql("count jobs"))
}

fn prune(c: &Connection, before: i64) -> Result<(usize, usize), StoreError> {
    let d = c
        .execute("DELETE FROM deliveries WHERE received_at < ?1", [before])
        .map_err(sql("prune deliveries"))?;
    let j = c
        .execute(
            "DELETE FROM jobs WHERE state IN ('done', 'failed', 'superseded') AND finished_at < ?1",
            [before],
        )
        .map_err(sql("prune jobs"))?;
    Ok((d, j))
}

fn open_read_only(path: &Path) -> Result<Connection, StoreError> {
    let c = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| StoreError::Open {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    c.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(sql("set busy timeout"))?;
    Ok(c)
}

/// Jobs in the database at `path`, newest first, optionally only those in `state`.
/// Opens the file read-only: safe while the daemon runs.
pub fn list_jobs(
    path: &Path,
    state: Option<&str>,
    limit: usize,
) -> Result<Vec<JobRow>, StoreError> {
    let c = open_read_only(path)?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut stmt = c
        .prepare(
            "SELECT id, key, kind, state, attempts, runs, last_error, result, superseded_by,
                    hook_id, delivery_id, intent, created_at, started_at, finished_at, not_before
             FROM jobs WHERE (?1 IS NULL OR state = ?1) ORDER BY id DESC LIMIT ?2",
        )
        .map_err(sql("list jobs"))?;
    let rows = stmt
        .query_map(params![state, limit], |r| {
            let intent: String = r.get(11)?;
            Ok(JobRow {
                id: r.get(0)?,
                key: r.get(1)?,
                kind: r.get(2)?,
                state: r.get(3)?,
                attempts: r.get(4)?,
                runs: r.get(5)?,
                last_error: r.get(6)?,
                result: r.get(7)?,
                superseded_by: r.get(8)?,
                hook_id: r.get(9)?,
                delivery_id: r.get(10)?,
                intent: serde_json::from_str(&intent).unwrap_or(serde_json::Value::String(intent)),
                created_at: r.get(12)?,
                started_at: r.get(13)?,
                finished_at: r.get(14)?,
                not_before: r.get(15)?,
            })
        })
        .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
        .map_err(sql("list jobs"))?;
    Ok(rows)
}

/// Delivery records in the database at `path`, newest first.
pub fn list_deliveries(path: &Path, limit: usize) -> Result<Vec<DeliveryRow>, StoreError> {
    let c = open_read_only(path)?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut stmt = c
        .prepare(
            "SELECT hook_id, delivery_id, event, action, repo, pr, received_at, outcome, note
             FROM deliveries ORDER BY received_at DESC, delivery_id LIMIT ?1",
        )
        .map_err(sql("list deliveries"))?;
    let rows = stmt
        .query_map([limit], |r| {
            Ok(DeliveryRow {
                hook_id: r.get(0)?,
                delivery_id: r.get(1)?,
                event: r.get(2)?,
                action: r.get(3)?,
                repo: r.get(4)?,
                pr: r.get(5)?,
                received_at: r.get(6)?,
                outcome: r.get(7)?,
                note: r.get(8)?,
            })
        })
        .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
        .map_err(sql("list deliveries"))?;
    Ok(rows)
}

/// Whether the database at `path` exists (for `jobs` on a fresh install).
pub fn exists(path: &Path) -> bool {
    path.is_file()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ensure(pr: u64, sha: &str) -> Intent {
        Intent::EnsurePreview {
            repo: "acme/shop".into(),
            pr,
            head_sha: sha.into(),
            fork: false,
            labels: vec![],
            image_tag: None,
            approves: false,
        }
    }

    fn delivery(id: &str) -> NewDelivery {
        NewDelivery {
            hook_id: "1".into(),
            delivery_id: id.into(),
            event: "pull_request".into(),
            action: Some("synchronize".into()),
            repo: Some("acme/shop".into()),
            pr: Some(1),
            outcome: "queued",
            note: None,
            received_at: now_ms(),
        }
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    fn states(path: &Path) -> Vec<(i64, String, u32)> {
        let mut v: Vec<_> = list_jobs(path, None, 1000)
            .expect("list")
            .into_iter()
            .map(|j| (j.id, j.state, j.runs))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn duplicates_store_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("d.sqlite3");
        rt().block_on(async {
            let (s, _) = Store::open(&db).expect("open");
            let a = s
                .accept(delivery("a"), vec![ensure(1, "")])
                .await
                .expect("accept");
            assert_eq!(a, Accepted::Stored { jobs: vec![1] });
            let b = s
                .accept(delivery("a"), vec![ensure(1, "")])
                .await
                .expect("accept");
            assert_eq!(b, Accepted::Duplicate);
            // Same delivery id from another hook is another delivery.
            let mut other = delivery("a");
            other.hook_id = "2".into();
            let c = s.accept(other, vec![]).await.expect("accept");
            assert_eq!(c, Accepted::Stored { jobs: vec![] });
        });
        assert_eq!(list_deliveries(&db, 10).expect("list").len(), 2);
        assert_eq!(states(&db).len(), 1);
    }

    #[test]
    fn coalescing_keeps_the_newest_and_destroy_wins() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("d.sqlite3");
        let sha = |c: char| c.to_string().repeat(40);
        rt().block_on(async {
            let (s, _) = Store::open(&db).expect("open");
            s.accept(delivery("1"), vec![ensure(1, &sha('a'))])
                .await
                .expect("accept");
            s.accept(delivery("2"), vec![ensure(1, &sha('b'))])
                .await
                .expect("accept");
            // A package event knows no commit: it inherits b's.
            s.accept(delivery("3"), vec![ensure(1, "")])
                .await
                .expect("accept");
            s.accept(delivery("4"), vec![ensure(2, &sha('c'))])
                .await
                .expect("accept");
            let c = s.claim(vec![], 10).await.expect("claim");
            assert_eq!(c.superseded.len(), 2);
            let got: Vec<_> = c.jobs.iter().map(|j| (j.id, j.intent.clone())).collect();
            assert_eq!(
                got,
                vec![(3, ensure(1, &sha('b'))), (4, ensure(2, &sha('c')))]
            );
            // Busy keys are skipped; a destroy supersedes queued ensures.
            s.accept(delivery("5"), vec![ensure(1, &sha('d'))])
                .await
                .expect("accept");
            s.accept(
                delivery("6"),
                vec![Intent::DestroyPreview {
                    repo: "acme/shop".into(),
                    pr: 1,
                }],
            )
            .await
            .expect("accept");
            let c = s
                .claim(vec!["acme/shop#1".into()], 10)
                .await
                .expect("claim");
            assert!(c.jobs.is_empty());
            s.finish(
                3,
                Finish::Done {
                    result: "ok".into(),
                },
            )
            .await
            .expect("finish");
            let c = s.claim(vec![], 10).await.expect("claim");
            assert_eq!(c.jobs.len(), 1);
            assert_eq!(c.jobs[0].id, 6);
            assert_eq!(c.superseded, vec!["ensure_preview".to_owned()]);
        });
    }

    fn expire(pr: u64) -> Intent {
        Intent::ExpirePreview {
            repo: "acme/shop".into(),
            pr,
        }
    }

    /// Issue 9 #7: the reconciler's removals run in the pull request's queue: an expiry never
    /// runs beside or ahead of a queued push, never supersedes it, and is skipped while the
    /// preview has work pending.
    #[test]
    fn reconciler_expiry_goes_through_the_pull_requests_queue() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("d.sqlite3");
        let sha = |c: char| c.to_string().repeat(40);
        rt().block_on(async {
            let (s, _) = Store::open(&db).expect("open");
            // A push is queued: the expiry of that PR is not even queued.
            s.accept(delivery("1"), vec![ensure(1, &sha('a'))])
                .await
                .expect("accept");
            let ids = s
                .enqueue(vec![expire(1), expire(2)], "reconcile-1")
                .await
                .expect("enqueue");
            assert_eq!(ids.len(), 1, "only PR 2's expiry: {ids:?}");
            // Claimed while PR 2's ensure comes in behind its expiry: the ensure wins.
            s.accept(delivery("2"), vec![ensure(2, &sha('b'))])
                .await
                .expect("accept");
            let c = s.claim(vec![], 10).await.expect("claim");
            let got: Vec<_> = c.jobs.iter().map(|j| j.intent.clone()).collect();
            assert_eq!(got, vec![ensure(1, &sha('a')), ensure(2, &sha('b'))]);
            assert_eq!(c.superseded, vec!["expire_preview".to_owned()]);
            // While PR 1's ensure runs, another expiry is not queued beside it.
            let ids = s
                .enqueue(vec![expire(1)], "reconcile-2")
                .await
                .expect("enqueue");
            assert!(ids.is_empty(), "running work of the key: {ids:?}");
            for j in &c.jobs {
                s.finish(
                    j.id,
                    Finish::Done {
                        result: "ok".into(),
                    },
                )
                .await
                .expect("finish");
            }
            // Idle now: the expiry is queued, and a push that comes after it is not lost.
            let ids = s
                .enqueue(vec![expire(1)], "reconcile-3")
                .await
                .expect("enqueue");
            assert_eq!(ids.len(), 1);
            s.accept(delivery("3"), vec![ensure(1, &sha('c'))])
                .await
                .expect("accept");
            let c = s.claim(vec![], 10).await.expect("claim");
            let got: Vec<_> = c.jobs.iter().map(|j| j.intent.clone()).collect();
            assert_eq!(got, vec![ensure(1, &sha('c'))]);
            // An ensure queued before an expiry is never superseded by it.
            s.finish(
                c.jobs[0].id,
                Finish::Done {
                    result: "ok".into(),
                },
            )
            .await
            .expect("finish");
            s.accept(delivery("4"), vec![ensure(3, &sha('d'))])
                .await
                .expect("accept");
            assert!(!supersedes(&expire(3), &ensure(3, &sha('d'))));
        });
    }

    /// Issue 9 #2: coalescing must not carry a fork's approval over to a later commit.
    #[test]
    fn an_approval_does_not_carry_over_to_a_later_commit_when_coalescing() {
        let sha = |c: char| c.to_string().repeat(40);
        let approve = |sha: &str| Intent::EnsurePreview {
            repo: "acme/shop".into(),
            pr: 1,
            head_sha: sha.into(),
            fork: true,
            labels: vec!["preview".into()],
            image_tag: None,
            approves: true,
        };
        let mut push = ensure(1, &sha('b'));
        if let Intent::EnsurePreview { fork, .. } = &mut push {
            *fork = true;
        }
        let merged = merge(&approve(&sha('a')), &push).unwrap_or(push.clone());
        assert!(
            matches!(
                merged,
                Intent::EnsurePreview {
                    approves: false,
                    ..
                }
            ),
            "{merged:?}"
        );
        // A package event (no commit) after the approval keeps the approval of that commit.
        let mut package = ensure(1, "");
        if let Intent::EnsurePreview { fork, .. } = &mut package {
            *fork = true;
        }
        let merged = merge(&approve(&sha('a')), &package).expect("merged");
        assert!(
            matches!(&merged, Intent::EnsurePreview { approves: true, head_sha, .. } if *head_sha == sha('a')),
            "{merged:?}"
        );
    }

    #[test]
    fn interrupted_jobs_rerun_and_done_jobs_never_do() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("d.sqlite3");
        rt().block_on(async {
            let (s, _) = Store::open(&db).expect("open");
            s.accept(delivery("1"), vec![ensure(1, ""), ensure(2, "")])
                .await
                .expect("accept");
            let c = s.claim(vec![], 10).await.expect("claim");
            assert_eq!(c.jobs.len(), 2);
            s.finish(
                1,
                Finish::Done {
                    result: "ok".into(),
                },
            )
            .await
            .expect("finish");
            // Job 2 is "running" when the process dies.
        });
        assert_eq!(
            states(&db),
            vec![(1, "done".into(), 1), (2, "running".into(), 0)]
        );
        rt().block_on(async {
            let (s, opened) = Store::open(&db).expect("reopen");
            assert_eq!(opened.requeued, 1);
            let c = s.claim(vec![], 10).await.expect("claim");
            let ids: Vec<i64> = c.jobs.iter().map(|j| j.id).collect();
            assert_eq!(ids, vec![2]);
            assert_eq!(c.jobs[0].attempts, 2);
        });
    }

    #[test]
    fn retries_wait_for_their_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("d.sqlite3");
        rt().block_on(async {
            let (s, _) = Store::open(&db).expect("open");
            s.accept(delivery("1"), vec![ensure(1, "")])
                .await
                .expect("accept");
            let c = s.claim(vec![], 10).await.expect("claim");
            let later = now_ms() + 60_000;
            s.finish(
                c.jobs[0].id,
                Finish::Retry {
                    error: "boom".into(),
                    not_before: later,
                },
            )
            .await
            .expect("finish");
            let c = s.claim(vec![], 10).await.expect("claim");
            assert!(c.jobs.is_empty());
            assert_eq!(c.next_due, Some(later));
            assert_eq!(
                s.counts().await.expect("counts"),
                vec![("queued".to_owned(), 1)]
            );
        });
        let jobs = list_jobs(&db, Some("queued"), 10).expect("list");
        assert_eq!(jobs[0].last_error.as_deref(), Some("boom"));
    }
}
