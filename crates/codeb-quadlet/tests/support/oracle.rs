//! podman's own Quadlet generators as test oracles: `usr/libexec/podman/quadlet` of Debian's
//! podman packages, one per version in [`codeb_quadlet::CHECKED_GENERATORS`], extracted by
//! `scripts/setup` into `/var/cache/codeb/quadlet/<major.minor>/`. Shared by
//! `crates/codeb-quadlet/tests/generator.rs` and `crates/codeb-deploy/tests/generator.rs`.
#![allow(dead_code)] // each test binary uses a part

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use codeb_quadlet::{CHECKED_GENERATORS, ContainerUnit, PodmanVersion, SplitMode, split_words};

pub const GENERATOR_ROOT: &str = "/var/cache/codeb/quadlet";

pub struct Generator {
    /// `MAJOR.MINOR`, as in [`CHECKED_GENERATORS`].
    pub version: PodmanVersion,
    /// What the binary says (`quadlet -version`).
    pub full: String,
    pub path: PathBuf,
}

/// Every checked generator; panics with the setup instruction when one is missing.
pub fn generators() -> Vec<Generator> {
    CHECKED_GENERATORS
        .iter()
        .map(|v| {
            let path = Path::new(GENERATOR_ROOT).join(v.to_string()).join("quadlet");
            let out = Command::new(&path).arg("-version").output().unwrap_or_else(|e| {
                panic!(
                    "podman {v}'s Quadlet generator is missing ({}: {e}): run scripts/setup, which \
                     extracts usr/libexec/podman/quadlet from Debian's podman package into {GENERATOR_ROOT}",
                    path.display()
                )
            });
            let full = String::from_utf8_lossy(&out.stdout).trim().to_string();
            let parsed: PodmanVersion = full
                .parse()
                .unwrap_or_else(|e| panic!("{}: -version printed {full:?}: {e}", path.display()));
            assert_eq!(
                parsed.minor_version(),
                *v,
                "{} is podman {full}, expected {v}.x: run scripts/setup again",
                path.display()
            );
            Generator {
                version: *v,
                full,
                path,
            }
        })
        .collect()
}

/// What one generator made of one unit.
#[derive(Debug)]
pub enum Generated {
    /// The `podman run` words of its `ExecStart=` (without `/usr/bin/podman`).
    Service { exec_start: Vec<String> },
    /// No service for the unit: the generator's messages about it.
    Rejected { message: String },
}

impl Generator {
    /// `QUADLET_UNIT_DIRS=dir quadlet -dryrun`: what became of the unit file `unit` in `dir`
    /// (the service whose `SourcePath=` is that file).
    pub fn convert(&self, dir: &Path, unit: &Path) -> Generated {
        let out = Command::new(&self.path)
            .arg("-dryrun")
            .env("QUADLET_UNIT_DIRS", dir)
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", self.path.display()));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let source = format!("SourcePath={}", unit.display());
        for service in stdout.split("\n---").map(|s| s.trim_start_matches("---")) {
            if !service.lines().any(|l| l == source) {
                continue;
            }
            let Some(exec) = service
                .lines()
                .filter_map(|l| l.strip_prefix("ExecStart="))
                .next_back()
            else {
                return Generated::Rejected {
                    message: format!("no ExecStart= in the generated service:\n{service}"),
                };
            };
            let mut words = split_words(exec, SplitMode::Args)
                .unwrap_or_else(|e| panic!("cannot split ExecStart={exec}: {e}"));
            if words.first().map(String::as_str) == Some("/usr/bin/podman") {
                words.remove(0);
            }
            return Generated::Service { exec_start: words };
        }
        let file = unit
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let about: Vec<&str> = stderr
            .lines()
            .filter(|l| !l.contains("Loading source unit file") && !l.contains("Warning:"))
            .filter(|l| l.contains(&format!("\"{file}\"")) || !l.contains("converting \""))
            .collect();
        Generated::Rejected {
            message: if about.is_empty() {
                format!("exit {:?}, no message", out.status.code())
            } else {
                about.join("\n")
            },
        }
    }
}

/// The generator's fixed prefix: `--name N`, `--replace`, `--rm`, `--cgroups=split`,
/// `--sdnotify=…`, `-d`, and 5.4's `--cidfile=%t/%N.cid` (each once), removed; returns the name and the rest.
fn strip_prefix(words: &[String]) -> (Option<String>, Vec<String>) {
    let mut rest = Vec::new();
    let mut name = None;
    let mut seen: Vec<&str> = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let w = words[i].as_str();
        let fixed = match w {
            // podman 5.4 also writes --cidfile=%t/%N.cid (its ExecStop uses the file).
            "--replace" | "--rm" | "--cgroups=split" | "-d" | "--cidfile=%t/%N.cid" => Some(w),
            _ if w.starts_with("--sdnotify=") => Some("--sdnotify"),
            _ => None,
        };
        if w == "--name" && name.is_none() && i + 1 < words.len() {
            name = Some(words[i + 1].clone());
            i += 2;
            continue;
        }
        if let Some(f) = fixed
            && !seen.contains(&f)
        {
            seen.push(f);
            i += 1;
            continue;
        }
        rest.push(words[i].clone());
        i += 1;
    }
    (name, rest)
}

/// Flags as groups: a word starting with `-` and the words after it that do not
/// (`--flag=value` is read as `--flag value`, which podman takes the same).
fn groups(words: &[String]) -> Vec<Vec<String>> {
    let mut out: Vec<Vec<String>> = Vec::new();
    for w in words {
        if let Some((flag, value)) = w.split_once('=')
            && flag.starts_with("--")
        {
            out.push(vec![flag.to_string(), value.to_string()]);
            continue;
        }
        match out.last_mut() {
            Some(g) if !w.starts_with('-') => g.push(w.clone()),
            _ => out.push(vec![w.clone()]),
        }
    }
    out
}

/// Compares codeb's `podman run` arguments for `unit` with the generator's `ExecStart=` words:
/// the generator's fixed prefix removed, the container name equal, the image (or rootfs) and
/// the command after it equal in order, and the flags before it equal as a multiset of flag
/// groups (podman orders some of them from Go maps), with each flag's values in the same order.
pub fn compare(unit: &ContainerUnit, exec_start: &[String]) -> Result<(), String> {
    let shown = || {
        format!(
            "\n  codeb:     {}\n  generator: {}",
            unit.podman_run_args_shell(),
            shell_words::join(exec_start)
        )
    };
    let Some(("run", words)) = exec_start.split_first().map(|(a, r)| (a.as_str(), r)) else {
        return Err(format!(
            "the generator's ExecStart is not `podman run`{}",
            shown()
        ));
    };
    let (name, theirs) = strip_prefix(words);
    let want_name = unit.effective_container_name();
    if name.as_deref() != Some(want_name.as_str()) {
        return Err(format!(
            "container name: generator {name:?}, codeb {want_name:?}{}",
            shown()
        ));
    }
    let ours = unit.podman_run_args();
    let tail = unit.exec().len() + if unit.image().is_some() { 1 } else { 2 };
    if ours.len() < tail || theirs.len() < tail {
        return Err(format!("too few arguments{}", shown()));
    }
    let (our_flags, our_tail) = ours.split_at(ours.len() - tail);
    let (gen_flags, gen_tail) = theirs.split_at(theirs.len() - tail);
    if our_tail != gen_tail {
        return Err(format!(
            "image and command differ: codeb {our_tail:?}, generator {gen_tail:?}{}",
            shown()
        ));
    }
    let mut a = groups(our_flags);
    let mut b = groups(gen_flags);
    let per_flag = |g: &[Vec<String>]| {
        let mut m: BTreeMap<String, Vec<Vec<String>>> = BTreeMap::new();
        for group in g {
            m.entry(group[0].clone())
                .or_default()
                .push(group[1..].to_vec());
        }
        m
    };
    let (ma, mb) = (per_flag(&a), per_flag(&b));
    a.sort();
    b.sort();
    if a != b {
        let only_codeb: Vec<String> = a
            .iter()
            .filter(|g| !b.contains(g))
            .map(|g| g.join(" "))
            .collect();
        let only_gen: Vec<String> = b
            .iter()
            .filter(|g| !a.contains(g))
            .map(|g| g.join(" "))
            .collect();
        return Err(format!(
            "flags differ: only codeb {only_codeb:?}, only the generator {only_gen:?}{}",
            shown()
        ));
    }
    if ma != mb {
        return Err(format!(
            "the values of a repeated flag come in another order{}",
            shown()
        ));
    }
    Ok(())
}
