//! The Kubernetes part of a project definition (scale-out phase 2) and the env-values
//! answer `we scale k8s` renders the Secret from. Pure data and its validation: the daemon
//! checks a stored spec with [`KubernetesSpec::check`], the renderer (crate `codeb-k8s`)
//! checks it again before building objects.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `ProjectSpec.kubernetes`: how the project runs on a cluster. Every field has a default,
/// so `{}` (or no `kubernetes` at all) means: namespace = project name, HPA 2-10 pods at
/// 70 % CPU, requests 100m CPU / 128Mi memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesSpec {
    /// The namespace every object goes to (must exist); the project name when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// HorizontalPodAutoscaler bounds: 1 <= min_replicas <= max_replicas <= 1000.
    #[serde(default = "default_min")]
    pub min_replicas: i32,
    #[serde(default = "default_max")]
    pub max_replicas: i32,
    /// Target average CPU utilization, percent of the CPU request (1-100).
    #[serde(default = "default_cpu_percent")]
    pub cpu_percent: i32,
    /// The container's CPU request (Kubernetes quantity: `100m`, `0.5`, `1`).
    #[serde(default = "default_cpu_request")]
    pub cpu_request: String,
    /// The container's memory request (`128Mi`, `1Gi`).
    #[serde(default = "default_memory_request")]
    pub memory_request: String,
    /// A memory limit, if any (no CPU limit: throttling hurts latency more than it helps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit: Option<String>,
    /// The Ingress host per environment (`production = "app.example.com"`); an environment
    /// without one gets an Ingress rule without host (every host).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub hosts: BTreeMap<String, String>,
    /// `spec.ingressClassName`; the cluster's default class when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_class: Option<String>,
}

fn default_min() -> i32 {
    2
}
fn default_max() -> i32 {
    10
}
fn default_cpu_percent() -> i32 {
    70
}
fn default_cpu_request() -> String {
    "100m".to_owned()
}
fn default_memory_request() -> String {
    "128Mi".to_owned()
}

impl Default for KubernetesSpec {
    fn default() -> Self {
        Self {
            namespace: None,
            min_replicas: default_min(),
            max_replicas: default_max(),
            cpu_percent: default_cpu_percent(),
            cpu_request: default_cpu_request(),
            memory_request: default_memory_request(),
            memory_limit: None,
            hosts: BTreeMap::new(),
            ingress_class: None,
        }
    }
}

/// Whether `s` is a DNS-1123 label (`[a-z0-9-]`, 1-63, no leading/trailing `-`).
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && !s.starts_with('-')
        && !s.ends_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Whether `s` is a Kubernetes quantity of the plain forms codeb accepts: a decimal number
/// with an optional suffix (`m`, `k`, `M`, `G`, `T`, `Ki`, `Mi`, `Gi`, `Ti`), not zero.
pub fn is_quantity(s: &str) -> bool {
    let num_end = s
        .bytes()
        .position(|b| !(b.is_ascii_digit() || b == b'.'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(num_end);
    let num_ok = !num.is_empty()
        && num.matches('.').count() <= 1
        && !num.starts_with('.')
        && !num.ends_with('.')
        && num.bytes().any(|b| (b'1'..=b'9').contains(&b));
    num_ok && ["", "m", "k", "M", "G", "T", "Ki", "Mi", "Gi", "Ti"].contains(&suffix)
}

impl KubernetesSpec {
    /// Checks every field; the error names the field, the rule and the value.
    pub fn check(&self) -> Result<(), String> {
        if let Some(ns) = &self.namespace
            && !is_dns_label(ns)
        {
            return Err(format!(
                "kubernetes.namespace {ns:?} is not a DNS label ([a-z0-9-], 1-63, no leading or trailing `-`)"
            ));
        }
        if self.min_replicas < 1 {
            return Err(format!(
                "kubernetes.min_replicas is {}; it must be at least 1",
                self.min_replicas
            ));
        }
        if self.min_replicas > self.max_replicas {
            return Err(format!(
                "kubernetes.min_replicas ({}) is greater than max_replicas ({}); give min_replicas <= max_replicas",
                self.min_replicas, self.max_replicas
            ));
        }
        if self.max_replicas > 1000 {
            return Err(format!(
                "kubernetes.max_replicas is {}; at most 1000",
                self.max_replicas
            ));
        }
        if !(1..=100).contains(&self.cpu_percent) {
            return Err(format!(
                "kubernetes.cpu_percent is {}; give a percentage of the CPU request, 1-100",
                self.cpu_percent
            ));
        }
        for (field, v) in [
            ("cpu_request", Some(&self.cpu_request)),
            ("memory_request", Some(&self.memory_request)),
            ("memory_limit", self.memory_limit.as_ref()),
        ] {
            if let Some(v) = v
                && !is_quantity(v)
            {
                return Err(format!(
                    "kubernetes.{field} {v:?} is not a Kubernetes quantity (e.g. 100m, 0.5, 128Mi, 1Gi)"
                ));
            }
        }
        for (env, host) in &self.hosts {
            if env != "production" && env != "staging" {
                return Err(format!(
                    "kubernetes.hosts has environment {env:?}; expected production or staging"
                ));
            }
            let host_ok = host.len() <= 253
                && host
                    .split('.')
                    .enumerate()
                    .all(|(i, l)| is_dns_label(l) || (i == 0 && l == "*"))
                && host.contains('.');
            if !host_ok {
                return Err(format!(
                    "kubernetes.hosts.{env} {host:?} is not a DNS name (lower-case labels joined by `.`, e.g. app.example.com)"
                ));
            }
        }
        if let Some(c) = &self.ingress_class
            && !is_dns_label(c)
        {
            return Err(format!("kubernetes.ingress_class {c:?} is not a DNS label"));
        }
        Ok(())
    }
}

/// `GET /api/v1/projects/{name}/env?environment=E`: the values of an environment's env
/// file, for `we scale k8s` to build the Secret from. Admins and the project's owners only;
/// the audit entry names the keys, never the values.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvValues {
    pub environment: String,
    /// Absent when the environment has no env file.
    pub values: Option<BTreeMap<String, String>>,
}

impl std::fmt::Debug for EnvValues {
    /// Keys only: a value must not reach a log through `{:?}`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnvValues")
            .field("environment", &self.environment)
            .field(
                "keys",
                &self.values.as_ref().map(|v| v.keys().collect::<Vec<_>>()),
            )
            .finish()
    }
}

/// `GET /api/v1/projects/{name}/env`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvQuery {
    /// `production` when absent.
    #[serde(default)]
    pub environment: Option<String>,
}

/// Parses an env file's text the way codeb reads env files: `KEY=value` lines (`export `
/// allowed, blank lines and `#` comments skipped; the value is the rest of the line taken
/// as is, quotes included, as podman's `--env-file` gives it to the container). A later
/// key wins.
pub fn parse_env_file(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let l = line.trim_start();
        if l.trim_end().is_empty() || l.starts_with('#') {
            continue;
        }
        let l = l.strip_prefix("export ").unwrap_or(l);
        let Some((k, v)) = l.split_once('=') else {
            return Err(format!("line {}: not KEY=value", n + 1));
        };
        let k = k.trim();
        let key_ok = !k.is_empty()
            && !k.starts_with(|c: char| c.is_ascii_digit())
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
        if !key_ok {
            return Err(format!(
                "line {}: key {k:?} is not [A-Za-z0-9_.-] starting with a letter or `_`",
                n + 1
            ));
        }
        out.insert(k.to_owned(), v.to_owned());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_manuals() {
        let k: KubernetesSpec = serde_json::from_str("{}").expect("parse");
        assert_eq!(k, KubernetesSpec::default());
        assert_eq!((k.min_replicas, k.max_replicas, k.cpu_percent), (2, 10, 70));
        assert_eq!(k.check(), Ok(()));
    }

    #[test]
    fn bad_bounds_are_refused_naming_the_field() {
        let with = |f: &dyn Fn(&mut KubernetesSpec)| {
            let mut k = KubernetesSpec::default();
            f(&mut k);
            k.check().expect_err("refused")
        };
        assert!(with(&|k| k.min_replicas = 0).contains("min_replicas is 0"));
        assert!(
            with(&|k| {
                k.min_replicas = 5;
                k.max_replicas = 4;
            })
            .contains("min_replicas (5) is greater than max_replicas (4)")
        );
        assert!(with(&|k| k.max_replicas = 1001).contains("max_replicas"));
        assert!(with(&|k| k.cpu_percent = 0).contains("cpu_percent"));
        assert!(with(&|k| k.cpu_percent = 101).contains("cpu_percent"));
        assert!(with(&|k| k.cpu_request = "lots".into()).contains("cpu_request"));
        assert!(with(&|k| k.memory_request = "0".into()).contains("memory_request"));
        assert!(with(&|k| k.memory_limit = Some("1GB".into())).contains("memory_limit"));
        assert!(with(&|k| k.namespace = Some("My_NS".into())).contains("namespace"));
        assert!(
            with(&|k| {
                k.hosts.insert("qa".into(), "a.example.com".into());
            })
            .contains("qa")
        );
        assert!(
            with(&|k| {
                k.hosts.insert("production".into(), "Not A Host".into());
            })
            .contains("hosts.production")
        );
        let mut ok = KubernetesSpec {
            min_replicas: 1,
            max_replicas: 1,
            ..KubernetesSpec::default()
        };
        ok.hosts
            .insert("production".into(), "app.example.com".into());
        assert_eq!(ok.check(), Ok(()));
        assert!(serde_json::from_str::<KubernetesSpec>(r#"{"min":2}"#).is_err());
    }

    #[test]
    fn quantities() {
        for ok in ["100m", "0.5", "1", "128Mi", "1Gi", "2.5G"] {
            assert!(is_quantity(ok), "{ok}");
        }
        for bad in ["", "0", "m", "1.", ".5", "1GB", "1e3", "-1", "1.2.3"] {
            assert!(!is_quantity(bad), "{bad}");
        }
    }

    #[test]
    fn env_files_parse_and_debug_hides_values() {
        let v =
            parse_env_file("# c\n\nexport A=1\nB=\"two words\"\nC=x=y \nD=\nA=3\n").expect("parse");
        assert_eq!(v["A"], "3");
        assert_eq!(v["B"], "\"two words\"");
        assert_eq!(v["C"], "x=y ");
        assert_eq!(v["D"], "");
        assert!(
            parse_env_file("NOEQUALS\n")
                .expect_err("bad")
                .contains("line 1")
        );
        assert!(parse_env_file("1X=2\n").is_err());
        let e = EnvValues {
            environment: "production".into(),
            values: Some(BTreeMap::from([("K".into(), "hunter2-secret".into())])),
        };
        let d = format!("{e:?}");
        assert!(d.contains("\"K\"") && !d.contains("hunter2"), "{d}");
    }
}
