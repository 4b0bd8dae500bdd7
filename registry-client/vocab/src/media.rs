//! The media types of OCI and Docker manifests, indexes, configs and layers, and what
//! each says: index or manifest, and how a layer is compressed.

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// The empty descriptor's type (`{}`), for artifacts without a config.
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const OCI_LAYER_NONDISTRIBUTABLE: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar";
pub const OCI_LAYER_NONDISTRIBUTABLE_GZIP: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
pub const OCI_LAYER_NONDISTRIBUTABLE_ZSTD: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const DOCKER_LAYER_FOREIGN_GZIP: &str =
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
pub const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// An index (OCI) or manifest list (Docker).
pub fn is_index(media_type: &str) -> bool {
    matches!(media_type, OCI_INDEX | DOCKER_MANIFEST_LIST)
}

/// An image manifest (OCI or Docker schema 2).
pub fn is_manifest(media_type: &str) -> bool {
    matches!(media_type, OCI_MANIFEST | DOCKER_MANIFEST)
}

/// A Docker schema 1 manifest, which nothing here reads.
pub fn is_schema1(media_type: &str) -> bool {
    matches!(media_type, DOCKER_SCHEMA1 | DOCKER_SCHEMA1_SIGNED)
}

/// An image config (OCI or Docker).
pub fn is_config(media_type: &str) -> bool {
    matches!(media_type, OCI_CONFIG | DOCKER_CONFIG)
}

/// A layer type whose blob registries may not serve (its `urls` say where it is).
pub fn is_foreign_layer(media_type: &str) -> bool {
    matches!(
        media_type,
        OCI_LAYER_NONDISTRIBUTABLE
            | OCI_LAYER_NONDISTRIBUTABLE_GZIP
            | OCI_LAYER_NONDISTRIBUTABLE_ZSTD
            | DOCKER_LAYER_FOREIGN_GZIP
    )
}

/// A layer type we can unpack (any [`Compression`]).
pub fn is_layer(media_type: &str) -> bool {
    Compression::of_media_type(media_type).is_some()
}

/// How a layer blob is compressed, from its media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// `None` for a type that is not a layer we know.
    pub fn of_media_type(mt: &str) -> Option<Compression> {
        match mt {
            OCI_LAYER | DOCKER_LAYER | OCI_LAYER_NONDISTRIBUTABLE => Some(Compression::None),
            OCI_LAYER_GZIP
            | DOCKER_LAYER_GZIP
            | OCI_LAYER_NONDISTRIBUTABLE_GZIP
            | DOCKER_LAYER_FOREIGN_GZIP => Some(Compression::Gzip),
            OCI_LAYER_ZSTD | OCI_LAYER_NONDISTRIBUTABLE_ZSTD => Some(Compression::Zstd),
            _ => None,
        }
    }

    /// The OCI layer type of this compression.
    pub fn oci_media_type(self) -> &'static str {
        match self {
            Compression::None => OCI_LAYER,
            Compression::Gzip => OCI_LAYER_GZIP,
            Compression::Zstd => OCI_LAYER_ZSTD,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_compressions() {
        assert!(is_index(OCI_INDEX) && is_index(DOCKER_MANIFEST_LIST));
        assert!(!is_index(OCI_MANIFEST));
        assert!(is_manifest(OCI_MANIFEST) && is_manifest(DOCKER_MANIFEST));
        assert!(!is_manifest(DOCKER_SCHEMA1) && is_schema1(DOCKER_SCHEMA1_SIGNED));
        assert!(is_config(DOCKER_CONFIG) && !is_config(OCI_LAYER));
        for (mt, c) in [
            (OCI_LAYER, Compression::None),
            (DOCKER_LAYER, Compression::None),
            (OCI_LAYER_GZIP, Compression::Gzip),
            (DOCKER_LAYER_GZIP, Compression::Gzip),
            (DOCKER_LAYER_FOREIGN_GZIP, Compression::Gzip),
            (OCI_LAYER_NONDISTRIBUTABLE_ZSTD, Compression::Zstd),
            (OCI_LAYER_ZSTD, Compression::Zstd),
        ] {
            assert_eq!(Compression::of_media_type(mt), Some(c), "{mt}");
            assert!(is_layer(mt));
        }
        assert_eq!(Compression::of_media_type(OCI_CONFIG), None);
        assert!(is_foreign_layer(DOCKER_LAYER_FOREIGN_GZIP) && !is_foreign_layer(OCI_LAYER));
    }
}
