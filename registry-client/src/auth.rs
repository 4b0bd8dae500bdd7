//! Credentials as Docker keeps them (config.json `auths`, `credsStore`,
//! `credHelpers` with the docker-credential-* protocol) and WWW-Authenticate
//! challenges. Nothing here formats a secret into a message.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use base64::Engine as _;
use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::reference::credential_key;

#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    Basic {
        username: String,
        password: String,
    },
    /// An OAuth2 refresh token (`identitytoken` in config.json).
    IdentityToken {
        username: String,
        token: String,
    },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
            Credentials::IdentityToken { username, .. } => {
                write!(f, "IdentityToken({username}, <redacted>)")
            }
        }
    }
}

impl Credentials {
    pub fn username(&self) -> &str {
        match self {
            Credentials::Basic { username, .. } | Credentials::IdentityToken { username, .. } => {
                username
            }
        }
    }
    pub fn basic_header(&self) -> Option<String> {
        match self {
            Credentials::Basic { username, password } => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
            )),
            Credentials::IdentityToken { .. } => None,
        }
    }
}

/// Where credentials are looked up: `$REGISTRY_AUTH_FILE`, else
/// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
#[derive(Debug, Clone)]
pub struct CredentialStore {
    pub path: PathBuf,
}

pub fn docker_config_path() -> PathBuf {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("config.json");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"));
    home.join(".docker").join("config.json")
}

impl CredentialStore {
    pub fn from_env() -> CredentialStore {
        let path = std::env::var_os("REGISTRY_AUTH_FILE")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(docker_config_path);
        CredentialStore { path }
    }

    fn read(&self) -> Result<Value> {
        match std::fs::read(&self.path) {
            Ok(b) if b.iter().all(u8::is_ascii_whitespace) => Ok(json!({})),
            Ok(b) => serde_json::from_slice(&b).map_err(|e| {
                Error::Credentials(format!("{}: not valid JSON: {e}", self.path.display()))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(json!({})),
            Err(e) => Err(Error::Credentials(format!("{}: {e}", self.path.display()))),
        }
    }

    /// Credentials for a registry, or `None` for anonymous access. A configured
    /// helper that is missing or fails gives anonymous access with a warning.
    pub fn get(&self, registry: &str) -> Result<Option<Credentials>> {
        let cfg = self.read()?;
        let key = credential_key(registry);
        let helper = cfg
            .get("credHelpers")
            .and_then(|h| h.get(registry).or_else(|| h.get(key)))
            .or_else(|| cfg.get("credsStore"))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty());
        if let Some(helper) = helper {
            match helper_get(helper, key) {
                Ok(c) => return Ok(c),
                Err(msg) => {
                    tracing::warn!(
                        "credential helper docker-credential-{helper} for {registry}: {msg}; continuing without credentials"
                    );
                    return Ok(None);
                }
            }
        }
        let auths = cfg.get("auths").and_then(Value::as_object);
        let Some(auths) = auths else { return Ok(None) };
        let entry = auths.get(key).or_else(|| {
            auths.iter().find_map(|(k, v)| {
                (crate::reference::normalize_registry(k) == registry).then_some(v)
            })
        });
        let Some(entry) = entry else { return Ok(None) };
        let mut username = String::new();
        let mut password = String::new();
        if let Some(a) = entry
            .get("auth")
            .and_then(Value::as_str)
            .filter(|a| !a.is_empty())
        {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(a.trim())
                .map_err(|_| {
                    Error::Credentials(format!(
                        "{}: the auth entry for {key} is not base64",
                        self.path.display()
                    ))
                })?;
            let decoded = String::from_utf8(decoded).map_err(|_| {
                Error::Credentials(format!(
                    "{}: the auth entry for {key} is not UTF-8",
                    self.path.display()
                ))
            })?;
            let (u, p) = decoded.split_once(':').ok_or_else(|| {
                Error::Credentials(format!(
                    "{}: the auth entry for {key} is not user:password",
                    self.path.display()
                ))
            })?;
            username = u.to_string();
            password = p.to_string();
        }
        if let Some(u) = entry.get("username").and_then(Value::as_str) {
            username = u.to_string();
        }
        if let Some(p) = entry.get("password").and_then(Value::as_str) {
            password = p.to_string();
        }
        if let Some(t) = entry
            .get("identitytoken")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
        {
            return Ok(Some(Credentials::IdentityToken {
                username,
                token: t.to_string(),
            }));
        }
        if username.is_empty() && password.is_empty() {
            return Ok(None);
        }
        Ok(Some(Credentials::Basic { username, password }))
    }

    /// Saves credentials where Docker would: the helper when one is configured,
    /// else base64 in `auths`.
    pub fn store(&self, registry: &str, username: &str, password: &str) -> Result<()> {
        let mut cfg = self.read()?;
        let key = credential_key(registry);
        if let Some(helper) = configured_helper(&cfg, registry, key) {
            let input = json!({"ServerURL": key, "Username": username, "Secret": password});
            return run_helper(&helper, "store", &input.to_string()).map(|_| ());
        }
        let auth =
            base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
        let obj = cfg.as_object_mut().ok_or_else(|| {
            Error::Credentials(format!("{}: not a JSON object", self.path.display()))
        })?;
        let auths = obj.entry("auths").or_insert_with(|| json!({}));
        if !auths.is_object() {
            *auths = json!({});
        }
        if let Some(a) = auths.as_object_mut() {
            a.insert(key.to_string(), json!({ "auth": auth }));
        }
        self.write(&cfg)
    }

    /// Forgets a registry's credentials; `false` when there were none.
    pub fn erase(&self, registry: &str) -> Result<bool> {
        let mut cfg = self.read()?;
        let key = credential_key(registry);
        if let Some(helper) = configured_helper(&cfg, registry, key) {
            return run_helper(&helper, "erase", key).map(|_| true);
        }
        let removed = cfg
            .get_mut("auths")
            .and_then(Value::as_object_mut)
            .map(|a| {
                let keys: Vec<String> = a
                    .keys()
                    .filter(|k| {
                        k.as_str() == key || crate::reference::normalize_registry(k) == registry
                    })
                    .cloned()
                    .collect();
                for k in &keys {
                    a.remove(k);
                }
                !keys.is_empty()
            })
            .unwrap_or(false);
        if removed {
            self.write(&cfg)?;
        }
        Ok(removed)
    }

    fn write(&self, cfg: &Value) -> Result<()> {
        let err = |e: std::io::Error| Error::Credentials(format!("{}: {e}", self.path.display()));
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let tmp = self.path.with_extension("json.tmp");
        let mut bytes = serde_json::to_vec_pretty(cfg)
            .map_err(|e| Error::Credentials(format!("{}: {e}", self.path.display())))?;
        bytes.push(b'\n');
        {
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(err)?;
            f.write_all(&bytes)
                .and_then(|_| f.sync_all())
                .map_err(err)?;
        }
        std::fs::rename(&tmp, &self.path).map_err(err)
    }
}

fn configured_helper(cfg: &Value, registry: &str, key: &str) -> Option<String> {
    cfg.get("credHelpers")
        .and_then(|h| h.get(registry).or_else(|| h.get(key)))
        .or_else(|| cfg.get("credsStore"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn run_helper(helper: &str, verb: &str, input: &str) -> Result<Vec<u8>> {
    let program = format!("docker-credential-{helper}");
    let mut child = Command::new(&program)
        .arg(verb)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::Credentials(format!("running {program}: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| Error::Credentials(format!("running {program}: {e}")))?;
    if !out.status.success() {
        // Helpers print their error on stdout; it never holds the secret.
        let msg = String::from_utf8_lossy(&out.stdout).trim().to_string();
        return Err(Error::Credentials(format!(
            "{program} {verb} failed ({}): {msg}",
            out.status
        )));
    }
    Ok(out.stdout)
}

/// `get` through a helper: `Ok(None)` when it has nothing for this server.
fn helper_get(helper: &str, key: &str) -> std::result::Result<Option<Credentials>, String> {
    let program = format!("docker-credential-{helper}");
    let out = match run_helper(helper, "get", key) {
        Ok(o) => o,
        Err(Error::Credentials(m)) if m.contains("credentials not found") => return Ok(None),
        Err(e) => {
            let s = e.to_string();
            if s.contains("No such file") {
                return Err(format!("{program} is not installed"));
            }
            return Err(s);
        }
    };
    let v: Value =
        serde_json::from_slice(&out).map_err(|_| format!("{program} get: output is not JSON"))?;
    let username = v.get("Username").and_then(Value::as_str).unwrap_or("");
    let secret = v.get("Secret").and_then(Value::as_str).unwrap_or("");
    if secret.is_empty() {
        return Ok(None);
    }
    if username == "<token>" {
        return Ok(Some(Credentials::IdentityToken {
            username: username.into(),
            token: secret.into(),
        }));
    }
    Ok(Some(Credentials::Basic {
        username: username.into(),
        password: secret.into(),
    }))
}

/// One parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub scheme: String,
    pub params: BTreeMap<String, String>,
}

/// Parses `Bearer realm="...",service="...",scope="a b"`; several challenges may be
/// given in one header value.
pub fn parse_challenges(header: &str) -> Vec<Challenge> {
    let mut out: Vec<Challenge> = Vec::new();
    let s = header.as_bytes();
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while *i < s.len() && (s[*i] == b' ' || s[*i] == b'\t' || s[*i] == b',') {
            *i += 1;
        }
    };
    loop {
        skip_ws(&mut i);
        if i >= s.len() {
            break;
        }
        let start = i;
        while i < s.len() && s[i] != b' ' && s[i] != b'=' && s[i] != b',' {
            i += 1;
        }
        let token = &header[start..i];
        // A word followed by `=` is a parameter of the current challenge.
        if i < s.len() && s[i] == b'=' && !out.is_empty() {
            i += 1;
            let value = if i < s.len() && s[i] == b'"' {
                i += 1;
                let mut v = String::new();
                while i < s.len() && s[i] != b'"' {
                    if s[i] == b'\\' && i + 1 < s.len() {
                        i += 1;
                    }
                    let ch_start = i;
                    i += 1;
                    while i < s.len() && (s[i] & 0xC0) == 0x80 {
                        i += 1;
                    }
                    v.push_str(&header[ch_start..i]);
                }
                i += 1;
                v
            } else {
                let vs = i;
                while i < s.len() && s[i] != b',' {
                    i += 1;
                }
                header[vs..i].trim().to_string()
            };
            if let Some(c) = out.last_mut() {
                c.params.insert(token.to_ascii_lowercase(), value);
            }
        } else {
            out.push(Challenge {
                scheme: token.to_ascii_lowercase(),
                params: BTreeMap::new(),
            });
        }
    }
    out
}

/// Where a config file said credentials live, for `login`'s message.
pub fn describe(store: &CredentialStore, registry: &str) -> String {
    match store
        .read()
        .ok()
        .and_then(|cfg| configured_helper(&cfg, registry, credential_key(registry)))
    {
        Some(h) => format!("docker-credential-{h}"),
        None => store.path.display().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse() {
        let c = parse_challenges(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(c[0].params["realm"], "https://auth.example/token");
        assert_eq!(c[0].params["scope"], "repository:a/b:pull,push");
        let c = parse_challenges(r#"Basic realm="Registry Realm""#);
        assert_eq!(c[0].scheme, "basic");
        assert_eq!(c[0].params["realm"], "Registry Realm");
    }

    #[test]
    fn config_json_auths_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = CredentialStore {
            path: dir.path().join("config.json"),
        };
        assert_eq!(store.get("localhost:5000").unwrap(), None);
        store.store("localhost:5000", "me", "s3cr:et").unwrap();
        store.store("docker.io", "hub", "pw").unwrap();
        let text = std::fs::read_to_string(&store.path).unwrap();
        assert!(text.contains("https://index.docker.io/v1/"), "{text}");
        assert!(!text.contains("s3cr:et"), "stored base64, not plain");
        assert_eq!(
            store.get("localhost:5000").unwrap(),
            Some(Credentials::Basic {
                username: "me".into(),
                password: "s3cr:et".into()
            })
        );
        assert_eq!(store.get("docker.io").unwrap().unwrap().username(), "hub");
        assert!(store.erase("localhost:5000").unwrap());
        assert!(!store.erase("localhost:5000").unwrap());
        assert_eq!(store.get("localhost:5000").unwrap(), None);
        let dbg = format!(
            "{:?}",
            Credentials::Basic {
                username: "u".into(),
                password: "hunter2".into()
            }
        );
        assert!(!dbg.contains("hunter2"));
    }

    #[test]
    fn missing_helper_is_anonymous() {
        let dir = tempfile::tempdir().unwrap();
        let store = CredentialStore {
            path: dir.path().join("config.json"),
        };
        std::fs::write(
            &store.path,
            r#"{"credsStore":"mybuild-test-does-not-exist","auths":{"h:1":{"auth":"dTpw"}}}"#,
        )
        .unwrap();
        assert_eq!(store.get("h:1").unwrap(), None);
    }
}
