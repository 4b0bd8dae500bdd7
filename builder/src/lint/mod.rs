//! BuildKit's Dockerfile check rules that need no build (`docker build --check`).
//!
//! Rules, details and URLs are BuildKit's. `# check=skip=...;error=true` at the top of the file
//! configures them; a `# check=skip=...` comment right above an instruction skips rules for
//! that instruction only. Base images are known through [`BaseInfo`] (for their `Env`).

use crate::dockerfile::shell::Lexer;
use crate::dockerfile::{
    ArgDecl, Command, Dockerfile, FromInstr, Instruction, InstructionKind, KeyValue, Stage,
};
use crate::plan::reference;
use crate::plan::{platform_args, BaseInfo, Platform, PLATFORM_ARGS};
use std::collections::BTreeSet;

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LintWarning {
    pub rule: &'static str,
    pub line: usize,
    pub detail: String,
    pub description: &'static str,
    pub url: String,
}

/// All findings, sorted by line then detail, and the error `error=true` turns them into.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LintReport {
    pub warnings: Vec<LintWarning>,
    /// `lint violation found for rules: ...` when the check directive says `error=true`.
    pub error: Option<String>,
}

/// A [`BaseInfo`] standing in for real images as BuildKit's reference run did: every image
/// has `PATH` set and nothing else.
pub struct PathOnlyBases;

impl BaseInfo for PathOnlyBases {
    fn env(&self, _image: &str, _p: Option<&Platform>) -> Vec<(String, String)> {
        vec![(
            "PATH".into(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        )]
    }
}

fn describe(rule: &str) -> &'static str {
    match rule {
        "StageNameCasing" => "Stage names should be lowercase",
        "FromAsCasing" => "The 'as' keyword should match the case of the 'from' keyword",
        "NoEmptyContinuation" => "Empty continuation lines will become errors in a future release",
        "ConsistentInstructionCasing" => "All commands within the Dockerfile should use the same casing (either upper or lower)",
        "DuplicateStageName" => "Stage names should be unique",
        "ReservedStageName" => "Reserved words should not be used as stage names",
        "JSONArgsRecommended" => "JSON arguments recommended for ENTRYPOINT/CMD to prevent unintended behavior related to OS signals",
        "MaintainerDeprecated" => "The MAINTAINER instruction is deprecated, use a label instead to define an image author",
        "UndefinedArgInFrom" => "FROM command must use declared ARGs",
        "WorkdirRelativePath" => "Relative workdir without an absolute workdir declared within the build can have unexpected results if the base image changes",
        "UndefinedVar" => "Variables should be defined before their use",
        "MultipleInstructionsDisallowed" => "Multiple instructions of the same type should not be used in the same stage",
        "LegacyKeyValueFormat" => "Legacy key/value format with whitespace separator should not be used",
        "RedundantTargetPlatform" => "Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the default behavior",
        "SecretsUsedInArgOrEnv" => "Sensitive data should not be used in the ARG or ENV commands",
        "InvalidDefaultArgInFrom" => "Default value for global ARG results in an empty or invalid base image name",
        "FromPlatformFlagConstDisallowed" => "FROM --platform flag should not use a constant value",
        "ExposeProtoCasing" => "Protocol in EXPOSE instruction should be lowercase",
        "ExposeInvalidFormat" => "IP address and host-port mapping should not be used in EXPOSE instruction. This will become an error in a future release",
        _ => "",
    }
}

fn url_slug(rule: &str) -> String {
    let c: Vec<char> = rule.chars().collect();
    let mut s = String::new();
    for i in 0..c.len() {
        let boundary = i > 0
            && c[i].is_ascii_uppercase()
            && (c[i - 1].is_ascii_lowercase()
                || c.get(i + 1).is_some_and(|n| n.is_ascii_lowercase()));
        if boundary {
            s.push('-');
        }
        s.push(c[i].to_ascii_lowercase());
    }
    s
}

/// The `check` directive: skipped rules and whether warnings are errors.
#[derive(Default)]
struct CheckConfig {
    skip_all: bool,
    skip: BTreeSet<String>,
    error: bool,
}

impl CheckConfig {
    fn parse(v: &str) -> CheckConfig {
        let mut c = CheckConfig::default();
        let v = v.split("//").next().unwrap_or("").trim();
        for part in v.split(';') {
            let Some((k, val)) = part.split_once('=') else {
                continue;
            };
            match k.trim().to_ascii_lowercase().as_str() {
                "skip" => {
                    for r in val.split(',').map(str::trim) {
                        if r.eq_ignore_ascii_case("all") {
                            c.skip_all = true;
                        } else {
                            c.skip.insert(r.to_string());
                        }
                    }
                }
                "error" => c.error = val.trim().eq_ignore_ascii_case("true"),
                _ => {}
            }
        }
        c
    }
    fn skips(&self, rule: &str) -> bool {
        self.skip_all || self.skip.contains(rule)
    }
}

struct Linter {
    config: CheckConfig,
    out: Vec<LintWarning>,
}

impl Linter {
    fn warn(
        &mut self,
        rule: &'static str,
        line: usize,
        detail: String,
        local: Option<&CheckConfig>,
    ) {
        if self.config.skips(rule) || local.is_some_and(|l| l.skips(rule)) {
            return;
        }
        self.out.push(LintWarning {
            rule,
            line,
            detail,
            description: describe(rule),
            url: format!(
                "https://docs.docker.com/go/dockerfile/rule/{}/",
                url_slug(rule)
            ),
        });
    }
}

/// Local `# check=` comments right above an instruction.
fn local_config(comments: &[String]) -> Option<CheckConfig> {
    comments.iter().rev().find_map(|c| {
        crate::dockerfile::ast::parse_directive_line(&format!("#{c}"))
            .filter(|(k, _)| k.eq_ignore_ascii_case("check"))
            .map(|(_, v)| CheckConfig::parse(v))
    })
}

fn levenshtein(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut cur = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The closest known name, as BuildKit's `suggest.Search`.
fn suggest<'a>(name: &str, options: impl Iterator<Item = &'a String>) -> Option<String> {
    let mut best: Option<(usize, &String)> = None;
    for o in options {
        let d = levenshtein(&name.to_ascii_lowercase(), &o.to_ascii_lowercase());
        if d <= 2 && d < name.len() && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, o));
        }
    }
    best.map(|(_, o)| o.clone())
}

fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    let parts: Vec<&str> = k.split('_').collect();
    if parts.iter().any(|p| *p == "public" || *p == "file") {
        return false;
    }
    const TOKENS: [&str; 11] = [
        "apikey",
        "auth",
        "credential",
        "credentials",
        "key",
        "password",
        "pword",
        "passwd",
        "secret",
        "token",
        "passphrase",
    ];
    parts.last().is_some_and(|l| TOKENS.contains(l))
}

/// What the rules on a stage's FROM look at.
struct FromCheck<'a> {
    df: &'a Dockerfile,
    index: usize,
    stage: &'a Stage,
    from: &'a FromInstr,
    line: usize,
    local: Option<&'a CheckConfig>,
    lex: &'a Lexer,
    meta: &'a MetaScope,
    /// No earlier stage has this stage's name.
    first_of_name: bool,
}

/// The global scope FROM words expand in: declared meta ARGs with their
/// defaults (no build args), plus the platform ARGs.
struct MetaScope {
    defaults: Vec<(String, String)>,
    declared: BTreeSet<String>,
}

type FileRule = fn(&mut Linter, &Dockerfile);
type FromRule = fn(&mut Linter, &FromCheck);

/// Rules over the whole file.
const FILE_RULES: &[FileRule] = &[no_empty_continuation, consistent_instruction_casing];

/// Rules over each stage's FROM.
const FROM_RULES: &[FromRule] = &[
    from_as_casing,
    stage_name_casing,
    reserved_stage_name,
    duplicate_stage_name,
    from_platform,
    undefined_arg_in_from,
    invalid_default_arg_in_from,
];

fn no_empty_continuation(l: &mut Linter, df: &Dockerfile) {
    for w in df
        .warnings
        .iter()
        .filter(|w| w.kind == crate::dockerfile::ast::ParseWarningKind::EmptyContinuation)
    {
        l.warn(
            "NoEmptyContinuation",
            w.line,
            "Empty continuation line".into(),
            None,
        );
    }
}

/// Over all top-level instructions, against the majority's casing.
fn consistent_instruction_casing(l: &mut Linter, df: &Dockerfile) {
    let all: Vec<_> = df.all_instructions().collect();
    let (mut lower, mut upper) = (0, 0);
    for i in &all {
        if i.keyword == i.keyword.to_ascii_lowercase() {
            lower += 1;
        } else if i.keyword == i.keyword.to_ascii_uppercase() {
            upper += 1;
        }
    }
    let majority_lower = lower > upper;
    for i in &all {
        let local = local_config(&i.comments);
        let bad = if majority_lower {
            i.keyword != i.keyword.to_ascii_lowercase()
        } else {
            i.keyword != i.keyword.to_ascii_uppercase()
        };
        if bad {
            l.warn(
                "ConsistentInstructionCasing",
                i.span.start_line,
                format!(
                    "Command '{}' should match the case of the command majority ({})",
                    i.keyword,
                    if majority_lower {
                        "lowercase"
                    } else {
                        "uppercase"
                    }
                ),
                local.as_ref(),
            );
        }
    }
}

/// The meta ARGs in order (SecretsUsedInArgOrEnv applies to them too).
fn meta_scope(l: &mut Linter, df: &Dockerfile, lex: &Lexer) -> MetaScope {
    let mut defaults: Vec<(String, String)> = Platform::parse("linux/amd64")
        .map(|p| {
            let mut v = platform_args(&p, "TARGET");
            v.extend(platform_args(&p, "BUILD"));
            v
        })
        .unwrap_or_default();
    let mut declared: BTreeSet<String> = PLATFORM_ARGS.iter().map(|s| s.to_string()).collect();
    for ins in &df.meta_args {
        let local = local_config(&ins.comments);
        if let InstructionKind::Arg { args } = &ins.kind {
            for a in args {
                secret_arg(l, &a.name, ins.span.start_line, local.as_ref());
                declared.insert(a.name.clone());
                if let Some(d) = &a.default {
                    if let Ok(v) = lex.process_word(d, &defaults) {
                        defaults.push((a.name.clone(), v));
                    }
                }
            }
        }
    }
    MetaScope { defaults, declared }
}

fn secret_arg(l: &mut Linter, name: &str, line: usize, local: Option<&CheckConfig>) {
    if is_secret_key(name) {
        l.warn(
            "SecretsUsedInArgOrEnv",
            line,
            format!("Do not use ARG or ENV instructions for sensitive data (ARG \"{name}\")"),
            local,
        );
    }
}

/// The `AS` keyword and the stage name, when the FROM has them.
fn stage_as<'a>(c: &FromCheck<'a>) -> Option<(&'a String, &'a String)> {
    c.from.as_keyword.as_ref().zip(c.from.as_name.as_ref())
}

fn from_as_casing(l: &mut Linter, c: &FromCheck) {
    let Some((as_kw, _)) = stage_as(c) else {
        return;
    };
    let kw = &c.stage.from.keyword;
    let from_lower = *kw == kw.to_ascii_lowercase();
    let from_upper = *kw == kw.to_ascii_uppercase();
    if (from_lower && *as_kw != as_kw.to_ascii_lowercase())
        || (from_upper && *as_kw != as_kw.to_ascii_uppercase())
    {
        l.warn(
            "FromAsCasing",
            c.line,
            format!("'{as_kw}' and '{kw}' keywords' casing do not match"),
            c.local,
        );
    }
}

fn stage_name_casing(l: &mut Linter, c: &FromCheck) {
    let Some((_, name)) = stage_as(c) else {
        return;
    };
    if *name != name.to_ascii_lowercase() {
        l.warn(
            "StageNameCasing",
            c.line,
            format!("Stage name '{name}' should be lowercase"),
            c.local,
        );
    }
}

fn reserved_stage_name(l: &mut Linter, c: &FromCheck) {
    let Some((_, name)) = stage_as(c) else {
        return;
    };
    let lname = name.to_ascii_lowercase();
    if lname == "scratch" || lname == "context" {
        l.warn(
            "ReservedStageName",
            c.line,
            format!("Stage name should not use the same name as reserved stage \"{lname}\""),
            c.local,
        );
    }
}

fn duplicate_stage_name(l: &mut Linter, c: &FromCheck) {
    let Some((_, name)) = stage_as(c) else {
        return;
    };
    if !c.first_of_name {
        let lname = name.to_ascii_lowercase();
        l.warn(
            "DuplicateStageName",
            c.line,
            format!("Duplicate stage name \"{lname}\", stage names should be unique"),
            c.local,
        );
    }
}

/// RedundantTargetPlatform and FromPlatformFlagConstDisallowed.
fn from_platform(l: &mut Linter, c: &FromCheck) {
    let Some(p) = &c.from.platform else {
        return;
    };
    let trimmed = p.trim();
    if trimmed == "$TARGETPLATFORM" || trimmed == "${TARGETPLATFORM}" {
        l.warn(
            "RedundantTargetPlatform",
            c.line,
            format!("Setting platform to predefined {trimmed} in FROM is redundant as this is the default behavior"),
            c.local,
        );
    } else if !p.contains('$') {
        let name = c.from.stage_name.clone().unwrap_or_default();
        let parts: Vec<&str> = p.split('/').collect();
        if !parts
            .iter()
            .any(|part| !part.is_empty() && name.contains(&part.to_ascii_lowercase()))
        {
            l.warn(
                "FromPlatformFlagConstDisallowed",
                c.line,
                format!("FROM --platform flag should not use constant value \"{p}\""),
                c.local,
            );
        }
    }
}

/// FROM words (the image and `--platform`) against the global scope.
fn undefined_arg_in_from(l: &mut Linter, c: &FromCheck) {
    let mut reported = BTreeSet::new();
    for w in std::iter::once(&c.from.image).chain(&c.from.platform) {
        if let Ok(e) = c.lex.process(w, &c.meta.defaults) {
            for n in &e.unmatched {
                if !c.meta.declared.contains(n) && reported.insert(n.clone()) {
                    let hint = suggest(n, c.meta.declared.iter())
                        .map(|s| format!(" (did you mean {s}?)"))
                        .unwrap_or_default();
                    l.warn(
                        "UndefinedArgInFrom",
                        c.line,
                        format!("FROM argument '{n}' is not declared{hint}"),
                        c.local,
                    );
                }
            }
        }
    }
}

fn invalid_default_arg_in_from(l: &mut Linter, c: &FromCheck) {
    let bad = match c.lex.process(&c.from.image, &c.meta.defaults) {
        Ok(e) => {
            e.result.is_empty()
                || (!e.result.eq_ignore_ascii_case("scratch")
                    && c.df.stages[..c.index]
                        .iter()
                        .all(|s| s.name() != Some(e.result.as_str()))
                    && reference::validate(&e.result).is_err())
        }
        Err(_) => true,
    };
    if bad {
        l.warn(
            "InvalidDefaultArgInFrom",
            c.line,
            format!(
                "Default value for ARG {} results in empty or invalid base image name",
                c.from.image
            ),
            c.local,
        );
    }
}

/// What a stage leaves to the stages built on it.
#[derive(Clone, Default)]
struct StageEnd {
    defined: BTreeSet<String>,
    shell_set: bool,
    abs_workdir: bool,
}

/// The walk over a stage's instructions: what is defined so far, and the rules
/// that depend on it.
struct StageWalk<'a> {
    lex: &'a Lexer,
    meta: &'a MetaScope,
    end: StageEnd,
    env_vals: Vec<(String, String)>,
    last_of: Vec<(&'static str, usize)>,
    multi: Vec<(&'static str, usize)>,
}

impl StageWalk<'_> {
    fn instruction(&mut self, l: &mut Linter, ins: &Instruction) {
        let line = ins.span.start_line;
        let local = local_config(&ins.comments);
        let lc = local.as_ref();
        let mut words: Vec<&String> = Vec::new();
        match &ins.kind {
            InstructionKind::Cmd { command } => self.command(l, "CMD", command, line, lc),
            InstructionKind::Entrypoint { command } => {
                self.command(l, "ENTRYPOINT", command, line, lc)
            }
            InstructionKind::Healthcheck(_) => self.last_one("HEALTHCHECK", line),
            InstructionKind::Shell { .. } => self.end.shell_set = true,
            InstructionKind::Maintainer { .. } => l.warn(
                "MaintainerDeprecated",
                line,
                "Maintainer instruction is deprecated in favor of using label".into(),
                lc,
            ),
            InstructionKind::Env { pairs } => self.pairs(l, "ENV", pairs, line, lc),
            InstructionKind::Label { pairs } => self.pairs(l, "LABEL", pairs, line, lc),
            InstructionKind::Arg { args } => self.args(l, args, line, lc),
            InstructionKind::Workdir { path } => {
                words.push(path);
                self.workdir(l, path, line, lc);
            }
            InstructionKind::Expose { ports } => self.expose(l, ports, line, lc),
            InstructionKind::Copy(c) | InstructionKind::Add(c) => {
                words.extend(c.sources.iter());
                words.push(&c.dest);
                words.extend(c.chown.iter());
                words.extend(c.chmod.iter());
                let mut hl = *self.lex;
                hl.skip_process_quotes = true;
                for h in c.contents.iter().filter(|h| h.expand) {
                    self.undefined(l, &hl, &h.data, line, lc);
                }
            }
            InstructionKind::Volume { paths } => words.extend(paths.iter()),
            InstructionKind::User { user } => words.push(user),
            InstructionKind::StopSignal { signal } => words.push(signal),
            _ => {}
        }
        for w in words {
            self.undefined(l, self.lex, w, line, lc);
        }
    }

    fn undefined(
        &self,
        l: &mut Linter,
        lex: &Lexer,
        word: &str,
        line: usize,
        lc: Option<&CheckConfig>,
    ) {
        undefined_vars(l, lex, word, &self.end.defined, &self.env_vals, line, lc);
    }

    /// MultipleInstructionsDisallowed: remembers the last of `name`.
    fn last_one(&mut self, name: &'static str, line: usize) {
        if let Some(prev) = self.last_of.iter().find(|(n, _)| *n == name) {
            self.multi.push(*prev);
        }
        self.last_of.retain(|(n, _)| *n != name);
        self.last_of.push((name, line));
    }

    /// CMD and ENTRYPOINT: JSONArgsRecommended, and only the last one counts.
    fn command(
        &mut self,
        l: &mut Linter,
        name: &'static str,
        command: &Command,
        line: usize,
        lc: Option<&CheckConfig>,
    ) {
        if matches!(command, Command::Shell(_)) && !self.end.shell_set {
            l.warn(
                "JSONArgsRecommended",
                line,
                format!("JSON arguments recommended for {name} to prevent unintended behavior related to OS signals"),
                lc,
            );
        }
        self.last_one(name, line);
    }

    /// ENV and LABEL: LegacyKeyValueFormat, undefined variables in values; ENV
    /// also defines its keys (and may hold secrets).
    fn pairs(
        &mut self,
        l: &mut Linter,
        kw: &str,
        pairs: &[KeyValue],
        line: usize,
        lc: Option<&CheckConfig>,
    ) {
        if pairs.iter().any(|p| p.legacy) {
            l.warn(
                "LegacyKeyValueFormat",
                line,
                format!(
                    "\"{kw} key=value\" should be used instead of legacy \"{kw} key value\" format"
                ),
                lc,
            );
        }
        for p in pairs {
            self.undefined(l, self.lex, &p.value, line, lc);
            if kw == "ENV" {
                if is_secret_key(&p.key) {
                    l.warn(
                        "SecretsUsedInArgOrEnv",
                        line,
                        format!(
                            "Do not use ARG or ENV instructions for sensitive data (ENV \"{}\")",
                            p.key
                        ),
                        lc,
                    );
                }
                let v = self
                    .lex
                    .process_word(&p.value, &self.env_vals)
                    .unwrap_or_default();
                self.end.defined.insert(p.key.clone());
                self.env_vals.push((p.key.clone(), v));
            }
        }
    }

    fn args(&mut self, l: &mut Linter, args: &[ArgDecl], line: usize, lc: Option<&CheckConfig>) {
        for a in args {
            secret_arg(l, &a.name, line, lc);
            if let Some(d) = &a.default {
                self.undefined(l, self.lex, d, line, lc);
                let v = self.lex.process_word(d, &self.env_vals).unwrap_or_default();
                self.env_vals.push((a.name.clone(), v));
            } else if let Some((_, v)) = self.meta.defaults.iter().rev().find(|(k, _)| *k == a.name)
            {
                self.env_vals.push((a.name.clone(), v.clone()));
            }
            self.end.defined.insert(a.name.clone());
        }
    }

    /// WorkdirRelativePath: only the first WORKDIR of a build without an absolute
    /// one is reported.
    fn workdir(&mut self, l: &mut Linter, path: &str, line: usize, lc: Option<&CheckConfig>) {
        let v = self
            .lex
            .process_word(path, &self.env_vals)
            .unwrap_or_else(|_| path.to_string());
        if !v.starts_with('/') && !self.end.abs_workdir {
            l.warn(
                "WorkdirRelativePath",
                line,
                format!(
                    "Relative workdir {} can have unexpected results if the base image changes",
                    crate::dockerfile::ast::go_quote(&v)
                ),
                lc,
            );
        }
        self.end.abs_workdir = true;
    }

    /// ExposeInvalidFormat and ExposeProtoCasing, after expansion.
    fn expose(&mut self, l: &mut Linter, ports: &[String], line: usize, lc: Option<&CheckConfig>) {
        for p in ports {
            self.undefined(l, self.lex, p, line, lc);
            let expanded = self
                .lex
                .process_words(p, &self.env_vals)
                .unwrap_or_default();
            for port in expanded {
                if port.contains(':') {
                    l.warn(
                        "ExposeInvalidFormat",
                        line,
                        format!("EXPOSE instruction should not define an IP address or host-port mapping, found '{port}'"),
                        lc,
                    );
                }
                if let Some((_, proto)) = port.split_once('/') {
                    if proto != proto.to_ascii_lowercase() {
                        l.warn(
                            "ExposeProtoCasing",
                            line,
                            format!("Defined protocol '{port}' in EXPOSE instruction should be lowercase"),
                            lc,
                        );
                    }
                }
            }
        }
    }
}

/// Lints the body of the last of `stages`, starting from what its base leaves (an
/// earlier stage's end, or an image's environment).
fn lint_stage_body(
    l: &mut Linter,
    stages: &[Stage],
    image: &str,
    ends: &[StageEnd],
    bases: &dyn BaseInfo,
    lex: &Lexer,
    meta: &MetaScope,
) -> StageEnd {
    let Some((stage, earlier)) = stages.split_last() else {
        return StageEnd::default();
    };
    let parent = earlier.iter().position(|s| s.name() == Some(image));
    let end = match parent {
        Some(p) => ends[p].clone(),
        None if image.eq_ignore_ascii_case("scratch") => StageEnd::default(),
        None => StageEnd {
            defined: bases.env(image, None).into_iter().map(|(k, _)| k).collect(),
            ..StageEnd::default()
        },
    };
    let mut walk = StageWalk {
        lex,
        meta,
        end,
        env_vals: Vec::new(),
        last_of: Vec::new(),
        multi: Vec::new(),
    };
    for ins in &stage.instructions {
        walk.instruction(l, ins);
    }
    for (name, line) in walk.multi {
        l.warn(
            "MultipleInstructionsDisallowed",
            line,
            format!("Multiple {name} instructions should not be used in the same stage because only the last one will be used"),
            None,
        );
    }
    walk.end
}

/// Run the check rules over every stage.
pub fn lint(df: &Dockerfile, bases: &dyn BaseInfo) -> LintReport {
    let config = df
        .directives
        .iter()
        .find(|d| d.name == "check")
        .map(|d| CheckConfig::parse(&d.value))
        .unwrap_or_default();
    let mut l = Linter {
        config,
        out: Vec::new(),
    };
    let lex = Lexer::new(df.escape);
    for rule in FILE_RULES {
        rule(&mut l, df);
    }
    let meta = meta_scope(&mut l, df, &lex);

    let mut seen_names: BTreeSet<String> = BTreeSet::new();
    // Per stage: what it leaves to the stages built on it.
    let mut ends: Vec<StageEnd> = Vec::new();
    let mut aborted = false;
    for (index, stage) in df.stages.iter().enumerate() {
        let Some(from) = stage.from_instr() else {
            continue;
        };
        let local = local_config(&stage.from.comments);
        let first_of_name = match &from.as_name {
            Some(name) if from.as_keyword.is_some() => seen_names.insert(name.to_ascii_lowercase()),
            _ => true,
        };
        let check = FromCheck {
            df,
            index,
            stage,
            from,
            line: stage.from.span.start_line,
            local: local.as_ref(),
            lex: &lex,
            meta: &meta,
            first_of_name,
        };
        for rule in FROM_RULES {
            rule(&mut l, &check);
        }
        // BuildKit stops converting at a blank base name: later stage bodies are not linted.
        let image = lex.process_word(&from.image, &meta.defaults);
        aborted |= image.as_ref().map_or(true, |r| r.is_empty());
        if aborted {
            ends.push(StageEnd::default());
            continue;
        }
        let image = image.unwrap_or_default();
        let end = lint_stage_body(
            &mut l,
            &df.stages[..=index],
            &image,
            &ends,
            bases,
            &lex,
            &meta,
        );
        ends.push(end);
    }

    l.out
        .sort_by(|a, b| (a.line, &a.detail).cmp(&(b.line, &b.detail)));
    let error = (l.config.error && !l.out.is_empty()).then(|| {
        let mut rules: Vec<&str> = Vec::new();
        for w in &l.out {
            if !rules.contains(&w.rule) {
                rules.push(w.rule);
            }
        }
        format!("lint violation found for rules: {}", rules.join(", "))
    });
    LintReport {
        warnings: l.out,
        error,
    }
}

/// Parse and lint `text`. When parsing fails, the instructions before the failing one are
/// still linted (as BuildKit reports the warnings it found before the error).
pub fn lint_text(
    text: &str,
    file_name: &str,
    bases: &dyn BaseInfo,
) -> (LintReport, Option<crate::dockerfile::ParseError>) {
    match crate::dockerfile::parse(text, file_name) {
        Ok(df) => (lint(&df, bases), None),
        Err(e) => {
            let prefix: String = text
                .split_inclusive('\n')
                .take(e.location.line.saturating_sub(1))
                .collect();
            // Only the rules BuildKit applies while parsing instructions run before the error.
            const PARSE_TIME: [&str; 5] = [
                "StageNameCasing",
                "FromAsCasing",
                "MaintainerDeprecated",
                "LegacyKeyValueFormat",
                "NoEmptyContinuation",
            ];
            let report = match crate::dockerfile::parse(&prefix, file_name) {
                Ok(df) => {
                    let mut r = lint(&df, bases);
                    r.warnings.retain(|w| PARSE_TIME.contains(&w.rule));
                    r
                }
                Err(_) => LintReport {
                    warnings: Vec::new(),
                    error: None,
                },
            };
            (report, Some(e))
        }
    }
}

fn undefined_vars(
    l: &mut Linter,
    lex: &Lexer,
    word: &str,
    defined: &BTreeSet<String>,
    env: &[(String, String)],
    line: usize,
    local: Option<&CheckConfig>,
) {
    let Ok(e) = lex.process(word, &env.to_vec()) else {
        return;
    };
    for n in &e.unmatched {
        if defined.contains(n) {
            continue;
        }
        let hint = suggest(n, defined.iter())
            .map(|s| format!(" (did you mean ${s}?)"))
            .unwrap_or_default();
        l.warn(
            "UndefinedVar",
            line,
            format!("Usage of undefined variable '${n}'{hint}"),
            local,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_and_secrets() {
        assert_eq!(url_slug("JSONArgsRecommended"), "json-args-recommended");
        assert_eq!(url_slug("FromAsCasing"), "from-as-casing");
        assert!(is_secret_key("SUPER_Secret"));
        assert!(!is_secret_key("AUTH_MODULE_VERSION"));
        assert!(!is_secret_key("PUBLIC_KEY"));
        assert_eq!(levenshtein("PAHT", "PATH"), 2);
    }
}
