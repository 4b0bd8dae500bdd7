//! Dockerfile syntax: text → typed instructions with spans. No I/O, no expansion.
//!
//! # Why our own parser
//!
//! Measured against BuildKit's parser corpus (`shared/conformance/buildkit`, 33 positive
//! cases and 4 negative ones), counting a positive case as passed when the crate parses it
//! with the expected number of instructions (neither crate can produce BuildKit's dump):
//!
//! | crate | positive parsed | instruction count right | negatives rejected |
//! |---|---|---|---|
//! | `dockerfile-parser` 0.9 | 15/33 | 15/33 | 1/4 |
//! | `parse-dockerfile` 0.1.9 | 26/33 | 25/33 | 3/4 |
//!
//! Neither handles BuildKit's invalid-JSON fallback, `HEALTHCHECK` forms or its continuation
//! quirks exactly, and neither gives BuildKit's node shape, so this module is a port of
//! BuildKit's line parser ([`ast`]), instruction layer ([`instructions`]) and shell lexer
//! ([`shell`]). It passes 33/33 positive cases byte for byte, 4/4 negatives, and dumps all
//! 888 files of `buildkit-reference/` identically.
//!
//! Layers: [`parse_ast`] gives BuildKit-shaped [`Node`]s (what `mybuild parse` dumps);
//! [`parse`] converts them into typed [`Instruction`]s grouped into [`Stage`]s.

pub mod ast;
pub mod instructions;
pub mod shell;

pub use ast::{
    parse_ast, Ast, Directive, Heredoc, Node, ParseWarning, ParseWarningKind, SyntaxError,
    SyntaxErrorKind,
};
pub use instructions::{
    ArgDecl, Command, CopyInstr, FromInstr, Healthcheck, Instruction, InstructionError,
    InstructionKind, KeyValue, Mount, RunInstr, SourceContent, Span,
};

use crate::diagnostic::{render, Location};

/// A parsed Dockerfile: global ARGs, then stages.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Dockerfile {
    pub file_name: String,
    /// The text, kept to render errors found later (planning, lint).
    #[serde(skip)]
    pub source: String,
    pub directives: Vec<Directive>,
    pub escape: char,
    /// ARG instructions before the first FROM.
    pub meta_args: Vec<Instruction>,
    pub stages: Vec<Stage>,
    pub warnings: Vec<ParseWarning>,
}

/// One `FROM` and the instructions up to the next.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Stage {
    /// The FROM instruction (its kind is always `InstructionKind::From`).
    pub from: Instruction,
    pub instructions: Vec<Instruction>,
}

impl Stage {
    pub fn from_instr(&self) -> Option<&FromInstr> {
        match &self.from.kind {
            InstructionKind::From(f) => Some(f),
            _ => None,
        }
    }
    /// The lower-cased `AS` name.
    pub fn name(&self) -> Option<&str> {
        self.from_instr().and_then(|f| f.stage_name.as_deref())
    }
}

impl Dockerfile {
    /// Every instruction in file order (meta ARGs, then each stage's FROM and body).
    pub fn all_instructions(&self) -> impl Iterator<Item = &Instruction> {
        self.meta_args.iter().chain(
            self.stages
                .iter()
                .flat_map(|s| std::iter::once(&s.from).chain(s.instructions.iter())),
        )
    }

    /// A location in this file, for diagnostics.
    pub fn locate(&self, span: Span, needle: Option<&str>) -> Location {
        Location::find(
            &self.file_name,
            &self.source,
            span.start_line,
            span.column,
            needle,
        )
    }
}

/// What made parsing fail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseErrorKind {
    #[error(transparent)]
    Syntax(SyntaxErrorKind),
    #[error(transparent)]
    Instruction(InstructionError),
}

/// A parse error with its place in the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{}:{}: {kind}", location.file, location.line, location.column)]
pub struct ParseError {
    pub kind: ParseErrorKind,
    pub location: Location,
}

impl ParseError {
    /// The message with the offending line and a caret under the column.
    pub fn render(&self) -> String {
        render(&self.kind.to_string(), &self.location)
    }
}

fn keyword_column(source_line: &str) -> usize {
    source_line
        .chars()
        .take_while(|c| c.is_whitespace())
        .count()
        + 1
}

/// Parse Dockerfile text into stages of typed instructions.
pub fn parse(text: &str, file_name: &str) -> Result<Dockerfile, ParseError> {
    let ast = parse_ast(text).map_err(|e| {
        let line = e.start_line.max(1);
        let needle = match e.kind {
            SyntaxErrorKind::UnterminatedHeredoc => Some("<<"),
            SyntaxErrorKind::NotStringArray => Some("["),
            _ => None,
        };
        ParseError {
            location: Location::find(file_name, text, line, 1, needle),
            kind: ParseErrorKind::Syntax(e.kind),
        }
    })?;
    let lines: Vec<&str> = text
        .strip_prefix('\u{feff}')
        .unwrap_or(text)
        .lines()
        .collect();
    let mut meta_args = Vec::new();
    let mut stages: Vec<Stage> = Vec::new();
    for node in &ast.nodes {
        let first = lines
            .get(node.start_line.saturating_sub(1))
            .copied()
            .unwrap_or("");
        let column = keyword_column(first);
        let err = |kind: InstructionError, needle: Option<String>| ParseError {
            location: Location::find(file_name, text, node.start_line, column, needle.as_deref()),
            kind: ParseErrorKind::Instruction(kind),
        };
        let ins = instructions::convert(node, column).map_err(|(k, w)| err(k, w))?;
        match (&ins.kind, stages.last_mut()) {
            (InstructionKind::From(_), _) => stages.push(Stage {
                from: ins,
                instructions: Vec::new(),
            }),
            (InstructionKind::Arg { .. }, None) => meta_args.push(ins),
            (_, Some(stage)) => stage.instructions.push(ins),
            (_, None) => return Err(err(InstructionError::NoStage, None)),
        }
    }
    Ok(Dockerfile {
        file_name: file_name.to_string(),
        source: text.to_string(),
        directives: ast.directives,
        escape: ast.escape,
        meta_args,
        stages,
        warnings: ast.warnings,
    })
}

/// A directive found by [`detect_directive`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetectedDirective {
    /// The value before any ` //` options (for `syntax`, the frontend reference).
    pub value: String,
    /// The whole value as written.
    pub cmdline: String,
    /// 1-based line (1 for the JSON form).
    pub line: usize,
}

/// BuildKit's `DetectSyntax`/`ParseDirective`: find `# name=value` at the top, also after a
/// `#!` line; for `syntax`, also `//syntax=` and a JSON object `{"syntax": "..."}`.
pub fn detect_directive(text: &str, name: &str) -> Option<DetectedDirective> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let prefixes: &[&str] = if name == "syntax" {
        &["#", "//"]
    } else {
        &["#"]
    };
    for prefix in prefixes {
        for (i, line) in text.lines().enumerate() {
            if i == 0 && line.starts_with("#!") {
                continue;
            }
            let Some(rest) = line.strip_prefix(prefix) else {
                break;
            };
            let Some((k, v)) = ast::parse_directive_line(&format!("#{rest}"))
                .map(|(k, v)| (k.to_string(), v.to_string()))
            else {
                break;
            };
            let k = k.to_ascii_lowercase();
            if k == name {
                let value = v.split("//").next().unwrap_or("").trim().to_string();
                return Some(DetectedDirective {
                    value,
                    cmdline: v,
                    line: i + 1,
                });
            }
            if !matches!(k.as_str(), "syntax" | "escape" | "check") {
                break;
            }
        }
    }
    if name == "syntax" {
        if let Ok(serde_json::Value::Object(m)) = serde_json::from_str::<serde_json::Value>(text) {
            if let Some(serde_json::Value::String(v)) = m.get(name) {
                return Some(DetectedDirective {
                    value: v.clone(),
                    cmdline: v.clone(),
                    line: 1,
                });
            }
        }
    }
    None
}
