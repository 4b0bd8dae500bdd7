//! The image model: manifests and indexes (oci-spec types; media types from
//! `oci-vocab`, re-exported here), and our own
//! image config type, which keeps Docker's fields that oci-spec drops and passes
//! unknown fields through. JSON we hash is written with sorted keys.

use std::collections::BTreeMap;

use oci_spec::image::{Descriptor, DescriptorBuilder, ImageIndex, ImageManifest, MediaType};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::digest::Digest;
use crate::error::{Result, StoreError};
use oci_vocab::media;
pub use oci_vocab::Platform;

pub use oci_vocab::media::{
    Compression, DOCKER_CONFIG, DOCKER_LAYER, DOCKER_LAYER_GZIP, DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST, DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED, OCI_CONFIG, OCI_INDEX, OCI_LAYER,
    OCI_LAYER_GZIP, OCI_LAYER_ZSTD, OCI_MANIFEST,
};

/// Annotation holding a tag in an OCI layout's index.json (what skopeo's `oci:` reads).
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";
/// Annotation Docker and containerd use for the full image name.
pub const IMAGE_NAME_ANNOTATION: &str = "io.containerd.image.name";

/// Manifests and configs larger than this are refused rather than read into memory.
pub const MAX_JSON_BLOB: u64 = 8 << 20;

/// Serializes with sorted object keys, so equal values give equal bytes and digests.
pub fn canonical_json<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    // serde_json's Map is a BTreeMap (no `preserve_order`), so a Value sorts its keys.
    let v = serde_json::to_value(value).map_err(|e| StoreError::json("canonical json", e))?;
    serde_json::to_vec(&v).map_err(|e| StoreError::json("canonical json", e))
}

pub fn descriptor(media_type: &str, digest: &Digest, size: u64) -> Descriptor {
    DescriptorBuilder::default()
        .media_type(MediaType::from(media_type))
        .digest(oci_spec::image::Digest::from(digest))
        .size(size)
        .build()
        .unwrap_or_else(|_| unreachable!("all required descriptor fields are set"))
}

pub fn descriptor_digest(d: &Descriptor) -> Result<Digest> {
    Ok(Digest::try_from(d.digest())?)
}

/// A manifest as stored: the exact bytes plus the parsed form.
#[derive(Debug, Clone)]
pub enum ParsedManifest {
    Image(Box<ImageManifest>),
    Index(Box<ImageIndex>),
}

/// Parses manifest bytes by their `mediaType` (or shape when absent), refusing schema 1.
pub fn parse_manifest(bytes: &[u8], what: &str) -> Result<ParsedManifest> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| StoreError::json(what, e))?;
    let media_type = v.get("mediaType").and_then(Value::as_str).unwrap_or("");
    let schema = v.get("schemaVersion").and_then(Value::as_u64);
    if schema == Some(1) || media::is_schema1(media_type) {
        return Err(StoreError::invalid(
            what,
            "Docker schema 1 manifests are not supported; re-push the image with a current client",
        ));
    }
    let is_index = match media_type {
        mt if media::is_index(mt) => true,
        mt if media::is_manifest(mt) => false,
        "" => v.get("manifests").is_some(),
        other => {
            return Err(StoreError::invalid(
                what,
                format!("unsupported manifest media type {other}"),
            ))
        }
    };
    if is_index {
        serde_json::from_value(v)
            .map(|i| ParsedManifest::Index(Box::new(i)))
            .map_err(|e| StoreError::json(what, e))
    } else {
        serde_json::from_value(v)
            .map(|m| ParsedManifest::Image(Box::new(m)))
            .map_err(|e| StoreError::json(what, e))
    }
}

/// The image config. Field names follow the OCI/Docker JSON; unknown fields pass through.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ContainerConfig>,
    #[serde(default)]
    pub rootfs: RootFs,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<History>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub diff_ids: Vec<Digest>,
}

impl Default for RootFs {
    fn default() -> Self {
        RootFs {
            kind: "layers".into(),
            diff_ids: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub empty_layer: bool,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// The `config` object: what a container run from the image starts with.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub exposed_ports: BTreeMap<String, Value>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub env: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub volumes: BTreeMap<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args_escaped: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<HealthConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_build: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<Vec<String>>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// Docker's HEALTHCHECK settings; durations are nanoseconds as Docker writes them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_period: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_interval: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<i64>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

fn null_as_default<'de, D, T>(d: D) -> std::result::Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

impl ImageConfig {
    pub fn parse(bytes: &[u8], what: &str) -> Result<ImageConfig> {
        serde_json::from_slice(bytes).map_err(|e| StoreError::json(what, e))
    }

    /// The platform the config names, as written.
    pub fn platform(&self) -> Platform {
        Platform::new(&self.os, &self.architecture, self.variant.as_deref())
    }

    /// Whether this stored image serves `want`: the one rule the builder and the
    /// base puller share ([`oci_vocab::image_is_for`], Docker's).
    pub fn is_for(&self, want: &Platform) -> bool {
        oci_vocab::image_is_for(&self.platform(), want)
    }
}

/// Writes an OCI image index of the per-platform images `images` (each entry with
/// the platform of its config) to the store; returns its descriptor.
pub fn write_index(store: &crate::Store, images: &[Descriptor]) -> Result<Descriptor> {
    let mut manifests = Vec::new();
    for d in images {
        let img = store.load_image(d)?;
        let c = &img.config;
        let mut platform = serde_json::json!({"architecture": c.architecture, "os": c.os});
        if let Some(v) = &c.variant {
            platform["variant"] = v.clone().into();
        }
        manifests.push(serde_json::json!({
            "mediaType": d.media_type().to_string(),
            "digest": img.manifest_digest.to_string(),
            "size": d.size(),
            "platform": platform,
        }));
    }
    let doc = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": manifests,
    });
    let bytes = canonical_json(&doc)?;
    let c = store.write_blob(&bytes)?;
    Ok(descriptor(OCI_INDEX, &c.digest, c.size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys_and_keeps_docker_fields() {
        let raw = br#"{"os":"linux","architecture":"amd64","config":{"Labels":{"z":"1","a":"2"},"Healthcheck":{"Test":["CMD","true"],"Interval":1000},"OnBuild":["RUN x"],"Shell":["/bin/bash","-c"],"ArgsEscaped":true,"Custom":{"k":1}},"rootfs":{"type":"layers","diff_ids":[]},"moby.extra":true}"#;
        let cfg = ImageConfig::parse(raw, "config").expect("parses");
        let c = cfg.config.as_ref().expect("config");
        assert_eq!(c.on_build.as_deref(), Some(&["RUN x".to_string()][..]));
        assert_eq!(c.extra.get("Custom"), Some(&serde_json::json!({"k":1})));
        let out = String::from_utf8(canonical_json(&cfg).expect("json")).expect("utf8");
        assert_eq!(
            out,
            r#"{"architecture":"amd64","config":{"ArgsEscaped":true,"Custom":{"k":1},"Healthcheck":{"Interval":1000,"Test":["CMD","true"]},"Labels":{"a":"2","z":"1"},"OnBuild":["RUN x"],"Shell":["/bin/bash","-c"]},"moby.extra":true,"os":"linux","rootfs":{"diff_ids":[],"type":"layers"}}"#
        );
    }

    #[test]
    fn schema1_is_refused_with_a_clear_message() {
        let err = parse_manifest(br#"{"schemaVersion":1,"name":"x"}"#, "manifest").unwrap_err();
        assert!(err.to_string().contains("schema 1"), "{err}");
    }

    #[test]
    fn docker_v2_manifest_parses() {
        let raw = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{"mediaType":"application/vnd.docker.container.image.v1+json","size":2,"digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"},"layers":[]}"#;
        assert!(matches!(
            parse_manifest(raw, "m"),
            Ok(ParsedManifest::Image(_))
        ));
    }
}

/// Formats seconds since the epoch as RFC 3339 UTC (`2024-01-02T03:04:05Z`).
pub fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `SOURCE_DATE_EPOCH` when set and valid, else the current time.
pub fn build_time() -> i64 {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0)
        })
}

#[cfg(test)]
mod time_tests {
    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(super::rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }
}
