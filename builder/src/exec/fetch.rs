//! What ADD needs from an HTTP client. The builder owns the trait; the caller
//! implements it (the cli with the registry client's HTTP stack, so ADD URLs get
//! the same CAs, proxies and timeouts as registries).

use std::io::Read;

/// One GET.
#[derive(Debug, Clone, Default)]
pub struct FetchRequest<'a> {
    /// The URL without userinfo.
    pub url: &'a str,
    /// Sent as `Authorization: Basic`, never in the request line, and not
    /// forwarded when a redirect leaves the host.
    pub basic_auth: Option<(&'a str, &'a str)>,
    pub if_none_match: Option<&'a str>,
    pub if_modified_since: Option<&'a str>,
}

/// The answer, whatever its status.
pub struct FetchResponse {
    pub status: u16,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    pub content_disposition: Option<String>,
    /// Where the body came from, after redirects.
    pub final_url: String,
    pub body: Box<dyn Read + Send>,
}

/// A failure to get an answer (connecting, TLS, a timeout), as text for the
/// step's error.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct FetchError(pub String);

pub trait Fetch: Sync {
    fn get(&self, req: &FetchRequest<'_>) -> Result<FetchResponse, FetchError>;
}
