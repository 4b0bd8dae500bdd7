//! End-to-end tests of `mybuild parse` and `mybuild check` on the real binary.

use assert_cmd::Command;
use std::fs;
use std::path::Path;

fn mybuild() -> Command {
    let mut c = Command::cargo_bin("mybuild").unwrap_or_else(|e| panic!("mybuild binary: {e}"));
    c.env_remove("RUST_LOG");
    c
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    fs::write(&p, text).unwrap();
    p.display().to_string()
}

#[test]
fn parse_dumps_like_buildkit() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/conformance/buildkit/frontend/dockerfile/parser/testfiles/health");
    let want = fs::read_to_string(corpus.join("result")).unwrap();
    let out = mybuild()
        .arg("parse")
        .arg(corpus.join("Dockerfile"))
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), want);
}

#[test]
fn parse_json_has_ast_and_stages() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "Dockerfile", "FROM alpine AS a\nRUN echo hi\n");
    let out = mybuild().args(["parse", "--json", &f]).output().unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ast"]["nodes"][1]["args"][0], "echo hi");
    assert_eq!(
        v["dockerfile"]["stages"][0]["from"]["kind"]["stage_name"],
        "a"
    );
}

#[test]
fn parse_error_points_at_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "Dockerfile", "FROM alpine\n  FOO bar\n");
    // The plain dump is BuildKit's line parser, which accepts unknown keywords (`(foo "")`);
    // --json also converts instructions, which rejects them.
    let out = mybuild().args(["parse", &f]).output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "(from \"alpine\")\n(foo \"\")\n"
    );
    let out = mybuild().args(["parse", "--json", &f]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err,
        format!("error: unknown instruction: FOO\n --> {f}:2:3\n  |\n2 |   FOO bar\n  |   ^^^\n")
    );
}

#[test]
fn parse_plan_prunes_to_target() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "Dockerfile",
        "FROM alpine AS a\nRUN a\nFROM alpine AS b\nRUN b\nFROM a AS c\nRUN c\n",
    );
    let out = mybuild()
        .args(["parse", "--plan", "--target", "c", &f])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = v["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "c"]);
    assert_eq!(v["target"], 2);
}

#[test]
fn check_reports_rules_with_lines() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "Dockerfile",
        "FROM alpine as build\nMAINTAINER me\nCMD echo hi\n",
    );
    let out = mybuild()
        .args(["check", "--json"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let got: Vec<(String, u64)> = v["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["rule"].as_str().unwrap().to_string(),
                w["line"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("FromAsCasing".to_string(), 1),
            ("MaintainerDeprecated".to_string(), 2),
            ("JSONArgsRecommended".to_string(), 3)
        ]
    );
}

#[test]
fn check_fail_on_warning_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "Containerfile", "FROM alpine\nENV a b\n");
    let out = mybuild()
        .args(["check", "--fail-on-warning", "-f", &f])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("warning: LegacyKeyValueFormat: \"ENV key=value\" should be used instead of legacy \"ENV key value\" format"), "{err}");
    assert!(err.contains(&format!(" --> {f}:2:1")), "{err}");
    // Without the flag, warnings alone do not fail.
    let out = mybuild().args(["check", "-f", &f]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn check_clean_file_and_check_error_directive() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "clean", "FROM alpine\nCMD [\"true\"]\n");
    let out = mybuild()
        .args(["check", "--fail-on-warning", "-f", &f])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "Check complete, 0 warnings have been found\n"
    );
    let f = write(
        dir.path(),
        "strict",
        "# check=error=true\nFROM alpine as x\n",
    );
    let out = mybuild().args(["check", "-f", &f]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("error: lint violation found for rules: FromAsCasing"));
}
