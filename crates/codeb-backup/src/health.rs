//! The age of the last good backup of each kind against what its schedule allows; a kind
//! whose newest run failed, or that never succeeded, or whose last good run is too old, is
//! a failure. `codeb-backup health`, `we health` (through the daemon) and `/metrics` read it.

use serde::Serialize;

use crate::Error;
use crate::catalog::{Catalog, now_ms};
use crate::config::{Config, Kind};

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct KindStatus {
    pub kind: String,
    /// Seconds since the last good run ended; `None` when there never was one.
    pub age_seconds: Option<i64>,
    pub max_age_seconds: i64,
    /// The newest finished run's result (`ok`/`failed`), if any.
    pub last_result: Option<String>,
    pub ok: bool,
    /// What is wrong and what to do, when not ok.
    pub problem: Option<String>,
}

pub fn status(cfg: &Config, catalog: &Catalog) -> Result<Vec<KindStatus>, Error> {
    let now = now_ms();
    let mut out = Vec::new();
    for k in Kind::SCHEDULED {
        let max = cfg.max_age(k).map_err(Error::Config)?;
        let max_s = i64::try_from(max.as_secs()).unwrap_or(i64::MAX);
        let good = catalog.last_good(k, None)?;
        let last = catalog.last_finished(k)?;
        let age = good
            .as_ref()
            .map(|r| (now - r.ended_ms.unwrap_or(r.started_ms)).max(0) / 1000);
        let last_result = last.as_ref().map(|r| r.result.clone());
        let problem = if let Some(r) = last.as_ref().filter(|r| r.result == "failed") {
            Some(format!(
                "the last {} run failed: {}",
                k.as_str(),
                r.message.as_deref().unwrap_or("no message")
            ))
        } else {
            match age {
                None => Some(format!(
                    "no good {} backup is recorded yet (its timer runs codeb-backup)",
                    k.as_str()
                )),
                Some(a) if a > max_s => Some(format!(
                    "the last good {} backup is {}h old; its schedule allows {}h: check `systemctl list-timers 'codeb-backup-*'` and the journal",
                    k.as_str(),
                    a / 3600,
                    max_s / 3600
                )),
                Some(_) => None,
            }
        };
        out.push(KindStatus {
            kind: k.as_str().into(),
            age_seconds: age,
            max_age_seconds: max_s,
            last_result,
            ok: problem.is_none(),
            problem,
        });
    }
    Ok(out)
}

/// Prometheus text lines for the statuses.
pub fn metrics(statuses: &[KindStatus]) -> String {
    let mut s = String::new();
    s.push_str("# HELP codeb_backup_last_good_age_seconds Seconds since the last good backup of each kind (-1: never).\n");
    s.push_str("# TYPE codeb_backup_last_good_age_seconds gauge\n");
    for k in statuses {
        s.push_str(&format!(
            "codeb_backup_last_good_age_seconds{{kind=\"{}\"}} {}\n",
            k.kind,
            k.age_seconds.unwrap_or(-1)
        ));
    }
    s.push_str("# HELP codeb_backup_max_age_seconds The age each kind's schedule allows.\n");
    s.push_str("# TYPE codeb_backup_max_age_seconds gauge\n");
    for k in statuses {
        s.push_str(&format!(
            "codeb_backup_max_age_seconds{{kind=\"{}\"}} {}\n",
            k.kind, k.max_age_seconds
        ));
    }
    s.push_str(
        "# HELP codeb_backup_ok 1 when the kind's last run succeeded and is recent enough.\n",
    );
    s.push_str("# TYPE codeb_backup_ok gauge\n");
    for k in statuses {
        s.push_str(&format!(
            "codeb_backup_ok{{kind=\"{}\"}} {}\n",
            k.kind,
            u8::from(k.ok)
        ));
    }
    s
}
