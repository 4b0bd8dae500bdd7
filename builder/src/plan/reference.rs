//! Validation of image references as BuildKit does it (docker/distribution's grammar,
//! normalised with `docker.io/library/`).

/// Why a reference is not valid; `Display` is BuildKit's text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("invalid reference format")]
    Format,
    #[error("invalid reference format: repository name ({0}) must be lowercase")]
    Uppercase(String),
}

/// `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`
fn path_component(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    let mut expect_alnum = true;
    while i < b.len() {
        if expect_alnum {
            let start = i;
            while i < b.len() && (b[i].is_ascii_lowercase() || b[i].is_ascii_digit()) {
                i += 1;
            }
            if i == start {
                return false;
            }
            expect_alnum = false;
        } else {
            let start = i;
            match b[i] {
                b'.' => i += 1,
                b'_' => {
                    i += 1;
                    if i < b.len() && b[i] == b'_' {
                        i += 1;
                    }
                }
                b'-' => {
                    while i < b.len() && b[i] == b'-' {
                        i += 1;
                    }
                }
                _ => return false,
            }
            if i == start {
                return false;
            }
            expect_alnum = true;
        }
    }
    !expect_alnum && !b.is_empty()
}

fn domain_ok(d: &str) -> bool {
    let (host, port) = match d.rsplit_once(':') {
        Some((h, p)) if !h.contains(']') || h.ends_with(']') => (h, Some(p)),
        _ => (d, None),
    };
    if let Some(p) = port {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
    }
    if host.starts_with('[') {
        return host.ends_with(']');
    }
    !host.is_empty()
        && host.split('.').all(|c| {
            !c.is_empty()
                && !c.starts_with('-')
                && !c.ends_with('-')
                && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Check `name[:tag][@digest]`.
pub fn validate(reference: &str) -> Result<(), ReferenceError> {
    let (rest, digest) = match reference.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (reference, None),
    };
    if let Some(d) = digest {
        let Some((alg, hex)) = d.split_once(':') else {
            return Err(ReferenceError::Format);
        };
        if alg.is_empty() || hex.len() < 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ReferenceError::Format);
        }
    }
    // A tag is after the last ':' that follows the last '/'.
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if let Some(t) = tag {
        let ok = !t.is_empty()
            && t.len() <= 128
            && t.bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if !ok {
            return Err(ReferenceError::Format);
        }
    }
    if name.is_empty() {
        return Err(ReferenceError::Format);
    }
    let (domain, remote) = match name.split_once('/') {
        Some((d, r))
            if d.contains(['.', ':']) || d == "localhost" || d.to_ascii_lowercase() != d =>
        {
            (Some(d), r.to_string())
        }
        _ => (None, name.to_string()),
    };
    if let Some(d) = domain {
        if !domain_ok(d) {
            return Err(ReferenceError::Format);
        }
    }
    let full_remote = if domain.is_none() && !remote.contains('/') {
        format!("library/{remote}")
    } else {
        remote.clone()
    };
    if full_remote.to_ascii_lowercase() != full_remote {
        let lower = full_remote.to_ascii_lowercase();
        if lower.split('/').all(path_component) {
            return Err(ReferenceError::Uppercase(full_remote));
        }
        return Err(ReferenceError::Format);
    }
    if !remote.split('/').all(path_component) || name.len() > 255 {
        return Err(ReferenceError::Format);
    }
    Ok(())
}

/// The name a `--build-context` is known by, as BuildKit normalises it: the familiar
/// form (`docker.io/library/` dropped) without a `:latest` tag, so `FROM alpine`,
/// `FROM alpine:latest` and `FROM docker.io/library/alpine` all find `alpine`.
/// `None` when `name` is not a valid image reference.
pub fn context_name(name: &str) -> Option<String> {
    validate(name).ok()?;
    let (rest, digest) = match name.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (name, None),
    };
    let mut familiar = rest;
    for domain in ["docker.io/", "index.docker.io/"] {
        if let Some(r) = familiar.strip_prefix(domain) {
            familiar = r;
        }
    }
    if familiar.len() != rest.len() {
        if let Some(r) = familiar
            .strip_prefix("library/")
            .filter(|r| !r.contains('/'))
        {
            familiar = r;
        }
    }
    Some(match digest {
        Some(d) => format!("{familiar}@{d}"),
        None => familiar
            .strip_suffix(":latest")
            .filter(|n| !n.ends_with('/'))
            .unwrap_or(familiar)
            .to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        for ok in [
            "alpine",
            "alpine:3.20",
            "docker.io/library/busybox:1.36",
            "localhost:5000/a/b_c__d-e:tag",
            "ghcr.io/o/r@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert_eq!(validate(ok), Ok(()), "{ok}");
        }
        assert_eq!(validate("alpine:"), Err(ReferenceError::Format));
        assert_eq!(validate("platform-"), Err(ReferenceError::Format));
        assert_eq!(
            validate("BUG_stage"),
            Err(ReferenceError::Uppercase("library/BUG_stage".into()))
        );
    }

    #[test]
    fn context_names_are_familiar_and_untagged_latest() {
        for (input, want) in [
            ("alpine", "alpine"),
            ("alpine:latest", "alpine"),
            ("docker.io/library/alpine:latest", "alpine"),
            ("docker.io/foo/bar:1", "foo/bar:1"),
            ("alpine:3.18", "alpine:3.18"),
            ("localhost:5000/app", "localhost:5000/app"),
        ] {
            assert_eq!(context_name(input).as_deref(), Some(want), "{input}");
        }
        assert_eq!(context_name("Extra"), None);
        assert_eq!(context_name("a=b"), None);
    }
}
