//! Planning: a parsed [`Dockerfile`] → a [`StepGraph`] the executor runs.
//!
//! This is where BuildKit's dispatch-time rules live: ARG scoping (global ARGs are seen by
//! FROM and must be redeclared inside a stage), `--build-arg` overrides, the predefined
//! platform and proxy ARGs, word expansion of the instructions BuildKit expands, stage
//! resolution by name and index, ONBUILD triggers of base images, the dependency graph with
//! cycle detection, and pruning to `--target`. No I/O: base images are known only through
//! the caller's [`BaseInfo`].

mod platform;
pub mod reference;

pub use platform::{platform_args, Platform, PLATFORM_ARGS, PROXY_ARGS};

use crate::diagnostic::{render, Location};
use crate::dockerfile::shell::{ExpandError, Lexer};
use crate::dockerfile::{
    ast, instructions, ArgDecl, Command, CopyInstr, Dockerfile, FromInstr, Healthcheck, Heredoc,
    Instruction, InstructionKind, Mount, RunInstr, Span,
};
use std::collections::{BTreeMap, BTreeSet};

/// The PATH BuildKit gives a stage whose base sets none (its `DefaultPathEnv`).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What the planner may know about a base image. The cli answers from the store or a
/// registry; tests answer from a table.
pub trait BaseInfo {
    /// The image's ONBUILD triggers (`Config.OnBuild`), in order.
    fn onbuild(&self, _image: &str, _platform: Option<&Platform>) -> Vec<String> {
        Vec::new()
    }
    /// The image's environment (`Config.Env`), used for expansion inside the stage.
    fn env(&self, _image: &str, _platform: Option<&Platform>) -> Vec<(String, String)> {
        Vec::new()
    }
}

/// A [`BaseInfo`] that knows nothing about any image.
pub struct NoBaseInfo;
impl BaseInfo for NoBaseInfo {}

/// Inputs of planning besides the file.
#[derive(Debug, Clone)]
pub struct PlanOptions {
    /// `--build-arg NAME=VALUE`.
    pub build_args: BTreeMap<String, String>,
    /// `--target`: a stage name (case-insensitive) or index; default: the last stage.
    pub target: Option<String>,
    pub target_platform: Platform,
    pub build_platform: Platform,
    /// Plan every stage instead of only what the target needs (used by `check`).
    pub all_stages: bool,
    /// `--build-context NAME=VALUE`, by [`reference::context_name`]. A name used by
    /// `FROM`, `COPY --from` or `RUN --mount=from=` means the context, and a stage of
    /// the same name is replaced by it (BuildKit's rule).
    pub named_contexts: BTreeMap<String, NamedContext>,
}

/// What a `--build-context` is, as far as planning cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamedContext {
    /// A local directory: read by `COPY --from` and bind mounts, never a base.
    Local,
    /// An image in the store (or pulled): `docker-image://REF`, or an OCI layout's
    /// image the caller copied into the store.
    Image { reference: String },
    /// `docker-image://scratch`: an empty filesystem.
    Scratch,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            build_args: BTreeMap::new(),
            target: None,
            target_platform: Platform::host(),
            build_platform: Platform::host(),
            all_stages: false,
            named_contexts: BTreeMap::new(),
        }
    }
}

/// What a stage starts from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Base {
    Scratch,
    /// Another stage, by its index in the file.
    Stage {
        index: usize,
    },
    Image {
        reference: String,
    },
}

/// Where COPY --from or a RUN mount reads from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Source {
    Context,
    Stage {
        index: usize,
    },
    Image {
        reference: String,
    },
    /// A local directory `--build-context`, by its name.
    NamedContext {
        name: String,
    },
}

/// COPY and ADD after expansion.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CopyStep {
    pub from: Source,
    pub sources: Vec<String>,
    /// Heredoc sources: (file name, data), data expanded when the delimiter was unquoted.
    pub contents: Vec<(String, String)>,
    pub dest: String,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub link: bool,
    pub parents: bool,
    pub exclude: Vec<String>,
    pub checksum: Option<String>,
    pub keep_git_dir: Option<bool>,
    pub unpack: Option<bool>,
}

/// A RUN mount with its source resolved.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RunMount {
    pub mount: Mount,
    /// For `from=`: the stage or image it reads.
    pub from: Option<Source>,
}

/// One executable step, fully expanded.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum StepKind {
    Run {
        command: Command,
        files: Vec<Heredoc>,
        mounts: Vec<RunMount>,
        network: Option<String>,
        security: Option<String>,
        devices: Vec<String>,
        /// ARGs in scope with a value: the executor adds them to the environment of this RUN.
        build_args: Vec<(String, String)>,
        /// Every ARG the stage (and the stages it is built on) declared, in order, with
        /// the value the RUN sees (ENV first, else the ARG's, else empty): BuildKit's
        /// `|N K=V` history prefix.
        history_args: Vec<(String, String)>,
    },
    Copy(CopyStep),
    Add(CopyStep),
    Env {
        pairs: Vec<(String, String)>,
    },
    Label {
        pairs: Vec<(String, String)>,
    },
    Cmd {
        command: Command,
    },
    Entrypoint {
        command: Command,
        /// A CMD came earlier in this stage: ENTRYPOINT keeps it (BuildKit resets
        /// only a CMD the stage inherited).
        keep_cmd: bool,
    },
    Expose {
        ports: Vec<String>,
    },
    Volume {
        paths: Vec<String>,
    },
    User {
        user: String,
    },
    Workdir {
        path: String,
    },
    /// An ARG after resolution: the names and the values they took (None: declared, unset).
    Arg {
        args: Vec<(String, Option<String>)>,
    },
    Onbuild {
        expression: String,
    },
    StopSignal {
        signal: String,
    },
    Healthcheck(Healthcheck),
    Shell {
        shell: Vec<String>,
    },
    Maintainer {
        name: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Step {
    pub kind: StepKind,
    /// Where the instruction is (for an ONBUILD trigger: the FROM that ran it).
    pub span: Span,
    /// The instruction as written.
    pub original: String,
    /// True when this step is a base image's ONBUILD trigger.
    pub onbuild: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PlannedStage {
    /// Index of the stage in the file.
    pub index: usize,
    pub name: Option<String>,
    pub base: Base,
    /// The expanded `FROM --platform`, when given.
    #[serde(serialize_with = "platform::plan_json::optional")]
    pub platform: Option<Platform>,
    /// The platform the stage is built for: its base stage's, else its `FROM
    /// --platform`, else the target platform (as BuildKit decides).
    #[serde(serialize_with = "platform::plan_json::one")]
    pub stage_platform: Platform,
    pub span: Span,
    pub steps: Vec<Step>,
    /// File indices of the stages this one needs (base, COPY --from, RUN --mount from=).
    pub depends_on: Vec<usize>,
}

/// A warning found while planning.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PlanWarning {
    pub message: String,
    pub span: Option<Span>,
}

/// The plan: the stages to build, in an order where each comes after what it needs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StepGraph {
    pub stages: Vec<PlannedStage>,
    /// File index of the stage whose result is the image.
    pub target: usize,
    pub warnings: Vec<PlanWarning>,
}

impl StepGraph {
    pub fn stage(&self, index: usize) -> Option<&PlannedStage> {
        self.stages.iter().find(|s| s.index == index)
    }
}

/// Why a plan failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanErrorKind {
    #[error("{0}")]
    Expand(#[from] ExpandError),
    #[error("base name ({0}) should not be blank")]
    BlankBase(String),
    #[error("FROM argument '{name}' is not declared: base name ({word}) expands to \"{result}\"")]
    UndeclaredArgInFrom {
        name: String,
        word: String,
        result: String,
    },
    #[error("failed to parse stage name \"{name}\": {error}")]
    InvalidBase {
        name: String,
        error: reference::ReferenceError,
    },
    #[error("failed to parse platform {0}")]
    InvalidPlatform(String),
    #[error("target stage \"{0}\" could not be found")]
    UnknownTarget(String),
    #[error("invalid stage index {0}")]
    UnknownStageIndex(String),
    #[error("circular dependency detected on stage: {0}")]
    Cycle(String),
    #[error("variable expansion is not supported for --from, define a new stage with FROM using ARG from global scope as a workaround")]
    FromExpansion,
    #[error("invalid field '{0}' must be a key=value pair")]
    MountField(String),
    #[error("invalid network mode \"{0}\"")]
    NetworkMode(String),
    #[error("{0}")]
    Onbuild(String),
    #[error("VOLUME specified can not be an empty string")]
    EmptyVolume,
    #[error("invalid signal: {0}")]
    Signal(String),
    #[error("EXPOSE: {0}")]
    Expose(String),
    #[error("dockerfile has no build stages")]
    NoStages,
    #[error("named context {0:?} is a local directory, which cannot be a base image or the target (use it with COPY --from={0} or RUN --mount=from={0})")]
    LocalContextBase(String),
    #[error("named context {0:?} is docker-image://scratch, which has no files to read")]
    ScratchContextSource(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{}:{}: {kind}", location.file, location.line, location.column)]
pub struct PlanError {
    pub kind: PlanErrorKind,
    pub location: Location,
}

impl PlanError {
    pub fn render(&self) -> String {
        render(&self.kind.to_string(), &self.location)
    }
}

/// An ordered variable scope (later entries win), as BuildKit's env lists.
#[derive(Debug, Clone, Default)]
struct Vars(Vec<(String, String)>);

impl Vars {
    fn set(&mut self, k: &str, v: &str) {
        self.0.retain(|(n, _)| n != k);
        self.0.push((k.to_string(), v.to_string()));
    }
    fn get(&self, k: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }
}

struct Ctx<'a> {
    df: &'a Dockerfile,
    lex: Lexer,
    opts: &'a PlanOptions,
    used_args: BTreeSet<String>,
}

impl Ctx<'_> {
    fn err(&self, kind: PlanErrorKind, span: Span, needle: Option<&str>) -> PlanError {
        PlanError {
            kind,
            location: self.df.locate(span, needle),
        }
    }
    /// The named context `word` means, with its normalised name.
    fn named(&self, word: &str) -> Option<(String, &NamedContext)> {
        if self.opts.named_contexts.is_empty() {
            return None;
        }
        let name = reference::context_name(word)?;
        let nc = self.opts.named_contexts.get(&name)?;
        Some((name, nc))
    }
    /// A named context as a source to read files from.
    fn named_source(&self, word: &str, span: Span) -> Result<Option<Source>, PlanError> {
        Ok(match self.named(word) {
            None => None,
            Some((name, NamedContext::Local)) => Some(Source::NamedContext { name }),
            Some((_, NamedContext::Image { reference })) => Some(Source::Image {
                reference: reference.clone(),
            }),
            Some((name, NamedContext::Scratch)) => {
                return Err(self.err(PlanErrorKind::ScratchContextSource(name), span, Some(word)))
            }
        })
    }
    /// A named context as a stage's base.
    fn named_base(&self, word: &str, span: Span) -> Result<Option<Base>, PlanError> {
        Ok(match self.named(word) {
            None => None,
            Some((name, NamedContext::Local)) => {
                return Err(self.err(PlanErrorKind::LocalContextBase(name), span, Some(word)))
            }
            Some((_, NamedContext::Image { reference })) => Some(Base::Image {
                reference: reference.clone(),
            }),
            Some((_, NamedContext::Scratch)) => Some(Base::Scratch),
        })
    }
    fn expand(&self, word: &str, env: &Vars, span: Span) -> Result<String, PlanError> {
        self.lex
            .process_word(word, &env.0)
            .map_err(|e| self.err(e.into(), span, Some(word)))
    }
}

/// Find the stage a `--from`/`FROM` word names: a stage name, or (when `by_index`) a number.
fn find_stage(df: &Dockerfile, word: &str, by_index: bool) -> Option<usize> {
    if by_index {
        if let Ok(i) = word.parse::<usize>() {
            return (i < df.stages.len()).then_some(i);
        }
    }
    df.stages.iter().position(|s| s.name() == Some(word))
}

/// Plan `df`: expand, resolve stages, apply ONBUILD triggers, prune to the target.
pub fn plan(
    df: &Dockerfile,
    opts: &PlanOptions,
    bases: &dyn BaseInfo,
) -> Result<StepGraph, PlanError> {
    let mut ctx = Ctx {
        df,
        lex: Lexer::new(df.escape),
        opts,
        used_args: BTreeSet::new(),
    };
    let mut warnings = Vec::new();
    if df.stages.is_empty() {
        return Err(PlanError {
            kind: PlanErrorKind::NoStages,
            location: Location::find(&df.file_name, &df.source, 1, 1, None),
        });
    }

    let (global, declared_global) = global_scope(&mut ctx)?;

    // Target and the stages it needs.
    let target = match &opts.target {
        None => df.stages.len() - 1,
        Some(t) => find_stage(df, &t.to_ascii_lowercase(), true).ok_or_else(|| PlanError {
            kind: PlanErrorKind::UnknownTarget(t.clone()),
            location: Location::find(&df.file_name, &df.source, 1, 1, None),
        })?,
    };

    let mut planned: Vec<Option<PlannedStage>> = vec![None; df.stages.len()];
    let mut final_env: Vec<Vars> = vec![Vars::default(); df.stages.len()];
    let mut final_declared: Vec<Vec<(String, String)>> = vec![Vec::new(); df.stages.len()];
    let mut final_state: Vec<Vars> = vec![Vars::default(); df.stages.len()];
    let mut final_args: Vec<Vars> = vec![Vars::default(); df.stages.len()];
    let mut onbuilds: Vec<Vec<String>> = vec![Vec::new(); df.stages.len()];
    for (i, stage) in df.stages.iter().enumerate() {
        let span = stage.from.span;
        // A named context of the stage's name replaces the whole stage.
        if let Some(named) = named_stage(&ctx, i, target)? {
            planned[i] = Some(named);
            continue;
        }
        let from = stage
            .from_instr()
            .ok_or_else(|| ctx.err(PlanErrorKind::NoStages, stage.from.span, None))?;
        let (base, platform) = stage_base(&mut ctx, i, from, &global, &declared_global, span)?;

        // A stage built on another keeps that stage's platform; others are built for
        // their FROM --platform or the target.
        let stage_platform = match &base {
            Base::Stage { index } => planned[*index]
                .as_ref()
                .map(|s| s.stage_platform.clone())
                .unwrap_or_else(|| opts.target_platform.clone()),
            _ => platform
                .clone()
                .unwrap_or_else(|| opts.target_platform.clone()),
        };

        // Stage scope: the base's env, then ARGs as they are declared.
        let mut env = stage_env(&base, &final_env, bases, &stage_platform);
        // A stage built on another inherits its ARGs, as BuildKit's stages do.
        let mut args = match &base {
            Base::Stage { index } => final_args[*index].clone(),
            _ => Vars::default(),
        };
        let mut steps = Vec::new();
        let mut deps = BTreeSet::new();
        if let Base::Stage { index } = base {
            deps.insert(index);
        }

        // ONBUILD triggers of the base run first.
        let triggers = match &base {
            Base::Stage { index } => onbuilds[*index].clone(),
            Base::Image { reference } => bases.onbuild(reference, Some(&stage_platform)),
            Base::Scratch => Vec::new(),
        };
        let trigger_instrs = trigger_instructions(&ctx, &triggers, span)?;
        let body = trigger_instrs
            .into_iter()
            .chain(stage.instructions.iter().map(|i| (i.clone(), false)));
        let mut my_onbuild = Vec::new();
        // BuildKit's `buildArgs` of the stage: a stage built on another starts with its.
        let mut declared = match &base {
            Base::Stage { index } => final_declared[*index].clone(),
            _ => Vec::new(),
        };
        // What expansion and RUN see: ENV and ARG values in the order they were set
        // (BuildKit's state env), so an ARG declared after an ENV of the same name
        // wins there while the config keeps the ENV.
        let mut state = match &base {
            Base::Stage { index } => final_state[*index].clone(),
            _ => env.clone(),
        };
        // Whether a CMD (or a trigger's) came earlier in this stage.
        let mut cmd_set = false;
        for (ins, is_trigger) in body {
            let merged = state.clone();
            let mut kind = plan_instruction(
                &mut ctx,
                &ins,
                &merged,
                &mut env,
                &mut state,
                &mut args,
                &global,
                i,
                &mut deps,
                &mut my_onbuild,
                &mut declared,
            )?;
            match &mut kind {
                StepKind::Cmd { .. } => cmd_set = true,
                StepKind::Entrypoint { keep_cmd, .. } => *keep_cmd = cmd_set,
                _ => {}
            }
            steps.push(Step {
                kind,
                span: ins.span,
                original: ins.original.clone(),
                onbuild: is_trigger,
            });
        }
        final_env[i] = env;
        final_declared[i] = declared;
        final_state[i] = state;
        final_args[i] = args;
        onbuilds[i] = my_onbuild;
        planned[i] = Some(PlannedStage {
            index: i,
            name: stage.name().map(str::to_string),
            base,
            platform,
            stage_platform,
            span,
            steps,
            depends_on: deps.into_iter().collect(),
        });
    }

    let stages = prune(&ctx, planned, target)?;

    warnings.extend(unused_build_args(&ctx));
    Ok(StepGraph {
        stages,
        target,
        warnings,
    })
}

/// The global scope: platform ARGs, then the meta ARGs in order; with the names
/// the meta ARGs declared.
fn global_scope(ctx: &mut Ctx<'_>) -> Result<(Vars, BTreeSet<String>), PlanError> {
    let (df, opts) = (ctx.df, ctx.opts);
    let mut global = Vars::default();
    let mut declared_global: BTreeSet<String> = BTreeSet::new();
    for (k, v) in platform_args(&opts.target_platform, "TARGET")
        .into_iter()
        .chain(platform_args(&opts.build_platform, "BUILD"))
    {
        global.set(&k, &v);
    }
    for ins in &df.meta_args {
        if let InstructionKind::Arg { args } = &ins.kind {
            for a in args {
                let v = resolve_arg(ctx, a, &global, None, ins.span)?;
                declared_global.insert(a.name.clone());
                if let Some(v) = v {
                    global.set(&a.name, &v);
                }
            }
        }
    }
    Ok((global, declared_global))
}

/// The stage a `--build-context` of stage `i`'s name stands for, when there is one.
fn named_stage(ctx: &Ctx<'_>, i: usize, target: usize) -> Result<Option<PlannedStage>, PlanError> {
    let stage = &ctx.df.stages[i];
    let opts = ctx.opts;
    let span = stage.from.span;
    if let Some((name, nc)) = stage.name().and_then(|n| ctx.named(n)) {
        let base = match nc {
            NamedContext::Local if i == target => {
                return Err(ctx.err(PlanErrorKind::LocalContextBase(name), span, None))
            }
            // Nothing can reach it: every use of the name means the context.
            NamedContext::Local | NamedContext::Scratch => Base::Scratch,
            NamedContext::Image { reference } => Base::Image {
                reference: reference.clone(),
            },
        };
        return Ok(Some(PlannedStage {
            index: i,
            name: stage.name().map(str::to_string),
            base,
            platform: None,
            stage_platform: opts.target_platform.clone(),
            span,
            steps: Vec::new(),
            depends_on: Vec::new(),
        }));
    }
    Ok(None)
}

/// The warning for `--build-arg`s no instruction read (proxy variables and
/// SOURCE_DATE_EPOCH, which also sets the build's timestamps, aside).
fn unused_build_args(ctx: &Ctx<'_>) -> Option<PlanWarning> {
    let unused: Vec<String> = ctx
        .opts
        .build_args
        .keys()
        .filter(|k| !ctx.used_args.contains(*k) && !PROXY_ARGS.contains(&k.as_str()))
        .filter(|k| k.as_str() != "SOURCE_DATE_EPOCH")
        .cloned()
        .collect();
    (!unused.is_empty()).then(|| PlanWarning {
        message: format!(
            "[Warning] One or more build-args [{}] were not consumed",
            unused.join(" ")
        ),
        span: None,
    })
}

/// The environment a stage starts with: its base stage's, or its image's with a
/// PATH, as BuildKit gives every stage one (but on Windows): the empty image's, or
/// the default added to an image that sets none.
fn stage_env(base: &Base, final_env: &[Vars], bases: &dyn BaseInfo, platform: &Platform) -> Vars {
    let mut env = match base {
        Base::Stage { index } => return final_env[*index].clone(),
        Base::Image { reference } => Vars(bases.env(reference, Some(platform))),
        Base::Scratch => Vars::default(),
    };
    if env.get("PATH").is_none() && platform.os != "windows" {
        env.set("PATH", DEFAULT_PATH);
    }
    env
}

/// What a stage's FROM names, in the global scope: a named context, scratch, an
/// earlier stage or an image; with its expanded `--platform`.
fn stage_base(
    ctx: &mut Ctx<'_>,
    i: usize,
    from: &FromInstr,
    global: &Vars,
    declared_global: &BTreeSet<String>,
    span: Span,
) -> Result<(Base, Option<Platform>), PlanError> {
    let df = ctx.df;
    // FROM sees the global scope only.
    let exp = ctx
        .lex
        .process(&from.image, &global.0)
        .map_err(|e| ctx.err(e.into(), span, Some(&from.image)))?;
    let undeclared: Vec<&String> = exp
        .unmatched
        .iter()
        .filter(|n| !declared_global.contains(*n))
        .collect();
    let image = exp.result;
    let platform =
        match &from.platform {
            None => None,
            Some(p) => {
                let v = ctx.expand(p, global, span)?;
                Some(Platform::parse(&v).map_err(|_| {
                    ctx.err(PlanErrorKind::InvalidPlatform(v.clone()), span, Some(p))
                })?)
            }
        };
    // An ARG the FROM line used before declaring it explains an empty or bad name.
    let undeclared_arg = |name: &&String| {
        ctx.err(
            PlanErrorKind::UndeclaredArgInFrom {
                name: (*name).clone(),
                word: from.image.clone(),
                result: image.clone(),
            },
            span,
            Some(&from.image),
        )
    };
    let base = if image.is_empty() {
        if let Some(name) = undeclared.first() {
            return Err(undeclared_arg(name));
        }
        return Err(ctx.err(
            PlanErrorKind::BlankBase(from.image.clone()),
            span,
            Some(&from.image),
        ));
    } else if let Some(b) = ctx.named_base(&image, span)? {
        b
    } else if image.eq_ignore_ascii_case("scratch") {
        Base::Scratch
    } else if let Some(j) = find_stage(df, &image, false).filter(|&j| j < i) {
        Base::Stage { index: j }
    } else {
        if let Err(e) = reference::validate(&image) {
            if let Some(name) = undeclared.first() {
                return Err(undeclared_arg(name));
            }
            return Err(ctx.err(
                PlanErrorKind::InvalidBase {
                    name: image.clone(),
                    error: e,
                },
                span,
                Some(&from.image),
            ));
        }
        Base::Image {
            reference: image.clone(),
        }
    };
    Ok((base, platform))
}

/// A base's ONBUILD triggers as instructions placed at the FROM.
fn trigger_instructions(
    ctx: &Ctx<'_>,
    triggers: &[String],
    span: Span,
) -> Result<Vec<(Instruction, bool)>, PlanError> {
    let mut trigger_instrs = Vec::new();
    for t in triggers {
        let a = ast::parse_ast(t).map_err(|e| {
            ctx.err(
                PlanErrorKind::Onbuild(format!("onbuild trigger {t:?}: {e}")),
                span,
                None,
            )
        })?;
        for n in &a.nodes {
            let mut ins = instructions::convert(n, span.column).map_err(|e| {
                ctx.err(
                    PlanErrorKind::Onbuild(format!("onbuild trigger {t:?}: {}", e.0)),
                    span,
                    None,
                )
            })?;
            ins.span = span;
            trigger_instrs.push((ins, true));
        }
    }
    Ok(trigger_instrs)
}

/// The stages the target needs (all with `all_stages`), each after what it needs;
/// a cycle is an error.
fn prune(
    ctx: &Ctx<'_>,
    mut planned: Vec<Option<PlannedStage>>,
    target: usize,
) -> Result<Vec<PlannedStage>, PlanError> {
    let (df, opts) = (ctx.df, ctx.opts);
    // Cycles, then pruning.
    let graph: Vec<Vec<usize>> = planned
        .iter()
        .map(|s| s.as_ref().map(|s| s.depends_on.clone()).unwrap_or_default())
        .collect();
    if let Some(c) = find_cycle(&graph) {
        let s = &df.stages[c];
        let name = s.name().map_or_else(|| c.to_string(), str::to_string);
        return Err(ctx.err(PlanErrorKind::Cycle(name), s.from.span, None));
    }
    let mut needed = vec![opts.all_stages; df.stages.len()];
    let mut stack = vec![target];
    while let Some(s) = stack.pop() {
        if !needed[s] {
            needed[s] = true;
            stack.extend(graph[s].iter().copied());
        }
    }
    needed[target] = true;
    let order = topo_order(&graph, &needed);
    Ok(order
        .into_iter()
        .filter_map(|i| planned[i].take())
        .collect())
}

/// The value an ARG takes: `--build-arg`, else its default (expanded), else the global value.
fn resolve_arg(
    ctx: &mut Ctx<'_>,
    a: &ArgDecl,
    scope: &Vars,
    global: Option<&Vars>,
    span: Span,
) -> Result<Option<String>, PlanError> {
    if let Some(v) = ctx.opts.build_args.get(&a.name) {
        ctx.used_args.insert(a.name.clone());
        return Ok(Some(v.clone()));
    }
    if let Some(d) = &a.default {
        return ctx.expand(d, scope, span).map(Some);
    }
    Ok(global.and_then(|g| g.get(&a.name)).map(str::to_string))
}

fn resolve_source(
    ctx: &Ctx<'_>,
    word: &str,
    me: usize,
    span: Span,
    deps: &mut BTreeSet<usize>,
) -> Result<Source, PlanError> {
    if word.contains('$') {
        return Err(ctx.err(PlanErrorKind::FromExpansion, span, Some(word)));
    }
    if word.parse::<usize>().is_err() {
        if let Some(src) = ctx.named_source(word, span)? {
            return Ok(src);
        }
    }
    if let Some(j) = find_stage(ctx.df, word, true) {
        // A stage (here by index) that a named context replaced.
        if let Some(src) = ctx.df.stages[j]
            .name()
            .map(|n| ctx.named_source(n, span))
            .transpose()?
            .flatten()
        {
            return Ok(src);
        }
        if j == me {
            let name = ctx.df.stages[j]
                .name()
                .map_or_else(|| j.to_string(), str::to_string);
            return Err(ctx.err(PlanErrorKind::Cycle(name), span, Some(word)));
        }
        deps.insert(j);
        return Ok(Source::Stage { index: j });
    }
    if word.parse::<usize>().is_ok() {
        return Err(ctx.err(
            PlanErrorKind::UnknownStageIndex(word.to_string()),
            span,
            Some(word),
        ));
    }
    reference::validate(word).map_err(|error| {
        ctx.err(
            PlanErrorKind::InvalidBase {
                name: word.to_string(),
                error,
            },
            span,
            Some(word),
        )
    })?;
    Ok(Source::Image {
        reference: word.to_string(),
    })
}

/// RUN: mounts checked and their sources resolved, the ARGs RUN sees.
#[allow(clippy::too_many_arguments)]
fn plan_run(
    ctx: &mut Ctx<'_>,
    r: &RunInstr,
    scope: &Vars,
    args: &Vars,
    declared: &[(String, String)],
    me: usize,
    span: Span,
    deps: &mut BTreeSet<usize>,
) -> Result<StepKind, PlanError> {
    let mut mounts = Vec::new();
    for m in &r.mounts {
        if let Some((k, _)) = m.options.iter().find(|(_, v)| v.is_none()) {
            // BuildKit accepts only a few bare boolean fields.
            if !matches!(
                k.as_str(),
                "readonly" | "ro" | "readwrite" | "rw" | "required"
            ) {
                return Err(ctx.err(PlanErrorKind::MountField(k.clone()), span, Some(k)));
            }
        }
        // Mount sources match stage names case-insensitively, unlike COPY --from.
        let from = match m.get("from").filter(|f| !f.is_empty()) {
            Some(f) => {
                let lower = f.to_ascii_lowercase();
                let word = if find_stage(ctx.df, &lower, true).is_some() {
                    lower.as_str()
                } else {
                    f
                };
                Some(resolve_source(ctx, word, me, span, deps)?)
            }
            None => None,
        };
        mounts.push(RunMount {
            mount: m.clone(),
            from,
        });
    }
    if let Some(n) = &r.network {
        if !matches!(n.as_str(), "default" | "none" | "host") {
            return Err(ctx.err(PlanErrorKind::NetworkMode(n.clone()), span, Some(n)));
        }
    }
    // Each ARG as RUN sees it: a later ENV of the same name replaces it.
    let mut build_args: Vec<(String, String)> = args
        .0
        .iter()
        .map(|(k, v)| (k.clone(), scope.get(k).unwrap_or(v).to_string()))
        .collect();
    for p in PROXY_ARGS {
        if let Some(v) = ctx.opts.build_args.get(p) {
            if !build_args.iter().any(|(k, _)| k == p) {
                build_args.push((p.to_string(), v.clone()));
            }
        }
    }
    Ok(StepKind::Run {
        command: r.command.clone(),
        files: r.files.clone(),
        mounts,
        network: r.network.clone(),
        security: r.security.clone(),
        devices: r.devices.iter().map(|d| d.name.clone()).collect(),
        build_args,
        history_args: declared
            .iter()
            .map(|(k, v)| (k.clone(), scope.get(k).unwrap_or(v).to_string()))
            .collect(),
    })
}

/// COPY and ADD: the source resolved, words and heredocs expanded.
fn plan_copy(
    ctx: &mut Ctx<'_>,
    c: &CopyInstr,
    is_add: bool,
    scope: &Vars,
    me: usize,
    span: Span,
    deps: &mut BTreeSet<usize>,
) -> Result<StepKind, PlanError> {
    let x = |ctx: &Ctx<'_>, w: &str| ctx.expand(w, scope, span);
    let xopt = |ctx: &Ctx<'_>, w: &Option<String>| w.as_ref().map(|w| x(ctx, w)).transpose();
    let from = match &c.from {
        Some(f) => resolve_source(ctx, f, me, span, deps)?,
        None => Source::Context,
    };
    let mut heredoc_lex = ctx.lex;
    heredoc_lex.skip_process_quotes = true;
    let mut contents = Vec::new();
    for s in &c.contents {
        let data = if s.expand {
            heredoc_lex
                .process_word(&s.data, &scope.0)
                .map_err(|e| ctx.err(e.into(), span, None))?
        } else {
            s.data.clone()
        };
        contents.push((s.path.clone(), data));
    }
    let step = CopyStep {
        from,
        sources: c
            .sources
            .iter()
            .map(|s| x(ctx, s))
            .collect::<Result<_, _>>()?,
        contents,
        dest: x(ctx, &c.dest)?,
        chown: xopt(ctx, &c.chown)?,
        chmod: xopt(ctx, &c.chmod)?,
        link: c.link,
        parents: c.parents,
        exclude: c
            .exclude
            .iter()
            .map(|s| x(ctx, s))
            .collect::<Result<_, _>>()?,
        checksum: xopt(ctx, &c.checksum)?,
        keep_git_dir: c.keep_git_dir,
        unpack: c.unpack,
    };
    Ok(if is_add {
        StepKind::Add(step)
    } else {
        StepKind::Copy(step)
    })
}

#[allow(clippy::too_many_arguments)]
fn plan_instruction(
    ctx: &mut Ctx<'_>,
    ins: &Instruction,
    scope: &Vars,
    env: &mut Vars,
    state: &mut Vars,
    args: &mut Vars,
    global: &Vars,
    me: usize,
    deps: &mut BTreeSet<usize>,
    my_onbuild: &mut Vec<String>,
    declared: &mut Vec<(String, String)>,
) -> Result<StepKind, PlanError> {
    let span = ins.span;
    let x = |ctx: &Ctx<'_>, w: &str| ctx.expand(w, scope, span);
    Ok(match &ins.kind {
        InstructionKind::From(_) => return Err(ctx.err(PlanErrorKind::NoStages, span, None)),
        InstructionKind::Run(r) => plan_run(ctx, r, scope, args, declared, me, span, deps)?,
        InstructionKind::Copy(c) | InstructionKind::Add(c) => {
            let is_add = matches!(ins.kind, InstructionKind::Add(_));
            plan_copy(ctx, c, is_add, scope, me, span, deps)?
        }
        InstructionKind::Env { pairs } => {
            let mut out = Vec::new();
            // Every pair sees the environment from before the instruction, as
            // BuildKit expands the whole instruction at once: `ENV X=2 Y=$X` gives
            // Y the old X.
            for p in pairs {
                let k = x(ctx, &p.key)?;
                let v = x(ctx, &p.value)?;
                env.set(&k, &v);
                state.set(&k, &v);
                out.push((k, v));
            }
            StepKind::Env { pairs: out }
        }
        InstructionKind::Label { pairs } => StepKind::Label {
            pairs: pairs
                .iter()
                .map(|p| Ok((x(ctx, &p.key)?, x(ctx, &p.value)?)))
                .collect::<Result<_, PlanError>>()?,
        },
        InstructionKind::Cmd { command } => StepKind::Cmd {
            command: command.clone(),
        },
        InstructionKind::Entrypoint { command } => StepKind::Entrypoint {
            command: command.clone(),
            keep_cmd: false,
        },
        InstructionKind::Expose { ports } => {
            // BuildKit sorts the words as written, before expansion: the history
            // lists the ports in that order.
            let mut words = ports.clone();
            words.sort();
            let mut out = Vec::new();
            for p in &words {
                out.extend(
                    ctx.lex
                        .process_words(p, &scope.0)
                        .map_err(|e| ctx.err(e.into(), span, Some(p)))?,
                );
            }
            let mut ports = Vec::new();
            for p in &out {
                let parsed = parse_port_spec(p).map_err(|e| {
                    let needle = ins.original.contains(p.as_str()).then_some(p.as_str());
                    ctx.err(PlanErrorKind::Expose(e), span, needle)
                })?;
                ports.extend(parsed);
            }
            StepKind::Expose { ports }
        }
        // BuildKit trims each path as written, before expansion, and refuses one that
        // expands to nothing (dispatchVolume).
        InstructionKind::Volume { paths } => {
            let paths: Vec<String> = paths
                .iter()
                .map(|p| x(ctx, p.trim()))
                .collect::<Result<_, _>>()?;
            if paths.iter().any(String::is_empty) {
                return Err(ctx.err(PlanErrorKind::EmptyVolume, span, None));
            }
            StepKind::Volume { paths }
        }
        InstructionKind::User { user } => StepKind::User {
            user: x(ctx, user)?,
        },
        InstructionKind::Workdir { path } => StepKind::Workdir {
            path: x(ctx, path)?,
        },
        InstructionKind::StopSignal { signal } => {
            let signal = x(ctx, signal)?;
            if !valid_signal(&signal) {
                return Err(ctx.err(PlanErrorKind::Signal(signal), span, None));
            }
            StepKind::StopSignal { signal }
        }
        InstructionKind::Arg { args: decls } => {
            let mut out = Vec::new();
            for a in decls {
                let s = state.clone();
                let platform_default = PLATFORM_ARGS
                    .contains(&a.name.as_str())
                    .then(|| global.get(&a.name).map(str::to_string))
                    .flatten();
                let v = match resolve_arg(ctx, a, &s, Some(global), span)? {
                    Some(v) => Some(v),
                    None => platform_default,
                };
                if let Some(v) = &v {
                    args.set(&a.name, v);
                    state.set(&a.name, v);
                }
                let shown = v.clone().unwrap_or_default();
                match declared.iter_mut().find(|(k, _)| *k == a.name) {
                    Some(d) => d.1 = shown,
                    None => declared.push((a.name.clone(), shown)),
                }
                out.push((a.name.clone(), v));
            }
            StepKind::Arg { args: out }
        }
        InstructionKind::Onbuild { expression, .. } => {
            my_onbuild.push(expression.clone());
            StepKind::Onbuild {
                expression: expression.clone(),
            }
        }
        InstructionKind::Healthcheck(h) => StepKind::Healthcheck(h.clone()),
        InstructionKind::Shell { shell } => StepKind::Shell {
            shell: shell.clone(),
        },
        InstructionKind::Maintainer { name } => StepKind::Maintainer { name: name.clone() },
    })
}

/// Whether STOPSIGNAL names a signal as BuildKit's `signal.ParseSignal` accepts it: a
/// non-zero number, or a Linux signal name with or without `SIG`, in any case.
fn valid_signal(raw: &str) -> bool {
    if let Ok(n) = raw.parse::<i64>() {
        return n != 0;
    }
    let upper = raw.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    const NAMES: &[&str] = &[
        "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT",
        "KILL", "PIPE", "POLL", "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM",
        "TRAP", "TSTP", "TTIN", "TTOU", "URG", "USR1", "USR2", "VTALRM", "WINCH", "XCPU", "XFSZ",
        "RTMIN", "RTMAX",
    ];
    if NAMES.contains(&name) {
        return true;
    }
    // RTMIN+1..RTMIN+15 and RTMAX-14..RTMAX-1.
    let offset = |prefix: &str, max: u32| {
        name.strip_prefix(prefix)
            .and_then(|n| n.parse::<u32>().ok().filter(|_| !n.starts_with('0')))
            .is_some_and(|n| (1..=max).contains(&n))
    };
    offset("RTMIN+", 15) || offset("RTMAX-", 14)
}

/// An EXPOSE word (`[ip:][hostport:]port[-end][/proto]`) as the `port/proto` keys it
/// exposes, as BuildKit normalises them: the protocol lowercased (tcp by default,
/// else udp or sctp), a range expanded to one key per port.
fn parse_port_spec(raw: &str) -> Result<Vec<String>, String> {
    let parts: Vec<&str> = raw.split(':').collect();
    let (ip, host_port, container) = match parts.len() {
        1 => ("".to_string(), "", parts[0]),
        2 => ("".to_string(), parts[0], parts[1]),
        n => (parts[..n - 2].join(":"), parts[n - 2], parts[n - 1]),
    };
    let (port, proto) = match container.split_once('/') {
        Some((p, proto)) => (p, proto),
        None => (container, ""),
    };
    let proto = match (port.is_empty(), proto.is_empty()) {
        (false, true) => "tcp".to_string(),
        _ => proto.to_ascii_lowercase(),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(format!("invalid proto: {proto}"));
    }
    let ip = match ip.strip_prefix('[').and_then(|i| i.strip_suffix(']')) {
        Some(inner) => inner.to_string(),
        None => ip,
    };
    if !ip.is_empty() && ip.parse::<std::net::IpAddr>().is_err() {
        return Err(format!("invalid IP address: {ip}"));
    }
    if port.is_empty() {
        return Err(format!("no port specified: {raw}<empty>"));
    }
    let (start, end) = port_range(port).ok_or_else(|| format!("invalid containerPort: {port}"))?;
    if !host_port.is_empty() {
        let (hs, he) =
            port_range(host_port).ok_or_else(|| format!("invalid hostPort: {host_port}"))?;
        if end - start != he - hs && end != start {
            return Err(format!(
                "invalid ranges specified for container and host Ports: {port} and {host_port}"
            ));
        }
    }
    Ok((start..=end).map(|p| format!("{p}/{proto}")).collect())
}

/// `N` or `N-M` (ports 0 to 65535, M ≥ N).
fn port_range(s: &str) -> Option<(u32, u32)> {
    let num = |p: &str| {
        (!p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            .then(|| p.parse::<u16>().ok())
            .flatten()
            .map(u32::from)
    };
    match s.split_once('-') {
        None => num(s).map(|n| (n, n)),
        Some((a, b)) => {
            let (a, b) = (num(a)?, num(b)?);
            (b >= a).then_some((a, b))
        }
    }
}

/// A stage on a dependency cycle, if any.
fn find_cycle(graph: &[Vec<usize>]) -> Option<usize> {
    // 0 = unvisited, 1 = on stack, 2 = done
    let mut state = vec![0u8; graph.len()];
    fn visit(n: usize, g: &[Vec<usize>], st: &mut [u8]) -> Option<usize> {
        st[n] = 1;
        for &d in &g[n] {
            match st[d] {
                1 => return Some(d),
                0 => {
                    if let Some(c) = visit(d, g, st) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        st[n] = 2;
        None
    }
    (0..graph.len()).find_map(|n| {
        if state[n] == 0 {
            visit(n, graph, &mut state)
        } else {
            None
        }
    })
}

/// Needed stages, dependencies first, otherwise in file order.
fn topo_order(graph: &[Vec<usize>], needed: &[bool]) -> Vec<usize> {
    let mut done = vec![false; graph.len()];
    let mut out = Vec::new();
    fn visit(n: usize, g: &[Vec<usize>], done: &mut [bool], out: &mut Vec<usize>) {
        if done[n] {
            return;
        }
        done[n] = true;
        for &d in &g[n] {
            visit(d, g, done, out);
        }
        out.push(n);
    }
    for (n, _) in needed
        .iter()
        .enumerate()
        .take(graph.len())
        .filter(|(_, want)| **want)
    {
        visit(n, graph, &mut done, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::parse_port_spec;

    #[test]
    fn stop_signals_are_checked_as_buildkit_does() {
        for ok in [
            "SIGTERM",
            "term",
            "9",
            "-1",
            "SIGRTMIN+3",
            "RTMAX-14",
            "sigwinch",
        ] {
            assert!(super::valid_signal(ok), "{ok}");
        }
        for bad in ["FOO", "0", "SIGRTMIN+16", "RTMAX-0", "", "SIG"] {
            assert!(!super::valid_signal(bad), "{bad}");
        }
    }

    #[test]
    fn expose_ports_are_normalised_as_buildkit_does() {
        assert_eq!(parse_port_spec("80"), Ok(vec!["80/tcp".to_string()]));
        assert_eq!(parse_port_spec("53/UDP"), Ok(vec!["53/udp".to_string()]));
        assert_eq!(
            parse_port_spec("7000-7002"),
            Ok(vec![
                "7000/tcp".into(),
                "7001/tcp".into(),
                "7002/tcp".into()
            ])
        );
        assert_eq!(
            parse_port_spec("127.0.0.1:8080:80/sctp"),
            Ok(vec!["80/sctp".to_string()])
        );
        assert_eq!(
            parse_port_spec("abc"),
            Err("invalid containerPort: abc".into())
        );
        assert_eq!(parse_port_spec("80/foo"), Err("invalid proto: foo".into()));
        assert_eq!(
            parse_port_spec("70000"),
            Err("invalid containerPort: 70000".into())
        );
        assert_eq!(
            parse_port_spec("9-8"),
            Err("invalid containerPort: 9-8".into())
        );
    }
}
