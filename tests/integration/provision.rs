//! `we workflow init` and `we project remove` end to end: the real `we` binary against a real
//! `codeb-daemon` process, which provisions on a PostgreSQL cluster and a redis-server these
//! tests start themselves (scram-sha-256 and a superuser password; a default user with a
//! password). The generated URLs are proven by logging in with them (psql, redis-cli).

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use codeb_core::vars;

use crate::stores::{PgCluster, RedisServer, secret_file};
use crate::util::{Run, bin, codeb, dead_port, run, scrubbed, tempdir};
use crate::we_cli::we;

pub struct Plane {
    pub dir: tempfile::TempDir,
    pub home: tempfile::TempDir,
    pub config: PathBuf,
    pub listen: String,
    pub token: String,
    child: Option<Child>,
}

impl Plane {
    /// A daemon whose `[api.provision]` points at `pg` and `redis` (either may be absent).
    pub fn start(pg: Option<&PgCluster>, redis: Option<&RedisServer>) -> Plane {
        Self::start_with_redis_url(pg, redis.map(RedisServer::admin_url))
    }

    pub fn start_with_redis_url(pg: Option<&PgCluster>, redis_url: Option<String>) -> Plane {
        let dir = tempdir();
        let d = dir.path();
        std::fs::create_dir_all(d.join("quadlet")).expect("quadlet dir");
        let mut prov = format!(
            "[api.provision]\nstorage_host = \"127.0.0.1\"\nenv_dir = \"{}\"\nbackup_dir = \"{}\"\npg_dump = \"/usr/bin/pg_dump\"\ncentrifugo_url = \"ws://127.0.0.1:8000/connection/websocket\"\ncentrifugo_api_url = \"http://127.0.0.1:8000/api\"\n",
            d.join("env").display(),
            d.join("backups").display()
        );
        if let Some(pg) = pg {
            let f = d.join("pg-admin-url");
            secret_file(&f, &pg.admin_url());
            prov.push_str(&format!("postgres_admin_url_file = \"{}\"\n", f.display()));
        }
        if let Some(u) = redis_url {
            let f = d.join("redis-admin-url");
            secret_file(&f, &u);
            prov.push_str(&format!("redis_admin_url_file = \"{}\"\n", f.display()));
        }
        let listen = format!("127.0.0.1:{}", dead_port());
        let config = d.join("daemon.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"{listen}\"\nstate_dir = \"state\"\n[previews]\nmanifest = \"{}\"\nquadlet_dir = \"{}\"\ncaddy_admin = \"\"\nruntime = \"podman\"\n{prov}",
                d.join("manifest.yaml").display(),
                d.join("quadlet").display()
            ),
        )
        .expect("config");
        let r = run(codeb("codeb-daemon")
            .args(["bootstrap-admin", "--config"])
            .arg(&config)
            .args(["--name", "root"])
            .env(vars::CODEB_WEBHOOK_SECRET, "hook"));
        assert_eq!(r.code, 0, "bootstrap-admin: {}", r.all());
        let token = r
            .stdout
            .lines()
            .find(|l| l.starts_with("codeb_"))
            .expect("token line")
            .trim()
            .to_owned();
        let mut p = Plane {
            dir,
            home: tempdir(),
            config,
            listen,
            token,
            child: None,
        };
        p.serve();
        p
    }

    /// Starts (again) the daemon process and waits for /healthz.
    pub fn serve(&mut self) {
        let child = scrubbed(bin("codeb-daemon"))
            .args(["serve", "--config"])
            .arg(&self.config)
            .env(vars::CODEB_WEBHOOK_SECRET, "hook")
            .env("RUST_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.dir.path().join("daemon.log"))
                    .expect("daemon log"),
            )
            .spawn()
            .expect("spawn codeb-daemon");
        self.child = Some(child);
        let start = Instant::now();
        while !healthz(&self.listen) {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "codeb-daemon did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn we(&self, args: &[&str]) -> Run {
        run(self.we_cmd().args(args))
    }

    pub fn we_cmd(&self) -> std::process::Command {
        let mut c = we(self.home.path());
        c.env(vars::CODEB_SERVER, format!("http://{}", self.listen))
            .env(vars::CODEB_TOKEN, &self.token);
        c
    }

    pub fn env_dir(&self) -> PathBuf {
        self.dir.path().join("env")
    }

    /// The manifest ports assigned to `project`'s environments.
    pub fn ports_of(&self, project: &str) -> Vec<u16> {
        let text = self.manifest();
        if text.is_empty() {
            return Vec::new();
        }
        let doc = codeb_core::manifest::Document::parse(&text).expect("manifest parses");
        doc.manifest
            .assignments()
            .into_iter()
            .filter(|a| matches!(&a.owner, codeb_core::manifest::Owner::Slot(p, _) if p.as_str() == project))
            .map(|a| a.port)
            .collect()
    }

    pub fn manifest(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("manifest.yaml")).unwrap_or_default()
    }
}

impl Drop for Plane {
    fn drop(&mut self) {
        self.kill();
    }
}

fn healthz(listen: &str) -> bool {
    crate::infra::http_get(&format!("http://{listen}/healthz"), Duration::from_secs(2))
        .is_ok_and(|(status, _)| status == 200)
}

/// A project directory with a git `origin` remote on GitHub (or none).
pub fn project_dir(remote: Option<&str>) -> tempfile::TempDir {
    let d = tempdir();
    if let Some(r) = remote {
        std::fs::create_dir_all(d.path().join(".git")).expect(".git");
        std::fs::write(
            d.path().join(".git/config"),
            format!(
                "[core]\n\trepositoryformatversion = 0\n[remote \"origin\"]\n\turl = {r}\n\tfetch = +refs/heads/*:refs/remotes/origin/*\n"
            ),
        )
        .expect("git config");
    }
    d
}

pub fn env_of(path: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .expect("read env")
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).expect("stat").permissions().mode() & 0o777
}

/// The password in a `scheme://user:password@host...` URL.
fn password_of(url: &str) -> String {
    let rest = url.split_once("://").expect("scheme").1;
    let userinfo = rest.split_once('@').expect("userinfo").0;
    userinfo.split_once(':').expect("password").1.to_owned()
}

/// Every secret of a `.env`: passwords in the URLs and the Centrifugo keys.
fn secrets_of(env: &BTreeMap<String, String>) -> Vec<String> {
    let mut v = Vec::new();
    for k in ["DATABASE_URL", "REDIS_URL"] {
        if let Some(u) = env.get(k) {
            v.push(password_of(u));
        }
    }
    for k in ["CENTRIFUGO_API_KEY", "CENTRIFUGO_SECRET"] {
        v.push(env[k].clone());
    }
    v
}

fn assert_no_secret(what: &str, text: &str, secrets: &[String]) {
    for s in secrets {
        assert!(s.len() >= 40, "a secret of at least 256 bits: {s:?}");
        assert!(!text.contains(s.as_str()), "{what} holds a secret: {text}");
    }
}

fn db_url(env: &BTreeMap<String, String>) -> String {
    env["DATABASE_URL"].clone()
}

/// The same URL pointed at database `db`.
fn url_for_db(url: &str, db: &str) -> String {
    let (base, _) = url.rsplit_once('/').expect("path");
    format!("{base}/{db}")
}

#[test]
fn we_workflow_init_provisions_isolated_projects_and_a_rerun_changes_nothing() {
    let pg = PgCluster::start();
    let redis = RedisServer::start();
    let plane = Plane::start(Some(&pg), Some(&redis));
    let a = project_dir(Some("git@github.com:acme/alpha.git"));
    std::fs::write(a.path().join(".env"), "# my own\nAPP_NAME=alpha\nPORT=1\n").expect(".env");
    let dir_a = a.path().to_str().expect("utf8");

    // --dry-run: the plan, nothing changed anywhere.
    let r = plane.we(&[
        "workflow",
        "init",
        "alpha",
        "--type",
        "nextjs",
        "--database",
        "--redis",
        "--dry-run",
        "--dir",
        dir_a,
    ]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("create"), "{}", r.all());
    assert_eq!(
        pg.admin("SELECT count(*) FROM pg_roles WHERE rolname = 'alpha_user'"),
        "0"
    );
    assert!(!plane.manifest().contains("alpha"));
    assert!(!a.path().join(".github").exists());
    assert_eq!(
        std::fs::read_to_string(a.path().join(".env")).expect("env"),
        "# my own\nAPP_NAME=alpha\nPORT=1\n"
    );

    let r = plane.we(&[
        "workflow",
        "init",
        "alpha",
        "--type",
        "nextjs",
        "--database",
        "--redis",
        "--dir",
        dir_a,
    ]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stderr.contains("git push"), "the next step: {}", r.all());
    let env_path = a.path().join(".env");
    assert_eq!(mode(&env_path), 0o600);
    let env = env_of(&env_path);
    let keys: Vec<&str> = env.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "APP_NAME",
            "CENTRIFUGO_API_KEY",
            "CENTRIFUGO_API_URL",
            "CENTRIFUGO_SECRET",
            "CENTRIFUGO_URL",
            "DATABASE_URL",
            "NODE_ENV",
            "PORT",
            "REDIS_PREFIX",
            "REDIS_URL"
        ],
        "the manual's keys and the user's own"
    );
    assert_eq!(env["PORT"], "3000", "PORT is the container port");
    assert_eq!(env["REDIS_PREFIX"], "alpha:");
    assert!(
        db_url(&env).starts_with("postgresql://alpha_user:")
            && db_url(&env).ends_with(&format!("@127.0.0.1:{}/alpha_db?schema=public", pg.port)),
        "{}",
        db_url(&env)
    );
    let bak = a.path().join(".env.bak");
    assert_eq!(mode(&bak), 0o600);
    assert_eq!(
        std::fs::read_to_string(&bak).expect("bak"),
        "# my own\nAPP_NAME=alpha\nPORT=1\n"
    );
    let secrets = secrets_of(&env);
    assert_no_secret("init's output", &r.all(), &secrets);
    // The workflow is codeb-workflow-gen's, for these flags.
    let wf = std::fs::read_to_string(a.path().join(".github/workflows/alpha-deploy.yml"))
        .expect("workflow");
    assert!(
        wf.contains("codeb-workflow-gen --project alpha --type nextjs --database --redis"),
        "{wf}"
    );
    // The server's env files: 0600, staging on its own database and prefix.
    let prod = plane.env_dir().join("alpha-production.env");
    let staging = plane.env_dir().join("alpha-staging.env");
    assert_eq!(mode(&prod), 0o600);
    assert_eq!(mode(&staging), 0o600);
    let st = env_of(&staging);
    assert!(
        st["DATABASE_URL"].starts_with("postgresql://alpha_staging_user:")
            && st["DATABASE_URL"].contains("/alpha_staging_db?"),
        "staging has a role of its own: {st:?}"
    );
    assert_eq!(st["REDIS_PREFIX"], "alpha:staging:");
    assert!(
        st["REDIS_URL"].starts_with("redis://alpha.staging:"),
        "staging has an ACL user of its own: {st:?}"
    );
    assert_ne!(password_of(&st["DATABASE_URL"]), password_of(&db_url(&env)));
    assert_ne!(
        password_of(&st["REDIS_URL"]),
        password_of(&env["REDIS_URL"])
    );
    // Ports in the manifest.
    let m = plane.manifest();
    assert!(
        m.contains("alpha:") && m.contains("production") && m.contains("staging"),
        "{m}"
    );

    // The role: LOGIN only, marked; PUBLIC may not connect.
    assert_eq!(
        pg.admin("SELECT rolsuper, rolcreatedb, rolcreaterole, rolcanlogin, shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = 'alpha_user'"),
        "f|f|f|t|codeb:alpha"
    );
    assert_eq!(
        pg.admin("SELECT pg_get_userbyid(datdba), has_database_privilege('public', 'alpha_db', 'CONNECT') FROM pg_database WHERE datname = 'alpha_db'"),
        "alpha_user|f"
    );
    // Staging's role likewise, owning only staging's database.
    assert_eq!(
        pg.admin("SELECT rolsuper, rolcreatedb, rolcreaterole, rolcanlogin, shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = 'alpha_staging_user'"),
        "f|f|f|t|codeb:alpha"
    );
    assert_eq!(
        pg.admin("SELECT pg_get_userbyid(datdba), has_database_privilege('public', 'alpha_staging_db', 'CONNECT') FROM pg_database WHERE datname = 'alpha_staging_db'"),
        "alpha_staging_user|f"
    );
    assert_eq!(
        pg.admin("SELECT has_database_privilege('alpha_staging_user', 'alpha_db', 'CONNECT'), has_database_privilege('alpha_user', 'alpha_staging_db', 'CONNECT')"),
        "f|f"
    );
    // Logging in with the generated URL works, and the app can make its tables.
    let r = PgCluster::psql(&db_url(&env), "CREATE TABLE t (x int); SELECT current_user");
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("alpha_user"));
    let r = PgCluster::psql(
        &st["DATABASE_URL"],
        "CREATE TABLE s (x int); SELECT current_database(), current_user",
    );
    assert_eq!(
        r.stdout.lines().last(),
        Some("alpha_staging_db|alpha_staging_user"),
        "{}",
        r.all()
    );
    // Staging never reaches production's database, nor production staging's: by logging in.
    let r = PgCluster::psql(
        &url_for_db(&st["DATABASE_URL"], "alpha_db?schema=public"),
        "SELECT 1",
    );
    assert_ne!(r.code, 0, "staging's URL opened alpha_db: {}", r.all());
    assert!(
        r.stderr.contains("permission denied for database"),
        "{}",
        r.all()
    );
    let r = PgCluster::psql(
        &url_for_db(&db_url(&env), "alpha_staging_db?schema=public"),
        "SELECT 1",
    );
    assert_ne!(
        r.code,
        0,
        "production's URL opened alpha_staging_db: {}",
        r.all()
    );
    assert!(
        r.stderr.contains("permission denied for database"),
        "{}",
        r.all()
    );
    // Not a superuser, cannot make databases or roles.
    for sql in [
        "CREATE DATABASE x",
        "CREATE ROLE x",
        "ALTER ROLE alpha_user SUPERUSER",
    ] {
        let r = PgCluster::psql(&db_url(&env), sql);
        assert_ne!(r.code, 0, "{sql}: {}", r.all());
    }
    // Redis: its prefix only.
    let ru = env["REDIS_URL"].clone();
    assert_eq!(
        RedisServer::cli(&ru, &["SET", "alpha:k", "1"])
            .stdout
            .trim(),
        "OK"
    );
    // Staging's user: its own prefix only; production's keys are out of its reach.
    let sru = st["REDIS_URL"].clone();
    assert_eq!(
        RedisServer::cli(&sru, &["SET", "alpha:staging:k", "s"])
            .stdout
            .trim(),
        "OK"
    );
    for cmd in [
        &["GET", "alpha:k"][..],
        &["SET", "alpha:k", "from staging"],
        &["SET", "alpha:new", "x"],
        &["DEL", "alpha:k"],
        &["FLUSHDB"],
    ] {
        let r = RedisServer::cli(&sru, cmd);
        assert!(
            r.stdout.contains("NOPERM"),
            "staging may not {cmd:?}: {}",
            r.all()
        );
    }
    // Production's user still works (and, as the project's owner, sees staging's keys).
    assert_eq!(
        RedisServer::cli(&ru, &["GET", "alpha:k"]).stdout.trim(),
        "1"
    );
    assert_eq!(
        RedisServer::cli(&ru, &["GET", "alpha:staging:k"])
            .stdout
            .trim(),
        "s"
    );

    // A second project, static, outside any git repository: provisions, warns.
    let b = project_dir(None);
    let r = plane.we(&[
        "workflow",
        "init",
        "beta",
        "--type",
        "static",
        "--database",
        "--redis",
        "--dir",
        b.path().to_str().expect("utf8"),
    ]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stderr.contains("not a git repository"), "{}", r.all());
    let env_b = env_of(&b.path().join(".env"));
    assert_eq!(env_b["PORT"], "8080");
    assert_ne!(env_b["REDIS_URL"], ru);
    redis.admin(&["-n", "1", "SET", "beta:secret", "b"]);
    // Isolation: A's URL cannot connect to B's database, nor read B's keys.
    let r = PgCluster::psql(
        &url_for_db(&db_url(&env), "beta_db?schema=public"),
        "SELECT 1",
    );
    assert_ne!(r.code, 0, "{}", r.all());
    assert!(r.stderr.contains("permission denied"), "{}", r.all());
    let beta_db = env_b["REDIS_URL"]
        .rsplit('/')
        .next()
        .expect("db")
        .to_owned();
    assert_ne!(
        beta_db,
        ru.rsplit('/').next().expect("db"),
        "each project its own DB index"
    );
    let ru_in_beta_db = url_for_db(&ru, &beta_db);
    for cmd in [
        &["GET", "beta:secret"][..],
        &["KEYS", "*"],
        &["FLUSHALL"],
        &["CONFIG", "GET", "requirepass"],
        &["ACL", "LIST"],
    ] {
        let r = RedisServer::cli(&ru_in_beta_db, cmd);
        assert!(
            r.stdout.contains("NOPERM"),
            "alpha may not {cmd:?}: {}",
            r.all()
        );
    }
    assert_eq!(
        RedisServer::cli(&env_b["REDIS_URL"], &["GET", "beta:secret"])
            .stdout
            .trim(),
        "b"
    );

    // Running init again changes nothing and rotates nothing.
    let before = std::fs::read(&env_path).expect("env");
    let bak_before = std::fs::read(&bak).expect("bak");
    let prod_before = std::fs::read(&prod).expect("prod");
    let staging_before = std::fs::read(&staging).expect("staging");
    let r = plane.we(&[
        "workflow",
        "init",
        "alpha",
        "--type",
        "nextjs",
        "--database",
        "--redis",
        "--dir",
        dir_a,
        "--json",
    ]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_no_secret("--json", &r.all(), &secrets);
    let v: serde_json::Value = serde_json::from_str(r.stdout.trim()).expect("json");
    for s in v["steps"].as_array().expect("steps") {
        assert_eq!(s["state"], "exists", "a re-run changed {s}");
    }
    for f in v["files"].as_array().expect("files") {
        assert_eq!(f["state"], "exists", "a re-run changed {f}");
    }
    assert_eq!(std::fs::read(&env_path).expect("env"), before);
    assert_eq!(std::fs::read(&bak).expect("bak"), bak_before);
    assert_eq!(std::fs::read(&prod).expect("prod"), prod_before);
    assert_eq!(std::fs::read(&staging).expect("staging"), staging_before);
    assert_eq!(PgCluster::psql(&db_url(&env), "SELECT 1").code, 0);
    assert_eq!(PgCluster::psql(&st["DATABASE_URL"], "SELECT 1").code, 0);

    // --rotate-secrets: the old password stops working, the new .env works.
    let r = plane.we(&[
        "workflow",
        "init",
        "alpha",
        "--type",
        "nextjs",
        "--database",
        "--redis",
        "--dir",
        dir_a,
        "--rotate-secrets",
    ]);
    assert_eq!(r.code, 0, "{}", r.all());
    let env2 = env_of(&env_path);
    assert_ne!(db_url(&env2), db_url(&env));
    assert_eq!(env2["APP_NAME"], "alpha", "the user's key is kept");
    let r = PgCluster::psql(&db_url(&env), "SELECT 1");
    assert_ne!(r.code, 0, "the old password still works: {}", r.all());
    assert_eq!(PgCluster::psql(&db_url(&env2), "SELECT 1").code, 0);
    assert!(
        RedisServer::cli(&ru, &["GET", "alpha:k"])
            .all()
            .contains("WRONGPASS")
    );
    assert_eq!(
        RedisServer::cli(&env2["REDIS_URL"], &["GET", "alpha:k"])
            .stdout
            .trim(),
        "1"
    );
    assert_ne!(
        std::fs::read(&prod).expect("prod"),
        prod_before,
        "the server's env file too"
    );
    // Staging's role and ACL user are rotated as well.
    let st2 = env_of(&staging);
    assert_ne!(st2["DATABASE_URL"], st["DATABASE_URL"]);
    assert_ne!(st2["REDIS_URL"], sru);
    assert_ne!(PgCluster::psql(&st["DATABASE_URL"], "SELECT 1").code, 0);
    assert_eq!(PgCluster::psql(&st2["DATABASE_URL"], "SELECT 1").code, 0);
    assert!(
        RedisServer::cli(&sru, &["GET", "alpha:staging:k"])
            .all()
            .contains("WRONGPASS")
    );
    assert_eq!(
        RedisServer::cli(&st2["REDIS_URL"], &["GET", "alpha:staging:k"])
            .stdout
            .trim(),
        "s"
    );
    let mut all_secrets = secrets.clone();
    all_secrets.extend(secrets_of(&env2));
    all_secrets.extend(secrets_of(&st));
    all_secrets.extend(secrets_of(&st2));

    // The registry is valid; the audit log holds no secret.
    let r = plane.we(&["ssot", "validate"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let r = plane.we(&["audit", "--json"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("project.init"), "{}", r.all());
    assert_no_secret("the audit log", &r.all(), &all_secrets);
    let log = std::fs::read_to_string(plane.dir.path().join("daemon.log")).expect("daemon log");
    assert!(!log.is_empty(), "the daemon logs at debug level");
    assert_no_secret("the daemon's log", &log, &all_secrets);

    // Remove: refused without --yes; with it, a final dump first, then everything is gone.
    let r = plane.we(&["project", "remove", "alpha"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("--yes"), "{}", r.all());
    assert_eq!(
        pg.admin("SELECT count(*) FROM pg_database WHERE datname = 'alpha_db'"),
        "1"
    );
    let r = plane.we(&["project", "remove", "alpha", "--yes"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let dumps: Vec<_> = std::fs::read_dir(plane.dir.path().join("backups"))
        .expect("backups")
        .map(|e| e.expect("entry").path())
        .collect();
    let dump = dumps
        .iter()
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("alpha_db-"))
        })
        .expect("a final dump of alpha_db");
    assert_eq!(mode(dump), 0o600);
    let listed = run(std::process::Command::new("/usr/bin/pg_restore")
        .arg("--list")
        .arg(dump));
    assert!(
        listed.stdout.contains("TABLE public t"),
        "the dump has the table: {}",
        listed.all()
    );
    assert_eq!(
        pg.admin(
            "SELECT count(*) FROM pg_database WHERE datname IN ('alpha_db', 'alpha_staging_db')"
        ),
        "0"
    );
    assert_eq!(
        pg.admin(
            "SELECT count(*) FROM pg_roles WHERE rolname IN ('alpha_user', 'alpha_staging_user')"
        ),
        "0"
    );
    assert!(
        redis
            .admin(&["ACL", "USERS"])
            .lines()
            .all(|u| u != "alpha" && u != "alpha.staging")
    );
    assert!(
        dumps.iter().any(|p| p
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("alpha_staging_db-"))),
        "a final dump of staging's database too: {dumps:?}"
    );
    assert!(plane.ports_of("alpha").is_empty(), "{}", plane.manifest());
    // No empty `alpha:` entry is left in the manifest (it was, before).
    assert!(!plane.manifest().contains("alpha:"), "{}", plane.manifest());
    assert_eq!(plane.ports_of("beta").len(), 2);
    assert!(!prod.exists());
    // Beta is untouched.
    assert_eq!(PgCluster::psql(&db_url(&env_b), "SELECT 1").code, 0);
}

/// Nothing of `project` exists anywhere: no role or database, no ACL user, no port, no
/// registry row, no env file.
fn assert_nothing_of(plane: &Plane, pg: &PgCluster, redis: &RedisServer, project: &str) {
    let p = project.replace('-', "_");
    assert_eq!(
        pg.admin(&format!(
            "SELECT count(*) FROM pg_database WHERE datname IN ('{p}_db', '{p}_staging_db') AND shobj_description(oid, 'pg_database') = 'codeb:{project}'"
        )),
        "0"
    );
    assert_eq!(
        pg.admin(&format!(
            "SELECT count(*) FROM pg_roles WHERE rolname IN ('{p}_user', '{p}_staging_user') AND shobj_description(oid, 'pg_authid') = 'codeb:{project}'"
        )),
        "0"
    );
    let staging_user = format!("{project}.staging");
    assert!(
        redis
            .admin(&["ACL", "USERS"])
            .lines()
            .all(|u| (u != project || project == "eps") && u != staging_user),
        "{project}"
    );
    assert!(
        !plane.manifest().contains(&format!("{project}:")),
        "{}",
        plane.manifest()
    );
    let r = plane.we(&["ssot", "projects", "--json"]);
    assert!(!r.stdout.contains(&format!("\"{project}\"")), "{}", r.all());
    assert!(
        !plane
            .env_dir()
            .join(format!("{project}-production.env"))
            .exists()
    );
}

#[test]
fn we_workflow_init_refuses_bad_input_by_name_and_changes_nothing() {
    let pg = PgCluster::start();
    let redis = RedisServer::start();
    let plane = Plane::start(Some(&pg), Some(&redis));
    let d = project_dir(Some("https://github.com/acme/x"));
    let dir = d.path().to_str().expect("utf8");
    let init = |args: &[&str]| {
        let mut a = vec!["workflow", "init"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["--dir", dir]);
        plane.we(&a)
    };

    // Names that break the DNS-label rule, and one too long for PostgreSQL.
    for bad in ["Bad_Name", "-x", "a.b", "x;drop"] {
        let r = init(&[bad, "--type", "node", "--database"]);
        assert_eq!(r.code, 2, "{bad}: {}", r.all());
        assert!(r.stderr.contains(bad), "{bad}: {}", r.all());
    }
    let long = "a".repeat(51);
    let r = init(&[&long, "--type", "node", "--database"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("at most 50"), "{}", r.all());
    // A type the generator does not know.
    let r = init(&["x", "--type", "cobol", "--database"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("cobol") && r.stderr.contains("nextjs"),
        "{}",
        r.all()
    );
    assert!(!d.path().join(".env").exists());

    // A role, a database or an ACL user of that name that is not codeb's.
    pg.admin("CREATE ROLE gamma_user LOGIN");
    pg.admin("CREATE DATABASE delta_db");
    redis.admin(&["ACL", "SETUSER", "eps", "on", ">pw", "~*", "+@all"]);
    for (project, names) in [
        ("gamma", "PostgreSQL role `gamma_user`"),
        ("delta", "PostgreSQL database `delta_db`"),
        ("eps", "Redis ACL user `eps`"),
    ] {
        let r = init(&[project, "--type", "node", "--database", "--redis"]);
        assert_eq!(r.code, 2, "{project}: {}", r.all());
        assert!(
            r.stderr.contains(names) && r.stderr.contains("nothing was changed"),
            "{project}: {}",
            r.all()
        );
        assert_nothing_of(&plane, &pg, &redis, project);
    }
    assert_eq!(
        pg.admin("SELECT count(*) FROM pg_roles WHERE rolname IN ('delta_user', 'eps_user')"),
        "0"
    );
    // The foreign objects are untouched.
    assert_eq!(
        pg.admin("SELECT rolcanlogin, shobj_description(oid, 'pg_authid') IS NULL FROM pg_roles WHERE rolname = 'gamma_user'"),
        "t|t"
    );
    assert!(redis.admin(&["ACL", "GETUSER", "eps"]).contains("~*"));

    // --database works for every type, static and dockerfile included.
    for (i, t) in ["static", "dockerfile", "rust", "node"].iter().enumerate() {
        let p = format!("db-{t}");
        let r = init(&[&p, "--type", t, "--database"]);
        assert_eq!(r.code, 0, "{t}: {}", r.all());
        let env = env_of(&d.path().join(".env"));
        assert_eq!(PgCluster::psql(&db_url(&env), "SELECT 1").code, 0, "{t}");
        assert!(!env.contains_key("REDIS_URL"), "no --redis: no REDIS_URL");
        let _ = i;
    }

    // All 16 Redis DB indexes held: the 17th is refused naming --redis-prefix.
    for i in 0..16 {
        let r = init(&[&format!("r{i}"), "--type", "node", "--redis"]);
        assert_eq!(r.code, 0, "r{i}: {}", r.all());
    }
    let r = init(&["r16", "--type", "node", "--redis"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("--redis-prefix") && r.stderr.contains("16"),
        "{}",
        r.all()
    );
    assert_nothing_of(&plane, &pg, &redis, "r16");
    let r = init(&["r16", "--type", "node", "--redis-prefix"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let env = env_of(&d.path().join(".env"));
    assert!(env["REDIS_URL"].ends_with("/0"), "{}", env["REDIS_URL"]);
    assert_eq!(env["REDIS_PREFIX"], "r16:");
    // Indexes are not reused while assigned: every project has its own.
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..16 {
        let e = env_of(&plane.env_dir().join(format!("r{i}-production.env")));
        assert!(seen.insert(e["REDIS_URL"].rsplit('/').next().expect("db").to_owned()));
    }
    // Removing one frees its index for the next project.
    assert_eq!(plane.we(&["project", "remove", "r3", "--yes"]).code, 0);
    let r = init(&["r17", "--type", "node", "--redis"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(plane.we(&["ssot", "validate"]).code, 0);

    // A developer may not provision or remove.
    let r = plane.we(&["team", "add", "dev", "--role", "developer", "--json"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let v: serde_json::Value = serde_json::from_str(r.stdout.trim()).expect("json");
    let dev_token = v["token"]["token"].as_str().expect("token").to_owned();
    for args in [
        &[
            "workflow",
            "init",
            "zeta",
            "--type",
            "node",
            "--database",
            "--dir",
            dir,
        ][..],
        &["project", "remove", "r0", "--yes"],
    ] {
        let r = run(plane.we_cmd().env(vars::CODEB_TOKEN, &dev_token).args(args));
        assert_eq!(r.code, 3, "{args:?}: {}", r.all());
    }
    assert_nothing_of(&plane, &pg, &redis, "zeta");
    assert_eq!(
        pg.admin("SELECT count(*) FROM pg_roles WHERE rolname = 'zeta_user'"),
        "0"
    );
}

#[test]
fn a_redis_without_acl_support_is_refused_before_anything_changes() {
    let pg = PgCluster::start();
    // ACL renamed away: the server answers as a Redis without ACLs does.
    let redis = RedisServer::start_with(&["--rename-command", "ACL", ""]);
    let plane = Plane::start(Some(&pg), Some(&redis));
    let d = project_dir(None);
    let r = plane.we(&[
        "workflow",
        "init",
        "noacl",
        "--type",
        "node",
        "--database",
        "--redis",
        "--dir",
        d.path().to_str().expect("utf8"),
    ]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("no ACL support"), "{}", r.all());
    assert_eq!(
        pg.admin("SELECT count(*) FROM pg_roles WHERE rolname = 'noacl_user'"),
        "0"
    );
    assert!(!plane.manifest().contains("noacl"));
    assert!(!d.path().join(".env").exists());
}

#[test]
fn a_daemon_killed_between_provisioning_steps_is_completed_by_a_rerun() {
    let pg = PgCluster::start();
    let redis = RedisServer::start();
    let mut plane = Plane::start(Some(&pg), Some(&redis));
    let d = project_dir(Some("https://github.com/acme/kappa.git"));
    let dir = d.path().to_str().expect("utf8").to_owned();
    // An open transaction that commented on template1 holds a lock that CREATE DATABASE
    // (which copies template1) waits for: the daemon stops after creating the role.
    let mut holder = std::process::Command::new("psql")
        .args(["-X", "-q", "-d", &pg.admin_url()])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("psql");
    let mut stdin = holder.stdin.take().expect("stdin");
    stdin
        .write_all(b"BEGIN; COMMENT ON DATABASE template1 IS 'held by the test';\n")
        .expect("hold");
    stdin.flush().expect("flush");
    let start = Instant::now();
    while pg.admin("SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.objid WHERE d.datname = 'template1' AND l.granted AND l.mode = 'ShareUpdateExclusiveLock'") != "1" {
        assert!(start.elapsed() < Duration::from_secs(10), "the lock is not held");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut init = plane.we_cmd();
    init.args([
        "workflow",
        "init",
        "kappa",
        "--type",
        "node",
        "--database",
        "--redis",
        "--dir",
        &dir,
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let client = init.spawn().expect("we");
    let start = Instant::now();
    while pg.admin("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'codeb-daemon' AND wait_event_type = 'Lock' AND query LIKE 'CREATE DATABASE%'") != "1" {
        assert!(start.elapsed() < Duration::from_secs(30), "the daemon never reached CREATE DATABASE");
        std::thread::sleep(Duration::from_millis(50));
    }
    plane.kill();
    let out = client.wait_with_output().expect("we");
    assert_ne!(out.status.code(), Some(0), "the client saw the daemon die");
    drop(stdin);
    let _ = holder.wait();
    // The killed daemon's CREATE DATABASE still runs to its end in its backend once the
    // lock is free (PostgreSQL notices the dead client only when it answers): wait for it.
    let start = Instant::now();
    while pg.admin("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'codeb-daemon'")
        != "0"
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the killed daemon's session lingers"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Half made: the role (marked) and the first database without its marker (the comment
    // comes in the next statement, which never ran); no staging database, no ACL user.
    assert_eq!(
        pg.admin(
            "SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = 'kappa_user'"
        ),
        "codeb:kappa"
    );
    assert_eq!(
        pg.admin("SELECT datname, pg_get_userbyid(datdba), shobj_description(oid, 'pg_database') IS NULL FROM pg_database WHERE datname LIKE 'kappa%'"),
        "kappa_db|kappa_user|t"
    );
    assert!(redis.admin(&["ACL", "USERS"]).lines().all(|u| u != "kappa"));
    assert!(!d.path().join(".env").exists());

    plane.serve();
    // validate names the half-made project and its pieces.
    let r = plane.we(&["ssot", "validate"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stdout.contains("kappa")
            && r.stdout.contains("kappa_user")
            && r.stdout.contains("database kappa_db"),
        "{}",
        r.all()
    );
    // The same init again completes it.
    let r = plane.we(&[
        "workflow",
        "init",
        "kappa",
        "--type",
        "node",
        "--database",
        "--redis",
        "--dir",
        &dir,
    ]);
    assert_eq!(r.code, 0, "{}", r.all());
    let env = env_of(&d.path().join(".env"));
    assert_eq!(PgCluster::psql(&db_url(&env), "SELECT 1").code, 0);
    assert_eq!(
        RedisServer::cli(&env["REDIS_URL"], &["SET", "kappa:a", "1"])
            .stdout
            .trim(),
        "OK"
    );
    assert_eq!(plane.we(&["ssot", "validate"]).code, 0);
    let r = plane.we(&[
        "workflow",
        "init",
        "kappa",
        "--type",
        "node",
        "--database",
        "--redis",
        "--dir",
        &dir,
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(r.stdout.trim()).expect("json");
    assert!(
        v["steps"]
            .as_array()
            .expect("steps")
            .iter()
            .all(|s| s["state"] == "exists"),
        "{v}"
    );

    // Redis down: refused naming the server, before any change.
    let port = redis.port;
    drop(redis);
    let d2 = project_dir(None);
    let dir2 = d2.path().to_str().expect("utf8");
    let r = plane.we(&[
        "workflow",
        "init",
        "lam",
        "--type",
        "node",
        "--database",
        "--redis",
        "--dir",
        dir2,
    ]);
    assert_ne!(r.code, 0, "{}", r.all());
    assert!(
        r.stderr.contains(&format!("127.0.0.1:{port}")),
        "{}",
        r.all()
    );
    assert_eq!(
        pg.admin("SELECT count(*) FROM pg_roles WHERE rolname = 'lam_user'"),
        "0",
        "refused before any change"
    );
    let _ = dead_port();
}

fn init_args<'a>(project: &'a str, dir: &'a str) -> Vec<&'a str> {
    vec![
        "workflow",
        "init",
        project,
        "--type",
        "node",
        "--database",
        "--redis",
        "--dir",
        dir,
    ]
}

#[test]
fn a_project_named_like_another_projects_staging_is_refused_and_changes_nothing() {
    let pg = PgCluster::start();
    let redis = RedisServer::start();
    let plane = Plane::start(Some(&pg), Some(&redis));
    let d = project_dir(None);
    let dir = d.path().to_str().expect("utf8");
    // `x`'s staging role and database are `x_staging_user` and `x_staging_db`, the very
    // names project `x-staging`'s production would get.
    let r = plane.we(&init_args("x", dir));
    assert_eq!(r.code, 0, "{}", r.all());
    let x_staging = env_of(&plane.env_dir().join("x-staging.env"));
    let r = plane.we(&init_args("x-staging", dir));
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("PostgreSQL role `x_staging_user`")
            && r.stderr.contains("project `x`")
            && r.stderr.contains("nothing was changed"),
        "{}",
        r.all()
    );
    assert_nothing_of(&plane, &pg, &redis, "x-staging");
    assert!(!plane.env_dir().join("x-staging.secrets").exists());
    // `x`'s staging is untouched: same owner and marker, its URL still logs in.
    assert_eq!(
        pg.admin("SELECT pg_get_userbyid(datdba), shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = 'x_staging_db'"),
        "x_staging_user|codeb:x"
    );
    assert_eq!(
        PgCluster::psql(&x_staging["DATABASE_URL"], "SELECT 1").code,
        0
    );

    // The other order: project `y-staging` first, then `y`, whose staging names it holds.
    let r = plane.we(&init_args("y-staging", dir));
    assert_eq!(r.code, 0, "{}", r.all());
    let r = plane.we(&init_args("y", dir));
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("PostgreSQL role `y_staging_user`")
            && r.stderr.contains("project `y-staging`")
            && r.stderr.contains("nothing was changed"),
        "{}",
        r.all()
    );
    assert_nothing_of(&plane, &pg, &redis, "y");
    assert_eq!(
        pg.admin("SELECT count(*) FROM pg_roles WHERE rolname = 'y_user'"),
        "0"
    );
    // Removing `x` leaves `y-staging`'s objects alone; validate is clean.
    assert_eq!(plane.we(&["project", "remove", "x", "--yes"]).code, 0);
    assert_eq!(
        pg.admin("SELECT count(*) FROM pg_roles WHERE rolname IN ('y_staging_user', 'y_staging_staging_user')"),
        "2"
    );
    let r = plane.we(&["ssot", "validate"]);
    assert_eq!(r.code, 0, "{}", r.all());
}

#[test]
fn a_project_provisioned_before_staging_had_its_own_role_gets_one_without_touching_production() {
    let pg = PgCluster::start();
    let redis = RedisServer::start();
    let plane = Plane::start(Some(&pg), Some(&redis));
    let d = project_dir(None);
    let dir = d.path().to_str().expect("utf8");
    let r = plane.we(&init_args("old", dir));
    assert_eq!(r.code, 0, "{}", r.all());
    let prod_file = plane.env_dir().join("old-production.env");
    let staging_file = plane.env_dir().join("old-staging.env");
    let prod = env_of(&prod_file);
    let st = env_of(&staging_file);
    assert_eq!(
        PgCluster::psql(
            &db_url(&prod),
            "CREATE TABLE accounts (email text); INSERT INTO accounts VALUES ('ceo@example.com')"
        )
        .code,
        0
    );
    assert_eq!(
        PgCluster::psql(
            &st["DATABASE_URL"],
            "CREATE TABLE items (id serial PRIMARY KEY, name text); INSERT INTO items (name) VALUES ('staged')"
        )
        .code,
        0
    );
    // Turn it into what the earlier codeb made: production's role owns both databases and
    // everything in staging's; one ACL user; a secrets file without staging's passwords.
    let in_staging = url_for_db(&pg.admin_url(), "old_staging_db");
    let r = PgCluster::psql(
        &in_staging,
        "REASSIGN OWNED BY old_staging_user TO old_user; DROP OWNED BY old_staging_user; GRANT CONNECT, TEMPORARY ON DATABASE old_staging_db TO old_user",
    );
    assert_eq!(r.code, 0, "{}", r.all());
    pg.admin("DROP ROLE old_staging_user");
    redis.admin(&["ACL", "DELUSER", "old.staging"]);
    let spath = plane.env_dir().join("old.secrets");
    let mut secrets: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&spath).expect("secrets")).expect("json");
    let obj = secrets.as_object_mut().expect("object");
    obj.remove("staging_pg_password");
    obj.remove("staging_redis_password");
    std::fs::write(&spath, secrets.to_string()).expect("secrets");
    let legacy_staging = std::fs::read_to_string(&staging_file)
        .expect("staging env")
        .replace(
            &password_of(&st["DATABASE_URL"]),
            &password_of(&db_url(&prod)),
        )
        .replace("old_staging_user:", "old_user:")
        .replace(
            &password_of(&st["REDIS_URL"]),
            &password_of(&prod["REDIS_URL"]),
        )
        .replace("redis://old.staging:", "redis://old:");
    std::fs::write(&staging_file, &legacy_staging).expect("staging env");
    let legacy = env_of(&staging_file);
    assert_eq!(
        PgCluster::psql(&legacy["DATABASE_URL"], "SELECT current_user")
            .stdout
            .trim(),
        "old_user",
        "the old way: staging logs in as production's role"
    );
    let prod_acl =
        "SELECT pg_get_userbyid(datdba), datacl::text FROM pg_database WHERE datname = 'old_db'";
    let prod_acl_before = pg.admin(prod_acl);
    let prod_file_before = std::fs::read(&prod_file).expect("prod env");
    // validate names what staging lacks.
    let r = plane.we(&["ssot", "validate"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stdout.contains("no role old_staging_user")
            && r.stdout.contains("old_staging_db is owned by old_user")
            && r.stdout.contains("no ACL user old.staging"),
        "{}",
        r.all()
    );

    // Init again: staging gets its role (owning its database and its tables) and ACL user.
    let r = plane.we(&[&init_args("old", dir)[..], &["--json"]].concat());
    assert_eq!(r.code, 0, "{}", r.all());
    let v: serde_json::Value = serde_json::from_str(r.stdout.trim()).expect("json");
    let state_of = |step: &str, target: &str| {
        v["steps"]
            .as_array()
            .expect("steps")
            .iter()
            .find(|s| s["step"] == step && s["target"] == target)
            .map(|s| s["state"].as_str().unwrap_or_default().to_owned())
    };
    assert_eq!(
        state_of("postgres:role", "old_staging_user").as_deref(),
        Some("created"),
        "{v}"
    );
    assert_eq!(
        state_of("postgres:database", "old_staging_db").as_deref(),
        Some("updated"),
        "{v}"
    );
    assert_eq!(
        state_of("postgres:role", "old_user").as_deref(),
        Some("exists"),
        "{v}"
    );
    assert_eq!(
        state_of("postgres:database", "old_db").as_deref(),
        Some("exists"),
        "{v}"
    );
    assert_eq!(
        state_of("redis:user", "old.staging").as_deref(),
        Some("created"),
        "{v}"
    );
    assert_eq!(
        state_of("redis:user", "old").as_deref(),
        Some("exists"),
        "{v}"
    );
    // Production: byte for byte the same env file, owner and ACL; its password still works.
    assert_eq!(
        std::fs::read(&prod_file).expect("prod env"),
        prod_file_before
    );
    assert_eq!(pg.admin(prod_acl), prod_acl_before);
    assert_eq!(
        PgCluster::psql(&db_url(&prod), "SELECT email FROM accounts")
            .stdout
            .trim(),
        "ceo@example.com"
    );
    let st2 = env_of(&staging_file);
    assert!(
        st2["DATABASE_URL"].starts_with("postgresql://old_staging_user:"),
        "{st2:?}"
    );
    assert!(
        st2["REDIS_URL"].starts_with("redis://old.staging:"),
        "{st2:?}"
    );
    assert_eq!(
        pg.admin(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'old_staging_db'"
        ),
        "old_staging_user"
    );
    let r = PgCluster::psql(
        &st2["DATABASE_URL"],
        "INSERT INTO items (name) VALUES ('after'); SELECT count(*), pg_get_userbyid(relowner) FROM items, pg_class WHERE relname = 'items' GROUP BY 2",
    );
    assert_eq!(
        r.stdout.lines().last(),
        Some("2|old_staging_user"),
        "{}",
        r.all()
    );
    // Each role now reaches only its own database.
    for (url, other) in [
        (db_url(&prod), "old_staging_db"),
        (st2["DATABASE_URL"].clone(), "old_db"),
    ] {
        let r = PgCluster::psql(&url_for_db(&url, other), "SELECT 1");
        assert_ne!(r.code, 0, "connected to {other}: {}", r.all());
        assert!(
            r.stderr.contains("permission denied for database"),
            "{}",
            r.all()
        );
    }
    let r = RedisServer::cli(&st2["REDIS_URL"], &["SET", "old:k", "x"]);
    assert!(r.stdout.contains("NOPERM"), "{}", r.all());
    assert_eq!(plane.we(&["ssot", "validate"]).code, 0);
    // And a further run changes nothing.
    let r = plane.we(&[&init_args("old", dir)[..], &["--json"]].concat());
    let v: serde_json::Value = serde_json::from_str(r.stdout.trim()).expect("json");
    for s in v["steps"].as_array().expect("steps") {
        assert_eq!(s["state"], "exists", "a re-run changed {s}");
    }
}

/// A small tmpfs mounted at `dir` for as long as it lives.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).expect("mount point");
        let r = run(std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir));
        assert_eq!(
            r.code,
            0,
            "mount tmpfs (the tests run as root): {}",
            r.all()
        );
        Tmpfs(dir.to_owned())
    }

    /// Writes `name` with 4 KiB blocks until the filesystem is full.
    fn fill(&self, name: &str) {
        let mut f = std::fs::File::create(self.0.join(name)).expect("filler");
        let block = [0u8; 4096];
        loop {
            match f.write_all(&block).and_then(|()| f.sync_all()) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::StorageFull => return,
                Err(e) => panic!("filling {}: {e}", self.0.display()),
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let r = run(std::process::Command::new("umount").arg(&self.0));
        if r.code != 0 {
            let _ = run(std::process::Command::new("umount").arg("-l").arg(&self.0));
        }
    }
}

#[test]
fn a_full_disk_part_way_through_init_leaves_nothing_and_a_rerun_completes() {
    let pg = PgCluster::start();
    let redis = RedisServer::start();
    let plane = Plane::start(Some(&pg), Some(&redis));
    let env_dir = plane.env_dir();
    let disk = Tmpfs::mount(&env_dir, "64k");
    let d = project_dir(None);
    let dir = d.path().to_str().expect("utf8");
    let nothing_left = |why: &str| {
        assert_nothing_of(&plane, &pg, &redis, "full");
        assert_eq!(
            pg.admin("SELECT count(*) FROM pg_roles WHERE rolname LIKE 'full%'")
                + "|"
                + &pg.admin("SELECT count(*) FROM pg_database WHERE datname LIKE 'full%'"),
            "0|0",
            "{why}"
        );
        assert!(!env_dir.join("full.secrets").exists(), "{why}");
        assert!(!env_dir.join("full-staging.env").exists(), "{why}");
        assert!(!d.path().join(".env").exists(), "{why}");
        let r = plane.we(&["ssot", "validate"]);
        assert_eq!(r.code, 0, "{why}: validate finds something: {}", r.all());
    };
    std::fs::write(env_dir.join("reserve"), [0u8; 4096]).expect("reserve");
    disk.fill("filler");

    // Full from the start: the secrets file (the first write) fails.
    let r = plane.we(&init_args("full", dir));
    assert_ne!(r.code, 0, "{}", r.all());
    let secrets = env_dir.join("full.secrets");
    assert!(
        r.stderr.contains(&secrets.display().to_string())
            && r.stderr.contains("ENOSPC")
            && r.stderr.contains("Nothing of `full` was kept"),
        "{}",
        r.all()
    );
    nothing_left("full from the start");

    // One block free: the secrets fit, then roles, databases, ACL users and ports are made,
    // and the production env file does not fit: all of it is undone.
    std::fs::remove_file(env_dir.join("reserve")).expect("reserve");
    let r = plane.we(&init_args("full", dir));
    assert_ne!(r.code, 0, "{}", r.all());
    let prod = env_dir.join("full-production.env");
    assert!(
        r.stderr.contains(&prod.display().to_string())
            && r.stderr.contains("ENOSPC")
            && r.stderr.contains("Nothing of `full` was kept"),
        "{}",
        r.all()
    );
    // The env files come after the data steps: those ran, and are gone again.
    assert!(
        r.stderr.contains("writing the production env file failed"),
        "{}",
        r.all()
    );
    assert!(!prod.exists());
    nothing_left("full after the data steps");

    // Space again: the same init completes the project.
    std::fs::remove_file(env_dir.join("filler")).expect("filler");
    let r = plane.we(&init_args("full", dir));
    assert_eq!(r.code, 0, "{}", r.all());
    let env = env_of(&d.path().join(".env"));
    assert_eq!(PgCluster::psql(&db_url(&env), "SELECT 1").code, 0);
    let st = env_of(&env_dir.join("full-staging.env"));
    assert_eq!(PgCluster::psql(&st["DATABASE_URL"], "SELECT 1").code, 0);
    assert_eq!(plane.we(&["ssot", "validate"]).code, 0);
    // `disk` is unmounted (declared after `plane`, dropped before it) even on a failure.
}
