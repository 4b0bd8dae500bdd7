//! Errors. Messages never carry credentials: auth headers and token bodies are
//! not formatted into any variant.

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid reference {name:?}: {reason}")]
    InvalidReference { name: String, reason: String },
    #[error("{registry}: {message}")]
    Transport { registry: String, message: String },
    #[error("{what}: registry answered {status}{detail}")]
    Status {
        what: String,
        status: u16,
        detail: String,
    },
    #[error("{what}: authentication required (log in with `mybuild login {registry}`){detail}")]
    Unauthorized {
        what: String,
        registry: String,
        detail: String,
    },
    #[error("{what}: access denied{detail}")]
    Denied { what: String, detail: String },
    #[error("{what}: not found")]
    NotFound { what: String },
    #[error("{registry}: getting a token: {message}")]
    Token { registry: String, message: String },
    #[error(
        "blob {digest}: content has digest {actual} ({size} bytes); the registry sent wrong data"
    )]
    DigestMismatch {
        digest: String,
        actual: String,
        size: u64,
    },
    #[error("blob {digest}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        digest: String,
        expected: u64,
        actual: u64,
    },
    #[error("{what}: the transfer stalled: less than 1 KiB arrived in {idle} (the idle timeout; MYBUILD_IDLE_TIMEOUT changes it){}", progress(*offset, *size))]
    Idle {
        what: String,
        idle: String,
        offset: u64,
        size: u64,
    },
    #[error("{what}: {reason}")]
    Invalid { what: String, reason: String },
    #[error("credentials: {0}")]
    Credentials(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub fn invalid(what: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::Invalid {
            what: what.into(),
            reason: reason.into(),
        }
    }
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            what: what.into(),
            source,
        }
    }
}

/// `, at byte N of M` when known.
fn progress(offset: u64, size: u64) -> String {
    if size == 0 {
        String::new()
    } else {
        format!(", at byte {offset} of {size}")
    }
}

impl From<crate::reference::ReferenceError> for Error {
    fn from(e: crate::reference::ReferenceError) -> Self {
        Error::InvalidReference {
            name: e.input,
            reason: e.kind.to_string(),
        }
    }
}
