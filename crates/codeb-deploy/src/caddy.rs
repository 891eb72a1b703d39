//! The Caddy front of a target: a server named `codeb-<unit>` listening on the public port
//! and reverse-proxying to the active slot, and (for previews) host-name routes on a shared
//! server. Changed only through Caddy's admin API, which swaps configuration gracefully
//! (listeners are kept; requests in flight finish). Changes made by codeb processes on one
//! host are serialized through a lock file, and missing parents are created with PUT, which
//! fails instead of replacing what another writer made.

use crate::error::DeployError;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Caddy {
    admin: String,
    client: reqwest::Client,
    lock_file: Option<PathBuf>,
}

/// Holds the Caddy configuration lock until dropped.
pub struct CaddyLock {
    _file: Option<std::fs::File>,
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
            // Caddy closes idle admin connections when it reloads; a fresh connection per
            // call never meets one it already closed.
            .pool_max_idle_per_host(0)
            .no_proxy()
            .build()
            .map_err(|e| DeployError::Input(format!("cannot build an HTTP client: {e}")))?;
        Ok(Self {
            admin: admin.trim_end_matches('/').to_owned(),
            client,
            lock_file: None,
        })
    }

    /// Serialize configuration changes through this lock file.
    pub fn with_lock_file(mut self, path: PathBuf) -> Self {
        self.lock_file = Some(path);
        self
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

    async fn lock(&self) -> Result<CaddyLock, DeployError> {
        let Some(path) = &self.lock_file else {
            return Ok(CaddyLock { _file: None });
        };
        let io = |source| DeployError::Io {
            path: path.clone(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(io)?;
        let start = Instant::now();
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(CaddyLock { _file: Some(file) }),
                Err(std::fs::TryLockError::WouldBlock)
                    if start.elapsed() < Duration::from_secs(60) =>
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(self.err(format!(
                        "the Caddy config lock {} stayed taken for 60 s",
                        path.display()
                    )));
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
            }
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
        let mut attempt = 0;
        let resp = loop {
            let Some(r) = req.try_clone() else {
                return Err(self.err(format!("{method} {path}: cannot build the request")));
            };
            match r.send().await {
                Ok(resp) => break resp,
                // Reads are retried: a reload of Caddy can drop a connection.
                Err(e) if method == reqwest::Method::GET && attempt < 2 => {
                    attempt += 1;
                    tracing::debug!(%e, "retrying {method} {path}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => {
                    return Err(self.err(format!(
                        "{method} {path}: {e}; is Caddy running with its admin API there? (--caddy-admin)"
                    )));
                }
            }
        };
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        Ok((status, text))
    }

    async fn config(&self) -> Result<Value, DeployError> {
        let (status, text) = self.call(reqwest::Method::GET, "/config/", None).await?;
        if status != 200 {
            return Err(self.err(format!("GET /config/ answered {status}: {}", text.trim())));
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Fails unless the admin API answers.
    pub async fn check(&self) -> Result<(), DeployError> {
        self.config().await.map(drop)
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

    /// Creates server `name` under apps/http/servers, creating missing parents with PUT and
    /// trying again when another writer got there first.
    async fn create_server(&self, name: &str, server: Value) -> Result<(), DeployError> {
        let mut last = String::new();
        for _ in 0..5 {
            let config = self.config().await?;
            let (method, path, body) = if config
                .pointer("/apps/http/servers")
                .is_some_and(Value::is_object)
            {
                (
                    reqwest::Method::PUT,
                    format!("/config/apps/http/servers/{name}"),
                    server.clone(),
                )
            } else if config.pointer("/apps/http").is_some_and(Value::is_object) {
                (
                    reqwest::Method::PUT,
                    "/config/apps/http/servers".into(),
                    json!({ name: server }),
                )
            } else if config.pointer("/apps").is_some_and(Value::is_object) {
                (
                    reqwest::Method::PUT,
                    "/config/apps/http".into(),
                    json!({ "servers": { name: server } }),
                )
            } else if config.is_object() {
                (
                    reqwest::Method::PUT,
                    "/config/apps".into(),
                    json!({ "http": { "servers": { name: server } } }),
                )
            } else {
                (
                    reqwest::Method::POST,
                    "/config/".into(),
                    json!({ "apps": { "http": { "servers": { name: server } } } }),
                )
            };
            let (status, text) = self.call(method.clone(), &path, Some(&body)).await?;
            if status == 200 {
                return Ok(());
            }
            last = format!("{method} {path} answered {status}: {}", text.trim());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(self.err(last))
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
        let _lock = self.lock().await?;
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
        self.create_server(&server_name(unit), server).await
    }

    /// Puts a route `@id = route_id` matching `host` and proxying to `127.0.0.1:upstream` on
    /// server `server` (created listening on `listen` if missing), replacing a route of the
    /// same id. Used for preview host names (`pr-7.preview.example.com`).
    pub async fn host_route(
        &self,
        server: &str,
        listen: &str,
        route_id: &str,
        host: &str,
        upstream: u16,
    ) -> Result<(), DeployError> {
        let _lock = self.lock().await?;
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
        let config = self.config().await?;
        if config
            .pointer(&format!("/apps/http/servers/{server}/routes"))
            .is_some_and(Value::is_array)
        {
            let path = format!("/config/apps/http/servers/{server}/routes");
            let (status, text) = self
                .call(reqwest::Method::POST, &path, Some(&route))
                .await?;
            if status != 200 {
                return Err(self.err(format!("POST {path} answered {status}: {}", text.trim())));
            }
            return Ok(());
        }
        let srv = json!({
            "@id": server,
            "listen": [listen],
            "automatic_https": { "disable": true },
            "routes": [route],
        });
        self.create_server(server, srv).await
    }

    /// Deletes the configuration object with `@id = id`; a missing one is fine.
    pub async fn remove_id(&self, id: &str) -> Result<(), DeployError> {
        let _lock = self.lock().await?;
        let path = format!("/id/{id}");
        let (status, text) = self.call(reqwest::Method::DELETE, &path, None).await?;
        if status == 200 || status == 404 || text.contains("unknown object ID") {
            Ok(())
        } else {
            Err(self.err(format!("DELETE {path} answered {status}: {}", text.trim())))
        }
    }

    /// Removes the target's front (used by preview teardown).
    pub async fn remove(&self, unit: &str) -> Result<(), DeployError> {
        self.remove_id(&server_name(unit)).await
    }

    /// Every `@id` in Caddy's configuration that starts with `prefix`.
    pub async fn ids_with_prefix(&self, prefix: &str) -> Result<Vec<String>, DeployError> {
        let config = self.config().await?;
        let mut out = Vec::new();
        collect_ids(&config, prefix, &mut out);
        Ok(out)
    }
}

fn collect_ids(v: &Value, prefix: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            if let Some(id) = map.get("@id").and_then(Value::as_str)
                && id.starts_with(prefix)
            {
                out.push(id.to_owned());
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
