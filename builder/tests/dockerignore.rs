//! `.dockerignore` / `COPY --exclude` matching against moby/patternmatcher's own
//! cases (read in place from the shared conformance corpus), plus our edge cases.

use std::path::PathBuf;

use builder::ignore::{clean, read_ignore_file, Matcher, PatternError};

fn corpus() -> serde_json::Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/conformance/dockerignore/patternmatcher.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).expect("json")
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|s| s.as_str().expect("string").to_string())
        .collect()
}

/// The deprecated `Matches(file, patterns)`: the path is cleaned and `.` never matches.
fn legacy_matches(patterns: &[String], path: &str) -> Result<bool, PatternError> {
    let m = Matcher::new(patterns)?;
    let file = clean(path);
    if file == "." {
        return Ok(false);
    }
    Ok(m.matches(&file))
}

#[test]
fn every_patternmatcher_case_passes() {
    let corpus = corpus();
    let cases = corpus["cases"].as_array().expect("cases");
    let mut failures = Vec::new();
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for case in cases {
        let kind = case["kind"].as_str().expect("kind");
        *counts.entry(kind.to_string()).or_default() += 1;
        let expect_error = case["error"].as_bool().unwrap_or(false);
        let ok = match kind {
            "ignored" => {
                let pats = strings(&case["patterns"]);
                let path = case["path"].as_str().expect("path");
                let want = case["ignored"].as_bool().expect("ignored");
                match Matcher::new(&pats) {
                    Ok(m) => {
                        // The walking form must agree with the one-shot form.
                        let mut info = Default::default();
                        let mut walked = false;
                        let trimmed = path.trim_end_matches('/');
                        let mut prefix = String::new();
                        for seg in trimmed.split('/') {
                            if !prefix.is_empty() || path.starts_with('/') {
                                prefix.push('/');
                            }
                            prefix.push_str(seg);
                            let (hit, next) = m.matches_in(&prefix, &info);
                            walked = hit;
                            info = next;
                        }
                        let one_shot = m.matches(path);
                        !expect_error && one_shot == want && (trimmed.is_empty() || walked == want)
                    }
                    Err(_) => expect_error,
                }
            }
            "matches" => {
                let pats = strings(&case["patterns"]);
                let path = case["path"].as_str().expect("path");
                match legacy_matches(&pats, path) {
                    Ok(got) => !expect_error && Some(got) == case["ignored"].as_bool(),
                    Err(_) => expect_error,
                }
            }
            "clean" => {
                let pats = strings(&case["patterns"]);
                match Matcher::new(&pats) {
                    Ok(m) => {
                        !expect_error
                            && case["expect_patterns"]
                                .as_u64()
                                .map_or(true, |n| n as usize == m.len())
                            && case["expect_exclusions"]
                                .as_bool()
                                .map_or(true, |e| e == m.has_exceptions())
                    }
                    Err(_) => expect_error,
                }
            }
            "read-ignore-file" => {
                let content = case["content"].as_str().expect("content");
                read_ignore_file(content) == strings(&case["expect_patterns"])
            }
            other => panic!("unknown case kind {other}"),
        };
        if !ok {
            failures.push(case.to_string());
        }
    }
    let total: usize = counts.values().sum();
    eprintln!("patternmatcher cases: {total} {counts:?}");
    assert_eq!(total, 144, "the corpus has 144 cases");
    assert!(
        failures.is_empty(),
        "{} of {total} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn lone_exclamation_and_bad_syntax_are_errors() {
    assert_eq!(
        Matcher::new(&["!"]).unwrap_err(),
        PatternError::LoneExclamation
    );
    assert!(matches!(
        Matcher::new(&["a/[x-"]),
        Err(PatternError::Syntax(_))
    ));
    // A lone `!` survives reading the file and fails when compiled, as in Docker.
    let pats = read_ignore_file("a\n!\n");
    assert_eq!(pats, ["a", "!"]);
    assert!(Matcher::new(&pats).is_err());
}

#[test]
fn ignore_file_edge_cases() {
    // A BOM, CRLF line ends, an indented `#` is a pattern, not a comment.
    let pats = read_ignore_file("\u{feff}# c\r\n  #x\r\n./a/b/\r\n!/c\r\n/\n\t\n");
    assert_eq!(pats, ["#x", "a/b", "!c", "/"]);
}

#[test]
fn exceptions_reinclude_under_excluded_directories() {
    let m = Matcher::new(&["docs", "!docs/README.md"]).unwrap();
    assert!(m.matches("docs"));
    assert!(m.matches("docs/other.md"));
    assert!(!m.matches("docs/README.md"));
    assert!(m.must_descend("docs"));

    // Later patterns win: re-excluded again.
    let m = Matcher::new(&["*.md", "!README*.md", "README-secret.md"]).unwrap();
    assert!(m.matches("CHANGES.md"));
    assert!(!m.matches("README.md"));
    assert!(m.matches("README-secret.md"));

    // `*` does not cross `/`, `**` does; a directory match covers its contents.
    let m = Matcher::new(&["*/temp*"]).unwrap();
    assert!(m.matches("somedir/temporary.txt"));
    assert!(m.matches("somedir/temp/file"));
    assert!(!m.matches("somedir/sub/temp"));
    let m = Matcher::new(&["**/*.go"]).unwrap();
    assert!(m.matches("main.go"));
    assert!(m.matches("a/b/c.go"));
    let m = Matcher::new(&["temp?"]).unwrap();
    assert!(m.matches("tempa"));
    assert!(!m.matches("temp"));
}

#[test]
fn leading_slash_and_dot_patterns_are_cleaned() {
    let pats = read_ignore_file("/secret\n./build/\n");
    let m = Matcher::new(&pats).unwrap();
    assert!(m.matches("secret"));
    assert!(m.matches("build/out.o"));
    assert!(!m.matches("src/secret"));
}
