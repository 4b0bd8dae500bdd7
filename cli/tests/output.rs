//! `--output` and `--progress`: where a build goes and how it reports, end to end.

mod common;

use std::process::Command;

use common::*;

const DOCKERFILE: &str = "FROM busybox\n\
    RUN mkdir -p /app && echo built > /app/out.txt && rm /etc/group && echo say''-hi\n\
    CMD [\"cat\", \"/app/out.txt\"]\n";

#[test]
fn local_and_tar_outputs_hold_the_final_filesystem() {
    let Some((tmp, root)) = setup() else { return };
    let ctx = context(tmp.path(), DOCKERFILE, &[]);
    let dir = tmp.path().join("fs");
    let tarball = tmp.path().join("fs.tar");
    ok(mybuild(&root)
        .arg("-o")
        .arg(&dir)
        .arg("--output")
        .arg(format!("type=tar,dest={}", tarball.display()))
        .arg(&ctx));
    assert_eq!(
        std::fs::read_to_string(dir.join("app/out.txt")).expect("out"),
        "built\n"
    );
    assert!(dir.join("bin/busybox").is_file());
    // The RUN's deletion is applied, not left as a whiteout file.
    assert!(!dir.join("etc/group").exists());
    assert!(!dir.join("etc/.wh.group").exists());
    let mut names = Vec::new();
    let mut archive = tar::Archive::new(std::fs::File::open(&tarball).expect("tar"));
    for e in archive.entries().expect("entries") {
        let mut e = e.expect("entry");
        let name = e.path().expect("path").display().to_string();
        if name == "app/out.txt" {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut e, &mut s).expect("read");
            assert_eq!(s, "built\n");
        }
        names.push(name);
    }
    assert!(names.contains(&"app/out.txt".to_string()), "{names:?}");
    assert!(names.contains(&"bin/busybox".to_string()));
    assert!(!names.iter().any(|n| n.contains("group")), "{names:?}");
}

#[test]
fn oci_and_docker_outputs_are_read_by_skopeo() {
    let Some((tmp, root)) = setup() else { return };
    if !testdata::require_tool("skopeo") {
        return;
    }
    let ctx = context(tmp.path(), DOCKERFILE, &[]);
    let oci = tmp.path().join("img-oci.tar");
    let docker = tmp.path().join("img-docker.tar");
    let (iid, _) = ok(mybuild(&root)
        .args(["-q", "-t", "app:1"])
        .arg("--output")
        .arg(format!("type=oci,dest={}", oci.display()))
        .arg("--output")
        .arg(format!(
            "type=docker,dest={},name=other/app:2",
            docker.display()
        ))
        .arg(&ctx));
    let manifest_digest = iid.trim().to_string();
    let (out, _) = ok(Command::new("skopeo")
        .args(["inspect", "--raw"])
        .arg(format!("oci-archive:{}", oci.display())));
    assert!(
        out.contains("application/vnd.oci.image.manifest.v1+json"),
        "{out}"
    );
    let (out, _) = ok(Command::new("skopeo")
        .args(["inspect", "--config"])
        .arg(format!("docker-archive:{}:other/app:2", docker.display())));
    let cfg: serde_json::Value = serde_json::from_str(&out).expect("config json");
    assert_eq!(
        cfg["config"]["Cmd"],
        serde_json::json!(["cat", "/app/out.txt"])
    );
    // The OCI archive carries the image the store tagged, its built layer
    // gzip-compressed as it leaves: the same config, another manifest.
    let (out, _) = ok(Command::new("skopeo")
        .args(["inspect", "--raw"])
        .arg(format!("oci-archive:{}", oci.display())));
    let written: serde_json::Value = serde_json::from_str(&out).expect("manifest json");
    let stored = common::inspect(&root, "app:1");
    assert_eq!(stored["Digest"], manifest_digest.as_str());
    assert_eq!(written["config"], stored["Manifest"]["config"]);
    let layers = written["layers"].as_array().expect("layers");
    assert_eq!(
        layers.last().expect("a layer")["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    assert_eq!(
        stored["Manifest"]["layers"]
            .as_array()
            .expect("layers")
            .last()
            .expect("a layer")["mediaType"],
        "application/vnd.oci.image.layer.v1.tar"
    );
}

#[test]
fn bad_output_specs_fail_before_building() {
    let Some((tmp, root)) = setup() else { return };
    let ctx = context(tmp.path(), DOCKERFILE, &[]);
    let err = fails(mybuild(&root).args(["-o", "type=local"]).arg(&ctx));
    assert!(err.contains("--output type=local needs dest=PATH"), "{err}");
    assert!(!err.contains("say-hi"), "the build ran: {err}");
    let err = fails(mybuild(&root).args(["-o", "type=s3,dest=x"]).arg(&ctx));
    assert!(err.contains("--output type=s3"), "{err}");
}

#[test]
fn json_progress_is_one_event_per_line() {
    let Some((tmp, root)) = setup() else { return };
    let ctx = context(tmp.path(), DOCKERFILE, &[]);
    let (_, err) = ok(mybuild(&root)
        .args(["-t", "j:1", "--progress", "json"])
        .arg(&ctx));
    let events: Vec<serde_json::Value> = err
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().expect("event"))
        .collect();
    assert_eq!(kinds.iter().filter(|k| **k == "step_started").count(), 2);
    assert_eq!(kinds.iter().filter(|k| **k == "step_done").count(), 2);
    let run = events
        .iter()
        .find(|e| {
            e["event"] == "step_started" && e["text"].as_str().unwrap_or("").starts_with("RUN")
        })
        .expect("RUN step");
    let out: String = events
        .iter()
        .filter(|e| e["event"] == "output" && e["id"] == run["id"])
        .map(|e| e["data"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(out, "say-hi\n");
    let last = events.last().expect("events");
    assert_eq!(last["event"], "image");
    assert_eq!(last["tags"], serde_json::json!(["j:1"]));
    assert!(last["digest"]
        .as_str()
        .expect("digest")
        .starts_with("sha256:"));
}

#[test]
fn tty_progress_needs_a_terminal_and_draws_on_one() {
    let Some((tmp, root)) = setup() else { return };
    let ctx = context(tmp.path(), DOCKERFILE, &[]);
    let err = fails(mybuild(&root).args(["--progress", "tty"]).arg(&ctx));
    assert!(
        err.contains("--progress=tty: standard error is not a terminal"),
        "{err}"
    );
    let Some(p) = in_pty(
        tmp.path(),
        mybuild(&root)
            .args(["-t", "t:1", "--progress", "tty"])
            .arg(&ctx),
        80,
    ) else {
        return;
    };
    assert!(p.success, "{:?}", p.terminal);
    let drawn = p.terminal;
    assert!(drawn.contains("say-hi"), "{drawn}");
    assert!(drawn.contains("✔ #1 [stage-0] RUN mkdir"), "{drawn}");
    assert!(drawn.contains("naming to t:1 done"), "{drawn}");
}
