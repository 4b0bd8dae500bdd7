//! Consistency check: every blob hashes to its name, every tag's image is complete.

use std::collections::{BTreeMap, BTreeSet};

use crate::digest::{Digest, HashingReader};
use crate::error::Result;
use crate::image::{self, ImageConfig, ParsedManifest, MAX_JSON_BLOB};
use crate::store::Store;

#[derive(Debug, Default)]
pub struct FsckReport {
    pub blobs_checked: u64,
    pub bytes_checked: u64,
    pub tags_checked: u64,
    /// Blobs listed but gone before they could be read (removed by a concurrent prune).
    pub blobs_vanished: u64,
    /// One line per problem, naming the blob or tag.
    pub problems: Vec<String>,
}

impl FsckReport {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

impl Store {
    pub fn fsck(&self) -> Result<FsckReport> {
        let mut report = FsckReport::default();
        let mut corrupt = BTreeSet::new();
        let dir = self.blobs_dir();
        for entry in fs_err::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(expected) = Digest::from_hex(&name) else {
                report.problems.push(format!(
                    "blobs/sha256/{name}: file name is not a sha256 digest"
                ));
                continue;
            };
            check_listed_blob(&entry.path(), expected, &mut report, &mut corrupt);
        }
        let mut diff_ids = BTreeMap::new();
        for tag in self.tags()? {
            report.tags_checked += 1;
            let mut problems = Vec::new();
            self.check_manifest(
                &tag.descriptor,
                &corrupt,
                &mut diff_ids,
                true,
                &mut problems,
            );
            for p in problems {
                report.problems.push(format!("tag {}: {p}", tag.name));
            }
        }
        Ok(report)
    }

    fn check_manifest(
        &self,
        desc: &oci_spec::image::Descriptor,
        corrupt: &BTreeSet<Digest>,
        diff_id_of: &mut BTreeMap<Digest, Digest>,
        required: bool,
        problems: &mut Vec<String>,
    ) {
        let digest = match image::descriptor_digest(desc) {
            Ok(d) => d,
            Err(e) => return problems.push(e.to_string()),
        };
        if !self.check_blob(desc, &digest, "manifest", corrupt, required, problems) {
            return;
        }
        let bytes = match self.read_blob(&digest, MAX_JSON_BLOB) {
            Ok(b) => b,
            Err(e) => return problems.push(e.to_string()),
        };
        match image::parse_manifest(&bytes, &format!("manifest {digest}")) {
            Err(e) => problems.push(e.to_string()),
            Ok(ParsedManifest::Index(idx)) => {
                for child in idx.manifests() {
                    // Platforms never fetched are absent by design; present ones must be whole.
                    self.check_manifest(child, corrupt, diff_id_of, false, problems);
                }
            }
            Ok(ParsedManifest::Image(m)) => {
                let config = m.config();
                let Ok(cd) = image::descriptor_digest(config) else {
                    return problems.push(format!("manifest {digest}: bad config digest"));
                };
                let mut diff_ids = None;
                if self.check_blob(config, &cd, "config", corrupt, true, problems) {
                    match self
                        .read_blob(&cd, MAX_JSON_BLOB)
                        .and_then(|b| ImageConfig::parse(&b, &format!("config {cd}")))
                    {
                        Ok(c) => diff_ids = Some(c.rootfs.diff_ids),
                        Err(e) => problems.push(e.to_string()),
                    }
                }
                if let Some(ids) = &diff_ids {
                    if ids.len() != m.layers().len() {
                        problems.push(format!(
                            "manifest {digest} has {} layers but its config lists {} diff_ids",
                            m.layers().len(),
                            ids.len()
                        ));
                    }
                }
                for (i, l) in m.layers().iter().enumerate() {
                    let ld = match image::descriptor_digest(l) {
                        Ok(ld) => ld,
                        Err(e) => {
                            problems.push(e.to_string());
                            continue;
                        }
                    };
                    if !self.check_blob(l, &ld, "layer", corrupt, true, problems) {
                        continue;
                    }
                    // The uncompressed content must be what the config promises.
                    let Some(want) = diff_ids.as_ref().and_then(|ids| ids.get(i)) else {
                        continue;
                    };
                    let got = match diff_id_of.get(&ld) {
                        Some(d) => d.clone(),
                        None => match self.diff_id_of(&ld, l.size()) {
                            Ok(d) => {
                                diff_id_of.insert(ld.clone(), d.clone());
                                d
                            }
                            Err(e) => {
                                problems.push(format!("layer {ld} cannot be decompressed: {e}"));
                                continue;
                            }
                        },
                    };
                    if &got != want {
                        problems.push(format!(
                            "layer {ld} uncompresses to {got}, config {cd} says {want}"
                        ));
                    }
                }
            }
        }
    }

    /// Presence and size of a referenced blob; false when it cannot be used further.
    fn check_blob(
        &self,
        desc: &oci_spec::image::Descriptor,
        digest: &Digest,
        kind: &str,
        corrupt: &BTreeSet<Digest>,
        required: bool,
        problems: &mut Vec<String>,
    ) -> bool {
        match self.blob_size(digest) {
            Ok(None) => {
                if required {
                    problems.push(format!("{kind} {digest} is missing"));
                }
                false
            }
            Ok(Some(size)) if size != desc.size() => {
                problems.push(format!(
                    "{kind} {digest} has {size} bytes, descriptor says {}",
                    desc.size()
                ));
                false
            }
            Ok(Some(_)) => !corrupt.contains(digest),
            Err(e) => {
                problems.push(e.to_string());
                false
            }
        }
    }
}

/// Hashes one blob found by the listing. One that is gone by now was removed by a
/// concurrent `prune` (it sweeps garbage without blocking fsck): nothing is left to
/// check, and a tag that needs it is reported as missing by the tag walk.
fn check_listed_blob(
    path: &std::path::Path,
    expected: Digest,
    report: &mut FsckReport,
    corrupt: &mut BTreeSet<Digest>,
) {
    match hash_file(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => report.blobs_vanished += 1,
        Ok((actual, len)) => {
            report.blobs_checked += 1;
            report.bytes_checked += len;
            if actual != expected {
                report.problems.push(format!(
                    "blob {expected} is corrupt: content hashes to {actual}"
                ));
                corrupt.insert(expected);
            }
        }
        Err(e) => {
            report.blobs_checked += 1;
            report
                .problems
                .push(format!("blob {expected} cannot be read: {e}"));
            corrupt.insert(expected);
        }
    }
}

fn hash_file(path: &std::path::Path) -> std::io::Result<(Digest, u64)> {
    let file = std::fs::File::open(path)?;
    let mut r = HashingReader::new(file);
    std::io::copy(&mut r, &mut std::io::sink())?;
    let (_, d, len) = r.finish();
    Ok((d, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fsck_blob_vanished_while_checking_is_not_a_problem() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let c = store.write_blob(b"garbage").unwrap();
        let path = store.blob_path(&c.digest);
        // Listed, then swept by a prune before fsck opens it.
        std::fs::remove_file(&path).unwrap();
        let mut report = FsckReport::default();
        let mut corrupt = BTreeSet::new();
        check_listed_blob(&path, c.digest.clone(), &mut report, &mut corrupt);
        assert!(report.is_ok(), "{:?}", report.problems);
        assert_eq!((report.blobs_checked, report.blobs_vanished), (0, 1));
        assert!(corrupt.is_empty());
    }

    #[test]
    fn fsck_tag_whose_manifest_vanished_is_still_a_problem() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let m = store.write_blob(br#"{"schemaVersion":2}"#).unwrap();
        let desc = image::descriptor(image::OCI_MANIFEST, &m.digest, m.size);
        store
            .set_tag(&crate::ImageRef::parse("gone:1").unwrap(), &desc)
            .unwrap();
        std::fs::remove_file(store.blob_path(&m.digest)).unwrap();
        let report = store.fsck().unwrap();
        assert!(
            report
                .problems
                .iter()
                .any(|p| p.contains("gone:1") && p.contains("is missing")),
            "{:?}",
            report.problems
        );
    }
}
