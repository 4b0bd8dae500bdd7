//! Image references: the one grammar of `oci-vocab` (Docker's distribution/reference),
//! plus the registry names `login` and `logout` take.

pub use oci_vocab::reference::{
    credential_key, registry_api_host, Reference, ReferenceError, DOCKER_HUB, DOCKER_HUB_AUTH_KEY,
};

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

#[cfg(test)]
mod tests {
    use super::*;

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
