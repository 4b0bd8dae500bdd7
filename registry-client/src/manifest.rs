//! Manifests as the registry serves them: raw bytes (kept byte-exact so digests
//! hold) plus just enough parsing to find blobs and pick a platform.

use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
pub const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// Every manifest type we understand, for the Accept header.
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// Manifests larger than this are refused rather than buffered.
pub const MAX_MANIFEST: u64 = 8 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default)]
    pub platform: Option<Platform>,
    #[serde(default)]
    pub urls: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
pub struct Platform {
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub variant: Option<String>,
}

/// A manifest fetched from or bound for a registry.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub bytes: Vec<u8>,
    pub media_type: String,
    pub digest: String,
}

#[derive(Debug, Clone)]
pub enum ManifestBody {
    Image {
        config: Descriptor,
        layers: Vec<Descriptor>,
    },
    Index {
        manifests: Vec<Descriptor>,
    },
}

#[derive(Deserialize)]
struct Raw {
    #[serde(rename = "schemaVersion")]
    schema_version: Option<u64>,
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
    manifests: Option<Vec<Descriptor>>,
}

pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

impl Manifest {
    pub fn new(bytes: Vec<u8>, content_type: Option<&str>) -> Result<Manifest> {
        let digest = sha256_digest(&bytes);
        let raw: Raw = serde_json::from_slice(&bytes)
            .map_err(|e| Error::invalid(format!("manifest {digest}"), e.to_string()))?;
        let declared = raw
            .media_type
            .clone()
            .or_else(|| content_type.map(|c| c.split(';').next().unwrap_or("").trim().to_string()))
            .filter(|m| !m.is_empty() && m != "application/json");
        if raw.schema_version == Some(1)
            || matches!(
                declared.as_deref(),
                Some(DOCKER_SCHEMA1 | DOCKER_SCHEMA1_SIGNED)
            )
        {
            return Err(Error::invalid(
                format!("manifest {digest}"),
                "Docker schema 1 manifests are not supported; re-push the image with a current client",
            ));
        }
        let media_type = match declared {
            Some(m) => m,
            None if raw.manifests.is_some() => OCI_INDEX.to_string(),
            None => OCI_MANIFEST.to_string(),
        };
        let m = Manifest {
            bytes,
            media_type,
            digest,
        };
        m.body()?;
        Ok(m)
    }

    pub fn body(&self) -> Result<ManifestBody> {
        let what = || format!("manifest {}", self.digest);
        let raw: Raw = serde_json::from_slice(&self.bytes)
            .map_err(|e| Error::invalid(what(), e.to_string()))?;
        match self.media_type.as_str() {
            OCI_INDEX | DOCKER_MANIFEST_LIST => Ok(ManifestBody::Index {
                manifests: raw
                    .manifests
                    .ok_or_else(|| Error::invalid(what(), "index without manifests"))?,
            }),
            OCI_MANIFEST | DOCKER_MANIFEST => Ok(ManifestBody::Image {
                config: raw
                    .config
                    .ok_or_else(|| Error::invalid(what(), "manifest without config"))?,
                layers: raw.layers,
            }),
            other => Err(Error::invalid(
                what(),
                format!("unsupported manifest media type {other}"),
            )),
        }
    }

    pub fn is_index(&self) -> bool {
        matches!(self.media_type.as_str(), OCI_INDEX | DOCKER_MANIFEST_LIST)
    }
}

impl Platform {
    /// `os/arch[/variant]`, with aliases normalised (`x86_64` → `amd64`, `aarch64` → `arm64`).
    pub fn parse(s: &str) -> Result<Platform> {
        let parts: Vec<&str> = s.split('/').collect();
        if parts.len() < 2 || parts.len() > 3 || parts.iter().any(|p| p.is_empty()) {
            return Err(Error::invalid(
                format!("platform {s:?}"),
                "expected os/arch[/variant]",
            ));
        }
        Ok(Platform {
            os: parts[0].to_lowercase(),
            architecture: parts[1].to_lowercase(),
            variant: parts.get(2).map(|v| v.to_lowercase()),
        }
        .normalized())
    }

    pub fn host() -> Platform {
        Platform {
            os: "linux".into(),
            architecture: std::env::consts::ARCH.into(),
            variant: None,
        }
        .normalized()
    }

    pub fn normalized(&self) -> Platform {
        let (arch, implied) = match self.architecture.as_str() {
            "x86_64" | "x86-64" | "amd64" => ("amd64", None),
            "aarch64" | "arm64" => ("arm64", Some("v8")),
            "armhf" => ("arm", Some("v7")),
            "armel" => ("arm", Some("v6")),
            "arm" => ("arm", Some("v7")),
            "i386" | "i686" | "x86" | "386" => ("386", None),
            other => (other, None),
        };
        let variant = self
            .variant
            .clone()
            .filter(|v| !v.is_empty())
            .or(implied.map(str::to_string));
        Platform {
            os: self.os.clone(),
            architecture: arch.into(),
            variant,
        }
    }

    pub fn matches(&self, other: &Platform) -> bool {
        let a = self.normalized();
        let b = other.normalized();
        a.os == b.os && a.architecture == b.architecture && a.variant == b.variant
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// The index entry for `want`, skipping attestation entries (`unknown/unknown`).
pub fn select_platform<'a>(manifests: &'a [Descriptor], want: &Platform) -> Option<&'a Descriptor> {
    manifests
        .iter()
        .find(|d| d.platform.as_ref().is_some_and(|p| p.matches(want)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_normalise_aliases_and_variants() {
        let p = |s| Platform::parse(s).unwrap();
        assert!(p("linux/arm64").matches(&p("linux/arm64/v8")));
        assert!(p("linux/aarch64").matches(&p("linux/arm64")));
        assert!(p("linux/x86_64").matches(&p("linux/amd64")));
        assert!(p("linux/arm").matches(&p("linux/arm/v7")));
        assert!(!p("linux/arm/v6").matches(&p("linux/arm/v7")));
        assert!(!p("linux/amd64").matches(&p("windows/amd64")));
        assert!(Platform::parse("linux").is_err());
    }

    #[test]
    fn index_selection_and_schema1() {
        let index = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
          {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:aa","size":1,"platform":{"os":"unknown","architecture":"unknown"}},
          {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:bb","size":2,"platform":{"os":"linux","architecture":"arm","variant":"v7"}},
          {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:cc","size":3,"platform":{"os":"linux","architecture":"amd64"}}]}"#;
        let m = Manifest::new(index.to_vec(), None).unwrap();
        let ManifestBody::Index { manifests } = m.body().unwrap() else {
            panic!("index expected")
        };
        let want = Platform::parse("linux/arm").unwrap();
        assert_eq!(
            select_platform(&manifests, &want).unwrap().digest,
            "sha256:bb"
        );
        let want = Platform::parse("linux/x86_64").unwrap();
        assert_eq!(
            select_platform(&manifests, &want).unwrap().digest,
            "sha256:cc"
        );
        assert!(select_platform(&manifests, &Platform::parse("linux/s390x").unwrap()).is_none());
        let err = Manifest::new(br#"{"schemaVersion":1,"name":"x"}"#.to_vec(), None).unwrap_err();
        assert!(err.to_string().contains("schema 1"), "{err}");
    }
}
