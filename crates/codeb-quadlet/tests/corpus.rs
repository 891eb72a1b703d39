//! Runs every `*.container` case of podman's own Quadlet test corpus through this crate and
//! checks the `## assert-…` lines that concern the `podman run` arguments. The outcome of every
//! case is a reviewed snapshot (`snapshots/corpus__corpus_outcomes.snap`), so a case that stops
//! being checked (or starts being refused) shows up in review; what codeb may refuse is listed
//! here, on the test side, not read from the crate.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use codeb_quadlet::{ContainerUnit, UnitFile};

const CORPUS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/corpora/podman-quadlet"
);

/// Assertions about the `podman run` argument list; everything else is about the generated
/// systemd unit, symlinks, global args or other commands and is only counted.
const PODMAN_ARG_OPS: &[&str] = &[
    "assert-podman-args",
    "assert-podman-args-regex",
    "assert-podman-final-args",
    "assert-podman-final-args-regex",
    "assert-podman-args-key-val",
    "assert-podman-args-key-val-regex",
];

/// The generator's systemd-only prefix; the deploy engine adds its own.
const PREFIX_TOKENS: &[&str] = &["--replace", "--rm", "--cgroups=split", "-d"];

/// The `[Container]` keys of the corpus that codeb deliberately does not translate (systemd-
/// only or pod keys, global podman options). Any other key must be accepted.
const UNSUPPORTED_CONTAINER_KEYS: &[&str] = &[
    "ContainersConfModule",
    "GlobalArgs",
    "Notify",
    "Pod",
    "ReloadCmd",
    "ReloadSignal",
    "StartWithPod",
];

/// `[Unit]` keys whose Quadlet-unit values (`After=db.container`) podman rewrites to service
/// names, which codeb cannot resolve (systemd.unit(5) dependency keys).
const UNIT_DEPENDENCY_KEYS: &[&str] = &[
    "After",
    "Before",
    "BindsTo",
    "Conflicts",
    "OnFailure",
    "OnSuccess",
    "PartOf",
    "PropagatesReloadTo",
    "PropagatesStopTo",
    "ReloadPropagatedFrom",
    "Requires",
    "Requisite",
    "StopPropagatedFrom",
    "Upholds",
    "Wants",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    Passed,
    AcceptedNothingToCheck,
    RefusedUnsupported,
    RefusedAsExpected,
    RefusedWherePodmanWarns,
    Failed,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Passed => "passed",
            Outcome::AcceptedNothingToCheck => "accepted (no podman-arg assertion to check)",
            Outcome::RefusedUnsupported => "refused (unsupported key)",
            Outcome::RefusedAsExpected => "refused-as-expected",
            Outcome::RefusedWherePodmanWarns => "refused (podman only warns)",
            Outcome::Failed => "failed",
        }
    }
}

#[derive(Default)]
struct Tally {
    checked: usize,
    prefix_only: usize,
    unchecked: BTreeMap<String, usize>,
}

enum Check {
    Held,
    Violated,
    PrefixOnly,
    Unchecked(String),
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for item in std::fs::read_dir(from)? {
        let item = item?;
        let target = to.join(item.file_name());
        if item.file_type()?.is_dir() {
            copy_tree(&item.path(), &target)?;
        } else {
            std::fs::copy(item.path(), &target)?;
        }
    }
    Ok(())
}

fn container_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for item in std::fs::read_dir(dir)? {
        let path = item?.path();
        if path.is_dir() {
            container_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "container") {
            out.push(path);
        }
    }
    Ok(())
}

/// What the test itself sees as beyond the crate's scope in a case: unknown `[Container]`
/// keys, references to other Quadlet units, optional devices, unknown `[Quadlet]` keys. Each
/// entry is (key the refusal must name, label for the report).
fn unsupported_in(unit: &UnitFile) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let ends = |v: &str, exts: &[&str]| exts.iter().any(|e| v.len() > e.len() && v.ends_with(e));
    if let Some(c) = unit.section("Container") {
        for key in c.keys() {
            if UNSUPPORTED_CONTAINER_KEYS.contains(&key) {
                found.push((key.to_string(), key.to_string()));
            }
        }
        if c.get("Image")
            .is_some_and(|v| ends(v, &[".image", ".build"]))
        {
            found.push(("Image".into(), "Image=<.image/.build unit>".into()));
        }
        if c.all("Network").iter().any(|e| {
            let name = e.value().split(':').next().unwrap_or_default();
            ends(name, &[".network", ".container"])
        }) {
            found.push((
                "Network".into(),
                "Network=<.network/.container unit>".into(),
            ));
        }
        if c.all("Volume").iter().any(|e| {
            let parts: Vec<&str> = e.value().splitn(3, ':').collect();
            parts.len() >= 2 && ends(parts[0], &[".volume"])
        }) {
            found.push(("Volume".into(), "Volume=<.volume unit>".into()));
        }
        if c.all("Mount").iter().any(|e| {
            e.value().split(',').any(|field| {
                let field = field.trim_matches('"');
                let source = field
                    .strip_prefix("source=")
                    .or_else(|| field.strip_prefix("src="));
                source.is_some_and(|s| ends(s, &[".volume", ".image", ".build", ".artifact"]))
            })
        }) {
            found.push((
                "Mount".into(),
                "Mount=<.volume/.image/.artifact unit>".into(),
            ));
        }
        if c.all("AddDevice")
            .iter()
            .any(|e| e.value().split_whitespace().any(|d| d.starts_with('-')))
        {
            found.push(("AddDevice".into(), "AddDevice=-<optional device>".into()));
        }
    }
    if let Some(q) = unit.section("Quadlet") {
        for key in q.keys() {
            if key != "DefaultDependencies" {
                found.push((key.to_string(), format!("[Quadlet] {key}")));
            }
        }
    }
    if let Some(u) = unit.section("Unit") {
        let exts = [
            ".container",
            ".volume",
            ".kube",
            ".network",
            ".image",
            ".build",
            ".pod",
            ".artifact",
        ];
        for key in UNIT_DEPENDENCY_KEYS {
            if u.all(key)
                .iter()
                .any(|e| e.value().split_whitespace().any(|d| ends(d, &exts)))
            {
                found.push((key.to_string(), format!("[Unit] {key}=<Quadlet unit>")));
            }
        }
    }
    found
}

/// A small regular-expression matcher (literals, `.`, `*`, `+`, `?`, `^`, `$`, `\` escapes of
/// punctuation) with Go's unanchored `MatchString` semantics. `None` when the pattern uses
/// anything else, so the assertion is reported as unchecked instead of guessed.
fn regex_match(pattern: &str, text: &str) -> Option<bool> {
    #[derive(Clone, Copy)]
    enum Atom {
        Lit(char),
        Any,
    }
    #[derive(Clone, Copy, PartialEq)]
    enum Rep {
        One,
        Star,
        Plus,
        Opt,
    }
    let mut atoms: Vec<(Atom, Rep)> = Vec::new();
    let mut chars = pattern.chars().peekable();
    let mut anchored_start = false;
    let mut anchored_end = false;
    let mut first = true;
    while let Some(c) = chars.next() {
        match c {
            '^' if first => anchored_start = true,
            '$' if chars.peek().is_none() => anchored_end = true,
            '\\' => {
                let next = chars.next()?;
                if next.is_alphanumeric() {
                    return None;
                }
                atoms.push((Atom::Lit(next), Rep::One));
            }
            '.' => atoms.push((Atom::Any, Rep::One)),
            '*' | '+' | '?' => {
                let last = atoms.last_mut()?;
                if last.1 != Rep::One {
                    return None;
                }
                last.1 = match c {
                    '*' => Rep::Star,
                    '+' => Rep::Plus,
                    _ => Rep::Opt,
                };
            }
            '[' | ']' | '(' | ')' | '{' | '}' | '|' | '^' | '$' => return None,
            other => atoms.push((Atom::Lit(other), Rep::One)),
        }
        first = false;
    }

    fn here(pat: &[(Atom, Rep)], text: &[char], end: bool) -> bool {
        let Some(((atom, rep), rest)) = pat.split_first() else {
            return !end || text.is_empty();
        };
        let matches = |c: char| match atom {
            Atom::Lit(l) => *l == c,
            Atom::Any => c != '\n',
        };
        match rep {
            Rep::One => text.first().is_some_and(|&c| matches(c)) && here(rest, &text[1..], end),
            Rep::Opt => {
                (text.first().is_some_and(|&c| matches(c)) && here(rest, &text[1..], end))
                    || here(rest, text, end)
            }
            Rep::Star | Rep::Plus => {
                let min = usize::from(*rep == Rep::Plus);
                let mut n = 0;
                while n < text.len() && matches(text[n]) {
                    n += 1;
                }
                (min..=n).rev().any(|k| here(rest, &text[k..], end))
            }
        }
    }

    let text: Vec<char> = text.chars().collect();
    if anchored_start {
        return Some(here(&atoms, &text, anchored_end));
    }
    Some((0..=text.len()).any(|i| here(&atoms, &text[i..], anchored_end)))
}

/// Go `encoding/csv` style split of one record with the given separator.
fn csv_fields(input: &str, sep: char) -> Option<Vec<String>> {
    let mut fields = Vec::new();
    let mut chars = input.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next()? {
                    '"' if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    '"' => break,
                    c => field.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == sep {
                    break;
                }
                if c == '"' {
                    return None;
                }
                field.push(c);
                chars.next();
            }
        }
        fields.push(field);
        match chars.next() {
            None => return Some(fields),
            Some(c) if c == sep => {}
            Some(_) => return None,
        }
    }
}

fn kv_map(input: &str, sep: &str) -> Option<BTreeMap<String, String>> {
    let sep = sep.chars().next()?;
    Some(
        csv_fields(input, sep)?
            .into_iter()
            .map(|f| match f.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (f, String::new()),
            })
            .collect(),
    )
}

fn find_sublist(list: &[String], sub: &[String], regex: bool) -> Option<Option<usize>> {
    if sub.is_empty() || sub.len() > list.len() {
        return Some(None);
    }
    for start in 0..=list.len() - sub.len() {
        if matches_at(list, start, sub, regex)? {
            return Some(Some(start));
        }
    }
    Some(None)
}

fn matches_at(list: &[String], start: usize, sub: &[String], regex: bool) -> Option<bool> {
    for (want, have) in sub.iter().zip(&list[start..]) {
        let ok = if regex {
            regex_match(want, have)?
        } else {
            want == have
        };
        if !ok {
            return Some(false);
        }
    }
    Some(true)
}

/// Evaluates one podman-argument assertion (op without `!`) against the unit.
fn check_podman_args(op: &str, args: &[String], unit: &ContainerUnit) -> Check {
    let list = unit.podman_run_args();
    let regex = op.ends_with("-regex");

    if op.starts_with("assert-podman-args-key-val") {
        let [flag, sep, expected] = args else {
            return Check::Unchecked(format!("{op} with {} arguments", args.len()));
        };
        let Some(want) = kv_map(expected, sep) else {
            return Check::Violated;
        };
        let mut from = 0;
        while let Some(offset) = list[from..].iter().position(|a| a == flag) {
            let at = from + offset;
            let Some(value) = list.get(at + 1) else { break };
            if let Some(have) = kv_map(value, sep) {
                let equal = if regex {
                    let mut all = want.len() == have.len();
                    for (k, pattern) in &want {
                        match have.get(k).map(|v| regex_match(pattern, v)) {
                            Some(Some(true)) => {}
                            Some(None) => return Check::Unchecked(format!("{op}: regex syntax")),
                            _ => all = false,
                        }
                    }
                    all
                } else {
                    want == have
                };
                if equal {
                    return Check::Held;
                }
            }
            from = at + 2;
            if from > list.len() {
                break;
            }
        }
        return Check::Violated;
    }

    // Strip the generator's systemd prefix; a `--name X` pair is checked against the name the
    // generator would use.
    let mut rest = Vec::new();
    let mut name = None;
    let mut whole_command = false;
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if i == 0 && a == "run" {
            whole_command = true;
        } else if a == "--name" && i + 1 < args.len() {
            name = Some(args[i + 1].clone());
            i += 1;
        } else if !(PREFIX_TOKENS.contains(&a.as_str()) || a.starts_with("--sdnotify=")) {
            rest.push(a.clone());
        }
        i += 1;
    }
    if rest.is_empty() && name.is_none() {
        return Check::PrefixOnly;
    }
    let mut ok = name.is_none_or(|n| n == unit.effective_container_name());
    if !rest.is_empty() {
        let held = match op {
            "assert-podman-args" | "assert-podman-args-regex" => {
                find_sublist(&list, &rest, regex).map(|at| at.is_some())
            }
            "assert-podman-final-args" | "assert-podman-final-args-regex" if whole_command => {
                // `run …` through the image: the whole list, once the prefix is gone.
                if list.len() == rest.len() {
                    matches_at(&list, 0, &rest, regex)
                } else {
                    Some(false)
                }
            }
            "assert-podman-final-args" | "assert-podman-final-args-regex" => {
                if list.len() < rest.len() {
                    Some(false)
                } else {
                    matches_at(&list, list.len() - rest.len(), &rest, regex)
                }
            }
            other => return Check::Unchecked(format!("unknown op {other}")),
        };
        match held {
            Some(h) => ok &= h,
            None => return Check::Unchecked(format!("{op}: regex syntax")),
        }
    }
    if ok { Check::Held } else { Check::Violated }
}

#[test]
fn podman_quadlet_corpus() {
    let source = Path::new(CORPUS);
    let manifest_path = source.join("cases_manifest.json");
    assert!(
        manifest_path.is_file(),
        "the podman Quadlet corpus is missing: expected {} (vendored in tests/corpora, see its SOURCE)",
        manifest_path.display()
    );
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&manifest_path).expect("read cases_manifest.json"),
    )
    .expect("cases_manifest.json is JSON");

    // podman's harness runs every case from <tmp>/podman-e2e-*/subtest-*/quadlet/, and the
    // regex assertions about resolved relative paths expect that layout.
    let tmp = tempfile::tempdir().expect("create a temporary directory");
    let root = tmp
        .path()
        .join("podman-e2e-codeb")
        .join("subtest-corpus")
        .join("quadlet");
    copy_tree(source, &root).expect("copy the corpus");

    let mut cases = Vec::new();
    container_files(&root, &mut cases).expect("list the corpus");
    cases.sort();
    assert!(
        cases.len() >= 100,
        "only {} .container cases found",
        cases.len()
    );

    let mut outcomes: BTreeMap<Outcome, Vec<String>> = BTreeMap::new();
    let mut failures: Vec<String> = Vec::new();
    let mut unsupported_seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut tally = Tally::default();
    let mut rows: Vec<String> = Vec::new();

    for path in &cases {
        let name = path
            .strip_prefix(&root)
            .expect("case under root")
            .to_string_lossy()
            .into_owned();
        let file_name = path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("utf-8 file name")
            .to_string();
        let text = std::fs::read_to_string(path).expect("read case");
        let meta = manifest.get(&file_name);
        let outcome_in_manifest = meta
            .and_then(|m| m.get("outcome"))
            .and_then(|o| o.as_str())
            .unwrap_or("");
        let stderr_expected = meta
            .and_then(|m| m.get("stderr_contains"))
            .and_then(|s| s.as_str());

        let mut checks: Vec<(bool, String, Vec<String>)> = Vec::new();
        for line in text.lines().filter(|l| l.starts_with("##")) {
            let words = shell_words::split(&line[2..])
                .unwrap_or_else(|e| panic!("{name}: cannot shell-split {line:?}: {e}"));
            let Some((op, rest)) = words.split_first() else {
                continue;
            };
            let (negated, op) = match op.strip_prefix('!') {
                Some(op) => (true, op.to_string()),
                None => (false, op.clone()),
            };
            let args = rest
                .iter()
                .map(|a| a.replace("\\n", "\n").replace("\\t", "\t"))
                .collect();
            checks.push((negated, op, args));
        }

        let expected_failure =
            outcome_in_manifest == "error" || checks.iter().any(|(_, op, _)| op == "assert-failed");
        let unsupported = UnitFile::load(path)
            .map(|u| unsupported_in(&u))
            .unwrap_or_default();
        let result = ContainerUnit::load(path);
        let mut detail = String::new();

        let outcome = if expected_failure {
            match &result {
                Err(e) => {
                    detail = format!(" ({})", e.key().unwrap_or("unit"));
                    Outcome::RefusedAsExpected
                }
                Ok(unit) => {
                    failures.push(format!(
                        "{name}: podman refuses this unit, but it was accepted with args {:?}",
                        unit.podman_run_args()
                    ));
                    Outcome::Failed
                }
            }
        } else if !unsupported.is_empty() {
            for (_, label) in &unsupported {
                *unsupported_seen.entry(label.clone()).or_default() += 1;
            }
            match &result {
                Err(e) => {
                    let message = e.to_string();
                    let names_key = unsupported
                        .iter()
                        .any(|(key, _)| e.key() == Some(key) && message.contains(key.as_str()));
                    if names_key {
                        let labels: Vec<&str> =
                            unsupported.iter().map(|(_, l)| l.as_str()).collect();
                        detail = format!(" ({})", labels.join(", "));
                        Outcome::RefusedUnsupported
                    } else {
                        failures.push(format!(
                            "{name}: refused, but the error does not name any of {:?}: {message}",
                            unsupported.iter().map(|(k, _)| k).collect::<Vec<_>>()
                        ));
                        Outcome::Failed
                    }
                }
                Ok(unit) => {
                    failures.push(format!(
                        "{name}: uses unsupported {:?} but was accepted with args {:?}",
                        unsupported.iter().map(|(_, l)| l).collect::<Vec<_>>(),
                        unit.podman_run_args()
                    ));
                    Outcome::Failed
                }
            }
        } else {
            match &result {
                Err(e) => {
                    let message = e.to_string();
                    let podman_warns = outcome_in_manifest == "warning"
                        && stderr_expected.is_some_and(|s| message.contains(s));
                    if podman_warns {
                        detail = format!(" ({})", e.key().unwrap_or("unit"));
                        Outcome::RefusedWherePodmanWarns
                    } else {
                        failures.push(format!("{name}: refused: {message}"));
                        Outcome::Failed
                    }
                }
                Ok(unit) => {
                    let mut violated = Vec::new();
                    let mut checked_here = 0;
                    for (negated, op, args) in &checks {
                        let check = if PODMAN_ARG_OPS.contains(&op.as_str()) {
                            check_podman_args(op, args, unit)
                        } else if op == "assert-stderr-contains" {
                            let want = args.first().map(String::as_str).unwrap_or_default();
                            if unit.warnings().iter().any(|w| w.to_string().contains(want)) {
                                Check::Held
                            } else {
                                Check::Violated
                            }
                        } else {
                            Check::Unchecked(op.clone())
                        };
                        match check {
                            Check::PrefixOnly => tally.prefix_only += 1,
                            Check::Unchecked(kind) => {
                                *tally.unchecked.entry(kind).or_default() += 1;
                            }
                            Check::Held | Check::Violated => {
                                tally.checked += 1;
                                checked_here += 1;
                                let held = matches!(check, Check::Held) != *negated;
                                if !held {
                                    violated.push(format!(
                                        "{}{op} {}",
                                        if *negated { "!" } else { "" },
                                        shell_words::join(args)
                                    ));
                                }
                            }
                        }
                    }
                    if !violated.is_empty() {
                        let mut msg = format!("{name}: assertions do not hold:");
                        for v in &violated {
                            let _ = write!(msg, "\n    {v}");
                        }
                        let _ = write!(msg, "\n  args: {}", unit.podman_run_args_shell());
                        for w in unit.warnings() {
                            let _ = write!(msg, "\n  warning: {w}");
                        }
                        failures.push(msg);
                        Outcome::Failed
                    } else if checked_here == 0 {
                        Outcome::AcceptedNothingToCheck
                    } else {
                        detail = format!(" ({checked_here} checked)");
                        Outcome::Passed
                    }
                }
            }
        };
        rows.push(format!("{name}: {}{detail}", outcome.label()));
        outcomes.entry(outcome).or_default().push(name);
    }

    assert!(
        failures.is_empty(),
        "{} corpus case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );

    let mut report = format!("{} .container cases\n", cases.len());
    for outcome in [
        Outcome::Passed,
        Outcome::AcceptedNothingToCheck,
        Outcome::RefusedUnsupported,
        Outcome::RefusedAsExpected,
        Outcome::RefusedWherePodmanWarns,
        Outcome::Failed,
    ] {
        let n = outcomes.get(&outcome).map_or(0, Vec::len);
        let _ = writeln!(report, "  {:<45} {n:>4}", outcome.label());
    }
    let _ = writeln!(
        report,
        "assertions: {} podman-arg/stderr checks evaluated, {} prefix-only skipped, {} unchecked",
        tally.checked,
        tally.prefix_only,
        tally.unchecked.values().sum::<usize>()
    );
    for (kind, n) in &tally.unchecked {
        let _ = writeln!(report, "  unchecked {kind:<40} {n:>4}");
    }
    report.push_str("unsupported keys/values (cases):\n");
    for (label, n) in &unsupported_seen {
        let _ = writeln!(report, "  {label:<45} {n:>4}");
    }
    report.push_str("\nper case:\n");
    for row in &rows {
        report.push_str(row);
        report.push('\n');
    }
    // Reviewed: every case's outcome. A case that moves (say from "passed" to "accepted, no
    // assertion to check") changes this snapshot.
    insta::assert_snapshot!("corpus_outcomes", report);
    assert!(
        outcomes.get(&Outcome::Passed).map_or(0, Vec::len) >= 70,
        "too few corpus cases were checked argument by argument:\n{report}"
    );
}

#[test]
fn regex_helper_matches_like_go() {
    assert_eq!(regex_match("a.*c", "xxabbbcyy"), Some(true));
    assert_eq!(regex_match("^a.*c$", "abbbc"), Some(true));
    assert_eq!(regex_match("^a.*c$", "abbbcd"), Some(false));
    assert_eq!(
        regex_match("/.*/x-.*/q/rel", "/tmp/a/x-1/q/rel"),
        Some(true)
    );
    assert_eq!(regex_match("ab?c", "ac"), Some(true));
    assert_eq!(regex_match("a+", "b"), Some(false));
    assert_eq!(regex_match("[ab]", "a"), None);
}
