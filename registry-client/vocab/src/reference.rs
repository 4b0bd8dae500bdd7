//! Image references with Docker's grammar (distribution/reference), normalised as
//! `ParseNormalizedNamed` does: `docker.io` is the default registry (`index.docker.io`
//! is its legacy name), official images live under `library/`, the name with its
//! domain is at most 255 characters, a tag at most 128.
//!
//! oci-spec's `distribution::Reference` is not used: it adds a `latest` tag when none
//! is written (the store and `copy` must know whether one was), it has no lowercase
//! check with Docker's message (`repository name (library/Foo) must be lowercase`), it
//! counts the 255-character limit on the repository alone where Docker counts the
//! whole name, it takes no bracketed IPv6 host, and its errors carry no input.
//!
//! One deliberate difference from Docker: only sha256 digests are accepted, as they
//! are all we can verify (Docker also takes sha384 and sha512).

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use regex::Regex;

use crate::digest::Digest;

/// The registry name of Docker Hub.
pub const DOCKER_HUB: &str = "docker.io";
/// The host Docker Hub's registry API lives on.
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";
/// The key Docker stores Hub credentials under in config.json.
pub const DOCKER_HUB_AUTH_KEY: &str = "https://index.docker.io/v1/";
/// Docker's limit on a name, domain included.
pub const NAME_TOTAL_LENGTH_MAX: usize = 255;
const LEGACY_HUB: &str = "index.docker.io";
const OFFICIAL_PREFIX: &str = "library/";

/// A reference that does not parse, with the input and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid reference {input:?}: {kind}")]
pub struct ReferenceError {
    pub input: String,
    pub kind: ReferenceErrorKind,
}

/// Why a reference does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceErrorKind {
    #[error("empty name")]
    Empty,
    #[error("invalid reference format")]
    Format,
    #[error("invalid registry host")]
    Host,
    #[error("invalid registry port")]
    Port,
    #[error("tag must be 1-128 characters of [A-Za-z0-9_.-], not starting with . or -")]
    Tag,
    #[error("repository name must be lowercase letters, digits and separators (. _ __ -)")]
    Path,
    /// Docker's text; the name is the normalised path (`library/Foo`).
    #[error("repository name ({0}) must be lowercase")]
    Uppercase(String),
    #[error("repository name must not be more than {NAME_TOTAL_LENGTH_MAX} characters")]
    NameTooLong,
    #[error("cannot specify 64-byte hexadecimal strings")]
    HexName,
    #[error("invalid digest: {0}")]
    Digest(String),
}

/// A parsed, normalised reference: `registry/repository[:tag][@digest]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// `docker.io`, `localhost:5000`, `ghcr.io`, `[::1]:5000`.
    pub registry: String,
    /// Full repository path, `library/busybox` on the Hub.
    pub repository: String,
    pub tag: Option<String>,
    /// The pinned `sha256:<hex>` digest.
    pub digest: Option<Digest>,
}

struct Grammar {
    reference: Regex,
    domain: Regex,
    host: Regex,
    tag: Regex,
    path: Regex,
    digest: Regex,
    identifier: Regex,
}

fn grammar() -> &'static Grammar {
    static G: OnceLock<Grammar> = OnceLock::new();
    G.get_or_init(|| {
        let alnum = "[a-z0-9]+";
        let separator = "(?:[._]|__|[-]+)";
        let component = format!("{alnum}(?:{separator}{alnum})*");
        let path = format!("{component}(?:/{component})*");
        let label = "(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])";
        let host = format!(r"(?:{label}(?:\.{label})*|\[[a-fA-F0-9:]+\])");
        let domain = format!("{host}(?::[0-9]+)?");
        // Go's `\w` is ASCII; Rust's is Unicode, so spell it out.
        let tag = "[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}";
        let digest = "[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[[:xdigit:]]{32,}";
        let re = |s: &str| Regex::new(&format!("^{s}$")).unwrap_or_else(|e| unreachable!("{e}"));
        Grammar {
            reference: re(&format!(
                "(({domain})/({path}))(?::({tag}))?(?:@({digest}))?"
            )),
            domain: re(&domain),
            host: re(&host),
            tag: re(tag),
            path: re(&path),
            digest: re(digest),
            identifier: re("[a-f0-9]{64}"),
        }
    })
}

/// Docker's `splitDockerDomain`: the first component is a registry when it has a `.`
/// or `:`, is `localhost`, or has uppercase letters.
fn split_docker_domain(name: &str) -> (String, String) {
    let (mut domain, mut rest) = match name.split_once('/') {
        Some((d, r))
            if d.contains(['.', ':']) || d == "localhost" || d.to_ascii_lowercase() != d =>
        {
            (d.to_string(), r.to_string())
        }
        _ => (DOCKER_HUB.to_string(), name.to_string()),
    };
    if domain == LEGACY_HUB {
        domain = DOCKER_HUB.to_string();
    }
    if domain == DOCKER_HUB && !rest.contains('/') {
        rest = format!("{OFFICIAL_PREFIX}{rest}");
    }
    (domain, rest)
}

impl Reference {
    /// Parses what a user types (`busybox`, `localhost:5000/app:1`, `x@sha256:...`).
    pub fn parse(input: &str) -> Result<Reference, ReferenceError> {
        let err = |kind| ReferenceError {
            input: input.to_string(),
            kind,
        };
        if input.is_empty() {
            return Err(err(ReferenceErrorKind::Empty));
        }
        let g = grammar();
        if g.identifier.is_match(input) {
            return Err(err(ReferenceErrorKind::HexName));
        }
        let (domain, remainder) = split_docker_domain(input);
        let remote = remainder.split(':').next().unwrap_or("");
        if remote.to_ascii_lowercase() != remote {
            return Err(err(ReferenceErrorKind::Uppercase(remote.to_string())));
        }
        let full = format!("{domain}/{remainder}");
        let Some(caps) = g.reference.captures(&full) else {
            return Err(err(diagnose(&domain, &remainder)));
        };
        let group = |i| caps.get(i).map(|m| m.as_str().to_string());
        if caps.get(1).map_or(0, |m| m.as_str().len()) > NAME_TOTAL_LENGTH_MAX {
            return Err(err(ReferenceErrorKind::NameTooLong));
        }
        let digest = match caps.get(5) {
            Some(d) => Some(
                Digest::from_str(d.as_str())
                    .map_err(|e| err(ReferenceErrorKind::Digest(e.reason.into())))?,
            ),
            None => None,
        };
        Ok(Reference {
            registry: group(2).unwrap_or_default(),
            repository: group(3).unwrap_or_default(),
            tag: group(4),
            digest,
        })
    }

    /// What goes after `/manifests/`: the digest when pinned, else the tag (`latest`).
    pub fn reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_string(),
        }
    }

    /// The host the API lives on (`registry-1.docker.io` for the Hub).
    pub fn api_host(&self) -> &str {
        registry_api_host(&self.registry)
    }

    /// The key credentials are stored under in Docker's config.json.
    pub fn credential_key(&self) -> &str {
        credential_key(&self.registry)
    }

    /// Same repository, another tag or digest.
    pub fn with_reference(&self, tag: Option<String>, digest: Option<Digest>) -> Reference {
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

    /// Docker's familiar name: `docker.io/` and an official image's `library/` dropped
    /// (`busybox`, `foo/bar`, `localhost:5000/app`).
    pub fn familiar_name(&self) -> String {
        if self.registry != DOCKER_HUB {
            return self.name();
        }
        match self.repository.strip_prefix(OFFICIAL_PREFIX) {
            Some(r) if !r.contains('/') => r.to_string(),
            _ => self.repository.clone(),
        }
    }

    /// Docker's `FamiliarString`: the familiar name with the tag and digest written.
    pub fn familiar_string(&self) -> String {
        let mut s = self.familiar_name();
        push_suffix(&mut s, self.tag.as_deref(), self.digest.as_ref());
        s
    }
}

fn push_suffix(s: &mut String, tag: Option<&str>, digest: Option<&Digest>) {
    if let Some(t) = tag {
        s.push(':');
        s.push_str(t);
    }
    if let Some(d) = digest {
        s.push('@');
        s.push_str(&d.to_string());
    }
}

/// Says which part of a reference the grammar refused, for a clearer message.
fn diagnose(domain: &str, remainder: &str) -> ReferenceErrorKind {
    let g = grammar();
    if !g.domain.is_match(domain) {
        return match domain.rsplit_once(':') {
            Some((host, _)) if g.host.is_match(host) => ReferenceErrorKind::Port,
            _ => ReferenceErrorKind::Host,
        };
    }
    let (name, digest) = match remainder.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (remainder, None),
    };
    let (path, tag) = match name.split_once(':') {
        Some((p, t)) => (p, Some(t)),
        None => (name, None),
    };
    if !g.path.is_match(path) {
        return ReferenceErrorKind::Path;
    }
    if tag.is_some_and(|t| !g.tag.is_match(t)) {
        return ReferenceErrorKind::Tag;
    }
    if let Some(d) = digest.filter(|d| !g.digest.is_match(d)) {
        return ReferenceErrorKind::Digest(match Digest::from_str(d) {
            Err(e) => e.reason.into(),
            Ok(_) => "invalid checksum digest format".into(),
        });
    }
    ReferenceErrorKind::Format
}

impl FromStr for Reference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reference::parse(s)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = self.name();
        push_suffix(&mut s, self.tag.as_deref(), self.digest.as_ref());
        f.write_str(&s)
    }
}

/// The host a registry's API lives on (`registry-1.docker.io` for the Hub).
pub fn registry_api_host(registry: &str) -> &str {
    if registry == DOCKER_HUB {
        DOCKER_HUB_API
    } else {
        registry
    }
}

/// The key Docker's config.json keeps a registry's credentials under.
pub fn credential_key(registry: &str) -> &str {
    if registry == DOCKER_HUB {
        DOCKER_HUB_AUTH_KEY
    } else {
        registry
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(input: &str) -> Reference {
        Reference::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"))
    }

    fn kind(input: &str) -> ReferenceErrorKind {
        Reference::parse(input)
            .map(|r| panic!("{input} parsed as {r:?}"))
            .unwrap_err()
            .kind
    }

    const SHA: &str = "sha256:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff";

    /// The cases of distribution's reference_test.go `TestReferenceParse`, normalised.
    #[test]
    fn distribution_reference_cases() {
        type Case<'a> = (&'a str, &'a str, &'a str, Option<&'a str>, Option<&'a str>);
        let cases: &[Case] = &[
            ("test_com", "docker.io", "library/test_com", None, None),
            (
                "test.com:tag",
                "docker.io",
                "library/test.com",
                Some("tag"),
                None,
            ),
            (
                "test.com:5000",
                "docker.io",
                "library/test.com",
                Some("5000"),
                None,
            ),
            ("test.com/repo:tag", "test.com", "repo", Some("tag"), None),
            ("test:5000/repo", "test:5000", "repo", None, None),
            ("test:5000/repo:tag", "test:5000", "repo", Some("tag"), None),
            (
                "sub-dom1.foo.com/bar/baz/quux",
                "sub-dom1.foo.com",
                "bar/baz/quux",
                None,
                None,
            ),
            (
                "sub-dom1.foo.com/bar/baz/quux:some-long-tag",
                "sub-dom1.foo.com",
                "bar/baz/quux",
                Some("some-long-tag"),
                None,
            ),
            (
                "b.gcr.io/test.example.com/my-app:test.example.com",
                "b.gcr.io",
                "test.example.com/my-app",
                Some("test.example.com"),
                None,
            ),
            (
                "xn--n3h.com/myimage:xn--n3h.com",
                "xn--n3h.com",
                "myimage",
                Some("xn--n3h.com"),
                None,
            ),
            (
                "foo_bar.com:8080",
                "docker.io",
                "library/foo_bar.com",
                Some("8080"),
                None,
            ),
            (
                "foo/foo_bar.com:8080",
                "docker.io",
                "foo/foo_bar.com",
                Some("8080"),
                None,
            ),
            ("[2001:db8::1]/repo", "[2001:db8::1]", "repo", None, None),
            (
                "[2001:db8::1]:5000/repo:tag",
                "[2001:db8::1]:5000",
                "repo",
                Some("tag"),
                None,
            ),
            ("[::1]:5000/repo", "[::1]:5000", "repo", None, None),
            ("127.0.0.1:5000/repo", "127.0.0.1:5000", "repo", None, None),
            ("localhost/repo", "localhost", "repo", None, None),
            (
                "localhost:5000/a/b_c__d-e---f:v1",
                "localhost:5000",
                "a/b_c__d-e---f",
                Some("v1"),
                None,
            ),
            (
                "lowercase:Uppercase",
                "docker.io",
                "library/lowercase",
                Some("Uppercase"),
                None,
            ),
        ];
        for &(input, registry, repository, tag, digest) in cases {
            let r = ok(input);
            assert_eq!(r.registry, registry, "{input}");
            assert_eq!(r.repository, repository, "{input}");
            assert_eq!(r.tag.as_deref(), tag, "{input}");
            assert_eq!(
                r.digest.as_ref().map(ToString::to_string).as_deref(),
                digest,
                "{input}"
            );
        }
        let r = ok(&format!("test:5000/repo:tag@{SHA}"));
        assert_eq!(
            (r.tag.as_deref(), r.digest.as_ref().map(ToString::to_string)),
            (Some("tag"), Some(SHA.to_string()))
        );
        assert_eq!(r.reference(), SHA);
        let r = ok(&format!("test:5000/repo@{SHA}"));
        assert_eq!((r.tag.as_deref(), r.reference().as_str()), (None, SHA));
        // 255 characters with `docker.io/`; the tag does not count.
        let long = ok(&format!("{}a:tag-puts-this-over-max", "a/".repeat(122)));
        assert_eq!(long.tag.as_deref(), Some("tag-puts-this-over-max"));
    }

    #[test]
    fn distribution_reference_failures() {
        use ReferenceErrorKind as K;
        assert_eq!(kind(""), K::Empty);
        assert_eq!(kind(":justtag"), K::Path);
        assert_eq!(kind(&format!("@{SHA}")), K::Path);
        assert!(matches!(
            kind(&format!("validname@invaliddigest:{}", "f".repeat(64))),
            K::Digest(_)
        ));
        assert_eq!(kind(&format!("{}a:tag", "a/".repeat(128))), K::NameTooLong);
        assert_eq!(kind("aa/asdf$$^/aa"), K::Path);
        assert_eq!(kind(&"f".repeat(64)), K::HexName);
        assert_eq!(
            kind("Uppercase:tag"),
            K::Uppercase("library/Uppercase".into())
        );
        assert_eq!(
            kind("test:5000/Uppercase/lowercase:tag"),
            K::Uppercase("Uppercase/lowercase".into())
        );
        assert_eq!(
            kind("repo@sha256:1234"),
            K::Digest("sha256 hex must be 64 characters".into())
        );
        assert_eq!(kind("a:"), K::Tag);
        assert_eq!(kind("a:-x"), K::Tag);
        assert_eq!(kind(&format!("a:{}", "t".repeat(129))), K::Tag);
        for bad in ["-a", "a//b", "a/", "a_-b", "a..b", "a___b", "UPPER/"] {
            assert!(Reference::parse(bad).is_err(), "{bad} should be refused");
        }
        assert_eq!(kind("host:x/app"), K::Port);
        assert_eq!(kind("-host.com/app"), K::Host);
        assert_eq!(kind("[::1/app"), K::Host);
    }

    /// The cases of distribution's normalize_test.go (`TestParseNormalizedNamed`,
    /// `TestNormalizedSplitHostname`, familiar strings).
    #[test]
    fn distribution_normalize_cases() {
        let cases = [
            (
                "docker.io/library/ubuntu",
                "docker.io/library/ubuntu",
                "ubuntu",
            ),
            ("ubuntu", "docker.io/library/ubuntu", "ubuntu"),
            (
                "index.docker.io/library/ubuntu",
                "docker.io/library/ubuntu",
                "ubuntu",
            ),
            ("docker.io/foo/bar", "docker.io/foo/bar", "foo/bar"),
            (
                "library/foo/bar",
                "docker.io/library/foo/bar",
                "library/foo/bar",
            ),
            (
                "docker.io/library/foo/bar",
                "docker.io/library/foo/bar",
                "library/foo/bar",
            ),
            ("localhost/ubuntu", "localhost/ubuntu", "localhost/ubuntu"),
            (
                "localhost:5000/ubuntu",
                "localhost:5000/ubuntu",
                "localhost:5000/ubuntu",
            ),
            (
                "example.com/ubuntu",
                "example.com/ubuntu",
                "example.com/ubuntu",
            ),
            (
                "example.com:5000/a/b",
                "example.com:5000/a/b",
                "example.com:5000/a/b",
            ),
            (
                "registry-1.docker.io/x",
                "registry-1.docker.io/x",
                "registry-1.docker.io/x",
            ),
        ];
        for (input, name, familiar) in cases {
            let r = ok(input);
            assert_eq!(r.name(), name, "{input}");
            assert_eq!(r.familiar_name(), familiar, "{input}");
        }
        let r = ok(&format!("docker.io/library/redis:7@{SHA}"));
        assert_eq!(r.familiar_string(), format!("redis:7@{SHA}"));
        assert_eq!(r.to_string(), format!("docker.io/library/redis:7@{SHA}"));
        let hub = ok("busybox");
        assert_eq!(hub.api_host(), DOCKER_HUB_API);
        assert_eq!(hub.credential_key(), DOCKER_HUB_AUTH_KEY);
        assert_eq!(hub.reference(), "latest");
        assert_eq!(hub.to_string(), "docker.io/library/busybox");
        assert_eq!(ok("localhost:5000/a").credential_key(), "localhost:5000");
    }

    /// Docker counts the 255 characters on the normalised name, domain included; the
    /// registry client counted the repository alone and the store not at all.
    #[test]
    fn name_length_counts_the_domain_as_docker_does() {
        let path = "a".repeat(255 - "docker.io/library/".len());
        assert!(Reference::parse(&path).is_ok());
        assert_eq!(kind(&format!("{path}a")), ReferenceErrorKind::NameTooLong);
        let host = format!("h.io/{}", "b".repeat(250));
        assert!(Reference::parse(&host).is_ok());
        assert_eq!(kind(&format!("{host}b")), ReferenceErrorKind::NameTooLong);
    }

    /// Docker keeps `registry-1.docker.io` as a registry of its own; the store and the
    /// registry client folded it into `docker.io`.
    #[test]
    fn registry_1_docker_io_is_not_the_hub_name() {
        let r = ok("registry-1.docker.io/library/x:1");
        assert_eq!(r.registry, "registry-1.docker.io");
        assert_eq!(r.familiar_name(), "registry-1.docker.io/library/x");
    }

    /// A port is digits after a valid host name. The store took any of `.-:[]` in a
    /// host and any port; the registry client refused ports above 65535, which
    /// Docker's grammar takes.
    #[test]
    fn ports_and_hosts_follow_the_domain_grammar() {
        assert_eq!(kind("host:/app"), ReferenceErrorKind::Port);
        assert_eq!(kind("ho_st.com/app"), ReferenceErrorKind::Host);
        assert_eq!(kind("a.-b.com/app"), ReferenceErrorKind::Host);
        assert!(Reference::parse("host.com:65536/app").is_ok());
    }
}
