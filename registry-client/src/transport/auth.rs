//! The auth layer: answers the registry's challenge (Basic, or Bearer with a
//! token per scope set, cached until shortly before it expires), re-challenges
//! once on a 401, and keeps credentials with their registry: another origin (an
//! upload Location elsewhere) gets none unless it challenges for the same token
//! realm and service, the audience of our Bearer token.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use reqwest::header::{HeaderValue, AUTHORIZATION};
use reqwest::{Response, StatusCode};
use url::Url;

use super::http::transport;
use super::retry::{retryable_status, Attempt};
use super::{Host, Request, Transport};
use crate::auth::{parse_challenges, Challenge, Credentials};
use crate::error::{Error, Result};

/// A token response: a JWT and a few fields, never megabytes.
const MAX_TOKEN_RESPONSE: u64 = 1 << 20;

#[derive(Default)]
pub struct AuthState {
    pub challenge: Option<Challenge>,
    tokens: HashMap<String, (String, Instant)>,
    creds: Option<Option<Credentials>>,
    /// Other origins (upload Locations) that challenged for our token's realm and
    /// service: they get the token without a 401 round trip first.
    token_origins: HashSet<String>,
}

impl AuthState {
    pub fn new(challenge: Option<Challenge>) -> AuthState {
        AuthState {
            challenge,
            ..AuthState::default()
        }
    }
}

/// The first Bearer or Basic challenge of a response.
pub fn challenge_of(resp: &Response) -> Option<Challenge> {
    resp.headers()
        .get_all("www-authenticate")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(parse_challenges)
        .find(|c| c.scheme == "bearer" || c.scheme == "basic")
}

impl Transport {
    fn credentials(&self, registry: &str) -> Result<Option<Credentials>> {
        if let Some((r, c)) = &self.opts.credential_override {
            if r == registry {
                return Ok(Some(c.clone()));
            }
        }
        self.opts.credentials.get(registry)
    }

    /// One request through the auth layer: with the Authorization this origin may
    /// have, re-challenged once on 401. `Ok(Err(_))` is a failure of the HTTP
    /// exchange itself, which the retry layer may try again.
    pub(super) async fn send_authenticated(
        &self,
        host: &Host,
        req: &Request<'_, '_>,
    ) -> Result<reqwest::Result<Response>> {
        let url = req.url;
        let foreign = url.origin() != host.base.origin();
        let origin = url.origin().ascii_serialization();
        let mut same_audience = foreign && host.auth.lock().await.token_origins.contains(&origin);
        let mut rechallenged = false;
        let mut fresh = false;
        loop {
            let auth = if foreign && !same_audience {
                None
            } else {
                self.authorization(host, req.scopes, fresh).await?
            };
            let mut headers = req.headers.clone();
            if let Some(a) = &auth {
                let mut v = HeaderValue::from_str(a).map_err(|_| {
                    Error::invalid("authorization", "token is not a valid header value")
                })?;
                v.set_sensitive(true);
                headers.insert(AUTHORIZATION, v);
            }
            let body = match req.body {
                Some(b) => Some(b().await?),
                None => None,
            };
            let resp = match self.send_http(host, req, headers, body).await {
                Ok(r) => r,
                Err(e) => return Ok(Err(e)),
            };
            if resp.status() != StatusCode::UNAUTHORIZED || rechallenged {
                return Ok(Ok(resp));
            }
            rechallenged = true;
            let ch = challenge_of(&resp);
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
                return Ok(Ok(resp));
            }
            // An expired or revoked token: take the new challenge (if any), get a
            // fresh token and try once more.
            if let Some(ch) = ch {
                host.auth.lock().await.challenge = Some(ch);
            }
            fresh = true;
        }
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
        let (realm, service) = (&realm, &service);
        let tried = self
            .policy
            .run(true, move |_| async move {
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
                        match host.http.post(realm.clone()).form(&form).send().await {
                            // Token servers without the OAuth2 endpoint (they answer
                            // 404, 405 or 400 to a POST): fall back to GET.
                            Ok(r) if matches!(r.status().as_u16(), 400 | 404 | 405) => {
                                tracing::debug!(
                                    "token server answered {} to the OAuth2 POST; using GET",
                                    r.status()
                                );
                                token_get(host, realm, service, scopes, creds).await
                            }
                            other => other,
                        }
                    }
                    _ => token_get(host, realm, service, scopes, creds).await,
                };
                match resp {
                    Ok(r) if retryable_status(r.status()) => Attempt::Again {
                        after: super::retry::retry_after(r.headers()),
                        value: Ok(r),
                    },
                    Ok(r) => Attempt::Done(Ok(r)),
                    Err(e) => Attempt::Again {
                        after: None,
                        value: Err(e),
                    },
                }
            })
            .await;
        let resp = tried
            .value
            .map_err(|e| terr(transport(registry, &e).to_string()))?;
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(Error::Unauthorized {
                what: format!("token for {}", scopes.join(" ")),
                registry: registry.clone(),
                detail: format!(" (token server answered {status})"),
                response: Box::new(crate::error::ErrorResponse {
                    url: crate::error::redact_url(resp.url()),
                    status: status.as_u16(),
                    errors: Vec::new(),
                    attempts: tried.attempts,
                }),
            });
        }
        if !status.is_success() {
            return Err(terr(format!("token server answered {status}")));
        }
        let body = super::read_capped(resp, MAX_TOKEN_RESPONSE)
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
        Ok((tok.to_string(), Duration::from_secs(ttl)))
    }
}

async fn token_get(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::parse_challenges;

    #[test]
    fn tokens_go_only_to_the_same_realm_and_service() {
        let ours = parse_challenges(r#"Bearer realm="https://a/token",service="reg""#);
        let same = parse_challenges(r#"Bearer realm="https://a/token",service="reg""#);
        let other = parse_challenges(r#"Bearer realm="https://evil/token",service="reg""#);
        let basic = parse_challenges(r#"Basic realm="https://a/token""#);
        assert!(same_token_audience(&same[0], ours.first()));
        assert!(!same_token_audience(&other[0], ours.first()));
        assert!(!same_token_audience(&basic[0], ours.first()));
        assert!(!same_token_audience(&same[0], None));
    }
}
