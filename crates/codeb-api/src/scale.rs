//! `GET /api/v1/scale/status`: the operations manual's thresholds for moving the app tier to
//! Kubernetes (phase 2), measured from what the control plane sees, and the pure rule that
//! says when phase 2 is due ([`evaluate`]).

use serde::{Deserialize, Serialize};

/// The manual's limits.
pub const MAX_CONCURRENT: f64 = 1000.0;
pub const MAX_CPU_PERCENT: f64 = 70.0;
pub const MAX_DEPLOYS_PER_DAY: f64 = 10.0;

/// `GET /api/v1/scale/status?window=5s`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScaleQuery {
    /// How long to sample Caddy's counters and the host's CPU (humantime, 1s-60s; `5s`).
    #[serde(default)]
    pub window: Option<String>,
}

/// What was measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Measured {
    /// `caddy_http_requests_total` summed over servers and handlers, at the window's end.
    pub requests_total: Option<f64>,
    /// Its increase over the window, per second.
    pub requests_per_s: Option<f64>,
    /// `caddy_http_requests_in_flight` summed, the largest value seen in the window: the
    /// requests being served at once (the measurable side of "concurrent users").
    pub in_flight: Option<f64>,
    /// The host's busy CPU share over the window (`/proc/stat`), percent of all cores.
    pub cpu_percent: Option<f64>,
    /// Releases made in the last 24 h across every registry project (the deploy state).
    pub deploys_24h: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Threshold {
    /// `concurrent`, `cpu`, `deploys_per_day`, `zero_downtime`.
    pub name: String,
    pub measured: Option<f64>,
    pub limit: Option<f64>,
    /// `None`: not measured (the reason is in `note`).
    pub exceeded: Option<bool>,
    pub note: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScaleStatus {
    pub measured_ms: i64,
    pub window_ms: u64,
    pub measured: Measured,
    pub thresholds: Vec<Threshold>,
    /// Any threshold exceeded.
    pub phase2_due: bool,
    /// One sentence: due or not, and why.
    pub verdict: String,
    /// What could not be measured and how to fix it.
    pub notes: Vec<String>,
}

/// The thresholds and the verdict from the measurements. Zero downtime is a decision, not
/// a measurement: it is listed, never counted as exceeded.
pub fn evaluate(m: &Measured) -> (Vec<Threshold>, bool, String) {
    let t = |name: &str, measured: Option<f64>, limit: f64, what: &str| Threshold {
        name: name.to_owned(),
        measured,
        limit: Some(limit),
        exceeded: measured.map(|v| v > limit),
        note: what.to_owned(),
    };
    let thresholds = vec![
        t(
            "concurrent",
            m.in_flight,
            MAX_CONCURRENT,
            "requests in flight at Caddy (caddy_http_requests_in_flight)",
        ),
        t(
            "cpu",
            m.cpu_percent,
            MAX_CPU_PERCENT,
            "host CPU busy, percent of all cores (/proc/stat)",
        ),
        #[allow(clippy::cast_precision_loss)] // a count of deploys
        t(
            "deploys_per_day",
            Some(m.deploys_24h as f64),
            MAX_DEPLOYS_PER_DAY,
            "releases in the last 24 h (deploy state of every registry project)",
        ),
        Threshold {
            name: "zero_downtime".into(),
            measured: None,
            limit: None,
            exceeded: None,
            note: "a requirement, not a measurement: if downtime must be zero, phase 2 is due"
                .into(),
        },
    ];
    let over: Vec<&str> = thresholds
        .iter()
        .filter(|t| t.exceeded == Some(true))
        .map(|t| t.name.as_str())
        .collect();
    let due = !over.is_empty();
    let verdict = if due {
        format!(
            "phase 2 (Kubernetes, `we scale k8s`) is due: {} past the manual's limit",
            over.join(", ")
        )
    } else {
        "phase 2 is not due: every measured threshold is within the manual's limits".to_owned()
    };
    (thresholds, due, verdict)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_threshold_makes_phase_two_due_alone() {
        let calm = Measured {
            in_flight: Some(12.0),
            cpu_percent: Some(35.0),
            deploys_24h: 3,
            ..Measured::default()
        };
        let (t, due, v) = evaluate(&calm);
        assert!(!due, "{v}");
        assert_eq!(t.len(), 4);
        assert!(t.iter().all(|t| t.exceeded != Some(true)));
        for (m, name) in [
            (
                Measured {
                    in_flight: Some(1001.0),
                    ..calm.clone()
                },
                "concurrent",
            ),
            (
                Measured {
                    cpu_percent: Some(70.5),
                    ..calm.clone()
                },
                "cpu",
            ),
            (
                Measured {
                    deploys_24h: 11,
                    ..calm.clone()
                },
                "deploys_per_day",
            ),
        ] {
            let (_, due, v) = evaluate(&m);
            assert!(due && v.contains(name), "{name}: {v}");
        }
        // At the limit is not past it; unmeasured is not exceeded.
        let (t, due, _) = evaluate(&Measured {
            in_flight: None,
            cpu_percent: Some(70.0),
            deploys_24h: 10,
            ..Measured::default()
        });
        assert!(!due);
        assert_eq!(t[0].exceeded, None);
    }
}

/// `POST /api/v1/scale/hosts` (`we scale app --add`): register a prepared app host. Its token
/// is not in the request: the control plane reads it from `<state_dir>/hosts/<host>.token`
/// (0600, made by `codeb-daemon agent-token`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostAdd {
    pub host: String,
    /// The agent's URL, `http://<address>:<port>` (the address is also the balancer's
    /// upstream address).
    pub agent_url: String,
}

/// One release of a project on one host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRelease {
    /// `<project>-<environment>`.
    pub unit: String,
    pub digest: Option<String>,
    pub slot: Option<String>,
    pub public_port: Option<u16>,
    pub healthy: bool,
}

/// A registered app host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostView {
    pub host: String,
    pub agent_url: String,
    pub address: String,
    pub added_ms: i64,
    pub added_by: String,
    /// The agent answered just now.
    pub reachable: bool,
    pub releases: Vec<HostRelease>,
    /// Why the agent could not be asked, when it could not.
    #[serde(default)]
    pub error: Option<String>,
}

/// One upstream of a balancer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalancerUpstream {
    pub address: String,
    /// Requests in flight through the balancer (Caddy's view).
    pub in_flight: Option<i64>,
    /// Recent failures Caddy counted (passive health).
    pub fails: Option<i64>,
    /// Caddy's active health check verdict (`caddy_reverse_proxy_upstreams_healthy`).
    #[serde(default)]
    pub healthy: Option<bool>,
}

/// The balancer of one project environment on the control plane's Caddy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalancerView {
    pub unit: String,
    pub listen: String,
    pub upstreams: Vec<BalancerUpstream>,
}

/// `GET /api/v1/scale/hosts`: the hosts, their releases and health, and the balancers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostsReport {
    pub hosts: Vec<HostView>,
    pub balancers: Vec<BalancerView>,
    pub notes: Vec<String>,
}

/// What `we scale app --add` or `--remove` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostChange {
    pub host: String,
    /// One line per step, in order (deployed ..., healthy ..., added to the balancer of ...).
    pub steps: Vec<String>,
}
