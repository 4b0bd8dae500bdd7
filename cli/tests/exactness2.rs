//! More of BuildKit's image on everyday Dockerfiles: the config fields CMD,
//! ENTRYPOINT and ENV leave, the empty image's PATH and WORKDIR, and the history
//! text of each instruction, end to end on a busybox base.

mod common;

use common::*;

fn config(img: &serde_json::Value) -> &serde_json::Value {
    &img["Config"]["config"]
}

#[test]
fn entrypoint_keeps_a_cmd_set_earlier_in_the_same_stage() {
    let Some((tmp, root)) = setup() else { return };
    let ctx = context(
        tmp.path(),
        "FROM busybox AS base\n\
         CMD [\"inherited\"]\n\
         FROM base AS kept\n\
         CMD [\"mine\"]\n\
         ENTRYPOINT [\"/bin/echo\"]\n\
         FROM base AS reset\n\
         ENTRYPOINT [\"/bin/echo\"]\n\
         FROM base AS emptied\n\
         ENTRYPOINT []\n\
         CMD []\n",
        &[],
    );
    for target in ["kept", "reset", "emptied"] {
        ok(mybuild(&root)
            .args(["build", "--target", target, "-t"])
            .arg(format!("ep:{target}"))
            .arg(&ctx));
    }
    // BuildKit resets CMD on ENTRYPOINT only when this stage set none before.
    let kept = inspect(&root, "ep:kept");
    assert_eq!(config(&kept)["Cmd"], serde_json::json!(["mine"]));
    assert_eq!(
        config(&kept)["Entrypoint"],
        serde_json::json!(["/bin/echo"])
    );
    // Every CMD marks its arguments escaped, as BuildKit's config says.
    assert_eq!(config(&kept)["ArgsEscaped"], true);
    let reset = inspect(&root, "ep:reset");
    assert!(config(&reset)["Cmd"].is_null(), "{}", config(&reset));
    // Empty lists leave no field at all (Go omits them).
    let emptied = inspect(&root, "ep:emptied");
    let c = config(&emptied).as_object().expect("config");
    assert!(!c.contains_key("Cmd"), "{c:?}");
    assert!(!c.contains_key("Entrypoint"), "{c:?}");
}

#[test]
fn env_replaces_a_variable_in_its_place() {
    let Some((tmp, root)) = setup() else { return };
    let ctx = context(
        tmp.path(),
        "FROM busybox\n\
         ENV A=1 B=1\n\
         ENV A=2 PATH=/opt/bin:$PATH\n",
        &[],
    );
    ok(mybuild(&root).args(["build", "-t", "env:1"]).arg(&ctx));
    let img = inspect(&root, "env:1");
    assert_eq!(
        config(&img)["Env"],
        serde_json::json!(["PATH=/opt/bin:/bin", "A=2", "B=1"])
    );
}

#[test]
fn scratch_stage_has_buildkit_default_path_and_workdir() {
    let Some((tmp, root)) = setup() else { return };
    let ctx = context(
        tmp.path(),
        "FROM scratch\n\
         ENV PATH=/opt/bin:$PATH\n\
         COPY f /f\n",
        &[("f", "x\n")],
    );
    ok(mybuild(&root).args(["build", "-t", "scr:1"]).arg(&ctx));
    let img = inspect(&root, "scr:1");
    assert_eq!(
        config(&img)["Env"],
        serde_json::json!([
            "PATH=/opt/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        ])
    );
    assert_eq!(config(&img)["WorkingDir"], "/");
}

#[test]
fn base_image_without_path_gets_the_default_path() {
    let Some((tmp, root)) = setup() else { return };
    let rootfs = testdata::images::busybox_rootfs_file(tmp.path()).expect("rootfs");
    ok(mybuild(&root).arg("import").arg(&rootfs).arg("nopath"));
    let ctx = context(
        tmp.path(),
        "FROM nopath\n\
         ENV EXTRA=$PATH\n\
         RUN echo \"$PATH\" > /path\n",
        &[],
    );
    ok(mybuild(&root).args(["build", "-t", "np:1"]).arg(&ctx));
    let default = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    let img = inspect(&root, "np:1");
    assert_eq!(
        config(&img)["Env"],
        serde_json::json!([format!("PATH={default}"), format!("EXTRA={default}")])
    );
    let out = unpack(tmp.path(), &root, "np:1");
    assert_eq!(
        std::fs::read_to_string(out.join("path")).expect("path"),
        format!("{default}\n")
    );
}

#[test]
fn history_is_written_as_buildkit_formats_each_instruction() {
    let Some((tmp, root)) = setup() else { return };
    let ctx = context(
        tmp.path(),
        "FROM busybox\n\
         CMD [\"echo\", \"a \\\"b\\\"\"]\n\
         ENTRYPOINT echo ep\n\
         VOLUME /data /logs\n\
         SHELL [\"/bin/sh\", \"-e\", \"-c\"]\n\
         HEALTHCHECK --interval=1m30s --retries=3 CMD wget -q localhost\n\
         ONBUILD RUN echo later\n\
         EXPOSE 80 443/udp 8080\n\
         WORKDIR /app\n\
         COPY --chown=1:1 --chmod=640 f .\n\
         COPY <<EOT <<EOT2 ./\n\
         x\n\
         EOT\n\
         y\n\
         EOT2\n\
         HEALTHCHECK NONE\n",
        &[("f", "x\n")],
    );
    ok(mybuild(&root).args(["build", "-t", "hist:1"]).arg(&ctx));
    let img = inspect(&root, "hist:1");
    let got: Vec<(String, bool)> = history(&img).into_iter().skip(1).collect();
    let want: Vec<(String, bool)> = [
        (r#"CMD ["echo" "a \"b\""]"#, true),
        (r#"ENTRYPOINT ["/bin/sh" "-c" "echo ep"]"#, true),
        ("VOLUME [/data /logs]", true),
        ("SHELL [/bin/sh -e -c]", true),
        (
            "HEALTHCHECK {Test:[CMD-SHELL wget -q localhost] Interval:1m30s Timeout:0s \
             StartPeriod:0s StartInterval:0s Retries:3}",
            true,
        ),
        // ONBUILD leaves no history; EXPOSE lists the words sorted as written.
        ("EXPOSE [443/udp 80/tcp 8080/tcp]", true),
        ("WORKDIR /app", false),
        // The destination as written, with the owner and mode flags.
        ("COPY --chown=1:1 --chmod=640 f . # buildkit", false),
        ("COPY <<EOT <<EOT2 ./ # buildkit", false),
        (
            "HEALTHCHECK {Test:[NONE] Interval:0s Timeout:0s StartPeriod:0s \
             StartInterval:0s Retries:0}",
            true,
        ),
    ]
    .into_iter()
    .map(|(s, e)| (s.to_string(), e))
    .collect();
    assert_eq!(got, want);
}

#[test]
fn stopsignal_must_name_a_signal() {
    let Some((tmp, root)) = setup() else { return };
    let ctx = context(
        tmp.path(),
        "FROM busybox\nARG SIG=SIGKIL\nSTOPSIGNAL $SIG\n",
        &[],
    );
    let err = fails(mybuild(&root).args(["build", "-t", "sig:bad"]).arg(&ctx));
    assert!(err.contains("invalid signal: SIGKIL"), "{err}");
    assert!(err.contains("Dockerfile:3:"), "{err}");
    // Names in any case, with or without SIG, and numbers are kept as written.
    let ctx = context(tmp.path(), "FROM busybox\nSTOPSIGNAL sigquit\n", &[]);
    ok(mybuild(&root).args(["build", "-t", "sig:ok"]).arg(&ctx));
    assert_eq!(config(&inspect(&root, "sig:ok"))["StopSignal"], "sigquit");
}

#[test]
fn glob_or_several_sources_to_a_name_without_slash_make_a_file() {
    let Some((tmp, root)) = setup() else { return };
    let ctx = context(
        tmp.path(),
        "FROM busybox\n\
         WORKDIR /srv\n\
         COPY target/*.jar app.jar\n\
         COPY a.txt b.txt /last\n\
         COPY <<A <<B /doc\n\
         from a\n\
         A\n\
         from b\n\
         B\n\
         COPY d1 d2 /merged\n\
         COPY d1 a.txt /into\n\
         COPY a.txt b.txt /slash/\n",
        &[
            ("target/app-1.0.jar", "jar\n"),
            ("a.txt", "a\n"),
            ("b.txt", "b\n"),
            ("d1/x", "x\n"),
            ("d2/y", "y\n"),
        ],
    );
    ok(mybuild(&root).args(["build", "-t", "many:1"]).arg(&ctx));
    let out = unpack(tmp.path(), &root, "many:1");
    let read =
        |p: &str| std::fs::read_to_string(out.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    // One match of a glob is copied to the name given, as BuildKit does.
    assert_eq!(read("srv/app.jar"), "jar\n");
    // Files in turn onto a name that is no directory: the last one stays.
    assert_eq!(read("last"), "b\n");
    assert_eq!(read("doc"), "from b\n");
    // A directory source makes the destination a directory for what follows.
    assert_eq!(read("merged/x"), "x\n");
    assert_eq!(read("merged/y"), "y\n");
    assert_eq!(read("into/x"), "x\n");
    assert_eq!(read("into/a.txt"), "a\n");
    assert_eq!(read("slash/a.txt"), "a\n");
    assert_eq!(read("slash/b.txt"), "b\n");
}

#[test]
fn healthcheck_zero_settings_are_left_out() {
    let Some((tmp, root)) = setup() else { return };
    let ctx = context(
        tmp.path(),
        "FROM busybox\nHEALTHCHECK --interval=0s --retries=0 CMD [\"true\"]\n",
        &[],
    );
    ok(mybuild(&root).args(["build", "-t", "hc:0"]).arg(&ctx));
    // Zero means "inherit": BuildKit's config (Go, omitempty) has only the test.
    let img = inspect(&root, "hc:0");
    assert_eq!(
        config(&img)["Healthcheck"],
        serde_json::json!({"Test": ["CMD", "true"]})
    );
}

#[test]
fn volume_that_expands_to_nothing_is_refused() {
    let Some((tmp, root)) = setup() else { return };
    let ctx = context(
        tmp.path(),
        "FROM busybox\nARG DATA\nVOLUME /ok $DATA\n",
        &[],
    );
    let err = fails(mybuild(&root).args(["build", "-t", "vol:bad"]).arg(&ctx));
    assert!(
        err.contains("VOLUME specified can not be an empty string"),
        "{err}"
    );
    assert!(err.contains("Dockerfile:3:"), "{err}");
}

#[test]
fn add_of_an_archive_and_a_file_fills_the_destination_directory() {
    let Some((tmp, root)) = setup() else { return };
    let ctx = context(
        tmp.path(),
        "FROM busybox\nADD a.tar b.txt /m\n",
        &[("b.txt", "b\n")],
    );
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(3);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_cksum();
    tar.append_data(&mut h, "inner", &b"in\n"[..]).expect("tar");
    std::fs::write(ctx.join("a.tar"), tar.into_inner().expect("tar")).expect("write");
    ok(mybuild(&root).args(["build", "-t", "addmix:1"]).arg(&ctx));
    let out = unpack(tmp.path(), &root, "addmix:1");
    // The archive is unpacked into /m and the file goes beside it.
    assert_eq!(
        std::fs::read_to_string(out.join("m/inner")).expect("inner"),
        "in\n"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("m/b.txt")).expect("b"),
        "b\n"
    );
}
