//! Library-level tests of the content store.

mod common;

use std::io::{Read, Write};

use layer_cache::image::{self, Compression, ContainerConfig, ImageConfig};
use layer_cache::layer::LayerOptions;
use layer_cache::{Digest, ImageRef, Store, StoreError};

fn store() -> (tempfile::TempDir, Store) {
    let tmp = tempfile::TempDir::new().expect("tmp");
    let s = Store::open(tmp.path().join("root")).expect("open");
    (tmp, s)
}

#[test]
fn opening_creates_an_oci_layout() {
    let (_t, s) = store();
    let layout = std::fs::read_to_string(s.root().join("oci-layout")).expect("oci-layout");
    assert_eq!(layout, r#"{"imageLayoutVersion":"1.0.0"}"#);
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s.index_path()).expect("index")).expect("json");
    assert_eq!(index["schemaVersion"], 2);
    assert!(index["manifests"].as_array().expect("array").is_empty());
    // Re-opening keeps what is there.
    s.write_blob(b"x").expect("blob");
    let again = Store::open(s.root()).expect("reopen");
    assert!(again.has_blob(&Digest::of(b"x")));
}

#[test]
fn blob_round_trip_and_idempotent_commit() {
    let (_t, s) = store();
    let c = s.write_blob(b"hello world").expect("write");
    assert_eq!(c.digest, Digest::of(b"hello world"));
    assert_eq!(c.size, 11);
    assert_eq!(s.read_blob(&c.digest, 100).expect("read"), b"hello world");
    let again = s
        .write_blob(b"hello world")
        .expect("already exists is success");
    assert_eq!(again, c);
    assert_eq!(s.list_blobs().expect("list"), vec![c.digest.clone()]);
    let err = s.read_blob(&c.digest, 5).unwrap_err();
    assert!(matches!(err, StoreError::TooLarge { .. }), "{err}");
}

#[test]
fn commit_with_wrong_digest_or_size_leaves_nothing() {
    let (_t, s) = store();
    let expected = Digest::of(b"the real content");
    let mut w = s.ingest().expect("ingest");
    w.write_all(b"something else").expect("write");
    let err = w.commit(Some(&expected), None).unwrap_err();
    assert!(matches!(err, StoreError::DigestMismatch { .. }), "{err}");
    let mut w = s.ingest().expect("ingest");
    w.write_all(b"the real content").expect("write");
    let err = w.commit(Some(&expected), Some(3)).unwrap_err();
    assert!(
        err.to_string().contains("has 16 bytes, expected 3"),
        "{err}"
    );
    assert!(s.list_blobs().expect("list").is_empty());
    assert_eq!(
        std::fs::read_dir(s.ingest_dir()).expect("ingest").count(),
        0
    );
}

#[test]
fn verified_read_fails_on_corruption() {
    let (_t, s) = store();
    let c = s.write_blob(b"precious bytes").expect("write");
    std::fs::write(s.blob_path(&c.digest), b"precious bytez").expect("corrupt");
    let mut r = s.open_blob(&c.digest, Some(c.size)).expect("open");
    let mut out = Vec::new();
    let err = r.read_to_end(&mut out).unwrap_err();
    assert!(err.to_string().contains("failed verification"), "{err}");
    let err = s.read_blob(&c.digest, 100).unwrap_err();
    assert!(err.to_string().contains(&c.digest.to_string()), "{err}");
}

#[test]
fn layers_are_deterministic_and_decompress_to_the_input() {
    let (_t, s) = store();
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(5);
    h.set_mode(0o644);
    h.set_cksum();
    tar.append_data(&mut h, "a.txt", &b"hello"[..])
        .expect("append");
    let tar = tar.into_inner().expect("tar");
    for compression in [Compression::Gzip, Compression::Zstd, Compression::None] {
        let opts = LayerOptions {
            compression,
            level: None,
        };
        let a = s.write_layer(&mut &tar[..], opts).expect("layer");
        let b = s.write_layer(&mut &tar[..], opts).expect("layer");
        assert_eq!(a, b, "{compression:?} must be deterministic");
        assert_eq!(a.diff_id, Digest::of(&tar));
        let mut back = Vec::new();
        s.open_layer(&a.descriptor())
            .expect("open")
            .read_to_end(&mut back)
            .expect("read");
        assert_eq!(back, tar);
        assert_eq!(s.diff_id_of(&a.digest, a.size).expect("diff id"), a.diff_id);
    }
}

#[test]
fn tags_resolve_by_name_digest_and_id() {
    let (_t, s) = store();
    let base = ImageConfig {
        architecture: "amd64".into(),
        os: "linux".into(),
        config: Some(ContainerConfig::default()),
        ..ImageConfig::default()
    };
    let made = common::one_layer_image(&s, &[0u8; 1024], base);
    let (m, config) = (made.manifest, made.config);
    let digest = image::descriptor_digest(&m).expect("digest");
    s.set_tag(
        &ImageRef::parse("docker.io/library/app:1").expect("ref"),
        &m,
    )
    .expect("tag");
    for name in [
        "app:1".to_string(),
        "docker.io/library/app:1".to_string(),
        format!("app@{digest}"),
        digest.to_string(),
        digest.short().to_string(),
    ] {
        let d = s.resolve(&name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            image::descriptor_digest(&d).expect("digest"),
            digest,
            "{name}"
        );
    }
    let err = s.resolve("app:2").unwrap_err();
    assert_eq!(err.to_string(), "no such image: app:2");
    let img = s.load_image(&m).expect("load");
    assert_eq!(img.config, config);
    assert!(s
        .remove_tag(&ImageRef::parse("app:1").expect("ref"))
        .expect("rm"));
    assert!(!s
        .remove_tag(&ImageRef::parse("app:1").expect("ref"))
        .expect("rm"));
    assert!(s.tags().expect("tags").is_empty());
}

#[test]
fn tagging_a_missing_manifest_is_refused() {
    let (_t, s) = store();
    let d = image::descriptor(image::OCI_MANIFEST, &Digest::of(b"nothing"), 7);
    let err = s
        .set_tag(&ImageRef::parse("x").expect("ref"), &d)
        .unwrap_err();
    assert!(err.to_string().contains("is not in the store"), "{err}");
}

#[test]
fn fsck_checks_layers_against_the_config_diff_ids() {
    let (_t, s) = store();
    let good = s
        .write_layer(&mut &[1u8; 2048][..], LayerOptions::default())
        .expect("layer");
    let other = s
        .write_layer(&mut &[2u8; 2048][..], LayerOptions::default())
        .expect("layer");
    let image_with = |diff_id: &Digest| {
        let config = ImageConfig {
            architecture: "amd64".into(),
            os: "linux".into(),
            rootfs: image::RootFs {
                kind: "layers".into(),
                diff_ids: vec![diff_id.clone()],
            },
            ..ImageConfig::default()
        };
        s.write_image(&config, &[good.descriptor()]).expect("image")
    };
    s.set_tag(
        &ImageRef::parse("ok:1").expect("ref"),
        &image_with(&good.diff_id),
    )
    .expect("tag");
    assert!(s.fsck().expect("fsck").is_ok());
    // Every blob hashes to its name, but the config promises other content.
    s.set_tag(
        &ImageRef::parse("lying:1").expect("ref"),
        &image_with(&other.diff_id),
    )
    .expect("tag");
    let report = s.fsck().expect("fsck");
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    let p = &report.problems[0];
    assert!(p.starts_with("tag lying:1: layer "), "{p}");
    assert!(
        p.contains(&format!("uncompresses to {}", good.diff_id)),
        "{p}"
    );
    assert!(p.contains(&format!("says {}", other.diff_id)), "{p}");
}

/// A gzip layer holding `dir/a.txt` (and its compressed bytes' diff_id).
fn small_layer(s: &Store, compression: Compression) -> (Vec<u8>, Digest) {
    let mut tar = tar::Builder::new(Vec::new());
    let mut d = tar::Header::new_gnu();
    d.set_entry_type(tar::EntryType::Directory);
    d.set_size(0);
    d.set_mode(0o755);
    d.set_uid(0);
    d.set_gid(0);
    d.set_mtime(0);
    d.set_cksum();
    tar.append_data(&mut d, "dir/", std::io::empty())
        .expect("dir");
    let body = vec![b'x'; 300_000];
    let mut h = tar::Header::new_gnu();
    h.set_size(body.len() as u64);
    h.set_mode(0o640);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_cksum();
    tar.append_data(&mut h, "dir/a.txt", &body[..])
        .expect("file");
    let tar = tar.into_inner().expect("tar");
    let layer = s
        .write_layer(
            &mut &tar[..],
            LayerOptions {
                compression,
                level: None,
            },
        )
        .expect("layer");
    let blob = s.read_blob(&layer.digest, 1 << 30).expect("blob");
    (blob, layer.diff_id)
}

fn scratch_left(s: &Store) -> Vec<String> {
    std::fs::read_dir(s.snapshots_dir().join("tmp"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.ends_with(".lock"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_snapshot_fed_while_the_blob_arrives_matches_the_layer() {
    for compression in [Compression::Gzip, Compression::Zstd, Compression::None] {
        let (_t, s) = store();
        let (blob, diff_id) = small_layer(&s, compression);
        let mut feeder = s
            .snapshot_feeder(&diff_id, blob.len() as u64, "layer")
            .expect("feeder")
            .expect("no snapshot yet");
        // Odd-sized writes, as network reads come.
        for chunk in blob.chunks(777) {
            feeder.write_all(chunk).expect("write");
        }
        let path = feeder.finish().expect("finish");
        assert_eq!(path, s.snapshot_path(&diff_id));
        let content = std::fs::read(path.join("dir/a.txt")).expect("unpacked file");
        assert_eq!(content.len(), 300_000, "{compression:?}");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path.join("dir/a.txt"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o640);
        assert!(
            s.snapshot_feeder(&diff_id, blob.len() as u64, "layer")
                .expect("feeder")
                .is_none(),
            "a present snapshot needs no feeder"
        );
        assert!(scratch_left(&s).is_empty(), "{:?}", scratch_left(&s));
    }
}

#[test]
fn a_fed_snapshot_with_the_wrong_diff_id_or_cut_short_is_never_committed() {
    let (_t, s) = store();
    let (blob, diff_id) = small_layer(&s, Compression::Gzip);
    let wrong = Digest::of(b"another layer");
    let mut feeder = s
        .snapshot_feeder(&wrong, blob.len() as u64, "layer")
        .expect("f")
        .expect("f");
    feeder.write_all(&blob).expect("write");
    let err = feeder.finish().unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("hashes to {diff_id}, but the config says {wrong}")),
        "{err}"
    );
    assert!(!s.snapshot_path(&wrong).exists());
    // An interrupted download: half the blob, then the feeder is dropped.
    let mut feeder = s
        .snapshot_feeder(&diff_id, blob.len() as u64, "layer")
        .expect("f")
        .expect("f");
    feeder.write_all(&blob[..blob.len() / 2]).expect("write");
    drop(feeder);
    assert!(!s.snapshot_path(&diff_id).exists());
    assert!(scratch_left(&s).is_empty(), "{:?}", scratch_left(&s));
    // Garbage is refused at finish, and the writes themselves never fail.
    let mut feeder = s
        .snapshot_feeder(&diff_id, blob.len() as u64, "layer")
        .expect("f")
        .expect("f");
    feeder.write_all(&vec![0x1f; 1 << 20]).expect("write");
    assert!(feeder.finish().is_err());
    assert!(!s.snapshot_path(&diff_id).exists());
    assert!(scratch_left(&s).is_empty(), "{:?}", scratch_left(&s));
}

#[test]
fn reachability_walks_indexes_nested_thousands_deep_without_recursion() {
    let (_t, s) = store();
    // 5,000 indexes, each naming the one below; the innermost names a blob.
    let leaf = s.write_blob(b"leaf").expect("leaf");
    let mut child = image::descriptor("application/octet-stream", &leaf.digest, leaf.size);
    let mut digests = vec![leaf.digest.clone()];
    for _ in 0..5_000 {
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": image::OCI_INDEX,
            "manifests": [child],
        });
        let c = s
            .write_blob(&serde_json::to_vec(&index).expect("json"))
            .expect("index");
        digests.push(c.digest.clone());
        child = image::descriptor(image::OCI_INDEX, &c.digest, c.size);
    }
    // A small stack: a recursive walk of this depth would overflow it.
    let got = std::thread::Builder::new()
        .stack_size(256 << 10)
        .spawn(move || {
            let mut out = std::collections::BTreeSet::new();
            s.reachable_from(&child, &mut out).map(|_| out)
        })
        .expect("thread")
        .join()
        .expect("no overflow")
        .expect("walk");
    assert_eq!(got.len(), digests.len());
    assert!(digests.iter().all(|d| got.contains(d)));
}
