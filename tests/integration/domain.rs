//! `we domain` end to end, against real components: PowerDNS Authoritative (Debian
//! `pdns-server` + `pdns-backend-sqlite3`, started here on free loopback ports), Caddy (both
//! builds, with the `internal` issuer), the daemon's control plane as a process, the `we`
//! binary, a real container of the sample app, `dig` for DNS and `curl` for the TLS
//! handshake (`--cacert` Caddy's local root, `--resolve` the name to loopback).

use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::infra::{
    Caddy, CaddyBuild, Podman, ScratchDir, free_port, http_request, sample_local_images,
};
use crate::util::{Run, codeb, dead_port, listen_in, run, scrubbed};
use crate::we_cli::we;

const SCHEMA: &str = "/usr/share/pdns-backend-sqlite3/schema/schema.sqlite3.sql";
const ZONE: &str = "codeb.test";

// ---------------------------------------------------------------------------------------
// PowerDNS

/// `pdns_server` with the SQLite backend, its API and DNS on free loopback ports.
pub struct Pdns {
    child: Option<Child>,
    dir: PathBuf,
    pub dns_port: u16,
    pub web_port: u16,
    pub key: String,
}

impl Pdns {
    pub fn start(dir: &Path, key: &str) -> Self {
        assert!(
            Path::new("/usr/sbin/pdns_server").exists() && Path::new(SCHEMA).exists(),
            "pdns_server or its SQLite schema is missing: run scripts/setup (apt-get install pdns-server pdns-backend-sqlite3)"
        );
        std::fs::create_dir_all(dir).expect("pdns dir");
        let db = dir.join("pdns.sqlite3");
        let conn = rusqlite::Connection::open(&db).expect("create the pdns database");
        conn.execute_batch(&std::fs::read_to_string(SCHEMA).expect("read the schema"))
            .expect("load the pdns schema");
        drop(conn);
        let mut p = Self {
            child: None,
            dir: dir.to_owned(),
            dns_port: free_port(),
            web_port: free_port(),
            key: key.to_owned(),
        };
        p.spawn();
        p
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.join("pdns.log")).expect("log");
        let child = scrubbed("/usr/sbin/pdns_server")
            .arg(format!("--config-dir={}", self.dir.display()))
            .arg(format!("--socket-dir={}", self.dir.display()))
            .args([
                "--guardian=no",
                "--daemon=no",
                "--disable-syslog",
                "--launch=gsqlite3",
            ])
            .arg(format!(
                "--gsqlite3-database={}",
                self.dir.join("pdns.sqlite3").display()
            ))
            .arg("--local-address=127.0.0.1")
            .arg(format!("--local-port={}", self.dns_port))
            .args([
                "--api=yes",
                "--webserver=yes",
                "--webserver-address=127.0.0.1",
            ])
            .arg(format!("--api-key={}", self.key))
            .arg(format!("--webserver-port={}", self.web_port))
            .arg("--webserver-allow-from=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start pdns_server (apt-get install pdns-server pdns-backend-sqlite3)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok((200, _)) = self.api("GET", "/api/v1/servers/localhost", None) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "pdns_server did not answer its API:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pdns.log")).unwrap_or_default()
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.web_port)
    }

    pub fn api(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, String), String> {
        let body = body.map(Value::to_string).unwrap_or_default();
        http_request(
            method,
            &format!("{}{path}", self.url()),
            &[
                ("x-api-key", &self.key),
                ("content-type", "application/json"),
            ],
            body.as_bytes(),
            Duration::from_secs(5),
        )
    }

    pub fn create_zone(&self, zone: &str) {
        let (s, b) = self
            .api(
                "POST",
                "/api/v1/servers/localhost/zones",
                Some(&json!({"name": format!("{zone}."), "kind": "Native",
                             "nameservers": [format!("ns1.{zone}.")]})),
            )
            .expect("create zone");
        assert_eq!(s, 201, "create zone {zone}: {b}");
    }

    /// The enabled contents of `name`'s `kind` rrset, through the API.
    pub fn rrset(&self, zone: &str, name: &str, kind: &str) -> Vec<String> {
        let (s, b) = self
            .api(
                "GET",
                &format!("/api/v1/servers/localhost/zones/{zone}."),
                None,
            )
            .expect("read zone");
        assert_eq!(s, 200, "{b}");
        let v: Value = serde_json::from_str(&b).expect("zone json");
        v["rrsets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["name"] == format!("{name}.") && r["type"] == kind)
            .flat_map(|r| r["records"].as_array().cloned().unwrap_or_default())
            .filter_map(|r| r["content"].as_str().map(str::to_owned))
            .collect()
    }

    /// The pid of `pdns_server` while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for Pdns {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A TCP relay to `upstream` (Caddy's admin API, `host:port`) that kills process `pid`
/// (PowerDNS) and waits until `pid_port` refuses connections when the first request that is
/// not a GET passes (a connection may carry several requests: each chunk from the client
/// is looked at); every byte is passed on unchanged. Returns the relay's URL.
pub fn killing_relay(upstream: &str, pid: u32, pid_port: u16) -> String {
    use std::io::Read;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let l = TcpListener::bind("127.0.0.1:0").expect("bind the relay");
    let own = l.local_addr().expect("addr").to_string();
    let url = format!("http://{own}");
    let fired = Arc::new(AtomicBool::new(false));
    let upstream = upstream.to_owned();
    std::thread::spawn(move || {
        for client in l.incoming().flatten() {
            let Ok(server) = std::net::TcpStream::connect(&upstream) else {
                continue;
            };
            let fired = fired.clone();
            let (own, upstream_c) = (own.clone(), upstream.clone());
            let (mut c_in, mut s_out) = (
                client.try_clone().expect("clone"),
                server.try_clone().expect("clone"),
            );
            std::thread::spawn(move || {
                let mut buf = [0u8; 16384];
                loop {
                    let n = match c_in.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    let mut chunk = buf[..n].to_vec();
                    let write = [&b"POST "[..], b"PUT ", b"PATCH ", b"DELETE "]
                        .iter()
                        .any(|m| chunk.starts_with(m));
                    // Caddy's admin API checks the Host header: the request's head names
                    // Caddy, not the relay (the body, after the head, is left as it is).
                    if chunk.first().is_some_and(u8::is_ascii_uppercase) {
                        let head_end = chunk
                            .windows(4)
                            .position(|w| w == b"\r\n\r\n")
                            .unwrap_or(chunk.len());
                        let head =
                            String::from_utf8_lossy(&chunk[..head_end]).replace(&own, &upstream_c);
                        let mut v = head.into_bytes();
                        v.extend_from_slice(&chunk[head_end..]);
                        chunk = v;
                    }
                    if write && !fired.swap(true, Ordering::SeqCst) {
                        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
                        let start = Instant::now();
                        while std::net::TcpStream::connect(("127.0.0.1", pid_port)).is_ok()
                            && start.elapsed() < Duration::from_secs(10)
                        {
                            std::thread::sleep(Duration::from_millis(20));
                        }
                    }
                    if s_out.write_all(&chunk).is_err() {
                        break;
                    }
                }
                let _ = s_out.shutdown(std::net::Shutdown::Write);
            });
            let (mut s_in, mut c_out) = (server, client);
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut s_in, &mut c_out);
                let _ = c_out.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    url
}

/// `dig @127.0.0.1 -p PORT +short NAME TYPE`: the answer lines.
pub fn dig(port: u16, name: &str, kind: &str) -> Vec<String> {
    let out = Command::new("dig")
        .args(["+short", "+time=2", "+tries=2", "@127.0.0.1", "-p"])
        .arg(port.to_string())
        .args([name, kind])
        .output()
        .expect("run dig (apt-get install bind9-dnsutils; scripts/setup installs it)");
    assert!(out.status.success(), "dig failed: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

// ---------------------------------------------------------------------------------------
// Caddy with the internal issuer

/// Caddy (`build`) whose config file (kept across restarts) has the `internal` issuer for
/// every certificate, the local CA not installed into the system, and its HTTP/HTTPS ports
/// on free ones (the redirect server must not take port 80).
pub fn tls_caddy(build: CaddyBuild, https_port: u16) -> Caddy {
    let http_port = free_port();
    Caddy::start_with(
        build,
        &format!(
            r#""apps":{{"http":{{"http_port":{http_port},"https_port":{https_port}}},
               "tls":{{"automation":{{"policies":[{{"issuers":[{{"module":"internal"}}]}}]}}}},
               "pki":{{"certificate_authorities":{{"local":{{"install_trust":false}}}}}}}}"#
        ),
    )
}

/// `curl --cacert <Caddy's local root> --resolve host:port:127.0.0.1 https://host:port/`
/// until it answers 200 (certificate issuance is asynchronous) or `timeout`.
pub fn https_get(
    caddy: &Caddy,
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<String, String> {
    let root = caddy.data_dir().join("pki/authorities/local/root.crt");
    let deadline = Instant::now() + timeout;
    let mut last;
    loop {
        if root.exists() {
            let out = Command::new("curl")
                .args(["-sS", "--max-time", "5", "--cacert"])
                .arg(&root)
                .arg("--resolve")
                .arg(format!("{host}:{port}:127.0.0.1"))
                .args(["-o", "-", "-w", "\n%{http_code}"])
                .arg(format!("https://{host}:{port}/"))
                .output()
                .expect("run curl");
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            if out.status.success() && stdout.ends_with("\n200") {
                return Ok(stdout.trim_end_matches("\n200").to_owned());
            }
            last = format!("{stdout} {}", String::from_utf8_lossy(&out.stderr));
        } else {
            last = format!("{} does not exist yet", root.display());
        }
        if Instant::now() >= deadline {
            return Err(last);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

// ---------------------------------------------------------------------------------------
// The control plane

pub struct Plane {
    child: Option<Child>,
    pub dir: PathBuf,
    pub port: u16,
    pub token: String,
    pub config: PathBuf,
    n: u32,
}

pub const HOOK_SECRET: &str = "domain-test-hook-secret";

impl Plane {
    /// A daemon with `[domains]` against `pdns` (with `key` in its key file), Caddy at
    /// `caddy_admin`, the manifest giving `projects` their production ports.
    pub fn start(
        dir: &Path,
        pdns_url: &str,
        key: &str,
        caddy_admin: &str,
        https_port: u16,
        projects: &[(&str, u16)],
    ) -> Self {
        std::fs::create_dir_all(dir.join("quadlet")).expect("quadlet dir");
        let mut manifest = String::from("version: 1\nprojects:\n");
        for (p, port) in projects {
            manifest.push_str(&format!("  {p}:\n    production: {{port: {port}}}\n"));
        }
        std::fs::write(dir.join("port-manifest.yaml"), manifest).expect("manifest");
        let key_file = dir.join("pdns.key");
        std::fs::write(&key_file, format!("{key}\n")).expect("key file");
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let port = dead_port();
        let text = format!(
            r#"listen = "127.0.0.1:{port}"
state_dir = "state"
shutdown_grace = "2s"
[previews]
github_api_url = "http://127.0.0.1:{dead}"
caddy_admin = "{caddy_admin}"
quadlet_dir = "{quadlet}"
manifest = "{manifest}"
runtime = "podman"
[domains]
pdns_url = "{pdns_url}"
pdns_key_file = "pdns.key"
zones = ["{ZONE}", "absent.test"]
ipv4 = "127.0.0.1"
ttl = 60
https_listen = "127.0.0.1:{https_port}"
"#,
            dead = dead_port(),
            quadlet = dir.join("quadlet").display(),
            manifest = dir.join("port-manifest.yaml").display(),
        );
        let config = dir.join("daemon.toml");
        std::fs::write(&config, text).expect("config");
        let r = run(codeb("codeb-daemon")
            .args(["bootstrap-admin", "--name", "root", "--config"])
            .arg(&config)
            .env("CODEB_WEBHOOK_SECRET", HOOK_SECRET));
        assert_eq!(r.code, 0, "bootstrap-admin: {}", r.all());
        let mut p = Self {
            child: None,
            dir: dir.to_owned(),
            port,
            token: r.stdout.trim().to_owned(),
            config,
            n: 0,
        };
        p.spawn();
        for (name, _) in projects {
            let (s, b) = p.call(
                "POST",
                "/api/v1/projects",
                Some(
                    &json!({"name": name, "type": "static", "repository": format!("acme/{name}"),
                             "image": format!("127.0.0.1:1/acme/{name}"), "container_port": 3000,
                             "environments": [{"name": "production"}]}),
                ),
            );
            assert_eq!(s, 201, "create project {name}: {b}");
        }
        p
    }

    fn spawn(&mut self) {
        self.n += 1;
        let log =
            std::fs::File::create(self.dir.join(format!("daemon-{}.log", self.n))).expect("log");
        let child = codeb("codeb-daemon")
            .args(["serve", "--config"])
            .arg(&self.config)
            .env("CODEB_WEBHOOK_SECRET", HOOK_SECRET)
            .env("CODEB_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn codeb-daemon serve");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!("codeb-daemon exited with {status}:\n{}", self.log());
            }
            if let Ok((200, _)) = http_request(
                "GET",
                &self.url("/healthz"),
                &[],
                b"",
                Duration::from_secs(2),
            ) {
                return;
            }
            std::thread::sleep(Duration::from_millis(30));
        }
        panic!("codeb-daemon not ready:\n{}", self.log());
    }

    pub fn restart(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.spawn();
    }

    pub fn log(&self) -> String {
        (1..=self.n)
            .map(|i| {
                std::fs::read_to_string(self.dir.join(format!("daemon-{i}.log")))
                    .unwrap_or_default()
            })
            .collect()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, String) {
        let auth = format!("Bearer {}", self.token);
        let body = body.map(Value::to_string).unwrap_or_default();
        http_request(
            method,
            &self.url(path),
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            body.as_bytes(),
            Duration::from_secs(30),
        )
        .expect("control plane request")
    }

    /// `we ARGS` as the admin.
    pub fn we(&self, home: &Path, args: &[&str]) -> Run {
        self.we_as(home, &self.token, args)
    }

    pub fn we_as(&self, home: &Path, token: &str, args: &[&str]) -> Run {
        run(we(home)
            .env("CODEB_SERVER", format!("http://127.0.0.1:{}", self.port))
            .env("CODEB_TOKEN", token)
            .env("NO_COLOR", "1")
            .args(args))
    }

    pub fn route_record(&self, id: &str) -> PathBuf {
        self.dir.join(format!("quadlet/.codeb/routes/{id}.json"))
    }

    pub fn ask(&self, domain: Option<&str>) -> u16 {
        let path = match domain {
            Some(d) => format!("/api/v1/tls/ask?domain={d}"),
            None => "/api/v1/tls/ask".into(),
        };
        http_request("GET", &self.url(&path), &[], b"", Duration::from_secs(5))
            .expect("ask")
            .0
    }
}

impl Drop for Plane {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A free production port (the manifest's range, 4000-4499).
pub fn production_port() -> u16 {
    let l: TcpListener = listen_in(4000..=4499);
    l.local_addr().expect("addr").port()
}

fn json_of(r: &Run) -> Value {
    serde_json::from_str(r.stdout.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {}", r.all()))
}

/// No trace of `name`: no Caddy route, no route record, no A record, not approved by `ask`.
fn nothing_left(caddy: &Caddy, plane: &Plane, pdns: &Pdns, name: &str, why: &str) {
    let id = format!("codeb-domain-{name}");
    let config = caddy.config().unwrap_or_default();
    assert!(
        !config.contains(&id),
        "{why}: a Caddy route for {name} was left: {config}"
    );
    assert!(
        !plane.route_record(&id).exists(),
        "{why}: a route record for {name} was left"
    );
    assert!(
        pdns.rrset(ZONE, name, "A").is_empty(),
        "{why}: an A record for {name} was left"
    );
    assert_eq!(plane.ask(Some(name)), 404, "{why}: {name} is approved");
}

// ---------------------------------------------------------------------------------------
// Tests

/// The main path, behind both Caddys: setup → DNS answers (dig) and the project answers
/// over HTTPS with a certificate for the name (curl against Caddy's local root); a rerun is
/// a no-op; list shows DNS, route and certificate expiry; the ask endpoint approves only
/// registry domains; the route survives Caddy restarts (the boot unit's restore-routes, and
/// the daemon's restore from the registry); an IDN is served under its punycode name;
/// remove takes route and records away.
#[test]
fn domain_setup_serves_https_and_survives_caddy_restarts() {
    let podman = Podman::new();
    let image = sample_local_images(&podman)[0].clone();
    for build in CaddyBuild::ALL {
        let scratch = ScratchDir::new("domain");
        let home = scratch.path().join("home");
        let key = format!("pdns-key-{}", crate::infra::unique_id());
        let pdns = Pdns::start(&scratch.path().join("pdns"), &key);
        pdns.create_zone(ZONE);
        let https = free_port();
        let mut caddy = tls_caddy(build, https);
        let app_port = production_port();
        let guard = podman.label_guard();
        podman
            .run_sample(&guard, app_port, &image, &[])
            .unwrap_or_else(|e| panic!("run the sample container: {e}"));
        let mut plane = Plane::start(
            &scratch.path().join("plane"),
            &pdns.url(),
            &key,
            &caddy.admin_url(),
            https,
            &[("app", app_port)],
        );
        let mut outputs = Vec::new();

        let host = "app.codeb.test";
        let r = plane.we(
            &home,
            &[
                "domain",
                "setup",
                "app",
                "--domain",
                "App.Codeb.Test.",
                "--ssl",
            ],
        );
        assert_eq!(r.code, 0, "{build:?} setup: {}\n{}", r.all(), plane.log());
        assert!(r.stdout.contains(&format!("https://{host}")), "{}", r.all());
        assert!(
            r.stderr.contains("dns: A app.codeb.test -> 127.0.0.1"),
            "{}",
            r.all()
        );
        outputs.push(r.all());
        assert_eq!(
            dig(pdns.dns_port, host, "A"),
            vec!["127.0.0.1"],
            "{build:?}"
        );
        let body = https_get(&caddy, host, https, Duration::from_secs(30)).unwrap_or_else(|e| {
            panic!(
                "{build:?}: no HTTPS answer for {host}: {e}\n{}",
                caddy.log()
            )
        });
        assert_eq!(body, "hello from v1", "{build:?}");
        assert!(plane.route_record("codeb-domain-app.codeb.test").exists());

        // Re-running is a no-op.
        let r = plane.we(
            &home,
            &["--json", "domain", "setup", "app", "--domain", host],
        );
        assert_eq!(r.code, 0, "{}", r.all());
        assert_eq!(json_of(&r)["changed"], false, "{}", r.all());

        // list: DNS, route and the certificate's expiry.
        let r = plane.we(&home, &["--json", "domain", "list"]);
        assert_eq!(r.code, 0, "{}", r.all());
        let list = json_of(&r);
        let d = &list[0];
        assert_eq!(d["domain"], host, "{list}");
        assert_eq!(d["project"], "app");
        assert_eq!(d["dns"], "ok", "{list}");
        assert_eq!(d["route"], "present", "{list}");
        let now_ms = i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("time")
                .as_millis(),
        )
        .expect("ms");
        assert!(
            d["cert_expires_ms"].as_i64().is_some_and(|e| e > now_ms),
            "{list}"
        );
        let r = plane.we(&home, &["domain", "list"]);
        assert!(
            r.stdout.contains(host) && r.stdout.contains("present"),
            "{}",
            r.all()
        );

        // The on-demand TLS ask: registry domains only.
        assert_eq!(plane.ask(Some(host)), 200);
        assert_eq!(plane.ask(Some("APP.codeb.test")), 200);
        assert_eq!(plane.ask(Some("evil.example.com")), 404);
        assert_eq!(plane.ask(Some("other.codeb.test")), 404);
        assert_eq!(plane.ask(Some("a_b.codeb.test")), 400);
        assert_eq!(plane.ask(None), 400);

        // Caddy restarts: its admin-API routes are gone; the restore of the boot unit
        // (codeb-quadlet-update restore-routes) rebuilds the domain route from its record.
        caddy.kill_and_restart();
        assert!(https_get(&caddy, host, https, Duration::from_millis(500)).is_err());
        let r = run(codeb("codeb-quadlet-update")
            .args(["restore-routes", "--quadlet-dir"])
            .arg(plane.dir.join("quadlet"))
            .args(["--caddy-admin", &caddy.admin_url()]));
        assert_eq!(r.code, 0, "{}", r.all());
        assert!(
            r.all().contains("restored codeb-domain-app.codeb.test"),
            "{}",
            r.all()
        );
        assert_eq!(
            https_get(&caddy, host, https, Duration::from_secs(30)).as_deref(),
            Ok("hello from v1"),
            "{build:?} after restore-routes"
        );
        // And the daemon rebuilds it from the registry when it starts.
        caddy.kill_and_restart();
        std::fs::remove_file(plane.route_record("codeb-domain-app.codeb.test")).expect("rm record");
        plane.restart();
        assert_eq!(
            https_get(&caddy, host, https, Duration::from_secs(30)).as_deref(),
            Ok("hello from v1"),
            "{build:?} after the daemon's restore from the registry:\n{}",
            plane.log()
        );
        assert!(plane.route_record("codeb-domain-app.codeb.test").exists());

        // An IDN is set up under its punycode (A-label) name.
        let r = plane.we(
            &home,
            &["domain", "setup", "app", "--domain", "Bücher.codeb.test"],
        );
        assert_eq!(r.code, 0, "{}", r.all());
        assert!(r.all().contains("xn--bcher-kva.codeb.test"), "{}", r.all());
        assert_eq!(
            dig(pdns.dns_port, "xn--bcher-kva.codeb.test", "A"),
            vec!["127.0.0.1"]
        );
        assert_eq!(
            https_get(
                &caddy,
                "xn--bcher-kva.codeb.test",
                https,
                Duration::from_secs(30)
            )
            .as_deref(),
            Ok("hello from v1")
        );

        // remove: route, records, registry.
        for d in [host, "xn--bcher-kva.codeb.test"] {
            let r = plane.we(&home, &["domain", "remove", d]);
            assert_eq!(r.code, 0, "{}", r.all());
            outputs.push(r.all());
            assert!(dig(pdns.dns_port, d, "A").is_empty(), "{d} still answers");
            assert!(
                !caddy
                    .config()
                    .expect("config")
                    .contains(&format!("codeb-domain-{d}"))
            );
            assert!(!plane.route_record(&format!("codeb-domain-{d}")).exists());
            assert_eq!(plane.ask(Some(d)), 404);
        }
        assert!(https_get(&caddy, host, https, Duration::from_millis(500)).is_err());
        let r = plane.we(&home, &["domain", "remove", host]);
        assert_eq!(r.code, 2, "removing twice: {}", r.all());
        assert!(r.stderr.contains("not in the registry"), "{}", r.all());

        // The PowerDNS key never reaches an output, the audit log or the daemon's log.
        let (_, audit) = plane.call("GET", "/api/v1/audit?limit=200", None);
        for text in outputs.iter().chain([&audit, &plane.log()]) {
            assert!(!text.contains(&key), "the PowerDNS key leaked: {text}");
        }
        assert!(
            audit.contains("domain.setup") && audit.contains("domain.remove"),
            "{audit}"
        );
        drop(plane);
        drop(caddy);
    }
}

/// Every bad input of the issue and every failing service: clear errors naming the fix, and
/// nothing left behind (no Caddy route for a name without DNS, DNS rolled back when Caddy
/// fails after it, no registry row).
#[test]
fn domain_bad_input_and_failing_services_leave_nothing_behind() {
    let scratch = ScratchDir::new("domain-bad");
    let home = scratch.path().join("home");
    let key = format!("pdns-key-{}", crate::infra::unique_id());
    let mut pdns = Pdns::start(&scratch.path().join("pdns"), &key);
    pdns.create_zone(ZONE);
    let https = free_port();
    let mut caddy = tls_caddy(CaddyBuild::Debian, https);
    let plane = Plane::start(
        &scratch.path().join("plane"),
        &pdns.url(),
        &key,
        &caddy.admin_url(),
        https,
        &[("app", production_port()), ("other", production_port())],
    );

    // Names refused by `we` before sending (exit 2), each naming the rule.
    let long = format!("{}.codeb.test", "a".repeat(64));
    for (name, needle) in [
        ("*.codeb.test", "wildcard"),
        ("my_app.codeb.test", "underscore"),
        (long.as_str(), "at most 63 bytes"),
        ("app-.codeb.test", "starts or ends with '-'"),
        ("app..codeb.test", "empty label"),
    ] {
        let r = plane.we(&home, &["domain", "setup", "app", "--domain", name]);
        assert_eq!(r.code, 2, "{name}: {}", r.all());
        assert!(r.stderr.contains(needle), "{name}: {}", r.all());
    }
    // And by the server itself (400 invalid_name), for a client that does not check.
    for name in [
        "*.codeb.test",
        "my_app.codeb.test",
        long.as_str(),
        "app-.codeb.test",
    ] {
        let (s, b) = plane.call(
            "POST",
            "/api/v1/domains",
            Some(&json!({"project": "app", "domain": name})),
        );
        assert_eq!(s, 400, "{name}: {b}");
        assert!(b.contains("invalid_name"), "{b}");
    }
    // Outside every managed zone.
    let r = plane.we(
        &home,
        &["domain", "setup", "app", "--domain", "app.example.com"],
    );
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("outside every zone codeb manages") && r.stderr.contains(ZONE),
        "{}",
        r.all()
    );
    nothing_left(
        &caddy,
        &plane,
        &pdns,
        "app.example.com",
        "outside the zones",
    );
    // An unknown project.
    let r = plane.we(
        &home,
        &["domain", "setup", "ghost", "--domain", "ghost.codeb.test"],
    );
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("not in the registry"), "{}", r.all());

    // A developer may not set up domains (exit 3), but may list them.
    let (s, b) = plane.call(
        "POST",
        "/api/v1/team",
        Some(&json!({"name": "dev", "role": "developer", "projects": ["app"]})),
    );
    assert_eq!(s, 201, "{b}");
    let dev: Value = serde_json::from_str(&b).expect("user");
    let dev_token = dev["token"]["token"].as_str().expect("token").to_owned();
    let r = plane.we_as(
        &home,
        &dev_token,
        &["domain", "setup", "app", "--domain", "dev.codeb.test"],
    );
    assert_eq!(r.code, 3, "{}", r.all());
    nothing_left(&caddy, &plane, &pdns, "dev.codeb.test", "refused");
    let r = plane.we_as(&home, &dev_token, &["domain", "list"]);
    assert_eq!(r.code, 0, "{}", r.all());

    // A domain owned by another project.
    let r = plane.we(
        &home,
        &["domain", "setup", "app", "--domain", "mine.codeb.test"],
    );
    assert_eq!(r.code, 0, "{}", r.all());
    let r = plane.we(
        &home,
        &["domain", "setup", "other", "--domain", "mine.codeb.test"],
    );
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("belongs to project `app`"), "{}", r.all());
    let r = plane.we(
        &home,
        &["domain", "remove", "mine.codeb.test", "--project", "other"],
    );
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("belongs to project `app`"), "{}", r.all());
    assert_eq!(pdns.rrset(ZONE, "mine.codeb.test", "A"), vec!["127.0.0.1"]);
    assert_eq!(plane.ask(Some("mine.codeb.test")), 200);

    // A managed zone that PowerDNS does not hold.
    let r = plane.we(
        &home,
        &["domain", "setup", "app", "--domain", "x.absent.test"],
    );
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("does not exist in PowerDNS")
            && r.stderr.contains("pdnsutil create-zone"),
        "{}",
        r.all()
    );
    assert!(
        !caddy
            .config()
            .unwrap_or_default()
            .contains("codeb-domain-x.absent.test")
    );
    let r = plane.we(&home, &["--json", "domain", "zones"]);
    assert_eq!(
        r.code,
        1,
        "a zone missing in PowerDNS is wrong: {}",
        r.all()
    );
    let zones = json_of(&r);
    assert_eq!(zones[0]["name"], ZONE);
    assert_eq!(zones[0]["in_pdns"], true, "{zones}");
    assert_eq!(zones[0]["domains"], 1, "{zones}");
    assert_eq!(zones[1]["in_pdns"], false, "{zones}");

    // PowerDNS answers 422: a CNAME already at the name conflicts with an A rrset.
    let (s, b) = pdns
        .api(
            "PATCH",
            &format!("/api/v1/servers/localhost/zones/{ZONE}."),
            Some(&json!({"rrsets": [{"name": "alias.codeb.test.", "type": "CNAME", "ttl": 60,
                "changetype": "REPLACE", "records": [{"content": "mine.codeb.test.", "disabled": false}]}]})),
        )
        .expect("cname");
    assert_eq!(s, 204, "{b}");
    let r = plane.we(
        &home,
        &["domain", "setup", "app", "--domain", "alias.codeb.test"],
    );
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("PowerDNS") && r.stderr.contains("422"),
        "{}",
        r.all()
    );
    assert!(
        r.stderr.contains("No Caddy route was added") && r.stderr.contains("pdnsutil list-zone"),
        "{}",
        r.all()
    );
    nothing_left(&caddy, &plane, &pdns, "alias.codeb.test", "PowerDNS 422");

    // PowerDNS answers 401: a daemon holding the wrong key.
    let wrong = Plane::start(
        &scratch.path().join("plane-wrong-key"),
        &pdns.url(),
        "not-the-key",
        &caddy.admin_url(),
        https,
        &[("app", production_port())],
    );
    let r = wrong.we(
        &home,
        &["domain", "setup", "app", "--domain", "k.codeb.test"],
    );
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("refused the API key (401)") && r.stderr.contains("pdns_key_file"),
        "{}",
        r.all()
    );
    assert!(!r.all().contains("not-the-key"), "{}", r.all());
    assert!(
        !caddy
            .config()
            .unwrap_or_default()
            .contains("codeb-domain-k.codeb.test")
    );
    assert!(!wrong.route_record("codeb-domain-k.codeb.test").exists());
    drop(wrong);

    // PowerDNS down.
    pdns.stop();
    let r = plane.we(
        &home,
        &["domain", "setup", "app", "--domain", "down.codeb.test"],
    );
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("not reachable") && r.stderr.contains("start PowerDNS"),
        "{}",
        r.all()
    );
    let r = plane.we(&home, &["--json", "domain", "list"]);
    assert_eq!(r.code, 1, "DNS cannot be asked: {}", r.all());
    assert!(
        json_of(&r)[0]["dns"]
            .as_str()
            .is_some_and(|s| s.starts_with("error:")),
        "{}",
        r.all()
    );
    pdns.restart();
    nothing_left(&caddy, &plane, &pdns, "down.codeb.test", "PowerDNS down");

    // Caddy fails after the DNS change (its HTTPS listener's port is taken, so the
    // domains server cannot start): the records are rolled back.
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken_port = taken.local_addr().expect("addr").port();
    let caddy2 = tls_caddy(CaddyBuild::Debian, taken_port);
    let busy = Plane::start(
        &scratch.path().join("plane-busy"),
        &pdns.url(),
        &key,
        &caddy2.admin_url(),
        taken_port,
        &[("app", production_port())],
    );
    let r = busy.we(
        &home,
        &["domain", "setup", "app", "--domain", "busy.codeb.test"],
    );
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("The DNS change was rolled back"),
        "{}",
        r.all()
    );
    assert!(
        r.stderr
            .contains("we domain setup app --domain busy.codeb.test"),
        "{}",
        r.all()
    );
    assert!(
        pdns.rrset(ZONE, "busy.codeb.test", "A").is_empty(),
        "the A record was not rolled back"
    );
    assert!(dig(pdns.dns_port, "busy.codeb.test", "A").is_empty());
    assert!(!busy.route_record("codeb-domain-busy.codeb.test").exists());
    assert!(
        !caddy2
            .config()
            .unwrap_or_default()
            .contains("codeb-domain-busy.codeb.test")
    );
    assert_eq!(busy.ask(Some("busy.codeb.test")), 404);

    // The half-done path: Caddy fails after the DNS change and PowerDNS goes down before
    // the rollback (a relay in front of Caddy's admin API kills pdns_server when the route
    // request arrives, then passes the request on to the real Caddy, which fails). The
    // answer says half-done and names the command that finishes it; that command works
    // once Caddy can take the route.
    let relay = killing_relay(
        caddy2.admin_url().trim_start_matches("http://"),
        pdns.pid().expect("pdns runs"),
        pdns.web_port,
    );
    let half = Plane::start(
        &scratch.path().join("plane-half"),
        &pdns.url(),
        &key,
        &relay,
        taken_port,
        &[("app", production_port())],
    );
    let r = half.we(
        &home,
        &["domain", "setup", "app", "--domain", "half.codeb.test"],
    );
    assert_ne!(r.code, 0, "{}", r.all());
    assert!(
        r.stderr.contains("half-done")
            && r.stderr.contains("rolling the records back failed")
            && r.stderr
                .contains("we domain setup app --domain half.codeb.test")
            && r.stderr.contains("we domain remove half.codeb.test")
            && !r.stderr.contains("host not allowed"),
        "{}",
        r.all()
    );
    pdns.restart();
    assert_eq!(
        pdns.rrset(ZONE, "half.codeb.test", "A"),
        ["127.0.0.1"],
        "half-done: the record stays, as the answer says"
    );
    let r = half.we(&home, &["--json", "domain", "list"]);
    assert!(
        r.stdout.contains("half.codeb.test"),
        "the half-done domain is registered, so `we domain remove` can undo it: {}",
        r.all()
    );
    // Caddy can take the route again: the printed command finishes the setup.
    drop(taken);
    let r = half.we(
        &home,
        &["domain", "setup", "app", "--domain", "half.codeb.test"],
    );
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        caddy2
            .config()
            .unwrap_or_default()
            .contains("codeb-domain-half.codeb.test")
    );
    assert_eq!(dig(pdns.dns_port, "half.codeb.test", "A"), ["127.0.0.1"]);
    let r = half.we(&home, &["domain", "remove", "half.codeb.test"]);
    assert_eq!(r.code, 0, "{}", r.all());
    nothing_left(&caddy2, &half, &pdns, "half.codeb.test", "after the remove");
    drop(half);
    drop(busy);
    drop(caddy2);

    // Caddy down: refused before anything changes.
    caddy.kill();
    let r = plane.we(
        &home,
        &["domain", "setup", "app", "--domain", "nocaddy.codeb.test"],
    );
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("Caddy") && r.stderr.contains("Nothing was changed"),
        "{}",
        r.all()
    );
    assert!(pdns.rrset(ZONE, "nocaddy.codeb.test", "A").is_empty());
    caddy.kill_and_restart();
    nothing_left(&caddy, &plane, &pdns, "nocaddy.codeb.test", "Caddy down");

    // Every write, refused or failed, is in the audit log; the key is in none of it.
    let (s, audit) = plane.call("GET", "/api/v1/audit?limit=500", None);
    assert_eq!(s, 200, "{audit}");
    for needle in [
        "\"denied\"",
        "failed: ",
        "domain:alias.codeb.test",
        "domain:down.codeb.test",
    ] {
        assert!(audit.contains(needle), "audit lacks {needle}: {audit}");
    }
    assert!(!audit.contains(&key) && !plane.log().contains(&key));
    let _ = std::io::stderr().flush();
}
