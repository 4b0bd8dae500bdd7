//! Manifests as the registry serves them: raw bytes (kept byte-exact so digests
//! hold) plus just enough parsing to find blobs and pick a platform.

use oci_vocab::Digest;
use serde::Deserialize;

use crate::error::{Error, Result};

pub use oci_vocab::platform::{Only, Platform, PlatformError};

use oci_vocab::media;
pub use oci_vocab::media::{
    DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED, OCI_INDEX,
    OCI_MANIFEST,
};

/// Every manifest type we understand, for the Accept header.
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// Manifests larger than this are refused rather than buffered.
pub const MAX_MANIFEST: u64 = 8 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    /// A digest that is not `sha256:<64 hex>` fails the whole manifest's parse,
    /// naming the digest.
    pub digest: Digest,
    pub size: u64,
    #[serde(default)]
    pub platform: Option<Platform>,
    #[serde(default)]
    pub urls: Vec<String>,
}

/// A manifest fetched from or bound for a registry.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub bytes: Vec<u8>,
    pub media_type: String,
    pub digest: Digest,
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

impl Manifest {
    pub fn new(bytes: Vec<u8>, content_type: Option<&str>) -> Result<Manifest> {
        let digest = Digest::of(&bytes);
        let raw: Raw = serde_json::from_slice(&bytes)
            .map_err(|e| Error::invalid(format!("manifest {digest}"), e.to_string()))?;
        let declared = raw
            .media_type
            .clone()
            .or_else(|| content_type.map(|c| c.split(';').next().unwrap_or("").trim().to_string()))
            .filter(|m| !m.is_empty() && m != "application/json");
        if raw.schema_version == Some(1) || declared.as_deref().is_some_and(media::is_schema1) {
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
            mt if media::is_index(mt) => Ok(ManifestBody::Index {
                manifests: raw
                    .manifests
                    .ok_or_else(|| Error::invalid(what(), "index without manifests"))?,
            }),
            mt if media::is_manifest(mt) => Ok(ManifestBody::Image {
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
        media::is_index(&self.media_type)
    }
}

/// The index entry for `want` (attestation entries, `unknown/unknown`, never match),
/// picked as containerd does: the exact platform first, then those it runs.
pub fn select_platform<'a>(manifests: &'a [Descriptor], want: &Platform) -> Option<&'a Descriptor> {
    Only::new(want).select(manifests, |d| d.platform.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_names_every_manifest_and_index_type() {
        let accepted: Vec<&str> = ACCEPT.split(", ").collect();
        for mt in [
            OCI_INDEX,
            DOCKER_MANIFEST_LIST,
            OCI_MANIFEST,
            DOCKER_MANIFEST,
        ] {
            assert!(accepted.contains(&mt), "{mt}");
        }
        assert!(accepted
            .iter()
            .all(|mt| media::is_index(mt) || media::is_manifest(mt)));
    }

    fn digest(c: char) -> Digest {
        format!("sha256:{}", c.to_string().repeat(64))
            .parse()
            .expect("digest")
    }

    #[test]
    fn index_selection_and_schema1() {
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
          {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":1,"platform":{{"os":"unknown","architecture":"unknown"}}}},
          {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":2,"platform":{{"os":"linux","architecture":"arm","variant":"v7"}}}},
          {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":3,"platform":{{"os":"linux","architecture":"amd64"}}}}]}}"#,
            digest('a'),
            digest('b'),
            digest('c')
        );
        let m = Manifest::new(index.into_bytes(), None).unwrap();
        let ManifestBody::Index { manifests } = m.body().unwrap() else {
            panic!("index expected")
        };
        let want = Platform::parse("linux/arm").unwrap();
        assert_eq!(
            select_platform(&manifests, &want).unwrap().digest,
            digest('b')
        );
        let want = Platform::parse("linux/x86_64").unwrap();
        assert_eq!(
            select_platform(&manifests, &want).unwrap().digest,
            digest('c')
        );
        assert!(select_platform(&manifests, &Platform::parse("linux/s390x").unwrap()).is_none());
        let err = Manifest::new(br#"{"schemaVersion":1,"name":"x"}"#.to_vec(), None).unwrap_err();
        assert!(err.to_string().contains("schema 1"), "{err}");
    }

    #[test]
    fn a_descriptor_digest_that_does_not_parse_fails_the_manifest_naming_it() {
        let config = format!("sha256:{}", "a".repeat(64));
        for bad in [
            format!("sha512:{}", "a".repeat(128)),
            format!("sha256:{}", "A".repeat(64)),
            "sha256:abc".to_string(),
        ] {
            let bytes = format!(
                r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{bad}","size":3}}]}}"#
            );
            let what = Digest::of(bytes.as_bytes());
            let err = Manifest::new(bytes.into_bytes(), None).unwrap_err();
            let shown = err.to_string();
            assert!(shown.starts_with(&format!("manifest {what}: ")), "{shown}");
            assert!(
                shown.contains(&format!("invalid digest {bad:?}")),
                "{shown}"
            );
        }
    }

    #[test]
    fn manifest_bytes_and_descriptors_keep_the_registrys_digest_strings() {
        let bytes = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{}","size":3}}]}}"#,
            digest('1'),
            digest('2')
        );
        let m = Manifest::new(bytes.clone().into_bytes(), None).unwrap();
        assert_eq!(m.bytes, bytes.as_bytes());
        assert_eq!(m.digest, Digest::of(bytes.as_bytes()));
        let ManifestBody::Image { config, layers } = m.body().unwrap() else {
            panic!("image expected")
        };
        assert_eq!(
            config.digest.to_string(),
            format!("sha256:{}", "1".repeat(64))
        );
        assert_eq!(layers[0].digest, digest('2'));
    }
}
