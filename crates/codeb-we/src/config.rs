//! Where `we` talks to and with which token: the credentials file in the XDG config
//! directory (`$XDG_CONFIG_HOME/codeb/credentials.toml`, else `~/.config/codeb/…`; mode 0600,
//! written atomically), overridden by `CODEB_SERVER` and `CODEB_TOKEN` (CI).

use std::fmt;
use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use codeb_api::Token;
use codeb_core::vars;

use crate::exit::WeError;

/// The environment `we` reads, captured once (tests build it by hand).
#[derive(Clone, Default)]
pub struct Env {
    pub token: Option<String>,
    pub server: Option<String>,
    pub xdg_config_home: Option<PathBuf>,
    pub home: Option<PathBuf>,
    pub no_color: bool,
}

impl fmt::Debug for Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Env")
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("server", &self.server)
            .field("xdg_config_home", &self.xdg_config_home)
            .field("home", &self.home)
            .field("no_color", &self.no_color)
            .finish()
    }
}

impl Env {
    pub fn from_process() -> Self {
        let non_empty = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        Self {
            token: non_empty(vars::CODEB_TOKEN),
            server: non_empty(vars::CODEB_SERVER),
            xdg_config_home: std::env::var_os(vars::XDG_CONFIG_HOME)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
            home: std::env::var_os(vars::HOME)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
            no_color: std::env::var_os(vars::NO_COLOR).is_some_and(|v| !v.is_empty()),
        }
    }

    /// `$XDG_CONFIG_HOME/codeb/credentials.toml` (an absolute `XDG_CONFIG_HOME` only, as the
    /// spec says), else `$HOME/.config/codeb/credentials.toml`.
    pub fn credentials_path(&self) -> Result<PathBuf, WeError> {
        let base = match (&self.xdg_config_home, &self.home) {
            (Some(x), _) if x.is_absolute() => x.clone(),
            (_, Some(h)) => h.join(".config"),
            _ => {
                return Err(WeError::Usage(format!(
                    "cannot find the config directory: set {} or {}",
                    vars::XDG_CONFIG_HOME,
                    vars::HOME
                )));
            }
        };
        Ok(base.join("codeb").join("credentials.toml"))
    }
}

/// A control plane URL: https, or http to a loopback address. No path, query or fragment
/// (`/api/v1` is appended).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerUrl(String);

impl ServerUrl {
    /// Parses `n1.example.com`, `https://n1.example.com[:port]` or `http://127.0.0.1:3102`.
    pub fn parse(input: &str) -> Result<Self, WeError> {
        let s = input.trim().trim_end_matches('/');
        let bad = |why: &str| {
            WeError::Usage(format!(
                "server `{input}` {why}; write e.g. https://n1.example.com or http://127.0.0.1:3102"
            ))
        };
        if s.is_empty() {
            return Err(bad("is empty"));
        }
        let with_scheme = if s.contains("://") {
            s.to_owned()
        } else {
            format!("https://{s}")
        };
        let url =
            reqwest::Url::parse(&with_scheme).map_err(|e| bad(&format!("is not a URL ({e})")))?;
        let host = url.host_str().ok_or_else(|| bad("has no host"))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad(
                "may not contain credentials (log in with a token instead)",
            ));
        }
        if url.path() != "/" && !url.path().is_empty() {
            return Err(bad(
                "may not have a path (the API lives under /api/v1 of the server)",
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(bad("may not have a query or fragment"));
        }
        match url.scheme() {
            "https" => {}
            "http" if is_loopback(host) => {}
            "http" => {
                return Err(bad(
                    "uses plain http to a host that is not loopback: tokens would cross the network unencrypted, use https",
                ));
            }
            other => return Err(bad(&format!("uses `{other}`, not https"))),
        }
        Ok(Self(url.as_str().trim_end_matches('/').to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `<server>/api/v1<path>`; `path` starts with `/`.
    pub fn api(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.0)
    }
}

impl fmt::Display for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn is_loopback(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost") || h.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The stored credentials file.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    server: String,
    token: String,
}

/// What a command talks to: server and token, after the environment overrides.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub server: ServerUrl,
    pub token: Token,
}

/// Reads the credentials file; `Ok(None)` when there is none.
/// A file readable by group or others is refused (like ssh refuses such a key).
pub fn load_file(path: &Path) -> Result<Option<Credentials>, WeError> {
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(WeError::Io(format!("cannot read {}: {e}", path.display()))),
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(WeError::NotLoggedIn(format!(
            "{} is readable by others (mode {mode:04o}); the token in it may have leaked: \
             revoke it, run `chmod 600 {}` and `we login` again",
            path.display(),
            path.display()
        )));
    }
    let text = fs::read_to_string(path)
        .map_err(|e| WeError::Io(format!("cannot read {}: {e}", path.display())))?;
    let file: File = toml::from_str(&text).map_err(|e| {
        WeError::NotLoggedIn(format!(
            "{} is not a valid credentials file ({}); run `we login` again",
            path.display(),
            e.message()
        ))
    })?;
    let server = ServerUrl::parse(&file.server).map_err(|e| {
        WeError::NotLoggedIn(format!("{}: {e}; run `we login` again", path.display()))
    })?;
    let token = Token::parse(&file.token).map_err(|e| {
        WeError::NotLoggedIn(format!(
            "the token in {}: {e}; run `we login` again",
            path.display()
        ))
    })?;
    Ok(Some(Credentials { server, token }))
}

/// Writes the credentials file atomically with mode 0600 (its directory 0700 when created):
/// a temp file in the same directory, fsync, rename, fsync of the directory.
pub fn save_file(path: &Path, creds: &Credentials) -> Result<(), WeError> {
    let io = |what: &str, e: std::io::Error| {
        WeError::Io(format!("cannot {what} {}: {e}", path.display()))
    };
    let dir = path
        .parent()
        .ok_or_else(|| WeError::Io(format!("{} has no directory", path.display())))?;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| io("create the directory of", e))?;
    let text = toml::to_string(&File {
        server: creds.server.as_str().to_owned(),
        token: creds.token.expose().to_owned(),
    })
    .map_err(|e| WeError::Io(format!("cannot encode credentials: {e}")))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".credentials-")
        .suffix(".tmp")
        .permissions(fs::Permissions::from_mode(0o600))
        .tempfile_in(dir)
        .map_err(|e| io("create a temp file beside", e))?;
    // tempfile honours the umask; make sure of 0600 whatever it is.
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(|e| io("set the mode of", e))?;
    tmp.write_all(text.as_bytes())
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| io("write", e))?;
    tmp.persist(path).map_err(|e| io("replace", e.error))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("sync the directory of", e))
}

/// Removes the credentials file; `false` when there was none.
pub fn remove_file(path: &Path) -> Result<bool, WeError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(WeError::Io(format!(
            "cannot remove {}: {e}",
            path.display()
        ))),
    }
}

/// Server and token for a command: `CODEB_SERVER`/`CODEB_TOKEN` override the file, each on
/// its own (CI sets both and needs no file).
pub fn resolve(env: &Env) -> Result<Credentials, WeError> {
    let stored = if env.token.is_some() && env.server.is_some() {
        None
    } else {
        load_file(&env.credentials_path()?)?
    };
    let server = match (&env.server, &stored) {
        (Some(s), _) => ServerUrl::parse(s)
            .map_err(|e| WeError::Usage(format!("{}: {e}", vars::CODEB_SERVER)))?,
        (None, Some(c)) => c.server.clone(),
        (None, None) => {
            return Err(WeError::NotLoggedIn(format!(
                "no server: run `we login --server https://<host>` (or set {} and {})",
                vars::CODEB_SERVER,
                vars::CODEB_TOKEN
            )));
        }
    };
    let token = match (&env.token, stored) {
        (Some(t), _) => Token::parse(t)
            .map_err(|e| WeError::NotLoggedIn(format!("{}: {e}", vars::CODEB_TOKEN)))?,
        (None, Some(c)) => c.token,
        (None, None) => {
            return Err(WeError::NotLoggedIn(format!(
                "no token: run `we login` (or set {})",
                vars::CODEB_TOKEN
            )));
        }
    };
    Ok(Credentials { server, token })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls() {
        let ok = |s: &str| ServerUrl::parse(s).map(|u| u.0).map_err(|e| e.to_string());
        assert_eq!(ok("n1.example.com"), Ok("https://n1.example.com".into()));
        assert_eq!(
            ok("https://n1.example.com/"),
            Ok("https://n1.example.com".into())
        );
        assert_eq!(
            ok("https://n1.example.com:8443"),
            Ok("https://n1.example.com:8443".into())
        );
        assert_eq!(
            ok("http://127.0.0.1:3102"),
            Ok("http://127.0.0.1:3102".into())
        );
        assert_eq!(
            ok("http://localhost:3102"),
            Ok("http://localhost:3102".into())
        );
        assert_eq!(ok("http://[::1]:3102"), Ok("http://[::1]:3102".into()));
        for bad in [
            "",
            "http://n1.example.com",
            "http://10.0.0.1:3102",
            "ftp://n1.example.com",
            "https://n1.example.com/api",
            "https://u:p@n1.example.com",
            "https://n1.example.com?x=1",
        ] {
            let e = ok(bad).expect_err(bad);
            assert!(e.contains("https://n1.example.com"), "{bad}: {e}");
        }
        assert!(
            ok("http://n1.example.com")
                .expect_err("plain http")
                .contains("unencrypted")
        );
    }

    fn token() -> Token {
        Token::from_random([7; 32])
    }

    #[test]
    fn env_never_prints_the_token() {
        let env = Env {
            token: Some("codeb_secret".into()),
            ..Env::default()
        };
        assert!(!format!("{env:?}").contains("codeb_secret"));
    }

    #[test]
    fn credentials_path_follows_xdg() {
        let env = Env {
            xdg_config_home: Some("/x/cfg".into()),
            home: Some("/home/u".into()),
            ..Env::default()
        };
        assert_eq!(
            env.credentials_path().expect("path"),
            PathBuf::from("/x/cfg/codeb/credentials.toml")
        );
        // A relative XDG_CONFIG_HOME is ignored, as the spec says.
        let env = Env {
            xdg_config_home: Some("rel".into()),
            home: Some("/home/u".into()),
            ..Env::default()
        };
        assert_eq!(
            env.credentials_path().expect("path"),
            PathBuf::from("/home/u/.config/codeb/credentials.toml")
        );
        assert!(Env::default().credentials_path().is_err());
    }

    #[test]
    fn save_is_0600_and_atomic_and_load_refuses_open_modes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("codeb").join("credentials.toml");
        let creds = Credentials {
            server: ServerUrl::parse("http://127.0.0.1:1").expect("url"),
            token: token(),
        };
        save_file(&path, &creds).expect("save");
        let mode = fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dmode = fs::metadata(path.parent().expect("dir"))
            .expect("meta")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dmode, 0o700);
        let back = load_file(&path).expect("load").expect("some");
        assert_eq!(back.token, token());
        assert_eq!(back.server, creds.server);
        // Overwriting a file someone opened up makes it 0600 again; no temp file stays.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        let e = load_file(&path).expect_err("0644 is refused");
        assert!(e.to_string().contains("chmod 600"), "{e}");
        save_file(&path, &creds).expect("save again");
        let mode = fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let names: Vec<_> = fs::read_dir(path.parent().expect("dir"))
            .expect("ls")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("credentials.toml")]);
    }

    #[test]
    fn environment_overrides_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let env = Env {
            xdg_config_home: Some(dir.path().to_owned()),
            ..Env::default()
        };
        let e = resolve(&env).expect_err("nothing stored");
        assert!(matches!(e, WeError::NotLoggedIn(_)), "{e}");
        save_file(
            &env.credentials_path().expect("path"),
            &Credentials {
                server: ServerUrl::parse("http://127.0.0.1:1").expect("url"),
                token: token(),
            },
        )
        .expect("save");
        let c = resolve(&env).expect("from file");
        assert_eq!(c.token, token());
        let other = Token::from_random([9; 32]);
        let env = Env {
            token: Some(other.expose().to_owned()),
            server: Some("http://127.0.0.1:2".into()),
            ..env
        };
        let c = resolve(&env).expect("from env");
        assert_eq!(c.token, other);
        let bad = Env {
            token: Some("codeb_short".into()),
            ..env.clone()
        };
        let e = resolve(&bad).expect_err("malformed");
        assert!(matches!(e, WeError::NotLoggedIn(_)), "{e}");
        assert!(!e.to_string().contains("codeb_short"), "{e}");
        assert_eq!(c.server.as_str(), "http://127.0.0.1:2");
    }
}
