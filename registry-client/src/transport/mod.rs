//! One `send` for every registry request, built of small layers:
//!
//! ```text
//! send ─ retry (backoff with jitter, Retry-After) ─ auth (challenge, tokens,
//!        same-origin rule) ─ warnings (Warning header, once) ─ http (reqwest,
//!        certs.d, proxies)
//! ```
//!
//! A response is returned whatever its status; the attempts it took ride in its
//! extensions so [`status_error`] can name them.

mod auth;
pub mod http;
pub mod retry;
mod warnings;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use reqwest::header::HeaderMap;
use reqwest::{Method, Response, StatusCode};
use tokio::sync::Semaphore;
use url::Url;

use crate::client::ClientOptions;
use crate::error::{redact_url, Error, ErrorResponse, RegistryError, Result};
use crate::reference::registry_api_host;
use auth::AuthState;
use retry::{retry_after, retryable_status, Attempt, Policy};

/// Makes a request body; called again for each try.
pub type BodyFn<'a> = dyn Fn() -> BoxFuture<'a, Result<reqwest::Body>> + Send + Sync + 'a;

/// One registry host: its API base (scheme picked by the ping), HTTP client,
/// concurrency limit and auth state.
pub struct Host {
    pub registry: String,
    pub base: Url,
    http: reqwest::Client,
    pub limit: Arc<Semaphore>,
    auth: tokio::sync::Mutex<AuthState>,
}

impl Host {
    /// `path` (such as `v2/a/manifests/1`) on this host.
    pub fn url(&self, path: &str) -> Result<Url> {
        self.base
            .join(path)
            .map_err(|e| Error::invalid(path, e.to_string()))
    }
}

/// One request as the layers see it.
pub struct Request<'a, 'b> {
    pub method: Method,
    pub url: &'a Url,
    pub headers: &'a HeaderMap,
    pub body: Option<&'a BodyFn<'b>>,
    /// The token scopes it needs (`repository:a/b:pull`).
    pub scopes: &'a [String],
    /// Transient failures are tried again (off for requests whose failure the
    /// caller resumes itself).
    pub retry: bool,
}

static NO_HEADERS: std::sync::LazyLock<HeaderMap> = std::sync::LazyLock::new(HeaderMap::new);

impl<'a> Request<'a, 'static> {
    pub fn new(method: Method, url: &'a Url, scopes: &'a [String]) -> Request<'a, 'static> {
        Request {
            method,
            url,
            headers: &NO_HEADERS,
            body: None,
            scopes,
            retry: true,
        }
    }
}

impl<'a, 'b> Request<'a, 'b> {
    pub fn headers(mut self, headers: &'a HeaderMap) -> Request<'a, 'b> {
        self.headers = headers;
        self
    }
    pub fn body<'c>(self, body: &'a BodyFn<'c>) -> Request<'a, 'c> {
        Request {
            method: self.method,
            url: self.url,
            headers: self.headers,
            body: Some(body),
            scopes: self.scopes,
            retry: self.retry,
        }
    }
    pub fn no_retry(mut self) -> Request<'a, 'b> {
        self.retry = false;
        self
    }
}

/// Tries a response took, kept in its extensions.
#[derive(Clone, Copy)]
struct Attempts(u32);

pub struct Transport {
    pub opts: ClientOptions,
    hosts: Mutex<HashMap<String, Arc<Host>>>,
    warnings: warnings::Warnings,
    pub policy: Policy,
}

impl Transport {
    pub fn new(opts: ClientOptions) -> Transport {
        let policy = Policy {
            max_attempts: opts.max_attempts.max(1),
            base: opts.retry_base,
        };
        Transport {
            opts,
            hosts: Mutex::new(HashMap::new()),
            warnings: warnings::Warnings::default(),
            policy,
        }
    }

    /// Sends `req` through the layers. The response may carry an error status;
    /// `Err` is a failure to get one (after the retries) or to authenticate.
    pub async fn send(&self, host: &Host, req: &Request<'_, '_>) -> Result<Response> {
        let tried = self
            .policy
            .run(req.retry, |_| async {
                match self.send_authenticated(host, req).await {
                    Ok(Ok(resp)) if retryable_status(resp.status()) => Attempt::Again {
                        after: retry_after(resp.headers()),
                        value: Ok(Ok(resp)),
                    },
                    Ok(Ok(resp)) => Attempt::Done(Ok(Ok(resp))),
                    Ok(Err(e)) => {
                        tracing::debug!("{} {}: {e}", req.method, req.url);
                        Attempt::Again {
                            after: None,
                            value: Ok(Err(e)),
                        }
                    }
                    Err(e) => Attempt::Done(Err(e)),
                }
            })
            .await;
        match tried.value? {
            Ok(mut resp) => {
                resp.extensions_mut().insert(Attempts(tried.attempts));
                Ok(resp)
            }
            Err(e) => {
                let mut message = http::describe(&e);
                if tried.attempts > 1 {
                    message.push_str(&format!(" (after {} attempts)", tried.attempts));
                }
                Err(Error::Transport {
                    registry: host.registry.clone(),
                    message,
                })
            }
        }
    }

    /// The HTTP layer with the warnings layer on top.
    async fn send_http(
        &self,
        host: &Host,
        req: &Request<'_, '_>,
        headers: HeaderMap,
        body: Option<reqwest::Body>,
    ) -> reqwest::Result<Response> {
        let mut r = host
            .http
            .request(req.method.clone(), req.url.clone())
            .headers(headers);
        if let Some(b) = body {
            r = r.body(b);
        }
        tracing::debug!(method = %req.method, url = %req.url, "request");
        let resp = r.send().await?;
        self.warnings.note(&host.registry, &resp);
        Ok(resp)
    }

    fn insecure(&self, registry: &str) -> bool {
        self.opts
            .insecure_registries
            .iter()
            .any(|r| r == registry || r == registry_api_host(registry))
    }

    fn build_http(&self, registry: &str) -> Result<reqwest::Client> {
        http::build(
            &http::HttpConfig {
                user_agent: &self.opts.user_agent,
                certs_dirs: &self.opts.certs_dirs,
                certs_for: Some(registry_api_host(registry)),
                insecure: self.insecure(registry),
                connect_timeout: Duration::from_secs(30),
                read_timeout: Duration::from_secs(120).max(self.opts.idle_timeout * 2),
                pool_max_idle_per_host: self.opts.max_concurrent_per_host.max(1) * 2,
            },
            registry,
        )
    }

    /// The host entry, created on first use with a ping of `/v2/` that picks the
    /// scheme and learns the auth challenge.
    pub async fn host(&self, registry: &str) -> Result<Arc<Host>> {
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
        let plain_ok = self.insecure(registry) || http::is_loopback(api);
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
            let (http, url) = (&http, &url);
            let tried = self
                .policy
                .run(true, move |_| async move {
                    match http.get(url.clone()).send().await {
                        Ok(r) if retryable_status(r.status()) => Attempt::Again {
                            after: retry_after(r.headers()),
                            value: Ok(r),
                        },
                        Ok(r) => Attempt::Done(Ok(r)),
                        // A TLS failure against a plain-HTTP registry: try the next scheme.
                        Err(e) if e.is_connect() && scheme == "https" && plain_ok => {
                            Attempt::Done(Err((true, e)))
                        }
                        Err(e)
                            if (e.is_connect() || e.is_timeout() || e.is_request())
                                && !http::is_dns_failure(&e) =>
                        {
                            Attempt::Again {
                                after: None,
                                value: Err((false, e)),
                            }
                        }
                        Err(e) => Attempt::Done(Err((false, e))),
                    }
                })
                .await;
            match tried.value {
                // Not a registry (e.g. an HTTPS server answering plain HTTP with 400).
                Ok(resp)
                    if !resp.status().is_success()
                        && resp.status() != StatusCode::UNAUTHORIZED
                        && !retryable_status(resp.status()) =>
                {
                    last_err.get_or_insert_with(|| Error::Transport {
                        registry: registry.to_string(),
                        message: format!("{url} answered {}; is this a registry?", resp.status()),
                    });
                }
                Ok(resp) => {
                    found = Some((base, auth::challenge_of(&resp)));
                    break;
                }
                Err((true, e)) => last_err = Some(http::transport(registry, &e)),
                Err((false, e)) => {
                    last_err.get_or_insert_with(|| http::transport(registry, &e));
                }
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
            auth: tokio::sync::Mutex::new(AuthState::new(challenge)),
        });
        if let Ok(mut m) = self.hosts.lock() {
            return Ok(m.entry(registry.to_string()).or_insert(host).clone());
        }
        Ok(host)
    }
}

/// The body, or `None` once it would pass `limit` bytes (read no further).
pub async fn read_capped(resp: Response, limit: u64) -> reqwest::Result<Option<Vec<u8>>> {
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

/// Turns an error response into a typed error carrying the registry's own error
/// list, the URL, the status and the tries (a HEAD has no body, so its status
/// alone is explained).
pub async fn status_error(what: &str, registry: &str, resp: Response) -> Error {
    let status = resp.status();
    let url = redact_url(resp.url());
    let attempts = resp.extensions().get::<Attempts>().map_or(1, |a| a.0);
    let mut body = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(Ok(c)) = stream.next().await {
        body.extend_from_slice(&c);
        if body.len() > 16 << 10 {
            break;
        }
    }
    #[derive(serde::Deserialize)]
    struct Body {
        errors: Vec<RegistryError>,
    }
    let errors = serde_json::from_slice::<Body>(&body).map(|b| b.errors).ok();
    let detail = errors
        .as_ref()
        .map(|errs| {
            let parts: Vec<String> = errs
                .iter()
                .map(|e| format!("{}: {}", e.code, e.message))
                .collect();
            format!(" ({})", parts.join("; "))
        })
        .unwrap_or_default();
    let response = Box::new(ErrorResponse {
        url,
        status: status.as_u16(),
        errors: errors.unwrap_or_default(),
        attempts,
    });
    match status {
        StatusCode::UNAUTHORIZED => Error::Unauthorized {
            what: what.to_string(),
            registry: registry.to_string(),
            detail,
            response,
        },
        StatusCode::FORBIDDEN => Error::Denied {
            what: what.to_string(),
            detail,
            response,
        },
        StatusCode::NOT_FOUND => Error::NotFound {
            what: format!("{what}{detail}"),
            response,
        },
        s => Error::Status {
            what: what.to_string(),
            status: s.as_u16(),
            detail: if detail.is_empty() {
                format!(" {}", s.canonical_reason().unwrap_or(""))
            } else {
                detail
            },
            response,
        },
    }
}
