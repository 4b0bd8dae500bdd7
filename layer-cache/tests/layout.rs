//! OCI layout directories written and read by `layout::LayoutDir`, and the atomic
//! file replacement they use.

use std::io::Write;

use layer_cache::layout::{LayoutDir, LayoutError};
use layer_cache::{Digest, StoreError};

#[test]
fn layout_round_trip_and_a_corrupt_blob_is_refused() {
    let tmp = tempfile::TempDir::new().expect("tmp");
    let dir = tmp.path().join("layout");
    let big = vec![7u8; 300_000];
    let big_digest = Digest::of(&big);
    {
        let mut w = LayoutDir::create(&dir).expect("create");
        w.add_blob(&big_digest, Some(big.len() as u64), &big[..])
            .expect("add");
        let small = w.add_bytes(b"{}").expect("bytes");
        assert_eq!(small, Digest::of(b"{}"));
        w.write_index(br#"{"schemaVersion":2,"manifests":[]}"#)
            .expect("index");
    }
    assert_eq!(
        std::fs::read_to_string(dir.join("oci-layout")).expect("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#
    );
    let r = LayoutDir::open(&dir);
    assert_eq!(
        r.read_index(1 << 20).expect("read").expect("present"),
        br#"{"schemaVersion":2,"manifests":[]}"#
    );
    assert_eq!(
        r.read_blob(&big_digest, big.len() as u64, 1 << 20)
            .expect("blob"),
        big
    );
    // Bigger than the caller's limit: refused before reading.
    assert!(matches!(
        r.read_blob(&big_digest, big.len() as u64, 1000),
        Err(LayoutError::TooLarge {
            size: 300_000,
            limit: 1000,
            ..
        })
    ));

    // The file's bytes change under the same name: reading refuses them.
    std::fs::write(r.blob_path(&big_digest), vec![8u8; big.len()]).expect("corrupt");
    let err = r
        .read_blob(&big_digest, big.len() as u64, 1 << 20)
        .expect_err("corrupt");
    assert!(
        matches!(&err, LayoutError::Corrupt { digest, .. } if *digest == big_digest),
        "{err}"
    );
    assert!(!r.has_blob(&big_digest));

    // Adding content that does not hash to the digest leaves no blob behind, and
    // the index stays the earlier one.
    let mut w = LayoutDir::create(&dir).expect("reopen");
    let wrong = Digest::of(b"something else");
    let err = w
        .add_blob(&wrong, None, &b"not it"[..])
        .expect_err("mismatch");
    assert!(err.to_string().contains("failed verification"), "{err}");
    assert!(!w.blob_path(&wrong).exists());
    let leftovers: Vec<_> = std::fs::read_dir(dir.join("blobs/sha256"))
        .expect("blobs")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // A corrupt blob already there is replaced by verified content.
    w.add_blob(&big_digest, Some(big.len() as u64), &big[..])
        .expect("repair");
    assert!(w.has_blob(&big_digest));
}

#[test]
fn a_new_index_removes_the_blobs_only_the_old_one_named() {
    let tmp = tempfile::TempDir::new().expect("tmp");
    let dir = tmp.path().join("layout");
    let mut w = LayoutDir::create(&dir).expect("create");
    let old = w.add_bytes(b"old").expect("old");
    let kept = w.add_bytes(b"kept").expect("kept");
    w.write_index(b"{}").expect("index");
    drop(w);
    let mut w = LayoutDir::create(&dir).expect("again");
    w.add_bytes(b"kept").expect("kept");
    w.write_index(b"{}").expect("index");
    w.remove_other_blobs();
    assert!(!w.blob_path(&old).exists());
    assert!(w.has_blob(&kept));
}

#[test]
fn missing_index_is_none() {
    let tmp = tempfile::TempDir::new().expect("tmp");
    let r = LayoutDir::open(tmp.path());
    assert!(r.read_index(100).expect("read").is_none());
}

#[test]
fn write_atomically_replaces_whole_files() {
    let tmp = tempfile::TempDir::new().expect("tmp");
    let path = tmp.path().join("f.json");
    layer_cache::atomic::write_atomically(&path, |f| f.write_all(b"one")).expect("one");
    let err = layer_cache::atomic::write_atomically(&path, |f| {
        f.write_all(b"tw")?;
        Err(std::io::Error::other("no space left"))
    })
    .expect_err("fails");
    assert!(matches!(err, StoreError::Io { ref path, .. } if path.ends_with("f.json")));
    assert_eq!(std::fs::read(&path).expect("read"), b"one");
    assert_eq!(std::fs::read_dir(tmp.path()).expect("dir").count(), 1);
}
