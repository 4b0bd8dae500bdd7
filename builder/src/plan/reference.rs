//! Validation of image references as BuildKit does it (docker/distribution's grammar,
//! normalised with `docker.io/library/`), over the one grammar in `oci-vocab`.

use oci_vocab::{Reference, ReferenceErrorKind};

/// Why a reference is not valid; `Display` is BuildKit's text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("invalid reference format")]
    Format,
    #[error("invalid reference format: repository name ({0}) must be lowercase")]
    Uppercase(String),
}

/// Check `name[:tag][@digest]` with Docker's grammar (`oci_vocab::Reference`).
pub fn validate(reference: &str) -> Result<(), ReferenceError> {
    Reference::parse(reference)
        .map(drop)
        .map_err(|e| match e.kind {
            ReferenceErrorKind::Uppercase(name) => ReferenceError::Uppercase(name),
            _ => ReferenceError::Format,
        })
}

/// The name a `--build-context` is known by, as BuildKit normalises it: the familiar
/// form (`docker.io/library/` dropped) without a `:latest` tag, so `FROM alpine`,
/// `FROM alpine:latest` and `FROM docker.io/library/alpine` all find `alpine`.
/// `None` when `name` is not a valid image reference.
pub fn context_name(name: &str) -> Option<String> {
    let familiar = Reference::parse(name).ok()?.familiar_string();
    Some(match familiar.strip_suffix(":latest") {
        Some(untagged) => untagged.to_string(),
        None => familiar,
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

    /// The builder took any digest algorithm with 32 or more hex characters and
    /// no name length with the domain; Docker's grammar checks both.
    #[test]
    fn digests_and_lengths_follow_dockers_grammar() {
        assert_eq!(
            validate(&format!("alpine@sha256:{}", "0".repeat(32))),
            Err(ReferenceError::Format)
        );
        assert_eq!(
            validate(&format!("alpine@foo:{}", "0".repeat(64))),
            Err(ReferenceError::Format)
        );
        let path = "a".repeat(240);
        assert_eq!(validate(&path), Err(ReferenceError::Format));
        assert_eq!(
            context_name("registry-1.docker.io/library/x").as_deref(),
            Some("registry-1.docker.io/library/x")
        );
        assert_eq!(
            context_name("[::1]:5000/app:latest").as_deref(),
            Some("[::1]:5000/app")
        );
    }
}
