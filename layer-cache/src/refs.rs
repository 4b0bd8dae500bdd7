//! Local image names and the tags kept in the layout's `index.json`.
//!
//! Names are stored in Docker's familiar form (`busybox:latest`,
//! `localhost:5000/app:1`): `docker.io/library/` is dropped, a missing tag is
//! `latest`. That string is the `org.opencontainers.image.ref.name` annotation, so
//! `skopeo inspect oci:$ROOT:busybox:latest` finds the image.

use std::collections::BTreeMap;
use std::fmt;

use oci_spec::image::{Descriptor, ImageIndex};
use oci_vocab::Reference;
use serde_json::Value;

use crate::digest::Digest;
use crate::error::{Result, StoreError};
use crate::image::{
    self, canonical_json, descriptor_digest, IMAGE_NAME_ANNOTATION, REF_NAME_ANNOTATION,
};
use crate::store::Store;

/// A parsed local reference: `repo[:tag][@digest]`, the familiar form of Docker's
/// reference grammar (`oci_vocab::Reference`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// Familiar repository, e.g. `busybox` or `localhost:5000/team/app`.
    pub repo: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

impl ImageRef {
    /// Parses with Docker's grammar (`oci_vocab::Reference`) and keeps the familiar name.
    pub fn parse(input: &str) -> Result<ImageRef> {
        let r = Reference::parse(input).map_err(|e| StoreError::InvalidReference {
            name: e.input,
            reason: e.kind.to_string(),
        })?;
        Ok(ImageRef {
            repo: r.familiar_name(),
            digest: r.digest.clone(),
            tag: r.tag,
        })
    }

    /// The name under which a tag is stored: `repo:tag`, `latest` by default.
    pub fn tagged_name(&self) -> String {
        format!("{}:{}", self.repo, self.tag.as_deref().unwrap_or("latest"))
    }

    /// The full name Docker and containerd write (`docker.io/library/busybox:latest`).
    pub fn full_name(&self) -> String {
        // A familiar name parses back to the name it came from.
        let name = Reference::parse(&self.repo).map_or_else(|_| self.repo.clone(), |r| r.name());
        format!("{name}:{}", self.tag.as_deref().unwrap_or("latest"))
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.repo)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// One tag in the store.
#[derive(Debug, Clone)]
pub struct TagEntry {
    pub name: String,
    pub descriptor: Descriptor,
}

impl Store {
    fn read_index(&self) -> Result<ImageIndex> {
        let path = self.index_path();
        let bytes = fs_err::read(&path)?;
        serde_json::from_slice(&bytes).map_err(|e| StoreError::json(path.display().to_string(), e))
    }

    /// All tags, sorted by name.
    pub fn tags(&self) -> Result<Vec<TagEntry>> {
        let index = self.read_index()?;
        let mut out: Vec<TagEntry> = index
            .manifests()
            .iter()
            .filter_map(|d| {
                let name = d.annotations().as_ref()?.get(REF_NAME_ANNOTATION)?.clone();
                Some(TagEntry {
                    name,
                    descriptor: d.clone(),
                })
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Points `name` (a tagged name, see [`ImageRef::tagged_name`]) at a manifest.
    pub fn set_tag(&self, r: &ImageRef, manifest: &Descriptor) -> Result<()> {
        let name = r.tagged_name();
        let full = r.full_name();
        let digest = descriptor_digest(manifest)?;
        if !self.has_blob(&digest) {
            return Err(StoreError::BlobNotFound(digest));
        }
        self.update_index(|entries| {
            let mut d = manifest.clone();
            let mut ann = d.annotations().clone().unwrap_or_default();
            ann.insert(REF_NAME_ANNOTATION.to_string(), name.clone());
            ann.insert(IMAGE_NAME_ANNOTATION.to_string(), full.clone());
            d.set_annotations(Some(ann));
            entries.insert(name.clone(), d);
            true
        })
    }

    /// Removes a tag; `false` when there was none.
    pub fn remove_tag(&self, r: &ImageRef) -> Result<bool> {
        let name = r.tagged_name();
        let mut removed = false;
        self.update_index(|entries| {
            removed = entries.remove(&name).is_some();
            removed
        })?;
        Ok(removed)
    }

    /// Read-modify-write of index.json under the index lock.
    fn update_index(
        &self,
        f: impl FnOnce(&mut BTreeMap<String, Descriptor>) -> bool,
    ) -> Result<()> {
        let _lock = self.index_lock()?;
        let index = self.read_index()?;
        let mut untagged = Vec::new();
        let mut entries = BTreeMap::new();
        for d in index.manifests() {
            match d
                .annotations()
                .as_ref()
                .and_then(|a| a.get(REF_NAME_ANNOTATION))
            {
                Some(n) => {
                    entries.insert(n.clone(), d.clone());
                }
                None => untagged.push(d.clone()),
            }
        }
        if !f(&mut entries) {
            return Ok(());
        }
        let mut manifests: Vec<Value> = Vec::new();
        for d in entries.values().chain(untagged.iter()) {
            manifests.push(serde_json::to_value(d).map_err(|e| StoreError::json("index.json", e))?);
        }
        let doc = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": image::OCI_INDEX,
            "manifests": manifests,
        });
        let bytes = canonical_json(&doc)?;
        self.replace_file(&self.index_path(), &bytes)
    }

    /// Finds an image by tag, `name@digest`, full digest, or a unique prefix of an
    /// image id (the digest `images` shows). As Docker's containerd image service: a
    /// tag wins over an id prefix, and a prefix is 4 to 64 hex digits, optionally
    /// after `sha256:`.
    pub fn resolve(&self, input: &str) -> Result<Descriptor> {
        let tags = self.tags()?;
        let parsed = ImageRef::parse(input);
        if let Ok(r) = &parsed {
            if r.digest.is_none() {
                let name = r.tagged_name();
                if let Some(t) = tags.iter().find(|t| t.name == name) {
                    return Ok(strip_ref_annotations(&t.descriptor));
                }
            }
        }
        if let Some(hexish) = id_prefix(input) {
            if let Some(d) = resolve_id_prefix(&tags, hexish)? {
                return Ok(d);
            }
            if hexish.len() == 64 {
                if let Ok(d) = Digest::from_hex(hexish) {
                    if let Some(size) = self.blob_size(&d)? {
                        let bytes = self.read_blob(&d, image::MAX_JSON_BLOB)?;
                        let mt = media_type_of(&bytes);
                        return Ok(image::descriptor(&mt, &d, size));
                    }
                }
            }
        }
        let r = parsed?;
        if let Some(digest) = &r.digest {
            for t in &tags {
                if descriptor_digest(&t.descriptor)? == *digest {
                    return Ok(strip_ref_annotations(&t.descriptor));
                }
            }
            if let Some(size) = self.blob_size(digest)? {
                let bytes = self.read_blob(digest, image::MAX_JSON_BLOB)?;
                return Ok(image::descriptor(&media_type_of(&bytes), digest, size));
            }
        }
        Err(StoreError::ImageNotFound(input.to_string()))
    }

    /// The image id `input` names when it is a unique id prefix and no tag, as
    /// [`Store::resolve`] decides; `None` for a tag or `name@digest`.
    pub fn resolve_id(&self, input: &str) -> Result<Option<Digest>> {
        let tags = self.tags()?;
        if let Ok(r) = ImageRef::parse(input) {
            let name = r.tagged_name();
            if r.digest.is_some() || tags.iter().any(|t| t.name == name) {
                return Ok(None);
            }
        }
        match id_prefix(input) {
            Some(hexish) => resolve_id_prefix(&tags, hexish)?
                .map(|d| descriptor_digest(&d))
                .transpose(),
            None => Ok(None),
        }
    }
}

/// The hex of `input` when it can be an id prefix: 4 to 64 lowercase hex digits,
/// optionally after `sha256:` (Docker's `truncatedID`).
fn id_prefix(input: &str) -> Option<&str> {
    let hexish = input.strip_prefix("sha256:").unwrap_or(input);
    let ok = (4..=64).contains(&hexish.len())
        && hexish
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    ok.then_some(hexish)
}

/// The one tagged image whose id starts with `hexish`; several tags of one image are
/// one match, two images an error naming both.
fn resolve_id_prefix(tags: &[TagEntry], hexish: &str) -> Result<Option<Descriptor>> {
    let mut found: BTreeMap<String, &TagEntry> = BTreeMap::new();
    for t in tags {
        let d = descriptor_digest(&t.descriptor)?;
        if d.hex().starts_with(hexish) {
            found.entry(d.hex().to_string()).or_insert(t);
        }
    }
    if found.len() > 1 {
        return Err(StoreError::AmbiguousId {
            prefix: hexish.to_string(),
            candidates: found
                .iter()
                .map(|(hex, t)| format!("{} ({})", hex.get(..12).unwrap_or(hex), t.name))
                .collect(),
        });
    }
    Ok(found
        .into_values()
        .next()
        .map(|t| strip_ref_annotations(&t.descriptor)))
}

fn strip_ref_annotations(d: &Descriptor) -> Descriptor {
    let mut d = d.clone();
    if let Some(mut ann) = d.annotations().clone() {
        ann.remove(REF_NAME_ANNOTATION);
        ann.remove(IMAGE_NAME_ANNOTATION);
        d.set_annotations(if ann.is_empty() { None } else { Some(ann) });
    }
    d
}

fn media_type_of(bytes: &[u8]) -> String {
    let v: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
    match v.get("mediaType").and_then(Value::as_str) {
        Some(mt) => mt.to_string(),
        None if v.get("manifests").is_some() => image::OCI_INDEX.to_string(),
        None => image::OCI_MANIFEST.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_like_docker() {
        let cases = [
            (
                "busybox",
                "busybox:latest",
                "docker.io/library/busybox:latest",
            ),
            (
                "docker.io/library/busybox:1.36",
                "busybox:1.36",
                "docker.io/library/busybox:1.36",
            ),
            (
                "index.docker.io/foo/bar",
                "foo/bar:latest",
                "docker.io/foo/bar:latest",
            ),
            (
                "localhost:5000/app:1",
                "localhost:5000/app:1",
                "localhost:5000/app:1",
            ),
            (
                "localhost/app",
                "localhost/app:latest",
                "localhost/app:latest",
            ),
            (
                "ghcr.io/a/b/c:v1.2",
                "ghcr.io/a/b/c:v1.2",
                "ghcr.io/a/b/c:v1.2",
            ),
            ("hello:1", "hello:1", "docker.io/library/hello:1"),
        ];
        for (input, tagged, full) in cases {
            let r = ImageRef::parse(input).expect(input);
            assert_eq!(r.tagged_name(), tagged, "{input}");
            assert_eq!(r.full_name(), full, "{input}");
        }
    }

    #[test]
    fn id_prefixes_resolve_when_unique_and_name_candidates_otherwise() {
        let entry = |name: &str, hex: String| TagEntry {
            name: name.to_string(),
            descriptor: image::descriptor(
                image::OCI_MANIFEST,
                &Digest::from_hex(&hex).expect("hex"),
                100,
            ),
        };
        let a = format!("abcd1{}", "0".repeat(59));
        let b = format!("abcd2{}", "0".repeat(59));
        let tags = [
            entry("a:1", a.clone()),
            entry("a:2", a.clone()),
            entry("b:1", b),
        ];
        let found = resolve_id_prefix(&tags, "abcd1")
            .expect("unique")
            .expect("found");
        assert_eq!(descriptor_digest(&found).expect("digest").hex(), a);
        assert!(resolve_id_prefix(&tags, "ffff").expect("none").is_none());
        let err = resolve_id_prefix(&tags, "abcd").unwrap_err().to_string();
        assert!(
            err.contains("\"abcd\"") && err.contains("abcd10000000 (a:1)") && err.contains("(b:1)"),
            "{err}"
        );
        assert_eq!(id_prefix("sha256:abcd"), Some("abcd"));
        assert_eq!(id_prefix("abc"), None);
        assert_eq!(id_prefix("ABCD"), None);
        assert_eq!(id_prefix("busybox"), None);
    }

    #[test]
    fn rejects_malformed_names() {
        for bad in [
            "",
            "UPPER",
            "a//b",
            "a:",
            "a:-x",
            "-a",
            "a@sha256:1234",
            "a_-b",
            "a/",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad} should be refused");
        }
        let err = ImageRef::parse("Busybox").unwrap_err().to_string();
        assert!(
            err.contains("\"Busybox\"") && err.contains("lowercase"),
            "{err}"
        );
    }

    /// The store folded `registry-1.docker.io` into the Hub and took hosts of any of
    /// `.-:[]`; Docker's grammar does neither.
    #[test]
    fn store_names_follow_dockers_grammar() {
        let r = ImageRef::parse("registry-1.docker.io/library/x:1").expect("ref");
        assert_eq!(r.tagged_name(), "registry-1.docker.io/library/x:1");
        assert_eq!(r.full_name(), "registry-1.docker.io/library/x:1");
        assert!(ImageRef::parse("ho_st.io/app").is_err());
        assert!(ImageRef::parse("a.-b.io/app").is_err());
        let long = format!("{}:1", "a".repeat(240));
        assert!(
            ImageRef::parse(&long).is_err(),
            "longer than 255 with docker.io/library/"
        );
        let r = ImageRef::parse("[::1]:5000/app").expect("ipv6 host");
        assert_eq!(r.tagged_name(), "[::1]:5000/app:latest");
    }
}
