//! podman's own Quadlet generators (5.4 and 5.8, see tests/support/oracle.rs) as the oracle
//! for every `.container` case of podman's Quadlet corpus:
//! - a unit both accept: codeb's `podman run` arguments equal the generator's `ExecStart=`
//!   (less the generator's fixed prefix);
//! - a unit the generator rejects: codeb refuses it too (for that podman version), by name;
//! - and the per-version key table of `codeb_quadlet::compat` says exactly what each generator
//!   accepts.
//!
//! A missing generator fails the test with the setup instruction.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use codeb_quadlet::{
    ContainerUnit, PodmanVersion, QuadletError, SUPPORTED_CONTAINER_KEYS, accepted_since,
};

#[path = "support/oracle.rs"]
mod oracle;
use oracle::{Generated, Generator, compare, generators};

const CORPUS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/corpora/podman-quadlet"
);

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for item in std::fs::read_dir(from).expect("read dir") {
        let item = item.expect("dir entry");
        let target = to.join(item.file_name());
        if item.file_type().expect("file type").is_dir() {
            copy_tree(&item.path(), &target);
        } else {
            std::fs::copy(item.path(), &target).expect("copy");
        }
    }
}

/// codeb's verdict for podman `version`: the unit, or the refusal.
fn codeb(path: &Path, version: PodmanVersion) -> Result<ContainerUnit, QuadletError> {
    let unit = ContainerUnit::load(path)?;
    unit.check_podman_version(version)?;
    Ok(unit)
}

/// The key a generator message names (`unsupported key 'X'`), if any.
fn named_key(message: &str) -> Option<String> {
    let rest = message.split("unsupported key '").nth(1)?;
    Some(rest.split('\'').next()?.to_string())
}

#[test]
fn codeb_matches_podmans_own_generators_on_the_corpus() {
    let gens = generators();
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(CORPUS).join("cases_manifest.json"))
            .expect("read cases_manifest.json"),
    )
    .expect("JSON");
    // Every .container file of the corpus, with what its manifest entry says it depends on.
    let mut files = Vec::new();
    walk(Path::new(CORPUS), &mut files);
    files.sort();
    let cases: Vec<(PathBuf, Vec<String>)> = files
        .into_iter()
        .map(|path| {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            let deps = manifest
                .get(name)
                .and_then(|m| m.get("depends_on"))
                .and_then(|d| d.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            (path, deps)
        })
        .collect();
    assert!(cases.len() >= 100, "only {} .container cases", cases.len());

    let tmp = tempfile::tempdir().expect("tempdir");
    let mut table = String::new();
    let mut failures = Vec::new();
    let mut same = BTreeMap::<String, usize>::new();
    for (n, (source, deps)) in cases.iter().enumerate() {
        // Each case in a directory of its own with what it depends on and its drop-ins, as
        // podman's own test harness sets it up.
        let dir = tmp.path().join(format!("case-{n}"));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let rel = source
            .strip_prefix(CORPUS)
            .expect("under corpus")
            .to_path_buf();
        let case = dir.join(&rel);
        std::fs::create_dir_all(case.parent().expect("parent")).expect("mkdir");
        std::fs::copy(source, &case).expect("copy case");
        for dep in deps {
            std::fs::copy(Path::new(CORPUS).join(dep), dir.join(dep)).expect("copy dependency");
        }
        for item in std::fs::read_dir(CORPUS).expect("read corpus") {
            let item = item.expect("entry");
            let file_name = item.file_name().to_string_lossy().into_owned();
            if item.path().is_dir() && file_name.ends_with(".d") {
                copy_tree(&item.path(), &dir.join(&file_name));
            }
        }

        let mut row = format!("{}", rel.display());
        for g in &gens {
            let verdict = judge(g, &dir, &case, &mut failures, &rel);
            if verdict == "same args" {
                *same.entry(g.version.to_string()).or_default() += 1;
            }
            let _ = write!(row, " | {}: {verdict}", g.version);
        }
        table.push_str(&row);
        table.push('\n');
    }
    assert!(
        failures.is_empty(),
        "{} disagreement(s) with podman's generators:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // Most of the corpus must have been compared argument by argument.
    for g in &gens {
        let n = same.get(&g.version.to_string()).copied().unwrap_or(0);
        assert!(n >= 60, "only {n} cases compared with podman {}", g.version);
    }
    insta::assert_snapshot!("generator_outcomes", table);
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for item in std::fs::read_dir(dir).expect("read dir") {
        let path = item.expect("dir entry").path();
        if path.is_dir() {
            walk(&path, out);
        } else if path.extension().is_some_and(|e| e == "container") {
            out.push(path);
        }
    }
}

/// One case against one generator; the table cell. Disagreements go to `failures`.
fn judge(g: &Generator, dir: &Path, case: &Path, failures: &mut Vec<String>, rel: &Path) -> String {
    let ours = codeb(case, g.version);
    let theirs = g.convert(dir, case);
    let who = format!("{} (podman {})", rel.display(), g.full);
    match (ours, theirs) {
        (Ok(unit), Generated::Service { exec_start }) => match compare(&unit, &exec_start) {
            Ok(()) => "same args".into(),
            Err(e) => {
                failures.push(format!("{who}: {e}"));
                "DIFFERENT ARGS".into()
            }
        },
        (Ok(unit), Generated::Rejected { message }) => {
            failures.push(format!(
                "{who}: the generator rejects it ({message}), codeb accepts it: {}",
                unit.podman_run_args_shell()
            ));
            "ACCEPTED BY CODEB ONLY".into()
        }
        (Err(e), Generated::Service { .. }) => {
            format!("codeb refuses ({})", e.key().unwrap_or("unit"))
        }
        (Err(e), Generated::Rejected { message }) => {
            let codeb_names = e.key().map(String::from);
            if let Some(key) = named_key(&message)
                && codeb_names.as_deref() != Some(key.as_str())
                && !e.to_string().contains(&format!("{key}="))
            {
                failures.push(format!(
                    "{who}: the generator rejects key {key} ({message}); codeb refuses, but not by that key: {e}"
                ));
            }
            format!("both refuse ({})", codeb_names.as_deref().unwrap_or("unit"))
        }
    }
}

/// The per-version key table, checked against each generator: for every key codeb translates,
/// a unit with only `Image=` and that key is rejected as "unsupported key" by exactly the
/// generators older than the key's `accepted_since`.
#[test]
fn the_key_table_says_what_each_generator_accepts() {
    let gens = generators();
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut wrong = Vec::new();
    let mut newer = Vec::new();
    for (i, key) in SUPPORTED_CONTAINER_KEYS.iter().enumerate() {
        let dir = tmp.path().join(format!("k{i}"));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let unit = dir.join("probe.container");
        std::fs::write(
            &unit,
            format!("[Container]\nImage=localhost/probe:1\n{key}=1\n"),
        )
        .expect("write");
        let since = accepted_since(key).expect("supported keys have a version");
        for g in &gens {
            let rejected = match g.convert(&dir, &unit) {
                Generated::Rejected { message } => named_key(&message).as_deref() == Some(*key),
                Generated::Service { .. } => false,
            };
            let table_says_rejected = g.version < since;
            if rejected != table_says_rejected {
                wrong.push(format!(
                    "{key}: podman {} {} it, the table says accepted from {since}",
                    g.full,
                    if rejected { "rejects" } else { "accepts" }
                ));
            }
            if rejected {
                newer.push(format!("{key} (rejected by {})", g.version));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "the key table is out of date:\n{}",
        wrong.join("\n")
    );
    // What Debian 13's podman lacks, as found on the guest (issue 8).
    assert_eq!(
        newer,
        [
            "AppArmor (rejected by 5.4)",
            "HttpProxy (rejected by 5.4)",
            "Memory (rejected by 5.4)",
            "Retry (rejected by 5.4)",
            "RetryDelay (rejected by 5.4)"
        ]
    );
}
