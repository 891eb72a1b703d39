//! Backups against real components: a PostgreSQL 15 cluster the test starts (initdb,
//! pg_ctl) archiving its WAL through pgBackRest into a repository in the test directory (the
//! backup host n4), `codeb-backup` setting it up, backing up, dumping and restoring.
//! PostgreSQL and pgBackRest refuse root, so the cluster and every tool run as `postgres`
//! (runuser) in directories owned by it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::util::{self, Run};

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A test cluster with archiving set up by `codeb-backup setup` and one full backup.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub base: PathBuf,
    pub data: PathBuf,
    pub sock: PathBuf,
    pub port: u16,
    pub config: PathBuf,
    pub repo: PathBuf,
}

fn need(cond: bool, what: &str) {
    assert!(cond, "{what}");
}

fn sh(what: &str, c: &mut Command) -> String {
    let r = util::run(c);
    assert_eq!(r.code, 0, "{what}: {}", r.all());
    r.stdout
}

fn chown_pg(p: &Path) {
    sh(
        "chown",
        Command::new("chown")
            .arg("-R")
            .arg("postgres:postgres")
            .arg(p),
    );
}

impl Cluster {
    /// initdb + start + `codeb-backup setup --restart` + a full backup, with
    /// `<project>_user` and `<project>_db` created as `we workflow init` does.
    pub fn start(project: &str) -> Cluster {
        need(
            Path::new(PG_BIN).join("initdb").exists(),
            "PostgreSQL 15 server binaries are missing (apt-get install postgresql-15; scripts/setup)",
        );
        need(
            Command::new("pgbackrest")
                .arg("version")
                .output()
                .is_ok_and(|o| o.status.success()),
            "pgbackrest is missing (apt-get install pgbackrest; scripts/setup installs it)",
        );
        let dir = util::tempdir();
        let base = dir.path().to_owned();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let data = base.join("pg");
        let sock = base.join("sock");
        let repo = base.join("n4").join("pgbackrest");
        for d in [&sock, &base.join("var"), &repo, &data] {
            std::fs::create_dir_all(d).expect("mkdir");
        }
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        chown_pg(&data);
        chown_pg(&sock);
        chown_pg(&base.join("var"));
        chown_pg(&base.join("n4"));
        let port = util::dead_port();
        sh(
            "initdb",
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(Path::new(PG_BIN).join("initdb"))
                .args([
                    "-A",
                    "trust",
                    "-U",
                    "postgres",
                    "--no-sync",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "-D",
                ])
                .arg(&data),
        );
        let mut conf = std::fs::read_to_string(data.join("postgresql.conf")).expect("conf");
        conf.push_str(&format!(
            "\nport = {port}\nunix_socket_directories = '{}'\nlisten_addresses = ''\nfsync = off\nmax_wal_size = 256MB\n",
            sock.display()
        ));
        std::fs::write(data.join("postgresql.conf"), conf).expect("write conf");
        let c = Cluster {
            dir,
            base: base.clone(),
            data,
            sock,
            port,
            config: base.join("backup.toml"),
            repo,
        };
        c.pg_ctl("start");
        std::fs::write(
            &c.config,
            format!(
                "stanza = \"test\"\npg_data = \"{data}\"\npg_port = {port}\npg_socket = \"{sock}\"\n\
                 repo_path = \"{repo}\"\ndump_dir = \"{base}/n4/dumps\"\nfiles_dir = \"{base}/n4/files\"\n\
                 catalog = \"{base}/catalog.sqlite\"\npgbackrest_conf = \"{base}/pgbackrest.conf\"\n\
                 pgbackrest_var = \"{base}/var\"\nscratch_dir = \"{base}/scratch\"\nprojects = [\"{project}\"]\n\
                 [state]\nregistry_db = \"{base}/daemon.sqlite\"\npaths = [\"{base}/etc-codeb\"]\nvolumes = false\n\
                 [deploy]\nquadlet_dir = \"{base}/quadlet\"\nmanifest = \"{base}/manifest.yaml\"\nhealth_deadline = \"10s\"\n",
                data = c.data.display(),
                sock = c.sock.display(),
                repo = c.repo.display(),
                base = base.display(),
            ),
        )
        .expect("backup.toml");
        let r = c.backup(&["setup", "--restart"]);
        assert_eq!(r.code, 0, "setup: {}", r.all());
        let conf = std::fs::read_to_string(base.join("pgbackrest.conf")).expect("pgbackrest.conf");
        assert!(conf.contains("repo1-retention-full=4"), "{conf}");
        assert_eq!(c.sql("postgres", "SHOW archive_mode"), "on");
        assert_eq!(c.sql("postgres", "SHOW archive_timeout"), "1h");
        assert!(
            c.sql("postgres", "SHOW archive_command")
                .contains("archive-push %p")
        );
        let role = project.replace('-', "_") + "_user";
        let db = project.replace('-', "_") + "_db";
        c.sql("postgres", &format!("CREATE ROLE {role} LOGIN"));
        c.sql("postgres", &format!("CREATE DATABASE {db} OWNER {role}"));
        let r = c.backup(&["backup", "--type", "full"]);
        assert_eq!(r.code, 0, "full backup: {}", r.all());
        c
    }

    pub fn pg_ctl(&self, action: &str) {
        sh(
            &format!("pg_ctl {action}"),
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(Path::new(PG_BIN).join("pg_ctl"))
                .arg("-D")
                .arg(&self.data)
                .arg("-l")
                .arg(self.base.join("var").join("pg.log"))
                .args(["-w", "-m", "fast", action]),
        );
    }

    /// psql as postgres; the trimmed output.
    pub fn sql(&self, db: &str, q: &str) -> String {
        sh(
            q,
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(Path::new(PG_BIN).join("psql"))
                .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
                .arg(&self.sock)
                .args(["-p", &self.port.to_string(), "-d", db, "-c", q]),
        )
        .trim()
        .to_owned()
    }

    pub fn backup(&self, args: &[&str]) -> Run {
        util::run(
            util::codeb("codeb-backup")
                .arg("--config")
                .arg(&self.config)
                .args(args),
        )
    }

    pub fn pgbackrest(&self, args: &[&str]) -> Run {
        util::run(
            Command::new("runuser")
                .args(["-u", "postgres", "--", "pgbackrest"])
                .arg(format!(
                    "--config={}",
                    self.base.join("pgbackrest.conf").display()
                ))
                .arg("--stanza=test")
                .args(args),
        )
    }

    /// The cluster's current UTC date and time (`YYYY-MM-DD`, `HH:MM:SS`).
    pub fn now(&self) -> (String, String) {
        let s = self.sql(
            "postgres",
            "SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')",
        );
        let (d, t) = s.split_once(' ').expect("date time");
        (d.to_owned(), t.to_owned())
    }

    pub fn databases(&self) -> Vec<String> {
        self.sql("postgres", "SELECT datname FROM pg_database ORDER BY 1")
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(Path::new(PG_BIN).join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .args(["-w", "-m", "immediate", "stop"])
            .output();
        let _ = Command::new("umount")
            .arg(self.base.join("n4").join("dumps"))
            .output();
        let _ = self.dir.path();
    }
}

/// Waits (up to 10 s) for the second to tick over, so times noted on either side differ.
fn next_second() {
    std::thread::sleep(Duration::from_millis(1100));
}

/// Rows, a noted time, more rows and a dropped table: the state at the noted time.
fn history(c: &Cluster, db: &str) -> (String, String) {
    c.sql(
        db,
        "CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL)",
    );
    c.sql(db, "CREATE TABLE notes (id int, body text)");
    c.sql(
        db,
        "INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 100) g",
    );
    c.sql(db, "INSERT INTO notes VALUES (1, 'kept')");
    next_second();
    let noted = c.now();
    next_second();
    c.sql(
        db,
        "INSERT INTO items SELECT g, 'late ' || g FROM generate_series(101, 250) g",
    );
    c.sql(db, "DROP TABLE notes");
    noted
}

#[test]
fn restore_to_a_noted_time_gives_exactly_the_first_rows_in_a_new_database() {
    let c = Cluster::start("my-shop");
    let (date, time) = history(&c, "my_shop_db");
    let before = c.databases();

    // The plan, without changes.
    let r = c.backup(&[
        "restore",
        "my-shop",
        "--date",
        &date,
        "--time",
        &time,
        "--dry-run",
        "--json",
    ]);
    assert_eq!(r.code, 0, "{}", r.all());
    let plan: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    assert_eq!(plan["dry_run"], true);
    assert_eq!(plan["source_database"], "my_shop_db");
    assert_eq!(plan["owner"], "my_shop_user");
    assert_eq!(c.databases(), before, "a dry run creates nothing");

    let r = c.backup(&[
        "restore", "my-shop", "--date", &date, "--time", &time, "--json",
    ]);
    assert_eq!(r.code, 0, "{}", r.all());
    let rep: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    let restored = rep["database"].as_str().expect("database").to_owned();
    assert!(restored.starts_with("my_shop_db_restored_"), "{restored}");
    assert_eq!(
        c.sql(&restored, "SELECT count(*), min(id), max(id) FROM items"),
        "100|1|100"
    );
    assert_eq!(c.sql(&restored, "SELECT body FROM notes"), "kept");
    assert_eq!(
        c.sql(
            "postgres",
            &format!(
                "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = '{restored}'"
            )
        ),
        "my_shop_user"
    );
    assert_eq!(
        c.sql(
            &restored,
            "SELECT tableowner FROM pg_tables WHERE tablename = 'items'"
        ),
        "my_shop_user"
    );
    // Production untouched.
    assert_eq!(c.sql("my_shop_db", "SELECT count(*) FROM items"), "250");
    assert_eq!(
        c.sql("my_shop_db", "SELECT to_regclass('notes') IS NULL"),
        "t"
    );
    // The scratch cluster is gone, and the run recorded.
    let scratch: Vec<_> = std::fs::read_dir(c.base.join("scratch"))
        .expect("scratch")
        .collect();
    assert!(scratch.is_empty(), "scratch left behind: {scratch:?}");
    let r = c.backup(&["list", "--json"]);
    let runs: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    let kinds: Vec<(&str, &str)> = runs
        .as_array()
        .expect("array")
        .iter()
        .map(|r| {
            (
                r["kind"].as_str().unwrap_or(""),
                r["result"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert!(
        kinds.contains(&("restore", "ok")) && kinds.contains(&("full", "ok")),
        "{kinds:?}"
    );
    // A running cluster's archive can still be checked end to end.
    let r = c.pgbackrest(&["check"]);
    assert_eq!(r.code, 0, "{}", r.all());
}

#[test]
fn restore_into_the_live_database_replaces_it_and_keeps_the_old_one() {
    let c = Cluster::start("shop");
    let (date, time) = history(&c, "shop_db");
    // Without --yes: refused, nothing changes.
    let r = c.backup(&[
        "restore", "shop", "--date", &date, "--time", &time, "--into", "shop_db",
    ]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("--yes"), "{}", r.all());
    assert_eq!(c.sql("shop_db", "SELECT count(*) FROM items"), "250");

    // The app holds a connection; the restore closes it.
    let mut app = Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(Path::new(PG_BIN).join("psql"))
        .args(["-X", "-h"])
        .arg(&c.sock)
        .args([
            "-p",
            &c.port.to_string(),
            "-U",
            "shop_user",
            "-d",
            "shop_db",
            "-c",
            "SELECT pg_sleep(600)",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("app connection");
    let t0 = Instant::now();
    while c.sql(
        "postgres",
        "SELECT count(*) FROM pg_stat_activity WHERE datname = 'shop_db'",
    ) == "0"
    {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the app never connected"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let r = c.backup(&[
        "restore", "shop", "--date", &date, "--time", &time, "--into", "shop_db", "--yes", "--json",
    ]);
    assert_eq!(r.code, 0, "{}", r.all());
    let rep: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    let old = rep["replaced"].as_str().expect("replaced").to_owned();
    assert!(old.starts_with("shop_db_old_"), "{old}");
    let status = app.wait().expect("app exits");
    assert!(!status.success(), "the app's connection was closed");
    // The app reconnects to the restored database (as its own role).
    let again = util::run(
        Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(Path::new(PG_BIN).join("psql"))
            .args(["-X", "-A", "-t", "-h"])
            .arg(&c.sock)
            .args([
                "-p",
                &c.port.to_string(),
                "-U",
                "shop_user",
                "-d",
                "shop_db",
                "-c",
                "SELECT count(*) FROM items",
            ]),
    );
    assert_eq!(again.stdout.trim(), "100", "{}", again.all());
    assert_eq!(c.sql("shop_db", "SELECT body FROM notes"), "kept");
    assert_eq!(
        c.sql(&old, "SELECT count(*) FROM items"),
        "250",
        "the old database is kept"
    );
}

#[test]
fn an_unwritable_repository_fails_loudly_and_the_archive_catches_up_without_a_gap() {
    let c = Cluster::start("wal");
    let r = c.backup(&["check"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let archive = c.repo.join("archive");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&archive, std::fs::Permissions::from_mode(0o000)).expect("chmod 000");
    c.sql("wal_db", "CREATE TABLE t (id int)");
    c.sql("wal_db", "INSERT INTO t SELECT generate_series(1, 1000)");
    c.sql("postgres", "SELECT pg_switch_wal()");
    let t0 = Instant::now();
    while c.sql("postgres", "SELECT failed_count FROM pg_stat_archiver") == "0" {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "archiving never failed"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let r = c.backup(&["check"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("WAL archiving is failing"), "{}", r.all());
    let h = c.backup(&["health", "--json"]);
    assert_eq!(h.code, 1, "{}", h.all());
    let st: serde_json::Value = serde_json::from_str(&h.stdout).expect("json");
    let wal = st
        .as_array()
        .expect("array")
        .iter()
        .find(|k| k["kind"] == "wal")
        .expect("wal")
        .clone();
    assert_eq!(wal["ok"], false, "{wal}");
    assert!(
        wal["problem"].as_str().unwrap_or("").contains("failed"),
        "{wal}"
    );
    // PostgreSQL keeps the WAL it could not archive.
    let ready: Vec<_> = std::fs::read_dir(c.data.join("pg_wal/archive_status"))
        .expect("archive_status")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".ready"))
        .collect();
    assert!(!ready.is_empty(), "no WAL waiting to be archived");
    for e in &ready {
        let seg = e
            .file_name()
            .to_string_lossy()
            .trim_end_matches(".ready")
            .to_owned();
        assert!(
            c.data.join("pg_wal").join(&seg).exists(),
            "{seg} was removed"
        );
    }

    // The repository comes back: the archive catches up, in order, with no gap.
    std::fs::set_permissions(&archive, std::fs::Permissions::from_mode(0o750)).expect("chmod back");
    let r = c.backup(&["check"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let r = c.pgbackrest(&["check"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let left = std::fs::read_dir(c.data.join("pg_wal/archive_status"))
        .expect("archive_status")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".ready"))
        .count();
    assert_eq!(left, 0, "WAL still waiting");
    let h = c.backup(&["health", "--json"]);
    let st: serde_json::Value = serde_json::from_str(&h.stdout).expect("json");
    let wal = st
        .as_array()
        .expect("array")
        .iter()
        .find(|k| k["kind"] == "wal")
        .expect("wal")
        .clone();
    assert_eq!(wal["ok"], true, "{wal}");
    // The rows written during the outage are in the archive: a restore to the latest point
    // has them all (a gap would stop recovery before them).
    let (today, _) = c.now();
    let r = c.backup(&["restore", "wal", "--date", &today, "--json"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let rep: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    let db = rep["database"].as_str().expect("db");
    assert_eq!(c.sql(db, "SELECT count(*) FROM t"), "1000");
}

#[test]
fn dumps_are_checksummed_and_faults_are_refused_or_recorded() {
    let c = Cluster::start("app");
    c.sql("app_db", "CREATE TABLE blob (id int, v text)");
    // About 6 MB of incompressible data.
    c.sql(
        "app_db",
        "INSERT INTO blob SELECT g, string_agg(md5(random()::text || g || h), '') FROM generate_series(1, 200) g, generate_series(1, 500) h GROUP BY g",
    );
    // A good dump: file, sidecar and catalog agree.
    let r = c.backup(&["dump"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let f: Vec<&str> = r.stdout.trim().split('\t').collect();
    let (size, sha, path) = (f[1], f[2], PathBuf::from(f[3]));
    let bytes = std::fs::read(&path).expect("dump");
    assert_eq!(bytes.len().to_string(), size);
    use sha2::Digest;
    let got: String = sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(got, sha);
    let side = std::fs::read_to_string(format!("{}.sha256", path.display())).expect("sidecar");
    assert!(side.starts_with(&format!("{sha}  app_db-")), "{side}");
    assert_eq!(&bytes[..5], b"PGDMP", "a custom-format dump");

    // Restoring from that dump works; then a flipped byte is refused.
    let (today, _) = c.now();
    let r = c.backup(&[
        "restore", "app", "--date", &today, "--from", "dump", "--json",
    ]);
    assert_eq!(r.code, 0, "{}", r.all());
    let rep: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    assert_eq!(
        c.sql(
            rep["database"].as_str().expect("db"),
            "SELECT count(*) FROM blob"
        ),
        "200"
    );
    let mut bad = bytes.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0xff;
    std::fs::write(&path, &bad).expect("corrupt");
    let before = c.databases();
    let r = c.backup(&["restore", "app", "--date", &today, "--from", "dump"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stderr.contains("checksum mismatch") && r.stderr.contains("refusing"),
        "{}",
        r.all()
    );
    assert_eq!(c.databases(), before, "nothing was created");

    // The disk fills during a dump: the partial file is removed, the run recorded as failed.
    let dumps = c.base.join("n4/dumps/app_db");
    std::fs::remove_dir_all(&dumps).expect("clear");
    std::fs::create_dir_all(&dumps).expect("mkdir");
    sh(
        "mount a 1 MB tmpfs",
        Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(&dumps),
    );
    let r = c.backup(&["dump", "--project", "app"]);
    let listing: Vec<_> = std::fs::read_dir(&dumps)
        .expect("ls")
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    let _ = Command::new("umount").arg(&dumps).output();
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("partial file was removed"), "{}", r.all());
    assert!(listing.is_empty(), "left behind: {listing:?}");
    let runs: serde_json::Value =
        serde_json::from_str(&c.backup(&["list", "--json", "--limit", "1"]).stdout).expect("json");
    assert_eq!(runs[0]["kind"], "dump");
    assert_eq!(runs[0]["result"], "failed", "{runs}");

    // A project without a database.
    let r = c.backup(&["restore", "nodb", "--date", &today]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("has no database nodb_db"), "{}", r.all());
    let r = c.backup(&["dump", "--project", "nodb"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("has no database nodb_db"), "{}", r.all());

    // Wrong formats and out-of-range dates: exit 2 with an example or the range.
    for (date, want) in [
        ("20-12-2024", "--date 2024-12-20"),
        ("1999-01-01", "restorable range"),
        ("2999-01-01", "restorable range"),
    ] {
        let r = c.backup(&["restore", "app", "--date", date]);
        assert_eq!(r.code, 2, "{date}: {}", r.all());
        assert!(r.stderr.contains(want), "{date}: {}", r.all());
    }
    let r = c.backup(&["restore", "app", "--date", &today, "--time", "2pm"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("--time 14:30"), "{}", r.all());

    // The weekly state backup: the registry through SQLite's backup API, files with sums.
    std::fs::create_dir_all(c.base.join("etc-codeb")).expect("etc");
    std::fs::write(c.base.join("etc-codeb/daemon.toml"), "x = 1\n").expect("etc file");
    let reg = rusqlite::Connection::open(c.base.join("daemon.sqlite")).expect("registry");
    reg.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE projects (name TEXT); INSERT INTO projects VALUES ('app');")
        .expect("registry rows");
    let r = c.backup(&["files"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let out = PathBuf::from(r.stdout.trim());
    let sums = std::fs::read_to_string(out.join("SHA256SUMS")).expect("sums");
    assert!(
        sums.contains("registry.sqlite") && sums.contains("daemon.toml"),
        "{sums}"
    );
    // The copy is a consistent database while the original is open (WAL mode).
    let copy = rusqlite::Connection::open(out.join("registry.sqlite")).expect("copy");
    let name: String = copy
        .query_row("SELECT name FROM projects", [], |r| r.get(0))
        .expect("row");
    assert_eq!(name, "app");
    drop(reg);
}

/// `codeb-daemon serve` with `[api] backup_config` pointing at the cluster's config.
struct Plane {
    child: std::process::Child,
    port: u16,
    admin: String,
    quadlet: PathBuf,
    log: PathBuf,
}

impl Drop for Plane {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Plane {
    fn start(c: &Cluster) -> Plane {
        let dir = c.base.join("daemon");
        let quadlet = dir.join("quadlet");
        std::fs::create_dir_all(&quadlet).expect("quadlet");
        std::fs::write(
            dir.join("manifest.yaml"),
            "version: 1\nprojects:\n  web:\n    production: {port: 4301}\n",
        )
        .expect("manifest");
        let port = util::dead_port();
        let dead = util::dead_port();
        let config = dir.join("daemon.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:{port}\"\nstate_dir = \"{state}\"\n[previews]\ncaddy_admin = \"http://127.0.0.1:{dead}\"\n\
                 quadlet_dir = \"{q}\"\nmanifest = \"{m}\"\nruntime = \"podman\"\n[api]\nbackup_config = \"{b}\"\n",
                state = dir.join("state").display(),
                q = quadlet.display(),
                m = dir.join("manifest.yaml").display(),
                b = c.config.display(),
            ),
        )
        .expect("daemon.toml");
        let r = util::run(
            util::codeb("codeb-daemon")
                .args(["bootstrap-admin", "--config"])
                .arg(&config)
                .env("CODEB_WEBHOOK_SECRET", "s"),
        );
        assert_eq!(r.code, 0, "{}", r.all());
        let admin = r.stdout.trim().to_owned();
        let log = dir.join("daemon.log");
        let child = util::codeb("codeb-daemon")
            .args(["serve", "--config"])
            .arg(&config)
            .env("CODEB_WEBHOOK_SECRET", "s")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("codeb-daemon serve");
        let p = Plane {
            child,
            port,
            admin,
            quadlet,
            log,
        };
        let t0 = Instant::now();
        while p.curl("GET", "/healthz", None, None).0 != 200 {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "daemon not ready: {}",
                std::fs::read_to_string(&p.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        p
    }

    fn curl(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (u16, String) {
        let mut c = Command::new("curl");
        c.args(["-sS", "-o", "-", "-w", "\n%{http_code}", "-X", method])
            .arg(format!("http://127.0.0.1:{}{path}", self.port));
        if let Some(t) = token {
            c.arg("-H").arg(format!("Authorization: Bearer {t}"));
        }
        if let Some(b) = body {
            c.args(["-H", "content-type: application/json", "--data-binary", b]);
        }
        let r = util::run(&mut c);
        let (body, code) = r.stdout.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_owned())
    }

    fn we(&self, token: &str, args: &[&str]) -> Run {
        let home = self.quadlet.parent().expect("dir").join("home");
        util::run(
            util::codeb("we")
                .env("XDG_CONFIG_HOME", home.join("config"))
                .env("HOME", &home)
                .env("CODEB_SERVER", format!("http://127.0.0.1:{}", self.port))
                .env("CODEB_TOKEN", token)
                .args(args),
        )
    }
}

#[test]
fn we_env_restore_and_backups_through_the_control_plane_admin_only_locked_and_audited() {
    let c = Cluster::start("web");
    let p = Plane::start(&c);
    let (s, b) = p.curl(
        "POST",
        "/api/v1/team",
        Some(&p.admin),
        Some(r#"{"name":"dev","role":"developer","projects":[]}"#),
    );
    assert_eq!(s, 201, "{b}");
    let dev_body = b;
    let (s, b) = p.curl(
        "POST",
        "/api/v1/projects",
        Some(&p.admin),
        Some(r#"{"name":"web","type":"node","repository":"acme/web","image":"ghcr.io/acme/web","container_port":3000,"environments":[{"name":"production"}],"owners":["dev"]}"#),
    );
    assert_eq!(s, 201, "{b}");
    let dev = serde_json::from_str::<serde_json::Value>(&dev_body).expect("json")["token"]["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let (date, time) = history(&c, "web_db");

    // A developer, even the project's owner, may not restore (exit 3); the refusal is audited.
    let r = p.we(
        &dev,
        &["env", "restore", "web", "--date", &date, "--time", &time],
    );
    assert_eq!(r.code, 3, "{}", r.all());
    // Bad input is refused before anything runs (exit 2, with the example).
    let r = p.we(&p.admin, &["env", "restore", "web", "--date", "12/20/2024"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("--date 2024-12-20"), "{}", r.all());
    let r = p.we(&p.admin, &["env", "restore", "web", "--date", "1999-01-01"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("restorable range"), "{}", r.all());

    // While a deploy holds the project's lock, the restore waits, then refuses naming it.
    let state = p.quadlet.join(".codeb");
    std::fs::create_dir_all(&state).expect("state dir");
    let lock = std::fs::File::create(state.join("web-production.lock")).expect("lock file");
    std::fs::write(
        state.join("web-production.holder"),
        "deploy by ci (pid 4242)",
    )
    .expect("holder");
    lock.lock().expect("hold the deploy lock");
    let r = p.we(
        &p.admin,
        &[
            "env",
            "restore",
            "web",
            "--date",
            &date,
            "--time",
            &time,
            "--lock-timeout",
            "1s",
        ],
    );
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("deploy by ci (pid 4242)"), "{}", r.all());
    lock.unlock().expect("unlock");
    drop(lock);

    let r = p.we(
        &p.admin,
        &["env", "restore", "web", "--date", &date, "--time", &time],
    );
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stderr.contains("restore: pg_restore --section=data"),
        "progress is shown: {}",
        r.all()
    );
    let restored = r
        .stdout
        .lines()
        .find_map(|l| {
            l.strip_prefix("restored into")
                .map(|v| v.trim().trim_start_matches(':').trim().to_owned())
        })
        .unwrap_or_else(|| panic!("no target in {}", r.all()));
    assert!(restored.starts_with("web_db_restored_"), "{}", r.all());
    assert_eq!(c.sql(&restored, "SELECT count(*) FROM items"), "100");
    assert_eq!(c.sql("web_db", "SELECT count(*) FROM items"), "250");

    // The catalog through the API; a failed dump makes health and /metrics fail.
    let r = c.backup(&["dump", "--project", "nodb"]);
    assert_eq!(r.code, 1, "{}", r.all());
    let r = p.we(&dev, &["env", "backups", "--json"]);
    assert_eq!(r.code, 1, "a kind is failing: {}", r.all());
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    assert_eq!(v["configured"], true);
    let runs = v["runs"].as_array().expect("runs");
    assert!(
        runs.iter()
            .any(|r| r["kind"] == "restore" && r["result"] == "ok" && r["target"] == "web"),
        "{v}"
    );
    assert!(
        runs.iter()
            .any(|r| r["kind"] == "full" && r["result"] == "ok" && r["sha256"].is_string()),
        "{v}"
    );
    let dump = v["kinds"]
        .as_array()
        .expect("kinds")
        .iter()
        .find(|k| k["kind"] == "dump")
        .expect("dump")
        .clone();
    assert_eq!(dump["ok"], false, "{dump}");
    assert!(
        dump["problem"].as_str().unwrap_or("").contains("nodb_db"),
        "{dump}"
    );
    let r = p.we(&dev, &["env", "backups", "web"]);
    assert!(
        r.stdout.contains("restore") && r.stdout.contains("LAST GOOD"),
        "{}",
        r.all()
    );
    let r = p.we(&dev, &["health"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stdout.contains("dump") && r.stdout.contains("FAIL"),
        "{}",
        r.all()
    );
    let (s, m) = p.curl("GET", "/metrics", None, None);
    assert_eq!(s, 200);
    assert!(m.contains("codeb_backup_ok{kind=\"full\"} 1"), "{m}");
    assert!(m.contains("codeb_backup_ok{kind=\"dump\"} 0"), "{m}");
    assert!(
        m.contains("codeb_backup_last_good_age_seconds{kind=\"full\"} "),
        "{m}"
    );

    // Audited: the refusal and the run, with the parameters.
    let r = p.we(&p.admin, &["audit", "--project", "web", "--json"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let audit = r.stdout;
    assert!(audit.contains("\"restore\""), "{audit}");
    for result in ["denied", "ok", "failed"] {
        assert!(
            audit.contains(&format!("\"result\":\"{result}\"")),
            "{result}: {audit}"
        );
    }
}

#[test]
fn backup_timers_verify_and_run_existing_commands() {
    let dir = util::tempdir();
    let src = util::repo().join("templates/systemd");
    let bin = util::bin("codeb-backup");
    let mut units = Vec::new();
    for kind in ["wal-check", "full", "diff", "dump", "files"] {
        let timer =
            std::fs::read_to_string(src.join(format!("codeb-backup-{kind}.timer"))).expect("timer");
        assert!(
            timer.contains("\nPersistent=true\n"),
            "{kind}: a missed run must happen at boot"
        );
        assert!(
            timer.contains(&format!("\nUnit=codeb-backup-{kind}.service\n")),
            "{kind}"
        );
        let service = std::fs::read_to_string(src.join(format!("codeb-backup-{kind}.service")))
            .expect("service");
        let exec = service
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart="))
            .expect("ExecStart");
        let args: Vec<&str> = exec.split_whitespace().collect();
        assert_eq!(args[0], "/usr/local/bin/codeb-backup", "{kind}");
        // The command the timer runs exists with those arguments.
        let r = util::run(util::codeb("codeb-backup").args(&args[1..]).arg("--help"));
        assert_eq!(r.code, 0, "{kind}: {exec}: {}", r.all());
        std::fs::write(dir.path().join(format!("codeb-backup-{kind}.timer")), timer).expect("copy");
        std::fs::write(
            dir.path().join(format!("codeb-backup-{kind}.service")),
            service.replace("/usr/local/bin/codeb-backup", &bin.display().to_string()),
        )
        .expect("copy");
        units.push(dir.path().join(format!("codeb-backup-{kind}.timer")));
        units.push(dir.path().join(format!("codeb-backup-{kind}.service")));
    }
    let r = util::run(Command::new("systemd-analyze").arg("verify").args(&units));
    assert_eq!(
        r.code,
        0,
        "systemd-analyze verify (apt-get install systemd): {}",
        r.all()
    );
    assert!(
        !r.stderr.contains("codeb-backup"),
        "warnings about our units: {}",
        r.all()
    );
    // A broken calendar is caught by the same check (the check can fail).
    let bad = dir.path().join("codeb-backup-wal-check.timer");
    let t = std::fs::read_to_string(&bad)
        .expect("timer")
        .replace("OnCalendar=hourly", "OnCalendar=sometimes");
    std::fs::write(&bad, t).expect("write");
    let r = util::run(Command::new("systemd-analyze").arg("verify").arg(&bad));
    assert_ne!(r.code, 0, "{}", r.all());
}

// ---------------------------------------------------------------------------------------------
// The restore and the deploy engine: the running app proves the restore, one lock for both
// ---------------------------------------------------------------------------------------------

/// A short project name unique across processes and tests (a DNS label; its
/// `<name>_db_restored_<stamp>` fits PostgreSQL's 63 characters).
fn unique_project() -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    format!(
        "bk{:x}n{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    )
}

/// A production port P (4150-4199) that is free and never handed to another test of this
/// process.
fn free_public_port() -> u16 {
    static HANDED: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut handed = HANDED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let offset = u16::try_from(std::process::id() % 50).unwrap_or(0);
    let port = (0..50u16)
        .map(|i| 4150 + (offset + i) % 50)
        .find(|p| !handed.contains(p) && std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free port in 4150-4199");
    handed.push(port);
    port
}

/// The sample app as `project`'s production release, deployed by `codeb-quadlet-update`
/// (podman runtime, no Caddy front, restart strategy) from a real registry. It reads
/// `<project>_db` as `<project>_user` through the cluster's socket directory, mounted into
/// the container at /run/pg by a unit template with one more `Volume=` line: every
/// `/api/health` runs `SELECT count(*) FROM items` and answers 503 when that fails.
struct Deployed {
    podman: crate::infra::Podman,
    registry: crate::infra::Registry,
    project: String,
    quadlet: PathBuf,
    manifest: PathBuf,
    templates: PathBuf,
    env_file: PathBuf,
    port: u16,
}

impl Deployed {
    fn new(c: &Cluster, project: &str) -> Deployed {
        let podman = crate::infra::Podman::new();
        let registry = crate::infra::Registry::start();
        podman.trust_insecure(&registry.host_port());
        let port = free_public_port();
        let manifest = c.base.join("manifest.yaml");
        std::fs::write(
            &manifest,
            format!("version: 1\nprojects:\n  {project}:\n    production: {{port: {port}}}\n"),
        )
        .expect("manifest");
        let templates = c.base.join("templates");
        std::fs::create_dir_all(&templates).expect("templates");
        std::fs::create_dir_all(c.base.join("quadlet")).expect("quadlet dir");
        let unit =
            std::fs::read_to_string(util::repo().join("templates/quadlet/app.container.tera"))
                .expect("the embedded unit template");
        assert!(unit.contains("\nRunInit=true\n"), "{unit}");
        std::fs::write(
            templates.join("app.container.tera"),
            unit.replace(
                "\nRunInit=true\n",
                &format!("\nRunInit=true\nVolume={}:/run/pg\n", c.sock.display()),
            ),
        )
        .expect("template");
        let env_file = c.base.join("app.env");
        let under = project.replace('-', "_");
        std::fs::write(
            &env_file,
            format!(
                "DATABASE_SOCKET=/run/pg/.s.PGSQL.{}\nDATABASE_USER={under}_user\nDATABASE_NAME={under}_db\nDATABASE_QUERY=SELECT count(*) FROM items\n",
                c.port
            ),
        )
        .expect("env file");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&env_file, std::fs::Permissions::from_mode(0o600))
            .expect("chmod env file");
        Deployed {
            podman,
            registry,
            project: project.to_owned(),
            quadlet: c.base.join("quadlet"),
            manifest,
            templates,
            env_file,
            port,
        }
    }

    /// The sample app with `env`, built as `localhost/codeb-test/sample:<tag>` and pushed.
    fn image(&self, tag: &str, env: &[(&str, &str)]) -> String {
        let local = crate::infra::sample_local_name(tag);
        crate::infra::build_sample_image(&self.podman, &local, env)
            .unwrap_or_else(|e| panic!("build {local}: {e}"));
        let reference = format!("{}:{tag}", self.registry.image("codeb/sample"));
        crate::infra::push_image(&self.podman, &self.registry, &local, &reference)
            .unwrap_or_else(|e| panic!("push {reference}: {e}"));
        reference
    }

    fn deploy(&self, image: &str, lock_timeout: &str) -> Command {
        let mut c = util::codeb("codeb-quadlet-update");
        self.podman.configure(&mut c);
        c.args([
            "deploy",
            "--project",
            &self.project,
            "--environment",
            "production",
        ])
        .args(["--image", image, "--manifest"])
        .arg(&self.manifest)
        .arg("--quadlet-dir")
        .arg(&self.quadlet)
        .arg("--templates")
        .arg(&self.templates)
        .arg("--env-file")
        .arg(&self.env_file)
        .args([
            "--runtime",
            "podman",
            "--caddy-admin",
            "none",
            "--strategy",
            "restart",
            "--health-deadline",
            "60s",
            "--health-interval",
            "250ms",
            "--health-cmd",
            "none",
            "--actor",
            "codeb-test",
            "--lock-timeout",
            lock_timeout,
        ])
        .stdin(std::process::Stdio::null());
        c
    }

    /// `GET /api/health` on the public port: the status and the answer.
    fn health(&self) -> (u16, serde_json::Value) {
        match crate::infra::http_get(
            &format!("http://127.0.0.1:{}/api/health", self.port),
            Duration::from_secs(5),
        ) {
            Ok((s, body)) => (s, serde_json::from_str(&body).unwrap_or_default()),
            Err(_) => (0, serde_json::Value::Null),
        }
    }

    fn holder(&self) -> String {
        std::fs::read_to_string(
            self.quadlet
                .join(".codeb")
                .join(format!("{}-production.holder", self.project)),
        )
        .unwrap_or_default()
    }
}

impl Drop for Deployed {
    fn drop(&mut self) {
        if let Ok(ids) = self.podman.run(&[
            "ps",
            "-a",
            "--filter",
            &format!("name=^{}-", self.project),
            "--format",
            "{{.ID}}",
        ]) {
            let mut args = vec!["rm", "-f", "-t", "0", "--ignore"];
            args.extend(ids.split_whitespace());
            if args.len() > 5 {
                let _ = self.podman.run(&args);
            }
        }
        self.podman.untag_registry(&self.registry.host_port());
    }
}

/// A `codeb-backup` run whose progress (stderr) is read line by line while it runs.
struct Streaming {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
    stdout: Option<std::thread::JoinHandle<String>>,
}

impl Streaming {
    fn start(c: &Cluster, args: &[&str]) -> Streaming {
        use std::io::{BufRead, Read};
        let mut child = util::codeb("codeb-backup")
            .arg("--config")
            .arg(&c.config)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("codeb-backup");
        let err = child.stderr.take().expect("stderr");
        let mut out = child.stdout.take().expect("stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(err).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    return;
                }
            }
        });
        let stdout = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            s
        });
        Streaming {
            child,
            lines,
            seen: Vec::new(),
            stdout: Some(stdout),
        }
    }

    /// Waits (up to `limit`) for a progress line containing `needle`.
    fn wait_for(&mut self, needle: &str, limit: Duration) -> String {
        let t0 = Instant::now();
        loop {
            let left = limit.saturating_sub(t0.elapsed());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if l.contains(needle) {
                        return l;
                    }
                }
                Err(_) => panic!(
                    "no progress line with {needle:?} within {limit:?}:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    fn finish(mut self) -> Run {
        let status = self.child.wait().expect("wait");
        let stdout = self
            .stdout
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default();
        self.seen.extend(self.lines.try_iter());
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(2)) {
            self.seen.push(l);
        }
        Run {
            code: status.code().unwrap_or(-1),
            stdout,
            stderr: self.seen.join("\n"),
        }
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn a_restore_of_the_live_database_is_proved_by_the_running_app_and_shares_the_deploy_lock() {
    let project = unique_project();
    let db = format!("{project}_db");
    let role = format!("{project}_user");
    let c = Cluster::start(&project);
    next_second();
    // Before the app's table existed.
    let (d0, t0) = c.now();
    next_second();
    let (date, time) = history(&c, &db);
    c.sql(&db, &format!("GRANT SELECT ON items TO {role}"));

    // The app's release, reading the live database: 250 rows.
    let app = Deployed::new(&c, &project);
    let v1 = app.image("backup-db", &[("VERSION", "db1")]);
    let slow = app.image(
        "backup-db-slow",
        &[("VERSION", "dbslow"), ("STARTUP_DELAY_MS", "5000")],
    );
    let r = util::run(&mut app.deploy(&v1, "10s"));
    assert_eq!(r.code, 0, "deploy: {}", r.all());
    let (s, h) = app.health();
    assert_eq!(s, 200, "{h}");
    assert_eq!(h["db"], "250", "the app reads its database: {h}");

    // A deploy holds the lock: a restore that may wait 1s refuses, naming that deploy.
    let deploy_log = c.base.join("slow-deploy.log");
    let mut deploying = app
        .deploy(&slow, "10s")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&deploy_log).expect("log"))
        .spawn()
        .expect("slow deploy");
    let t = Instant::now();
    while !app
        .holder()
        .contains(&format!("pid {} (deploy of {slow}", deploying.id()))
    {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the deploy never took the lock: {:?}",
            app.holder()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let before = c.databases();
    let r = c.backup(&[
        "restore",
        &project,
        "--date",
        &date,
        "--time",
        &time,
        "--into",
        &db,
        "--yes",
        "--lock-timeout",
        "1s",
    ]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stderr.contains(&format!(
            "pid {} (deploy of {slow} by codeb-test)",
            deploying.id()
        )) && r.stderr.contains("no restore was made"),
        "{}",
        r.all()
    );
    assert_eq!(c.databases(), before, "nothing was restored");

    // A restore that may wait starts only once that deploy is done: when it reports its
    // first step after the lock, the slow release already answers (it listens only 5 s
    // after it started, and the deploy holds the lock until it answered).
    let mut restore = Streaming::start(
        &c,
        &[
            "restore",
            &project,
            "--date",
            &date,
            "--time",
            &time,
            "--into",
            &db,
            "--yes",
            "--lock-timeout",
            "120s",
            "--json",
        ],
    );
    restore.wait_for("taking the deploy lock", Duration::from_secs(30));
    restore.wait_for("pgbackrest check", Duration::from_secs(120));
    let (s, h) = app.health();
    assert_eq!(
        (s, h["version"].as_str()),
        (200, Some("dbslow")),
        "the restore went ahead before the deploy finished: {h}"
    );
    let d = deploying.wait().expect("deploy");
    assert!(
        d.success(),
        "the slow deploy: {}",
        std::fs::read_to_string(&deploy_log).unwrap_or_default()
    );
    let r = restore.finish();
    assert_eq!(r.code, 0, "{}", r.all());
    let rep: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    // The proof: the running release's own health endpoint, before and after.
    assert_eq!(rep["release"]["image"], slow.as_str(), "{rep}");
    assert_eq!(
        rep["release"]["url"],
        format!("http://127.0.0.1:{}/api/health", app.port),
        "{rep}"
    );
    assert_eq!(rep["health_before"]["healthy"], true, "{rep}");
    assert_eq!(rep["health"]["healthy"], true, "{rep}");
    assert_eq!(rep["health"]["status"], 200, "{rep}");
    assert_eq!(rep["health"]["version"], "dbslow", "{rep}");
    let (s, h) = app.health();
    assert_eq!(s, 200, "{h}");
    assert_eq!(h["db"], "100", "the app reads the restored database: {h}");
    let old = rep["replaced"].as_str().expect("replaced").to_owned();
    assert_eq!(c.sql(&old, "SELECT count(*) FROM items"), "250");

    // A restore to before the app's table existed: the app cannot answer with it, so the
    // restore puts the previous database back and fails. While it waits for the app, it
    // holds the lock: a deploy that does not wait refuses, naming the restore.
    let mut restore = Streaming::start(
        &c,
        &[
            "restore", &project, "--date", &d0, "--time", &t0, "--into", &db, "--yes", "--json",
        ],
    );
    restore.wait_for(
        "to answer healthy with the restored database",
        Duration::from_secs(180),
    );
    let r = util::run(&mut app.deploy(&v1, "0s"));
    assert_ne!(r.code, 0, "{}", r.all());
    assert!(
        r.all()
            .contains(&format!("codeb-backup restore of {project}")),
        "the deploy names the restore: {}",
        r.all()
    );
    let r = restore.finish();
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stderr.contains("previous database is live again")
            && r.stderr.contains("HTTP 503")
            && r.stderr.contains("does not exist"),
        "the failure names the app's answer: {}",
        r.all()
    );
    let (s, h) = app.health();
    assert_eq!((s, h["db"].as_str()), (200, Some("100")), "{h}");
    let kept: Vec<String> = c
        .databases()
        .into_iter()
        .filter(|d| d.starts_with(&format!("{db}_restored_")))
        .collect();
    assert_eq!(kept.len(), 1, "the unhealthy copy is kept: {kept:?}");
    assert_eq!(
        c.sql(&kept[0], "SELECT to_regclass('items') IS NULL"),
        "t",
        "it is the copy from before the table"
    );
    let runs: serde_json::Value =
        serde_json::from_str(&c.backup(&["list", "--json", "--limit", "1"]).stdout).expect("json");
    assert_eq!(
        (runs[0]["kind"].as_str(), runs[0]["result"].as_str()),
        (Some("restore"), Some("failed")),
        "{runs}"
    );
}

/// Every entry under `root`: its relative path, type, mode, owner, and content (a file's
/// bytes, a link's target).
fn tree(root: &Path) -> std::collections::BTreeMap<String, (String, u32, u32, u32, Vec<u8>)> {
    use std::os::unix::fs::MetadataExt;
    fn walk(
        root: &Path,
        dir: &Path,
        out: &mut std::collections::BTreeMap<String, (String, u32, u32, u32, Vec<u8>)>,
    ) {
        for e in std::fs::read_dir(dir).expect("read_dir") {
            let e = e.expect("entry");
            let p = e.path();
            let m = std::fs::symlink_metadata(&p).expect("meta");
            let rel = p
                .strip_prefix(root)
                .expect("under root")
                .display()
                .to_string();
            let (kind, content) = if m.file_type().is_symlink() {
                (
                    "link",
                    std::fs::read_link(&p)
                        .expect("link")
                        .display()
                        .to_string()
                        .into_bytes(),
                )
            } else if m.is_dir() {
                walk(root, &p, out);
                ("dir", Vec::new())
            } else {
                ("file", std::fs::read(&p).expect("read"))
            };
            out.insert(
                rel,
                (
                    kind.to_owned(),
                    m.mode() & 0o7777,
                    m.uid(),
                    m.gid(),
                    content,
                ),
            );
        }
    }
    let mut out = std::collections::BTreeMap::new();
    walk(root, root, &mut out);
    out
}

#[test]
fn the_weekly_backup_takes_the_project_volumes_podman_knows_and_restores_them_byte_identical() {
    let podman = crate::infra::Podman::new();
    let image = crate::infra::sample_local_images(&podman)[0].clone();
    let id = unique_project();
    let labelled = format!("{id}-uploads");
    let mounted = format!("{id}-cache");
    let other = format!("{id}-notcodeb");
    let container = format!("{id}-production-blue");
    struct Cleanup(crate::infra::Podman, Vec<String>, String);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = self.0.run(&["rm", "-f", "-t", "0", "--ignore", &self.2]);
            for v in &self.1 {
                let _ = self.0.run(&["volume", "rm", "-f", v]);
            }
        }
    }
    let _cleanup = Cleanup(
        podman.clone(),
        vec![
            labelled.clone(),
            mounted.clone(),
            other.clone(),
            format!("{mounted}-copy"),
        ],
        container.clone(),
    );
    podman
        .run(&[
            "volume",
            "create",
            "--label",
            &format!("codeb.project={id}"),
            &labelled,
        ])
        .expect("labelled volume");
    podman.run(&["volume", "create", &mounted]).expect("volume");
    podman.run(&["volume", "create", &other]).expect("volume");
    // A project container (not running) that mounts the unlabelled volume.
    podman
        .run(&[
            "create",
            "--name",
            &container,
            "--label",
            &format!("codeb.project={id}"),
            "-v",
            &format!("{mounted}:/data"),
            &image,
        ])
        .expect("project container");
    let mountpoint = |v: &str| {
        PathBuf::from(
            podman
                .run(&["volume", "inspect", "--format", "{{.Mountpoint}}", v])
                .expect("inspect"),
        )
    };
    // Files of every kind: incompressible bytes, a private file of another owner, a link,
    // nested and empty directories.
    for v in [&labelled, &mounted, &other] {
        let mp = mountpoint(v);
        std::fs::create_dir_all(mp.join("a/b/empty")).expect("dirs");
        let bytes: Vec<u8> = (0..300_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 ^ v.len() as u8)
            .collect();
        std::fs::write(mp.join("a/b/blob.bin"), &bytes).expect("blob");
        std::fs::write(mp.join("secret.txt"), format!("{v} only\n")).expect("secret");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            mp.join("secret.txt"),
            std::fs::Permissions::from_mode(0o600),
        )
        .expect("chmod");
        std::os::unix::fs::lchown(mp.join("secret.txt"), Some(999), Some(998)).expect("chown");
        std::os::unix::fs::symlink("a/b/blob.bin", mp.join("link")).expect("symlink");
    }
    let want_labelled = tree(&mountpoint(&labelled));
    let want_mounted = tree(&mountpoint(&mounted));
    assert!(want_labelled.len() >= 6, "{:?}", want_labelled.keys());

    let dir = util::tempdir();
    let base = dir.path();
    std::fs::create_dir_all(base.join("etc-codeb")).expect("etc");
    std::fs::write(base.join("etc-codeb/daemon.toml"), "x = 1\n").expect("etc file");
    let config = base.join("backup.toml");
    std::fs::write(
        &config,
        format!(
            "pg_data = \"{b}/pg\"\nrepo_path = \"{b}/n4/pgbackrest\"\ndump_dir = \"{b}/n4/dumps\"\n\
             files_dir = \"{b}/n4/files\"\ncatalog = \"{b}/catalog.sqlite\"\n\
             [state]\nregistry_db = \"{b}/daemon.sqlite\"\npaths = [\"{b}/etc-codeb\"]\n",
            b = base.display()
        ),
    )
    .expect("config");
    rusqlite::Connection::open(base.join("daemon.sqlite"))
        .and_then(|c| c.execute_batch("CREATE TABLE projects (name TEXT);"))
        .expect("registry");
    let backup = |args: &[&str]| {
        let mut c = util::codeb("codeb-backup");
        podman.configure(&mut c);
        util::run(c.arg("--config").arg(&config).args(args))
    };
    let r = backup(&["files"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let out = PathBuf::from(r.stdout.trim());
    let listed: Vec<serde_json::Value> = serde_json::from_str(
        &std::fs::read_to_string(out.join("volumes.json")).expect("volumes.json"),
    )
    .expect("json");
    let ours: Vec<(&str, &str)> = listed
        .iter()
        .filter(|v| v["name"].as_str().is_some_and(|n| n.starts_with(&id)))
        .map(|v| {
            (
                v["name"].as_str().unwrap_or(""),
                v["project"].as_str().unwrap_or(""),
            )
        })
        .collect();
    let mut want = vec![
        (mounted.as_str(), id.as_str()),
        (labelled.as_str(), id.as_str()),
    ];
    want.sort();
    assert_eq!(ours, want, "the project's volumes, not the other one");
    let sums = std::fs::read_to_string(out.join("SHA256SUMS")).expect("sums");
    assert!(
        sums.contains(&format!("  volumes/{labelled}.tar\n"))
            && sums.contains("daemon.toml")
            && !sums.contains(&other),
        "{sums}"
    );
    let runs: serde_json::Value =
        serde_json::from_str(&backup(&["list", "--json", "--limit", "1"]).stdout).expect("json");
    assert!(
        runs[0]["message"]
            .as_str()
            .unwrap_or("")
            .contains(&labelled),
        "{runs}"
    );

    // The labelled volume is lost, then put back: byte-identical, with its label.
    podman.run(&["volume", "rm", &labelled]).expect("rm");
    let r = backup(&["restore-volume", &labelled, "--json"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(tree(&mountpoint(&labelled)), want_labelled);
    assert_eq!(
        podman
            .run(&[
                "volume",
                "inspect",
                "--format",
                "{{index .Labels \"codeb.project\"}}",
                &labelled
            ])
            .expect("labels"),
        id
    );
    // The mounted one into a new volume beside it; the live one holds data and is refused.
    let r = backup(&["restore-volume", &mounted]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("holds data"), "{}", r.all());
    let copy = format!("{mounted}-copy");
    let r = backup(&["restore-volume", &mounted, "--into", &copy]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(tree(&mountpoint(&copy)), want_mounted);
    // A volume the backup does not hold, and a tar that does not match its sum.
    let r = backup(&["restore-volume", &other]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("holds no volume"), "{}", r.all());
    let tar = out.join(format!("volumes/{mounted}.tar"));
    let mut bytes = std::fs::read(&tar).expect("tar");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&tar, &bytes).expect("corrupt");
    let r = backup(&[
        "restore-volume",
        &mounted,
        "--into",
        &format!("{mounted}-bad"),
    ]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("checksum mismatch"), "{}", r.all());
    assert!(
        podman
            .run(&["volume", "exists", &format!("{mounted}-bad")])
            .is_err(),
        "nothing was created"
    );
}
