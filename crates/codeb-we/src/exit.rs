//! How a run of `we` ends: the documented exit codes, and the errors that lead to them.

use std::process::ExitCode;

/// The exit codes of `we`, a documented contract (README, `we --help`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Exit {
    /// 0: done; the thing checked is fine.
    Ok,
    /// 1: the thing checked is wrong: unhealthy, drift, a failed or rolled-back deploy.
    Wrong,
    /// 2: usage or bad input (also: the server could not be reached or answered an error).
    Usage,
    /// 3: the server refused: this token's role may not do that (or not on that project).
    Forbidden,
    /// 4: not logged in, or the token is expired, revoked or unknown.
    NotLoggedIn,
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Self::Ok => 0,
            Self::Wrong => 1,
            Self::Usage => 2,
            Self::Forbidden => 3,
            Self::NotLoggedIn => 4,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> Self {
        ExitCode::from(e.code())
    }
}

/// Everything that ends a command early. Each variant maps to one exit code
/// ([`WeError::exit`]); the message says what failed and what to do.
#[derive(Debug, thiserror::Error)]
pub enum WeError {
    #[error("{0}")]
    Usage(String),
    #[error("not logged in: {0}")]
    NotLoggedIn(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error("{0}")]
    Server(String),
    #[error("cannot reach {server}: {reason}")]
    Unreachable { server: String, reason: String },
    #[error("{0}")]
    Io(String),
    /// The operation ran and failed (a deploy that failed or rolled back, a lock wait that
    /// timed out): exit 1.
    #[error("{0}")]
    Failed(String),
}

impl WeError {
    pub fn exit(&self) -> Exit {
        match self {
            Self::Usage(_) | Self::Server(_) | Self::Unreachable { .. } | Self::Io(_) => {
                Exit::Usage
            }
            Self::NotLoggedIn(_) | Self::Unauthorized(_) => Exit::NotLoggedIn,
            Self::Forbidden(_) => Exit::Forbidden,
            Self::Failed(_) => Exit::Wrong,
        }
    }

    /// A short machine-readable name for `--json` error output.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Usage(_) => "usage",
            Self::NotLoggedIn(_) => "not-logged-in",
            Self::Unauthorized(_) => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::Server(_) => "server",
            Self::Unreachable { .. } => "unreachable",
            Self::Io(_) => "io",
            Self::Failed(_) => "failed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_the_documented_ones() {
        assert_eq!(Exit::Ok.code(), 0);
        assert_eq!(Exit::Wrong.code(), 1);
        assert_eq!(Exit::Usage.code(), 2);
        assert_eq!(Exit::Forbidden.code(), 3);
        assert_eq!(Exit::NotLoggedIn.code(), 4);
        assert_eq!(WeError::Forbidden("x".into()).exit(), Exit::Forbidden);
        assert_eq!(WeError::Unauthorized("x".into()).exit(), Exit::NotLoggedIn);
        assert_eq!(
            WeError::Unreachable {
                server: "s".into(),
                reason: "r".into()
            }
            .exit(),
            Exit::Usage
        );
    }
}
