//! Backups: `codeb-backup dump` beside plain `pg_dump -Fc` of the same database, and
//! `codeb-backup restore --date --time` beside the same pgBackRest restore plus
//! pg_dump/pg_restore run by hand, on a cluster this benchmark starts (initdb, pg_ctl,
//! archiving through pgBackRest into a repository in a temp directory), loaded with
//! `pgbench -i`. The database size defaults to 256 MB (`CODEB_BENCH_BACKUP_MB=1024` for the
//! issue's 1 GB); the scale is printed with the figures. Runs as root (the cluster and
//! pgBackRest run as `postgres`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::{bin, ms, stats, time_once};

const PG: &str = "/usr/lib/postgresql/15/bin";

fn sh(what: &str, c: &mut Command) -> Result<String, String> {
    let out = c.output().map_err(|e| format!("{what}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{what}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn pg(tool: &str) -> Command {
    let mut c = Command::new("runuser");
    c.args(["-u", "postgres", "--"])
        .arg(Path::new(PG).join(tool));
    c
}

struct Bench {
    base: PathBuf,
    data: PathBuf,
    sock: PathBuf,
    port: u16,
    config: PathBuf,
}

impl Bench {
    fn sql(&self, db: &str, q: &str) -> Result<String, String> {
        sh(
            q,
            pg("psql")
                .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
                .arg(&self.sock)
                .args(["-p", &self.port.to_string(), "-d", db, "-c", q]),
        )
    }
    fn codeb(&self, args: &[&str]) -> Result<Command, String> {
        let mut c = Command::new(bin("codeb-backup")?);
        c.arg("--config").arg(&self.config).args(args);
        Ok(c)
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        let _ = pg("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-w", "-m", "immediate", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

fn start(mb: u64) -> Result<Bench, String> {
    let base = std::env::temp_dir().join(format!("codeb-bench-backup-{}", std::process::id()));
    std::fs::create_dir_all(&base).map_err(|e| e.to_string())?;
    let (data, sock) = (base.join("pg"), base.join("sock"));
    for d in [
        &data,
        &sock,
        &base.join("var"),
        &base.join("n4"),
        &base.join("hand"),
    ] {
        std::fs::create_dir_all(d).map_err(|e| e.to_string())?;
    }
    sh("chmod", Command::new("chmod").arg("755").arg(&base))?;
    sh("chmod", Command::new("chmod").arg("700").arg(&data))?;
    for d in ["pg", "sock", "var", "n4", "hand"] {
        sh(
            "chown",
            Command::new("chown")
                .args(["-R", "postgres:"])
                .arg(base.join(d)),
        )?;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let b = Bench {
        config: base.join("backup.toml"),
        base: base.clone(),
        data: data.clone(),
        sock: sock.clone(),
        port,
    };
    sh(
        "initdb",
        pg("initdb")
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
    )?;
    let mut conf =
        std::fs::read_to_string(data.join("postgresql.conf")).map_err(|e| e.to_string())?;
    conf.push_str(&format!(
        "\nport = {port}\nunix_socket_directories = '{}'\nlisten_addresses = ''\nmax_wal_size = 2GB\nshared_buffers = 256MB\n",
        sock.display()
    ));
    std::fs::write(data.join("postgresql.conf"), conf).map_err(|e| e.to_string())?;
    sh(
        "pg_ctl start",
        pg("pg_ctl")
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(base.join("var/pg.log"))
            .args(["-w", "start"]),
    )?;
    std::fs::write(
        &b.config,
        format!(
            "stanza = \"bench\"\npg_data = \"{d}\"\npg_port = {port}\npg_socket = \"{s}\"\nrepo_path = \"{base}/n4/repo\"\n\
             dump_dir = \"{base}/dumps\"\nfiles_dir = \"{base}/files\"\ncatalog = \"{base}/catalog.sqlite\"\n\
             pgbackrest_conf = \"{base}/pgbackrest.conf\"\npgbackrest_var = \"{base}/var\"\nscratch_dir = \"{base}/scratch\"\n\
             dump_retention = 2\nprojects = [\"bench\"]\n[deploy]\nquadlet_dir = \"{base}/quadlet\"\n",
            d = data.display(),
            s = sock.display(),
            base = base.display()
        ),
    )
    .map_err(|e| e.to_string())?;
    sh("codeb-backup setup", &mut b.codeb(&["setup", "--restart"])?)?;
    b.sql("postgres", "CREATE ROLE bench_user LOGIN")?;
    b.sql("postgres", "CREATE DATABASE bench_db OWNER bench_user")?;
    // pgbench scale 1 is about 15 MB.
    let scale = (mb / 15).max(1);
    sh(
        "pgbench -i",
        pg("pgbench")
            .args(["-i", "-q", "-s", &scale.to_string(), "-h"])
            .arg(&sock)
            .args(["-p", &port.to_string(), "bench_db"]),
    )?;
    sh("full backup", &mut b.codeb(&["backup", "--type", "full"])?)?;
    Ok(b)
}

pub fn run(runs: usize) -> Result<(), String> {
    let mb: u64 = std::env::var("CODEB_BENCH_BACKUP_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let runs = runs.clamp(1, 3);
    let b = start(mb)?;
    let size = b.sql(
        "postgres",
        "SELECT pg_size_pretty(pg_database_size('bench_db'))",
    )?;
    println!(
        "\n## Backups: bench_db of {size} (pgbench -i; CODEB_BENCH_BACKUP_MB={mb}), {runs} interleaved runs each\n"
    );
    println!("| what | median | p90 | ratio |");
    println!("|---|---|---|---|");

    // Daily dump vs plain pg_dump -Fc.
    let peer_file = b.base.join("hand/peer.dump");
    let (mut ta, mut tb) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        ta.push(time_once(&mut b.codeb(&["dump"])?)?);
        tb.push(time_once(
            pg("pg_dump")
                .args(["-Fc", "-h"])
                .arg(&b.sock)
                .args(["-p", &b.port.to_string(), "-d", "bench_db", "-f"])
                .arg(&peer_file),
        )?);
    }
    let (a, p) = (stats(ta), stats(tb));
    println!(
        "| codeb-backup dump (pg_dump -Fc + SHA-256 + fsync + rename + catalog) | {} | {} | {:.2}x |",
        ms(a.median),
        ms(a.p90),
        a.median.as_secs_f64() / p.median.as_secs_f64()
    );
    println!(
        "| peer: pg_dump -Fc -f | {} | {} | 1.00x (peer) |",
        ms(p.median),
        ms(p.p90)
    );

    // Restore to a time: note it, then write more.
    std::thread::sleep(Duration::from_millis(1100));
    let at = b.sql(
        "postgres",
        "SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')",
    )?;
    let (date, time) = at.split_once(' ').ok_or("no time")?;
    std::thread::sleep(Duration::from_millis(1100));
    b.sql(
        "bench_db",
        "UPDATE pgbench_branches SET bbalance = bbalance + 1",
    )?;
    b.sql("postgres", "SELECT pg_switch_wal()")?;
    let hand = format!(
        r#"set -e
d={base}/hand/data; rm -rf "$d" {base}/hand/r.dump; mkdir -m 700 "$d"
pgbackrest --config={base}/pgbackrest.conf --stanza=bench --pg1-path="$d" --archive-mode=off \
  --type=time "--target={date} {time}+00" --target-action=promote restore
echo "local all all trust" > "$d/pg_hba.conf"
{pg}/pg_ctl -D "$d" -l {base}/hand/pg.log -w -o "-c port={hp} -c unix_socket_directories={base}/hand -c listen_addresses= -c archive_mode=off" start
until [ "$({pg}/psql -X -A -t -h {base}/hand -p {hp} -d postgres -c 'select pg_is_in_recovery()')" = f ]; do sleep 0.2; done
{pg}/pg_dump -Fc -h {base}/hand -p {hp} -d bench_db -f {base}/hand/r.dump
{pg}/pg_ctl -D "$d" -m fast -w stop
{pg}/createdb -h {sock} -p {port} -O bench_user bench_db_hand
{pg}/pg_restore --no-owner --role=bench_user -h {sock} -p {port} -d bench_db_hand {base}/hand/r.dump
"#,
        base = b.base.display(),
        pg = PG,
        hp = b.port + 1,
        sock = b.sock.display(),
        port = b.port,
    );
    let (mut ta, mut tb) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        ta.push(time_once(&mut b.codeb(&[
            "restore", "bench", "--date", date, "--time", time,
        ])?)?);
        let dbs = b.sql("postgres", "SELECT string_agg(datname, ' ') FROM pg_database WHERE datname LIKE 'bench_db_restored_%'")?;
        for db in dbs.split_whitespace() {
            b.sql("postgres", &format!("DROP DATABASE {db}"))?;
        }
        tb.push(time_once(
            Command::new("runuser").args(["-u", "postgres", "--", "bash", "-c", &hand]),
        )?);
        b.sql("postgres", "DROP DATABASE bench_db_hand")?;
    }
    let (a, p) = (stats(ta), stats(tb));
    println!(
        "| codeb-backup restore --date --time (check, scratch cluster, sections, verify) | {} | {} | {:.2}x |",
        ms(a.median),
        ms(a.p90),
        a.median.as_secs_f64() / p.median.as_secs_f64()
    );
    println!(
        "| peer: pgbackrest restore + pg_ctl + pg_dump + createdb + pg_restore by hand | {} | {} | 1.00x (peer) |",
        ms(p.median),
        ms(p.p90)
    );
    Ok(())
}
