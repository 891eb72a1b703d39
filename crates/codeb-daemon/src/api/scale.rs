//! `GET /api/v1/scale/status`: the operations manual's phase-2 thresholds measured from what
//! this host sees. Over one window (default 5 s) it samples Caddy's admin `/metrics`
//! (`caddy_http_requests_total` and `caddy_http_requests_in_flight`, summed over servers and
//! handlers) and `/proc/stat`, and counts the releases of the last 24 h in the deploy state
//! of every registry project. The verdict is `codeb_api::scale::evaluate`.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use codeb_api::Action;
use codeb_api::scale::{Measured, ScaleQuery, ScaleStatus, evaluate};
use codeb_deploy::History;

use super::{Api, ApiError, db};
use crate::store::now_ms;

/// Caddy's request counters, summed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CaddySample {
    pub requests_total: Option<f64>,
    pub in_flight: Option<f64>,
}

/// Sums the samples of the two metrics in a Prometheus text exposition.
pub fn parse_caddy_metrics(text: &str) -> Result<CaddySample, String> {
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .map_err(|e| format!("Caddy's /metrics is not Prometheus text: {e}"))?;
    let sum = |name: &str| {
        let v: Vec<f64> = scrape
            .samples
            .iter()
            .filter(|s| s.metric == name)
            .filter_map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => Some(v),
                _ => None,
            })
            .collect();
        (!v.is_empty()).then(|| v.iter().sum())
    };
    Ok(CaddySample {
        requests_total: sum("caddy_http_requests_total"),
        in_flight: sum("caddy_http_requests_in_flight"),
    })
}

/// Busy and total jiffies of all CPUs from `/proc/stat`'s `cpu` line.
pub fn parse_proc_stat(text: &str) -> Option<(u64, u64)> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    Some((total.saturating_sub(idle), total))
}

fn cpu_sample() -> Option<(u64, u64)> {
    parse_proc_stat(&std::fs::read_to_string("/proc/stat").ok()?)
}

fn rfc3339_ms(s: &str) -> Option<i64> {
    let t = humantime::parse_rfc3339_weak(s).ok()?;
    let d = t.duration_since(UNIX_EPOCH).ok()?;
    i64::try_from(d.as_millis()).ok()
}

#[allow(clippy::cast_precision_loss)] // jiffies and counters far below 2^52
pub async fn status(
    State(api): State<Arc<Api>>,
    h: HeaderMap,
    Query(q): Query<ScaleQuery>,
) -> Result<Json<ScaleStatus>, ApiError> {
    api.authorize(&h, Action::ScaleStatus, None).await?;
    let window: Duration = match q.window.as_deref() {
        None => Duration::from_secs(5),
        Some(w) => humantime::parse_duration(w.trim())
            .ok()
            .filter(|d| (Duration::from_secs(1)..=Duration::from_secs(60)).contains(d))
            .ok_or_else(|| {
                ApiError::bad(format!(
                    "window {w:?} is not a duration from 1s to 60s (e.g. 5s)"
                ))
            })?,
    };
    let mut notes = Vec::new();
    let caddy = match api.loc.caddy_admin.as_deref() {
        None => {
            notes.push(
                "no Caddy admin API is configured ([previews] caddy_admin): request rate and concurrency are not measured".to_owned(),
            );
            None
        }
        Some(u) => match codeb_deploy::Caddy::new(u) {
            Ok(c) => Some(c),
            Err(e) => {
                notes.push(format!("Caddy admin API {u}: {e}"));
                None
            }
        },
    };
    let read_caddy = |c: &codeb_deploy::Caddy| {
        let c = c.clone();
        async move {
            let text = c.metrics().await.map_err(|e| e.to_string())?;
            parse_caddy_metrics(&text)
        }
    };
    let first = match &caddy {
        Some(c) => Some(read_caddy(c).await),
        None => None,
    };
    let cpu0 = cpu_sample();
    tokio::time::sleep(window).await;
    let cpu1 = cpu_sample();
    let last = match &caddy {
        Some(c) => Some(read_caddy(c).await),
        None => None,
    };

    let mut m = Measured::default();
    match (first, last) {
        (Some(Ok(a)), Some(Ok(b))) => {
            m.requests_total = b.requests_total;
            m.requests_per_s = match (a.requests_total, b.requests_total) {
                (Some(x), Some(y)) => Some(((y - x).max(0.0)) / window.as_secs_f64()),
                _ => None,
            };
            m.in_flight = match (a.in_flight, b.in_flight) {
                (Some(x), Some(y)) => Some(x.max(y)),
                (x, y) => x.or(y),
            };
            if b.requests_total.is_none() {
                notes.push(
                    "Caddy's /metrics has no caddy_http_requests_total: turn HTTP metrics on (the `metrics` global option; JSON apps.http.metrics)".to_owned(),
                );
            }
        }
        (Some(Err(e)), _) | (_, Some(Err(e))) => notes.push(format!("Caddy metrics: {e}")),
        _ => {}
    }
    match (cpu0, cpu1) {
        (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => {
            m.cpu_percent = Some(100.0 * (b1.saturating_sub(b0)) as f64 / (t1 - t0) as f64);
        }
        _ => notes.push("/proc/stat could not be read: CPU is not measured".to_owned()),
    }

    let rows = api
        .db
        .run(|c| db::projects(c))
        .await
        .map_err(ApiError::internal)?;
    let since = now_ms() - 86_400_000;
    let state_dir = api.state_dir();
    let deploys = tokio::task::spawn_blocking(move || {
        let mut n = 0u64;
        for r in &rows {
            for e in &r.spec.environments {
                let unit = format!("{}-{}", r.spec.name, e.name);
                if let Ok(h) = History::load(&state_dir, &unit) {
                    n += h
                        .releases
                        .iter()
                        .filter(|rel| rfc3339_ms(&rel.time).is_some_and(|t| t >= since))
                        .count() as u64;
                }
            }
        }
        n
    })
    .await
    .map_err(ApiError::internal)?;
    m.deploys_24h = deploys;

    let (thresholds, phase2_due, verdict) = evaluate(&m);
    let measured_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    Ok(Json(ScaleStatus {
        measured_ms,
        window_ms: u64::try_from(window.as_millis()).unwrap_or(u64::MAX),
        measured: m,
        thresholds,
        phase2_due,
        verdict,
        notes,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caddy_metrics_are_summed_over_servers_and_handlers() {
        let text = "# HELP caddy_http_requests_total Counter of HTTP(S) requests made.\n# TYPE caddy_http_requests_total counter\ncaddy_http_requests_total{handler=\"reverse_proxy\",server=\"srv0\"} 40\ncaddy_http_requests_total{handler=\"static_response\",server=\"srv1\"} 2\n# TYPE caddy_http_requests_in_flight gauge\ncaddy_http_requests_in_flight{handler=\"reverse_proxy\",server=\"srv0\"} 3\n";
        let s = parse_caddy_metrics(text).expect("parse");
        assert_eq!(s.requests_total, Some(42.0));
        assert_eq!(s.in_flight, Some(3.0));
        let none = parse_caddy_metrics("# nothing\ngo_goroutines 7\n").expect("parse");
        assert_eq!(none.requests_total, None);
    }

    #[test]
    fn proc_stat_busy_and_total() {
        let text = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3 4\n";
        assert_eq!(parse_proc_stat(text), Some((150, 1000)));
        assert_eq!(parse_proc_stat("intr 1\n"), None);
    }
}
