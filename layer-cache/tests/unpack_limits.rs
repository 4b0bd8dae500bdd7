//! Layer unpacks are capped in content bytes and entries, so a small hostile
//! layer cannot fill the disk.

use std::io::Write;

use layer_cache::image;
use layer_cache::store::UnpackOverrides;
use layer_cache::unpack::{UnpackError, UnpackLimits};
use layer_cache::{Digest, Store, StoreError};

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

fn file_header(name: &str, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_path(name).expect("path");
    h.set_size(size);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    h
}

/// A gzip layer (one gzip member per piece, so zeros are compressed once):
/// `files` of `mib` MiB of zeros each.
fn zero_layer(files: &[(&str, u64)]) -> Vec<u8> {
    let zeros = gzip(&vec![0u8; 1 << 20]);
    let mut out = Vec::new();
    for (name, mib) in files {
        out.extend(gzip(file_header(name, mib << 20).as_bytes()));
        for _ in 0..*mib {
            out.extend_from_slice(&zeros);
        }
    }
    out.extend(gzip(&[0u8; 1024]));
    out
}

/// Stores `blob` as a layer and unpacks it into a snapshot.
fn unpack_blob(s: &Store, blob: &[u8]) -> Result<std::path::PathBuf, StoreError> {
    let c = s.write_blob(blob).expect("blob");
    let desc = image::descriptor(image::OCI_LAYER_GZIP, &c.digest, c.size);
    // The unpack is stopped before the diff_id is ever compared.
    s.ensure_snapshot(&desc, &Digest::of(b"not checked"))
}

fn leftovers(s: &Store) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(s.snapshots_dir())
        .into_iter()
        .flatten()
        .chain(
            std::fs::read_dir(s.snapshots_dir().join("tmp"))
                .into_iter()
                .flatten(),
        )
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "tmp" && !n.ends_with(".lock"))
        .collect();
    v.sort();
    v
}

#[test]
fn default_unpack_limits_are_ten_times_the_compressed_size_plus_a_gib() {
    let l = UnpackLimits::for_layer(10_000_000);
    assert_eq!(l.max_bytes, 100_000_000 + (1 << 30));
    assert_eq!(l.max_entries, 1_000_000 + 312_500);
    assert_eq!(UnpackLimits::for_layer(u64::MAX).max_bytes, u64::MAX);
    let tmp = tempfile::TempDir::new().expect("tmp");
    let s = Store::open(tmp.path()).expect("store");
    assert_eq!(s.layer_unpack_limits(10_000_000), l);
    let s = s.with_unpack_overrides(UnpackOverrides {
        max_bytes: Some(5),
        max_entries: None,
    });
    assert_eq!(
        s.layer_unpack_limits(10_000_000),
        UnpackLimits {
            max_bytes: 5,
            max_entries: l.max_entries
        }
    );
}

#[test]
fn unpack_refuses_a_gzip_bomb_layer_at_the_default_cap_before_writing() {
    // 10 MB of gzip that inflates to a 10 GiB file: its header alone passes the
    // default cap (10 x 10 MB + 1 GiB), so nothing is written.
    let blob = zero_layer(&[("bomb", 10 << 10)]);
    assert!(blob.len() < 12 << 20, "{} bytes", blob.len());
    let tmp = tempfile::TempDir::new().expect("tmp");
    let s = Store::open(tmp.path()).expect("store");
    let started = std::time::Instant::now();
    let err = unpack_blob(&s, &blob).unwrap_err();
    let limit = UnpackLimits::for_layer(blob.len() as u64).max_bytes;
    match &err {
        StoreError::Unpack(UnpackError::TooLarge { entry, limit: l }) => {
            assert_eq!((entry.as_str(), *l), ("bomb", limit));
        }
        e => panic!("{e:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains(&format!("more than {limit} bytes")), "{msg}");
    assert!(started.elapsed().as_secs() < 10, "{:?}", started.elapsed());
    assert!(leftovers(&s).is_empty(), "{:?}", leftovers(&s));
}

#[test]
fn unpack_stops_a_layer_whose_files_add_up_past_the_byte_cap() {
    // Each file alone fits; together they pass the (lowered) cap of 8 MiB.
    let names: Vec<String> = (0..64).map(|i| format!("f{i:02}")).collect();
    let files: Vec<(&str, u64)> = names.iter().map(|n| (n.as_str(), 1)).collect();
    let tmp = tempfile::TempDir::new().expect("tmp");
    let s = Store::open(tmp.path())
        .expect("store")
        .with_unpack_overrides(UnpackOverrides {
            max_bytes: Some(8 << 20),
            max_entries: None,
        });
    let err = unpack_blob(&s, &zero_layer(&files)).unwrap_err();
    match &err {
        StoreError::Unpack(UnpackError::TooLarge { entry, limit }) => {
            assert_eq!((entry.as_str(), *limit), ("f08", 8 << 20));
        }
        e => panic!("{e:?}"),
    }
    assert!(leftovers(&s).is_empty(), "{:?}", leftovers(&s));
}

#[test]
fn unpack_stops_a_layer_with_too_many_entries() {
    let mut tar = tar::Builder::new(Vec::new());
    for i in 0..5000 {
        let h = file_header(&format!("e/{i}"), 0);
        tar.append(&h, std::io::empty()).expect("append");
    }
    let blob = gzip(&tar.into_inner().expect("tar"));
    let tmp = tempfile::TempDir::new().expect("tmp");
    let s = Store::open(tmp.path())
        .expect("store")
        .with_unpack_overrides(UnpackOverrides {
            max_bytes: None,
            max_entries: Some(1000),
        });
    let err = unpack_blob(&s, &blob).unwrap_err();
    assert!(
        matches!(
            &err,
            StoreError::Unpack(UnpackError::TooManyEntries { limit: 1000, .. })
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("more than 1000 entries"), "{err}");
    assert!(leftovers(&s).is_empty(), "{:?}", leftovers(&s));
}
