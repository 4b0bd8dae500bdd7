//! The registry API on top of the transport: manifests, tags and login. Blobs
//! are in [`crate::blob`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, CONTENT_TYPE};
use reqwest::{Method, Response, StatusCode};
use url::Url;

use crate::auth::{CredentialStore, Credentials};
use crate::blob::push::Uploads;
use crate::error::{Error, Result};
use crate::manifest::{Descriptor, Manifest, ACCEPT as MANIFEST_ACCEPT, MAX_MANIFEST};
use crate::reference::Reference;
use crate::transport::http::transport;
use crate::transport::{read_capped, status_error, Host, Request, Transport};
use oci_vocab::Digest;

#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Hosts that may be reached over plain HTTP (or HTTPS without verification).
    pub insecure_registries: Vec<String>,
    /// Roots holding `<host[:port]>/*.crt` (Docker's and Podman's certs.d).
    pub certs_dirs: Vec<PathBuf>,
    pub max_concurrent_per_host: usize,
    pub max_attempts: u32,
    pub retry_base: Duration,
    /// Blobs larger than this are uploaded in PATCH chunks of `chunk_size`.
    pub chunk_threshold: u64,
    pub chunk_size: u64,
    pub credentials: CredentialStore,
    /// Credentials to use instead of the store (login checks them before saving).
    pub credential_override: Option<(String, Credentials)>,
    pub user_agent: String,
    /// A body transfer that moves less than [`IDLE_MIN_BYTES`] in this long is
    /// idle: it is resumed once, then fails.
    pub idle_timeout: Duration,
}

/// Bytes a transfer must move per idle-timeout window (curl's low-speed limit,
/// as an amount per window): a 1 byte/s trickle is idle, a slow link is not.
pub const IDLE_MIN_BYTES: u64 = 1024;

/// The default idle timeout, when `MYBUILD_IDLE_TIMEOUT` is unset.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// `2s`, `500ms`, `1m`, or a plain number of seconds.
pub fn parse_idle_timeout(v: &str) -> Option<Duration> {
    let v = v.trim();
    let (num, mult_ms) = if let Some(n) = v.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1000)
    } else if let Some(n) = v.strip_suffix('m') {
        (n, 60_000)
    } else {
        (v, 1000)
    };
    let n: u64 = num.trim().parse().ok()?;
    let d = Duration::from_millis(n.checked_mul(mult_ms)?);
    (!d.is_zero()).then_some(d)
}

/// A duration as the user would write it: `2s`, `1500ms`.
impl ClientOptions {
    /// Defaults, with the certs.d roots overridable by `$MYBUILD_CERTS_D`.
    pub fn from_env() -> ClientOptions {
        let certs_dirs = certs_dirs(
            std::env::var_os("MYBUILD_CERTS_D").as_deref(),
            std::env::var_os("HOME").as_deref(),
        );
        ClientOptions {
            insecure_registries: Vec::new(),
            certs_dirs,
            max_concurrent_per_host: 4,
            max_attempts: 5,
            retry_base: Duration::from_millis(200),
            chunk_threshold: 32 << 20,
            chunk_size: 16 << 20,
            credentials: CredentialStore::from_env(),
            credential_override: None,
            user_agent: concat!("mybuild/", env!("CARGO_PKG_VERSION")).to_string(),
            idle_timeout: idle_timeout_from_env(),
        }
    }
}

/// The certs.d roots: `$MYBUILD_CERTS_D` (a path list) replaces them all; else the
/// user's `~/.config/containers/certs.d` (Podman's rootless root, which the user can
/// write without privileges), then Docker's and Podman's system roots.
fn certs_dirs(
    override_dirs: Option<&std::ffi::OsStr>,
    home: Option<&std::ffi::OsStr>,
) -> Vec<PathBuf> {
    if let Some(d) = override_dirs.filter(|d| !d.is_empty()) {
        return std::env::split_paths(d).collect();
    }
    let mut dirs = Vec::new();
    if let Some(home) = home.filter(|h| !h.is_empty()) {
        dirs.push(PathBuf::from(home).join(".config/containers/certs.d"));
    }
    dirs.push(PathBuf::from("/etc/docker/certs.d"));
    dirs.push(PathBuf::from("/etc/containers/certs.d"));
    dirs
}

/// `$MYBUILD_IDLE_TIMEOUT`, or the default (also when it cannot be read).
fn idle_timeout_from_env() -> Duration {
    match std::env::var("MYBUILD_IDLE_TIMEOUT") {
        Ok(v) if !v.trim().is_empty() => parse_idle_timeout(&v).unwrap_or_else(|| {
            tracing::warn!(
                "MYBUILD_IDLE_TIMEOUT={v:?} is not a duration such as 60s or 500ms; using 60s"
            );
            DEFAULT_IDLE_TIMEOUT
        }),
        _ => DEFAULT_IDLE_TIMEOUT,
    }
}

pub struct Client {
    /// Shared with the tasks that open upload sessions.
    pub(crate) transport: Arc<Transport>,
    /// Upload sessions left open. An upload whose future is dropped (an
    /// interrupt, or a sibling upload's failure) cannot send its DELETE from
    /// `Drop`, so its entry stays here for [`Client::cancel_open_uploads`].
    pub(crate) uploads: Arc<Uploads>,
}

impl Client {
    pub fn new(opts: ClientOptions) -> Client {
        Client {
            transport: Arc::new(Transport::new(opts)),
            uploads: Arc::default(),
        }
    }

    pub fn options(&self) -> &ClientOptions {
        &self.transport.opts
    }

    pub(crate) async fn host(&self, registry: &str) -> Result<Arc<Host>> {
        self.transport.host(registry).await
    }

    pub(crate) async fn send(&self, host: &Host, req: Request<'_, '_>) -> Result<Response> {
        self.transport.send(host, &req).await
    }

    pub(crate) fn url(&self, host: &Host, path: &str) -> Result<Url> {
        host.url(path)
    }

    pub(crate) fn pull_scope(repo: &str) -> Vec<String> {
        vec![format!("repository:{repo}:pull")]
    }
    pub(crate) fn push_scope(repo: &str) -> Vec<String> {
        vec![format!("repository:{repo}:pull,push")]
    }

    /// Checks that the configured credentials are accepted (`login`).
    pub async fn check_login(&self, registry: &str) -> Result<()> {
        let host = self.host(registry).await?;
        let url = self.url(&host, "v2/")?;
        let resp = self
            .send(&host, Request::new(Method::GET, &url, &[]))
            .await?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(status_error(&format!("login to {registry}"), registry, resp).await)
        }
    }

    pub async fn get_manifest(&self, r: &Reference) -> Result<Manifest> {
        let host = self.host(&r.registry).await?;
        let url = self.url(
            &host,
            &format!("v2/{}/manifests/{}", r.repository, r.reference()),
        )?;
        let mut h = HeaderMap::new();
        h.insert(ACCEPT, HeaderValue::from_static(MANIFEST_ACCEPT));
        let what = format!("manifest {r}");
        let resp = self
            .send(
                &host,
                Request::new(Method::GET, &url, &Self::pull_scope(&r.repository)).headers(&h),
            )
            .await?;
        if !resp.status().is_success() {
            return Err(status_error(&what, &r.registry, resp).await);
        }
        if resp.content_length().is_some_and(|l| l > MAX_MANIFEST) {
            return Err(Error::invalid(&what, "manifest larger than 8 MiB"));
        }
        let ct = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let mut bytes = Vec::new();
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| transport(&r.registry, &e))?;
            if bytes.len() as u64 + chunk.len() as u64 > MAX_MANIFEST {
                return Err(Error::invalid(&what, "manifest larger than 8 MiB"));
            }
            bytes.extend_from_slice(&chunk);
        }
        let m = Manifest::new(bytes, ct.as_deref())?;
        if let Some(d) = &r.digest {
            if *d != m.digest {
                return Err(Error::DigestMismatch {
                    digest: d.clone(),
                    actual: m.digest.clone(),
                    size: m.bytes.len() as u64,
                });
            }
        }
        Ok(m)
    }

    /// HEAD of `r`'s repository's manifest `reference` (a tag or digest).
    async fn head_manifest(
        &self,
        r: &Reference,
        reference: &str,
        scope: Vec<String>,
    ) -> Result<reqwest::Response> {
        let host = self.host(&r.registry).await?;
        let url = self.url(&host, &format!("v2/{}/manifests/{reference}", r.repository))?;
        let mut h = HeaderMap::new();
        h.insert(ACCEPT, HeaderValue::from_static(MANIFEST_ACCEPT));
        self.send(&host, Request::new(Method::HEAD, &url, &scope).headers(&h))
            .await
    }

    /// The digest a reference points at, from a HEAD (GET when the registry sends none).
    pub async fn manifest_digest(&self, r: &Reference) -> Result<Digest> {
        let resp = self
            .head_manifest(r, &r.reference(), Self::pull_scope(&r.repository))
            .await?;
        if !resp.status().is_success() {
            return Err(status_error(&format!("manifest {r}"), &r.registry, resp).await);
        }
        match resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|d| d.parse::<Digest>().ok())
        {
            Some(d) => Ok(d),
            None => Ok(self.get_manifest(r).await?.digest),
        }
    }

    /// Whether the repository has a manifest with this digest.
    pub async fn has_manifest(&self, r: &Reference, digest: &Digest) -> Result<bool> {
        let resp = self
            .head_manifest(r, &digest.to_string(), Self::push_scope(&r.repository))
            .await?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(status_error(&format!("manifest {digest}"), &r.registry, resp).await),
        }
    }

    /// Uploads manifest bytes as they are, under the reference's tag or digest.
    pub async fn put_manifest(&self, r: &Reference, m: &Manifest) -> Result<Digest> {
        let host = self.host(&r.registry).await?;
        let target = r.tag.clone().unwrap_or_else(|| m.digest.to_string());
        let url = self.url(&host, &format!("v2/{}/manifests/{target}", r.repository))?;
        let mut h = HeaderMap::new();
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_str(&m.media_type)
                .map_err(|_| Error::invalid("manifest", "bad media type"))?,
        );
        let bytes = m.bytes.clone();
        let body = move || -> BoxFuture<'_, Result<reqwest::Body>> {
            let b = bytes.clone();
            Box::pin(async move { Ok(reqwest::Body::from(b)) })
        };
        let resp = self
            .send(
                &host,
                Request::new(Method::PUT, &url, &Self::push_scope(&r.repository))
                    .headers(&h)
                    .body(&body),
            )
            .await?;
        if !resp.status().is_success() {
            return Err(
                status_error(&format!("pushing manifest {target}"), &r.registry, resp).await,
            );
        }
        Ok(m.digest.clone())
    }

    pub async fn delete_manifest(&self, r: &Reference) -> Result<Digest> {
        let digest = match &r.digest {
            Some(d) => d.clone(),
            None => self.manifest_digest(r).await?,
        };
        let host = self.host(&r.registry).await?;
        let url = self.url(&host, &format!("v2/{}/manifests/{digest}", r.repository))?;
        let scopes = vec![format!("repository:{}:delete", r.repository)];
        let resp = self
            .send(&host, Request::new(Method::DELETE, &url, &scopes))
            .await?;
        match resp.status() {
            s if s.is_success() => Ok(digest),
            StatusCode::METHOD_NOT_ALLOWED => Err(Error::invalid(
                format!("deleting {r}"),
                "the registry does not allow deletion (it is disabled in its configuration)",
            )),
            _ => Err(status_error(&format!("deleting {r}"), &r.registry, resp).await),
        }
    }

    /// All tags, following `Link: <...>; rel="next"` pagination.
    pub async fn list_tags(&self, r: &Reference) -> Result<Vec<String>> {
        let host = self.host(&r.registry).await?;
        let mut url = self.url(&host, &format!("v2/{}/tags/list", r.repository))?;
        let mut tags = Vec::new();
        for _ in 0..MAX_TAG_PAGES {
            let resp = self
                .send(
                    &host,
                    Request::new(Method::GET, &url, &Self::pull_scope(&r.repository)),
                )
                .await?;
            if !resp.status().is_success() {
                return Err(
                    status_error(&format!("tags of {}", r.name()), &r.registry, resp).await,
                );
            }
            let next = match resp
                .headers()
                .get("link")
                .and_then(|l| l.to_str().ok())
                .and_then(parse_next_link)
            {
                Some(l) => Some(next_page(&host.base, &url, &l).ok_or_else(|| {
                    Error::invalid(
                        format!("tags of {}", r.name()),
                        format!("the next page {l:?} is not on this registry"),
                    )
                })?),
                None => None,
            };
            let body = read_capped(resp, MAX_MANIFEST)
                .await
                .map_err(|e| transport(&r.registry, &e))?
                .ok_or_else(|| {
                    Error::invalid(
                        format!("tags of {}", r.name()),
                        format!("a page larger than {} MiB", MAX_MANIFEST >> 20),
                    )
                })?;
            let v: serde_json::Value = serde_json::from_slice(&body)
                .map_err(|e| Error::invalid(format!("tags of {}", r.name()), e.to_string()))?;
            if let Some(list) = v.get("tags").and_then(|t| t.as_array()) {
                tags.extend(list.iter().filter_map(|t| t.as_str().map(str::to_string)));
            }
            if tags.len() > MAX_TAGS {
                return Err(Error::invalid(
                    format!("tags of {}", r.name()),
                    format!("more than {MAX_TAGS} tags"),
                ));
            }
            match next {
                Some(n) => url = n,
                None => return Ok(tags),
            }
        }
        // A registry whose pages never end: say so rather than return a
        // silently truncated list.
        Err(Error::invalid(
            format!("tags of {}", r.name()),
            format!(
                "more than {MAX_TAG_PAGES} pages (the registry's Link pagination does not end)"
            ),
        ))
    }

    /// Whether the repository has the blob (a HEAD).
    pub async fn has_blob(&self, r: &Reference, desc: &Descriptor) -> Result<bool> {
        let host = self.host(&r.registry).await?;
        let url = self.url(&host, &format!("v2/{}/blobs/{}", r.repository, desc.digest))?;
        let resp = self
            .send(
                &host,
                Request::new(Method::HEAD, &url, &Self::push_scope(&r.repository)),
            )
            .await?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(
                status_error(&format!("checking blob {}", desc.digest), &r.registry, resp).await,
            ),
        }
    }
}

/// The next page's URL; `None` when it leaves the registry (our token would go along).
fn next_page(base: &Url, current: &Url, link: &str) -> Option<Url> {
    let next = current.join(link).ok()?;
    (next.origin() == base.origin()).then_some(next)
}

/// The `rel="next"` target of a `Link` header.
fn parse_next_link(link: &str) -> Option<String> {
    for part in link.split(',') {
        let (target, params) = part.split_once(';')?;
        if params.contains("rel=\"next\"") || params.contains("rel=next") {
            return Some(
                target
                    .trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_string(),
            );
        }
    }
    None
}

/// Pages of a tag list followed before the registry is judged endless.
const MAX_TAG_PAGES: usize = 10_000;
/// Tags collected across pages.
const MAX_TAGS: usize = 1_000_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certs_d_reads_the_users_containers_dir_unless_overridden() {
        use std::ffi::OsStr;
        assert_eq!(
            certs_dirs(None, Some(OsStr::new("/home/u"))),
            [
                PathBuf::from("/home/u/.config/containers/certs.d"),
                PathBuf::from("/etc/docker/certs.d"),
                PathBuf::from("/etc/containers/certs.d"),
            ]
        );
        assert_eq!(
            certs_dirs(Some(OsStr::new("/a:/b")), Some(OsStr::new("/home/u"))),
            [PathBuf::from("/a"), PathBuf::from("/b")]
        );
        assert_eq!(certs_dirs(None, None).len(), 2);
    }

    #[test]
    fn next_links() {
        assert_eq!(
            parse_next_link(r#"</v2/a/tags/list?last=b&n=2>; rel="next""#).as_deref(),
            Some("/v2/a/tags/list?last=b&n=2")
        );
    }

    #[test]
    fn next_pages_stay_on_the_registry() {
        let base = Url::parse("http://127.0.0.1:5000/").unwrap();
        let cur = Url::parse("http://127.0.0.1:5000/v2/a/tags/list").unwrap();
        assert_eq!(
            next_page(&base, &cur, "/v2/a/tags/list?last=b&n=2")
                .unwrap()
                .as_str(),
            "http://127.0.0.1:5000/v2/a/tags/list?last=b&n=2"
        );
        assert!(next_page(&base, &cur, "http://evil.example/v2/a/tags/list").is_none());
    }

    #[test]
    fn idle_timeout_parses_seconds_milliseconds_and_minutes() {
        assert_eq!(parse_idle_timeout("2s"), Some(Duration::from_secs(2)));
        assert_eq!(
            parse_idle_timeout(" 500ms "),
            Some(Duration::from_millis(500))
        );
        assert_eq!(parse_idle_timeout("1m"), Some(Duration::from_secs(60)));
        assert_eq!(parse_idle_timeout("90"), Some(Duration::from_secs(90)));
        assert_eq!(parse_idle_timeout("0s"), None);
        assert_eq!(parse_idle_timeout("soon"), None);
        assert_eq!(crate::blob::show_duration(Duration::from_secs(60)), "60s");
        assert_eq!(
            crate::blob::show_duration(Duration::from_millis(1500)),
            "1500ms"
        );
    }
}
