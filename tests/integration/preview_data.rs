//! Issue 11 "Previews get their own data" and issue 12 "Domains for previews", end to end: a
//! real `codeb-daemon` process provisions a project (`we workflow init --database --redis`)
//! on a PostgreSQL cluster (scram-sha-256) and a redis-server with ACLs that the test
//! starts, then a pull request's preview gets a database made from the staging schema and
//! the repository's `codeb/seed.sql` (served by the fake GitHub's contents API), a Redis
//! ACL user of its own, its own env file, and `pr-<N>` records in a PowerDNS zone; all of
//! it goes with the preview, and the reconciler removes what is left of a preview that no
//! longer exists. Real podman, registry and Caddy as in `previews.rs`.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use codeb_core::vars;

use crate::domain::{Pdns, dig};
use crate::fake_github::{BOT_LOGIN, Pr};
use crate::infra::CaddyBuild;
use crate::previews::{
    Daemon, PREVIEWS, REPO, SECRET, Setup, containers_of, pr_event, publish, serves, setup_full,
    wait_idle, wait_until,
};
use crate::provision::{env_of, project_dir};
use crate::stores::{PgCluster, RedisServer, secret_file};
use crate::util::{codeb, run};
use crate::we_cli::we;

const ZONE: &str = "preview.test";
const PDNS_KEY: &str = "preview-data-pdns-key";

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).expect("stat").permissions().mode() & 0o777
}

fn pr(number: u64, sha: &str, open: bool) -> Pr {
    Pr {
        repo: REPO.into(),
        number,
        open,
        head_sha: sha.into(),
        head_repo: REPO.into(),
        labels: vec![],
        draft: false,
    }
}

struct World {
    s: Setup,
    pg: PgCluster,
    redis: RedisServer,
    pdns: Pdns,
    env_dir: PathBuf,
    token: String,
    home: tempfile::TempDir,
    _pdns_dir: tempfile::TempDir,
}

impl World {
    fn start() -> World {
        let pg = PgCluster::start();
        let redis = RedisServer::start();
        let pdns_dir = crate::util::tempdir();
        let pdns = Pdns::start(pdns_dir.path(), PDNS_KEY);
        pdns.create_zone(ZONE);
        let (pg_url, redis_url, pdns_url) = (pg.admin_url(), redis.admin_url(), pdns.url());
        let s = setup_full(CaddyBuild::Debian, &|d: &Path| {
            secret_file(&d.join("pg-admin-url"), &pg_url);
            secret_file(&d.join("redis-admin-url"), &redis_url);
            secret_file(&d.join("pdns.key"), PDNS_KEY);
            format!(
                r#"
[api.provision]
storage_host = "127.0.0.1"
env_dir = "{env}"
backup_dir = "{backups}"
pg_dump = "/usr/bin/pg_dump"
postgres_admin_url_file = "{pgf}"
redis_admin_url_file = "{rf}"

[domains]
pdns_url = "{pdns_url}"
pdns_key_file = "{key}"
zones = ["{ZONE}"]
ipv4 = "127.0.0.1"
https_listen = "127.0.0.1:{https}"
"#,
                env = d.join("env").display(),
                backups = d.join("backups").display(),
                pgf = d.join("pg-admin-url").display(),
                rf = d.join("redis-admin-url").display(),
                key = d.join("pdns.key").display(),
                https = crate::infra::free_port(),
            )
        });
        let env_dir = s._dir.path().join("env");
        let r = run(codeb("codeb-daemon")
            .args(["bootstrap-admin", "--config"])
            .arg(&s.config)
            .args(["--name", "root"])
            .env(vars::CODEB_WEBHOOK_SECRET, SECRET));
        assert_eq!(r.code, 0, "bootstrap-admin: {}", r.all());
        let token = r
            .stdout
            .lines()
            .find(|l| l.starts_with("codeb_"))
            .expect("token line")
            .trim()
            .to_owned();
        World {
            s,
            pg,
            redis,
            pdns,
            env_dir,
            token,
            home: crate::util::tempdir(),
            _pdns_dir: pdns_dir,
        }
    }

    fn we(&self, args: &[&str]) -> crate::util::Run {
        run(we(self.home.path())
            .env(vars::CODEB_SERVER, format!("http://{}", self.s.listen))
            .env(vars::CODEB_TOKEN, &self.token)
            .args(args))
    }

    fn env(&self, name: &str) -> BTreeMap<String, String> {
        env_of(&self.env_dir.join(name))
    }

    fn count(&self, sql: &str) -> String {
        self.pg.admin(sql)
    }

    /// What exists of PR `n`'s data anywhere, as a list of names (empty: nothing).
    fn leftovers(&self, n: u64) -> Vec<String> {
        let p = &self.s.project;
        let pgname = format!("{p}_pr_{n}");
        let mut v = Vec::new();
        if self.count(&format!(
            "SELECT count(*) FROM pg_database WHERE datname = '{pgname}'"
        )) != "0"
        {
            v.push(format!("database {pgname}"));
        }
        if self.count(&format!(
            "SELECT count(*) FROM pg_roles WHERE rolname = '{pgname}'"
        )) != "0"
        {
            v.push(format!("role {pgname}"));
        }
        let users = self.redis.admin(&["ACL", "USERS"]);
        if users.lines().any(|u| u == format!("{p}.pr-{n}")) {
            v.push(format!("ACL user {p}.pr-{n}"));
        }
        let keys = self
            .redis
            .admin(&["--scan", "--pattern", &format!("{p}:pr-{n}:*")]);
        if !keys.trim().is_empty() {
            v.push(format!("keys {keys}"));
        }
        for ext in ["env", "secrets"] {
            let f = self.env_dir.join(format!("{p}-pr-{n}.{ext}"));
            if f.exists() {
                v.push(f.display().to_string());
            }
        }
        let host = format!("pr-{n}.{ZONE}");
        if !dig(self.pdns.dns_port, &host, "A").is_empty() {
            v.push(format!("A record of {host}"));
        }
        v
    }
}

fn psql(url: &str, sql: &str) -> crate::util::Run {
    PgCluster::psql(url, sql)
}

/// The same PostgreSQL URL pointed at database `db`.
fn url_for_db(url: &str, db: &str) -> String {
    let base = url.split_once('?').map_or(url, |(u, _)| u);
    let (base, _) = base.rsplit_once('/').expect("path");
    format!("{base}/{db}")
}

fn redis_cli(url: &str, args: &[&str]) -> String {
    let r = RedisServer::cli(url, args);
    format!("{}{}", r.stdout, r.stderr).trim().to_owned()
}

#[test]
fn a_preview_gets_its_own_data_and_dns_and_loses_them_with_the_preview() {
    let _one = PREVIEWS.lock().unwrap_or_else(|e| e.into_inner());
    let w = World::start();
    let s = &w.s;
    let p = s.project.clone();
    let mut daemon = Daemon::start(&s.config, &s.podman, &s.listen);

    // The project, provisioned as the manual says.
    let dir = project_dir(Some("git@github.com:codeb/app.git"));
    let r = w.we(&[
        "workflow",
        "init",
        &p,
        "--type",
        "nextjs",
        "--database",
        "--redis",
        "--dir",
        dir.path().to_str().expect("utf8"),
    ]);
    assert_eq!(r.code, 0, "{}", r.all());
    let prod = w.env(&format!("{p}-production.env"));
    let staging = w.env(&format!("{p}-staging.env"));
    // Staging's schema is made by staging's own role (the preview's copy is read with the
    // admin URL and run as the preview's role).
    let pu = p.replace('-', "_");
    assert!(
        staging["DATABASE_URL"].starts_with(&format!("postgresql://{pu}_staging_user:")),
        "{}",
        staging["DATABASE_URL"]
    );
    // Staging's schema with a row of its own; production has data of its own too.
    let r = psql(
        &staging["DATABASE_URL"],
        "CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL); \
         INSERT INTO items (name) VALUES ('staging-only');",
    );
    assert_eq!(r.code, 0, "{}", r.all());
    let r = psql(
        &prod["DATABASE_URL"],
        "CREATE TABLE accounts (email text); INSERT INTO accounts VALUES ('ceo@example.com');",
    );
    assert_eq!(r.code, 0, "{}", r.all());
    let staging_key = format!("{}k", staging["REDIS_PREFIX"]);
    assert_eq!(
        redis_cli(
            &staging["REDIS_URL"],
            &["SET", &staging_key, "staging-value"]
        ),
        "OK"
    );

    // PR 7, with a seed in its head commit.
    let sha = "a".repeat(40);
    s.github.set_file(
        REPO,
        &sha,
        "codeb/seed.sql",
        "INSERT INTO items (name) VALUES ('seeded-1');\nINSERT INTO items (name) VALUES ('seeded-2');\n",
    );
    s.github.set_pr(pr(7, &sha, true));
    publish(s, "v1", "pr-7", &sha);
    daemon.post("pull_request", &pr_event("opened", 7, &sha, REPO, &[]));
    let host = format!("pr-7.{ZONE}");
    wait_until("the preview to answer v1", Duration::from_secs(90), || {
        serves(s, &host, "v1")
    });
    assert!(
        s.github
            .requests_of("GET /repos/codeb/app/contents/codeb/seed.sql")
            .iter()
            .any(|r| r.contains(&format!("ref={sha}"))),
        "the seed is read at the PR's head"
    );

    // Its own env file, given to its container.
    let env_path = w.env_dir.join(format!("{p}-pr-7.env"));
    assert_eq!(mode(&env_path), 0o600);
    let env = env_of(&env_path);
    let db = format!("{p}_pr_7");
    assert!(
        env["DATABASE_URL"].starts_with(&format!("postgresql://{db}:"))
            && env["DATABASE_URL"]
                .ends_with(&format!("@127.0.0.1:{}/{db}?schema=public", w.pg.port)),
        "{}",
        env["DATABASE_URL"]
    );
    assert_eq!(env["REDIS_PREFIX"], format!("{p}:pr-7:"));
    assert!(env["REDIS_URL"].starts_with(&format!("redis://{p}.pr-7:")));
    assert_eq!(mode(&w.env_dir.join(format!("{p}-pr-7.secrets"))), 0o600);
    let unit = format!("{p}-pr-7");
    let names = containers_of(s, &unit);
    let container = names.first().expect("the preview's container");
    let inspected = s
        .podman
        .run(&["inspect", "--format", "{{json .Config.Env}}", container])
        .expect("podman inspect");
    let container_env: Vec<String> = serde_json::from_str(inspected.trim()).expect("env json");
    for k in ["DATABASE_URL", "REDIS_URL", "REDIS_PREFIX"] {
        assert!(
            container_env.contains(&format!("{k}={}", env[k])),
            "the container has {k}: {container_env:?}"
        );
    }

    // The staging schema and the seed rows, no staging row; the preview owns its database.
    let r = psql(&env["DATABASE_URL"], "SELECT name FROM items ORDER BY id");
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(r.stdout.trim(), "seeded-1\nseeded-2");
    let r = psql(
        &env["DATABASE_URL"],
        "CREATE TABLE mine (x int); INSERT INTO items (name) VALUES ('from the app');",
    );
    assert_eq!(
        r.code,
        0,
        "the preview writes its own database: {}",
        r.all()
    );
    // Its credentials open neither staging nor production.
    for other in [format!("{p}_staging_db"), format!("{p}_db")] {
        let r = psql(&url_for_db(&env["DATABASE_URL"], &other), "SELECT 1");
        assert_ne!(r.code, 0, "the preview's role connected to {other}");
        assert!(
            r.stderr.contains("permission denied for database"),
            "{other}: {}",
            r.all()
        );
    }
    assert_eq!(
        w.count(&format!(
            "SELECT rolsuper OR rolcreatedb OR rolcreaterole OR rolreplication OR rolbypassrls FROM pg_roles WHERE rolname = '{db}'"
        )),
        "f"
    );
    // Redis: its prefix only, no admin command, staging's keys out of reach.
    let purl = env["REDIS_URL"].clone();
    assert_eq!(
        redis_cli(&purl, &["SET", &format!("{p}:pr-7:x"), "1"]),
        "OK"
    );
    let got = redis_cli(&purl, &["GET", &staging_key]);
    assert!(got.contains("NOPERM"), "read staging's key: {got}");
    let got = redis_cli(&purl, &["GET", &format!("{p}:k")]);
    assert!(got.contains("NOPERM"), "read production's key: {got}");
    let got = redis_cli(&purl, &["CONFIG", "GET", "maxmemory"]);
    assert!(got.contains("NOPERM"), "an admin command: {got}");
    // DNS: the preview's A record in the managed zone.
    assert_eq!(dig(w.pdns.dns_port, &host, "A"), ["127.0.0.1"]);

    // Closed: all of it goes.
    s.github.set_pr(pr(7, &sha, false));
    daemon.post("pull_request", &pr_event("closed", 7, &sha, REPO, &[]));
    wait_until("the inactive status", Duration::from_secs(60), || {
        s.github
            .statuses("pr-7")
            .last()
            .is_some_and(|st| st == "inactive")
    });
    wait_idle(s);
    assert_eq!(
        w.leftovers(7),
        Vec::<String>::new(),
        "PR 7's data after close"
    );
    // Staging and production are untouched.
    let r = psql(&staging["DATABASE_URL"], "SELECT name FROM items");
    assert_eq!(r.stdout.trim(), "staging-only", "{}", r.all());
    assert_eq!(
        redis_cli(&staging["REDIS_URL"], &["GET", &staging_key]),
        "staging-value"
    );

    // A seed that fails: the preview fails, saying why, and nothing of its data is left.
    let bad = "b".repeat(40);
    s.github.set_file(
        REPO,
        &bad,
        "codeb/seed.sql",
        "INSERT INTO nosuch VALUES (1);\n",
    );
    s.github.set_pr(pr(9, &bad, true));
    publish(s, "v1", "pr-9", &bad);
    daemon.post("pull_request", &pr_event("opened", 9, &bad, REPO, &[]));
    wait_until("the failure status", Duration::from_secs(90), || {
        s.github.statuses("pr-9").contains(&"failure".to_owned())
    });
    wait_idle(s);
    let comment = s
        .github
        .comments(REPO, 9)
        .into_iter()
        .find(|c| c.author == BOT_LOGIN)
        .expect("codeb's comment");
    assert!(
        comment.body.contains("codeb/seed.sql") && comment.body.contains("nosuch"),
        "{}",
        comment.body
    );
    assert_eq!(
        w.leftovers(9),
        Vec::<String>::new(),
        "a failed seed leaves nothing"
    );
    // The next push fixes the seed: the same preview completes.
    let good = "c".repeat(40);
    s.github.set_file(
        REPO,
        &good,
        "codeb/seed.sql",
        "INSERT INTO items (name) VALUES ('fixed');",
    );
    s.github.set_pr(pr(9, &good, true));
    publish(s, "v2", "pr-9", &good);
    daemon.post(
        "pull_request",
        &pr_event("synchronize", 9, &good, REPO, &[]),
    );
    wait_until(
        "PR 9's preview to answer v2",
        Duration::from_secs(90),
        || serves(s, &format!("pr-9.{ZONE}"), "v2"),
    );
    let env9 = w.env(&format!("{p}-pr-9.env"));
    let r = psql(&env9["DATABASE_URL"], "SELECT name FROM items");
    assert_eq!(r.stdout.trim(), "fixed", "{}", r.all());

    // Leftovers: PR 9's preview disappears from the manifest while the daemon is down (its
    // data, records, container and route stay behind); the reconciler at the next start
    // removes them.
    daemon.kill9();
    let target = codeb_core::manifest::Target::new(
        codeb_core::ProjectName::new(&p).expect("name"),
        codeb_core::Environment::Preview,
        Some(9),
    )
    .expect("target");
    assert!(
        codeb_host::ManifestStore::resolve(Some(s.manifest.clone()))
            .release(&target)
            .expect("release")
    );
    assert!(!w.leftovers(9).is_empty());
    let mut daemon = Daemon::start(&s.config, &s.podman, &s.listen);
    wait_until(
        "the reconciler to remove PR 9's leftovers",
        Duration::from_secs(60),
        || w.leftovers(9).is_empty(),
    );
    let r = psql(&staging["DATABASE_URL"], "SELECT count(*) FROM items");
    assert_eq!(r.stdout.trim(), "1", "staging untouched: {}", r.all());
    daemon.kill9();
}
