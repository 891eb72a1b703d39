//! Runs the stored jobs: a dispatcher claims runnable jobs from the store (one per key,
//! up to `max_concurrency` at once), each runs `apply` on its own task, and its result is
//! written back. A failed run is retried with exponential backoff until `max_attempts`,
//! unless the error is permanent (configuration, an exhausted port pool, a refused deploy):
//! that job fails at once. The reconciler calls `reconcile()` at start and every
//! `reconcile_interval`; the previews it wants taken down are queued as jobs, so they run in
//! their pull request's queue and never beside a deploy of the same preview.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use codeb_github::Intent;
use codeb_previews::{Applied, PreviewError, Previews, ReconcileReport};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tracing::{Instrument, error, info, info_span, warn};

use crate::metrics::Metrics;
use crate::store::{ClaimedJob, Finish, Store, now_ms};

/// What the worker needs of the preview service; [`Previews`] in production, a recording
/// fake in tests.
pub trait Applier: Send + Sync + 'static {
    fn apply(&self, intent: &Intent) -> impl Future<Output = Result<Applied, PreviewError>> + Send;
    fn reconcile(&self) -> impl Future<Output = Result<ReconcileReport, PreviewError>> + Send;
    fn pool_usage(&self) -> (usize, usize);
}

impl Applier for Previews {
    fn apply(&self, intent: &Intent) -> impl Future<Output = Result<Applied, PreviewError>> + Send {
        Previews::apply(self, intent)
    }
    fn reconcile(&self) -> impl Future<Output = Result<ReconcileReport, PreviewError>> + Send {
        Previews::reconcile(self)
    }
    fn pool_usage(&self) -> (usize, usize) {
        Previews::pool_usage(self)
    }
}

/// The worker's settings (from the config).
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub max_concurrency: usize,
    pub max_attempts: u32,
    pub retry_backoff: Duration,
    pub shutdown_grace: Duration,
}

/// Delay before retry number `attempt` (1-based): `base * 2^(attempt-1)`, at most 1 h.
pub fn backoff(base: Duration, attempt: u32) -> Duration {
    let factor = 1u32 << attempt.saturating_sub(1).min(16);
    base.saturating_mul(factor).min(Duration::from_secs(3600))
}

/// Runs jobs until `shutdown` turns true, then waits up to `shutdown_grace` for the runs in
/// flight; runs still going after that are abandoned and requeued by the next start.
pub async fn dispatch<A: Applier>(
    store: Store,
    applier: Arc<A>,
    metrics: Arc<Metrics>,
    cfg: WorkerConfig,
    wake: Arc<Notify>,
    in_flight: Arc<AtomicUsize>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tasks: JoinSet<()> = JoinSet::new();
    let mut running: HashMap<tokio::task::Id, (i64, String, String)> = HashMap::new();
    loop {
        if *shutdown.borrow() {
            break;
        }
        let mut sleep_for = Duration::from_secs(60);
        let free = cfg.max_concurrency.saturating_sub(running.len());
        if free > 0 {
            let busy: Vec<String> = running.values().map(|(_, k, _)| k.clone()).collect();
            match store.claim(busy, free).await {
                Ok(claim) => {
                    for kind in &claim.superseded {
                        metrics.job(kind, "superseded");
                    }
                    if let Some(due) = claim.next_due {
                        let ms = u64::try_from(due.saturating_sub(now_ms())).unwrap_or(0);
                        sleep_for = sleep_for.min(Duration::from_millis(ms));
                    }
                    for job in claim.jobs {
                        let meta = (job.id, job.key.clone(), job.kind.clone());
                        let fut = run_job(
                            store.clone(),
                            applier.clone(),
                            metrics.clone(),
                            cfg.clone(),
                            job,
                        );
                        let handle = tasks.spawn(fut);
                        running.insert(handle.id(), meta);
                        in_flight.store(running.len(), Ordering::Relaxed);
                    }
                }
                Err(e) => {
                    error!(error = %e, "cannot claim jobs; retrying in 1 s");
                    sleep_for = Duration::from_secs(1);
                }
            }
        }
        tokio::select! {
            _ = wake.notified() => {}
            Some(joined) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                let id = match &joined {
                    Ok((id, ())) => *id,
                    Err(e) => e.id(),
                };
                if let Some((job, key, kind)) = running.remove(&id)
                    && let Err(e) = joined
                {
                    error!(job, key, error = %e, "job task panicked; marking the job failed");
                    metrics.job(&kind, "failed");
                    let error = format!("the job's task panicked: {e}");
                    if let Err(e) = store.finish(job, Finish::Failed { error }).await {
                        error!(job, error = %e, "cannot record the failure");
                    }
                }
                in_flight.store(running.len(), Ordering::Relaxed);
            }
            _ = tokio::time::sleep(sleep_for) => {}
            _ = shutdown.changed() => {}
        }
    }
    if !tasks.is_empty() {
        info!(
            in_flight = tasks.len(),
            grace = ?cfg.shutdown_grace,
            "waiting for running jobs before exiting"
        );
    }
    let drained = tokio::time::timeout(cfg.shutdown_grace, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!(
            abandoned = tasks.len(),
            "jobs still running after the shutdown grace; they run again at the next start"
        );
        tasks.abort_all();
    }
    in_flight.store(0, Ordering::Relaxed);
}

async fn run_job<A: Applier>(
    store: Store,
    applier: Arc<A>,
    metrics: Arc<Metrics>,
    cfg: WorkerConfig,
    job: ClaimedJob,
) {
    let (repo, pr) = job
        .intent
        .pull_request()
        .map_or((String::new(), 0), |(r, p)| (r.to_owned(), p));
    let span = info_span!(
        "job",
        id = job.id,
        key = %job.key,
        kind = %job.kind,
        delivery = %job.delivery_id,
        repo = %repo,
        pr,
        attempt = job.attempts
    );
    async move {
        let start = Instant::now();
        let result = applier.apply(&job.intent).await;
        let took = start.elapsed();
        metrics.job_duration(&job.kind, took);
        let finish = match result {
            Ok(applied) => {
                let result = describe(&applied);
                info!(took = ?took, result = %result, "job done");
                metrics.job(&job.kind, "done");
                Finish::Done { result }
            }
            Err(e) if e.is_permanent() => {
                error!(error = %e, "job failed; not retrying (a permanent error)");
                metrics.job(&job.kind, "failed");
                Finish::Failed {
                    error: e.to_string(),
                }
            }
            Err(e) if job.attempts < cfg.max_attempts => {
                let delay = backoff(cfg.retry_backoff, job.attempts);
                warn!(error = %e, retry_in = ?delay, "job failed; will retry");
                metrics.job(&job.kind, "retry");
                let not_before =
                    now_ms().saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX));
                Finish::Retry {
                    error: e.to_string(),
                    not_before,
                }
            }
            Err(e) => {
                error!(error = %e, attempts = job.attempts, "job failed; giving up");
                metrics.job(&job.kind, "failed");
                Finish::Failed {
                    error: e.to_string(),
                }
            }
        };
        if let Err(e) = store.finish(job.id, finish).await {
            error!(error = %e, "cannot record the job's result; it runs again at the next start");
        }
    }
    .instrument(span)
    .await
}

fn describe(a: &Applied) -> String {
    match a {
        Applied::Deployed { url, port } => format!("deployed {url} (port {port})"),
        Applied::Destroyed => "destroyed".into(),
        Applied::Pulled => "pulled".into(),
        Applied::Skipped(why) => format!("skipped: {why}"),
    }
}

/// Calls `reconcile()` now and every `interval`, queues the expiries it returns (waking the
/// dispatcher), and prunes the store of records older than `retention`, until `shutdown`
/// turns true.
pub async fn reconcile<A: Applier>(
    applier: Arc<A>,
    store: Store,
    metrics: Arc<Metrics>,
    wake: Arc<Notify>,
    interval: Duration,
    retention: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
        match applier.reconcile().await {
            Ok(report) => {
                metrics.reconcile(if report.errors.is_empty() {
                    "ok"
                } else {
                    "partial"
                });
                for e in &report.errors {
                    warn!(error = %e, "reconcile: one part failed; the rest went on");
                }
                let expire: Vec<String> = report.expire.iter().map(Intent::key).collect();
                match store
                    .enqueue(report.expire, &format!("reconcile-{}", now_ms()))
                    .await
                {
                    Ok(ids) if !ids.is_empty() => wake.notify_one(),
                    Ok(_) => {}
                    Err(e) => error!(error = %e, "reconcile: cannot queue the expiries"),
                }
                info!(
                    expire = ?expire,
                    orphans_removed = ?report.orphans_removed,
                    restored = ?report.restored,
                    "reconciled"
                );
            }
            Err(e) => {
                metrics.reconcile("error");
                error!(error = %e, "reconcile failed; next try in {interval:?}");
            }
        }
        let keep = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
        match store.prune(now_ms().saturating_sub(keep)).await {
            Ok((0, 0)) => {}
            Ok((deliveries, jobs)) => info!(deliveries, jobs, "pruned old records"),
            Err(e) => warn!(error = %e, "cannot prune old records"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let b = Duration::from_secs(30);
        assert_eq!(backoff(b, 1), Duration::from_secs(30));
        assert_eq!(backoff(b, 2), Duration::from_secs(60));
        assert_eq!(backoff(b, 4), Duration::from_secs(240));
        assert_eq!(backoff(b, 40), Duration::from_secs(3600));
    }
}
