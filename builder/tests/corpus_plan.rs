//! Every Dockerfile of the real-world, kaniko and buildah corpora is parsed and planned the
//! way `buildkit-reference/lint` was produced (all stages, no build args, linux/amd64), and
//! whether planning fails is compared with BuildKit's outcome.

use builder::dockerfile::parse;
use builder::plan::{plan, NoBaseInfo, PlanOptions, Platform};
use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance")
}

fn outcome(rel: &str) -> Result<(), String> {
    let text = fs::read_to_string(corpus().join(rel)).map_err(|e| e.to_string())?;
    let df = parse(&text, rel).map_err(|e| e.to_string())?;
    let opts = PlanOptions {
        all_stages: true,
        target_platform: Platform::parse("linux/amd64").unwrap(),
        build_platform: Platform::parse("linux/amd64").unwrap(),
        ..PlanOptions::default()
    };
    plan(&df, &opts, &NoBaseInfo)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// (files, agreeing with BuildKit, disagreements)
fn compare(set: &str) -> (usize, usize, Vec<String>) {
    let lint: Value = serde_json::from_str(
        &fs::read_to_string(corpus().join(format!("buildkit-reference/lint/{set}.json"))).unwrap(),
    )
    .unwrap();
    let mut agree = 0;
    let mut diffs = Vec::new();
    let map = lint.as_object().unwrap();
    for (rel, v) in map {
        let want_err = v.get("error").and_then(Value::as_str);
        match (outcome(rel), want_err) {
            (Ok(()), None) | (Err(_), Some(_)) => agree += 1,
            (Ok(()), Some(w)) => diffs.push(format!("{rel}: planned, BuildKit: {w}")),
            (Err(e), None) => diffs.push(format!("{rel}: {e}")),
        }
    }
    (map.len(), agree, diffs)
}

#[test]
fn real_world_all_plan() {
    let (n, agree, diffs) = compare("real-world");
    assert_eq!(n, 397);
    assert!(diffs.is_empty(), "{agree}/{n}:\n{}", diffs.join("\n"));
}

#[test]
fn kaniko_plan_outcomes_match_buildkit() {
    let (n, agree, diffs) = compare("kaniko");
    assert_eq!(n, 99);
    assert!(diffs.is_empty(), "{agree}/{n}:\n{}", diffs.join("\n"));
}

#[test]
fn buildah_plan_outcomes_match_buildkit() {
    let (n, agree, diffs) = compare("buildah");
    assert_eq!(n, 392);
    assert!(diffs.is_empty(), "{agree}/{n}:\n{}", diffs.join("\n"));
}
