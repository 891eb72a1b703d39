//! Can this host's podman run what a unit asks for? Checked in the deploy's preflight, on the
//! rendered unit, so that a host missing a piece is refused (exit 2, naming the Debian
//! package) before anything changes, rather than failing halfway through a deploy:
//! - `RunInit=true` (`podman run --init`) needs podman's init binary, catatonit: the
//!   `init_path` of containers.conf, else `catatonit` in its `helper_binaries_dir`;
//! - the systemd runtime needs Quadlet: podman 4.4 or newer with its generator installed.

use codeb_core::vars;
use codeb_quadlet::ContainerUnit;
use codeb_runtime::Podman;
use std::path::{Path, PathBuf};

/// podman's default when containers.conf sets no `init_path`.
pub const DEFAULT_INIT_PATH: &str = "/usr/libexec/podman/catatonit";
/// podman's default `helper_binaries_dir`.
const DEFAULT_HELPER_DIRS: [&str; 4] = [
    "/usr/local/libexec/podman",
    "/usr/local/lib/podman",
    "/usr/libexec/podman",
    "/usr/lib/podman",
];
/// Where distributions install podman's Quadlet generator.
const QUADLET_GENERATORS: [&str; 4] = [
    "/usr/lib/systemd/system-generators/podman-system-generator",
    "/usr/libexec/podman/quadlet",
    "/usr/lib/podman/quadlet",
    "/usr/local/libexec/podman/quadlet",
];

/// The `[engine]` settings of containers.conf that decide where the init binary is.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct EngineConf {
    pub init_path: Option<PathBuf>,
    pub helper_binaries_dir: Option<Vec<PathBuf>>,
}

/// containers.conf files in podman's order (later ones override): `$CONTAINERS_CONF` alone
/// when set, else the system files, the drop-ins and (not root) the user's file.
fn conf_files() -> Vec<PathBuf> {
    if let Some(f) = std::env::var_os(vars::CONTAINERS_CONF).filter(|v| !v.is_empty()) {
        return vec![PathBuf::from(f)];
    }
    let mut files = vec![
        PathBuf::from("/usr/share/containers/containers.conf"),
        PathBuf::from("/etc/containers/containers.conf"),
    ];
    if let Ok(dir) = std::fs::read_dir("/etc/containers/containers.conf.d") {
        let mut drop_ins: Vec<PathBuf> = dir
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "conf"))
            .collect();
        drop_ins.sort();
        files.extend(drop_ins);
    }
    if codeb_host::lockfile::euid() != 0 {
        let config = std::env::var_os(vars::XDG_CONFIG_HOME)
            .map(PathBuf::from)
            .or_else(|| std::env::var_os(vars::HOME).map(|h| PathBuf::from(h).join(".config")));
        if let Some(c) = config {
            files.push(c.join("containers/containers.conf"));
        }
    }
    files
}

/// Reads the `[engine]` settings from `files` (missing files are skipped).
pub fn engine_conf(files: &[PathBuf]) -> Result<EngineConf, String> {
    let mut out = EngineConf::default();
    for f in files {
        let Ok(text) = std::fs::read_to_string(f) else {
            continue;
        };
        let doc: toml::Table = toml::from_str(&text).map_err(|e| {
            format!(
                "podman's containers.conf {} is not valid TOML: {e}",
                f.display()
            )
        })?;
        let Some(engine) = doc.get("engine").and_then(toml::Value::as_table) else {
            continue;
        };
        if let Some(p) = engine.get("init_path").and_then(toml::Value::as_str) {
            out.init_path = (!p.is_empty()).then(|| PathBuf::from(p));
        }
        if let Some(dirs) = engine
            .get("helper_binaries_dir")
            .and_then(toml::Value::as_array)
        {
            out.helper_binaries_dir = Some(
                dirs.iter()
                    .filter_map(toml::Value::as_str)
                    .map(PathBuf::from)
                    .collect(),
            );
        }
    }
    Ok(out)
}

/// Where podman would find its init binary, or why it would not.
pub fn init_binary(conf: &EngineConf) -> Result<PathBuf, String> {
    let missing = |where_: String| {
        format!(
            "the unit runs with RunInit=true (podman run --init), but podman's init binary is missing on this host ({where_}): install it (Debian: apt-get install catatonit)"
        )
    };
    if let Some(p) = &conf.init_path {
        return if is_executable(p) {
            Ok(p.clone())
        } else {
            Err(missing(format!(
                "containers.conf init_path = {}",
                p.display()
            )))
        };
    }
    let dirs: Vec<PathBuf> = conf
        .helper_binaries_dir
        .clone()
        .unwrap_or_else(|| DEFAULT_HELPER_DIRS.iter().map(PathBuf::from).collect());
    for d in &dirs {
        let p = d.join("catatonit");
        if is_executable(&p) {
            return Ok(p);
        }
    }
    let default = Path::new(DEFAULT_INIT_PATH);
    if conf.helper_binaries_dir.is_none() && is_executable(default) {
        return Ok(default.to_owned());
    }
    let list: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    Err(missing(format!(
        "no catatonit in helper_binaries_dir {}",
        list.join(", ")
    )))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The Quadlet generator podman installed, if any.
pub fn quadlet_generator() -> Option<PathBuf> {
    QUADLET_GENERATORS
        .iter()
        .map(PathBuf::from)
        .find(|p| is_executable(p))
}

/// Refuses (with the fix) when this host's podman cannot run `unit` the way it will be run.
pub async fn can_run(unit: &ContainerUnit, systemd: bool, podman: &Podman) -> Result<(), String> {
    if unit.podman_run_args().iter().any(|a| a == "--init") {
        init_binary(&engine_conf(&conf_files())?)?;
    }
    if systemd {
        let version = podman.version().await.map_err(|e| e.to_string())?;
        if version < (4, 4) {
            return Err(format!(
                "the systemd runtime needs Quadlet, which podman {}.{} does not have (it arrived in podman 4.4): install podman >= 4.4 (Debian 13: apt-get install podman), or use --runtime podman",
                version.0, version.1
            ));
        }
        if quadlet_generator().is_none() {
            return Err(format!(
                "the systemd runtime needs podman's Quadlet generator, which is not installed (looked for {}): install it (Debian: apt-get install podman, >= 4.4), or use --runtime podman",
                QUADLET_GENERATORS.join(", ")
            ));
        }
        if !codeb_runtime::Systemd::is_running() {
            return Err(
                "the systemd runtime was chosen, but systemd is not running on this host (no /run/systemd/system): use --runtime podman or auto".into(),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_path_and_helper_dirs_come_from_the_last_containers_conf() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = dir.path().join("a.conf");
        let b = dir.path().join("b.conf");
        std::fs::write(&a, "[engine]\ninit_path = \"/x/catatonit\"\n").expect("write");
        std::fs::write(&b, "[engine]\nhelper_binaries_dir = [\"/h1\", \"/h2\"]\n").expect("write");
        let conf = engine_conf(&[a, b]).expect("parse");
        assert_eq!(conf.init_path, Some(PathBuf::from("/x/catatonit")));
        assert_eq!(
            conf.helper_binaries_dir,
            Some(vec![PathBuf::from("/h1"), PathBuf::from("/h2")])
        );
        let err = init_binary(&conf).expect_err("/x/catatonit does not exist");
        assert!(err.contains("apt-get install catatonit"), "{err}");
    }

    #[test]
    fn catatonit_is_found_in_a_helper_dir() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = dir.path().join("catatonit");
        std::fs::write(&bin, "#!/bin/sh\n").expect("write");
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let conf = EngineConf {
            init_path: None,
            helper_binaries_dir: Some(vec![PathBuf::from("/nonexistent"), dir.path().into()]),
        };
        assert_eq!(init_binary(&conf), Ok(bin));
    }
}
