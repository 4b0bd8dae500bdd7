//! `mybuild build --platform a,b`: one build per platform combined into an OCI image
//! index, tagged, exported, pushed, kept by prune; a failing platform tags nothing.

mod common;

use common::*;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use testdata::registry::Registry;

fn amd64_host() -> bool {
    if std::env::consts::ARCH == "x86_64" {
        return true;
    }
    eprintln!("skipping: these tests expect an amd64 host");
    false
}

const CROSS: &str = "FROM --platform=$BUILDPLATFORM busybox AS build\n\
                     RUN echo shared > /s\n\
                     ARG TARGETPLATFORM\n\
                     RUN echo $TARGETPLATFORM > /p\n\
                     FROM scratch\n\
                     COPY --from=build /p /p\n";

/// Steps of a plain-progress log: (stage as shown, text, "DONE" or "CACHED").
fn steps(log: &str) -> Vec<(String, String, String)> {
    let mut started: BTreeMap<String, (String, String)> = BTreeMap::new();
    let mut out = Vec::new();
    for line in log.lines() {
        let Some((id, rest)) = line.strip_prefix('#').and_then(|l| l.split_once(' ')) else {
            continue;
        };
        if let Some((stage, text)) = rest.strip_prefix('[').and_then(|r| r.split_once("] ")) {
            started.insert(id.to_string(), (stage.to_string(), text.to_string()));
        } else if rest == "CACHED" || rest.starts_with("DONE ") {
            let (stage, text) = started.get(id).cloned().expect("finished step was started");
            out.push((
                stage,
                text,
                rest[..rest.find(' ').unwrap_or(rest.len())].to_string(),
            ));
        }
    }
    out
}

/// The stored index of `tag`: its digest and its entries.
fn stored_index(root: &Path, tag: &str) -> (String, Vec<serde_json::Value>) {
    let doc = inspect(root, tag);
    assert_eq!(
        doc["MediaType"], "application/vnd.oci.image.index.v1+json",
        "{doc}"
    );
    let digest = doc["Digest"].as_str().unwrap().to_string();
    let bytes = std::fs::read(root.join("blobs/sha256").join(&digest[7..])).unwrap();
    let index: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    (digest, index["manifests"].as_array().unwrap().clone())
}

/// The entry's manifest digest for `os/arch`.
fn child(entries: &[serde_json::Value], arch: &str) -> String {
    let e = entries
        .iter()
        .find(|e| e["platform"]["architecture"] == arch)
        .unwrap_or_else(|| panic!("no {arch} entry in {entries:?}"));
    assert_eq!(e["platform"]["os"], "linux");
    assert_eq!(e["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    e["digest"].as_str().unwrap().to_string()
}

#[test]
fn two_platforms_make_an_index_of_both_images() {
    let Some((tmp, root)) = setup() else { return };
    if !amd64_host() {
        return;
    }
    let ctx = context(tmp.path(), CROSS, &[]);
    let (iid, meta, out) = (
        tmp.path().join("iid"),
        tmp.path().join("meta.json"),
        tmp.path().join("out"),
    );
    let oci = tmp.path().join("x.tar");
    let (_, log) = ok(mybuild(&root)
        .args(["build", "--progress", "plain"])
        .args(["--platform", "linux/amd64,linux/arm64", "-t", "multi:1"])
        .arg("--iidfile")
        .arg(&iid)
        .arg("--metadata-file")
        .arg(&meta)
        .arg("-o")
        .arg(format!("type=oci,dest={}", oci.display()))
        .arg("-o")
        .arg(format!("type=local,dest={}", out.display()))
        .arg("-o")
        .arg(format!(
            "type=tar,dest={}",
            tmp.path().join("fs.tar").display()
        ))
        .arg(&ctx));

    // The tag is an index of the two platforms.
    let (index, entries) = stored_index(&root, "multi:1");
    assert_eq!(entries.len(), 2, "{entries:?}");
    let amd = child(&entries, "amd64");
    let arm = child(&entries, "arm64");
    assert_ne!(amd, arm);
    assert!(
        log.contains(&format!("writing image {index} done")),
        "{log}"
    );
    assert_eq!(std::fs::read_to_string(&iid).unwrap(), index);
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
    assert_eq!(m["containerimage.digest"], index.as_str());
    assert_eq!(
        m["containerimage.descriptor"]["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );

    // Each platform's step ran for it (TARGETPLATFORM differs); the step before
    // the ARG is the same work for both, so the second platform hit the cache.
    let s = steps(&log);
    let runs = |text: &str| -> Vec<(String, String)> {
        s.iter()
            .filter(|(_, t, _)| t == text)
            .map(|(stage, _, how)| (stage.clone(), how.clone()))
            .collect()
    };
    assert_eq!(
        runs("RUN echo $TARGETPLATFORM > /p"),
        vec![
            ("linux/amd64 build".to_string(), "DONE".to_string()),
            ("linux/arm64 build".to_string(), "DONE".to_string()),
        ],
        "{log}"
    );
    assert_eq!(
        runs("RUN echo shared > /s"),
        vec![
            ("linux/amd64 build".to_string(), "DONE".to_string()),
            ("linux/arm64 build".to_string(), "CACHED".to_string()),
        ],
        "{log}"
    );

    // Each child holds its own platform's file and config.
    for (digest, platform) in [(&amd, "linux/amd64"), (&arm, "linux/arm64")] {
        let name = format!("child:{}", &platform[6..]);
        ok(mybuild(&root).args(["tag", digest, &name]));
        let img = inspect(&root, &name);
        assert_eq!(img["Config"]["architecture"], &platform[6..]);
        let rootfs = unpack(tmp.path(), &root, &name);
        assert_eq!(
            std::fs::read_to_string(rootfs.join("p")).unwrap(),
            format!("{platform}\n")
        );
        ok(mybuild(&root).args(["rmi", &name]));
    }

    // inspect lists the platforms; images shows the tag by the index's id.
    let doc = inspect(&root, "multi:1");
    let platforms: Vec<_> = doc["Platforms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["Platform"].as_str().unwrap(), p["Present"] == true))
        .collect();
    assert_eq!(
        platforms,
        vec![("linux/amd64", true), ("linux/arm64", true)]
    );
    let (images, _) = ok(mybuild(&root).args(["images", "--no-trunc"]));
    let row = images
        .lines()
        .find(|l| l.starts_with("multi "))
        .unwrap_or_else(|| panic!("{images}"));
    assert!(row.contains(&index) && !row.contains("damaged"), "{row}");

    // -o type=local: one directory per platform.
    assert_eq!(
        std::fs::read_to_string(out.join("linux_amd64/p")).unwrap(),
        "linux/amd64\n"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("linux_arm64/p")).unwrap(),
        "linux/arm64\n"
    );
    assert!(!out.join("p").exists());
    // type=tar: the same layout in one tar.
    let (listing, _) = ok(Command::new("tar")
        .arg("-tf")
        .arg(tmp.path().join("fs.tar")));
    let mut names: Vec<&str> = listing.lines().map(|l| l.trim_end_matches('/')).collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            "linux_amd64",
            "linux_amd64/p",
            "linux_arm64",
            "linux_arm64/p"
        ]
    );

    // -o type=oci: the archive's index.json names the index, which holds both.
    let (raw, _) = ok(Command::new("skopeo")
        .args(["inspect", "--raw"])
        .arg(format!("oci-archive:{}", oci.display())));
    let raw: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(raw["mediaType"], "application/vnd.oci.image.index.v1+json");
    assert_eq!(raw["manifests"].as_array().map(Vec::len), Some(2));
    let unpacked = tmp.path().join("oci-unpacked");
    std::fs::create_dir_all(&unpacked).unwrap();
    ok(Command::new("tar")
        .arg("-xf")
        .arg(&oci)
        .arg("-C")
        .arg(&unpacked));
    // Its children are the stored ones with their built layers gzip-compressed
    // as they leave: the same configs, new layer blobs.
    let blob = |dir: &Path, d: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(dir.join("blobs/sha256").join(&d[7..])).unwrap())
            .unwrap()
    };
    let mut configs: Vec<_> = raw["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let m = blob(&unpacked, e["digest"].as_str().unwrap());
            for l in m["layers"].as_array().unwrap() {
                assert_eq!(
                    l["mediaType"],
                    "application/vnd.oci.image.layer.v1.tar+gzip"
                );
            }
            m["config"]["digest"].as_str().unwrap().to_string()
        })
        .collect();
    configs.sort();
    let mut want: Vec<_> = [&amd, &arm]
        .iter()
        .map(|d| {
            blob(&root, d)["config"]["digest"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    want.sort();
    assert_eq!(configs, want);

    // type=docker cannot hold an index (buildx's refusal), before anything is built.
    let err = fails(
        mybuild(&root)
            .args([
                "build",
                "--platform",
                "linux/amd64,linux/arm64",
                "-t",
                "nope:1",
            ])
            .arg("-o")
            .arg(format!(
                "type=docker,dest={}",
                tmp.path().join("d.tar").display()
            ))
            .arg(&ctx),
    );
    assert!(
        err.contains("docker exporter does not currently support exporting manifest lists"),
        "{err}"
    );

    // prune (step-cache records first) keeps both children: the tag reaches them
    // through the index. fsck walks them too.
    ok(mybuild(&root).args(["prune", "--cache"]));
    for d in [&index, &amd, &arm] {
        assert!(
            root.join("blobs/sha256").join(&d[7..]).is_file(),
            "{d} pruned"
        );
    }
    let (fsck, _) = ok(mybuild(&root).arg("fsck"));
    assert!(fsck.contains(": ok"), "{fsck}");
    ok(mybuild(&root).args(["tag", &arm, "child:arm"]));
    let rootfs = unpack(tmp.path(), &root, "child:arm");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("p")).unwrap(),
        "linux/arm64\n"
    );

    // -q prints the index digest; a rebuild gives the same index.
    let (q, _) = ok(mybuild(&root)
        .args([
            "build",
            "-q",
            "--platform",
            "linux/amd64",
            "--platform",
            "linux/arm64",
        ])
        .args(["-t", "multi:2"])
        .arg(&ctx));
    let (again, _) = stored_index(&root, "multi:2");
    assert_eq!(q.trim(), again);
}

#[test]
fn multi_platform_push_sends_the_index_and_its_children() {
    let Some((tmp, root)) = setup() else { return };
    if !amd64_host() || !testdata::require_tool("skopeo") {
        return;
    }
    let reg = Registry::start();
    let name = format!("{}/multi:1", reg.addr);
    let ctx = context(tmp.path(), CROSS, &[]);
    let meta = tmp.path().join("meta.json");
    ok(mybuild(&root)
        .args([
            "build",
            "-q",
            "--push",
            "--platform",
            "linux/amd64,linux/arm64",
        ])
        .args(["-t", &name, "--metadata-file"])
        .arg(&meta)
        .arg(&ctx));
    let (stored, _) = stored_index(&root, &name);
    let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
    let index = meta["containerimage.digest"].as_str().unwrap().to_string();
    // Built layers leave gzip-compressed: the registry's index is not the stored
    // one, and --metadata-file names the registry's.
    assert_ne!(index, stored);
    let (raw, _) = ok(Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{name}")));
    assert_eq!(
        layer_cache::Digest::of(raw.trim_end().as_bytes()).to_string(),
        index
    );
    let (d, _) = ok(mybuild(&root).args(["digest", &name]));
    assert_eq!(d.trim(), index);

    // A fresh store pulls the arm64 child from it.
    let other = tmp.path().join("other");
    ok(mybuild(&other).args(["pull", "-q", "--platform", "linux/arm64", &name]));
    let img = inspect(&other, &name);
    assert_eq!(img["Config"]["architecture"], "arm64");
    assert_eq!(img["UpstreamIndex"], index.as_str());
    let rootfs = unpack(tmp.path(), &other, &name);
    assert_eq!(
        std::fs::read_to_string(rootfs.join("p")).unwrap(),
        "linux/arm64\n"
    );

    // skopeo copies every platform, keeping the index digest.
    let dir = tmp.path().join("copied");
    ok(Command::new("skopeo")
        .args(["copy", "--all", "--src-tls-verify=false"])
        .arg(format!("docker://{name}"))
        .arg(format!("oci:{}", dir.display())));
    let top: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    assert_eq!(top["manifests"][0]["digest"], index.as_str());
    let pushed: serde_json::Value = serde_json::from_str(&raw).unwrap();
    for e in pushed["manifests"].as_array().unwrap() {
        let d = e["digest"].as_str().unwrap();
        assert!(dir.join("blobs/sha256").join(&d[7..]).is_file(), "{e}");
    }
}

#[test]
fn a_platform_that_cannot_run_fails_the_build_and_tags_nothing() {
    let Some((tmp, root)) = setup() else { return };
    if !amd64_host() {
        return;
    }
    if Path::new("/proc/sys/fs/binfmt_misc/qemu-aarch64").exists() {
        eprintln!("skipping: qemu-aarch64 is registered, arm64 RUN would succeed");
        return;
    }
    // base-arm64: an arm64 image whose /bin/sh is an aarch64 executable.
    let arm = tmp.path().join("arm-image");
    std::fs::create_dir_all(arm.join("rootfs/bin")).unwrap();
    std::fs::write(arm.join("rootfs/bin/sh"), aarch64_elf()).unwrap();
    std::fs::set_permissions(
        arm.join("rootfs/bin/sh"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    std::fs::create_dir_all(arm.join("rootfs/etc")).unwrap();
    std::fs::write(
        arm.join("rootfs/etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(arm.join("rootfs/etc/group"), "root:x:0:\n").unwrap();
    std::fs::write(arm.join("Dockerfile"), "FROM scratch\nCOPY rootfs/ /\n").unwrap();
    ok(mybuild(&root)
        .args([
            "build",
            "-q",
            "--platform",
            "linux/arm64",
            "-t",
            "base-arm64",
        ])
        .arg(&arm));
    ok(mybuild(&root).args(["tag", "busybox", "base-amd64"]));

    let ctx = context(
        tmp.path(),
        "ARG TARGETARCH\nFROM base-$TARGETARCH\nRUN echo hi > /x\n",
        &[],
    );
    let (ok_run, _, err) = run(mybuild(&root)
        .args(["build", "--progress", "plain"])
        .args(["--platform", "linux/amd64,linux/arm64", "-t", "bad:1"])
        .arg(&ctx));
    assert!(!ok_run, "{err}");
    // amd64 built; arm64 could not run its RUN.
    assert!(
        err.contains("[linux/amd64 stage-0] RUN echo hi > /x"),
        "{err}"
    );
    assert!(err.contains("building for linux/arm64"), "{err}");
    assert!(err.contains("exec format error"), "{err}");
    assert!(
        err.contains("platform linux/arm64 cannot run on this linux/amd64 host"),
        "{err}"
    );
    let (tags, _) = ok(mybuild(&root).args(["images"]));
    assert!(!tags.contains("bad "), "{tags}");
    let e = fails(mybuild(&root).args(["inspect", "bad:1"]));
    assert!(e.contains("bad:1"), "{e}");
}
