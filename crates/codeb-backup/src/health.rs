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
        let mut good = catalog.last_good(k, None)?;
        // A full backup is at least as good as a differential (the weekly full replaces
        // that day's diff).
        if k == Kind::Diff
            && let Some(full) = catalog.last_good(Kind::Full, None)?
            && good.as_ref().is_none_or(|d| d.ended_ms < full.ended_ms)
        {
            good = Some(full);
        }
        let mut last = catalog.last_finished(k)?;
        if k == Kind::Diff
            && let Some(full) = catalog.last_finished(Kind::Full)?
            && last.as_ref().is_none_or(|d| d.ended_ms < full.ended_ms)
        {
            last = Some(full);
        }
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
                    "no good {} run is recorded yet (its timer, codeb-backup-*.timer, runs codeb-backup)",
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Outcome;

    const CFG: &str = "pg_data = \"/d\"\nrepo_path = \"/r\"\ndump_dir = \"/x\"\nfiles_dir = \"/f\"\ncatalog = \"/c\"\n";

    #[test]
    fn a_backup_older_than_its_schedule_allows_fails_and_a_full_counts_for_diff() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("c.sqlite");
        let cat = Catalog::open(&path).expect("open");
        let cfg = Config::parse(CFG).expect("cfg");
        for k in [Kind::Wal, Kind::Full, Kind::Dump, Kind::Files] {
            let id = cat.start(k, "t").expect("start");
            cat.finish(id, true, &Outcome::default()).expect("finish");
        }
        let st = status(&cfg, &cat).expect("status");
        assert!(st.iter().all(|k| k.ok), "{st:?}");
        // The dump is now 27 h old: its 26 h allowance is exceeded.
        let raw = rusqlite::Connection::open(&path).expect("raw");
        raw.execute(
            "UPDATE backup_runs SET ended_ms = ended_ms - 27 * 3600 * 1000 WHERE kind = 'dump'",
            [],
        )
        .expect("backdate");
        let st = status(&cfg, &cat).expect("status");
        let dump = st.iter().find(|k| k.kind == "dump").expect("dump");
        assert!(
            !dump.ok && dump.problem.as_deref().unwrap_or("").contains("26h"),
            "{dump:?}"
        );
        assert!(dump.age_seconds.unwrap_or(0) >= 27 * 3600);
        let text = metrics(&st);
        assert!(
            text.contains("codeb_backup_ok{kind=\"dump\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("codeb_backup_ok{kind=\"diff\"} 1\n"),
            "{text}"
        );
    }
}
