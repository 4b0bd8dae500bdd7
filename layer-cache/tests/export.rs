//! `-o type=local|tar` writing: a stored image's filesystem out of the store.

use layer_cache::export::ImageFs;
use layer_cache::image::{self, ImageConfig, RootFs};
use layer_cache::layer::{LayerInfo, LayerOptions};
use layer_cache::{Digest, Store};

fn layer(s: &Store, entries: &[(&str, Option<&[u8]>)]) -> LayerInfo {
    let mut b = tar::Builder::new(Vec::new());
    for (name, content) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        match content {
            Some(data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, name, *data).expect("file");
            }
            None => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                b.append_data(&mut h, name, &[][..]).expect("dir");
            }
        }
    }
    let tar = b.into_inner().expect("tar");
    s.write_layer(&mut &tar[..], LayerOptions::default())
        .expect("layer")
}

/// A two-layer image: the second deletes `a/gone` with a whiteout and adds `b`.
fn two_layer_image(s: &Store, arch: &str) -> layer_cache::oci_spec::image::Descriptor {
    let one = layer(
        s,
        &[
            ("a/", None),
            ("a/gone", Some(b"deleted later")),
            ("a/kept", Some(b"kept")),
            ("arch", Some(arch.as_bytes())),
        ],
    );
    let two = layer(s, &[("a/.wh.gone", Some(b"")), ("b", Some(b"two"))]);
    let config = ImageConfig {
        architecture: arch.into(),
        os: "linux".into(),
        rootfs: RootFs {
            kind: "layers".into(),
            diff_ids: vec![one.diff_id.clone(), two.diff_id.clone()],
        },
        ..ImageConfig::default()
    };
    s.write_image(&config, &[one.descriptor(), two.descriptor()])
        .expect("image")
}

#[test]
fn a_two_layer_image_with_a_whiteout_unpacks_to_a_directory_and_a_tar() {
    let tmp = tempfile::TempDir::new().expect("tmp");
    let s = Store::open(tmp.path().join("root")).expect("open");
    let manifest = two_layer_image(&s, "amd64");
    let fs = ImageFs::new(&s, &manifest).expect("image");
    assert!(!fs.is_multi_platform());

    let dest = tmp.path().join("out/nested");
    fs.unpack_into(&s, &dest).expect("unpack");
    assert_eq!(std::fs::read(dest.join("a/kept")).expect("kept"), b"kept");
    assert_eq!(std::fs::read(dest.join("b")).expect("b"), b"two");
    assert!(!dest.join("a/gone").exists());
    assert!(!dest.join("a/.wh.gone").exists());

    let flat = fs.flatten(&s).expect("flatten");
    let mut out = Vec::new();
    flat.write_tar(&mut out).expect("tar");
    let mut names = Vec::new();
    for e in tar::Archive::new(&out[..]).entries().expect("entries") {
        let e = e.expect("entry");
        names.push(e.path().expect("path").display().to_string());
    }
    assert_eq!(names, ["a", "a/kept", "arch", "b"]);
    let scratch = flat.path().to_path_buf();
    drop(flat);
    assert!(!scratch.exists(), "the scratch copy is removed");
}

#[test]
fn an_index_unpacks_one_directory_per_platform() {
    let tmp = tempfile::TempDir::new().expect("tmp");
    let s = Store::open(tmp.path().join("root")).expect("open");
    let mut children = Vec::new();
    for (arch, variant) in [("amd64", None), ("arm", Some("v7"))] {
        let m = two_layer_image(&s, arch);
        let mut platform = serde_json::json!({"os": "linux", "architecture": arch});
        if let Some(v) = variant {
            platform["variant"] = v.into();
        }
        children.push(serde_json::json!({
            "mediaType": m.media_type().to_string(),
            "digest": m.digest().to_string(),
            "size": m.size(),
            "platform": platform,
        }));
    }
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": image::OCI_INDEX,
        "manifests": children,
    }))
    .expect("json");
    let c = s.write_blob(&index).expect("index");
    let desc = image::descriptor(image::OCI_INDEX, &c.digest, c.size);
    let fs = ImageFs::new(&s, &desc).expect("index");
    assert!(fs.is_multi_platform());
    let dest = tmp.path().join("out");
    fs.unpack_into(&s, &dest).expect("unpack");
    let mut dirs: Vec<String> = std::fs::read_dir(&dest)
        .expect("out")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    assert_eq!(dirs, ["linux_amd64", "linux_arm_v7"]);
    assert_eq!(
        std::fs::read(dest.join("linux_arm_v7/arch")).expect("arch"),
        b"arm"
    );
    assert!(!dest.join("linux_amd64/a/gone").exists());

    // An entry without a platform cannot be given a directory.
    let bad = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": image::OCI_INDEX,
        "manifests": [{
            "mediaType": image::OCI_MANIFEST,
            "digest": Digest::of(b"x").to_string(),
            "size": 1,
        }],
    }))
    .expect("json");
    let c = s.write_blob(&bad).expect("bad");
    let e = ImageFs::new(&s, &image::descriptor(image::OCI_INDEX, &c.digest, c.size))
        .expect_err("no platform");
    assert_eq!(
        e.to_string(),
        format!("index {}: an entry has no platform", c.digest)
    );
}
