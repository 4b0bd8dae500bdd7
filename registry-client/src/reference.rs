//! Image references parsed as Docker does: `docker.io` is the default registry,
//! official images live under `library/`, a tag defaults to `latest`.

use std::fmt;

use crate::error::{Error, Result};

pub const DOCKER_HUB: &str = "docker.io";
/// The key Docker stores Hub credentials under in config.json.
pub const DOCKER_HUB_AUTH_KEY: &str = "https://index.docker.io/v1/";

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// `docker.io`, `localhost:5000`, `ghcr.io`.
    pub registry: String,
    /// Full repository path, `library/busybox` on the Hub.
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl Reference {
    pub fn parse(input: &str) -> Result<Reference> {
        let bad = |reason: &str| Error::InvalidReference {
            name: input.to_string(),
            reason: reason.to_string(),
        };
        if input.is_empty() {
            return Err(bad("empty name"));
        }
        if input.len() > 4096 {
            return Err(bad("name too long"));
        }
        let (rest, digest) = match input.split_once('@') {
            Some((r, d)) => {
                validate_digest(d).map_err(|e| bad(&e))?;
                (r, Some(d.to_string()))
            }
            None => (input, None),
        };
        let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (path, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(tag) = tag {
            let valid = !tag.is_empty()
                && tag.len() <= 128
                && tag.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
                && tag
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
            if !valid {
                return Err(bad(
                    "tag must be 1-128 characters of [A-Za-z0-9_.-], not starting with . or -",
                ));
            }
        }
        let mut parts: Vec<&str> = path.split('/').collect();
        let has_domain = parts.len() > 1
            && (parts[0].contains('.') || parts[0].contains(':') || parts[0] == "localhost");
        let mut registry = DOCKER_HUB.to_string();
        if has_domain {
            let d = parts.remove(0);
            if d.is_empty()
                || d.starts_with(['-', '.', ':'])
                || !d
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
            {
                return Err(bad("invalid registry host"));
            }
            if let Some((_, port)) = d.rsplit_once(':').filter(|_| !d.ends_with(']')) {
                if port.is_empty() || port.parse::<u16>().is_err() {
                    return Err(bad("invalid registry port"));
                }
            }
            registry = match d {
                "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB.to_string(),
                other => other.to_string(),
            };
        }
        if parts.is_empty() || parts.iter().any(|p| p.is_empty()) {
            return Err(bad("missing repository name"));
        }
        for p in &parts {
            if !valid_path_component(p) {
                return Err(bad(
                    "repository name must be lowercase letters, digits and separators (. _ __ -)",
                ));
            }
        }
        if registry == DOCKER_HUB && parts.len() == 1 {
            parts.insert(0, "library");
        }
        let repository = parts.join("/");
        if repository.len() > 255 {
            return Err(bad("repository name longer than 255 characters"));
        }
        Ok(Reference {
            registry,
            repository,
            tag: tag.map(str::to_string),
            digest,
        })
    }

    /// What goes after `/manifests/`: the digest when pinned, else the tag (`latest`).
    pub fn reference(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }

    /// The host the API lives on (`registry-1.docker.io` for the Hub).
    pub fn api_host(&self) -> &str {
        registry_api_host(&self.registry)
    }

    /// The key credentials are stored under in config.json.
    pub fn credential_key(&self) -> &str {
        credential_key(&self.registry)
    }

    /// Same repository, another tag or digest.
    pub fn with_reference(&self, tag: Option<String>, digest: Option<String>) -> Reference {
        Reference {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            tag,
            digest,
        }
    }

    /// `registry/repository`, no tag.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }
}

pub fn registry_api_host(registry: &str) -> &str {
    if registry == DOCKER_HUB {
        "registry-1.docker.io"
    } else {
        registry
    }
}

/// Normalises what a user types for `login`/`logout` (`docker.io`, `https://host/`)
/// to the registry name and the config.json key Docker uses.
pub fn normalize_registry(input: &str) -> String {
    let s = input
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let s = s.split('/').next().unwrap_or("");
    match s {
        "" | "index.docker.io" | "registry-1.docker.io" | "docker.io" => DOCKER_HUB.to_string(),
        other => other.to_string(),
    }
}

pub fn credential_key(registry: &str) -> &str {
    if registry == DOCKER_HUB {
        DOCKER_HUB_AUTH_KEY
    } else {
        registry
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// Only sha256 is accepted: it is what images use and what we can verify.
pub fn validate_digest(d: &str) -> std::result::Result<(), String> {
    match d.split_once(':') {
        Some(("sha256", hex))
            if hex.len() == 64
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
        {
            Ok(())
        }
        Some(("sha256", _)) => Err("sha256 digest must be 64 lowercase hex characters".into()),
        Some((alg, _)) => Err(format!("digest algorithm {alg} is not supported")),
        None => Err("digest must be algorithm:hex".into()),
    }
}

fn valid_path_component(p: &str) -> bool {
    let b = p.as_bytes();
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &p[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|c| c == b'-')) {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_like_docker() {
        let d = "sha256:".to_string() + &"a".repeat(64);
        let cases = [
            ("busybox", "docker.io", "library/busybox", None, None),
            (
                "busybox:1.36",
                "docker.io",
                "library/busybox",
                Some("1.36"),
                None,
            ),
            (
                "index.docker.io/foo/bar",
                "docker.io",
                "foo/bar",
                None,
                None,
            ),
            (
                "registry-1.docker.io/library/x:1",
                "docker.io",
                "library/x",
                Some("1"),
                None,
            ),
            ("localhost/app", "localhost", "app", None, None),
            (
                "localhost:5000/a/b:v1",
                "localhost:5000",
                "a/b",
                Some("v1"),
                None,
            ),
            ("127.0.0.1:5000/app", "127.0.0.1:5000", "app", None, None),
            ("ghcr.io/o/r/c:v1.2", "ghcr.io", "o/r/c", Some("v1.2"), None),
        ];
        for (input, reg, repo, tag, digest) in cases {
            let r = Reference::parse(input).expect(input);
            assert_eq!(r.registry, reg, "{input}");
            assert_eq!(r.repository, repo, "{input}");
            assert_eq!(r.tag.as_deref(), tag, "{input}");
            assert_eq!(r.digest.as_deref(), digest, "{input}");
        }
        let r = Reference::parse(&format!("host:5000/app:1@{d}")).unwrap();
        assert_eq!(r.reference(), d);
        assert_eq!(r.tag.as_deref(), Some("1"));
        let hub = Reference::parse("busybox").unwrap();
        assert_eq!(hub.credential_key(), DOCKER_HUB_AUTH_KEY);
        assert_eq!(hub.api_host(), "registry-1.docker.io");
        assert_eq!(hub.reference(), "latest");
        assert_eq!(hub.to_string(), "docker.io/library/busybox");
    }

    #[test]
    fn refuses_malformed_names() {
        for bad in [
            "",
            "UPPER",
            "a//b",
            "a:",
            "a:-x",
            "-a",
            "a@sha256:1234",
            "a@md5:abc",
            "host:x/app",
            "a/",
        ] {
            let err = Reference::parse(bad).expect_err(bad).to_string();
            assert!(err.contains("invalid reference"), "{bad}: {err}");
        }
    }

    #[test]
    fn login_names_normalise() {
        assert_eq!(
            normalize_registry("https://index.docker.io/v1/"),
            "docker.io"
        );
        assert_eq!(normalize_registry("localhost:5000"), "localhost:5000");
        assert_eq!(credential_key("docker.io"), DOCKER_HUB_AUTH_KEY);
    }
}
