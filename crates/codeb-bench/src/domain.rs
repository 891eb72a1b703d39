//! `we domain setup` to the first successful HTTPS response for the new name, beside the same
//! steps done by hand with `curl` against both APIs (a `PATCH` of the rrset to PowerDNS, a
//! `POST` of the route to Caddy's admin API, then the same HTTPS polling), interleaved in one
//! run against the same PowerDNS, Caddy (Debian's, `internal` issuer) and backend. Each run
//! uses a new name, so both pay for a certificate. The by-hand peer makes no checks and no
//! rollback: it is the floor. Target: a median within 1.5x of it.
//!
//! Only 127.0.0.1 is targeted; the loop is bounded by `runs`.

use codeb_testbed::free_port;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use codeb_core::vars;

use crate::{Stats, ms, stats};

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(cmd: &mut Command, log: &Path) -> Result<Proc, String> {
    let f = std::fs::File::create(log).map_err(|e| e.to_string())?;
    let g = f.try_clone().map_err(|e| e.to_string())?;
    cmd.stdin(Stdio::null())
        .stdout(f)
        .stderr(g)
        .spawn()
        .map(Proc)
        .map_err(|e| format!("{cmd:?}: {e}"))
}

fn wait_tcp(port: u16, what: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err(format!("{what} did not listen on {port} within 20 s"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn ok(cmd: &mut Command) -> Result<String, String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{cmd:?}: {}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

pub fn run(runs: usize) -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("codeb-bench-domain-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let result = measure(&dir, runs.clamp(5, 40));
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn measure(dir: &Path, runs: usize) -> Result<(), String> {
    let daemon = crate::bin("codeb-daemon")?;
    let we = crate::bin("we")?;
    let zone = "codeb.bench";
    let key = format!("bench-key-{}", std::process::id());

    // PowerDNS.
    let schema = "/usr/share/pdns-backend-sqlite3/schema/schema.sqlite3.sql";
    let db = dir.join("pdns.sqlite3");
    rusqlite::Connection::open(&db)
        .and_then(|c| c.execute_batch(&std::fs::read_to_string(schema).unwrap_or_default()))
        .map_err(|e| {
            format!(
                "the PowerDNS schema ({schema}; scripts/setup installs pdns-backend-sqlite3): {e}"
            )
        })?;
    let (dns_port, web_port) = (free_port(), free_port());
    let _pdns = spawn(
        Command::new("/usr/sbin/pdns_server")
            .arg(format!("--config-dir={}", dir.display()))
            .arg(format!("--socket-dir={}", dir.display()))
            .args([
                "--guardian=no",
                "--daemon=no",
                "--disable-syslog",
                "--launch=gsqlite3",
            ])
            .arg(format!("--gsqlite3-database={}", db.display()))
            .arg("--local-address=127.0.0.1")
            .arg(format!("--local-port={dns_port}"))
            .args([
                "--api=yes",
                "--webserver=yes",
                "--webserver-address=127.0.0.1",
            ])
            .arg(format!("--api-key={key}"))
            .arg(format!("--webserver-port={web_port}"))
            .arg("--webserver-allow-from=127.0.0.1"),
        &dir.join("pdns.log"),
    )?;
    wait_tcp(web_port, "pdns_server")?;
    let pdns = format!("http://127.0.0.1:{web_port}");
    // The key reaches curl through a header file, never the command line.
    let pdns_header = dir.join("pdns.header");
    std::fs::write(&pdns_header, format!("X-API-Key: {key}\n")).map_err(|e| e.to_string())?;
    let curl_pdns = |method: &str, path: &str, body: &str| {
        let mut c = Command::new("curl");
        c.args(["-sf", "-X", method, "-H"])
            .arg(format!("@{}", pdns_header.display()))
            .args(["-H", "content-type: application/json", "--data", body])
            .arg(format!("{pdns}{path}"));
        c
    };
    let mut zone_create = curl_pdns(
        "POST",
        "/api/v1/servers/localhost/zones",
        &format!(r#"{{"name":"{zone}.","kind":"Native","nameservers":["ns1.{zone}."]}}"#),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while ok(&mut zone_create).is_err() {
        if Instant::now() > deadline {
            return Err(format!("cannot create zone {zone} in PowerDNS"));
        }
        std::thread::sleep(Duration::from_millis(50));
        zone_create = curl_pdns(
            "POST",
            "/api/v1/servers/localhost/zones",
            &format!(r#"{{"name":"{zone}.","kind":"Native","nameservers":["ns1.{zone}."]}}"#),
        );
    }

    // Caddy with the internal issuer.
    let (admin, https, http) = (free_port(), free_port(), free_port());
    let caddy_json = dir.join("caddy.json");
    std::fs::write(
        &caddy_json,
        format!(
            r#"{{"admin":{{"listen":"127.0.0.1:{admin}","config":{{"persist":false}}}},
  "apps":{{"http":{{"http_port":{http},"https_port":{https}}},
  "tls":{{"automation":{{"policies":[{{"issuers":[{{"module":"internal"}}]}}]}}}},
  "pki":{{"certificate_authorities":{{"local":{{"install_trust":false}}}}}}}}}}"#
        ),
    )
    .map_err(|e| e.to_string())?;
    let _caddy = spawn(
        Command::new("/usr/bin/caddy")
            .args(["run", "--config"])
            .arg(&caddy_json)
            .env("HOME", dir)
            .env("XDG_DATA_HOME", dir.join("data"))
            .env("XDG_CONFIG_HOME", dir.join("config")),
        &dir.join("caddy.log"),
    )?;
    wait_tcp(admin, "caddy")?;
    let caddy_admin = format!("http://127.0.0.1:{admin}");

    // The project's backend on its production port (4401 in the manifest below; on a host
    // Caddy's front listens there): a loopback listener answering 200.
    let backend = TcpListener::bind("127.0.0.1:4401")
        .map_err(|e| format!("port 4401 (the bench project's production port) is taken: {e}"))?;
    std::thread::spawn(move || {
        for s in backend.incoming() {
            let Ok(mut s) = s else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        }
    });

    // The control plane with [domains].
    let port = free_port();
    std::fs::create_dir_all(dir.join("quadlet")).map_err(|e| e.to_string())?;
    std::fs::write(
        dir.join("port-manifest.yaml"),
        "version: 1\nprojects:\n  app: {production: {port: 4401}}\n",
    )
    .map_err(|e| e.to_string())?;
    let key_file = dir.join("pdns.key");
    std::fs::write(&key_file, &key).map_err(|e| e.to_string())?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| e.to_string())?;
    }
    let cfg = dir.join("daemon.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"listen = "127.0.0.1:{port}"
state_dir = "state"
shutdown_grace = "2s"
[previews]
github_api_url = "http://127.0.0.1:{dead}"
caddy_admin = "{caddy_admin}"
quadlet_dir = "{q}"
manifest = "{m}"
runtime = "podman"
[domains]
pdns_url = "{pdns}"
pdns_key_file = "pdns.key"
zones = ["{zone}"]
ipv4 = "127.0.0.1"
https_listen = "127.0.0.1:{https}"
"#,
            dead = free_port(),
            q = dir.join("quadlet").display(),
            m = dir.join("port-manifest.yaml").display(),
        ),
    )
    .map_err(|e| e.to_string())?;
    let secret = "bench-hook-secret";
    let text = ok(Command::new(&daemon)
        .args(["bootstrap-admin", "--config"])
        .arg(&cfg)
        .env(vars::CODEB_WEBHOOK_SECRET, secret))?;
    let token = text
        .split_whitespace()
        .find(|w| w.starts_with("codeb_"))
        .map(str::to_owned)
        .ok_or("codeb-daemon bootstrap-admin printed no token")?;
    let _daemon = spawn(
        Command::new(&daemon)
            .args(["serve", "--config"])
            .arg(&cfg)
            .env(vars::CODEB_WEBHOOK_SECRET, secret),
        &dir.join("daemon.log"),
    )?;
    wait_tcp(port, "codeb-daemon")?;
    let server = format!("http://127.0.0.1:{port}");
    let auth_header = dir.join("auth.header");
    std::fs::write(&auth_header, format!("Authorization: Bearer {token}\n"))
        .map_err(|e| e.to_string())?;
    ok(Command::new("curl")
        .args(["-sf", "-H"])
        .arg(format!("@{}", auth_header.display()))
        .args(["-H", "content-type: application/json", "--data"])
        .arg(
            r#"{"name":"app","type":"static","repository":"acme/app","image":"127.0.0.1:1/acme/app","container_port":3000,"environments":[{"name":"production"}]}"#,
        )
        .arg(format!("{server}/api/v1/projects")))?;
    let root = dir.join("data/caddy/pki/authorities/local/root.crt");
    let https_ready = |host: &str| -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let st = Command::new("curl")
                .args(["-sf", "-o", "/dev/null", "--max-time", "3", "--cacert"])
                .arg(&root)
                .arg("--resolve")
                .arg(format!("{host}:{https}:127.0.0.1"))
                .arg(format!("https://{host}:{https}/"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map_err(|e| e.to_string())?;
            if st.success() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "https://{host}:{https}/ did not answer within 30 s"
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    let home = dir.join("home");
    let we_setup = |host: &str| -> Result<Duration, String> {
        let start = Instant::now();
        ok(Command::new(&we)
            .args(["domain", "setup", "app", "--domain", host])
            .env_clear()
            .env(vars::HOME, &home)
            .env(vars::CODEB_SERVER, &server)
            .env(vars::CODEB_TOKEN, &token))?;
        https_ready(host)?;
        Ok(start.elapsed())
    };
    let by_hand = |host: &str| -> Result<Duration, String> {
        let start = Instant::now();
        ok(&mut curl_pdns(
            "PATCH",
            &format!("/api/v1/servers/localhost/zones/{zone}."),
            &format!(
                r#"{{"rrsets":[{{"name":"{host}.","type":"A","ttl":300,"changetype":"REPLACE","records":[{{"content":"127.0.0.1","disabled":false}}]}}]}}"#
            ),
        ))?;
        ok(Command::new("curl")
            .args(["-sf", "-X", "POST", "-H", "content-type: application/json", "--data"])
            .arg(format!(
                r#"{{"@id":"hand-{host}","match":[{{"host":["{host}"]}}],"handle":[{{"handler":"reverse_proxy","upstreams":[{{"dial":"127.0.0.1:4401"}}]}}],"terminal":true}}"#
            ))
            .arg(format!(
                "{caddy_admin}/config/apps/http/servers/codeb-domains/routes"
            )))?;
        https_ready(host)?;
        Ok(start.elapsed())
    };
    // The first setup creates the codeb-domains server; both then add routes to it.
    we_setup(&format!("warm.{zone}"))?;
    let curl_version = ok(Command::new("curl").arg("--version"))?
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    let (mut tw, mut th) = (Vec::new(), Vec::new());
    for i in 0..runs {
        tw.push(we_setup(&format!("w{i}.{zone}"))?);
        th.push(by_hand(&format!("h{i}.{zone}"))?);
    }
    let (w, h): (Stats, Stats) = (stats(tw), stats(th));
    println!(
        "\n## `we domain setup` to the first HTTPS 200 vs the same by hand ({curl_version} against PowerDNS's and Caddy's APIs; {runs} interleaved runs, a new name each)\n"
    );
    println!("| what | median | p90 | ratio |\n|---|---|---|---|");
    crate::row(
        "by hand: curl PATCH rrset + POST route, then HTTPS",
        &h,
        None,
    );
    crate::row("`we domain setup`, then HTTPS", &w, Some(&h));
    let ratio = w.median.as_secs_f64() / h.median.as_secs_f64();
    println!(
        "\nratio {ratio:.2}x (median {} vs {}); target within 1.50x: {}",
        ms(w.median),
        ms(h.median),
        if ratio <= 1.5 { "met" } else { "NOT met" }
    );
    Ok(())
}
