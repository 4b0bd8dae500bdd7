//! Errors. Messages never carry credentials: auth headers and token bodies are
//! not formatted into any variant.

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid reference {name:?}: {reason}")]
    InvalidReference { name: String, reason: String },
    #[error("{registry}: {message}")]
    Transport { registry: String, message: String },
    #[error("{what}: registry answered {status}{detail}{response}")]
    Status {
        what: String,
        status: u16,
        detail: String,
        response: Box<ErrorResponse>,
    },
    #[error("{what}: authentication required (log in with `mybuild login {registry}`){detail}{response}")]
    Unauthorized {
        what: String,
        registry: String,
        detail: String,
        response: Box<ErrorResponse>,
    },
    #[error("{what}: access denied{detail}{response}")]
    Denied {
        what: String,
        detail: String,
        response: Box<ErrorResponse>,
    },
    #[error("{what}: not found{response}")]
    NotFound {
        what: String,
        response: Box<ErrorResponse>,
    },
    #[error("{registry}: getting a token: {message}")]
    Token { registry: String, message: String },
    #[error(
        "blob {digest}: content has digest {actual} ({size} bytes); the registry sent wrong data"
    )]
    DigestMismatch {
        digest: oci_vocab::Digest,
        actual: oci_vocab::Digest,
        size: u64,
    },
    #[error("blob {digest}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        digest: oci_vocab::Digest,
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

/// One entry of a registry's error body (the distribution spec's `errors` list).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Deserialize)]
pub struct RegistryError {
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub message: String,
    /// Unstructured, as the spec leaves it.
    #[serde(default)]
    pub detail: Option<serde_json::Value>,
}

/// The failed response behind an error: where it came from and what the registry
/// said. Displays as ` (from URL[, after N attempts])`; empty when nothing is known.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorResponse {
    /// The request URL without userinfo or secret-bearing query values.
    pub url: String,
    /// The HTTP status (0 when no response was received).
    pub status: u16,
    pub errors: Vec<RegistryError>,
    /// Requests sent, retries included.
    pub attempts: u32,
}

impl ErrorResponse {
    /// The registry's error codes, in the order it gave them.
    pub fn codes(&self) -> Vec<&str> {
        self.errors.iter().map(|e| e.code.as_str()).collect()
    }
}

impl std::fmt::Display for ErrorResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.url.is_empty(), self.attempts > 1) {
            (true, false) => Ok(()),
            (true, true) => write!(f, " (after {} attempts)", self.attempts),
            (false, false) => write!(f, " (from {})", self.url),
            (false, true) => write!(f, " (from {}, after {} attempts)", self.url, self.attempts),
        }
    }
}

/// `url` fit for a message: no userinfo, and query values other than the
/// distribution API's own (`digest`, `mount`, `from`, `n`, `last`) replaced, as
/// upload Locations and redirects may carry signatures or tokens there.
pub fn redact_url(url: &url::Url) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    if u.query().is_some() {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let keep = matches!(k.as_ref(), "digest" | "mount" | "from" | "n" | "last");
                let v = if keep {
                    v.into_owned()
                } else {
                    "redacted".into()
                };
                (k.into_owned(), v)
            })
            .collect();
        u.set_query(None);
        if !pairs.is_empty() {
            u.query_pairs_mut().extend_pairs(pairs);
        }
    }
    u.to_string()
}

impl Error {
    /// The failed response behind a registry error, if this is one.
    pub fn response(&self) -> Option<&ErrorResponse> {
        match self {
            Error::Status { response, .. }
            | Error::Unauthorized { response, .. }
            | Error::Denied { response, .. }
            | Error::NotFound { response, .. } => Some(response.as_ref()),
            _ => None,
        }
    }

    /// The registry's error codes (`MANIFEST_UNKNOWN`, ...), if it sent any.
    pub fn codes(&self) -> Vec<&str> {
        self.response()
            .map(ErrorResponse::codes)
            .unwrap_or_default()
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_in_messages_lose_userinfo_and_secret_query_values() {
        let u = url::Url::parse(
            "https://me:pw@r.example/v2/a/blobs/uploads/x?_state=abc&digest=sha256%3A00&X-Amz-Signature=s",
        )
        .unwrap();
        let shown = redact_url(&u);
        assert!(
            !shown.contains("me:pw") && !shown.contains("abc"),
            "{shown}"
        );
        assert!(shown.contains("X-Amz-Signature=redacted"), "{shown}");
        assert!(shown.contains("digest=sha256%3A00"), "{shown}");
    }

    #[test]
    fn registry_errors_show_url_and_attempts() {
        let e = Error::NotFound {
            what: "manifest r/a:1 (MANIFEST_UNKNOWN: manifest unknown)".into(),
            response: Box::new(ErrorResponse {
                url: "http://127.0.0.1:5000/v2/a/manifests/1".into(),
                status: 404,
                errors: vec![RegistryError {
                    code: "MANIFEST_UNKNOWN".into(),
                    ..RegistryError::default()
                }],
                attempts: 3,
            }),
        };
        assert_eq!(
            e.to_string(),
            "manifest r/a:1 (MANIFEST_UNKNOWN: manifest unknown): not found \
             (from http://127.0.0.1:5000/v2/a/manifests/1, after 3 attempts)"
        );
        assert_eq!(e.codes(), ["MANIFEST_UNKNOWN"]);
    }
}
