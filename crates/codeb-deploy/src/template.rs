//! The Quadlet `.container` unit codeb writes, rendered from a Tera template that is embedded
//! in the binary (`templates/quadlet/app.container.tera`) and can be overridden by a directory.

use crate::error::DeployError;
use serde::Serialize;
use std::path::Path;

const EMBEDDED: &str = include_str!("../../../templates/quadlet/app.container.tera");
const NAME: &str = "app.container.tera";

/// Everything the template sees.
#[derive(Debug, Clone, Serialize)]
pub struct UnitContext {
    pub codeb_version: String,
    pub project: String,
    pub environment: String,
    pub slot: String,
    pub image: String,
    pub pinned: String,
    pub digest: String,
    pub sha: String,
    pub container_name: String,
    pub publish_host: String,
    pub host_port: u16,
    pub container_port: u16,
    pub env_file: Option<String>,
    pub health_cmd: Option<String>,
    /// More `[Container]` lines, rendered after the fixed ones.
    #[serde(default)]
    pub extra: Vec<KeyValue>,
}

/// One `Key=value` line of a unit section.
#[derive(Debug, Clone, Serialize)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
}

/// A value for a unit file line: one line, `%` escaped for systemd specifiers.
fn unit_value(field: &str, v: &str) -> Result<String, DeployError> {
    if v.contains(['\n', '\r']) {
        return Err(DeployError::Input(format!(
            "{field} must be a single line, got {v:?}"
        )));
    }
    Ok(v.replace('%', "%%"))
}

/// Renders the unit text; `templates` is an optional directory holding an
/// `app.container.tera` that replaces the embedded one.
pub fn render_unit(ctx: &UnitContext, templates: Option<&Path>) -> Result<String, DeployError> {
    let mut tera = tera::Tera::default();
    let source = match templates.map(|d| d.join(NAME)) {
        Some(p) => {
            std::fs::read_to_string(&p).map_err(|source| DeployError::Io { path: p, source })?
        }
        None => EMBEDDED.to_owned(),
    };
    tera.add_raw_template(NAME, &source)
        .map_err(|e| DeployError::Input(format!("template {NAME}: {}", chain(&e))))?;
    let mut safe = ctx.clone();
    safe.image = unit_value("image", &ctx.image)?;
    safe.sha = unit_value("sha", &ctx.sha)?;
    safe.env_file = ctx
        .env_file
        .as_deref()
        .map(|f| unit_value("env file", f))
        .transpose()?;
    safe.health_cmd = ctx
        .health_cmd
        .as_deref()
        .map(|c| unit_value("health command", c))
        .transpose()?;
    for kv in &mut safe.extra {
        if kv.key.is_empty() || !kv.key.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(DeployError::Input(format!(
                "unit key {:?} is not a Quadlet key name",
                kv.key
            )));
        }
        kv.value = unit_value(&kv.key, &kv.value)?;
    }
    let context =
        tera::Context::from_serialize(&safe).map_err(|e| DeployError::Template(chain(&e)))?;
    tera.render(NAME, &context)
        .map_err(|e| DeployError::Input(format!("template {NAME}: {}", chain(&e))))
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> UnitContext {
        UnitContext {
            codeb_version: "0.1.0".into(),
            project: "myapp".into(),
            environment: "production".into(),
            slot: "green".into(),
            image: "ghcr.io/codeb/myapp:main".into(),
            pinned: format!("ghcr.io/codeb/myapp@sha256:{}", "a".repeat(64)),
            digest: format!("sha256:{}", "a".repeat(64)),
            sha: "0123456789abcdef0123456789abcdef01234567".into(),
            container_name: "myapp-production-green".into(),
            publish_host: "127.0.0.1".into(),
            host_port: 24001,
            container_port: 3000,
            env_file: Some("/home/codeb/env/myapp-production.env".into()),
            health_cmd: Some(crate::engine::DEFAULT_HEALTH_CMD.into()),
            extra: Vec::new(),
        }
    }

    #[test]
    fn extra_container_keys_are_rendered_and_checked() {
        let mut c = ctx();
        c.extra = vec![
            KeyValue {
                key: "UserNS".into(),
                value: "auto".into(),
            },
            KeyValue {
                key: "PodmanArgs".into(),
                value: "--memory=512m".into(),
            },
        ];
        let text = render_unit(&c, None).expect("renders");
        assert!(
            text.contains("\nUserNS=auto\nPodmanArgs=--memory=512m\n"),
            "{text}"
        );
        let unit = codeb_quadlet::ContainerUnit::parse("/x/a.container", &text).expect("valid");
        let args = unit.podman_run_args();
        assert!(args.iter().any(|a| a == "--memory=512m"), "{args:?}");
        c.extra[0].key = "Bad Key".into();
        assert!(render_unit(&c, None).is_err());
        c.extra[0].key = "UserNS".into();
        c.extra[0].value = "auto\nPrivileged=true".into();
        assert!(render_unit(&c, None).is_err());
    }

    #[test]
    fn renders_a_pinned_hardened_unit() {
        let text = render_unit(&ctx(), None).expect("renders");
        insta::assert_snapshot!("production_green", text);
        let unit = codeb_quadlet::ContainerUnit::parse(
            "/etc/containers/systemd/myapp-production-green.container",
            &text,
        )
        .expect("valid Quadlet");
        let args = unit.podman_run_args();
        assert_eq!(args.last().map(String::as_str), Some(ctx().pinned.as_str()));
        assert!(
            args.windows(2)
                .any(|w| w[0] == "--publish" && w[1] == "127.0.0.1:24001:3000"),
            "{args:?}"
        );
    }

    #[test]
    fn minimal_unit_without_env_file_or_health_cmd() {
        let mut c = ctx();
        c.env_file = None;
        c.health_cmd = None;
        c.sha = String::new();
        let text = render_unit(&c, None).expect("renders");
        insta::assert_snapshot!("minimal", text);
        codeb_quadlet::ContainerUnit::parse("/x/myapp-production-green.container", &text)
            .expect("valid Quadlet");
    }

    #[test]
    fn refuses_multiline_values_and_escapes_percent() {
        let mut c = ctx();
        c.health_cmd = Some("curl\nrm -rf /".into());
        assert!(render_unit(&c, None).is_err());
        let mut c = ctx();
        c.health_cmd = Some("test 100% ok".into());
        assert!(
            render_unit(&c, None)
                .expect("renders")
                .contains("HealthCmd=test 100%% ok")
        );
    }

    #[test]
    fn a_template_directory_overrides_and_errors_name_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(NAME), "[Container]\nImage={{ pinned }\n").expect("write");
        let err = render_unit(&ctx(), Some(dir.path())).expect_err("syntax error");
        assert!(err.to_string().contains(NAME), "{err}");
    }
}
