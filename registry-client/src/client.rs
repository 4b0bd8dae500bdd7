//! The HTTP side: one reqwest client per registry host (its own CAs), challenge
//! driven auth with per-scope token caching, retries with backoff that honour
//! Retry-After, and the pull/push operations built on them.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use reqwest::header::{
    HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE,
};
use reqwest::{Method, Response, StatusCode};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::Semaphore;
use url::Url;

use crate::auth::{parse_challenges, Challenge, CredentialStore, Credentials};
use crate::error::{Error, Result};
use crate::manifest::{Descriptor, Manifest, ACCEPT as MANIFEST_ACCEPT, MAX_MANIFEST};
use crate::reference::{registry_api_host, validate_digest, Reference};

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
fn show_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

impl ClientOptions {
    /// Defaults, with the certs.d roots overridable by `$MYBUILD_CERTS_D`.
    pub fn from_env() -> ClientOptions {
        let certs_dirs = match std::env::var_os("MYBUILD_CERTS_D").filter(|d| !d.is_empty()) {
            Some(d) => std::env::split_paths(&d).collect(),
            None => vec![
                PathBuf::from("/etc/docker/certs.d"),
                PathBuf::from("/etc/containers/certs.d"),
            ],
        };
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

/// Tracks one body transfer's progress: idle once a window of `timeout` passes
/// with fewer than [`IDLE_MIN_BYTES`] moved.
struct IdleWatch {
    timeout: Duration,
    since: Instant,
    bytes: u64,
}

impl IdleWatch {
    fn new(timeout: Duration) -> IdleWatch {
        IdleWatch {
            timeout,
            since: Instant::now(),
            bytes: 0,
        }
    }

    fn moved(&mut self, n: usize) {
        self.bytes += n as u64;
        if self.bytes >= IDLE_MIN_BYTES {
            self.since = Instant::now();
            self.bytes = 0;
        }
    }

    /// The stream's next item, or `None` when the transfer went idle first.
    async fn next<S: futures_util::Stream + Unpin>(
        &self,
        stream: &mut S,
    ) -> Option<Option<S::Item>> {
        let deadline = tokio::time::Instant::from_std(self.since + self.timeout);
        tokio::time::timeout_at(deadline, stream.next()).await.ok()
    }
}

/// Where an upload reads a blob from; `open` may be called again after a failure.
pub trait BlobSource: Send + Sync {
    fn open(
        &self,
        offset: u64,
    ) -> BoxFuture<'_, std::io::Result<Box<dyn AsyncRead + Send + Unpin>>>;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushOutcome {
    /// The registry already had it.
    Exists,
    Mounted {
        from: String,
    },
    Uploaded {
        chunks: u32,
    },
}

type BodyFn<'a> = dyn Fn() -> BoxFuture<'a, Result<reqwest::Body>> + Send + Sync + 'a;

struct Host {
    registry: String,
    base: Url,
    http: reqwest::Client,
    limit: Arc<Semaphore>,
    auth: tokio::sync::Mutex<AuthState>,
}

#[derive(Default)]
struct AuthState {
    challenge: Option<Challenge>,
    tokens: HashMap<String, (String, Instant)>,
    creds: Option<Option<Credentials>>,
    /// Other origins (upload Locations) that challenged for our token's realm and
    /// service: they get the token without a 401 round trip first.
    token_origins: HashSet<String>,
}

/// How long cancelling upload sessions may take: an interrupted command
/// should still end promptly, and the registry purges what is left anyway.
const CANCEL_WITHIN: Duration = Duration::from_secs(2);

/// An upload session the registry opened (a POST answered with a Location) and
/// that is not completed or cancelled yet.
#[derive(Clone)]
struct OpenUpload {
    host: Arc<Host>,
    repository: String,
    /// The latest Location (each PATCH answers with a new one).
    url: Url,
}

pub struct Client {
    opts: ClientOptions,
    hosts: Mutex<HashMap<String, Arc<Host>>>,
    warned: Mutex<HashSet<String>>,
    /// Open upload sessions by id. An upload whose future is dropped (an
    /// interrupt, or a sibling upload's failure) cannot send its DELETE from
    /// `Drop`, so its entry stays here for [`Client::cancel_open_uploads`].
    uploads: Mutex<HashMap<u64, OpenUpload>>,
    next_upload: AtomicU64,
}

fn transport(registry: &str, e: &reqwest::Error) -> Error {
    // reqwest's Display names the URL; our URLs carry no secrets. Add the cause chain.
    let mut message = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        message.push_str(": ");
        message.push_str(&s.to_string());
        src = s.source();
    }
    Error::Transport {
        registry: registry.to_string(),
        message,
    }
}

/// A name that does not resolve will not resolve on retry either.
fn is_dns_failure(e: &reqwest::Error) -> bool {
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        if s.to_string().starts_with("dns error") {
            return true;
        }
        src = s.source();
    }
    false
}

fn is_loopback(host: &str) -> bool {
    let h = host
        .rsplit_once(':')
        .filter(|(h, p)| !h.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        .map(|(h, _)| h)
        .unwrap_or(host);
    h == "localhost" || h.starts_with("127.") || h == "[::1]"
}

fn retryable_status(s: StatusCode) -> bool {
    s == StatusCode::REQUEST_TIMEOUT || s == StatusCode::TOO_MANY_REQUESTS || s.is_server_error()
}

fn retry_after(h: &HeaderMap) -> Option<Duration> {
    let v = h
        .get("retry-after")?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(Duration::from_secs(v.min(60)))
}

impl Client {
    pub fn new(opts: ClientOptions) -> Client {
        Client {
            opts,
            hosts: Mutex::new(HashMap::new()),
            warned: Mutex::new(HashSet::new()),
            uploads: Mutex::new(HashMap::new()),
            next_upload: AtomicU64::new(0),
        }
    }

    pub fn options(&self) -> &ClientOptions {
        &self.opts
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let base = self.opts.retry_base.as_millis() as u64;
        let exp = base.saturating_mul(1 << attempt.min(6)).min(10_000);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() as u64)
            .unwrap_or(0);
        Duration::from_millis(exp + nanos % (base.max(1)))
    }

    fn insecure(&self, registry: &str) -> bool {
        self.opts
            .insecure_registries
            .iter()
            .any(|r| r == registry || r == registry_api_host(registry))
    }

    fn build_http(&self, registry: &str) -> Result<reqwest::Client> {
        let api = registry_api_host(registry);
        let mut b = reqwest::Client::builder()
            .user_agent(self.opts.user_agent.clone())
            .connect_timeout(Duration::from_secs(30))
            .read_timeout(Duration::from_secs(120).max(self.opts.idle_timeout * 2))
            .pool_max_idle_per_host(self.opts.max_concurrent_per_host.max(1) * 2);
        let mut identity_pem: Vec<u8> = Vec::new();
        for root in &self.opts.certs_dirs {
            let dir = root.join(api);
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            let mut files: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
            files.sort();
            for f in files {
                let name = f.to_string_lossy().to_string();
                let read =
                    || std::fs::read(&f).map_err(|e| Error::io(format!("reading {name}"), e));
                if name.ends_with(".crt") {
                    let pem = read()?;
                    let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| {
                        Error::invalid(&name, format!("not a PEM certificate: {e}"))
                    })?;
                    b = b.add_root_certificate(cert);
                } else if name.ends_with(".cert") || name.ends_with(".key") {
                    identity_pem.extend(read()?);
                    identity_pem.push(b'\n');
                }
            }
        }
        if !identity_pem.is_empty() {
            let id = reqwest::Identity::from_pem(&identity_pem).map_err(|e| {
                Error::invalid(
                    format!("client certificate for {api}"),
                    format!("needs a .cert and a .key in PEM: {e}"),
                )
            })?;
            b = b.identity(id);
        }
        if self.insecure(registry) {
            b = b.danger_accept_invalid_certs(true);
        }
        b.build().map_err(|e| transport(registry, &e))
    }

    /// The host entry, created on first use with a ping of `/v2/` that picks the
    /// scheme and learns the auth challenge.
    async fn host(&self, registry: &str) -> Result<Arc<Host>> {
        if let Some(h) = self
            .hosts
            .lock()
            .ok()
            .and_then(|m| m.get(registry).cloned())
        {
            return Ok(h);
        }
        let http = self.build_http(registry)?;
        let api = registry_api_host(registry);
        let plain_ok = self.insecure(registry) || is_loopback(api);
        let mut last_err = None;
        let mut found = None;
        for scheme in ["https", "http"] {
            if scheme == "http" && !plain_ok {
                break;
            }
            let base = Url::parse(&format!("{scheme}://{api}/"))
                .map_err(|e| Error::invalid(format!("registry {registry}"), e.to_string()))?;
            let url = base
                .join("v2/")
                .map_err(|e| Error::invalid(registry, e.to_string()))?;
            let mut attempt = 0;
            loop {
                match http.get(url.clone()).send().await {
                    // Not a registry (e.g. an HTTPS server answering plain HTTP with 400).
                    Ok(resp)
                        if !resp.status().is_success()
                            && resp.status() != StatusCode::UNAUTHORIZED
                            && !retryable_status(resp.status()) =>
                    {
                        if last_err.is_none() {
                            last_err = Some(Error::Transport {
                                registry: registry.to_string(),
                                message: format!(
                                    "{url} answered {}; is this a registry?",
                                    resp.status()
                                ),
                            });
                        }
                        break;
                    }
                    Ok(resp) => {
                        if retryable_status(resp.status()) && attempt + 1 < self.opts.max_attempts {
                            let wait = retry_after(resp.headers()).unwrap_or(self.backoff(attempt));
                            attempt += 1;
                            tokio::time::sleep(wait).await;
                            continue;
                        }
                        let challenge = resp
                            .headers()
                            .get_all("www-authenticate")
                            .iter()
                            .filter_map(|v| v.to_str().ok())
                            .flat_map(parse_challenges)
                            .find(|c| c.scheme == "bearer" || c.scheme == "basic");
                        found = Some((base, challenge));
                        break;
                    }
                    // A TLS failure against a plain-HTTP registry: try the next scheme.
                    Err(e) if e.is_connect() && scheme == "https" && plain_ok => {
                        last_err = Some(transport(registry, &e));
                        break;
                    }
                    Err(e) => {
                        if (e.is_connect() || e.is_timeout() || e.is_request())
                            && !is_dns_failure(&e)
                            && attempt + 1 < self.opts.max_attempts
                        {
                            attempt += 1;
                            tokio::time::sleep(self.backoff(attempt)).await;
                            continue;
                        }
                        if last_err.is_none() {
                            last_err = Some(transport(registry, &e));
                        }
                        break;
                    }
                }
            }
            if found.is_some() {
                break;
            }
        }
        let Some((base, challenge)) = found else {
            return Err(last_err.unwrap_or_else(|| Error::Transport {
                registry: registry.to_string(),
                message: "unreachable".into(),
            }));
        };
        tracing::debug!(registry, base = %base, scheme = ?challenge.as_ref().map(|c| &c.scheme), "registry ping");
        let host = Arc::new(Host {
            registry: registry.to_string(),
            base,
            http,
            limit: Arc::new(Semaphore::new(self.opts.max_concurrent_per_host.max(1))),
            auth: tokio::sync::Mutex::new(AuthState {
                challenge,
                ..AuthState::default()
            }),
        });
        if let Ok(mut m) = self.hosts.lock() {
            return Ok(m.entry(registry.to_string()).or_insert(host).clone());
        }
        Ok(host)
    }

    fn credentials(&self, registry: &str) -> Result<Option<Credentials>> {
        if let Some((r, c)) = &self.opts.credential_override {
            if r == registry {
                return Ok(Some(c.clone()));
            }
        }
        self.opts.credentials.get(registry)
    }

    /// The Authorization header for `scopes`, fetching a token when needed.
    async fn authorization(
        &self,
        host: &Host,
        scopes: &[String],
        fresh: bool,
    ) -> Result<Option<String>> {
        let mut st = host.auth.lock().await;
        let Some(ch) = st.challenge.clone() else {
            return Ok(None);
        };
        if st.creds.is_none() {
            st.creds = Some(self.credentials(&host.registry)?);
        }
        let creds = st.creds.clone().flatten();
        if ch.scheme == "basic" {
            return Ok(creds.and_then(|c| c.basic_header()));
        }
        let key = scopes.join(" ");
        if !fresh {
            if let Some((tok, until)) = st.tokens.get(&key) {
                if Instant::now() < *until {
                    return Ok(Some(format!("Bearer {tok}")));
                }
            }
        }
        let (tok, ttl) = self.fetch_token(host, &ch, scopes, creds.as_ref()).await?;
        // Refresh 30 s early so a token never expires mid-request.
        let until = Instant::now()
            + ttl
                .saturating_sub(Duration::from_secs(30))
                .max(Duration::from_secs(1));
        st.tokens.insert(key, (tok.clone(), until));
        Ok(Some(format!("Bearer {tok}")))
    }

    async fn fetch_token(
        &self,
        host: &Host,
        ch: &Challenge,
        scopes: &[String],
        creds: Option<&Credentials>,
    ) -> Result<(String, Duration)> {
        let registry = &host.registry;
        let terr = |message: String| Error::Token {
            registry: registry.clone(),
            message,
        };
        let realm = ch
            .params
            .get("realm")
            .ok_or_else(|| terr("the Bearer challenge has no realm".into()))?;
        let realm = Url::parse(realm).map_err(|e| terr(format!("bad realm: {e}")))?;
        let service = ch.params.get("service").cloned().unwrap_or_default();
        let mut attempt = 0;
        loop {
            let resp = match creds {
                Some(Credentials::IdentityToken { token, .. }) => {
                    let mut form = vec![
                        ("grant_type", "refresh_token".to_string()),
                        ("refresh_token", token.clone()),
                        ("service", service.clone()),
                        ("client_id", "mybuild".to_string()),
                        ("access_type", "offline".to_string()),
                    ];
                    if !scopes.is_empty() {
                        form.push(("scope", scopes.join(" ")));
                    }
                    let r = host.http.post(realm.clone()).form(&form).send().await;
                    match r {
                        // Token servers without the OAuth2 endpoint (they answer
                        // 404, 405 or 400 to a POST): fall back to GET.
                        Ok(r) if matches!(r.status().as_u16(), 400 | 404 | 405) => {
                            tracing::debug!(
                                "token server answered {} to the OAuth2 POST; using GET",
                                r.status()
                            );
                            self.token_get(host, &realm, &service, scopes, creds).await
                        }
                        other => other,
                    }
                }
                _ => self.token_get(host, &realm, &service, scopes, creds).await,
            };
            let resp = match resp {
                Ok(r) => r,
                Err(e) if attempt + 1 < self.opts.max_attempts => {
                    tracing::debug!("token request failed, retrying: {e}");
                    attempt += 1;
                    tokio::time::sleep(self.backoff(attempt)).await;
                    continue;
                }
                Err(e) => return Err(terr(transport(registry, &e).to_string())),
            };
            let status = resp.status();
            if retryable_status(status) && attempt + 1 < self.opts.max_attempts {
                let wait = retry_after(resp.headers()).unwrap_or(self.backoff(attempt));
                attempt += 1;
                tokio::time::sleep(wait).await;
                continue;
            }
            if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                return Err(Error::Unauthorized {
                    what: format!("token for {}", scopes.join(" ")),
                    registry: registry.clone(),
                    detail: format!(" (token server answered {status})"),
                });
            }
            if !status.is_success() {
                return Err(terr(format!("token server answered {status}")));
            }
            let body = read_capped(resp, MAX_TOKEN_RESPONSE)
                .await
                .map_err(|e| terr(transport(registry, &e).to_string()))?
                .ok_or_else(|| {
                    terr(format!(
                        "token response larger than {} KiB",
                        MAX_TOKEN_RESPONSE >> 10
                    ))
                })?;
            let v: serde_json::Value = serde_json::from_slice(&body)
                .map_err(|e| terr(format!("token response is not JSON: {e}")))?;
            let tok = v
                .get("token")
                .or_else(|| v.get("access_token"))
                .and_then(|t| t.as_str())
                .filter(|t| !t.is_empty())
                .ok_or_else(|| terr("token response has no token".into()))?;
            let ttl = v
                .get("expires_in")
                .and_then(|e| e.as_u64())
                .unwrap_or(60)
                .max(60);
            return Ok((tok.to_string(), Duration::from_secs(ttl)));
        }
    }

    async fn token_get(
        &self,
        host: &Host,
        realm: &Url,
        service: &str,
        scopes: &[String],
        creds: Option<&Credentials>,
    ) -> reqwest::Result<Response> {
        let mut url = realm.clone();
        {
            let mut q = url.query_pairs_mut();
            if !service.is_empty() {
                q.append_pair("service", service);
            }
            for s in scopes {
                q.append_pair("scope", s);
            }
        }
        let mut req = host.http.get(url);
        match creds {
            Some(Credentials::Basic { username, password }) => {
                req = req.basic_auth(username, Some(password));
            }
            // Docker's convention for a refresh token sent as a password.
            Some(Credentials::IdentityToken { token, .. }) => {
                req = req.basic_auth("<token>", Some(token));
            }
            None => {}
        }
        req.send().await
    }

    /// Shows each distinct `Warning` text once per client (one command).
    fn note_warnings(&self, host: &Host, resp: &Response) {
        for w in resp.headers().get_all("warning") {
            let Some(text) = w.to_str().ok().and_then(warning_text) else {
                continue;
            };
            let first = self
                .warned
                .lock()
                .map(|mut s| s.insert(text.clone()))
                .unwrap_or(false);
            if first {
                tracing::warn!("registry {} warns: {text}", host.registry);
            }
        }
    }

    /// Sends one request with auth, re-challenging once on 401 and retrying
    /// transient failures. The response may still carry an error status.
    #[allow(clippy::too_many_arguments)]
    async fn send(
        &self,
        host: &Host,
        method: Method,
        url: &Url,
        headers: &HeaderMap,
        body: Option<&BodyFn<'_>>,
        scopes: &[String],
        retry: bool,
    ) -> Result<Response> {
        let mut attempt = 0;
        let mut rechallenged = false;
        let mut fresh = false;
        // Credentials stay with their registry: another host or port (an upload
        // Location elsewhere) gets none, unless it challenges for the same token
        // realm and service, the audience of our Bearer token.
        let foreign = url.origin() != host.base.origin();
        let origin = url.origin().ascii_serialization();
        let mut same_audience = foreign && host.auth.lock().await.token_origins.contains(&origin);
        loop {
            let auth = if foreign && !same_audience {
                None
            } else {
                self.authorization(host, scopes, fresh).await?
            };
            fresh = false;
            let mut req = host
                .http
                .request(method.clone(), url.clone())
                .headers(headers.clone());
            if let Some(a) = &auth {
                let mut v = HeaderValue::from_str(a).map_err(|_| {
                    Error::invalid("authorization", "token is not a valid header value")
                })?;
                v.set_sensitive(true);
                req = req.header(AUTHORIZATION, v);
            }
            if let Some(b) = body {
                req = req.body(b().await?);
            }
            tracing::debug!(%method, %url, "request");
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) if retry && attempt + 1 < self.opts.max_attempts => {
                    tracing::debug!("{method} {url}: {e}; retrying");
                    attempt += 1;
                    tokio::time::sleep(self.backoff(attempt)).await;
                    continue;
                }
                Err(e) => return Err(transport(&host.registry, &e)),
            };
            self.note_warnings(host, &resp);
            let status = resp.status();
            if status == StatusCode::UNAUTHORIZED && !rechallenged {
                rechallenged = true;
                let ch = resp
                    .headers()
                    .get_all("www-authenticate")
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .flat_map(parse_challenges)
                    .find(|c| c.scheme == "bearer" || c.scheme == "basic");
                if foreign {
                    let mut st = host.auth.lock().await;
                    if ch.is_some_and(|c| same_token_audience(&c, st.challenge.as_ref())) {
                        st.token_origins.insert(origin.clone());
                        // Refused although already sent: the token may have expired.
                        fresh = same_audience;
                        same_audience = true;
                        continue;
                    }
                    tracing::debug!(%url, "another host asks for credentials; not sending ours");
                    return Ok(resp);
                }
                // An expired or revoked token: take the new challenge (if any),
                // get a fresh token and try once more.
                if let Some(ch) = ch {
                    host.auth.lock().await.challenge = Some(ch);
                }
                fresh = true;
                continue;
            }
            if retry && retryable_status(status) && attempt + 1 < self.opts.max_attempts {
                let wait = retry_after(resp.headers()).unwrap_or(self.backoff(attempt));
                tracing::debug!("{method} {url}: {status}; retrying in {wait:?}");
                attempt += 1;
                tokio::time::sleep(wait).await;
                continue;
            }
            return Ok(resp);
        }
    }

    fn url(&self, host: &Host, path: &str) -> Result<Url> {
        host.base
            .join(path)
            .map_err(|e| Error::invalid(path, e.to_string()))
    }

    fn pull_scope(repo: &str) -> Vec<String> {
        vec![format!("repository:{repo}:pull")]
    }
    fn push_scope(repo: &str) -> Vec<String> {
        vec![format!("repository:{repo}:pull,push")]
    }

    /// Checks that the configured credentials are accepted (`login`).
    pub async fn check_login(&self, registry: &str) -> Result<()> {
        let host = self.host(registry).await?;
        let url = self.url(&host, "v2/")?;
        let resp = self
            .send(&host, Method::GET, &url, &HeaderMap::new(), None, &[], true)
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
                Method::GET,
                &url,
                &h,
                None,
                &Self::pull_scope(&r.repository),
                true,
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
        self.send(&host, Method::HEAD, &url, &h, None, &scope, true)
            .await
    }

    /// The digest a reference points at, from a HEAD (GET when the registry sends none).
    pub async fn manifest_digest(&self, r: &Reference) -> Result<String> {
        let resp = self
            .head_manifest(r, r.reference(), Self::pull_scope(&r.repository))
            .await?;
        if !resp.status().is_success() {
            return Err(status_error(&format!("manifest {r}"), &r.registry, resp).await);
        }
        match resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .filter(|d| validate_digest(d).is_ok())
        {
            Some(d) => Ok(d.to_string()),
            None => Ok(self.get_manifest(r).await?.digest),
        }
    }

    /// Whether the repository has a manifest with this digest.
    pub async fn has_manifest(&self, r: &Reference, digest: &str) -> Result<bool> {
        let resp = self
            .head_manifest(r, digest, Self::push_scope(&r.repository))
            .await?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(status_error(&format!("manifest {digest}"), &r.registry, resp).await),
        }
    }

    /// Uploads manifest bytes as they are, under the reference's tag or digest.
    pub async fn put_manifest(&self, r: &Reference, m: &Manifest) -> Result<String> {
        let host = self.host(&r.registry).await?;
        let target = r.tag.as_deref().unwrap_or(&m.digest);
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
                Method::PUT,
                &url,
                &h,
                Some(&body),
                &Self::push_scope(&r.repository),
                true,
            )
            .await?;
        if !resp.status().is_success() {
            return Err(
                status_error(&format!("pushing manifest {target}"), &r.registry, resp).await,
            );
        }
        Ok(m.digest.clone())
    }

    pub async fn delete_manifest(&self, r: &Reference) -> Result<String> {
        let digest = match &r.digest {
            Some(d) => d.clone(),
            None => self.manifest_digest(r).await?,
        };
        let host = self.host(&r.registry).await?;
        let url = self.url(&host, &format!("v2/{}/manifests/{digest}", r.repository))?;
        let scopes = vec![format!("repository:{}:delete", r.repository)];
        let resp = self
            .send(
                &host,
                Method::DELETE,
                &url,
                &HeaderMap::new(),
                None,
                &scopes,
                true,
            )
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
                    Method::GET,
                    &url,
                    &HeaderMap::new(),
                    None,
                    &Self::pull_scope(&r.repository),
                    true,
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

    /// Streams a blob into `out`, verifying size and digest; a broken connection
    /// resumes with a Range request.
    pub async fn pull_blob(
        &self,
        r: &Reference,
        desc: &Descriptor,
        out: &mut (dyn std::io::Write + Send),
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<()> {
        validate_digest(&desc.digest)
            .map_err(|e| Error::invalid(format!("blob {}", desc.digest), e))?;
        let host = self.host(&r.registry).await?;
        let _permit = host.limit.clone().acquire_owned().await.ok();
        let url = self.url(&host, &format!("v2/{}/blobs/{}", r.repository, desc.digest))?;
        let what = format!("blob {}", desc.digest);
        let scopes = Self::pull_scope(&r.repository);
        let mut hasher = Sha256::new();
        let mut offset = 0u64;
        let mut attempt = 0;
        let mut idle_resumed = false;
        loop {
            let mut h = HeaderMap::new();
            if offset > 0 {
                h.insert(
                    "range",
                    HeaderValue::from_str(&format!("bytes={offset}-"))
                        .map_err(|_| Error::invalid(&what, "range"))?,
                );
            }
            let resp = self
                .send(&host, Method::GET, &url, &h, None, &scopes, true)
                .await?;
            let mut skip = match resp.status() {
                StatusCode::OK => offset,
                StatusCode::PARTIAL_CONTENT => 0,
                _ => return Err(status_error(&what, &r.registry, resp).await),
            };
            let mut stream = resp.bytes_stream();
            let mut broken = None;
            let mut watch = IdleWatch::new(self.opts.idle_timeout);
            let mut idle = false;
            loop {
                let Some(next) = watch.next(&mut stream).await else {
                    idle = true;
                    break;
                };
                let Some(chunk) = next else { break };
                let chunk = match chunk {
                    Ok(c) => {
                        watch.moved(c.len());
                        c
                    }
                    Err(e) => {
                        broken = Some(transport(&r.registry, &e));
                        break;
                    }
                };
                let mut data = &chunk[..];
                if skip > 0 {
                    let n = skip.min(data.len() as u64) as usize;
                    data = &data[n..];
                    skip -= n as u64;
                }
                if offset + data.len() as u64 > desc.size {
                    return Err(Error::SizeMismatch {
                        digest: desc.digest.clone(),
                        expected: desc.size,
                        actual: offset + data.len() as u64,
                    });
                }
                hasher.update(data);
                out.write_all(data).map_err(|e| Error::io(&what, e))?;
                offset += data.len() as u64;
                progress(offset);
            }
            if idle {
                let err = Error::Idle {
                    what: what.clone(),
                    idle: show_duration(self.opts.idle_timeout),
                    offset,
                    size: desc.size,
                };
                // Resumed once: a stuck connection may be one bad path; twice is
                // the registry.
                if idle_resumed {
                    return Err(err);
                }
                idle_resumed = true;
                tracing::info!("{err}; resuming at byte {offset}");
                continue;
            }
            if offset < desc.size {
                let err = broken.unwrap_or_else(|| Error::SizeMismatch {
                    digest: desc.digest.clone(),
                    expected: desc.size,
                    actual: offset,
                });
                if attempt + 1 < self.opts.max_attempts {
                    attempt += 1;
                    tracing::info!("{what}: {err}; resuming at byte {offset}");
                    tokio::time::sleep(self.backoff(attempt)).await;
                    continue;
                }
                return Err(err);
            }
            let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
            if actual != desc.digest {
                return Err(Error::DigestMismatch {
                    digest: desc.digest.clone(),
                    actual,
                    size: offset,
                });
            }
            return Ok(());
        }
    }

    /// A streaming reader of a blob, for registry-to-registry copies.
    pub async fn open_blob(
        &self,
        r: &Reference,
        digest: &str,
        offset: u64,
    ) -> Result<Box<dyn AsyncRead + Send + Unpin>> {
        let host = self.host(&r.registry).await?;
        let url = self.url(&host, &format!("v2/{}/blobs/{digest}", r.repository))?;
        let mut h = HeaderMap::new();
        if offset > 0 {
            h.insert(
                "range",
                HeaderValue::from_str(&format!("bytes={offset}-"))
                    .map_err(|_| Error::invalid(digest, "range"))?,
            );
        }
        let resp = self
            .send(
                &host,
                Method::GET,
                &url,
                &h,
                None,
                &Self::pull_scope(&r.repository),
                true,
            )
            .await?;
        let skip = match resp.status() {
            StatusCode::OK => offset,
            StatusCode::PARTIAL_CONTENT => 0,
            _ => return Err(status_error(&format!("blob {digest}"), &r.registry, resp).await),
        };
        let what = format!("blob {digest}");
        let idle = self.opts.idle_timeout;
        let stream = futures_util::stream::unfold(
            (Box::pin(resp.bytes_stream()), IdleWatch::new(idle), false),
            move |(mut stream, mut watch, done)| {
                let what = what.clone();
                async move {
                    if done {
                        return None;
                    }
                    match watch.next(&mut stream).await {
                        None => {
                            let e = Error::Idle {
                                what,
                                idle: show_duration(watch.timeout),
                                offset: 0,
                                size: 0,
                            };
                            let e =
                                std::io::Error::new(std::io::ErrorKind::TimedOut, e.to_string());
                            Some((Err(e), (stream, watch, true)))
                        }
                        Some(None) => None,
                        Some(Some(c)) => {
                            if let Ok(b) = &c {
                                watch.moved(b.len());
                            }
                            Some((c.map_err(std::io::Error::other), (stream, watch, false)))
                        }
                    }
                }
            },
        );
        let mut reader = tokio_util::io::StreamReader::new(Box::pin(stream));
        if skip > 0 {
            tokio::io::copy(&mut (&mut reader).take(skip), &mut tokio::io::sink())
                .await
                .map_err(|e| Error::io(format!("blob {digest}"), e))?;
        }
        Ok(Box::new(reader))
    }

    pub async fn has_blob(&self, r: &Reference, desc: &Descriptor) -> Result<bool> {
        let host = self.host(&r.registry).await?;
        let url = self.url(&host, &format!("v2/{}/blobs/{}", r.repository, desc.digest))?;
        let resp = self
            .send(
                &host,
                Method::HEAD,
                &url,
                &HeaderMap::new(),
                None,
                &Self::push_scope(&r.repository),
                true,
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

    /// Makes sure the repository has the blob: skipped when present, mounted from
    /// one of `mount_from` (same registry) when allowed, else uploaded.
    pub async fn push_blob(
        &self,
        r: &Reference,
        desc: &Descriptor,
        source: &dyn BlobSource,
        mount_from: &[String],
    ) -> Result<PushOutcome> {
        validate_digest(&desc.digest)
            .map_err(|e| Error::invalid(format!("blob {}", desc.digest), e))?;
        let host = self.host(&r.registry).await?;
        let _permit = host.limit.clone().acquire_owned().await.ok();
        if self.has_blob(r, desc).await? {
            return Ok(PushOutcome::Exists);
        }
        let what = format!("pushing blob {}", desc.digest);
        let mut session = None;
        for from in mount_from.iter().filter(|f| **f != r.repository).take(3) {
            let mut url = self.url(&host, &format!("v2/{}/blobs/uploads/", r.repository))?;
            url.query_pairs_mut()
                .append_pair("mount", &desc.digest)
                .append_pair("from", from);
            let mut scopes = Self::push_scope(&r.repository);
            scopes.push(format!("repository:{from}:pull"));
            let resp = match self
                .send(
                    &host,
                    Method::POST,
                    &url,
                    &zero_length(),
                    Some(&empty_body),
                    &scopes,
                    true,
                )
                .await
            {
                Ok(r) => r,
                // A token refused for the source repository: upload instead.
                Err(Error::Unauthorized { .. } | Error::Token { .. }) => continue,
                Err(e) => return Err(e),
            };
            match resp.status() {
                StatusCode::CREATED => return Ok(PushOutcome::Mounted { from: from.clone() }),
                StatusCode::ACCEPTED => {
                    session = Some(location(&url, &resp)?);
                    break;
                }
                s => tracing::debug!("mount from {from} answered {s}; uploading instead"),
            }
        }
        let mut tries = 0;
        loop {
            let opened = match session.take() {
                Some(s) => s,
                None => {
                    let url = self.url(&host, &format!("v2/{}/blobs/uploads/", r.repository))?;
                    let resp = self
                        .send(
                            &host,
                            Method::POST,
                            &url,
                            &zero_length(),
                            Some(&empty_body),
                            &Self::push_scope(&r.repository),
                            true,
                        )
                        .await?;
                    if resp.status() != StatusCode::ACCEPTED {
                        return Err(status_error(&what, &r.registry, resp).await);
                    }
                    location(&url, &resp)?
                }
            };
            let id = self.upload_opened(&host, &r.repository, &opened.0);
            let result = if desc.size > self.opts.chunk_threshold {
                self.upload_chunked(&host, r, desc, source, opened, id)
                    .await
            } else {
                self.upload_monolithic(&host, r, desc, source, opened.0)
                    .await
                    .map(|_| 1)
            };
            if result.is_ok() {
                self.upload_closed(id);
            } else {
                self.cancel_upload(id).await;
            }
            match result {
                Ok(chunks) => return Ok(PushOutcome::Uploaded { chunks }),
                // Digest problems are the data's fault; retrying will not help.
                Err(e @ Error::Status { status: 400, .. }) => return Err(e),
                Err(e) if tries < 1 => {
                    tracing::info!("{what}: {e}; starting a new upload");
                    tries += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Runs an upload request, failing with [`Error::Idle`] when its body moves less
    /// than [`IDLE_MIN_BYTES`] in an idle window while it is being sent. The wait for
    /// the answer once the body is out is left to the read timeout: a registry
    /// may take a while to store a large blob.
    async fn watch_body<T>(
        &self,
        request: impl std::future::Future<Output = Result<T>>,
        flow: &BodyFlow,
        what: &str,
    ) -> Result<T> {
        let idle = self.opts.idle_timeout;
        let watchdog = async {
            let tick = (idle / 8).max(Duration::from_millis(20));
            let snapshot = || {
                (
                    flow.starts.load(Ordering::Relaxed),
                    flow.moved.load(Ordering::Relaxed),
                )
            };
            // The window restarts with each body and each 1 KiB it moves.
            let (mut base, mut since) = (snapshot(), Instant::now());
            loop {
                tokio::time::sleep(tick).await;
                let now = snapshot();
                if !flow.sending.load(Ordering::Relaxed)
                    || now.0 != base.0
                    || now.1 - base.1 >= IDLE_MIN_BYTES
                {
                    (base, since) = (now, Instant::now());
                } else if since.elapsed() >= idle {
                    return;
                }
            }
        };
        tokio::select! {
            r = request => r,
            () = watchdog => Err(Error::Idle {
                what: what.to_string(),
                idle: show_duration(idle),
                offset: 0,
                size: 0,
            }),
        }
    }

    /// Records an upload session the registry opened; returns its id.
    fn upload_opened(&self, host: &Arc<Host>, repository: &str, url: &Url) -> u64 {
        let id = self.next_upload.fetch_add(1, Ordering::Relaxed);
        let open = OpenUpload {
            host: host.clone(),
            repository: repository.to_string(),
            url: url.clone(),
        };
        if let Ok(mut m) = self.uploads.lock() {
            m.insert(id, open);
        }
        id
    }

    fn upload_moved(&self, id: u64, url: &Url) {
        if let Some(u) = self
            .uploads
            .lock()
            .ok()
            .as_mut()
            .and_then(|m| m.get_mut(&id))
        {
            u.url = url.clone();
        }
    }

    /// The registry completed the upload: nothing left to cancel.
    fn upload_closed(&self, id: u64) {
        if let Ok(mut m) = self.uploads.lock() {
            m.remove(&id);
        }
    }

    /// Cancels one session. The entry goes only after the DELETE, so a drop
    /// mid-way leaves it for [`Client::cancel_open_uploads`].
    async fn cancel_upload(&self, id: u64) {
        let open = self.uploads.lock().ok().and_then(|m| m.get(&id).cloned());
        if let Some(open) = open {
            if tokio::time::timeout(CANCEL_WITHIN, self.send_cancel(&open))
                .await
                .is_err()
            {
                tracing::debug!(url = %open.url, "cancelling the upload: no answer");
            }
        }
        self.upload_closed(id);
    }

    /// `DELETE <location>` (the distribution spec's "Canceling an upload").
    /// Best effort, logged only: the caller's own error, if any, is what matters.
    async fn send_cancel(&self, open: &OpenUpload) {
        if self.delete_upload(open, &open.url).await {
            return;
        }
        // A dropped PUT or PATCH may have left bytes that the state in our URL
        // does not count, and distribution refuses a DELETE with a stale state.
        // Its status answer (distribution 3 checks no offset there) carries
        // the current Location.
        let status = self
            .send(
                &open.host,
                Method::GET,
                &open.url,
                &HeaderMap::new(),
                None,
                &Self::push_scope(&open.repository),
                false,
            )
            .await;
        let fresh = status
            .ok()
            .filter(|r| r.status().is_success())
            .and_then(|r| location(&open.url, &r).ok());
        if let Some((url, _)) = fresh {
            self.delete_upload(open, &url).await;
        }
    }

    /// One DELETE of an upload URL; whether the registry accepted it.
    async fn delete_upload(&self, open: &OpenUpload, url: &Url) -> bool {
        let sent = self
            .send(
                &open.host,
                Method::DELETE,
                url,
                &HeaderMap::new(),
                None,
                &Self::push_scope(&open.repository),
                false,
            )
            .await;
        match sent {
            Ok(resp) => {
                tracing::debug!(%url, status = %resp.status(), "cancelling the upload");
                resp.status().is_success()
            }
            Err(e) => {
                tracing::debug!(%url, "cancelling the upload: {e}");
                false
            }
        }
    }

    /// Cancels every upload session this client left open: those of uploads
    /// whose futures were dropped. Call it once no upload of this client runs
    /// (after an interrupt or a failed push); gives up after two seconds.
    pub async fn cancel_open_uploads(&self) {
        let open: Vec<OpenUpload> = match self.uploads.lock() {
            Ok(mut m) => m.drain().map(|(_, u)| u).collect(),
            Err(_) => return,
        };
        if open.is_empty() {
            return;
        }
        let all = futures_util::future::join_all(open.iter().map(|u| self.send_cancel(u)));
        if tokio::time::timeout(CANCEL_WITHIN, all).await.is_err() {
            tracing::debug!("cancelling {} upload sessions: gave up", open.len());
        }
    }

    async fn upload_monolithic(
        &self,
        host: &Host,
        r: &Reference,
        desc: &Descriptor,
        source: &dyn BlobSource,
        mut loc: Url,
    ) -> Result<()> {
        loc.query_pairs_mut().append_pair("digest", &desc.digest);
        let mut h = HeaderMap::new();
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        h.insert(CONTENT_LENGTH, HeaderValue::from(desc.size));
        let size = desc.size;
        let flow = Arc::new(BodyFlow::default());
        let body_flow = flow.clone();
        let body = move || -> BoxFuture<'_, Result<reqwest::Body>> {
            let flow = body_flow.clone();
            Box::pin(async move { reader_body(source, 0, size, flow).await })
        };
        let what = format!("pushing blob {}", desc.digest);
        let resp = self
            .watch_body(
                self.send(
                    host,
                    Method::PUT,
                    &loc,
                    &h,
                    Some(&body),
                    &Self::push_scope(&r.repository),
                    true,
                ),
                &flow,
                &what,
            )
            .await?;
        if resp.status() != StatusCode::CREATED {
            return Err(
                status_error(&format!("pushing blob {}", desc.digest), &r.registry, resp).await,
            );
        }
        Ok(())
    }

    async fn upload_chunked(
        &self,
        host: &Host,
        r: &Reference,
        desc: &Descriptor,
        source: &dyn BlobSource,
        (mut loc, min_chunk): (Url, u64),
        id: u64,
    ) -> Result<u32> {
        let what = format!("pushing blob {}", desc.digest);
        let scopes = Self::push_scope(&r.repository);
        let chunk = self.opts.chunk_size.max(min_chunk).max(1);
        let mut offset = 0u64;
        let mut chunks = 0u32;
        let mut failures = 0;
        while offset < desc.size {
            let len = chunk.min(desc.size - offset);
            let mut h = HeaderMap::new();
            h.insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            h.insert(CONTENT_LENGTH, HeaderValue::from(len));
            h.insert(
                "content-range",
                HeaderValue::from_str(&format!("{offset}-{}", offset + len - 1))
                    .map_err(|_| Error::invalid(&what, "content-range"))?,
            );
            let start = offset;
            let flow = Arc::new(BodyFlow::default());
            let body_flow = flow.clone();
            let body = move || -> BoxFuture<'_, Result<reqwest::Body>> {
                let flow = body_flow.clone();
                Box::pin(async move { reader_body(source, start, len, flow).await })
            };
            let sent = self
                .watch_body(
                    self.send(host, Method::PATCH, &loc, &h, Some(&body), &scopes, false),
                    &flow,
                    &what,
                )
                .await;
            match sent {
                // The upload as a whole is retried once by `push_blob`.
                Err(e @ Error::Idle { .. }) => return Err(e),
                Ok(resp)
                    if matches!(
                        resp.status(),
                        StatusCode::ACCEPTED | StatusCode::CREATED | StatusCode::NO_CONTENT
                    ) =>
                {
                    loc = location(&loc, &resp)?.0;
                    self.upload_moved(id, &loc);
                    offset = range_end(resp.headers()).unwrap_or(offset + len);
                    chunks += 1;
                    continue;
                }
                Ok(resp)
                    if !retryable_status(resp.status())
                        && resp.status() != StatusCode::RANGE_NOT_SATISFIABLE =>
                {
                    return Err(status_error(&what, &r.registry, resp).await);
                }
                Ok(resp) => tracing::info!("{what}: chunk at {offset} answered {}", resp.status()),
                Err(e) => tracing::info!("{what}: chunk at {offset}: {e}"),
            }
            failures += 1;
            if failures >= self.opts.max_attempts {
                return Err(Error::Transport {
                    registry: r.registry.clone(),
                    message: format!("{what}: chunk at byte {offset} failed {failures} times"),
                });
            }
            tokio::time::sleep(self.backoff(failures)).await;
            // Ask the registry how much it has, and resume from there.
            let resp = self
                .send(
                    host,
                    Method::GET,
                    &loc,
                    &HeaderMap::new(),
                    None,
                    &scopes,
                    true,
                )
                .await?;
            if resp.status() != StatusCode::NO_CONTENT && !resp.status().is_success() {
                return Err(status_error(&what, &r.registry, resp).await);
            }
            loc = location(&loc, &resp)?.0;
            self.upload_moved(id, &loc);
            // `0-0` means zero or one byte (distribution's ambiguity): start over.
            offset = match range_end(resp.headers()) {
                Some(n) if n > 1 => n,
                _ => {
                    return Err(Error::Transport {
                        registry: r.registry.clone(),
                        message: format!("{what}: the upload has to start over"),
                    })
                }
            };
        }
        let mut done = loc.clone();
        done.query_pairs_mut().append_pair("digest", &desc.digest);
        let resp = self
            .send(
                host,
                Method::PUT,
                &done,
                &zero_length(),
                Some(&empty_body),
                &scopes,
                true,
            )
            .await?;
        if resp.status() != StatusCode::CREATED {
            return Err(status_error(&what, &r.registry, resp).await);
        }
        Ok(chunks)
    }
}

/// Whether a foreign host's challenge asks for a token from the realm and for the
/// service that issued ours (Bearer only: Basic credentials name a registry).
fn same_token_audience(theirs: &Challenge, ours: Option<&Challenge>) -> bool {
    let Some(ours) = ours else {
        return false;
    };
    theirs.scheme == "bearer"
        && ours.scheme == "bearer"
        && theirs.params.contains_key("realm")
        && theirs.params.get("realm") == ours.params.get("realm")
        && theirs.params.get("service") == ours.params.get("service")
}

fn empty_body() -> BoxFuture<'static, Result<reqwest::Body>> {
    Box::pin(async { Ok(reqwest::Body::from(Vec::new())) })
}

fn zero_length() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(CONTENT_LENGTH, HeaderValue::from(0u64));
    h
}

async fn reader_body(
    source: &dyn BlobSource,
    offset: u64,
    len: u64,
    flow: Arc<BodyFlow>,
) -> Result<reqwest::Body> {
    let reader = source
        .open(offset)
        .await
        .map_err(|e| Error::io("opening blob for upload", e))?;
    let generation = flow.starts.fetch_add(1, Ordering::Relaxed) + 1;
    flow.sending.store(true, Ordering::Relaxed);
    let stream = tokio_util::io::ReaderStream::with_capacity(reader.take(len), 256 << 10);
    // Counts what the connection takes; hyper stops polling a body the peer
    // does not read.
    let stream = CountedBody {
        inner: stream,
        flow,
        generation,
    };
    Ok(reqwest::Body::wrap_stream(stream))
}

/// How far the current upload body has been taken by the connection.
#[derive(Default)]
struct BodyFlow {
    /// Bytes handed to the connection, over every attempt.
    moved: AtomicU64,
    /// A body is being sent and has not ended.
    sending: std::sync::atomic::AtomicBool,
    /// Bodies started (a retry starts another).
    starts: AtomicU64,
}

struct CountedBody<S> {
    inner: S,
    flow: Arc<BodyFlow>,
    /// Which of the flow's bodies this is: a late drop of an earlier one must not
    /// mark a newer one done.
    generation: u64,
}

impl<S> CountedBody<S> {
    fn done(&self) {
        if self.flow.starts.load(Ordering::Relaxed) == self.generation {
            self.flow.sending.store(false, Ordering::Relaxed);
        }
    }
}

impl<S> Drop for CountedBody<S> {
    /// A body dropped unfinished (an answer came early, or the request failed) is
    /// not being sent any more.
    fn drop(&mut self) {
        self.done();
    }
}

impl<S> futures_util::Stream for CountedBody<S>
where
    S: futures_util::Stream<Item = std::io::Result<tokio_util::bytes::Bytes>> + Unpin,
{
    type Item = std::io::Result<tokio_util::bytes::Bytes>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_next(cx);
        match &polled {
            std::task::Poll::Ready(Some(Ok(b))) => {
                self.flow.moved.fetch_add(b.len() as u64, Ordering::Relaxed);
            }
            std::task::Poll::Ready(_) => self.done(),
            std::task::Poll::Pending => {}
        }
        polled
    }
}

/// The upload Location resolved against the request URL (query kept), and the
/// registry's minimum chunk size.
fn location(req: &Url, resp: &Response) -> Result<(Url, u64)> {
    let loc = resp
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| Error::invalid("upload", "the registry sent no Location"))?;
    let url = req
        .join(loc)
        .map_err(|e| Error::invalid("upload Location", e.to_string()))?;
    let min = resp
        .headers()
        .get("oci-chunk-min-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    Ok((url, min))
}

/// `Range: 0-1234` (inclusive) → next offset 1235.
fn range_end(h: &HeaderMap) -> Option<u64> {
    let v = h.get("range")?.to_str().ok()?;
    let v = v.trim().trim_start_matches("bytes=");
    let (_, end) = v.split_once('-')?;
    end.trim().parse::<u64>().ok().map(|e| e + 1)
}

/// The next page's URL; `None` when it leaves the registry (our token would go along).
fn next_page(base: &Url, current: &Url, link: &str) -> Option<Url> {
    let next = current.join(link).ok()?;
    (next.origin() == base.origin()).then_some(next)
}

/// The text of an RFC 7234 `Warning` value (`299 - "text" [date]`): the first
/// quoted string, unescaped; a value without quotes is taken whole.
fn warning_text(value: &str) -> Option<String> {
    let v = value.trim();
    let text = match v.split_once('"') {
        Some((_, rest)) => {
            let mut out = String::new();
            let mut chars = rest.chars();
            while let Some(c) = chars.next() {
                match c {
                    '"' => break,
                    '\\' => out.extend(chars.next()),
                    c => out.push(c),
                }
            }
            out
        }
        None => v.to_string(),
    };
    let text = text.trim().to_string();
    (!text.is_empty()).then_some(text)
}

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

/// Turns an error response into a typed error with the registry's own code and
/// message (a HEAD has none, so its status alone is explained).
/// A token response: a JWT and a few fields, never megabytes.
const MAX_TOKEN_RESPONSE: u64 = 1 << 20;
/// Pages of a tag list followed before the registry is judged endless.
const MAX_TAG_PAGES: usize = 10_000;
/// Tags collected across pages.
const MAX_TAGS: usize = 1_000_000;

/// The body, or `None` once it would pass `limit` bytes (read no further).
async fn read_capped(resp: Response, limit: u64) -> reqwest::Result<Option<Vec<u8>>> {
    if resp.content_length().is_some_and(|l| l > limit) {
        return Ok(None);
    }
    let mut body = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        if body.len() as u64 + chunk.len() as u64 > limit {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}

async fn status_error(what: &str, registry: &str, resp: Response) -> Error {
    let status = resp.status();
    let mut body = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(Ok(c)) = stream.next().await {
        body.extend_from_slice(&c);
        if body.len() > 16 << 10 {
            break;
        }
    }
    let detail = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            let errs = v.get("errors")?.as_array()?;
            let parts: Vec<String> = errs
                .iter()
                .map(|e| {
                    let code = e.get("code").and_then(|c| c.as_str()).unwrap_or("");
                    let msg = e.get("message").and_then(|c| c.as_str()).unwrap_or("");
                    format!("{code}: {msg}")
                })
                .collect();
            Some(format!(" ({})", parts.join("; ")))
        })
        .unwrap_or_default();
    match status {
        StatusCode::UNAUTHORIZED => Error::Unauthorized {
            what: what.to_string(),
            registry: registry.to_string(),
            detail,
        },
        StatusCode::FORBIDDEN => Error::Denied {
            what: what.to_string(),
            detail,
        },
        StatusCode::NOT_FOUND => Error::NotFound {
            what: format!("{what}{detail}"),
        },
        s => Error::Status {
            what: what.to_string(),
            status: s.as_u16(),
            detail: if detail.is_empty() {
                format!(" {}", s.canonical_reason().unwrap_or(""))
            } else {
                detail
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_and_ranges() {
        assert_eq!(
            parse_next_link(r#"</v2/a/tags/list?last=b&n=2>; rel="next""#).as_deref(),
            Some("/v2/a/tags/list?last=b&n=2")
        );
        let mut h = HeaderMap::new();
        h.insert("range", HeaderValue::from_static("0-1023"));
        assert_eq!(range_end(&h), Some(1024));
        assert!(is_loopback("127.0.0.1:5000"));
        assert!(is_loopback("localhost"));
        assert!(!is_loopback("example.com:5000"));
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
        assert_eq!(show_duration(Duration::from_secs(60)), "60s");
        assert_eq!(show_duration(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn warning_header_text() {
        assert_eq!(
            warning_text(r#"299 - "this image is deprecated""#).as_deref(),
            Some("this image is deprecated")
        );
        assert_eq!(
            warning_text(r#"299 registry.example "say \"hi\"" "Sat, 01 Jan 2000 00:00:00 GMT""#)
                .as_deref(),
            Some(r#"say "hi""#)
        );
        assert_eq!(warning_text("  "), None);
    }
}
