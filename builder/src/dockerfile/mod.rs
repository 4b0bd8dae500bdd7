//! Dockerfile syntax: text → instructions with spans. No I/O, no expansion.
pub mod ast;
pub mod shell;

pub use ast::{
    parse_ast, Ast, Directive, Heredoc, Node, ParseWarning, SyntaxError, SyntaxErrorKind,
};
