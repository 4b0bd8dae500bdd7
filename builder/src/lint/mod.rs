//! BuildKit's Dockerfile check rules that need no build (`docker build --check`).
//!
//! Rules, details and URLs are BuildKit's. `# check=skip=...;error=true` at the top of the file
//! configures them; a `# check=skip=...` comment right above an instruction skips rules for
//! that instruction only. Base images are known through [`BaseInfo`] (for their `Env`).

use crate::dockerfile::shell::Lexer;
use crate::dockerfile::{Command, Dockerfile, InstructionKind};
use crate::plan::reference;
use crate::plan::{BaseInfo, Platform, PLATFORM_ARGS};
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

    // ConsistentInstructionCasing over all top-level instructions.
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

    // Global scope: declared meta ARGs with their defaults (no build args), plus platforms.
    let mut meta_defaults: Vec<(String, String)> = Platform::parse("linux/amd64")
        .map(|p| {
            let mut v = p.args("TARGET");
            v.extend(p.args("BUILD"));
            v
        })
        .unwrap_or_default();
    let mut declared_meta: BTreeSet<String> = PLATFORM_ARGS.iter().map(|s| s.to_string()).collect();
    for ins in &df.meta_args {
        let local = local_config(&ins.comments);
        if let InstructionKind::Arg { args } = &ins.kind {
            for a in args {
                if is_secret_key(&a.name) {
                    l.warn(
                        "SecretsUsedInArgOrEnv",
                        ins.span.start_line,
                        format!(
                            "Do not use ARG or ENV instructions for sensitive data (ARG \"{}\")",
                            a.name
                        ),
                        local.as_ref(),
                    );
                }
                declared_meta.insert(a.name.clone());
                if let Some(d) = &a.default {
                    if let Ok(v) = lex.process_word(d, &meta_defaults) {
                        meta_defaults.push((a.name.clone(), v));
                    }
                }
            }
        }
    }

    let mut seen_names: BTreeSet<String> = BTreeSet::new();
    // Per stage: defined names at the end, whether SHELL was set, whether WORKDIR is absolute.
    let mut stage_defined: Vec<BTreeSet<String>> = Vec::new();
    let mut stage_shell: Vec<bool> = Vec::new();
    let mut stage_abs_workdir: Vec<bool> = Vec::new();

    let mut aborted = false;
    for (si, stage) in df.stages.iter().enumerate() {
        let Some(from) = stage.from_instr() else {
            continue;
        };
        let fl = stage.from.span.start_line;
        let flocal = local_config(&stage.from.comments);
        let fl_cfg = flocal.as_ref();
        if let (Some(as_kw), Some(name)) = (&from.as_keyword, &from.as_name) {
            let kw = &stage.from.keyword;
            let from_lower = *kw == kw.to_ascii_lowercase();
            let from_upper = *kw == kw.to_ascii_uppercase();
            if (from_lower && *as_kw != as_kw.to_ascii_lowercase())
                || (from_upper && *as_kw != as_kw.to_ascii_uppercase())
            {
                l.warn(
                    "FromAsCasing",
                    fl,
                    format!("'{as_kw}' and '{kw}' keywords' casing do not match"),
                    fl_cfg,
                );
            }
            if *name != name.to_ascii_lowercase() {
                l.warn(
                    "StageNameCasing",
                    fl,
                    format!("Stage name '{name}' should be lowercase"),
                    fl_cfg,
                );
            }
            let lname = name.to_ascii_lowercase();
            if lname == "scratch" || lname == "context" {
                l.warn(
                    "ReservedStageName",
                    fl,
                    format!(
                        "Stage name should not use the same name as reserved stage \"{lname}\""
                    ),
                    fl_cfg,
                );
            }
            if !seen_names.insert(lname.clone()) {
                l.warn(
                    "DuplicateStageName",
                    fl,
                    format!("Duplicate stage name \"{lname}\", stage names should be unique"),
                    fl_cfg,
                );
            }
        }
        // FROM words against the global scope.
        let mut from_words = vec![from.image.clone()];
        if let Some(p) = &from.platform {
            from_words.push(p.clone());
            let trimmed = p.trim();
            if trimmed == "$TARGETPLATFORM" || trimmed == "${TARGETPLATFORM}" {
                l.warn(
                    "RedundantTargetPlatform",
                    fl,
                    format!("Setting platform to predefined {trimmed} in FROM is redundant as this is the default behavior"),
                    fl_cfg,
                );
            } else if !p.contains('$') {
                let name = from.stage_name.clone().unwrap_or_default();
                let parts: Vec<&str> = p.split('/').collect();
                if !parts
                    .iter()
                    .any(|c| !c.is_empty() && name.contains(&c.to_ascii_lowercase()))
                {
                    l.warn(
                        "FromPlatformFlagConstDisallowed",
                        fl,
                        format!("FROM --platform flag should not use constant value \"{p}\""),
                        fl_cfg,
                    );
                }
            }
        }
        let mut reported = BTreeSet::new();
        for w in &from_words {
            if let Ok(e) = lex.process(w, &meta_defaults) {
                for n in &e.unmatched {
                    if !declared_meta.contains(n) && reported.insert(n.clone()) {
                        let hint = suggest(n, declared_meta.iter())
                            .map(|s| format!(" (did you mean {s}?)"))
                            .unwrap_or_default();
                        l.warn(
                            "UndefinedArgInFrom",
                            fl,
                            format!("FROM argument '{n}' is not declared{hint}"),
                            fl_cfg,
                        );
                    }
                }
            }
        }
        let base_blank = lex
            .process_word(&from.image, &meta_defaults)
            .map_or(true, |r| r.is_empty());
        {
            let bad = match lex.process(&from.image, &meta_defaults) {
                Ok(e) => {
                    e.result.is_empty()
                        || (!e.result.eq_ignore_ascii_case("scratch")
                            && df.stages[..si]
                                .iter()
                                .all(|s| s.name() != Some(e.result.as_str()))
                            && reference::validate(&e.result).is_err())
                }
                Err(_) => true,
            };
            if bad {
                l.warn(
                    "InvalidDefaultArgInFrom",
                    fl,
                    format!(
                        "Default value for ARG {} results in empty or invalid base image name",
                        from.image
                    ),
                    fl_cfg,
                );
            }
        }
        // BuildKit stops converting at a blank base name: later stage bodies are not linted.
        aborted |= base_blank;
        if aborted {
            stage_defined.push(BTreeSet::new());
            stage_shell.push(false);
            stage_abs_workdir.push(false);
            continue;
        }

        // The stage body.
        let image = lex
            .process_word(&from.image, &meta_defaults)
            .unwrap_or_default();
        let parent = df.stages[..si]
            .iter()
            .position(|s| s.name() == Some(image.as_str()));
        let mut defined: BTreeSet<String> = match parent {
            Some(p) => stage_defined[p].clone(),
            None if image.eq_ignore_ascii_case("scratch") => BTreeSet::new(),
            None => bases
                .env(&image, None)
                .into_iter()
                .map(|(k, _)| k)
                .collect(),
        };
        let mut shell_set = parent.is_some_and(|p| stage_shell[p]);
        let mut abs_workdir = parent.is_some_and(|p| stage_abs_workdir[p]);
        let mut env_vals: Vec<(String, String)> = Vec::new();
        let mut last_of: Vec<(&'static str, usize)> = Vec::new();
        let mut multi: Vec<(&'static str, usize)> = Vec::new();

        for ins in &stage.instructions {
            let line = ins.span.start_line;
            let local = local_config(&ins.comments);
            let lc = local.as_ref();
            let mut words: Vec<&String> = Vec::new();
            match &ins.kind {
                InstructionKind::Cmd { command } | InstructionKind::Entrypoint { command } => {
                    let name = if matches!(ins.kind, InstructionKind::Cmd { .. }) {
                        "CMD"
                    } else {
                        "ENTRYPOINT"
                    };
                    if matches!(command, Command::Shell(_)) && !shell_set {
                        l.warn(
                            "JSONArgsRecommended",
                            line,
                            format!("JSON arguments recommended for {name} to prevent unintended behavior related to OS signals"),
                            lc,
                        );
                    }
                    if let Some(prev) = last_of.iter().find(|(n, _)| *n == name) {
                        multi.push(*prev);
                    }
                    last_of.retain(|(n, _)| *n != name);
                    last_of.push((name, line));
                }
                InstructionKind::Healthcheck(_) => {
                    if let Some(prev) = last_of.iter().find(|(n, _)| *n == "HEALTHCHECK") {
                        multi.push(*prev);
                    }
                    last_of.retain(|(n, _)| *n != "HEALTHCHECK");
                    last_of.push(("HEALTHCHECK", line));
                }
                InstructionKind::Shell { .. } => shell_set = true,
                InstructionKind::Maintainer { .. } => l.warn(
                    "MaintainerDeprecated",
                    line,
                    "Maintainer instruction is deprecated in favor of using label".into(),
                    lc,
                ),
                InstructionKind::Env { pairs } | InstructionKind::Label { pairs } => {
                    let is_env = matches!(ins.kind, InstructionKind::Env { .. });
                    let kw = if is_env { "ENV" } else { "LABEL" };
                    if pairs.iter().any(|p| p.legacy) {
                        l.warn(
                            "LegacyKeyValueFormat",
                            line,
                            format!("\"{kw} key=value\" should be used instead of legacy \"{kw} key value\" format"),
                            lc,
                        );
                    }
                    for p in pairs {
                        undefined_vars(&mut l, &lex, &p.value, &defined, &env_vals, line, lc);
                        if is_env {
                            if is_secret_key(&p.key) {
                                l.warn(
                                    "SecretsUsedInArgOrEnv",
                                    line,
                                    format!("Do not use ARG or ENV instructions for sensitive data (ENV \"{}\")", p.key),
                                    lc,
                                );
                            }
                            let v = lex.process_word(&p.value, &env_vals).unwrap_or_default();
                            defined.insert(p.key.clone());
                            env_vals.push((p.key.clone(), v));
                        }
                    }
                }
                InstructionKind::Arg { args } => {
                    for a in args {
                        if is_secret_key(&a.name) {
                            l.warn(
                                "SecretsUsedInArgOrEnv",
                                line,
                                format!("Do not use ARG or ENV instructions for sensitive data (ARG \"{}\")", a.name),
                                lc,
                            );
                        }
                        if let Some(d) = &a.default {
                            undefined_vars(&mut l, &lex, d, &defined, &env_vals, line, lc);
                            let v = lex.process_word(d, &env_vals).unwrap_or_default();
                            env_vals.push((a.name.clone(), v));
                        } else if let Some((_, v)) =
                            meta_defaults.iter().rev().find(|(k, _)| *k == a.name)
                        {
                            env_vals.push((a.name.clone(), v.clone()));
                        }
                        defined.insert(a.name.clone());
                    }
                }
                InstructionKind::Workdir { path } => {
                    words.push(path);
                    let v = lex
                        .process_word(path, &env_vals)
                        .unwrap_or_else(|_| path.clone());
                    if !v.starts_with('/') && !abs_workdir {
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
                    // Only the first WORKDIR of a build without an absolute one is reported.
                    abs_workdir = true;
                }
                InstructionKind::Expose { ports } => {
                    for p in ports {
                        undefined_vars(&mut l, &lex, p, &defined, &env_vals, line, lc);
                        let expanded = lex.process_words(p, &env_vals).unwrap_or_default();
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
                InstructionKind::Copy(c) | InstructionKind::Add(c) => {
                    words.extend(c.sources.iter());
                    words.push(&c.dest);
                    words.extend(c.chown.iter());
                    words.extend(c.chmod.iter());
                    let mut hl = lex;
                    hl.skip_process_quotes = true;
                    for h in c.contents.iter().filter(|h| h.expand) {
                        undefined_vars(&mut l, &hl, &h.data, &defined, &env_vals, line, lc);
                    }
                }
                InstructionKind::Volume { paths } => words.extend(paths.iter()),
                InstructionKind::User { user } => words.push(user),
                InstructionKind::StopSignal { signal } => words.push(signal),
                _ => {}
            }
            for w in words {
                undefined_vars(&mut l, &lex, w, &defined, &env_vals, line, lc);
            }
        }
        for (name, line) in multi {
            l.warn(
                "MultipleInstructionsDisallowed",
                line,
                format!("Multiple {name} instructions should not be used in the same stage because only the last one will be used"),
                None,
            );
        }
        stage_defined.push(defined);
        stage_shell.push(shell_set);
        stage_abs_workdir.push(abs_workdir);
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
