//! Data stores the tests start themselves: a PostgreSQL 15 cluster (initdb with
//! scram-sha-256 and a superuser password, pg_ctl on a free loopback port, its own temporary
//! directory, run as the `postgres` user since PostgreSQL refuses root) and a `redis-server`
//! with a password on its default ACL user. Never the machine's shared 5432/6379.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{Run, dead_port, run};

pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

fn need(path: &str, package: &str) {
    assert!(
        Path::new(path).exists(),
        "{path} is missing: install {package} (scripts/setup does)"
    );
}

/// A PostgreSQL cluster of this test's own.
pub struct PgCluster {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub password: String,
}

impl PgCluster {
    pub fn start() -> PgCluster {
        need(&format!("{PG_BIN}/initdb"), "postgresql-15");
        need("/usr/bin/psql", "postgresql-client-15");
        let dir = tempfile::Builder::new()
            .prefix("codeb-pg-")
            .tempdir()
            .expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let password = format!("admin-{}-{}", std::process::id(), dead_port());
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, &password).expect("pwfile");
        let r = run(Command::new("chown")
            .arg("-R")
            .arg("postgres:postgres")
            .arg(dir.path()));
        assert_eq!(r.code, 0, "chown: {}", r.all());
        let data = dir.path().join("data");
        let r = run(as_postgres(&format!("{PG_BIN}/initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=scram-sha-256", "--no-sync"])
            .arg(format!("--pwfile={}", pwfile.display())));
        assert_eq!(r.code, 0, "initdb: {}", r.all());
        let port = dead_port();
        let r = run(as_postgres(&format!("{PG_BIN}/pg_ctl"))
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(dir.path().join("log"))
            .arg("-o")
            .arg(format!(
                "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
                dir.path().display()
            ))
            .args(["-w", "-t", "30", "start"]));
        assert_eq!(r.code, 0, "pg_ctl start: {}", r.all());
        PgCluster {
            dir,
            port,
            password,
        }
    }

    pub fn admin_url(&self) -> String {
        format!(
            "postgresql://postgres:{}@127.0.0.1:{}/postgres",
            self.password, self.port
        )
    }

    /// `psql` on `url` running `sql`; a failure is returned, not asserted. Prisma's
    /// `?schema=public` (in the manual's DATABASE_URL) is not a libpq parameter: dropped.
    pub fn psql(url: &str, sql: &str) -> Run {
        let url = url.split_once("?schema=").map_or(url, |(u, _)| u);
        run(Command::new("psql").env("PGCONNECT_TIMEOUT", "10").args([
            "-X",
            "-v",
            "ON_ERROR_STOP=1",
            "-At",
            "-d",
            url,
            "-c",
            sql,
        ]))
    }

    /// `sql` as the superuser; asserted.
    pub fn admin(&self, sql: &str) -> String {
        let r = Self::psql(&self.admin_url(), sql);
        assert_eq!(r.code, 0, "{sql}: {}", r.all());
        r.stdout.trim().to_owned()
    }
}

fn as_postgres(program: &str) -> Command {
    let mut c = Command::new("runuser");
    c.args(["-u", "postgres", "--", program]);
    c
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = as_postgres(&format!("{PG_BIN}/pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A `redis-server` of this test's own, its default user protected by a password.
pub struct RedisServer {
    child: Child,
    pub port: u16,
    pub password: String,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        Self::start_with(&[])
    }

    /// With extra `redis-server` arguments (e.g. `--rename-command ACL ""`).
    pub fn start_with(extra: &[&str]) -> RedisServer {
        need("/usr/bin/redis-server", "redis-server");
        need("/usr/bin/redis-cli", "redis-tools");
        let dir = tempfile::Builder::new()
            .prefix("codeb-redis-")
            .tempdir()
            .expect("tempdir");
        let password = format!("redis-admin-{}-{}", std::process::id(), dead_port());
        let port = dead_port();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(["--requirepass", &password])
            .arg("--dir")
            .arg(dir.path())
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        let s = RedisServer {
            child,
            port,
            password,
            _dir: dir,
        };
        let start = Instant::now();
        while Self::cli(&s.admin_url(), &["PING"]).stdout.trim() != "PONG" {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        s
    }

    pub fn admin_url(&self) -> String {
        format!("redis://default:{}@127.0.0.1:{}", self.password, self.port)
    }

    /// `redis-cli -u url ARGS...`; replies (errors included) are on stdout.
    pub fn cli(url: &str, args: &[&str]) -> Run {
        run(Command::new("redis-cli")
            .args(["--no-auth-warning", "-u", url])
            .args(args))
    }

    pub fn admin(&self, args: &[&str]) -> String {
        let r = Self::cli(&self.admin_url(), args);
        assert_eq!(r.code, 0, "{args:?}: {}", r.all());
        r.stdout.trim().to_owned()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes a 0600 file (an admin URL for the daemon's config).
pub fn secret_file(path: &PathBuf, text: &str) {
    std::fs::write(path, text).expect("write secret file");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}
