//! The files the installer writes, embedded from `templates/` at build time; `--templates DIR`
//! overrides any of them with `DIR/<same relative path>`.

use std::path::{Path, PathBuf};

/// One template: its path under `templates/` and the embedded text.
#[derive(Debug, Clone, Copy)]
pub struct Embedded {
    pub rel: &'static str,
    pub text: &'static str,
}

pub const SYSCTL: Embedded = Embedded {
    rel: "sysctl/90-codeb.conf",
    text: include_str!("../../../templates/sysctl/90-codeb.conf"),
};
pub const DAEMON_UNIT: Embedded = Embedded {
    rel: "systemd/codeb-daemon.service",
    text: include_str!("../../../templates/systemd/codeb-daemon.service"),
};
pub const DAEMON_TOML: Embedded = Embedded {
    rel: "systemd/daemon.toml",
    text: include_str!("../../../templates/systemd/daemon.toml"),
};
pub const RESTORE_UNIT: Embedded = Embedded {
    rel: "systemd/codeb-restore-routes.service",
    text: include_str!("../../../templates/systemd/codeb-restore-routes.service"),
};
pub const RESTORE_DROPIN: Embedded = Embedded {
    rel: "install/codeb-restore-routes.service.d-50-codeb-install.conf",
    text: include_str!(
        "../../../templates/install/codeb-restore-routes.service.d-50-codeb-install.conf"
    ),
};
pub const CONTAINERS_CONF: Embedded = Embedded {
    rel: "install/containers.conf.d-90-codeb.conf",
    text: include_str!("../../../templates/install/containers.conf.d-90-codeb.conf"),
};

pub const ALL: [Embedded; 6] = [
    SYSCTL,
    DAEMON_UNIT,
    DAEMON_TOML,
    RESTORE_UNIT,
    RESTORE_DROPIN,
    CONTAINERS_CONF,
];

#[derive(Debug, thiserror::Error)]
#[error("cannot read template {}: {source}", path.display())]
pub struct TemplateError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// The embedded templates, each replaced by `dir/<rel>` where that file exists.
#[derive(Debug, Clone, Default)]
pub struct Templates {
    dir: Option<PathBuf>,
}

impl Templates {
    pub fn new(dir: Option<&Path>) -> Self {
        Self {
            dir: dir.map(Path::to_owned),
        }
    }

    pub fn get(&self, t: Embedded) -> Result<Vec<u8>, TemplateError> {
        if let Some(dir) = &self.dir {
            let path = dir.join(t.rel);
            match std::fs::read(&path) {
                Ok(b) => return Ok(b),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(TemplateError { path, source }),
            }
        }
        Ok(t.text.as_bytes().to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_overrides_only_the_files_it_has() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("sysctl")).expect("mkdir");
        std::fs::write(
            dir.path().join(SYSCTL.rel),
            "net.ipv4.tcp_migrate_req = 0\n",
        )
        .expect("write");
        let t = Templates::new(Some(dir.path()));
        assert_eq!(
            t.get(SYSCTL).expect("sysctl"),
            b"net.ipv4.tcp_migrate_req = 0\n"
        );
        assert_eq!(
            t.get(DAEMON_UNIT).expect("unit"),
            DAEMON_UNIT.text.as_bytes()
        );
    }

    #[test]
    fn every_embedded_template_is_the_file_under_templates() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../templates");
        for t in ALL {
            let on_disk = std::fs::read_to_string(root.join(t.rel)).expect(t.rel);
            assert_eq!(on_disk, t.text, "{}", t.rel);
        }
    }
}
