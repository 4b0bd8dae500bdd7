//! `load` of hostile archives: descriptors that lie about sizes, oversized JSON
//! members, and many large members that must not be held in memory.

mod common;

use layer_cache::image::{self, ImageConfig};
use layer_cache::{Digest, Store, StoreError};

fn store(tmp: &tempfile::TempDir, name: &str) -> Store {
    Store::open(tmp.path().join(name)).expect("open")
}

fn append(tar: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
    let mut h = tar::Header::new_ustar();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut h, path, data).expect("append");
}

/// An image made in a scratch store: (manifest, config, layer) as (digest, bytes).
struct Parts {
    manifest: (Digest, Vec<u8>),
    config: (Digest, Vec<u8>),
    layer: (Digest, Vec<u8>),
}

fn parts(tmp: &tempfile::TempDir) -> Parts {
    let s = store(tmp, "src");
    let base = ImageConfig {
        architecture: image::Platform::host().architecture,
        os: "linux".into(),
        ..ImageConfig::default()
    };
    let made = common::one_layer_image(&s, &[7u8; 4096], base);
    let img = s.load_image(&made.manifest).expect("load");
    let read = |d: &Digest| (d.clone(), s.read_blob(d, 1 << 30).expect("blob"));
    Parts {
        manifest: read(&img.manifest_digest),
        config: read(&img.config_digest),
        layer: read(&made.layer.digest),
    }
}

/// An OCI layout archive of `blobs` whose index.json lists `manifests`.
fn oci_archive(blobs: &[&(Digest, Vec<u8>)], manifests: serde_json::Value) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    append(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    for (d, bytes) in blobs {
        append(&mut tar, &format!("blobs/sha256/{}", d.hex()), bytes);
    }
    let index = serde_json::json!({"schemaVersion": 2, "manifests": manifests});
    append(&mut tar, "index.json", index.to_string().as_bytes());
    tar.into_inner().expect("tar")
}

fn entry(media_type: &str, d: &Digest, size: usize) -> serde_json::Value {
    serde_json::json!({
        "mediaType": media_type,
        "digest": d.to_string(),
        "size": size,
        "annotations": {"io.containerd.image.name": "docker.io/library/lying:1"},
    })
}

fn archive_error(e: StoreError) -> String {
    assert!(matches!(e, StoreError::Archive { .. }), "{e:?}");
    e.to_string()
}

#[test]
fn load_refuses_an_index_whose_manifest_size_disagrees_with_the_blob() {
    let tmp = tempfile::TempDir::new().expect("tmp");
    let p = parts(&tmp);
    let real = p.manifest.1.len();
    let tar = oci_archive(
        &[&p.manifest, &p.config, &p.layer],
        serde_json::json!([entry(image::OCI_MANIFEST, &p.manifest.0, real + 1)]),
    );
    let dst = store(&tmp, "dst");
    let err = archive_error(dst.load(&tar[..], "lying.tar").unwrap_err());
    assert!(err.contains(&p.manifest.0.to_string()), "{err}");
    assert!(
        err.contains(&format!("size of {} bytes", real + 1))
            && err.contains(&format!("blob has {real} bytes")),
        "{err}"
    );
    assert!(dst.tags().expect("tags").is_empty(), "nothing is tagged");
    // The same archive with the true size loads, and fsck agrees.
    let tar = oci_archive(
        &[&p.manifest, &p.config, &p.layer],
        serde_json::json!([entry(image::OCI_MANIFEST, &p.manifest.0, real)]),
    );
    dst.load(&tar[..], "true.tar").expect("load");
    assert!(dst.fsck().expect("fsck").is_ok());
}

#[test]
fn load_refuses_a_manifest_whose_layer_size_disagrees_with_the_blob() {
    let tmp = tempfile::TempDir::new().expect("tmp");
    let p = parts(&tmp);
    let mut m: serde_json::Value = serde_json::from_slice(&p.manifest.1).expect("json");
    let real = p.layer.1.len();
    m["layers"][0]["size"] = (real + 5).into();
    let bytes = serde_json::to_vec(&m).expect("json");
    let lying = (Digest::of(&bytes), bytes);
    let tar = oci_archive(
        &[&lying, &p.config, &p.layer],
        serde_json::json!([entry(image::OCI_MANIFEST, &lying.0, lying.1.len())]),
    );
    let dst = store(&tmp, "dst");
    let err = archive_error(dst.load(&tar[..], "lying.tar").unwrap_err());
    assert!(
        err.contains(&format!("manifest {}", lying.0))
            && err.contains(&p.layer.0.to_string())
            && err.contains(&format!("size of {} bytes", real + 5))
            && err.contains(&format!("blob has {real} bytes")),
        "{err}"
    );
    assert!(dst.tags().expect("tags").is_empty());
}

#[test]
fn load_refuses_index_json_over_the_json_cap() {
    let tmp = tempfile::TempDir::new().expect("tmp");
    let mut tar = tar::Builder::new(Vec::new());
    let big = vec![b' '; (layer_cache::archive::MAX_ARCHIVE_JSON + 1) as usize];
    append(&mut tar, "index.json", &big);
    let tar = tar.into_inner().expect("tar");
    let err = store(&tmp, "dst").load(&tar[..], "big.tar").unwrap_err();
    assert!(matches!(err, StoreError::TooLarge { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("big.tar: index.json") && msg.contains("more than the 4194304"),
        "{msg}"
    );
}

#[test]
fn load_refuses_an_archive_of_too_many_members() {
    let tmp = tempfile::TempDir::new().expect("tmp");
    let mut tar = tar::Builder::new(Vec::new());
    for i in 0..100_001 {
        append(&mut tar, &format!("m/{i}"), b"");
    }
    let tar = tar.into_inner().expect("tar");
    let err = store(&tmp, "dst").load(&tar[..], "many.tar").unwrap_err();
    let msg = archive_error(err);
    assert!(msg.contains("more than 100000 files and links"), "{msg}");
}
