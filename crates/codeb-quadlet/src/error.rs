//! The crate's error type. Every variant says where (file, and line when there is one), what
//! failed and how to fix it.

use std::fmt;
use std::path::PathBuf;

/// A place in a unit file (or one of its drop-ins).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file the text came from (the unit itself or a drop-in `.conf`).
    pub file: PathBuf,
    /// 1-based line number; `None` when the problem concerns the whole file.
    pub line: Option<usize>,
}

impl Location {
    pub(crate) fn new(file: impl Into<PathBuf>, line: usize) -> Self {
        Self {
            file: file.into(),
            line: Some(line),
        }
    }

    pub(crate) fn file(file: impl Into<PathBuf>) -> Self {
        Self {
            file: file.into(),
            line: None,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}", self.file.display()),
            None => write!(f, "{}", self.file.display()),
        }
    }
}

/// Everything that can go wrong while reading a unit or converting it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QuadletError {
    /// A unit file or drop-in could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The text is not valid unit-file syntax.
    #[error("{location}: {message}")]
    Syntax { location: Location, message: String },

    /// A key this crate does not translate. It is refused, never silently dropped.
    #[error("{location}: key {key}= in [{section}] is not supported by codeb-quadlet: {hint}")]
    UnsupportedKey {
        location: Location,
        section: String,
        key: String,
        hint: String,
    },

    /// A supported key whose value needs something this crate cannot provide (for example a
    /// reference to another Quadlet unit, which only podman's generator can resolve).
    #[error("{location}: {key}={value} is not supported by codeb-quadlet: {reason}")]
    UnsupportedValue {
        location: Location,
        key: String,
        value: String,
        reason: String,
    },

    /// A value that is malformed.
    #[error("{location}: invalid {key}={value}: {reason}")]
    InvalidValue {
        location: Location,
        key: String,
        value: String,
        reason: String,
    },

    /// The unit as a whole is not usable (e.g. no image, conflicting keys).
    #[error("{location}: {message}")]
    Invalid { location: Location, message: String },

    /// A key, or a form of its value, that the target podman's Quadlet generator does not
    /// accept (it would skip the whole unit: `systemctl start` then says the unit does not
    /// exist) or translates differently from later podman.
    #[error("{0}")]
    NeedsNewerPodman(Box<VersionGap>),
}

/// The details of [`QuadletError::NeedsNewerPodman`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{location}: {key}= {problem} in podman {version}'s Quadlet generator (podman {since} and later take it as codeb does); {fix}"
)]
pub struct VersionGap {
    pub location: Location,
    pub key: String,
    /// What goes wrong with that version (`is not a known [Container] key`, ...).
    pub problem: String,
    /// The version the unit was checked for.
    pub version: String,
    /// The oldest checked version that runs it as codeb does.
    pub since: String,
    /// What to write instead.
    pub fix: String,
}

impl QuadletError {
    /// The key the error is about, when it concerns one key.
    pub fn key(&self) -> Option<&str> {
        match self {
            Self::UnsupportedKey { key, .. }
            | Self::UnsupportedValue { key, .. }
            | Self::InvalidValue { key, .. } => Some(key),
            Self::NeedsNewerPodman(gap) => Some(&gap.key),
            Self::Io { .. } | Self::Syntax { .. } | Self::Invalid { .. } => None,
        }
    }

    /// Where the error is, when known.
    pub fn location(&self) -> Option<&Location> {
        match self {
            Self::Io { .. } => None,
            Self::Syntax { location, .. }
            | Self::UnsupportedKey { location, .. }
            | Self::UnsupportedValue { location, .. }
            | Self::InvalidValue { location, .. }
            | Self::Invalid { location, .. } => Some(location),
            Self::NeedsNewerPodman(gap) => Some(&gap.location),
        }
    }
}
