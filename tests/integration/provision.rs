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
    assert!(st["DATABASE_URL"].contains("/alpha_staging_db?"), "{st:?}");
    assert_eq!(st["REDIS_PREFIX"], "alpha:staging:");
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
    // Logging in with the generated URL works, and the app can make its tables.
    let r = PgCluster::psql(&db_url(&env), "CREATE TABLE t (x int); SELECT current_user");
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("alpha_user"));
    let r = PgCluster::psql(&st["DATABASE_URL"], "SELECT current_database()");
    assert_eq!(r.stdout.trim(), "alpha_staging_db", "{}", r.all());
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
    assert_eq!(PgCluster::psql(&db_url(&env), "SELECT 1").code, 0);

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
    let mut all_secrets = secrets.clone();
    all_secrets.extend(secrets_of(&env2));

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
        pg.admin("SELECT count(*) FROM pg_roles WHERE rolname = 'alpha_user'"),
        "0"
    );
    assert!(redis.admin(&["ACL", "USERS"]).lines().all(|u| u != "alpha"));
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
    assert!(
        redis.admin(&["ACL", "USERS"]).lines().all(|u| u != project) || project == "eps",
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
    let long = "a".repeat(53);
    let r = init(&[&long, "--type", "node", "--database"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("at most 52"), "{}", r.all());
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
