//! The Caddy front of a target: a server named `codeb-<unit>` listening on the public port
//! and reverse-proxying to the active slot. Changed only through Caddy's admin API, which
//! swaps configuration gracefully (listeners are kept; requests in flight finish).

use crate::error::DeployError;
use serde_json::{Value, json};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Caddy {
    admin: String,
    client: reqwest::Client,
}

fn server_name(unit: &str) -> String {
    format!("codeb-{unit}")
}

fn proxy_id(unit: &str) -> String {
    format!("codeb-{unit}-proxy")
}

impl Caddy {
    pub fn new(admin: &str) -> Result<Self, DeployError> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .user_agent(concat!("codeb/", env!("CARGO_PKG_VERSION")))
            .no_proxy()
            .build()
            .map_err(|e| DeployError::Input(format!("cannot build an HTTP client: {e}")))?;
        Ok(Self {
            admin: admin.trim_end_matches('/').to_owned(),
            client,
        })
    }

    pub fn admin_url(&self) -> &str {
        &self.admin
    }

    fn err(&self, detail: impl Into<String>) -> DeployError {
        DeployError::Caddy {
            url: self.admin.clone(),
            detail: detail.into(),
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, String), DeployError> {
        let url = format!("{}{path}", self.admin);
        let mut req = self.client.request(method.clone(), &url);
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await.map_err(|e| {
            self.err(format!(
                "{method} {path}: {e}; is Caddy running with its admin API there? (--caddy-admin)"
            ))
        })?;
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        Ok((status, text))
    }

    /// Fails unless the admin API answers.
    pub async fn check(&self) -> Result<(), DeployError> {
        let (status, text) = self.call(reqwest::Method::GET, "/config/", None).await?;
        if status == 200 {
            Ok(())
        } else {
            Err(self.err(format!("GET /config/ answered {status}: {}", text.trim())))
        }
    }

    /// The slot port the target's front proxies to now, if the front exists.
    pub async fn upstream(&self, unit: &str) -> Result<Option<u16>, DeployError> {
        let path = format!("/id/{}/upstreams", proxy_id(unit));
        let (status, text) = self.call(reqwest::Method::GET, &path, None).await?;
        if status != 200 {
            return Ok(None);
        }
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(v.get(0)
            .and_then(|u| u.get("dial"))
            .and_then(Value::as_str)
            .and_then(|d| d.rsplit(':').next())
            .and_then(|p| p.parse().ok()))
    }

    /// Points the target's front (listening on `listen_host:public`) at `upstream`, creating
    /// the front when it does not exist.
    pub async fn route(
        &self,
        unit: &str,
        listen_host: &str,
        public: u16,
        upstream: u16,
    ) -> Result<(), DeployError> {
        let dial = json!([{ "dial": format!("127.0.0.1:{upstream}") }]);
        if self.upstream(unit).await?.is_some() {
            let path = format!("/id/{}/upstreams", proxy_id(unit));
            let (status, text) = self
                .call(reqwest::Method::PATCH, &path, Some(&dial))
                .await?;
            if status != 200 {
                return Err(self.err(format!("PATCH {path} answered {status}: {}", text.trim())));
            }
            return Ok(());
        }
        let server = json!({
            "@id": server_name(unit),
            "listen": [format!("{listen_host}:{public}")],
            "automatic_https": { "disable": true },
            "routes": [{
                "handle": [{
                    "@id": proxy_id(unit),
                    "handler": "reverse_proxy",
                    "upstreams": dial,
                }]
            }]
        });
        // Create the path down to apps/http/servers as far as it is missing.
        let (status, text) = self.call(reqwest::Method::GET, "/config/", None).await?;
        if status != 200 {
            return Err(self.err(format!("GET /config/ answered {status}: {}", text.trim())));
        }
        let config: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let name = server_name(unit);
        let (path, body) = if config
            .pointer("/apps/http/servers")
            .is_some_and(Value::is_object)
        {
            (format!("/config/apps/http/servers/{name}"), server)
        } else if config.pointer("/apps/http").is_some_and(Value::is_object) {
            ("/config/apps/http/servers".into(), json!({ name: server }))
        } else if config.pointer("/apps").is_some_and(Value::is_object) {
            (
                "/config/apps/http".into(),
                json!({ "servers": { name: server } }),
            )
        } else if config.is_object() {
            (
                "/config/apps".into(),
                json!({ "http": { "servers": { name: server } } }),
            )
        } else {
            (
                "/config/".into(),
                json!({ "apps": { "http": { "servers": { name: server } } } }),
            )
        };
        let (status, text) = self.call(reqwest::Method::POST, &path, Some(&body)).await?;
        if status != 200 {
            return Err(self.err(format!("POST {path} answered {status}: {}", text.trim())));
        }
        Ok(())
    }

    /// Creates server `server` (listening on `listen`) if it is missing, then puts a route
    /// `@id = route_id` matching `host` and proxying to `127.0.0.1:upstream` on it, replacing
    /// a route of the same id. Used for preview host names (`pr-7.preview.example.com`).
    pub async fn host_route(
        &self,
        server: &str,
        listen: &str,
        route_id: &str,
        host: &str,
        upstream: u16,
    ) -> Result<(), DeployError> {
        let route = json!({
            "@id": route_id,
            "match": [{ "host": [host] }],
            "handle": [{ "handler": "reverse_proxy", "upstreams": [{ "dial": format!("127.0.0.1:{upstream}") }] }],
            "terminal": true
        });
        let (status, _) = self
            .call(reqwest::Method::GET, &format!("/id/{route_id}"), None)
            .await?;
        if status == 200 {
            let path = format!("/id/{route_id}");
            let (status, text) = self
                .call(reqwest::Method::PATCH, &path, Some(&route))
                .await?;
            if status != 200 {
                return Err(self.err(format!("PATCH {path} answered {status}: {}", text.trim())));
            }
            return Ok(());
        }
        let (status, text) = self.call(reqwest::Method::GET, "/config/", None).await?;
        if status != 200 {
            return Err(self.err(format!("GET /config/ answered {status}: {}", text.trim())));
        }
        let config: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let (path, body) = if config
            .pointer(&format!("/apps/http/servers/{server}/routes"))
            .is_some_and(Value::is_array)
        {
            (format!("/config/apps/http/servers/{server}/routes"), route)
        } else {
            let srv = json!({
                "@id": server,
                "listen": [listen],
                "automatic_https": { "disable": true },
                "routes": [route],
            });
            if config
                .pointer("/apps/http/servers")
                .is_some_and(Value::is_object)
            {
                (format!("/config/apps/http/servers/{server}"), srv)
            } else if config.pointer("/apps/http").is_some_and(Value::is_object) {
                ("/config/apps/http/servers".into(), json!({ server: srv }))
            } else if config.pointer("/apps").is_some_and(Value::is_object) {
                (
                    "/config/apps/http".into(),
                    json!({ "servers": { server: srv } }),
                )
            } else if config.is_object() {
                (
                    "/config/apps".into(),
                    json!({ "http": { "servers": { server: srv } } }),
                )
            } else {
                (
                    "/config/".into(),
                    json!({ "apps": { "http": { "servers": { server: srv } } } }),
                )
            }
        };
        let (status, text) = self.call(reqwest::Method::POST, &path, Some(&body)).await?;
        if status != 200 {
            return Err(self.err(format!("POST {path} answered {status}: {}", text.trim())));
        }
        Ok(())
    }

    /// Deletes the configuration object with `@id = id`; a missing one is fine.
    pub async fn remove_id(&self, id: &str) -> Result<(), DeployError> {
        let path = format!("/id/{id}");
        let (status, text) = self.call(reqwest::Method::DELETE, &path, None).await?;
        if status == 200 || status == 404 || text.contains("unknown object ID") {
            Ok(())
        } else {
            Err(self.err(format!("DELETE {path} answered {status}: {}", text.trim())))
        }
    }

    /// Every `@id` in Caddy's configuration that starts with `prefix`.
    pub async fn ids_with_prefix(&self, prefix: &str) -> Result<Vec<String>, DeployError> {
        let (status, text) = self.call(reqwest::Method::GET, "/config/", None).await?;
        if status != 200 {
            return Err(self.err(format!("GET /config/ answered {status}: {}", text.trim())));
        }
        let config: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let mut out = Vec::new();
        collect_ids(&config, prefix, &mut out);
        Ok(out)
    }

    /// Removes the target's front (used by preview teardown).
    pub async fn remove(&self, unit: &str) -> Result<(), DeployError> {
        let path = format!("/id/{}", server_name(unit));
        let (status, text) = self.call(reqwest::Method::DELETE, &path, None).await?;
        if status == 200 || status == 404 {
            Ok(())
        } else if text.contains("unknown object ID") {
            Ok(())
        } else {
            Err(self.err(format!("DELETE {path} answered {status}: {}", text.trim())))
        }
    }
}

fn collect_ids(v: &Value, prefix: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            if let Some(id) = map.get("@id").and_then(Value::as_str) {
                if id.starts_with(prefix) {
                    out.push(id.to_owned());
                }
            }
            for child in map.values() {
                collect_ids(child, prefix, out);
            }
        }
        Value::Array(items) => {
            for child in items {
                collect_ids(child, prefix, out);
            }
        }
        _ => {}
    }
}
