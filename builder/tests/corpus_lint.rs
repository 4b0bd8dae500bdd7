//! Lint results compared with BuildKit: `extracted/lint.json` (upstream's expectations) and
//! `buildkit-reference/lint/*.json` (BuildKit run over the real corpora).

use builder::dockerfile::parse;
use builder::lint::{lint_text, PathOnlyBases};
use builder::plan::{plan, PlanOptions, Platform};
use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance")
}

/// Rules BuildKit has that we do not implement: they need a build context
/// (CopyIgnoredFile) or are experimental (InvalidDefinitionDescription).
const NOT_IMPLEMENTED: [&str; 2] = ["CopyIgnoredFile", "InvalidDefinitionDescription"];

/// (rule, line, detail) we report, and whether the whole check fails.
fn run(text: &str, build_args: &Value) -> (Vec<(String, u64, String)>, bool) {
    let (report, err) = lint_text(text, "Dockerfile", &PathOnlyBases);
    let warnings = report
        .warnings
        .iter()
        .map(|w| (w.rule.to_string(), w.line as u64, w.detail.clone()))
        .collect();
    let Ok(df) = parse(text, "Dockerfile") else {
        assert!(err.is_some());
        return (warnings, true);
    };
    let opts = PlanOptions {
        build_args: build_args
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                    .collect()
            })
            .unwrap_or_default(),
        all_stages: true,
        target_platform: Platform::parse("linux/amd64").unwrap(),
        build_platform: Platform::parse("linux/amd64").unwrap(),
        ..PlanOptions::default()
    };
    let failed = report.error.is_some() || plan(&df, &opts, &PathOnlyBases).is_err();
    (warnings, failed)
}

fn expected(ws: &Value) -> Vec<(String, u64, String)> {
    ws.as_array()
        .map(|a| {
            a.iter()
                .filter(|w| !NOT_IMPLEMENTED.contains(&w["rule"].as_str().unwrap()))
                .map(|w| {
                    (
                        w["rule"].as_str().unwrap().to_string(),
                        w["line"].as_u64().unwrap(),
                        w["detail"].as_str().unwrap().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn lint_json_expectations() {
    let v: Value = serde_json::from_str(
        &fs::read_to_string(corpus().join("buildkit/extracted/lint.json")).unwrap(),
    )
    .unwrap();
    let cases = v["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 87);
    let mut pass = 0;
    let mut failures = Vec::new();
    for c in cases {
        // Cases driven by BUILDKIT_DOCKERFILE_CHECK through the frontend client, or by a
        // .dockerignore, are outside `mybuild check`'s inputs.
        if c["build_args"].get("BUILDKIT_DOCKERFILE_CHECK").is_some()
            || c.get("dockerignore").is_some()
        {
            continue;
        }
        let (got, failed) = run(c["dockerfile"].as_str().unwrap(), &c["build_args"]);
        let want = expected(&c["check_warnings"]);
        let want_fail = c.get("error").is_some();
        if got == want && failed == want_fail {
            pass += 1;
        } else {
            failures.push(format!(
                "{}: got {got:?} failed={failed}\n   want {want:?} failed={want_fail}",
                c["id"]
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{pass} passed, {} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(pass, 77);
}

#[test]
fn descriptions_and_urls_are_buildkits() {
    let v: Value = serde_json::from_str(
        &fs::read_to_string(corpus().join("buildkit/extracted/lint.json")).unwrap(),
    )
    .unwrap();
    let mut checked = 0;
    for c in v["cases"].as_array().unwrap() {
        let Ok(df) = parse(c["dockerfile"].as_str().unwrap(), "Dockerfile") else {
            continue;
        };
        let report = builder::lint::lint(&df, &PathOnlyBases);
        for w in c["check_warnings"].as_array().unwrap() {
            if let Some(got) = report
                .warnings
                .iter()
                .find(|g| g.rule == w["rule"].as_str().unwrap())
            {
                assert_eq!(got.description, w["description"].as_str().unwrap());
                assert_eq!(got.url, w["url"].as_str().unwrap());
                checked += 1;
            }
        }
    }
    assert!(checked > 50, "{checked}");
}

fn reference(set: &str) -> (usize, Vec<String>) {
    let v: Value = serde_json::from_str(
        &fs::read_to_string(corpus().join(format!("buildkit-reference/lint/{set}.json"))).unwrap(),
    )
    .unwrap();
    let mut failures = Vec::new();
    let map = v.as_object().unwrap();
    for (rel, r) in map {
        let text = fs::read_to_string(corpus().join(rel)).unwrap();
        let (mut got, _) = run(&text, &Value::Null);
        let mut want = expected(&r["warnings"]);
        got.sort();
        want.sort();
        if got != want {
            failures.push(format!("{rel}:\n   got  {got:?}\n   want {want:?}"));
        }
    }
    (map.len(), failures)
}

#[test]
fn real_world_lint_matches_buildkit() {
    let (n, f) = reference("real-world");
    assert!(f.is_empty(), "{}/{n} match:\n{}", n - f.len(), f.join("\n"));
}

#[test]
fn kaniko_lint_matches_buildkit() {
    let (n, f) = reference("kaniko");
    assert!(f.is_empty(), "{}/{n} match:\n{}", n - f.len(), f.join("\n"));
}

/// BuildKit lints a FROM line before it validates the stage name in it; we reject the
/// invalid name first, so StageNameCasing for `AS ${FIRST_STAGE}` is not reported.
const BUILDAH_EXCEPTIONS: [&str; 1] =
    ["buildah/tests/bud/save-stages/Dockerfile.arg-build-stages-and-chained-build-stages"];

#[test]
fn buildah_lint_matches_buildkit() {
    let (n, f) = reference("buildah");
    let f: Vec<String> = f
        .into_iter()
        .filter(|d| {
            !BUILDAH_EXCEPTIONS
                .iter()
                .any(|e| d.starts_with(&format!("{e}:")))
        })
        .collect();
    assert!(f.is_empty(), "{}/{n} match:\n{}", n - f.len(), f.join("\n"));
    assert_eq!(n, 392);
}
