//! The exit codes of every codeb binary, one contract: 0 success, 1 the checked thing is
//! wrong (or a deploy failed after it began changing the host), 2 usage, input or I/O error
//! with nothing changed.

/// How a codeb binary ends; `main` returns it as its [`std::process::ExitCode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0: done, the checked thing is right.
    Success,
    /// 1: the checked thing is wrong (an invalid port, an unhealthy release, drift), or a
    /// deploy failed after it began changing the host (and put the previous release back).
    Failure,
    /// 2: a usage, input or I/O error; the host was left as it was.
    Usage,
}

impl Exit {
    /// The process exit status.
    pub fn code(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::Failure => 1,
            Exit::Usage => 2,
        }
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_the_documented_contract() {
        assert_eq!(
            [Exit::Success, Exit::Failure, Exit::Usage].map(Exit::code),
            [0, 1, 2]
        );
    }
}
