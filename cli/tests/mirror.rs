//! Mirroring: `copy --all-tags` between two registries, `pull --all-tags`, and
//! `copy` to and from OCI layouts, OCI archives and Docker archives, each checked
//! with skopeo.

use std::path::PathBuf;
use std::process::Command;

use tempfile::TempDir;
mod common;
use common::{fails, mybuild, ok};
use testdata::registry::Registry;

fn setup() -> Option<(TempDir, PathBuf)> {
    common::two_platform_store()
}

fn skopeo(args: &[&str], image: &str) -> String {
    ok(Command::new("skopeo").args(args).arg(image)).0
}

fn raw(image: &str) -> String {
    let tls: &[&str] = if image.starts_with("docker://") {
        &["inspect", "--raw", "--tls-verify=false"]
    } else {
        &["inspect", "--raw"]
    };
    skopeo(tls, image)
}

fn digest_of(s: &str) -> String {
    layer_cache::Digest::of(s.as_bytes()).to_string()
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).expect("json")
}

#[test]
fn copy_all_tags_moves_every_tag_whole_and_pull_all_tags_stores_each() {
    let Some((tmp, root)) = setup() else { return };
    let (a, b) = (Registry::start(), Registry::start());
    let src = format!("{}/team/app", a.addr);
    let d1 = ok(mybuild(&root).args(["push", "amd", &format!("{src}:1")])).0;
    let d2 = ok(mybuild(&root).args(["push", "arm", &format!("{src}:2")])).0;
    let multi = ok(mybuild(&root).args([
        "index",
        "create",
        "--push",
        "-t",
        &format!("{src}:multi"),
        &format!("{src}:1"),
        &format!("{src}:2"),
    ]))
    .0;

    let dst = format!("{}/mirror/app", b.addr);
    let (out, err) = ok(mybuild(&root).args(["copy", "--all-tags", &src, &dst]));
    assert_eq!(
        out,
        format!("1 {}\n2 {}\nmulti {}\n", d1.trim(), d2.trim(), multi.trim())
    );
    assert!(err.contains("copied 3 tags"), "{err}");
    let tags = json(&skopeo(
        &["list-tags", "--tls-verify=false"],
        &format!("docker://{dst}"),
    ));
    let mut listed: Vec<&str> = tags["Tags"]
        .as_array()
        .expect("tags")
        .iter()
        .filter_map(|t| t.as_str())
        .collect();
    listed.sort();
    assert_eq!(listed, ["1", "2", "multi"]);
    // Every tag keeps its digest; the index came whole (both platforms' images).
    for (tag, d) in [("1", &d1), ("2", &d2), ("multi", &multi)] {
        let r = raw(&format!("docker://{dst}:{tag}"));
        assert_eq!(digest_of(&r), d.trim(), "{tag}");
    }
    for d in [&d1, &d2] {
        raw(&format!("docker://{dst}@{}", d.trim()));
    }

    // A tag or a file end is refused by name.
    let err = fails(mybuild(&root).args(["copy", "--all-tags", &format!("{src}:1"), &dst]));
    assert!(err.contains("--all-tags takes a repository"), "{err}");
    let err = fails(mybuild(&root).args(["copy", "--all-tags", &src, "oci:/nowhere"]));
    assert!(
        err.contains("--all-tags copies between registries"),
        "{err}"
    );

    let err = fails(mybuild(&root).args(["pull", "--all-tags", &format!("{dst}:1")]));
    assert!(err.contains("--all-tags takes a repository"), "{err}");

    // pull --all-tags: every tag in the store, this platform's image of the index.
    let fresh = tmp.path().join("fresh");
    let (names, _) =
        ok(mybuild(&fresh).args(["pull", "--all-tags", "--platform", "linux/arm64", &dst]));
    assert_eq!(
        names,
        format!("{dst}:1\n{dst}:2\n{dst}:multi\n"),
        "one name a tag"
    );
    let arm = common::inspect(&fresh, &format!("{dst}:multi"));
    assert_eq!(arm["Config"]["architecture"], "arm64");
    assert_eq!(arm["Id"].as_str(), Some(d2.trim()));
}

#[test]
fn copy_to_and_from_archives_and_layouts_keeps_digests_where_the_format_does() {
    let Some((tmp, root)) = setup() else { return };
    let reg = Registry::start();
    let src = format!("{}/app:1", reg.addr);
    let pushed = ok(mybuild(&root).args(["push", "amd", &src])).0;
    let pushed = pushed.trim();
    let t = tmp.path().display().to_string();

    // Registry → oci-archive: skopeo reads the same manifest bytes.
    let archive = format!("{t}/app.tar");
    let (out, err) = ok(mybuild(&root).args(["copy", &src, &format!("oci-archive:{archive}:v1")]));
    assert_eq!(out.trim(), pushed);
    assert!(err.contains(&format!("oci-archive:{archive}:v1")), "{err}");
    assert_eq!(
        digest_of(&raw(&format!("oci-archive:{archive}:v1"))),
        pushed
    );
    let inspected = json(&skopeo(&["inspect"], &format!("oci-archive:{archive}:v1")));
    assert_eq!(inspected["Architecture"], "amd64");

    // oci-archive → registry: same digest, and skopeo can read it back.
    let back = format!("{}/back:1", reg.addr);
    let (out, _) = ok(mybuild(&root).args(["copy", &format!("oci-archive:{archive}:v1"), &back]));
    assert_eq!(out.trim(), pushed);
    assert_eq!(digest_of(&raw(&format!("docker://{back}"))), pushed);

    // An archive skopeo wrote (its own ref.name) reads too.
    let theirs = format!("{t}/theirs.tar");
    ok(Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false"])
        .arg(format!("docker://{src}"))
        .arg(format!("oci-archive:{theirs}:latest")));
    let (out, _) = ok(mybuild(&root).args([
        "copy",
        &format!("oci-archive:{theirs}"),
        &format!("docker://{}/theirs:1", reg.addr),
    ]));
    assert_eq!(
        digest_of(&raw(&format!("docker://{}/theirs:1", reg.addr))),
        out.trim()
    );

    // An OCI layout directory, both ways.
    let dir = format!("{t}/layout");
    ok(mybuild(&root).args(["copy", &src, &format!("oci:{dir}:one")]));
    assert_eq!(digest_of(&raw(&format!("oci:{dir}:one"))), pushed);
    let from_dir = format!("{}/fromdir:1", reg.addr);
    let (out, _) = ok(mybuild(&root).args(["copy", &format!("oci:{dir}:one"), &from_dir]));
    assert_eq!(out.trim(), pushed);
    // A second tag joins the first; the same image untagged twice is listed once.
    let arm_ref = format!("{}/app:arm", reg.addr);
    let arm = ok(mybuild(&root).args(["push", "arm", &arm_ref])).0;
    ok(mybuild(&root).args(["copy", &arm_ref, &format!("oci:{dir}:two")]));
    ok(mybuild(&root).args(["copy", &arm_ref, &format!("oci:{dir}")]));
    ok(mybuild(&root).args(["copy", &arm_ref, &format!("oci:{dir}")]));
    assert_eq!(digest_of(&raw(&format!("oci:{dir}:one"))), pushed);
    assert_eq!(digest_of(&raw(&format!("oci:{dir}:two"))), arm.trim());
    let index = json(&std::fs::read_to_string(format!("{dir}/index.json")).unwrap());
    assert_eq!(index["manifests"].as_array().map(Vec::len), Some(3));

    // The store's root is a layout too: an image read from it keeps its digest.
    let from_store = format!("{}/fromstore:1", reg.addr);
    let (out, _) = ok(mybuild(&root).args([
        "copy",
        &format!("oci:{}:amd:latest", root.display()),
        &from_store,
    ]));
    assert_eq!(out.trim(), pushed);

    // A whole index into an archive.
    let multi = format!("{}/multi:1", reg.addr);
    let index = ok(mybuild(&root).args([
        "index",
        "create",
        "--push",
        "-t",
        &multi,
        &src,
        &format!("{}/app:arm", reg.addr),
    ]))
    .0;
    let both = format!("{t}/both.tar");
    let (out, _) = ok(mybuild(&root).args([
        "copy",
        "--all-platforms",
        &multi,
        &format!("oci-archive:{both}"),
    ]));
    assert_eq!(out.trim(), index.trim());
    let r = json(&raw(&format!("oci-archive:{both}")));
    assert_eq!(r["manifests"].as_array().map(Vec::len), Some(2));

    // docker-archive: skopeo's own, into a registry. The manifest is made anew
    // (the format has none); the config keeps its digest.
    let docker = format!("{t}/docker.tar");
    ok(Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false"])
        .arg(format!("docker://{src}"))
        .arg(format!("docker-archive:{docker}:app:1")));
    let from_docker = format!("{}/fromdocker:1", reg.addr);
    ok(mybuild(&root).args(["copy", &format!("docker-archive:{docker}"), &from_docker]));
    let config = |r: &str| json(&raw(r))["config"]["digest"].clone();
    assert_eq!(
        config(&format!("docker://{from_docker}")),
        config(&format!("docker://{src}"))
    );
    // ... and ours, which skopeo reads as a Docker archive.
    let ours = format!("{t}/ours.tar");
    ok(mybuild(&root).args(["copy", &src, &format!("docker-archive:{ours}:app:1")]));
    let inspected = json(&skopeo(&["inspect"], &format!("docker-archive:{ours}")));
    assert_eq!(inspected["Architecture"], "amd64");
    let (listing, _) = ok(Command::new("tar").args(["-xOf", &ours, "manifest.json"]));
    assert_eq!(json(&listing)[0]["RepoTags"], serde_json::json!(["app:1"]));

    // A name the archive lacks is refused, naming what it holds.
    let err = fails(mybuild(&root).args([
        "copy",
        &format!("oci-archive:{both}:nothere"),
        &format!("{}/x:1", reg.addr),
    ]));
    assert!(err.contains("no image named \"nothere\""), "{err}");
}
