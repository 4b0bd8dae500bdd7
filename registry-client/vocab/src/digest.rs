//! sha256 content digests: the one `Digest` type the store, the registry client and
//! the builder share. Only sha256 is accepted: it is what images use and what we can
//! verify.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

/// A `sha256:<64 lowercase hex>` content digest. The store holds sha256 blobs only.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hex: String,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid digest {input:?}: {reason}")]
pub struct DigestError {
    pub input: String,
    pub reason: &'static str,
}

impl Digest {
    pub fn from_sha256_bytes(bytes: &[u8]) -> Digest {
        // Digits pushed into a sized string: `hex::encode` collects a char iterator,
        // which showed in a no-op rebuild's profile (thousands of digests).
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut hex = String::with_capacity(bytes.len() * 2);
        for b in bytes {
            hex.push(char::from(DIGITS[usize::from(b >> 4)]));
            hex.push(char::from(DIGITS[usize::from(b & 0x0f)]));
        }
        Digest { hex }
    }

    /// Digest of a byte slice.
    pub fn of(data: &[u8]) -> Digest {
        Digest::from_sha256_bytes(&Sha256::digest(data))
    }

    /// Accepts a bare 64-char hex string (as in blob file names).
    pub fn from_hex(hex: &str) -> Result<Digest, DigestError> {
        if hex.len() != 64 {
            return Err(DigestError {
                input: hex.to_string(),
                reason: "sha256 hex must be 64 characters",
            });
        }
        if !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(DigestError {
                input: hex.to_string(),
                reason: "sha256 hex must be lowercase hexadecimal",
            });
        }
        Ok(Digest {
            hex: hex.to_string(),
        })
    }

    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// First 12 hex characters, as `docker images` shows ids.
    pub fn short(&self) -> &str {
        &self.hex[..12]
    }
}

impl FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(':') {
            // The error names the whole digest, as it was written.
            Some(("sha256", hex)) => Digest::from_hex(hex).map_err(|e| DigestError {
                input: s.to_string(),
                reason: e.reason,
            }),
            Some(_) => Err(DigestError {
                input: s.to_string(),
                reason: "only sha256 digests are supported",
            }),
            None => Err(DigestError {
                input: s.to_string(),
                reason: "expected algorithm:hex",
            }),
        }
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl TryFrom<&oci_spec::image::Digest> for Digest {
    type Error = DigestError;
    fn try_from(d: &oci_spec::image::Digest) -> Result<Self, Self::Error> {
        d.to_string().parse()
    }
}

impl From<&Digest> for oci_spec::image::Digest {
    fn from(d: &Digest) -> Self {
        // A validated sha256 digest always parses.
        oci_spec::image::Sha256Digest::from_str(&d.hex)
            .map(Into::into)
            .unwrap_or_else(|_| unreachable!("validated sha256 hex"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_displays() {
        let d = Digest::of(b"");
        assert_eq!(
            d.to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(d.to_string().parse::<Digest>().ok(), Some(d));
        assert!("sha512:abcd".parse::<Digest>().is_err());
        assert!("sha256:ABCDEF".parse::<Digest>().is_err());
        assert!(format!("sha256:{}", "G".repeat(64))
            .parse::<Digest>()
            .is_err());
    }

    #[derive(serde::Serialize, serde::Deserialize)]
    struct Desc {
        #[serde(rename = "mediaType")]
        media_type: String,
        digest: Digest,
        size: u64,
    }

    #[derive(serde::Serialize, serde::Deserialize)]
    struct ImageManifest {
        #[serde(rename = "schemaVersion")]
        schema_version: u32,
        #[serde(rename = "mediaType")]
        media_type: String,
        config: Desc,
        layers: Vec<Desc>,
    }

    #[test]
    fn a_manifests_json_round_trips_byte_identically() {
        let json = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{}","size":3}}]}}"#,
            Digest::of(b"{}"),
            Digest::of(b"abc")
        );
        let m: ImageManifest = serde_json::from_str(&json).expect("parse");
        assert_eq!(m.config.digest, Digest::of(b"{}"));
        assert_eq!(serde_json::to_string(&m).expect("write"), json);
    }

    #[test]
    fn a_digest_that_does_not_parse_fails_deserialising_naming_it() {
        let bad = format!("sha512:{}", "a".repeat(128));
        let err = serde_json::from_str::<Digest>(&format!("{bad:?}")).expect_err("sha512");
        assert!(
            err.to_string().contains(&format!("invalid digest {bad:?}")),
            "{err}"
        );
    }
}
