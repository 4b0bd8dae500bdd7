//! The cache artifact: records of one store exported to an OCI layout and imported
//! into another.

use layer_cache::cache_artifact::{
    Added, CacheArtifact, CacheArtifactError, CacheContents, CacheManifest, CACHE_CONFIG,
};
use layer_cache::cache_index::CacheRecord;
use layer_cache::image;
use layer_cache::{Digest, Store};

const GZIP_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

fn store(tmp: &std::path::Path, name: &str) -> Store {
    Store::open(tmp.join(name)).expect("open")
}

fn record(key: &[u8], step: &str, layer: Option<&[u8]>) -> CacheRecord {
    CacheRecord {
        key: Digest::of(key),
        step: step.to_string(),
        layer: layer.map(|l| image::descriptor(GZIP_LAYER, &Digest::of(l), l.len() as u64)),
        diff_id: None,
        config: None,
        history: None,
        manifest: None,
        created: 1_700_000_000,
        size: layer.map_or(0, |l| l.len() as u64),
    }
}

#[test]
fn records_round_trip_through_a_local_layout() {
    let tmp = tempfile::TempDir::new().expect("tmp");
    let a = store(tmp.path(), "a");
    a.write_blob(b"layer one").expect("blob");
    a.write_blob(b"layer two").expect("blob");
    let recs = [
        record(b"k1", "RUN one", Some(b"layer one")),
        record(b"k2", "RUN two", Some(b"layer two")),
        // Same layer as k1: listed once.
        record(b"k3", "RUN one again", Some(b"layer one")),
        record(b"k4", "ENV X=1", None),
        // Its layer is not in the store: left out, by step.
        record(b"k5", "RUN lost", Some(b"never stored")),
    ];
    for r in &recs {
        a.cache_put(r).expect("put");
    }
    let keys: Vec<Digest> = recs.iter().map(|r| r.key.clone()).collect();
    let art = CacheArtifact::collect(
        &a,
        keys.iter().chain([&Digest::of(b"unknown key")]),
        Vec::new(),
        None,
    )
    .expect("collect");
    assert_eq!(art.records, 4);
    assert_eq!(art.layers.len(), 2);
    assert_eq!(art.left_out, ["RUN lost"]);
    assert_eq!(art.layer_bytes(), 18);

    let dir = tmp.path().join("cache");
    let digest = art.write_local(&a, &dir).expect("write");
    assert_eq!(digest, Digest::of(&art.manifest));
    let m: serde_json::Value = serde_json::from_slice(&art.manifest).expect("json");
    assert_eq!(m["artifactType"], CACHE_CONFIG);
    assert_eq!(m["config"]["mediaType"], CACHE_CONFIG);
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).expect("index"))
            .expect("json");
    assert_eq!(index["manifests"][0]["digest"], digest.to_string());
    assert_eq!(
        index["manifests"][0]["annotations"][image::REF_NAME_ANNOTATION],
        "latest"
    );

    let contents = CacheContents::read_local(&dir).expect("read");
    assert_eq!(contents.records, recs[..4].to_vec());
    assert_eq!(contents.layers.len(), 2);
    let b = store(tmp.path(), "b");
    let added = contents.add_to(&b).expect("add");
    assert_eq!(
        added,
        Added {
            records: 4,
            skipped: 0
        }
    );
    for r in &recs[..4] {
        assert_eq!(b.cache_get(&r.key).expect("get").as_ref(), Some(r));
    }
    assert!(b.cache_get(&recs[4].key).expect("get").is_none());
}

#[test]
fn records_whose_layer_the_cache_lacks_are_skipped() {
    let tmp = tempfile::TempDir::new().expect("tmp");
    let a = store(tmp.path(), "a");
    a.write_blob(b"layer one").expect("blob");
    a.cache_put(&record(b"k1", "RUN one", Some(b"layer one")))
        .expect("put");
    let art = CacheArtifact::collect(&a, [&Digest::of(b"k1")], Vec::new(), None).expect("collect");
    let mut contents = CacheManifest::parse(&art.manifest, "manifest")
        .expect("parse")
        .contents(&art.config)
        .expect("contents");
    // A record naming a layer the manifest does not list, and a whole-build record.
    contents
        .records
        .push(record(b"k2", "RUN two", Some(b"layer two")));
    let mut whole = record(b"k3", "build", None);
    whole.manifest = Some(image::descriptor(image::OCI_MANIFEST, &Digest::of(b"m"), 1));
    contents.records.push(whole);
    let b = store(tmp.path(), "b");
    assert_eq!(
        contents.add_to(&b).expect("add"),
        Added {
            records: 1,
            skipped: 2
        }
    );
    assert!(b.cache_get(&Digest::of(b"k2")).expect("get").is_none());
}

#[test]
fn other_artifacts_and_damaged_caches_are_refused() {
    let tmp = tempfile::TempDir::new().expect("tmp");
    let missing = CacheContents::read_local(&tmp.path().join("none")).expect_err("missing");
    assert!(
        missing.to_string().starts_with("not found (")
            && missing.to_string().contains("index.json"),
        "{missing}"
    );

    let index = br#"{"schemaVersion":2,"manifests":[]}"#;
    let e = CacheManifest::parse(index, "x:1").expect_err("index");
    assert_eq!(e.to_string(), "x:1 is an index, not a mybuild cache");
    let image = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": image::OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": Digest::of(b"{}").to_string(),
            "size": 2,
        },
        "layers": [],
    }))
    .expect("json");
    let e = CacheManifest::parse(&image, "x:1").expect_err("image");
    assert_eq!(
        e.to_string(),
        "not a mybuild cache (config media type application/vnd.oci.image.config.v1+json)"
    );

    // A cache whose manifest blob was changed on disk.
    let a = store(tmp.path(), "a");
    let art = CacheArtifact::collect(&a, [], Vec::new(), None).expect("collect");
    let dir = tmp.path().join("cache");
    let digest = art.write_local(&a, &dir).expect("write");
    let path = dir.join("blobs/sha256").join(digest.hex());
    let mut bytes = std::fs::read(&path).expect("read");
    bytes[0] = b' ';
    std::fs::write(&path, bytes).expect("write");
    let e = CacheContents::read_local(&dir).expect_err("corrupt");
    assert!(matches!(e, CacheArtifactError::Layout(_)), "{e}");
    assert!(e.to_string().contains("is corrupt"), "{e}");

    let e = CacheManifest::parse(&art.manifest, "m")
        .expect("parse")
        .contents(b"[]")
        .expect_err("not records");
    assert!(
        e.to_string().starts_with("records blob sha256:")
            && e.to_string().ends_with("is not a cache record list"),
        "{e}"
    );
}

#[test]
fn a_cache_layer_digest_the_store_cannot_hold_is_refused_by_name() {
    let bad = format!("sha512:{}", "ab".repeat(64));
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": image::OCI_MANIFEST,
        "config": {
            "mediaType": CACHE_CONFIG,
            "digest": Digest::of(b"{\"records\":[]}").to_string(),
            "size": 14,
        },
        "layers": [{ "mediaType": GZIP_LAYER, "digest": bad, "size": 3 }],
    }))
    .expect("json");
    let e = CacheManifest::parse(&manifest, "m")
        .expect("parse")
        .contents(br#"{"records":[]}"#)
        .expect_err("sha512 layer");
    assert!(
        e.to_string().contains(&format!("invalid digest {bad:?}")),
        "{e}"
    );
}
