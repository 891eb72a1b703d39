//! Tidy: the invariants ARCHITECTURE.md states, checked on the sources (rust-analyzer's
//! `tidy`). Each failure names the file, the line and what to do instead.
//!
//! - only `codeb-daemon` depends on axum (serves HTTP);
//! - only `codeb-runtime` spawns processes (`std::process::Command`, `tokio::process`);
//! - `codeb-core` does no I/O: no I/O crate among its dependencies, no `std::fs`, `std::net`,
//!   `std::env`, `std::process` or tokio in its sources;
//! - environment variable names appear as string literals only in
//!   `crates/codeb-core/src/vars.rs`; everything else uses `codeb_core::vars::NAME`;
//! - the test bed (`codeb-testbed`) is never a normal dependency of a product crate, and the
//!   test-only containers.conf has one home (`tests/containers.conf`, embedded by the test
//!   bed as `TEST_CONTAINERS_CONF`): no other source writes its settings.
//!
//! "Product crates" are every crate under crates/ except the ones listed in [`NOT_PRODUCT`]
//! (benchmarks and test infrastructure, which start peers and set their environment). Test
//! code is exempt: `crates/*/tests/`, and a file's `#[cfg(test)]` module (everything from a
//! `#[cfg(test)]` line followed by `mod` to the end of the file).

use crate::util::repo;
use std::fs;
use std::path::{Path, PathBuf};

/// Crates under crates/ that are not product code.
const NOT_PRODUCT: &[&str] = &["codeb-bench", "codeb-testbed"];
/// The one crate that may serve HTTP.
const HTTP_SERVER: &str = "codeb-daemon";
/// The one crate that may spawn processes.
const SPAWNER: &str = "codeb-runtime";
/// What codeb-core may depend on (pure crates).
const CORE_DEPENDENCIES: &[&str] = &["thiserror", "yaml-rust2", "serde"];
/// Prefixes of the environment variables codeb and the Actions runner define.
const ENV_PREFIXES: &[&str] = &["CODEB_", "GITHUB_", "RUNNER_", "ACTIONS_", "INPUT_"];

struct Crate {
    name: String,
    dir: PathBuf,
    manifest: toml::Table,
}

fn crates() -> Vec<Crate> {
    let mut out = Vec::new();
    for e in fs::read_dir(repo().join("crates"))
        .expect("crates/")
        .flatten()
    {
        let dir = e.path();
        let Ok(text) = fs::read_to_string(dir.join("Cargo.toml")) else {
            continue;
        };
        let manifest: toml::Table = text
            .parse()
            .unwrap_or_else(|err| panic!("{}/Cargo.toml: {err}", dir.display()));
        let name = manifest["package"]["name"]
            .as_str()
            .expect("package.name")
            .to_owned();
        out.push(Crate {
            name,
            dir,
            manifest,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    assert!(out.len() >= 10, "found only {} crates", out.len());
    out
}

fn product(c: &Crate) -> bool {
    !NOT_PRODUCT.contains(&c.name.as_str())
}

/// Names of `[dependencies]` (normal, not dev or build) of a crate.
fn dependencies(c: &Crate) -> Vec<String> {
    c.manifest
        .get("dependencies")
        .and_then(|d| d.as_table())
        .map(|t| t.keys().cloned().collect())
        .unwrap_or_default()
}

/// Every `.rs` file under `dir`.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The lines of a source file that are not test code, numbered from 1.
fn product_lines(path: &Path) -> Vec<(usize, String)> {
    let text = fs::read_to_string(path).expect("read source");
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if line.trim() == "#[cfg(test)]"
            && lines
                .get(i + 1)
                .is_some_and(|n| n.trim_start().starts_with("mod "))
        {
            break;
        }
        out.push((i + 1, (*line).to_owned()));
    }
    out
}

fn rel(p: &Path) -> String {
    p.strip_prefix(repo()).unwrap_or(p).display().to_string()
}

/// The code of a line without a trailing `//` comment (good enough for these checks: none of
/// the patterns occurs inside a string that also holds `//`).
fn code(line: &str) -> &str {
    let t = line.trim_start();
    if t.starts_with("//") {
        return "";
    }
    line
}

fn report(violations: Vec<String>, rule: &str) {
    assert!(
        violations.is_empty(),
        "{rule}\n{} violation(s):\n  {}\n",
        violations.len(),
        violations.join("\n  ")
    );
}

#[test]
fn tidy_only_the_daemon_depends_on_axum() {
    let mut v = Vec::new();
    for c in crates().iter().filter(|c| product(c)) {
        if c.name != HTTP_SERVER && dependencies(c).iter().any(|d| d == "axum") {
            v.push(format!(
                "{}/Cargo.toml: {} depends on axum; only {HTTP_SERVER} serves HTTP (move the server into {HTTP_SERVER}, or use a client crate such as reqwest)",
                rel(&c.dir),
                c.name
            ));
        }
    }
    report(
        v,
        "ARCHITECTURE.md: only codeb-daemon serves HTTP (depends on axum)",
    );
}

#[test]
fn tidy_only_the_runtime_spawns_processes() {
    let mut v = Vec::new();
    for c in crates().iter().filter(|c| product(c) && c.name != SPAWNER) {
        for f in sources(&c.dir.join("src")) {
            for (n, line) in product_lines(&f) {
                let l = code(&line);
                let spawns = l.contains("process::Command")
                    || l.contains("tokio::process")
                    || (l.contains("std::process::{") && l.contains("Command"));
                if spawns {
                    v.push(format!(
                        "{}:{n}: `{}`: only {SPAWNER} spawns processes; call a codeb_runtime function (add one there, with a timeout and the child's stderr in its error)",
                        rel(&f),
                        line.trim()
                    ));
                }
            }
        }
    }
    report(v, "ARCHITECTURE.md: only codeb-runtime spawns processes");
}

#[test]
fn tidy_core_does_no_io() {
    let all = crates();
    let core = all
        .iter()
        .find(|c| c.name == "codeb-core")
        .expect("codeb-core");
    let mut v = Vec::new();
    for d in dependencies(core) {
        if !CORE_DEPENDENCIES.contains(&d.as_str()) {
            v.push(format!(
                "crates/codeb-core/Cargo.toml: dependency `{d}`: codeb-core may depend only on pure crates ({}); do the I/O in the caller and pass the facts in",
                CORE_DEPENDENCIES.join(", ")
            ));
        }
    }
    for f in sources(&core.dir.join("src")) {
        for (n, line) in product_lines(&f) {
            let l = code(&line);
            for io in [
                "std::fs",
                "std::net",
                "std::env",
                "std::process",
                "tokio",
                "File::",
            ] {
                if l.contains(io) {
                    v.push(format!(
                        "{}:{n}: `{}` uses {io}: codeb-core does no I/O; read or probe in the caller (codeb-host) and pass the result in",
                        rel(&f),
                        line.trim()
                    ));
                }
            }
        }
    }
    report(v, "ARCHITECTURE.md: codeb-core does no I/O");
}

/// String literals of a line that look like environment variable names.
fn env_literals(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(start) = rest.find('"') {
        let after = &rest[start + 1..];
        let Some(end) = after.find('"') else { break };
        let lit = &after[..end];
        let looks = ENV_PREFIXES.iter().any(|p| lit.starts_with(p))
            && lit
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
        if looks {
            out.push(lit.to_owned());
        }
        rest = &after[end + 1..];
    }
    out
}

#[test]
fn tidy_env_var_names_only_in_vars() {
    let vars_rs = repo().join("crates/codeb-core/src/vars.rs");
    let mut v = Vec::new();
    for c in crates().iter().filter(|c| product(c)) {
        for f in sources(&c.dir.join("src")) {
            if f == vars_rs {
                continue;
            }
            for (n, line) in product_lines(&f) {
                let l = code(&line);
                for lit in env_literals(l) {
                    v.push(format!(
                        "{}:{n}: \"{lit}\": use codeb_core::vars::{lit} (add it to crates/codeb-core/src/vars.rs if it is missing)",
                        rel(&f)
                    ));
                }
                if l.contains("env::var(\"") || l.contains("env::var_os(\"") {
                    v.push(format!(
                        "{}:{n}: `{}` reads an environment variable by a literal name: add the name to codeb_core::vars and use the constant",
                        rel(&f),
                        line.trim()
                    ));
                }
            }
        }
    }
    report(
        v,
        "ARCHITECTURE.md: every environment variable name lives in codeb_core::vars",
    );
}

/// The crate that holds the test infrastructure.
const TESTBED: &str = "codeb-testbed";

#[test]
fn tidy_product_crates_do_not_depend_on_the_testbed() {
    let mut v = Vec::new();
    for c in crates().iter().filter(|c| product(c)) {
        if dependencies(c).iter().any(|d| d == TESTBED) {
            v.push(format!(
                "{}/Cargo.toml: {} depends on {TESTBED}; test infrastructure is a dev-dependency only (move it to [dev-dependencies])",
                rel(&c.dir),
                c.name
            ));
        }
    }
    report(
        v,
        "ARCHITECTURE.md: the test bed is used by tests and codeb-bench, never by the product",
    );
}

/// A setting only the test-only containers.conf makes (the product's drop-in never does).
const TEST_CONF_SETTING: &str = "cgroup_manager = ";

#[test]
fn tidy_one_test_containers_conf() {
    let home = repo().join("crates").join(TESTBED);
    let mut files = sources(&repo().join("crates"));
    files.extend(sources(&repo().join("tests")));
    let mut v = Vec::new();
    for f in files.iter().filter(|f| !f.starts_with(&home)) {
        let text = fs::read_to_string(f).expect("read source");
        for (i, line) in text.lines().enumerate() {
            if code(line).contains(TEST_CONF_SETTING) {
                v.push(format!(
                    "{}:{}: writes the test containers.conf's settings; use codeb_testbed::TEST_CONTAINERS_CONF (tests/containers.conf)",
                    rel(f),
                    i + 1
                ));
            }
        }
    }
    // The rule's own pattern is not a copy.
    v.retain(|l| !l.starts_with("tests/integration/tidy.rs:"));
    report(
        v,
        "ARCHITECTURE.md: the test-only containers.conf has one home, tests/containers.conf",
    );
}

#[test]
fn tidy_checks_can_fail() {
    // The detectors themselves, on known input: each must see what it exists to see.
    assert_eq!(
        env_literals(r#"std::env::var("CODEB_X").or(Some("GITHUB_TOKEN")) "not_env" "PATH""#),
        ["CODEB_X", "GITHUB_TOKEN"]
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("x.rs");
    fs::write(
        &f,
        "use std::fs;\nfn a() {}\n#[cfg(test)]\nmod tests {\n    use std::process::Command;\n}\n",
    )
    .expect("write");
    let lines = product_lines(&f);
    assert_eq!(lines.len(), 2, "test modules are cut off: {lines:?}");
    assert!(lines[0].1.contains("std::fs"));
    assert_eq!(code("    // tokio::process is mentioned in a comment"), "");
}
