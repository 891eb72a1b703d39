//! The Caddy front of a target: a server named `codeb-<unit>` listening on the public port
//! and reverse-proxying to the active slot, and (for previews) host-name routes on a shared
//! server. Changed only through Caddy's admin API, which swaps configuration gracefully
//! (listeners are kept; requests in flight finish). Changes made by codeb processes on one
//! host are serialized through a lock file, and missing parents are created with PUT, which
//! fails instead of replacing what another writer made.
//!
//! The admin API is reached over Caddy's admin unix socket (`unix//run/caddy/admin.sock`,
//! protected by the socket file's permissions: the recommended setup) or over loopback TCP
//! (`http://127.0.0.1:2019`). Caddy's admin API has no authentication of its own, so any
//! other address is refused unless the caller explicitly allows it.

use crate::error::DeployError;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Caddy {
    /// The admin address as given (for messages).
    admin: String,
    /// The URL requests go to (`http://localhost` over a unix socket).
    base: String,
    /// Over a unix socket Caddy only accepts an empty `Host` (its origin for unix listeners).
    empty_host: bool,
    client: reqwest::Client,
    lock_file: Option<PathBuf>,
}

/// Where Caddy's admin API is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminAddress {
    /// Caddy's `unix//path` form: a unix socket.
    Unix(PathBuf),
    /// An `http://` or `https://` URL; `loopback` when its host is 127.0.0.0/8, ::1 or
    /// `localhost`.
    Http { url: String, loopback: bool },
}

impl AdminAddress {
    /// Parses `unix//abs/path.sock` or an `http(s)://host:port` URL.
    pub fn parse(admin: &str) -> Result<Self, DeployError> {
        let bad = |why: &str| {
            DeployError::Input(format!(
                "Caddy admin address {admin:?} {why}; use unix//run/caddy/admin.sock (recommended) or http://127.0.0.1:2019"
            ))
        };
        if let Some(path) = admin.strip_prefix("unix/") {
            if !path.starts_with('/') {
                return Err(bad("needs an absolute socket path after unix/"));
            }
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        let rest = admin
            .strip_prefix("http://")
            .or_else(|| admin.strip_prefix("https://"))
            .ok_or_else(|| bad("is neither unix//<socket path> nor an http:// URL"))?;
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let authority = authority.rsplit('@').next().unwrap_or_default();
        let host = if let Some(v6) = authority.strip_prefix('[') {
            v6.split(']').next().unwrap_or_default()
        } else {
            authority.split(':').next().unwrap_or_default()
        };
        if host.is_empty() {
            return Err(bad("has no host"));
        }
        let loopback = host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        Ok(Self::Http {
            url: admin.trim_end_matches('/').to_owned(),
            loopback,
        })
    }
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
    /// A client of the admin API at `admin` (`unix//path` or a loopback URL); any other
    /// address is refused, see [`Self::new_allowing_remote`].
    pub fn new(admin: &str) -> Result<Self, DeployError> {
        Self::connect(admin, false)
    }

    /// Like [`Self::new`], but also accepts an admin API on a non-loopback address (it has no
    /// authentication: only for a network the operator controls).
    pub fn new_allowing_remote(admin: &str) -> Result<Self, DeployError> {
        Self::connect(admin, true)
    }

    fn connect(admin: &str, allow_remote: bool) -> Result<Self, DeployError> {
        let address = AdminAddress::parse(admin)?;
        let mut builder = reqwest::Client::builder();
        let base = match &address {
            AdminAddress::Unix(path) => {
                builder = builder.unix_socket(path.clone());
                "http://localhost".to_owned()
            }
            AdminAddress::Http { url, loopback } => {
                if !loopback && !allow_remote {
                    return Err(DeployError::Input(format!(
                        "Caddy admin API {admin} is not on this host's loopback: Caddy's admin API has no authentication, so anyone who reaches it controls every route; use its unix socket (unix//run/caddy/admin.sock) or 127.0.0.1, or pass --allow-remote-caddy-admin if this network is yours alone"
                    )));
                }
                url.clone()
            }
        };
        let client = builder
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
            empty_host: matches!(address, AdminAddress::Unix(_)),
            base,
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
            codeb_host::lockfile::private_dir(dir).map_err(io)?;
        }
        let file = codeb_host::lockfile::open_lock(path, 0o600).map_err(io)?;
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
        let url = format!("{}{path}", self.base);
        let mut req = self.client.request(method.clone(), &url);
        if self.empty_host {
            req = req.header(reqwest::header::HOST, "");
        }
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

    /// The admin API's Prometheus metrics (`GET /metrics`, text format), for `we scale
    /// status`.
    pub async fn metrics(&self) -> Result<String, DeployError> {
        let (status, text) = self.call(reqwest::Method::GET, "/metrics", None).await?;
        if status != 200 {
            return Err(self.err(format!("GET /metrics answered {status}: {}", text.trim())));
        }
        Ok(text)
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
        self.create_server(
            &server_name(unit),
            front_json(unit, listen_host, public, upstream),
        )
        .await
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
        tls: bool,
    ) -> Result<(), DeployError> {
        let _lock = self.lock().await?;
        let route = host_route_json(route_id, host, upstream);
        if self.id_exists(route_id).await? {
            let path = format!("/id/{route_id}");
            let (status, text) = self
                .call(reqwest::Method::PATCH, &path, Some(&route))
                .await?;
            if status != 200 {
                return Err(self.err(format!("PATCH {path} answered {status}: {}", text.trim())));
            }
            return Ok(());
        }
        self.insert_host_route(server, listen, route, tls).await
    }

    /// Adds the host route when no object with its id exists; an existing one is left alone.
    /// Returns whether it was added.
    pub async fn ensure_host_route(
        &self,
        server: &str,
        listen: &str,
        route_id: &str,
        host: &str,
        upstream: u16,
        tls: bool,
    ) -> Result<bool, DeployError> {
        let _lock = self.lock().await?;
        if self.id_exists(route_id).await? {
            return Ok(false);
        }
        let route = host_route_json(route_id, host, upstream);
        self.insert_host_route(server, listen, route, tls).await?;
        Ok(true)
    }

    /// Creates the target's front (listening on `listen_host:public`, proxying to
    /// `upstream`) when it does not exist; an existing front is left alone, whatever it
    /// proxies to. Returns whether it was created.
    pub async fn ensure_front(
        &self,
        unit: &str,
        listen_host: &str,
        public: u16,
        upstream: u16,
    ) -> Result<bool, DeployError> {
        let _lock = self.lock().await?;
        if self.id_exists(&proxy_id(unit)).await? || self.id_exists(&server_name(unit)).await? {
            return Ok(false);
        }
        self.create_server(
            &server_name(unit),
            front_json(unit, listen_host, public, upstream),
        )
        .await?;
        Ok(true)
    }

    async fn id_exists(&self, id: &str) -> Result<bool, DeployError> {
        let (status, _) = self
            .call(reqwest::Method::GET, &format!("/id/{id}"), None)
            .await?;
        Ok(status == 200)
    }

    async fn insert_host_route(
        &self,
        server: &str,
        listen: &str,
        route: Value,
        tls: bool,
    ) -> Result<(), DeployError> {
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
        // A TLS server keeps Caddy's automatic HTTPS: a certificate for each route's host
        // (from the issuers of the tls app: ACME by default, `internal` in tests).
        let srv = if tls {
            json!({ "@id": server, "listen": [listen], "routes": [route] })
        } else {
            json!({
                "@id": server,
                "listen": [listen],
                "automatic_https": { "disable": true },
                "routes": [route],
            })
        };
        self.create_server(server, srv).await
    }

    /// The configuration object with `@id = id`, if there is one.
    pub async fn get_id(&self, id: &str) -> Result<Option<Value>, DeployError> {
        let (status, text) = self
            .call(reqwest::Method::GET, &format!("/id/{id}"), None)
            .await?;
        if status != 200 {
            return Ok(None);
        }
        Ok(serde_json::from_str(&text).ok())
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

/// How the balancer in front of several app hosts treats its upstreams (README, "The
/// balancer"): round robin; an active health check of every upstream on the project's health
/// path every `interval`; passive health (an upstream that failed a request, or answered
/// 502/503/504, is skipped for `fail_duration`); a request whose upstream cannot be reached
/// is tried on another for up to `try_duration`, every `try_interval`; so is a GET whose
/// upstream sends no response headers within `response_header_timeout` (a host that died
/// with the request in flight; Caddy retries only GETs after a connection was made).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BalancerPolicy {
    pub health_path: String,
    pub interval: Duration,
    pub health_timeout: Duration,
    pub fail_duration: Duration,
    pub try_duration: Duration,
    pub try_interval: Duration,
    pub dial_timeout: Duration,
    pub response_header_timeout: Duration,
}

impl BalancerPolicy {
    /// The documented defaults with `health_path`.
    pub fn new(health_path: &str) -> Self {
        Self {
            health_path: health_path.to_owned(),
            interval: Duration::from_secs(1),
            health_timeout: Duration::from_millis(800),
            fail_duration: Duration::from_secs(5),
            try_duration: Duration::from_secs(15),
            try_interval: Duration::from_millis(100),
            dial_timeout: Duration::from_millis(500),
            response_header_timeout: Duration::from_secs(10),
        }
    }
}

fn go_duration(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

fn balancer_name(unit: &str) -> String {
    format!("codeb-lb-{unit}")
}

fn balancer_proxy_id(unit: &str) -> String {
    format!("codeb-lb-{unit}-proxy")
}

/// The balancer server of `unit`: listens on `listen_host:public`, proxies to `upstreams`
/// (`host:port` each) under `policy`.
pub fn balancer_json(
    unit: &str,
    listen_host: &str,
    public: u16,
    upstreams: &[String],
    policy: &BalancerPolicy,
) -> Value {
    let ups: Vec<Value> = upstreams.iter().map(|u| json!({ "dial": u })).collect();
    json!({
        "@id": balancer_name(unit),
        "listen": [format!("{listen_host}:{public}")],
        "automatic_https": { "disable": true },
        "routes": [{
            "handle": [{
                "@id": balancer_proxy_id(unit),
                "handler": "reverse_proxy",
                "upstreams": ups,
                "transport": {
                    "protocol": "http",
                    "dial_timeout": go_duration(policy.dial_timeout),
                    "response_header_timeout": go_duration(policy.response_header_timeout),
                },
                "load_balancing": {
                    "selection_policy": { "policy": "round_robin" },
                    "try_duration": go_duration(policy.try_duration),
                    "try_interval": go_duration(policy.try_interval),
                },
                "health_checks": {
                    "active": {
                        "path": policy.health_path,
                        "interval": go_duration(policy.interval),
                        "timeout": go_duration(policy.health_timeout),
                        "expect_status": 200,
                    },
                    "passive": {
                        "fail_duration": go_duration(policy.fail_duration),
                        "max_fails": 1,
                        "unhealthy_status": [502, 503, 504],
                    },
                },
            }]
        }]
    })
}

/// One upstream as the balancer's Caddy sees it (`GET /reverse_proxy/upstreams`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UpstreamView {
    pub address: String,
    #[serde(default)]
    pub num_requests: i64,
    #[serde(default)]
    pub fails: i64,
}

impl Caddy {
    /// The upstreams (`host:port`) of `unit`'s balancer, `None` when it has none.
    pub async fn balancer_upstreams(&self, unit: &str) -> Result<Option<Vec<String>>, DeployError> {
        let path = format!("/id/{}/upstreams", balancer_proxy_id(unit));
        let (status, text) = self.call(reqwest::Method::GET, &path, None).await?;
        if status != 200 {
            return Ok(None);
        }
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Some(
            v.as_array()
                .into_iter()
                .flatten()
                .filter_map(|u| u.get("dial").and_then(Value::as_str).map(str::to_owned))
                .collect(),
        ))
    }

    /// Sets the balancer of `unit` to `upstreams`, creating it (listening on
    /// `listen_host:public`) when missing. An upstream list change is a graceful config
    /// change: requests in flight to a removed upstream finish.
    pub async fn balance(
        &self,
        unit: &str,
        listen_host: &str,
        public: u16,
        upstreams: &[String],
        policy: &BalancerPolicy,
    ) -> Result<(), DeployError> {
        let _lock = self.lock().await?;
        let ups: Vec<Value> = upstreams.iter().map(|u| json!({ "dial": u })).collect();
        if self.balancer_upstreams(unit).await?.is_some() {
            let path = format!("/id/{}/upstreams", balancer_proxy_id(unit));
            let (status, text) = self
                .call(reqwest::Method::PATCH, &path, Some(&Value::Array(ups)))
                .await?;
            if status != 200 {
                return Err(self.err(format!("PATCH {path} answered {status}: {}", text.trim())));
            }
            return Ok(());
        }
        self.create_server(
            &balancer_name(unit),
            balancer_json(unit, listen_host, public, upstreams, policy),
        )
        .await
    }

    /// Removes `unit`'s balancer.
    pub async fn remove_balancer(&self, unit: &str) -> Result<(), DeployError> {
        self.remove_id(&balancer_name(unit)).await
    }

    /// What Caddy knows of every reverse-proxy upstream (requests in flight, recent fails).
    pub async fn upstream_views(&self) -> Result<Vec<UpstreamView>, DeployError> {
        let (status, text) = self
            .call(reqwest::Method::GET, "/reverse_proxy/upstreams", None)
            .await?;
        if status != 200 {
            return Err(self.err(format!(
                "GET /reverse_proxy/upstreams answered {status}: {}",
                text.trim()
            )));
        }
        serde_json::from_str(&text).map_err(|e| self.err(format!("upstreams: {e}")))
    }
}

fn front_json(unit: &str, listen_host: &str, public: u16, upstream: u16) -> Value {
    json!({
        "@id": server_name(unit),
        "listen": [format!("{listen_host}:{public}")],
        "automatic_https": { "disable": true },
        "routes": [{
            "handle": [{
                "@id": proxy_id(unit),
                "handler": "reverse_proxy",
                "upstreams": [{ "dial": format!("127.0.0.1:{upstream}") }],
            }]
        }]
    })
}

fn host_route_json(route_id: &str, host: &str, upstream: u16) -> Value {
    json!({
        "@id": route_id,
        "match": [{ "host": [host] }],
        "handle": [{ "handler": "reverse_proxy", "upstreams": [{ "dial": format!("127.0.0.1:{upstream}") }] }],
        "terminal": true
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The balancer policy README documents ("The balancer policy") is what Caddy gets.
    #[test]
    fn the_balancer_json_carries_the_documented_policy() {
        let ups = vec!["10.201.3.2:4100".to_owned(), "10.201.3.3:4100".to_owned()];
        let v = balancer_json(
            "shop-production",
            "127.0.0.1",
            4100,
            &ups,
            &BalancerPolicy::new("/api/health"),
        );
        assert_eq!(v["@id"], "codeb-lb-shop-production");
        assert_eq!(v["listen"][0], "127.0.0.1:4100");
        let h = &v["routes"][0]["handle"][0];
        assert_eq!(h["@id"], "codeb-lb-shop-production-proxy");
        assert_eq!(h["upstreams"][1]["dial"], "10.201.3.3:4100");
        let lb = &h["load_balancing"];
        assert_eq!(lb["selection_policy"]["policy"], "round_robin");
        assert_eq!(lb["try_duration"], "15000ms");
        assert_eq!(lb["try_interval"], "100ms");
        assert_eq!(h["transport"]["dial_timeout"], "500ms");
        assert_eq!(h["transport"]["response_header_timeout"], "10000ms");
        let active = &h["health_checks"]["active"];
        assert_eq!(active["path"], "/api/health");
        assert_eq!(active["interval"], "1000ms");
        assert_eq!(active["timeout"], "800ms");
        let passive = &h["health_checks"]["passive"];
        assert_eq!(passive["fail_duration"], "5000ms");
        assert_eq!(passive["max_fails"], 1);
        assert_eq!(passive["unhealthy_status"], json!([502, 503, 504]));
    }

    /// Issue 9 #12: any admin URL was accepted, so a deploy would drive an unauthenticated
    /// admin API across the network.
    #[test]
    fn caddy_admin_refuses_non_loopback_urls_unless_allowed() {
        for ok in [
            "http://127.0.0.1:2019",
            "http://localhost:2019/",
            "http://[::1]:2019",
            "http://127.0.0.7:2019",
            "unix//run/caddy/admin.sock",
        ] {
            Caddy::new(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for remote in [
            "http://10.0.0.5:2019",
            "http://caddy.example.com:2019",
            "http://0.0.0.0:2019",
        ] {
            let err = Caddy::new(remote).expect_err(remote).to_string();
            assert!(err.contains("--allow-remote-caddy-admin"), "{err}");
            Caddy::new_allowing_remote(remote).unwrap_or_else(|e| panic!("{remote}: {e}"));
        }
        for bad in ["unix/relative.sock", "127.0.0.1:2019", "ftp://127.0.0.1"] {
            assert!(Caddy::new(bad).is_err(), "{bad}");
        }
        assert_eq!(
            AdminAddress::parse("unix//run/caddy/admin.sock").expect("unix"),
            AdminAddress::Unix(PathBuf::from("/run/caddy/admin.sock"))
        );
    }
}
