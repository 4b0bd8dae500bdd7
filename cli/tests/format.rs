//! `--format`, `images --filter`, `history`, id prefixes and `rmi` by id, through
//! the real binary. Images are imported with SOURCE_DATE_EPOCH so their creation
//! times are fixed; ids, sizes and relative times (which depend on the host's
//! busybox and the clock) are redacted in snapshots.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use serde_json::Value;

fn code(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().expect("runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Adds to the store's `busybox` (now): `team/app:2` (its second tag), `old:1`
/// (2023, label tier=old) and `mid:1` (2025, labels tier=mid and x=1).
fn add_three(tmp: &Path, root: &Path) {
    ok(mybuild(root).args(["tag", "busybox", "team/app:2"]));
    let rootfs = testdata::images::busybox_rootfs_file(tmp).expect("rootfs");
    ok(mybuild(root)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .arg("import")
        .arg(&rootfs)
        .args(["old:1", "-c", "LABEL tier=old"]));
    ok(mybuild(root)
        .env("SOURCE_DATE_EPOCH", "1750000000")
        .arg("import")
        .arg(&rootfs)
        .args(["mid:1", "-c", "LABEL tier=mid", "-c", "LABEL x=1"]));
}

/// `images --format '{{.Repository}}:{{.Tag}}'` with these extra arguments.
fn names(root: &Path, args: &[&str]) -> Vec<String> {
    let (out, _) = ok(mybuild(root)
        .arg("images")
        .args(args)
        .args(["--format", "{{.Repository}}:{{.Tag}}"]));
    out.lines().map(str::to_string).collect()
}

fn id_of(root: &Path, name: &str) -> String {
    let (out, _) = ok(mybuild(root).args(["images", "--no-trunc", "--format", "{{.ID}}", name]));
    let id = out.lines().next().expect("one image").to_string();
    id.strip_prefix("sha256:").expect("full id").to_string()
}

#[test]
fn images_filters_combine_as_dockers() {
    let Some((tmp, root)) = setup() else { return };
    add_three(tmp.path(), &root);
    // Newest first, as Docker lists them; equal times by name.
    assert_eq!(
        names(&root, &[]),
        ["busybox:latest", "team/app:2", "mid:1", "old:1"]
    );
    let cases: &[(&[&str], &[&str])] = &[
        (&["--filter", "reference=bus*"], &["busybox:latest"]),
        // `*` stops at `/`, as Go's path.Match.
        (
            &["--filter", "reference=*"],
            &["busybox:latest", "mid:1", "old:1"],
        ),
        (&["--filter", "reference=*/*"], &["team/app:2"]),
        (&["--filter", "reference=*:1"], &["mid:1", "old:1"]),
        (&["team/*"], &["team/app:2"]),
        (&["old:1"], &["old:1"]),
        // Same key: ORed.
        (
            &["-f", "reference=old", "-f", "reference=mid"],
            &["mid:1", "old:1"],
        ),
        (&["-f", "label=tier"], &["mid:1", "old:1"]),
        (&["-f", "label=tier=mid"], &["mid:1"]),
        // Labels must all match (Docker's MatchKVList).
        (&["-f", "label=tier", "-f", "label=x=1"], &["mid:1"]),
        // Different keys: ANDed.
        (&["-f", "reference=*:1", "-f", "label=tier=old"], &["old:1"]),
        (&["-f", "dangling=true"], &[]),
        (
            &["-f", "dangling=false"],
            &["busybox:latest", "team/app:2", "mid:1", "old:1"],
        ),
        (&["-f", "before=mid:1"], &["old:1"]),
        (
            &["-f", "since=old:1"],
            &["busybox:latest", "team/app:2", "mid:1"],
        ),
        (&["-f", "since=old:1", "-f", "before=busybox"], &["mid:1"]),
    ];
    for (args, want) in cases {
        assert_eq!(&names(&root, args), want, "images {args:?}");
    }
    for (bad, says) in [
        ("color=red", "invalid filter 'color'"),
        ("dangling=maybe", "dangling=maybe"),
        ("reference=[a-", "syntax error in pattern"),
        ("before=nothere:1", "nothere:1"),
    ] {
        let (c, so, se) = code(mybuild(&root).args(["images", "--filter", bad]));
        assert_eq!((c, so.as_str()), (1, ""), "{bad}: {se}");
        assert!(se.contains(says), "{bad}: {se}");
    }
}

#[test]
fn images_formats_print_json_lines_templates_and_tables() {
    let Some((tmp, root)) = setup() else { return };
    add_three(tmp.path(), &root);
    let (json, _) = ok(mybuild(&root).args(["images", "--format", "json"]));
    let rows: Vec<Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).expect("one object a line"))
        .collect();
    assert_eq!(rows.len(), 4, "{json}");
    let fields = [
        "Containers",
        "CreatedAt",
        "CreatedSince",
        "Digest",
        "ID",
        "Repository",
        "SharedSize",
        "Size",
        "Tag",
        "UniqueSize",
        "VirtualSize",
    ];
    for r in &rows {
        let keys: Vec<&str> = r
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, fields, "{r}");
    }
    let old = rows.iter().find(|r| r["Repository"] == "old").expect("old");
    assert_eq!(old["CreatedAt"], "2023-11-14 22:13:20 +0000 UTC");
    assert!(
        old["CreatedSince"]
            .as_str()
            .unwrap()
            .ends_with(" years ago"),
        "{old}"
    );
    assert_eq!(old["Digest"], format!("sha256:{}", id_of(&root, "old:1")));
    assert_eq!(old["ID"].as_str().unwrap().len(), 12);
    // `{{json .}}` is the same object (images whose relative time cannot move).
    let fixed = |format: &str| {
        ok(mybuild(&root).args(["images", "-f", "label=tier", "--format", format])).0
    };
    assert_eq!(fixed("{{json .}}"), fixed("json"));

    // Templates: escapes, nested actions; -q wins over --format.
    let (t, _) = ok(mybuild(&root).args([
        "images",
        "old:1",
        "--format",
        "{{.Repository}}\\t{{.Tag}}\\n{{json .CreatedAt}} {{lower .Containers}}",
    ]));
    assert_eq!(t, "old\t1\n\"2023-11-14 22:13:20 +0000 UTC\" n/a\n");
    let (q, _) = ok(mybuild(&root).args(["images", "-q", "old:1", "--format", "{{.Tag}}"]));
    assert_eq!(q.trim(), &id_of(&root, "old:1")[..12]);

    // `table` adds Docker's headers, aligned as its tabwriter.
    let (table, _) = ok(mybuild(&root).args([
        "images",
        "-f",
        "label=tier",
        "--format",
        "table {{.Repository}}\\t{{.Tag}}\\t{{.CreatedAt}}",
    ]));
    insta::assert_snapshot!("images-table-template", table);
    // The default table: Docker's columns, CREATED relative.
    let (default, _) = ok(mybuild(&root).args(["images", "old:1"]));
    let mut lines = default.lines();
    let head = lines.next().expect("header");
    assert!(
        head.starts_with("REPOSITORY   TAG       IMAGE ID       CREATED") && head.ends_with("SIZE"),
        "{default}"
    );
    assert!(
        lines.next().expect("row").contains(" years ago "),
        "{default}"
    );
    let (digests, _) = ok(mybuild(&root).args(["images", "--digests", "old:1"]));
    assert!(
        digests.contains("DIGEST") && digests.contains("sha256:"),
        "{digests}"
    );

    // JSON snapshot with what depends on the host redacted.
    let mut redacted: Vec<Value> = rows
        .into_iter()
        .filter(|r| r["Repository"] != "busybox" && r["Repository"] != "team/app")
        .collect();
    for r in &mut redacted {
        for k in ["ID", "Digest", "Size", "VirtualSize", "CreatedSince"] {
            r[k] = Value::String(format!("[{k}]"));
        }
    }
    insta::assert_json_snapshot!("images-json", redacted);

    // A field no image has: an error naming it, nothing printed.
    let (c, so, se) = code(mybuild(&root).args(["images", "--format", "{{.Repo}}"]));
    assert_eq!((c, so.as_str()), (1, ""), "{se}");
    assert!(
        se.contains("no field \"Repo\"") && se.contains("Repository"),
        "{se}"
    );
    let (c, _, se) = code(mybuild(&root).args(["images", "--format", "{{range .}}"]));
    assert_eq!(c, 1);
    assert!(se.contains("unsupported action"), "{se}");
}

#[test]
fn inspect_format_reads_paths_into_the_document() {
    let Some((_tmp, root)) = setup() else { return };
    let (env, _) = ok(mybuild(&root).args(["inspect", "-f", "{{.Config.config.Env}}", "busybox"]));
    assert_eq!(env, "[PATH=/bin]\n");
    let (tags, _) =
        ok(mybuild(&root).args(["inspect", "--format", "{{json .RepoTags}}", "busybox"]));
    assert_eq!(tags, "[\"busybox:latest\"]\n");
    let (one, _) = ok(mybuild(&root).args(["inspect", "--format", "json", "busybox"]));
    assert_eq!(one.lines().count(), 1);
    let doc: Value = serde_json::from_str(&one).expect("json");
    assert_eq!(doc["RepoTags"][0], "busybox:latest");
    let (c, _, se) = code(mybuild(&root).args(["inspect", "-f", "{{.Config.Env}}", "busybox"]));
    assert_eq!(c, 1);
    assert!(
        se.contains("no field \"Env\"") && se.contains("config"),
        "{se}"
    );
}

#[test]
fn history_matches_the_configs_history() {
    let Some((tmp, root)) = setup() else { return };
    let ctx = context(
        tmp.path(),
        "FROM busybox\nENV A=1\nCOPY f /f\nLABEL x=y\nCOPY g /g\n",
        &[("f", "one\n"), ("g", "two\n")],
    );
    ok(mybuild(&root).args(["build", "-t", "h:1"]).arg(&ctx));
    let img: Value =
        serde_json::from_str(&ok(mybuild(&root).args(["inspect", "h:1"])).0).expect("inspect");
    let mut want = history(&img);
    want.reverse();
    let (out, _) = ok(mybuild(&root).args([
        "history",
        "--no-trunc",
        "--format",
        "{{.CreatedBy}}\\t{{.Size}}",
        "h:1",
    ]));
    let got: Vec<(&str, &str)> = out
        .lines()
        .map(|l| l.split_once('\t').expect("two cells"))
        .collect();
    assert_eq!(got.len(), want.len(), "{out}");
    for ((by, size), (want_by, empty)) in got.iter().zip(&want) {
        assert_eq!(by, want_by);
        assert_eq!(*size == "0B", *empty, "{by}: {size}");
    }
    // The default table: the id on the top line only, `<missing>` below.
    let id = id_of(&root, "h:1");
    let (table, _) = ok(mybuild(&root).args(["history", "h:1"]));
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("IMAGE          CREATED") && lines[0].contains("CREATED BY"),
        "{table}"
    );
    assert!(lines[1].starts_with(&id[..12]), "{table}");
    assert!(
        lines[2..].iter().all(|l| l.starts_with("<missing>")),
        "{table}"
    );
    assert_eq!(lines.len(), want.len() + 1);
    // -H=false: bytes and RFC 3339, as Docker's --human=false.
    let (raw, _) = ok(mybuild(&root).args([
        "history",
        "-H=false",
        "--format",
        "{{.Size}} {{.CreatedSince}}",
        "h:1",
    ]));
    for l in raw.lines() {
        let (size, at) = l.split_once(' ').expect("two cells");
        assert!(size.parse::<u64>().is_ok(), "{raw}");
        assert!(at.ends_with('Z') && at.len() == 20, "{raw}");
    }
    let (q, _) = ok(mybuild(&root).args(["history", "-q", &id[..8]]));
    assert_eq!(q.lines().next(), Some(&id[..12]));

    let (json, _) = ok(mybuild(&root).args(["history", "--format", "json", "h:1"]));
    let mut rows: Vec<Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    for r in &mut rows {
        for k in ["CreatedAt", "CreatedSince"] {
            r[k] = Value::String(format!("[{k}]"));
        }
        if r["ID"] != "<missing>" {
            r["ID"] = Value::String("[ID]".into());
        }
        if r["Size"] != "0B" {
            r["Size"] = Value::String("[Size]".into());
        }
    }
    // The base's import line names the host's rootfs file.
    if let Some(last) = rows.last_mut() {
        last["Comment"] = Value::String("[Comment]".into());
    }
    insta::assert_json_snapshot!("history-json", rows);
}

#[test]
fn id_prefixes_resolve_and_rmi_by_id_follows_docker() {
    let Some((tmp, root)) = setup() else { return };
    add_three(tmp.path(), &root);
    let old = id_of(&root, "old:1");
    let bb = id_of(&root, "busybox");
    // Any unique prefix of 4+ hex digits, with or without sha256:.
    for p in [&old[..4], &old[..12], &format!("sha256:{}", &old[..6])] {
        let (tags, _) = ok(mybuild(&root).args(["inspect", "-f", "{{json .RepoTags}}", p]));
        assert_eq!(tags, "[\"old:1\"]\n", "{p}");
    }
    let e = fails(mybuild(&root).args(["inspect", &old[..3]]));
    assert!(e.contains("no such image"), "{e}");
    ok(mybuild(&root).args(["tag", &old[..6], "again:1"]));
    ok(mybuild(&root).args(["history", &old[..6]]));
    ok(mybuild(&root).args(["run", "--rm", &old[..6], "true"]));
    // Saved by id, the image is untagged in the archive, as `docker save ID`.
    let tar = tmp.path().join("byid.tar");
    ok(mybuild(&root).args(["save", "-o"]).arg(&tar).arg(&old[..6]));
    let (manifest, _) = ok(Command::new("tar")
        .arg("-xOf")
        .arg(&tar)
        .arg("manifest.json"));
    let manifest: Value = serde_json::from_str(&manifest).expect("manifest.json");
    assert!(
        manifest[0]["RepoTags"]
            .as_array()
            .is_none_or(|t| t.is_empty()),
        "{manifest}"
    );

    // Several tags: refused without -f, all removed with it.
    let (c, so, se) = code(mybuild(&root).args(["rmi", &old[..8]]));
    assert_eq!(c, 1, "{so}{se}");
    assert!(
        se.contains("image is referenced in multiple repositories"),
        "{se}"
    );
    assert_eq!(
        names(&root, &["-f", "label=tier=old"]),
        ["again:1", "old:1"]
    );
    let (so, _) = ok(mybuild(&root).args(["rmi", "-f", &old[..8]]));
    assert_eq!(so, "Untagged: again:1\nUntagged: old:1\n");
    assert!(names(&root, &["-f", "label=tier=old"]).is_empty());
    // One tag: removed by its id prefix.
    let mid = id_of(&root, "mid:1");
    let (so, _) = ok(mybuild(&root).args(["rmi", &mid[..6]]));
    assert_eq!(so, "Untagged: mid:1\n");
    // A name still wins over an id prefix, as Docker resolves.
    ok(mybuild(&root).args(["tag", "busybox", &bb[..6]]));
    let (so, _) = ok(mybuild(&root).args(["rmi", &bb[..6]]));
    assert_eq!(so, format!("Untagged: {}:latest\n", &bb[..6]));
}

/// Two tags whose ids share a prefix (written into the layout's index, as no
/// two real images here would collide on 4 hex digits): the prefix is refused
/// with both candidates named; a longer one resolves.
#[test]
fn an_ambiguous_prefix_names_the_candidates() {
    let Some((_tmp, root)) = setup() else { return };
    let index_path = root.join("index.json");
    let mut index: Value =
        serde_json::from_str(&std::fs::read_to_string(&index_path).expect("index")).expect("json");
    for (name, hex) in [("fake:1", "1"), ("fake:2", "2")] {
        let digest = format!("sha256:abcd{hex}{}", "0".repeat(59));
        index["manifests"]
            .as_array_mut()
            .expect("manifests")
            .push(serde_json::json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": digest,
                "size": 10,
                "annotations": {"org.opencontainers.image.ref.name": name},
            }));
    }
    std::fs::write(&index_path, serde_json::to_vec(&index).expect("json")).expect("write");
    for verb in [
        &["inspect"][..],
        &["history"],
        &["rmi"],
        &["tag"],
        &["run", "--rm"],
    ] {
        let mut cmd = mybuild(&root);
        cmd.args(verb).arg("abcd");
        match verb {
            ["tag"] => cmd.arg("x:1"),
            // Refused, not pulled from a registry.
            ["run", ..] => cmd.arg("true"),
            _ => &mut cmd,
        };
        let (c, _, se) = code(&mut cmd);
        // run's own failures exit 125, as Docker's.
        let want = if verb[0] == "run" { 125 } else { 1 };
        assert_eq!(c, want, "{verb:?}: {se}");
        assert!(
            se.contains("ambiguous image id prefix \"abcd\"")
                && se.contains("abcd10000000 (fake:1)")
                && se.contains("abcd20000000 (fake:2)"),
            "{verb:?}: {se}"
        );
    }
    // Unique: found (its blob is not there, which is another error).
    let e = fails(mybuild(&root).args(["inspect", "abcd1"]));
    assert!(
        !e.contains("ambiguous") && !e.contains("no such image"),
        "{e}"
    );
}

#[test]
fn ps_and_cache_ls_take_formats() {
    let Some((tmp, root)) = setup() else { return };
    ok(mybuild(&root).args(["run", "--name", "fmt1", "busybox", "true"]));
    let (json, _) = ok(mybuild(&root).args(["ps", "-a", "--format", "json"]));
    let row: Value = serde_json::from_str(json.lines().next().expect("a row")).expect("json");
    assert_eq!(row["Names"], "fmt1");
    assert_eq!(row["State"], "exited");
    assert_eq!(row["Image"], "busybox");
    assert_eq!(row["Command"], "\"true\"");
    assert!(
        row["Status"].as_str().unwrap().starts_with("Exited (0) "),
        "{row}"
    );
    assert!(
        row["RunningFor"].as_str().unwrap().ends_with(" ago"),
        "{row}"
    );
    let mut redacted = row.clone();
    for k in ["ID", "CreatedAt", "RunningFor", "Status"] {
        redacted[k] = Value::String(format!("[{k}]"));
    }
    insta::assert_json_snapshot!("ps-json", redacted);
    let (t, _) = ok(mybuild(&root).args(["ps", "-a", "--format", "{{.Names}} {{.State}}"]));
    assert_eq!(t, "fmt1 exited\n");
    let (t, _) = ok(mybuild(&root).args(["ps", "-a", "--format", "table {{.Names}}\\t{{.State}}"]));
    assert_eq!(t, "NAMES     STATE\nfmt1      exited\n");
    let (c, _, se) = code(mybuild(&root).args(["ps", "-a", "--format", "{{.Nope}}"]));
    assert_eq!(c, 1);
    assert!(se.contains("\"Nope\"") && se.contains("Names"), "{se}");

    let ctx = context(tmp.path(), "FROM busybox\nCOPY f /f\n", &[("f", "x\n")]);
    ok(mybuild(&root).args(["build", "-t", "c:1"]).arg(&ctx));
    let (json, _) = ok(mybuild(&root).args(["cache", "ls", "--format", "json"]));
    let rows: Vec<Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    let copy = rows
        .iter()
        .find(|r| r["Step"].as_str().is_some_and(|s| s.contains("COPY f /f")))
        .unwrap_or_else(|| panic!("{json}"));
    let keys: Vec<&str> = copy
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["Key", "LastUsed", "LastUsedAt", "Size", "Step"]);
    assert_eq!(copy["Key"].as_str().unwrap().len(), 12);
    let mut redacted = copy.clone();
    for k in ["Key", "LastUsed", "LastUsedAt", "Size"] {
        redacted[k] = Value::String(format!("[{k}]"));
    }
    insta::assert_json_snapshot!("cache-ls-json", redacted);
    let (t, _) = ok(mybuild(&root).args(["cache", "ls", "--format", "{{.Step}}"]));
    assert!(t.lines().any(|l| l == "COPY f /f"), "{t}");
    let (table, _) = ok(mybuild(&root).args(["cache", "ls"]));
    assert!(table.starts_with("KEY            SIZE"), "{table}");

    // Removal by id keeps the container protection a name has.
    let id = id_of(&root, "busybox");
    let e = fails(mybuild(&root).args(["rmi", &id[..8]]));
    assert!(
        e.contains("it is used by container") && e.contains("(fmt1)"),
        "{e}"
    );
    let (so, _) = ok(mybuild(&root).args(["rmi", "-f", &id[..8]]));
    assert_eq!(so, "Untagged: busybox:latest\n");
}

#[test]
fn tags_take_formats() {
    let Some((_tmp, root)) = setup() else { return };
    let reg = testdata::registry::Registry::start();
    for t in ["1", "2"] {
        ok(mybuild(&root).args(["push", "busybox", &format!("{}/team/bb:{t}", reg.addr)]));
    }
    let repo = format!("{}/team/bb", reg.addr);
    assert_eq!(ok(mybuild(&root).args(["tags", &repo])).0, "1\n2\n");
    let (json, _) = ok(mybuild(&root).args(["tags", "--format", "json", &repo]));
    let rows: Vec<Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(rows[1], serde_json::json!({"Repository": repo, "Tag": "2"}));
    let (t, _) = ok(mybuild(&root).args(["tags", "--format", "{{.Repository}}:{{.Tag}}", &repo]));
    assert_eq!(t, format!("{repo}:1\n{repo}:2\n"));
    let (t, _) = ok(mybuild(&root).args(["tags", "--format", "table", &repo]));
    assert!(
        t.starts_with("REPOSITORY") && t.lines().nth(1).unwrap().ends_with("   1"),
        "{t}"
    );
}
