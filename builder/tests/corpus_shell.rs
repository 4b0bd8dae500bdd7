//! BuildKit's shell-lexer tables (`envVarTest`, `wordsTest`, `extracted/shell.json`) and the
//! parser helper tables of `extracted/parser.json`, read in place.

use builder::dockerfile::ast::{
    chomp_heredoc, heredocs_from_line, parse_heredoc_word, parse_words,
};
use builder::dockerfile::shell::Lexer;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance/buildkit")
}

#[test]
fn env_var_test_table() {
    let text = fs::read_to_string(corpus().join("frontend/dockerfile/shell/envVarTest")).unwrap();
    let env: BTreeMap<String, String> = [
        ("PWD", "/home"),
        ("SHELL", "bash"),
        ("KOREAN", "한국어"),
        ("NULL", ""),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let lex = Lexer::new('\\');
    let (mut run, mut failures) = (0, Vec::new());
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split('|').map(str::trim).collect();
        assert_eq!(f.len(), 3, "{line}");
        if f[0] == "W" {
            continue;
        }
        run += 1;
        let got = match lex.process_word(f[1], &env) {
            Ok(s) => s,
            Err(_) => "error".to_string(),
        };
        if got != f[2] {
            failures.push(format!("{:?}: got {got:?} want {:?}", f[1], f[2]));
        }
    }
    assert_eq!(run, 228);
    assert!(
        failures.is_empty(),
        "{} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn words_test_table() {
    let text = fs::read_to_string(corpus().join("frontend/dockerfile/shell/wordsTest")).unwrap();
    let mut env: Vec<(String, String)> = Vec::new();
    let lex = Lexer::new('\\');
    let (mut run, mut failures) = (0, Vec::new());
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        if let Some(kv) = line.strip_prefix("ENV ") {
            let (k, v) = kv.trim_start().split_once('=').unwrap();
            env.push((k.to_string(), v.to_string()));
            continue;
        }
        let Some((input, expected)) = line.split_once('|') else {
            continue;
        };
        run += 1;
        let want: Vec<String> = expected
            .trim_start()
            .split(',')
            .map(str::to_string)
            .collect();
        let got = match lex.process_words(input.trim(), &env) {
            Ok(w) => w,
            Err(_) => vec!["error".to_string()],
        };
        if got != want {
            failures.push(format!("{input:?}: got {got:?} want {want:?}"));
        }
    }
    assert_eq!(run, 24);
    assert!(
        failures.is_empty(),
        "{} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn cases(file: &str) -> Vec<Value> {
    let v: Value =
        serde_json::from_str(&fs::read_to_string(corpus().join("extracted").join(file)).unwrap())
            .unwrap();
    v["cases"].as_array().unwrap().clone()
}

fn env_of(input: &Value) -> Vec<(String, String)> {
    if let Some(m) = input["env"].as_object() {
        return m
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect();
    }
    if let Some(l) = input["env_list"].as_array() {
        return l
            .iter()
            .map(|e| {
                let e = e.as_str().unwrap();
                match e.split_once('=') {
                    Some((k, v)) => (k.to_string(), v.to_string()),
                    None => (e.to_string(), String::new()),
                }
            })
            .collect();
    }
    Vec::new()
}

#[test]
fn shell_json_table() {
    let lex = Lexer::new('\\');
    let mut failures = Vec::new();
    let all = cases("shell.json");
    assert_eq!(all.len(), 63);
    for c in &all {
        let input = &c["input"];
        let expect = &c["expect"];
        let env = env_of(input);
        let r = lex.process(input["word"].as_str().unwrap(), &env);
        let ok = match (c["kind"].as_str().unwrap(), &r) {
            ("process-word", Ok(e)) => expect["result"].as_str() == Some(e.result.as_str()),
            ("process-word", Err(e)) => expect["error_contains"]
                .as_str()
                .is_some_and(|s| e.to_string().contains(s)),
            ("process-word-with-matches", Ok(e)) if expect.get("error").is_none() => {
                let set_ok = |k: &str, got: &std::collections::BTreeSet<String>| {
                    expect
                        .get(k)
                        .is_none_or(|v| serde_json::to_value(got).unwrap() == *v)
                };
                expect["result"].as_str() == Some(e.result.as_str())
                    && set_ok("matched", &e.matched)
                    && set_ok("unmatched", &e.unmatched)
            }
            ("process-word-with-matches", r) => r.is_err() && expect["error"] == Value::Bool(true),
            (k, _) => panic!("unknown kind {k}"),
        };
        if !ok {
            failures.push(format!("{}: got {r:?} want {expect}", c["id"]));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn parser_json_helper_tables() {
    let mut failures = Vec::new();
    let mut run = 0;
    for c in cases("parser.json") {
        let input = &c["input"];
        let expect = &c["expect"];
        let id = c["id"].to_string();
        let kind = c["kind"].as_str().unwrap();
        run += 1;
        let ok = match kind {
            "heredoc-word" => match parse_heredoc_word(input["word"].as_str().unwrap()) {
                Err(_) => expect["error"] == Value::Bool(true),
                Ok(None) => expect["heredoc"] == Value::Bool(false),
                Ok(Some(h)) => {
                    expect["heredoc"] == Value::Bool(true)
                        && expect["name"].as_str() == Some(&h.name)
                }
            },
            "heredoc-names-in-line" => {
                let names: Vec<String> = heredocs_from_line(input["line"].as_str().unwrap())
                    .unwrap()
                    .into_iter()
                    .map(|h| h.name)
                    .collect();
                serde_json::to_value(&names).unwrap() == expect["names"]
            }
            "heredoc-chomp" => {
                chomp_heredoc(input["content"].as_str().unwrap())
                    == expect["output"].as_str().unwrap()
            }
            "json-exec-form" => {
                let text = input["text"].as_str().unwrap();
                match builder::dockerfile::parse_ast(&format!("CMD {text}")) {
                    Ok(ast) => {
                        let n = &ast.nodes[0];
                        n.json && serde_json::to_value(&n.args).unwrap() == expect["args"]
                    }
                    Err(e) => {
                        expect["error"] == "not-string-array"
                            && matches!(
                                e.kind,
                                builder::dockerfile::SyntaxErrorKind::NotStringArray
                            )
                    }
                }
            }
            "parse-words" => {
                serde_json::to_value(parse_words(input["text"].as_str().unwrap(), '\\')).unwrap()
                    == expect["words"]
            }
            "name-val" => {
                let line = format!(
                    "{} {}",
                    input["instruction"].as_str().unwrap(),
                    input["rest"].as_str().unwrap()
                );
                match builder::dockerfile::parse_ast(&line) {
                    Ok(ast) => {
                        serde_json::to_value(&ast.nodes[0].args).unwrap() == expect["values"]
                    }
                    Err(_) => expect["error"] == Value::Bool(true),
                }
            }
            "parse-heredocs" => {
                let ast =
                    builder::dockerfile::parse_ast(input["dockerfile"].as_str().unwrap()).unwrap();
                let from = expect["instructions_from"].as_u64().unwrap() as usize;
                let got: Vec<Value> = ast.nodes[from..]
                    .iter()
                    .map(|n| {
                        if n.heredocs.is_empty() {
                            Value::Null
                        } else {
                            serde_json::to_value(&n.heredocs).unwrap()
                        }
                    })
                    .collect();
                Value::Array(got.clone()) == expect["heredocs"] || {
                    failures.push(format!("{id}: got {}", Value::Array(got)));
                    true
                }
            }
            "line-ranges" => {
                let path = corpus().join(input["dockerfile_path"].as_str().unwrap());
                let ast =
                    builder::dockerfile::parse_ast(&fs::read_to_string(path).unwrap()).unwrap();
                let ranges: Vec<[usize; 2]> = ast
                    .nodes
                    .iter()
                    .map(|n| [n.start_line, n.end_line])
                    .collect();
                serde_json::to_value(&ranges).unwrap() == expect["instructions"]
                    && Some(ast.nodes[0].start_line as u64) == expect["ast_start"].as_u64()
                    && ast.nodes.last().map(|n| n.end_line as u64) == expect["ast_end"].as_u64()
            }
            "parse-warnings" => {
                let ast =
                    builder::dockerfile::parse_ast(input["dockerfile"].as_str().unwrap()).unwrap();
                let subs = expect["warnings_contain"].as_array().unwrap();
                ast.warnings.len() as u64 == expect["count"].as_u64().unwrap()
                    && subs.iter().zip(&ast.warnings).all(|(s, w)| {
                        s.as_array()
                            .unwrap()
                            .iter()
                            .all(|s| w.short.contains(s.as_str().unwrap()))
                    })
                    && ast.warnings[0]
                        .detail
                        .contains(expect["first_detail_contains"].as_str().unwrap())
            }
            "parse-error" => {
                let p = &input["dockerfile_parts"];
                let text = format!(
                    "{}{}{}",
                    p["prefix"].as_str().unwrap(),
                    p["repeat"]
                        .as_str()
                        .unwrap()
                        .repeat(p["count"].as_u64().unwrap() as usize),
                    p["suffix"].as_str().unwrap()
                );
                builder::dockerfile::parse_ast(&text)
                    .map_err(|e| e.to_string())
                    .err()
                    .as_deref()
                    == expect["error_equals"].as_str()
            }
            "directives-all" => {
                let got: Vec<Value> = builder::dockerfile::parse_ast(&format!(
                    "{}FROM x\n",
                    input["text"].as_str().unwrap()
                ))
                .map(|a| {
                    a.directives
                        .iter()
                        .map(|d| serde_json::json!({"name": d.name, "value": d.value}))
                        .collect()
                })
                .unwrap_or_default();
                Value::Array(got) == expect["directives"]
            }
            "detect-syntax" | "parse-directive" => {
                let name = input["name"].as_str().unwrap_or("syntax");
                let got =
                    builder::dockerfile::detect_directive(input["text"].as_str().unwrap(), name);
                match got {
                    None => expect["found"] == Value::Bool(false),
                    Some(d) => {
                        expect["found"] == Value::Bool(true)
                            && expect
                                .get("cmdline")
                                .is_none_or(|c| c.as_str() == Some(d.cmdline.as_str()))
                            && expect
                                .get("line")
                                .is_none_or(|l| l.as_u64() == Some(d.line as u64))
                            && (expect["ref"].as_str().or(expect["value"].as_str())
                                == Some(d.value.as_str()))
                    }
                }
            }
            other => panic!("unknown kind {other}"),
        };
        if !ok {
            failures.push(format!("{kind} {id}: want {expect}"));
        }
    }
    assert_eq!(run, 80);
    assert!(
        failures.is_empty(),
        "{} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
