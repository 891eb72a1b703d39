//! `we workflow init <p> --type node --database --redis-prefix` end to end (process start,
//! one authenticated `POST /api/v1/projects/<p>/init`: registry, two ports under the
//! manifest lock, two roles and two databases with markers and REVOKE, two ACL users, three
//! 0600 files on the server; then the workflow and `.env` in the project directory) beside the
//! same provisioning by hand: one `psql` (2x CREATE ROLE, 2x CREATE DATABASE, 2x REVOKE), two
//! `redis-cli ACL SETUSER` and writing `.env` and the workflow, interleaved in the same run
//! against the same PostgreSQL cluster and redis-server (both started here on free loopback
//! ports, never the machine's shared ones). Target: a median within 1.5x of the hand's.
//!
//! Each run provisions a new project (a re-run is a no-op); `--redis-prefix` so that the 16
//! Redis DB indexes do not run out. Bounded by `runs` (20 to 60).

use codeb_testbed::free_port;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use codeb_core::vars;

use crate::{bin, pair, row};

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

fn ok(c: &mut Command, what: &str) -> Result<String, String> {
    let o = c.output().map_err(|e| format!("{what}: {e}"))?;
    if !o.status.success() {
        return Err(format!(
            "{what} failed ({}): {}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

struct Killed(Vec<Child>);

impl Drop for Killed {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

struct Cluster<'a> {
    data: &'a Path,
}

impl Drop for Cluster<'_> {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(format!("{PG_BIN}/pg_ctl"))
            .arg("-D")
            .arg(self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

pub fn run(runs: usize) -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("codeb-bench-init-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let result = measure(&dir, runs.clamp(20, 60));
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn measure(dir: &Path, runs: usize) -> Result<(), String> {
    let daemon = bin("codeb-daemon")?;
    let we = bin("we")?;
    if !Path::new(PG_BIN).join("initdb").exists() {
        return Err(format!(
            "{PG_BIN}/initdb is missing: apt-get install postgresql-15 (scripts/setup)"
        ));
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| e.to_string())?;
    // PostgreSQL: a cluster of our own, scram-sha-256, as the postgres user.
    let pg_dir = dir.join("pg");
    std::fs::create_dir_all(&pg_dir).map_err(|e| e.to_string())?;
    let pg_pw = format!("bench-{}", std::process::id());
    std::fs::write(pg_dir.join("pw"), &pg_pw).map_err(|e| e.to_string())?;
    ok(
        Command::new("chown")
            .arg("-R")
            .arg("postgres:postgres")
            .arg(&pg_dir),
        "chown",
    )?;
    let data = pg_dir.join("data");
    let as_pg = |program: &str| {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", program]);
        c
    };
    ok(
        as_pg(&format!("{PG_BIN}/initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=scram-sha-256", "--no-sync"])
            .arg(format!("--pwfile={}", pg_dir.join("pw").display())),
        "initdb",
    )?;
    let pg_port = free_port();
    ok(
        as_pg(&format!("{PG_BIN}/pg_ctl"))
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(pg_dir.join("log"))
            .arg("-o")
            .arg(format!(
                "-p {pg_port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
                pg_dir.display()
            ))
            .args(["-w", "-t", "30", "start"]),
        "pg_ctl start",
    )?;
    let _cluster = Cluster { data: &data };
    let pg_admin = format!("postgresql://postgres:{pg_pw}@127.0.0.1:{pg_port}/postgres");
    // Redis with a password on its default user.
    let redis_port = free_port();
    let redis_pw = format!("bench-redis-{}", std::process::id());
    let mut children = Killed(vec![
        Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &redis_port.to_string()])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--requirepass",
                &redis_pw,
            ])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("redis-server (apt-get install redis-server): {e}"))?,
    ]);
    let redis_admin = format!("redis://default:{redis_pw}@127.0.0.1:{redis_port}");
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::net::TcpStream::connect(("127.0.0.1", redis_port)).is_err() {
        if Instant::now() > deadline {
            return Err("redis-server did not listen within 15 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // The daemon, its admin URLs in 0600 files.
    let secret = |name: &str, text: &str| -> Result<std::path::PathBuf, String> {
        let p = dir.join(name);
        std::fs::write(&p, text).map_err(|e| e.to_string())?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| e.to_string())?;
        Ok(p)
    };
    let pg_file = secret("pg-admin-url", &pg_admin)?;
    let redis_file = secret("redis-admin-url", &redis_admin)?;
    std::fs::create_dir_all(dir.join("quadlet")).map_err(|e| e.to_string())?;
    let port = free_port();
    let cfg = dir.join("daemon.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"listen = "127.0.0.1:{port}"
state_dir = "state"
[previews]
caddy_admin = ""
runtime = "podman"
quadlet_dir = "{q}"
manifest = "{m}"
[api.provision]
postgres_admin_url_file = "{pg}"
redis_admin_url_file = "{rd}"
storage_host = "127.0.0.1"
env_dir = "{env}"
backup_dir = "{bk}"
"#,
            q = dir.join("quadlet").display(),
            m = dir.join("port-manifest.yaml").display(),
            pg = pg_file.display(),
            rd = redis_file.display(),
            env = dir.join("env").display(),
            bk = dir.join("backups").display(),
        ),
    )
    .map_err(|e| e.to_string())?;
    let out = ok(
        Command::new(&daemon)
            .args(["bootstrap-admin", "--config"])
            .arg(&cfg)
            .env(vars::CODEB_WEBHOOK_SECRET, "bench")
            .stdin(Stdio::null()),
        "codeb-daemon bootstrap-admin",
    )?;
    let token = out
        .split_whitespace()
        .find(|w| w.starts_with("codeb_"))
        .map(str::to_owned)
        .ok_or("codeb-daemon bootstrap-admin printed no token")?;
    children.0.push(
        Command::new(&daemon)
            .args(["serve", "--config"])
            .arg(&cfg)
            .env(vars::CODEB_WEBHOOK_SECRET, "bench")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("codeb-daemon serve: {e}"))?,
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err("codeb-daemon did not listen within 15 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let server = format!("http://127.0.0.1:{port}");
    let home = dir.join("home");
    // The workflow the hand writes: the same file init writes.
    let set = codeb_workflow_gen::TemplateSet::embedded().map_err(|e| e.to_string())?;
    let mut n_we = 0usize;
    let mut we_cmd = || {
        n_we += 1;
        let p = format!("w{n_we}");
        let d = dir.join(&p);
        let _ = std::fs::create_dir_all(&d);
        let mut c = Command::new(&we);
        c.args([
            "workflow",
            "init",
            &p,
            "--type",
            "node",
            "--database",
            "--redis-prefix",
        ])
        .arg("--dir")
        .arg(&d)
        .env_clear()
        .env(vars::HOME, &home)
        .env(vars::CODEB_SERVER, &server)
        .env(vars::CODEB_TOKEN, &token);
        c
    };
    let mut n_hand = 0usize;
    let mut hand_cmd = || {
        n_hand += 1;
        let p = format!("h{n_hand}");
        let d = dir.join(&p);
        let _ = std::fs::create_dir_all(d.join(".github/workflows"));
        let mut opts = codeb_workflow_gen::Options::new(
            codeb_core::ProjectName::new(&p).unwrap_or_else(|_| unreachable!("a valid name")),
            "node",
        );
        opts.database = true;
        opts.redis = true;
        let wf = codeb_workflow_gen::render(&opts, &set).unwrap_or_default();
        let _ = std::fs::write(d.join("workflow.tmpl"), wf);
        let pw = format!("{:0>43}", n_hand);
        let script = format!(
            r#"set -e
psql -X -q -v ON_ERROR_STOP=1 -d "$ADMIN" \
  -c "CREATE ROLE {p}_user LOGIN PASSWORD '{pw}'" \
  -c "CREATE ROLE {p}_staging_user LOGIN PASSWORD '{pw}'" \
  -c "CREATE DATABASE {p}_db OWNER {p}_user" \
  -c "CREATE DATABASE {p}_staging_db OWNER {p}_staging_user" \
  -c "REVOKE CONNECT ON DATABASE {p}_db FROM PUBLIC" \
  -c "REVOKE CONNECT ON DATABASE {p}_staging_db FROM PUBLIC"
redis-cli --no-auth-warning -u "$RADMIN" ACL SETUSER {p} on '>{pw}' '~{p}:*' '&{p}:*' +@all -@admin -@dangerous >/dev/null
redis-cli --no-auth-warning -u "$RADMIN" ACL SETUSER {p}.staging on '>{pw}' '~{p}:staging:*' '&{p}:staging:*' +@all -@admin -@dangerous >/dev/null
umask 077
cat > {d}/.env <<EOF
NODE_ENV=production
PORT=3000
DATABASE_URL=postgresql://{p}_user:{pw}@127.0.0.1:{pg_port}/{p}_db?schema=public
REDIS_URL=redis://{p}:{pw}@127.0.0.1:{redis_port}/0
REDIS_PREFIX={p}:
CENTRIFUGO_URL=ws://127.0.0.1:8000/connection/websocket
CENTRIFUGO_API_URL=http://127.0.0.1:8000/api
CENTRIFUGO_API_KEY={pw}
CENTRIFUGO_SECRET={pw}
EOF
cp {d}/workflow.tmpl {d}/.github/workflows/{p}-deploy.yml
"#,
            d = d.display()
        );
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg(script)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("ADMIN", &pg_admin)
            .env("RADMIN", &redis_admin);
        c
    };
    println!(
        "\n## `we workflow init --database --redis-prefix` end to end vs the same by hand (psql + redis-cli + writing the files), {runs} interleaved runs\n"
    );
    println!("| what | median | p90 | ratio |\n|---|---|---|---|");
    let (w, h) = pair(runs, &mut we_cmd, &mut hand_cmd)?;
    row(
        "by hand: `psql` + `redis-cli ACL SETUSER` + files",
        &h,
        None,
    );
    row("`we workflow init`", &w, Some(&h));
    let ratio = w.median.as_secs_f64() / h.median.as_secs_f64();
    println!(
        "\ntarget: within 1.50x of the hand: {}",
        if ratio <= 1.5 { "met" } else { "NOT met" }
    );
    Ok(())
}
