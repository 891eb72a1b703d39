//! Redis through the `redis` crate, connected with the admin URL from the daemon's config.
//! A project's ACL user may use only keys and channels under its prefix and no admin or
//! dangerous command (`ACL SETUSER <user> reset on #<sha256> ~<prefix>* &<prefix>* +@all
//! -@admin -@dangerous`); the password is sent as its SHA-256 only.

use std::time::Duration;

use codeb_secret::Secret;
use redis::aio::MultiplexedConnection;
use redis::{RedisError, Value};

#[derive(Debug, thiserror::Error)]
pub enum RedisProvisionError {
    #[error(
        "Redis admin URL: {0} (the [api.provision] redis_admin_url_file holds e.g. redis://default:PASSWORD@127.0.0.1:6379)"
    )]
    Url(String),
    #[error("cannot connect to Redis at {target}: {message}")]
    Connect { target: String, message: String },
    #[error(
        "the Redis server at {target} has no ACL support ({why}); codeb isolates projects with ACL users: use Redis 6 or later"
    )]
    NoAcl { target: String, why: String },
    #[error("Redis: {0}")]
    Command(String),
}

fn cmd_err(e: RedisError) -> RedisProvisionError {
    RedisProvisionError::Command(e.to_string())
}

/// What exists of an ACL user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserFacts {
    /// Key patterns, as `ACL GETUSER` lists them (`~app:*`).
    pub keys: String,
    pub enabled: bool,
}

pub struct Redis {
    conn: MultiplexedConnection,
    target: String,
}

/// `host:port` of a Redis URL, for messages.
pub fn url_target(url: &str) -> String {
    match redis::parse_redis_url(url) {
        Some(u) => format!(
            "{}:{}",
            u.host_str().unwrap_or("localhost"),
            u.port().unwrap_or(6379)
        ),
        None => "(unparsable URL)".into(),
    }
}

/// The SHA-256 of a password, as ACL SETUSER's `#<hash>` takes it.
pub fn password_hash(password: &Secret) -> String {
    use std::fmt::Write;
    let d = <sha2::Sha256 as sha2::Digest>::digest(password.expose().as_bytes());
    d.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

impl Redis {
    pub async fn connect(url: &Secret) -> Result<Redis, RedisProvisionError> {
        let target = url_target(url.expose());
        let client = redis::Client::open(url.expose())
            .map_err(|e| RedisProvisionError::Url(e.to_string()))?;
        let conn = tokio::time::timeout(
            Duration::from_secs(10),
            client.get_multiplexed_async_connection(),
        )
        .await
        .map_err(|_| RedisProvisionError::Connect {
            target: target.clone(),
            message: "timed out after 10s".into(),
        })?
        .map_err(|e| RedisProvisionError::Connect {
            target: target.clone(),
            message: e.to_string(),
        })?;
        Ok(Redis { conn, target })
    }

    /// Refuses a server without ACLs (before Redis 6) or whose ACL categories lack
    /// `admin`/`dangerous`.
    pub async fn check_acl(&mut self) -> Result<(), RedisProvisionError> {
        let no = |why: String| RedisProvisionError::NoAcl {
            target: self.target.clone(),
            why,
        };
        let who: Result<String, RedisError> = redis::cmd("ACL")
            .arg("WHOAMI")
            .query_async(&mut self.conn)
            .await;
        if let Err(e) = who {
            return Err(no(format!("ACL WHOAMI: {e}")));
        }
        let cats: Vec<String> = redis::cmd("ACL")
            .arg("CAT")
            .query_async(&mut self.conn)
            .await
            .map_err(|e| no(format!("ACL CAT: {e}")))?;
        for need in ["admin", "dangerous"] {
            if !cats.iter().any(|c| c == need) {
                return Err(no(format!("ACL CAT lacks the category `{need}`")));
            }
        }
        Ok(())
    }

    pub async fn user(&mut self, name: &str) -> Result<Option<UserFacts>, RedisProvisionError> {
        let v: Value = redis::cmd("ACL")
            .arg("GETUSER")
            .arg(name)
            .query_async(&mut self.conn)
            .await
            .map_err(cmd_err)?;
        let pairs: Vec<(String, Value)> = match v {
            Value::Nil => return Ok(None),
            Value::Array(items) => items
                .chunks(2)
                .filter_map(|c| match c {
                    [k, v] => redis::from_redis_value::<String>(k)
                        .ok()
                        .map(|k| (k, v.clone())),
                    _ => None,
                })
                .collect(),
            Value::Map(m) => m
                .into_iter()
                .filter_map(|(k, v)| redis::from_redis_value::<String>(&k).ok().map(|k| (k, v)))
                .collect(),
            other => {
                return Err(RedisProvisionError::Command(format!(
                    "ACL GETUSER answered {other:?}"
                )));
            }
        };
        let mut keys = String::new();
        let mut enabled = false;
        for (k, v) in pairs {
            match k.as_str() {
                "keys" => keys = redis::from_redis_value::<String>(&v).unwrap_or_default(),
                "flags" => {
                    let f: Vec<String> = redis::from_redis_value(&v).unwrap_or_default();
                    enabled = f.iter().any(|x| x == "on");
                }
                _ => {}
            }
        }
        Ok(Some(UserFacts { keys, enabled }))
    }

    /// Creates or resets `name` to exactly: on, `password`, keys and channels `prefix*`,
    /// every command but @admin and @dangerous. Running it again changes nothing.
    pub async fn set_user(
        &mut self,
        name: &str,
        password: &Secret,
        prefix: &str,
    ) -> Result<(), RedisProvisionError> {
        let () = redis::cmd("ACL")
            .arg("SETUSER")
            .arg(name)
            .arg("reset")
            .arg("on")
            .arg(format!("#{}", password_hash(password)))
            .arg(format!("~{prefix}*"))
            .arg(format!("&{prefix}*"))
            .arg("+@all")
            .arg("-@admin")
            .arg("-@dangerous")
            .query_async(&mut self.conn)
            .await
            .map_err(cmd_err)?;
        self.persist().await
    }

    /// Every ACL user's name (`ACL USERS`).
    pub async fn users(&mut self) -> Result<Vec<String>, RedisProvisionError> {
        redis::cmd("ACL")
            .arg("USERS")
            .query_async(&mut self.conn)
            .await
            .map_err(cmd_err)
    }

    pub async fn delete_user(&mut self, name: &str) -> Result<(), RedisProvisionError> {
        let _: i64 = redis::cmd("ACL")
            .arg("DELUSER")
            .arg(name)
            .query_async(&mut self.conn)
            .await
            .map_err(cmd_err)?;
        self.persist().await
    }

    /// Deletes every key under `prefix` in database `db` (SCAN, not KEYS).
    pub async fn delete_prefix(
        &mut self,
        db: u8,
        prefix: &str,
    ) -> Result<u64, RedisProvisionError> {
        let () = redis::cmd("SELECT")
            .arg(db)
            .query_async(&mut self.conn)
            .await
            .map_err(cmd_err)?;
        let mut cursor: u64 = 0;
        let mut n = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{prefix}*"))
                .arg("COUNT")
                .arg(500)
                .query_async(&mut self.conn)
                .await
                .map_err(cmd_err)?;
            if !keys.is_empty() {
                let d: u64 = redis::cmd("UNLINK")
                    .arg(&keys)
                    .query_async(&mut self.conn)
                    .await
                    .map_err(cmd_err)?;
                n += d;
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        Ok(n)
    }

    /// `ACL SAVE` when the server keeps its users in an ACL file; a server configured
    /// without one keeps them in memory (and in `CONFIG REWRITE`'s file) only.
    async fn persist(&mut self) -> Result<(), RedisProvisionError> {
        let r: Result<(), RedisError> = redis::cmd("ACL")
            .arg("SAVE")
            .query_async(&mut self.conn)
            .await;
        match r {
            Ok(()) => Ok(()),
            Err(e) if e.to_string().contains("not configured to use an ACL file") => Ok(()),
            Err(e) => Err(cmd_err(e)),
        }
    }
}
