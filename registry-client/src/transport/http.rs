//! The HTTP layer: one reqwest client per registry host, trusting the CAs and
//! presenting the client certificate found in certs.d, with reqwest's proxy
//! handling (`HTTPS_PROXY`, `HTTP_PROXY`, `NO_PROXY`), and the mapping of its
//! failures to [`Error::Transport`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};

/// What a reqwest client for one host is built from.
pub struct HttpConfig<'a> {
    pub user_agent: &'a str,
    /// Roots holding `<host[:port]>/*.crt`, `*.cert` and `*.key`.
    pub certs_dirs: &'a [PathBuf],
    /// The `host[:port]` looked up in `certs_dirs`; `None` for none.
    pub certs_for: Option<&'a str>,
    /// Accept any certificate.
    pub insecure: bool,
    pub connect_timeout: Duration,
    /// A read that waits this long fails.
    pub read_timeout: Duration,
    pub pool_max_idle_per_host: usize,
}

/// A client for one host as `cfg` describes. `what` names the host in errors.
pub fn build(cfg: &HttpConfig<'_>, what: &str) -> Result<reqwest::Client> {
    let mut b = reqwest::Client::builder()
        .user_agent(cfg.user_agent.to_string())
        .connect_timeout(cfg.connect_timeout)
        .read_timeout(cfg.read_timeout)
        .pool_max_idle_per_host(cfg.pool_max_idle_per_host);
    if let Some(host) = cfg.certs_for {
        b = with_certs_d(b, cfg.certs_dirs, host)?;
    }
    if cfg.insecure {
        b = b.danger_accept_invalid_certs(true);
    }
    b.build().map_err(|e| transport(what, &e))
}

/// The root CAs (`*.crt`) and client identity (`*.cert` + `*.key`) that Docker's
/// and Podman's certs.d keep for one `host[:port]`.
#[derive(Default)]
pub struct CertsD {
    pub roots: Vec<reqwest::Certificate>,
    pub identity: Option<reqwest::Identity>,
}

impl CertsD {
    pub fn load(roots: &[PathBuf], host: &str) -> Result<CertsD> {
        let mut out = CertsD::default();
        let mut identity_pem: Vec<u8> = Vec::new();
        for root in roots {
            let dir = root.join(host);
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            let mut files: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
            files.sort();
            for f in files {
                let name = f.to_string_lossy().to_string();
                if name.ends_with(".crt") {
                    let pem = read(&f, &name)?;
                    let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| {
                        Error::invalid(&name, format!("not a PEM certificate: {e}"))
                    })?;
                    out.roots.push(cert);
                } else if name.ends_with(".cert") || name.ends_with(".key") {
                    identity_pem.extend(read(&f, &name)?);
                    identity_pem.push(b'\n');
                }
            }
        }
        if !identity_pem.is_empty() {
            let id = reqwest::Identity::from_pem(&identity_pem).map_err(|e| {
                Error::invalid(
                    format!("client certificate for {host}"),
                    format!("needs a .cert and a .key in PEM: {e}"),
                )
            })?;
            out.identity = Some(id);
        }
        Ok(out)
    }
}

fn with_certs_d(
    mut b: reqwest::ClientBuilder,
    roots: &[PathBuf],
    host: &str,
) -> Result<reqwest::ClientBuilder> {
    let certs = CertsD::load(roots, host)?;
    for c in certs.roots {
        b = b.add_root_certificate(c);
    }
    if let Some(id) = certs.identity {
        b = b.identity(id);
    }
    Ok(b)
}

fn read(path: &Path, name: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io(format!("reading {name}"), e))
}

/// A reqwest failure as [`Error::Transport`]: reqwest's Display names the URL
/// (ours carry no secrets); the cause chain is added.
pub fn transport(registry: &str, e: &reqwest::Error) -> Error {
    Error::Transport {
        registry: registry.to_string(),
        message: describe(e),
    }
}

/// reqwest's message with its causes.
pub fn describe(e: &reqwest::Error) -> String {
    let mut message = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        message.push_str(": ");
        message.push_str(&s.to_string());
        src = s.source();
    }
    message
}

/// A name that does not resolve will not resolve on retry either.
pub fn is_dns_failure(e: &reqwest::Error) -> bool {
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        if s.to_string().starts_with("dns error") {
            return true;
        }
        src = s.source();
    }
    false
}

pub fn is_loopback(host: &str) -> bool {
    let h = host
        .rsplit_once(':')
        .filter(|(h, p)| !h.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        .map(|(h, _)| h)
        .unwrap_or(host);
    h == "localhost" || h.starts_with("127.") || h == "[::1]"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        assert!(is_loopback("127.0.0.1:5000"));
        assert!(is_loopback("localhost"));
        assert!(!is_loopback("example.com:5000"));
    }
}
