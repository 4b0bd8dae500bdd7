//! `-o` keys of the image, oci and docker exporters, and `build --annotation`:
//! each key changes what is written (read back with skopeo and from the archive's
//! own blobs), or the build is refused with the key's name.

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::process::Command;

use common::*;
use serde_json::Value;

const DOCKERFILE: &str = "FROM busybox\n\
    RUN mkdir -p /app && echo built > /app/out.txt && echo ran-the-step\n\
    CMD [\"cat\", \"/app/out.txt\"]\n";

/// An archive's members by path (test images are small).
fn members(tar_path: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut a = tar::Archive::new(std::fs::File::open(tar_path).expect("archive"));
    for e in a.entries().expect("entries") {
        let mut e = e.expect("entry");
        let p = e.path().expect("path").display().to_string();
        let mut buf = Vec::new();
        e.read_to_end(&mut buf).expect("read");
        out.insert(p, buf);
    }
    out
}

fn blob<'a>(m: &'a BTreeMap<String, Vec<u8>>, digest: &str) -> &'a [u8] {
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    m.get(&format!("blobs/sha256/{hex}"))
        .unwrap_or_else(|| panic!("{digest} not in the archive"))
}

/// index.json's first descriptor and the manifest it names.
fn top(m: &BTreeMap<String, Vec<u8>>) -> (Value, Value) {
    let index: Value = serde_json::from_slice(&m["index.json"]).expect("index.json");
    let desc = index["manifests"][0].clone();
    let manifest = serde_json::from_slice(blob(m, desc["digest"].as_str().expect("digest")))
        .expect("manifest");
    (desc, manifest)
}

fn layer_digests(manifest: &Value) -> Vec<String> {
    manifest["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| l["digest"].as_str().expect("digest").to_string())
        .collect()
}

/// What each layer blob's first bytes say it is.
fn magics(m: &BTreeMap<String, Vec<u8>>, manifest: &Value) -> Vec<&'static str> {
    layer_digests(manifest)
        .iter()
        .map(|d| {
            let b = blob(m, d);
            if b.starts_with(&[0x1f, 0x8b]) {
                "gzip"
            } else if b.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
                "zstd"
            } else if layer_cache::codec::is_tar_header(b) {
                "tar"
            } else {
                "other"
            }
        })
        .collect()
}

/// The uncompressed tar of a layer blob.
fn plain_layer(b: &[u8]) -> Vec<u8> {
    let (_, mut r) =
        layer_cache::codec::decompress(std::io::BufReader::new(b), layer_cache::codec::LAYER)
            .expect("decompress");
    let mut out = Vec::new();
    r.read_to_end(&mut out).expect("read layer");
    out
}

fn sha256(data: &[u8]) -> String {
    let mut h = layer_cache::digest::Hasher::new();
    h.update(data);
    h.finish().to_string()
}

fn setup_with_skopeo() -> Option<(tempfile::TempDir, std::path::PathBuf)> {
    let s = setup()?;
    if !testdata::require_tool("skopeo") {
        return None;
    }
    Some(s)
}

#[test]
fn compression_and_media_type_keys_decide_the_archive() {
    let Some((tmp, root)) = setup_with_skopeo() else {
        return;
    };
    let ctx = context(tmp.path(), DOCKERFILE, &[]);
    let path = |n: &str| tmp.path().join(n);
    let specs = [
        ("zstd.tar", "type=oci,compression=zstd"),
        ("plain.tar", "type=oci,compression=uncompressed"),
        ("keep.tar", "type=oci,compression=gzip"),
        (
            "forced.tar",
            "type=oci,compression=gzip,compression-level=1,force-compression=true",
        ),
        ("docker.tar", "type=docker"),
        ("ocidocker.tar", "type=oci,oci-mediatypes=false"),
        ("dockeroci.tar", "type=docker,oci-mediatypes=true"),
        ("zstd9.tar", "type=oci,compression=zstd,compression-level=9"),
    ];
    let mut cmd = mybuild(&root);
    cmd.args(["-t", "app:1"]);
    for (file, spec) in specs {
        cmd.arg("-o")
            .arg(format!("{spec},dest={}", path(file).display()));
    }
    ok(cmd.arg(&ctx));
    let stored = inspect(&root, "app:1");
    let stored_layers = layer_digests(&stored["Manifest"]);
    let diff_ids = stored["Config"]["rootfs"]["diff_ids"].clone();
    assert_eq!(stored_layers.len(), 2);

    // The store keeps the base's gzip layer and the built layer uncompressed.
    assert_eq!(
        layer_types(&stored["Manifest"]),
        [
            "application/vnd.oci.image.layer.v1.tar+gzip",
            "application/vnd.oci.image.layer.v1.tar"
        ]
    );
    // zstd: the built layer leaves zstd-compressed, the base's keeps its gzip
    // (BuildKit's rule without force-compression); the same diff_ids.
    let m = members(&path("zstd.tar"));
    let (_, man) = top(&m);
    assert_eq!(
        layer_types(&man),
        [
            "application/vnd.oci.image.layer.v1.tar+gzip",
            "application/vnd.oci.image.layer.v1.tar+zstd"
        ]
    );
    assert_eq!(magics(&m, &man), ["gzip", "zstd"]);
    assert_eq!(layer_digests(&man)[0], stored_layers[0]);
    assert_eq!(
        man["config"]["digest"],
        stored["Manifest"]["config"]["digest"]
    );
    for (d, want) in layer_digests(&man)
        .iter()
        .zip(diff_ids.as_array().expect("ids"))
    {
        let b = blob(&m, d);
        assert_eq!(&sha256(b), d, "the descriptor's digest is the blob's");
        assert_eq!(Value::from(sha256(&plain_layer(b))), *want);
    }
    // skopeo reads it as the same manifest.
    let raw = skopeo_raw(&format!("oci-archive:{}", path("zstd.tar").display()));
    assert_eq!(raw, man);

    // uncompressed: the built layer as stored, plain tar whose digest is its
    // diff_id: the stored manifest itself.
    let m = members(&path("plain.tar"));
    let (desc, man) = top(&m);
    assert_eq!(magics(&m, &man), ["gzip", "tar"]);
    assert_eq!(Value::from(layer_digests(&man)[1].clone()), diff_ids[1]);
    assert_eq!(layer_digests(&man), stored_layers);
    assert_eq!(desc["digest"], stored["Id"]);

    // gzip without force: the base's stored gzip blob itself, the built layer
    // compressed.
    let m = members(&path("keep.tar"));
    let (desc, man) = top(&m);
    assert_eq!(magics(&m, &man), ["gzip", "gzip"]);
    assert_eq!(layer_digests(&man)[0], stored_layers[0]);
    assert_ne!(layer_digests(&man)[1], stored_layers[1]);
    assert_ne!(desc["digest"], stored["Id"]);

    // force-compression at level 1: gzip again, but new blobs.
    let m = members(&path("forced.tar"));
    let (_, man) = top(&m);
    assert_eq!(magics(&m, &man), ["gzip", "gzip"]);
    for (new, old) in layer_digests(&man).iter().zip(&stored_layers) {
        assert_ne!(new, old, "force-compression re-encodes");
    }

    // type=docker (and oci-mediatypes=false): Docker schema 2 types throughout.
    for file in ["docker.tar", "ocidocker.tar"] {
        let m = members(&path(file));
        let (desc, man) = top(&m);
        assert_eq!(
            desc["mediaType"],
            "application/vnd.docker.distribution.manifest.v2+json"
        );
        assert_eq!(
            man["mediaType"],
            "application/vnd.docker.distribution.manifest.v2+json"
        );
        assert_eq!(
            man["config"]["mediaType"],
            "application/vnd.docker.container.image.v1+json"
        );
        assert_eq!(
            layer_types(&man),
            ["application/vnd.docker.image.rootfs.diff.tar.gzip"; 2],
            "{file}"
        );
        let raw = skopeo_raw(&format!("oci-archive:{}", path(file).display()));
        assert_eq!(raw, man, "{file}");
    }
    // The docker archive still loads as one (skopeo reads manifest.json).
    let (out, _) = ok(Command::new("skopeo")
        .args(["inspect", "--config"])
        .arg(format!("docker-archive:{}", path("docker.tar").display())));
    let cfg: Value = serde_json::from_str(&out).expect("config");
    assert_eq!(cfg["rootfs"]["diff_ids"], diff_ids);
    let m = members(&path("dockeroci.tar"));
    let (_, man) = top(&m);
    assert_eq!(
        man["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );

    // A higher zstd level is a variant of its own.
    let m9 = members(&path("zstd9.tar"));
    let (_, man9) = top(&m9);
    assert_eq!(magics(&m9, &man9), ["gzip", "zstd"]);

    // Variants are remembered: a second export reuses the blobs.
    let records = || {
        std::fs::read_dir(root.join("variants-v1"))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    let n = records();
    // zstd, gzip, zstd 9 of the built layer; gzip 1 of both (forced).
    assert!(n >= 5, "{n} variant records");
    let again = path("zstd-again.tar");
    ok(mybuild(&root)
        .args(["-o"])
        .arg(format!(
            "type=oci,compression=zstd,dest={}",
            again.display()
        ))
        .arg(&ctx));
    assert_eq!(records(), n);
    let (_, a) = top(&members(&again));
    let (_, b) = top(&members(&path("zstd.tar")));
    assert_eq!(layer_digests(&a), layer_digests(&b));
}

#[test]
fn a_zstd_archive_loads_back_and_builds_on() {
    let Some((tmp, root)) = setup() else { return };
    let ctx = context(tmp.path(), DOCKERFILE, &[]);
    let archive = tmp.path().join("z.tar");
    ok(mybuild(&root)
        .arg("-o")
        .arg(format!(
            "type=oci,dest={},name=zapp:1,compression=zstd,force-compression=true",
            archive.display()
        ))
        .arg(&ctx));
    let fresh = tmp.path().join("fresh");
    ok(mybuild(&fresh).arg("load").arg("-i").arg(&archive));
    let img = inspect(&fresh, "zapp:1");
    assert_eq!(
        layer_types(&img["Manifest"]),
        ["application/vnd.oci.image.layer.v1.tar+zstd"; 2]
    );
    // A build on it unpacks the zstd layers.
    let next = context(
        tmp.path(),
        "FROM zapp:1\nRUN cat /app/out.txt > /copy.txt\n",
        &[("x", "")],
    );
    let out = tmp.path().join("fs");
    ok(mybuild(&fresh).arg("-o").arg(&out).arg(&next));
    assert_eq!(
        std::fs::read_to_string(out.join("copy.txt")).expect("copy"),
        "built\n"
    );
}

#[test]
fn refused_keys_are_named() {
    let Some((tmp, root)) = setup() else { return };
    let ctx = context(tmp.path(), DOCKERFILE, &[]);
    // A relative dest keeps the texts free of temporary paths (for the snapshot).
    let d = "x.tar";
    let mut texts: Vec<String> = Vec::new();
    for (spec, key) in [
        (format!("type=oci,dest={d},compression=estargz"), "estargz"),
        (
            format!("type=oci,dest={d},compression=brotli"),
            "compression",
        ),
        (format!("type=oci,dest={d},push=true"), "push=true"),
        (format!("type=oci,dest={d},tar=false"), "tar=false"),
        (
            format!("type=oci,dest={d},compression=zstd,oci-mediatypes=false"),
            "oci-mediatypes",
        ),
        (
            format!("type=oci,dest={d},compression-level=30,compression=zstd"),
            "compression-level",
        ),
        (
            format!("type=local,dest={d},compression=gzip"),
            "compression",
        ),
        (
            format!("type=tar,dest={d},rewrite-timestamp=true"),
            "rewrite-timestamp",
        ),
        ("type=image,unpack=true".to_string(), "unpack"),
        ("type=image,store=false".to_string(), "store=false"),
        (
            "type=image,name-canonical=true".to_string(),
            "name-canonical",
        ),
        (
            "type=image,annotation-layer.a=1".to_string(),
            "annotation-layer.a",
        ),
        (
            format!("type=oci,dest={d},force-compression=maybe"),
            "force-compression",
        ),
        ("type=registry".to_string(), "type=registry"),
    ] {
        let err = fails(
            mybuild(&root)
                .current_dir(tmp.path())
                .arg("-o")
                .arg(&spec)
                .arg(&ctx),
        );
        assert!(err.contains(key), "{spec}: {err}");
        assert!(
            !err.contains("ran-the-step"),
            "{spec}: the build ran: {err}"
        );
        texts.push(format!("-o {spec}\n{}", err.trim_end()));
    }
    insta::assert_snapshot!("refused-keys", texts.join("\n\n"));
    // Index annotations on a single image, as BuildKit refuses them.
    let err = fails(
        mybuild(&root)
            .args(["--annotation", "index:org.example.x=1"])
            .arg(&ctx),
    );
    assert!(err.contains("index annotations"), "{err}");
    assert!(!err.contains("ran-the-step"), "the build ran: {err}");
    let err = fails(
        mybuild(&root)
            .arg("-o")
            .arg(format!("type=oci,dest={d},annotation-index.a=1"))
            .arg(&ctx),
    );
    assert!(err.contains("index annotations"), "{err}");
    let err = fails(mybuild(&root).args(["--annotation", "nokey"]).arg(&ctx));
    assert!(err.contains("--annotation"), "{err}");
    // rewrite-timestamp without SOURCE_DATE_EPOCH.
    let err = fails(
        mybuild(&root)
            .env_remove("SOURCE_DATE_EPOCH")
            .arg("-o")
            .arg(format!("type=oci,dest={d},rewrite-timestamp=true"))
            .arg(&ctx),
    );
    assert!(
        err.contains("rewrite-timestamp") && err.contains("SOURCE_DATE_EPOCH"),
        "{err}"
    );
}

#[test]
fn image_names_are_tagged_and_pushed() {
    let Some((tmp, root)) = setup_with_skopeo() else {
        return;
    };
    let ctx = context(tmp.path(), DOCKERFILE, &[]);
    let (iid, _) = ok(mybuild(&root)
        .args(["-q", "-o", r#"type=image,"name=foo:1,bar/baz:2""#])
        .arg(&ctx));
    let a = inspect(&root, "foo:1");
    let b = inspect(&root, "bar/baz:2");
    assert_eq!(a["Id"], b["Id"]);
    assert_eq!(a["Id"].as_str(), Some(iid.trim()));
    // type=image with zstd: the store keeps the built layer uncompressed, and a
    // later push compresses it with zstd, as the build was told.
    ok(mybuild(&root)
        .args(["-o", "type=image,name=z:1,compression=zstd"])
        .arg(&ctx));
    let z = inspect(&root, "z:1");
    assert_eq!(
        layer_types(&z["Manifest"]),
        [
            "application/vnd.oci.image.layer.v1.tar+gzip",
            "application/vnd.oci.image.layer.v1.tar"
        ]
    );
    let reg = testdata::registry::Registry::start();
    let zpushed = format!("{}/z:1", reg.addr);
    ok(mybuild(&root).args(["push", "z:1", &zpushed]));
    assert_eq!(
        layer_types(&skopeo_raw(&format!("docker://{zpushed}"))),
        [
            "application/vnd.oci.image.layer.v1.tar+gzip",
            "application/vnd.oci.image.layer.v1.tar+zstd"
        ]
    );

    let name = format!("{}/pushed:1", reg.addr);
    ok(mybuild(&root)
        .arg("-o")
        .arg(format!("type=image,name={name},push=true"))
        .arg(&ctx));
    let remote = skopeo_raw(&format!("docker://{name}"));
    let local = inspect(&root, &name);
    assert_eq!(remote["config"], local["Manifest"]["config"]);
    assert_eq!(remote["layers"][0], local["Manifest"]["layers"][0]);
    assert_eq!(
        layer_types(&remote)[1],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    // The keys shape what is pushed: zstd layers with OCI types.
    let zname = format!("{}/pushed:zstd", reg.addr);
    ok(mybuild(&root)
        .arg("-o")
        .arg(format!(
            "type=image,name={zname},push=true,compression=zstd"
        ))
        .arg(&ctx));
    let remote = skopeo_raw(&format!("docker://{zname}"));
    assert_eq!(
        layer_types(&remote),
        [
            "application/vnd.oci.image.layer.v1.tar+gzip",
            "application/vnd.oci.image.layer.v1.tar+zstd"
        ]
    );
    // push=true without name= pushes the -t tags, as buildx fills name= from them.
    let tagged = format!("{}/tagged:2", reg.addr);
    ok(mybuild(&root)
        .args(["-t", &tagged, "-o", "type=image,push=true"])
        .arg(&ctx));
    let remote = skopeo_raw(&format!("docker://{tagged}"));
    assert_eq!(
        remote["config"],
        inspect(&root, &tagged)["Manifest"]["config"]
    );
    assert_eq!(
        layer_types(&remote),
        ["application/vnd.oci.image.layer.v1.tar+gzip"; 2]
    );
}

#[test]
fn annotations_reach_the_store_the_archive_and_leave_the_cache_alone() {
    let Some((tmp, root)) = setup_with_skopeo() else {
        return;
    };
    let ctx = context(tmp.path(), DOCKERFILE, &[]);
    ok(mybuild(&root).args(["-t", "plain:1"]).arg(&ctx));
    let plain = inspect(&root, "plain:1");
    let archive = tmp.path().join("ann.tar");
    let (_, err) = ok(mybuild(&root)
        .args([
            "--explain-cache",
            "-t",
            "ann:1",
            "--annotation",
            "org.example.flag=1",
            "--annotation",
            "manifest:org.opencontainers.image.url=http://example.com:8080/x",
            "--annotation",
            "manifest-descriptor:org.example.desc=d",
        ])
        .arg("-o")
        .arg(format!(
            "type=oci,dest={},annotation.org.example.out=2,annotation-manifest-descriptor.org.example.od=3",
            archive.display()
        ))
        .arg(&ctx));
    // The step cache is untouched by annotations: every step was a hit.
    assert!(err.contains("every step was cached"), "{err}");
    let ann = inspect(&root, "ann:1");
    assert_ne!(
        ann["Id"], plain["Id"],
        "annotations change the manifest digest"
    );
    assert_eq!(ann["Manifest"]["layers"], plain["Manifest"]["layers"]);
    let a = &ann["Manifest"]["annotations"];
    assert_eq!(a["org.example.flag"], "1");
    assert_eq!(
        a["org.opencontainers.image.url"],
        "http://example.com:8080/x"
    );
    // The archive: manifest annotations of both, descriptor annotations in index.json.
    let m = members(&archive);
    let (desc, man) = top(&m);
    assert_eq!(man["annotations"]["org.example.flag"], "1");
    assert_eq!(man["annotations"]["org.example.out"], "2");
    assert_eq!(desc["annotations"]["org.example.desc"], "d");
    assert_eq!(desc["annotations"]["org.example.od"], "3");
    let raw = skopeo_raw(&format!("oci-archive:{}", archive.display()));
    assert_eq!(raw["annotations"]["org.example.out"], "2");
    // The store's own layout shows the stored manifest's annotations too.
    let raw = skopeo_raw(&format!("oci:{}:ann:1", root.display()));
    assert_eq!(raw["annotations"]["org.example.flag"], "1");
}

#[test]
fn rewrite_timestamp_clamps_layer_times_to_source_date_epoch() {
    let Some((tmp, root)) = setup() else { return };
    let ctx = context(tmp.path(), DOCKERFILE, &[]);
    let archive = tmp.path().join("r.tar");
    let epoch: u64 = 1_000_000_000;
    ok(mybuild(&root)
        .env("SOURCE_DATE_EPOCH", epoch.to_string())
        .args(["-t", "r:1", "-o"])
        .arg(format!(
            "type=oci,dest={},rewrite-timestamp=true",
            archive.display()
        ))
        .arg(&ctx));
    let m = members(&archive);
    let (_, man) = top(&m);
    let cfg: Value =
        serde_json::from_slice(blob(&m, man["config"]["digest"].as_str().expect("config")))
            .expect("config");
    let digests = layer_digests(&man);
    // The RUN's layer: every entry (all written by the build, after the epoch)
    // now carries the epoch.
    let top_layer = plain_layer(blob(&m, &digests[1]));
    let mut seen = 0;
    for e in tar::Archive::new(&top_layer[..])
        .entries()
        .expect("entries")
    {
        let e = e.expect("entry");
        let path = e.path().expect("path").display().to_string();
        assert_eq!(e.header().mtime().expect("mtime"), epoch, "{path}");
        seen += 1;
    }
    assert!(seen >= 2, "{seen} entries");
    // The config's diff_ids follow the layers written.
    for (i, d) in digests.iter().enumerate() {
        let plain = plain_layer(blob(&m, d));
        assert_eq!(cfg["rootfs"]["diff_ids"][i], Value::from(sha256(&plain)));
    }
    // The base's layer keeps its times (1.7e9, after the epoch), as BuildKit
    // leaves layers shared with the base: the same blob as the store's.
    let stored = inspect(&root, "r:1");
    assert_eq!(
        stored["Manifest"]["layers"][0]["digest"],
        Value::from(digests[0].clone())
    );
    let base = plain_layer(blob(&m, &digests[0]));
    let times: Vec<u64> = tar::Archive::new(&base[..])
        .entries()
        .expect("entries")
        .map(|e| e.expect("entry").header().mtime().expect("mtime"))
        .collect();
    assert!(times.iter().all(|t| *t == 1_700_000_000), "{times:?}");
}

/// Two platforms built from one file with no emulation: the final stage only copies.
const CROSS: &str = "FROM --platform=$BUILDPLATFORM busybox AS build\n\
                     ARG TARGETPLATFORM\n\
                     RUN echo $TARGETPLATFORM > /p\n\
                     FROM scratch\n\
                     COPY --from=build /p /p\n";

#[test]
fn an_index_takes_index_annotations_and_docker_list_types() {
    let Some((tmp, root)) = setup_with_skopeo() else {
        return;
    };
    if std::env::consts::ARCH != "x86_64" {
        eprintln!("skipping: this test expects an amd64 host");
        return;
    }
    let ctx = context(tmp.path(), CROSS, &[]);
    let archive = tmp.path().join("multi.tar");
    let docker = tmp.path().join("multi-docker.tar");
    ok(mybuild(&root)
        .args(["--platform", "linux/amd64,linux/arm64", "-t", "multi:1"])
        .args([
            "--annotation",
            "index:org.example.index=i",
            "--annotation",
            "org.example.each=m",
            "--annotation",
            "manifest-descriptor:org.example.child=c",
            "--annotation",
            "index-descriptor:org.example.top=t",
            "--annotation",
            "manifest[linux/arm64]:org.example.arm=yes",
        ])
        .arg("-o")
        .arg(format!(
            "type=oci,dest={},compression=zstd,annotation-manifest-descriptor[linux/amd64].org.example.amd=d",
            archive.display()
        ))
        .arg("-o")
        .arg(format!(
            "type=oci,dest={},oci-mediatypes=false,compression=uncompressed",
            docker.display()
        ))
        .arg(&ctx));
    // The stored index carries the index annotations, its children theirs.
    let raw = skopeo_raw(&format!("oci:{}:multi:1", root.display()));
    assert_eq!(raw["annotations"]["org.example.index"], "i");
    for child in raw["manifests"].as_array().expect("children") {
        assert_eq!(child["annotations"]["org.example.child"], "c");
    }
    let m = members(&archive);
    let (desc, index) = top(&m);
    assert_eq!(desc["annotations"]["org.example.top"], "t");
    assert_eq!(index["annotations"]["org.example.index"], "i");
    let children = index["manifests"].as_array().expect("children");
    assert_eq!(children.len(), 2);
    for c in children {
        let man: Value =
            serde_json::from_slice(blob(&m, c["digest"].as_str().expect("digest"))).expect("json");
        assert_eq!(man["annotations"]["org.example.each"], "m");
        // Platform-qualified ones land on that platform only.
        let arch = c["platform"]["architecture"].as_str().expect("arch");
        let arm = (arch == "arm64").then_some("yes");
        assert_eq!(
            man["annotations"]["org.example.arm"].as_str(),
            arm,
            "{arch}"
        );
        let amd = (arch == "amd64").then_some("d");
        assert_eq!(c["annotations"]["org.example.amd"].as_str(), amd, "{arch}");
        assert_eq!(
            layer_types(&man),
            ["application/vnd.oci.image.layer.v1.tar+zstd"]
        );
        assert_eq!(magics(&m, &man), ["zstd"]);
    }
    // oci-mediatypes=false: a Docker manifest list of Docker manifests.
    let m = members(&docker);
    let (desc, index) = top(&m);
    let list = "application/vnd.docker.distribution.manifest.list.v2+json";
    assert_eq!(desc["mediaType"], list);
    assert_eq!(index["mediaType"], list);
    for c in index["manifests"].as_array().expect("children") {
        assert_eq!(
            c["mediaType"],
            "application/vnd.docker.distribution.manifest.v2+json"
        );
        let man: Value =
            serde_json::from_slice(blob(&m, c["digest"].as_str().expect("digest"))).expect("json");
        assert_eq!(
            layer_types(&man),
            ["application/vnd.docker.image.rootfs.diff.tar"]
        );
        assert_eq!(magics(&m, &man), ["tar"]);
    }
    let raw = skopeo_raw(&format!("oci-archive:{}", docker.display()));
    assert_eq!(raw["mediaType"], list);
}
