//! Counters and histograms, rendered in the Prometheus text exposition format (0.0.4).
//! Small on purpose: a few label sets, fixed buckets, one lock per metric.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

/// Latency buckets in seconds: 0.5 ms to 10 min covers both acks and jobs.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0, 300.0, 600.0,
];

/// A counter family keyed by label values.
struct Counter {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    values: Mutex<BTreeMap<Vec<String>, u64>>,
}

impl Counter {
    const fn new(name: &'static str, help: &'static str, labels: &'static [&'static str]) -> Self {
        Self {
            name,
            help,
            labels,
            values: Mutex::new(BTreeMap::new()),
        }
    }

    fn inc(&self, values: &[&str]) {
        let mut m = self.values.lock().unwrap_or_else(|p| p.into_inner());
        let key: Vec<String> = values.iter().map(|v| (*v).to_owned()).collect();
        *m.entry(key).or_insert(0) += 1;
    }

    fn render(&self, out: &mut String) {
        let _ = writeln!(out, "# HELP {} {}", self.name, self.help);
        let _ = writeln!(out, "# TYPE {} counter", self.name);
        let m = self.values.lock().unwrap_or_else(|p| p.into_inner());
        for (values, n) in m.iter() {
            let _ = writeln!(
                out,
                "{}{} {n}",
                self.name,
                labels(self.labels, values, None)
            );
        }
    }
}

#[derive(Default, Clone)]
struct HistogramData {
    buckets: Vec<u64>,
    sum: f64,
    count: u64,
}

/// A histogram family keyed by label values.
struct Histogram {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    values: Mutex<BTreeMap<Vec<String>, HistogramData>>,
}

impl Histogram {
    const fn new(name: &'static str, help: &'static str, labels: &'static [&'static str]) -> Self {
        Self {
            name,
            help,
            labels,
            values: Mutex::new(BTreeMap::new()),
        }
    }

    fn observe(&self, values: &[&str], d: Duration) {
        let secs = d.as_secs_f64();
        let mut m = self.values.lock().unwrap_or_else(|p| p.into_inner());
        let key: Vec<String> = values.iter().map(|v| (*v).to_owned()).collect();
        let h = m.entry(key).or_insert_with(|| HistogramData {
            buckets: vec![0; BUCKETS.len()],
            ..HistogramData::default()
        });
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            h.buckets[i] += 1;
        }
        h.sum += secs;
        h.count += 1;
    }

    fn render(&self, out: &mut String) {
        let _ = writeln!(out, "# HELP {} {}", self.name, self.help);
        let _ = writeln!(out, "# TYPE {} histogram", self.name);
        let m = self.values.lock().unwrap_or_else(|p| p.into_inner());
        for (values, h) in m.iter() {
            let mut cumulative = 0;
            for (b, n) in BUCKETS.iter().zip(&h.buckets) {
                cumulative += n;
                let le = b.to_string();
                let _ = writeln!(
                    out,
                    "{}_bucket{} {cumulative}",
                    self.name,
                    labels(self.labels, values, Some(&le))
                );
            }
            let _ = writeln!(
                out,
                "{}_bucket{} {}",
                self.name,
                labels(self.labels, values, Some("+Inf")),
                h.count
            );
            let l = labels(self.labels, values, None);
            let _ = writeln!(out, "{}_sum{l} {}", self.name, h.sum);
            let _ = writeln!(out, "{}_count{l} {}", self.name, h.count);
        }
    }
}

fn labels(names: &[&str], values: &[String], le: Option<&str>) -> String {
    let mut parts: Vec<String> = names
        .iter()
        .zip(values)
        .map(|(n, v)| format!("{n}=\"{}\"", escape(v)))
        .collect();
    if let Some(le) = le {
        parts.push(format!("le=\"{le}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Gauges read at scrape time.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Jobs by state (`queued`, `running`, `done`, `failed`, `superseded`).
    pub jobs_by_state: Vec<(String, u64)>,
    /// Preview ports in use and the size of the pool.
    pub pool: (usize, usize),
    /// Jobs running in this process now.
    pub in_flight: usize,
}

/// The daemon's metrics.
pub struct Metrics {
    deliveries: Counter,
    jobs: Counter,
    reconciles: Counter,
    job_duration: Histogram,
    ack: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub const fn new() -> Self {
        Self {
            deliveries: Counter::new(
                "codeb_daemon_deliveries_total",
                "Webhook deliveries by result (accepted, ignored, duplicate, rejected) and reason.",
                &["result", "reason"],
            ),
            jobs: Counter::new(
                "codeb_daemon_jobs_total",
                "Job runs by kind and result (done, retry, failed, superseded).",
                &["kind", "result"],
            ),
            reconciles: Counter::new(
                "codeb_daemon_reconciles_total",
                "Reconciler runs by result.",
                &["result"],
            ),
            job_duration: Histogram::new(
                "codeb_daemon_job_duration_seconds",
                "Time one job run took (apply), by kind.",
                &["kind"],
            ),
            ack: Histogram::new(
                "codeb_daemon_ack_duration_seconds",
                "Time from a delivery's body being read to its answer being ready, by status.",
                &["status"],
            ),
        }
    }

    pub fn delivery(&self, result: &str, reason: &str) {
        self.deliveries.inc(&[result, reason]);
    }

    pub fn job(&self, kind: &str, result: &str) {
        self.jobs.inc(&[kind, result]);
    }

    pub fn job_duration(&self, kind: &str, d: Duration) {
        self.job_duration.observe(&[kind], d);
    }

    pub fn ack(&self, status: u16, d: Duration) {
        self.ack.observe(&[&status.to_string()], d);
    }

    pub fn reconcile(&self, result: &str) {
        self.reconciles.inc(&[result]);
    }

    /// The text exposition of every metric plus the gauges of `snap`.
    pub fn render(&self, snap: &Snapshot) -> String {
        let mut out = String::with_capacity(8 * 1024);
        self.deliveries.render(&mut out);
        self.jobs.render(&mut out);
        self.reconciles.render(&mut out);
        self.job_duration.render(&mut out);
        self.ack.render(&mut out);
        let _ = writeln!(
            out,
            "# HELP codeb_daemon_jobs Jobs in the store by state.\n# TYPE codeb_daemon_jobs gauge"
        );
        for (state, n) in &snap.jobs_by_state {
            let _ = writeln!(out, "codeb_daemon_jobs{{state=\"{}\"}} {n}", escape(state));
        }
        let _ = writeln!(
            out,
            "# HELP codeb_daemon_jobs_in_flight Jobs running in this process.\n\
             # TYPE codeb_daemon_jobs_in_flight gauge\ncodeb_daemon_jobs_in_flight {}",
            snap.in_flight
        );
        let _ = writeln!(
            out,
            "# HELP codeb_daemon_preview_ports_used Preview ports in use.\n\
             # TYPE codeb_daemon_preview_ports_used gauge\ncodeb_daemon_preview_ports_used {}\n\
             # HELP codeb_daemon_preview_ports_total Size of the preview port pool.\n\
             # TYPE codeb_daemon_preview_ports_total gauge\ncodeb_daemon_preview_ports_total {}",
            snap.pool.0, snap.pool.1
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::new();
        m.delivery("rejected", "mismatch");
        m.delivery("rejected", "mismatch");
        m.delivery("accepted", "pull_request");
        m.ack(202, Duration::from_micros(700));
        let text = m.render(&Snapshot {
            jobs_by_state: vec![("queued".into(), 3)],
            pool: (2, 1000),
            in_flight: 1,
        });
        assert!(
            text.contains(
                "codeb_daemon_deliveries_total{result=\"rejected\",reason=\"mismatch\"} 2"
            )
        );
        assert!(
            text.contains(
                "codeb_daemon_ack_duration_seconds_bucket{status=\"202\",le=\"0.0005\"} 0"
            )
        );
        assert!(
            text.contains(
                "codeb_daemon_ack_duration_seconds_bucket{status=\"202\",le=\"0.001\"} 1"
            )
        );
        assert!(text.contains("codeb_daemon_ack_duration_seconds_count{status=\"202\"} 1"));
        assert!(text.contains("codeb_daemon_jobs{state=\"queued\"} 3"));
        assert!(text.contains("codeb_daemon_preview_ports_used 2"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap_or_default();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
}
