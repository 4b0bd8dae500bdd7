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
                            && !matches!(case["expect_patterns"].as_u64(),
                                Some(n) if n as usize != m.len())
                            && !matches!(case["expect_exclusions"].as_bool(),
                                Some(e) if e != m.has_exceptions())
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
    assert_eq!(total, 144, "the corpus has 144 cases: {counts:?}");
    assert_eq!(counts["ignored"], 72);
    assert_eq!(counts["matches"], 65);
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

mod selection {
    use std::path::{Path, PathBuf};

    use builder::exec::copy::{select, CopyError, SourceFilter};
    use builder::ignore::{read_ignore_file, Matcher};

    fn tree(files: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for f in files {
            let p = dir.path().join(f);
            if let Some(d) = f.strip_suffix('/') {
                std::fs::create_dir_all(dir.path().join(d)).unwrap();
            } else {
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::fs::write(&p, f.as_bytes()).unwrap();
            }
        }
        dir
    }

    /// (destination path, source path) of each selected entry.
    fn run(
        root: &Path,
        sources: &[&str],
        ignore: &str,
        exclude: &[&str],
        parents: bool,
    ) -> Result<Vec<(String, String)>, CopyError> {
        let ig = Matcher::new(&read_ignore_file(ignore)).unwrap();
        let ex = Matcher::new(exclude).unwrap();
        let sources: Vec<String> = sources.iter().map(|s| s.to_string()).collect();
        let filter = SourceFilter {
            from_context: true,
            ignore: Some(&ig),
            exclude: Some(&ex),
            parents,
        };
        let layers = [PathBuf::from(root)];
        Ok(select(&layers, &sources, &filter)?
            .into_iter()
            .map(|s| (s.dest.display().to_string(), s.src.display().to_string()))
            .collect())
    }

    fn dests(v: Vec<(String, String)>) -> Vec<String> {
        v.into_iter()
            .map(|(d, _)| d)
            .filter(|d| !d.is_empty())
            .collect()
    }

    #[test]
    fn ignored_entries_are_absent_and_exceptions_come_back() {
        let t = tree(&[
            "a.txt",
            "b.md",
            "docs/x.md",
            "docs/README.md",
            "node/m/i.js",
        ]);
        let got = dests(
            run(
                t.path(),
                &["."],
                "*.md\ndocs\n!docs/README.md\nnode",
                &[],
                false,
            )
            .unwrap(),
        );
        assert_eq!(got, ["a.txt", "docs", "docs/README.md"]);
        // An ignored file is as if absent; so is one under an ignored directory.
        for src in ["b.md", "docs/x.md", "node/m/i.js", "node"] {
            let err = run(
                t.path(),
                &[src],
                "*.md\ndocs\n!docs/README.md\nnode",
                &[],
                false,
            )
            .unwrap_err();
            assert!(
                matches!(err, CopyError::NotInContext(ref s) if s == src),
                "{src}: {err}"
            );
            assert!(err.to_string().contains("excluded by .dockerignore"));
        }
        // The re-included child is reachable by name.
        assert_eq!(
            dests(
                run(
                    t.path(),
                    &["docs/README.md"],
                    "docs\n!docs/README.md",
                    &[],
                    false
                )
                .unwrap()
            ),
            ["README.md"]
        );
        // An ignored directory without re-included children is gone from globs too.
        assert_eq!(
            dests(run(t.path(), &["*"], "docs\nnode\n*.md", &[], false).unwrap()),
            ["a.txt"]
        );
    }

    #[test]
    fn exclude_is_relative_to_each_source() {
        // BuildKit's own --exclude integration case, on a plain directory.
        let t = tree(&[
            "dir1/file-101.png",
            "dir1/file-102.txt",
            "dir1/file-103.jpeg",
            "dir2/file-201.pdf",
            "dir2/file-202.jpeg",
            "dir2/file-203.png",
            "dir3/file-301.mp3",
            "dir3/file-302.mpeg",
        ]);
        let got = dests(run(t.path(), &["."], "", &["*/*.png", "*/*.jpeg"], false).unwrap());
        assert_eq!(
            got,
            [
                "dir1",
                "dir1/file-102.txt",
                "dir2",
                "dir2/file-201.pdf",
                "dir3",
                "dir3/file-301.mp3",
                "dir3/file-302.mpeg"
            ]
        );
        let got = dests(run(t.path(), &["dir3/"], "", &["*.mp3"], false).unwrap());
        assert_eq!(got, ["file-302.mpeg"]);
        let got = dests(
            run(
                t.path(),
                &["dir*"],
                "",
                &["*.mp3", "*.jpeg", "*.png", "*.pdf", "*.txt"],
                false,
            )
            .unwrap(),
        );
        assert_eq!(got, ["file-302.mpeg"]);
        assert!(dests(run(t.path(), &["dir*"], "", &["*"], false).unwrap()).is_empty());
        // A file named by a wildcard source is matched by its name.
        let got = dests(run(t.path(), &["dir1/*"], "", &["*.txt"], false).unwrap());
        assert_eq!(got, ["file-101.png", "file-103.jpeg"]);
    }

    #[test]
    fn parents_keep_paths_from_the_root_or_the_pivot() {
        let t = tree(&[
            "x/a.txt",
            "y/a.txt",
            "a/b/c.txt",
            "a/b/d.txt",
            "src/a.txt",
            "src/x/b.txt",
            "src/x/y/c.txt",
            "src/x/y/d.md",
        ]);
        let got = dests(run(t.path(), &["./x/a.txt", "./y/a.txt"], "", &[], true).unwrap());
        assert_eq!(got, ["x", "x/a.txt", "y", "y/a.txt"]);
        let got = dests(run(t.path(), &["./a/./b/c.txt"], "", &[], true).unwrap());
        assert_eq!(got, ["b", "b/c.txt"]);
        let got = dests(run(t.path(), &["./src/**/*.txt"], "", &[], true).unwrap());
        assert_eq!(
            got,
            [
                "src",
                "src/a.txt",
                "src/x",
                "src/x/b.txt",
                "src/x/y",
                "src/x/y/c.txt"
            ]
        );
        let got = dests(run(t.path(), &["a/./b"], "", &["d.txt", "b/d.txt"], true).unwrap());
        assert_eq!(got, ["b", "b/c.txt"]);
        let err = run(t.path(), &["./nope/a.txt"], "", &[], true).unwrap_err();
        assert!(matches!(err, CopyError::NotInContext(_)));
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_are_selected_as_links_and_not_followed() {
        let t = tree(&["in/file"]);
        std::os::unix::fs::symlink("/etc", t.path().join("out")).unwrap();
        let got = run(t.path(), &["."], "", &[], false).unwrap();
        assert!(got.iter().any(|(d, _)| d == "out"));
        assert!(!got.iter().any(|(d, _)| d.starts_with("out/")));
        // Nothing below a symlinked directory is reachable by name.
        assert!(run(t.path(), &["out/passwd"], "", &[], false).is_err());
        assert!(run(t.path(), &["out/*"], "", &[], false).is_err());
    }
}
