//! builder: Dockerfile → step graph → executed steps → layers and image config.
//!
//! # The frontend (no I/O)
//!
//! ```text
//! text ──dockerfile::parse──▶ Dockerfile ──plan::plan──▶ StepGraph ──▶ exec
//!                                   └──lint::lint──▶ LintReport
//! ```
//!
//! - [`dockerfile::parse`]`(text, file_name) -> Result<Dockerfile, ParseError>`: BuildKit's
//!   line parser ([`dockerfile::parse_ast`], whose [`dockerfile::Ast::dump`] is byte-identical
//!   to `AST.Dump()`) plus its instruction layer. A [`dockerfile::Dockerfile`] holds the
//!   global ARGs (`meta_args`) and [`dockerfile::Stage`]s of typed, still unexpanded
//!   [`dockerfile::Instruction`]s, each with its [`dockerfile::Span`] (lines and column).
//! - [`plan::plan`]`(&Dockerfile, &PlanOptions, &dyn BaseInfo) -> Result<StepGraph, PlanError>`:
//!   ARG scoping and `--build-arg`s, BuildKit's word expansion, stage resolution by name and
//!   index, base images' ONBUILD triggers (asked of the caller's [`plan::BaseInfo`]), cycle
//!   detection and pruning to `--target`. A [`plan::StepGraph`] lists the needed
//!   [`plan::PlannedStage`]s dependencies first; each has its [`plan::Base`], its
//!   `depends_on` stages and ordered [`plan::Step`]s (fully expanded [`plan::StepKind`]s,
//!   with spans). Warnings (unused build-args) ride along.
//! - [`lint::lint`]: BuildKit's check rules, as [`lint::LintReport`].
//! - Errors ([`dockerfile::ParseError`], [`plan::PlanError`]) carry a
//!   [`diagnostic::Location`]; `render()` gives the caret snippet the cli prints.
// Parse and plan errors carry the rendered source location; they are cold paths.
#![allow(clippy::result_large_err)]
pub mod bases;
pub mod cache;
pub mod container;
pub mod context;
pub mod diagnostic;
pub mod dockerfile;
pub mod exec;
pub mod ignore;
pub mod layer;
pub mod lint;
pub mod mtime;
pub mod plan;
pub mod rootless;
pub mod sandbox;
pub mod users;
pub mod xattrs;
