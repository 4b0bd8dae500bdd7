//! Plain HTTP GETs (ADD's URLs) on the registry client's HTTP stack: the same
//! reqwest and rustls, certs.d CAs and client certificates for the URL's host,
//! `--insecure` hosts, and the environment's proxies (`HTTPS_PROXY`,
//! `HTTP_PROXY`, `NO_PROXY`). Blocking, for callers without a runtime; bodies
//! are read through [`std::io::Read`].

use std::collections::HashMap;
use std::io::Read;
use std::sync::Mutex;
use std::time::Duration;

use crate::client::ClientOptions;
use crate::error::{Error, Result};
use crate::transport::http::{describe, CertsD};

/// A GET client with per-host TLS settings.
pub struct Fetcher {
    user_agent: String,
    certs_dirs: Vec<std::path::PathBuf>,
    insecure: Vec<String>,
    connect_timeout: Duration,
    idle_timeout: Duration,
    clients: Mutex<HashMap<String, reqwest::blocking::Client>>,
}

/// An answer, whatever its status.
pub struct Fetched {
    pub status: u16,
    /// Where the body came from, after redirects.
    pub url: String,
    headers: reqwest::header::HeaderMap,
    pub body: Box<dyn Read + Send>,
}

impl Fetched {
    /// A header's value, when present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// How long a connection may take to open.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

impl Fetcher {
    /// A fetcher trusting what the registry client trusts; a response head or a
    /// body read that waits longer than `opts.idle_timeout` fails.
    pub fn new(opts: &ClientOptions) -> Fetcher {
        Fetcher {
            user_agent: opts.user_agent.clone(),
            certs_dirs: opts.certs_dirs.clone(),
            insecure: opts.insecure_registries.clone(),
            connect_timeout: CONNECT_TIMEOUT,
            idle_timeout: opts.idle_timeout,
            clients: Mutex::new(HashMap::new()),
        }
    }

    fn client(&self, host: &str) -> Result<reqwest::blocking::Client> {
        if let Some(c) = self.clients.lock().ok().and_then(|m| m.get(host).cloned()) {
            return Ok(c);
        }
        let certs = CertsD::load(&self.certs_dirs, host)?;
        let mut b = reqwest::blocking::Client::builder()
            .user_agent(self.user_agent.clone())
            .connect_timeout(self.connect_timeout)
            .timeout(self.idle_timeout);
        for c in certs.roots {
            b = b.add_root_certificate(c);
        }
        if let Some(id) = certs.identity {
            b = b.identity(id);
        }
        if self.insecure.iter().any(|h| h == host) {
            b = b.danger_accept_invalid_certs(true);
        }
        let c = b.build().map_err(|e| Error::Transport {
            registry: host.to_string(),
            message: describe(&e),
        })?;
        if let Ok(mut m) = self.clients.lock() {
            m.insert(host.to_string(), c.clone());
        }
        Ok(c)
    }

    /// GETs `url` with `headers` and, when given, Basic credentials, following
    /// redirects (credentials are dropped when one leaves the host). Must not be
    /// called from async code.
    pub fn get(
        &self,
        url: &str,
        basic_auth: Option<(&str, &str)>,
        headers: &[(&str, &str)],
    ) -> Result<Fetched> {
        let parsed =
            url::Url::parse(url).map_err(|e| Error::invalid(url.to_string(), e.to_string()))?;
        let host = match (parsed.host_str(), parsed.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            (None, _) => return Err(Error::invalid(url.to_string(), "the URL has no host")),
        };
        let client = self.client(&host)?;
        let mut req = client.get(parsed);
        if let Some((user, password)) = basic_auth {
            req = req.basic_auth(user, Some(password));
        }
        for (k, v) in headers {
            let mut value = reqwest::header::HeaderValue::from_str(v)
                .map_err(|_| Error::invalid(format!("header {k}"), "not a valid header value"))?;
            if k.eq_ignore_ascii_case("authorization") {
                value.set_sensitive(true);
            }
            req = req.header(*k, value);
        }
        let resp = req.send().map_err(|e| Error::Transport {
            registry: host.clone(),
            message: describe(&e),
        })?;
        Ok(Fetched {
            status: resp.status().as_u16(),
            url: resp.url().to_string(),
            headers: resp.headers().clone(),
            body: Box::new(resp),
        })
    }
}
