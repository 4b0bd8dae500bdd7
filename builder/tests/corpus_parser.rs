//! BuildKit's parser test files, read in place from `shared/conformance`.

use std::fs;
use std::path::{Path, PathBuf};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance")
}

fn parser_dir() -> PathBuf {
    corpus().join("buildkit/frontend/dockerfile/parser")
}

#[test]
fn positive_cases_dump_exactly() {
    let mut failures = Vec::new();
    let mut n = 0;
    for e in fs::read_dir(parser_dir().join("testfiles")).unwrap() {
        let dir = e.unwrap().path();
        let text = fs::read_to_string(dir.join("Dockerfile")).unwrap();
        let want = fs::read_to_string(dir.join("result")).unwrap();
        n += 1;
        match builder::dockerfile::parse_ast(&text) {
            Ok(ast) if ast.dump() == want => {}
            Ok(ast) => failures.push(format!(
                "{}:\n--- got\n{}--- want\n{}",
                dir.display(),
                ast.dump(),
                want
            )),
            Err(e) => failures.push(format!("{}: {e}", dir.display())),
        }
    }
    assert_eq!(n, 33);
    assert!(
        failures.is_empty(),
        "{} of {n} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn negative_cases_fail() {
    let mut n = 0;
    for e in fs::read_dir(parser_dir().join("testfiles-negative")).unwrap() {
        let dir = e.unwrap().path();
        let text = fs::read_to_string(dir.join("Dockerfile")).unwrap();
        n += 1;
        assert!(
            builder::dockerfile::parse_ast(&text).is_err(),
            "{} parsed",
            dir.display()
        );
    }
    assert_eq!(n, 4);
}

fn reference_dumps() -> Vec<(PathBuf, PathBuf)> {
    let root = corpus().join("buildkit-reference/dumps");
    let mut out = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if let Some(rel) = p
                .strip_prefix(&root)
                .unwrap()
                .to_str()
                .unwrap()
                .strip_suffix(".result")
            {
                out.push((corpus().join(rel), p.clone()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn real_corpora_dump_like_buildkit() {
    let cases = reference_dumps();
    assert_eq!(cases.len(), 888);
    let mut failures = Vec::new();
    for (src, dump) in &cases {
        let text = fs::read_to_string(src).unwrap();
        let want = fs::read_to_string(dump).unwrap();
        match builder::dockerfile::parse_ast(&text) {
            Ok(ast) if ast.dump() == want => {}
            Ok(ast) => failures.push(format!(
                "{}:\n--- got\n{}--- want\n{}",
                src.display(),
                ast.dump(),
                want
            )),
            Err(e) => failures.push(format!("{}: {e}", src.display())),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
