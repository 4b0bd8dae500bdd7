//! Typed instructions, converted from [`Node`]s as BuildKit's `instructions.ParseInstruction`
//! does: flags checked per keyword, argument counts checked, words not yet expanded.

use super::ast::{chomp_heredoc, parse_heredoc_word, Heredoc, Node};
use std::time::Duration;

/// Where an instruction came from: 1-based lines, and the column of its keyword.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Span {
    pub start_line: usize,
    pub end_line: usize,
    pub column: usize,
}

/// A command in exec (JSON) or shell form.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "form", content = "args", rename_all = "snake_case")]
pub enum Command {
    Exec(Vec<String>),
    Shell(String),
}

impl Command {
    fn from_node(n: &Node, args: &[String]) -> Command {
        if n.json {
            Command::Exec(args.to_vec())
        } else {
            Command::Shell(args.join(" "))
        }
    }
}

/// `KEY=VALUE` of ENV and LABEL, value not yet expanded (quotes kept).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
    /// Written in the legacy `KEY VALUE` form.
    pub legacy: bool,
}

/// One name of an ARG, with its default when given.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ArgDecl {
    pub name: String,
    pub default: Option<String>,
}

/// A `RUN --mount=` value, split into its CSV fields.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Mount {
    pub raw: String,
    /// `key=value` fields in order; a bare field has no value.
    pub options: Vec<(String, Option<String>)>,
}

impl Mount {
    fn parse(raw: &str) -> Mount {
        let options = raw
            .split(',')
            .filter(|f| !f.is_empty())
            .map(|f| match f.split_once('=') {
                Some((k, v)) => (k.trim().to_ascii_lowercase(), Some(v.to_string())),
                None => (f.trim().to_ascii_lowercase(), None),
            })
            .collect();
        Mount {
            raw: raw.to_string(),
            options,
        }
    }

    /// The value of a field (`type`, `from`, `target`...).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.options
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.as_deref())
    }

    /// The mount type; BuildKit's default is `bind`.
    pub fn kind(&self) -> &str {
        self.get("type").unwrap_or("bind")
    }
}

/// A heredoc given as a COPY/ADD source: a file named `path` with `data`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SourceContent {
    pub path: String,
    /// Already un-indented for `<<-`.
    pub data: String,
    pub expand: bool,
}

/// COPY and ADD.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CopyInstr {
    pub sources: Vec<String>,
    pub contents: Vec<SourceContent>,
    pub dest: String,
    pub from: Option<String>,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub link: bool,
    pub parents: bool,
    pub exclude: Vec<String>,
    /// ADD only.
    pub checksum: Option<String>,
    /// ADD only.
    pub keep_git_dir: Option<bool>,
    /// ADD only.
    pub unpack: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RunInstr {
    pub command: Command,
    /// Heredoc files the shell form refers to (tabs kept; see [`Heredoc::chomp`]).
    pub files: Vec<Heredoc>,
    pub mounts: Vec<Mount>,
    pub network: Option<String>,
    pub security: Option<String>,
    pub devices: Vec<Device>,
    /// The flag names given, in order.
    pub flags_used: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FromInstr {
    pub image: String,
    /// As written; lower-cased stage name is in `stage_name`.
    pub as_name: Option<String>,
    pub stage_name: Option<String>,
    pub platform: Option<String>,
    /// The `AS` keyword as written (for the FromAsCasing rule).
    pub as_keyword: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Healthcheck {
    None,
    Cmd {
        /// `["CMD", ...]` for exec form, `["CMD-SHELL", "line"]` for shell form.
        test: Vec<String>,
        interval: Option<Duration>,
        timeout: Option<Duration>,
        start_period: Option<Duration>,
        start_interval: Option<Duration>,
        retries: Option<i32>,
    },
}

/// One instruction, typed, with its words still unexpanded.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "instruction", rename_all = "snake_case")]
pub enum InstructionKind {
    From(FromInstr),
    Run(RunInstr),
    Cmd {
        command: Command,
    },
    Entrypoint {
        command: Command,
    },
    Label {
        pairs: Vec<KeyValue>,
    },
    Maintainer {
        name: String,
    },
    Expose {
        ports: Vec<String>,
    },
    Env {
        pairs: Vec<KeyValue>,
    },
    Add(CopyInstr),
    Copy(CopyInstr),
    Volume {
        paths: Vec<String>,
    },
    User {
        user: String,
    },
    Workdir {
        path: String,
    },
    Arg {
        args: Vec<ArgDecl>,
    },
    Onbuild {
        expression: String,
        trigger: Box<Instruction>,
    },
    StopSignal {
        signal: String,
    },
    Healthcheck(Healthcheck),
    Shell {
        shell: Vec<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Instruction {
    pub kind: InstructionKind,
    /// The keyword as written, for casing rules and messages.
    pub keyword: String,
    pub span: Span,
    /// The logical line as written (continuations joined).
    pub original: String,
    /// Comment lines directly above.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub comments: Vec<String>,
}

impl Instruction {
    /// The keyword in upper case (`RUN`, `COPY`...).
    pub fn name(&self) -> String {
        self.keyword.to_ascii_uppercase()
    }
}

/// Why an instruction is invalid. Messages are BuildKit's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InstructionError {
    #[error("unknown instruction: {0}")]
    Unknown(String),
    #[error("{0} requires exactly one argument")]
    ExactlyOne(String),
    #[error("{0} requires at least one argument")]
    AtLeastOne(String),
    #[error("{0} requires at least two arguments, but only one was provided. Destination could not be determined")]
    NoDestination(String),
    #[error("Bad input to {0}, too many arguments")]
    TooMany(String),
    #[error("{0} names can not be blank")]
    BlankName(String),
    #[error("unknown flag: --{0}")]
    UnknownFlag(String),
    #[error("duplicate flag specified: --{0}")]
    DuplicateFlag(String),
    #[error("missing a value on flag: --{0}")]
    MissingFlagValue(String),
    #[error("expecting boolean value for flag --{flag}, not: {value}")]
    NotBool { flag: String, value: String },
    #[error("FROM requires either one or three arguments")]
    FromArgs,
    #[error(
        "invalid name for build stage: \"{0}\", name can't start with a number or contain symbols"
    )]
    StageName(String),
    #[error("{0} cannot accept a heredoc as a destination")]
    HeredocDestination(String),
    #[error("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")]
    OnbuildChain,
    #[error("{0} isn't allowed as an ONBUILD trigger")]
    OnbuildTrigger(String),
    #[error("HEALTHCHECK NONE takes no arguments")]
    HealthNoneArgs,
    #[error("Missing command after HEALTHCHECK CMD")]
    HealthMissingCmd,
    #[error("Unknown type \"{0}\" in HEALTHCHECK (try CMD)")]
    HealthType(String),
    #[error("Interval \"{0}\" cannot be less than 1ms")]
    IntervalTooShort(String),
    #[error("Interval \"{0}\" cannot be negative")]
    IntervalNegative(String),
    #[error("time: invalid duration \"{0}\"")]
    BadDuration(String),
    #[error("--retries cannot be negative ({0})")]
    RetriesNegative(i64),
    #[error("strconv.ParseInt: parsing \"{0}\": invalid syntax")]
    BadRetries(String),
    #[error("SHELL requires the arguments to be in JSON form")]
    ShellNotJson,
    #[error("VOLUME specified can not be an empty string")]
    EmptyVolume,
    #[error("no build stage in current context")]
    NoStage,
    #[error("device name already set to {0}")]
    DeviceNameSet(String),
    #[error("invalid device field {0:?}")]
    DeviceField(String),
}

/// A `RUN --device=` value.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Device {
    pub name: String,
    pub required: bool,
}

/// Parse a `RUN --device=` value: CSV whose bare first field (or `name=`) is the device name,
/// plus `required` or `required=true|false`.
pub fn parse_device(value: &str) -> Result<Device, InstructionError> {
    let mut name: Option<String> = None;
    let mut required = false;
    for (i, field) in value.split(',').enumerate() {
        let (k, v) = field.split_once('=').unwrap_or((field, ""));
        match k.to_ascii_lowercase().as_str() {
            "name" => {
                if let Some(n) = name {
                    return Err(InstructionError::DeviceNameSet(n));
                }
                name = Some(v.to_string());
            }
            "required" => {
                required = match v.to_ascii_lowercase().as_str() {
                    "" | "true" => true,
                    "false" => false,
                    _ => return Err(InstructionError::DeviceField(field.to_string())),
                }
            }
            _ if i == 0 => name = Some(field.to_string()),
            _ => return Err(InstructionError::DeviceField(field.to_string())),
        }
    }
    Ok(Device {
        name: name.unwrap_or_default(),
        required,
    })
}

#[derive(Clone, Copy, PartialEq)]
enum FlagType {
    Bool,
    Str,
    Strs,
}

/// BuildKit's `BFlags`: `--name=value` words checked against what the keyword allows.
struct Flags {
    values: Vec<(&'static str, FlagType, Vec<String>, bool)>,
    used: Vec<String>,
}

impl Flags {
    fn parse(
        allowed: &[(&'static str, FlagType)],
        words: &[String],
    ) -> Result<Flags, (InstructionError, String)> {
        let mut f = Flags {
            values: allowed
                .iter()
                .map(|&(n, t)| (n, t, Vec::new(), false))
                .collect(),
            used: Vec::new(),
        };
        for w in words {
            let arg = w.strip_prefix("--").unwrap_or(w);
            let (name, value) = match arg.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (arg, None),
            };
            let err = |e| (e, w.clone());
            let Some(slot) = f.values.iter_mut().find(|s| s.0 == name) else {
                return Err(err(InstructionError::UnknownFlag(name.to_string())));
            };
            if slot.3 && slot.1 != FlagType::Strs {
                return Err(err(InstructionError::DuplicateFlag(name.to_string())));
            }
            slot.3 = true;
            f.used.push(name.to_string());
            match slot.1 {
                FlagType::Bool => {
                    let v = match value.map(str::to_ascii_lowercase).as_deref() {
                        None | Some("true") => "true",
                        Some("false") => "false",
                        Some("") => {
                            return Err(err(InstructionError::MissingFlagValue(name.into())))
                        }
                        Some(_) => {
                            return Err(err(InstructionError::NotBool {
                                flag: name.into(),
                                value: value.unwrap_or_default().into(),
                            }))
                        }
                    };
                    slot.2 = vec![v.to_string()];
                }
                FlagType::Str | FlagType::Strs => {
                    let Some(v) = value else {
                        return Err(err(InstructionError::MissingFlagValue(name.into())));
                    };
                    if slot.1 == FlagType::Str {
                        slot.2.clear();
                    }
                    slot.2.push(v.to_string());
                }
            }
        }
        Ok(f)
    }

    fn string(&self, name: &str) -> Option<String> {
        self.values
            .iter()
            .find(|s| s.0 == name && s.3)
            .and_then(|s| s.2.last().cloned())
    }
    fn strings(&self, name: &str) -> Vec<String> {
        self.values
            .iter()
            .find(|s| s.0 == name)
            .map(|s| s.2.clone())
            .unwrap_or_default()
    }
    fn bool(&self, name: &str) -> Option<bool> {
        self.string(name).map(|v| v == "true")
    }
}

use FlagType::{Bool, Str, Strs};

const COPY_FLAGS: &[(&str, FlagType)] = &[
    ("chown", Str),
    ("from", Str),
    ("chmod", Str),
    ("link", Bool),
    ("parents", Bool),
    ("exclude", Strs),
];
const ADD_FLAGS: &[(&str, FlagType)] = &[
    ("chown", Str),
    ("chmod", Str),
    ("link", Bool),
    ("exclude", Strs),
    ("checksum", Str),
    ("keep-git-dir", Bool),
    ("unpack", Bool),
];
const RUN_FLAGS: &[(&str, FlagType)] = &[
    ("mount", Strs),
    ("network", Str),
    ("security", Str),
    ("device", Strs),
];
const HEALTH_FLAGS: &[(&str, FlagType)] = &[
    ("interval", Str),
    ("timeout", Str),
    ("start-period", Str),
    ("start-interval", Str),
    ("retries", Str),
];

/// An instruction error with the word it is about (for the caret), when there is one.
pub type ConvertError = (InstructionError, Option<String>);

fn flag_err(e: (InstructionError, String)) -> ConvertError {
    (e.0, Some(e.1))
}

/// Convert one node. `column` is where its keyword starts on its first line.
pub fn convert(node: &Node, column: usize) -> Result<Instruction, ConvertError> {
    let kw = node.keyword.to_ascii_uppercase();
    let args = &node.args;
    let no_flags = || Flags::parse(&[], &node.flags).map_err(flag_err);
    let kind = match kw.as_str() {
        "FROM" => convert_from(node)?,
        "RUN" => {
            let f = Flags::parse(RUN_FLAGS, &node.flags).map_err(flag_err)?;
            InstructionKind::Run(RunInstr {
                command: Command::from_node(node, args),
                files: if node.json {
                    Vec::new()
                } else {
                    node.heredocs.clone()
                },
                mounts: f.strings("mount").iter().map(|m| Mount::parse(m)).collect(),
                network: f.string("network"),
                security: f.string("security"),
                devices: f
                    .strings("device")
                    .iter()
                    .map(|d| parse_device(d).map_err(|e| (e, Some(d.clone()))))
                    .collect::<Result<_, _>>()?,
                flags_used: f.used.clone(),
            })
        }
        "CMD" | "ENTRYPOINT" => {
            no_flags()?;
            let command = Command::from_node(node, args);
            if kw == "CMD" {
                InstructionKind::Cmd { command }
            } else {
                InstructionKind::Entrypoint { command }
            }
        }
        "SHELL" => {
            no_flags()?;
            if args.is_empty() {
                return Err((InstructionError::AtLeastOne(kw), None));
            }
            if !node.json {
                return Err((InstructionError::ShellNotJson, None));
            }
            InstructionKind::Shell {
                shell: args.clone(),
            }
        }
        "ENV" | "LABEL" => convert_pairs(node, kw.clone())?,
        "MAINTAINER" | "USER" | "WORKDIR" | "STOPSIGNAL" => {
            if args.len() != 1 {
                return Err((InstructionError::ExactlyOne(kw), None));
            }
            no_flags()?;
            let v = args[0].clone();
            match kw.as_str() {
                "MAINTAINER" => InstructionKind::Maintainer { name: v },
                "USER" => InstructionKind::User { user: v },
                "WORKDIR" => InstructionKind::Workdir { path: v },
                _ => InstructionKind::StopSignal { signal: v },
            }
        }
        "EXPOSE" => {
            if args.is_empty() {
                return Err((InstructionError::AtLeastOne(kw), None));
            }
            no_flags()?;
            InstructionKind::Expose {
                ports: args.clone(),
            }
        }
        "VOLUME" => {
            if args.is_empty() {
                return Err((InstructionError::AtLeastOne(kw), None));
            }
            no_flags()?;
            if args.iter().any(|a| a.trim().is_empty()) {
                return Err((InstructionError::EmptyVolume, None));
            }
            InstructionKind::Volume {
                paths: args.clone(),
            }
        }
        "ARG" => {
            if args.is_empty() {
                return Err((InstructionError::AtLeastOne(kw), None));
            }
            no_flags()?;
            InstructionKind::Arg {
                args: args
                    .iter()
                    .map(|a| match a.split_once('=') {
                        Some((k, v)) => ArgDecl {
                            name: k.to_string(),
                            default: Some(v.to_string()),
                        },
                        None => ArgDecl {
                            name: a.clone(),
                            default: None,
                        },
                    })
                    .collect(),
            }
        }
        "COPY" | "ADD" => convert_copy(node, kw.clone())?,
        "ONBUILD" => convert_onbuild(node, kw.clone(), column)?,
        "HEALTHCHECK" => convert_healthcheck(node, kw.clone())?,
        _ => {
            return Err((
                InstructionError::Unknown(node.keyword.clone()),
                Some(node.keyword.clone()),
            ))
        }
    };
    Ok(Instruction {
        kind,
        keyword: node.keyword.clone(),
        span: Span {
            start_line: node.start_line,
            end_line: node.end_line,
            column,
        },
        original: node.original.clone(),
        comments: node.comments.clone(),
    })
}

/// FROM, with its stage name checked.
fn convert_from(node: &Node) -> Result<InstructionKind, ConvertError> {
    let args = &node.args;
    Ok({
        let f = Flags::parse(&[("platform", Str)], &node.flags).map_err(flag_err)?;
        let (as_name, as_keyword) = match args.as_slice() {
            [_] => (None, None),
            [_, a, n] if a.eq_ignore_ascii_case("as") => (Some(n.clone()), Some(a.clone())),
            _ => return Err((InstructionError::FromArgs, None)),
        };
        let stage_name = as_name.as_ref().map(|n| n.to_ascii_lowercase());
        if let (Some(s), Some(orig)) = (&stage_name, &as_name) {
            let mut cs = s.chars();
            let ok = cs.next().is_some_and(|c| c.is_ascii_lowercase())
                && cs.all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.')
                });
            if !ok {
                return Err((
                    InstructionError::StageName(orig.clone()),
                    Some(orig.clone()),
                ));
            }
        }
        InstructionKind::From(FromInstr {
            image: args[0].clone(),
            as_name,
            stage_name,
            platform: f.string("platform"),
            as_keyword,
        })
    })
}

/// ENV or LABEL: `key value legacy` triples from the parser.
fn convert_pairs(node: &Node, kw: String) -> Result<InstructionKind, ConvertError> {
    let args = &node.args;
    let no_flags = || Flags::parse(&[], &node.flags).map_err(flag_err);
    Ok({
        no_flags()?;
        if args.is_empty() {
            return Err((InstructionError::AtLeastOne(kw), None));
        }
        if !args.len().is_multiple_of(3) {
            return Err((InstructionError::TooMany(kw), None));
        }
        let mut pairs = Vec::new();
        for t in args.chunks(3) {
            if t[0].is_empty() {
                return Err((InstructionError::BlankName(kw), None));
            }
            pairs.push(KeyValue {
                key: t[0].clone(),
                value: t[1].clone(),
                legacy: t[2].is_empty(),
            });
        }
        if kw == "ENV" {
            InstructionKind::Env { pairs }
        } else {
            InstructionKind::Label { pairs }
        }
    })
}

/// COPY or ADD, heredoc sources taken from the node.
fn convert_copy(node: &Node, kw: String) -> Result<InstructionKind, ConvertError> {
    let args = &node.args;
    Ok({
        if args.len() < 2 {
            return Err((InstructionError::NoDestination(kw), None));
        }
        let is_add = kw == "ADD";
        let f = Flags::parse(if is_add { ADD_FLAGS } else { COPY_FLAGS }, &node.flags)
            .map_err(flag_err)?;
        let (srcs, dest) = args.split_at(args.len() - 1);
        let dest = dest[0].clone();
        if !node.json && matches!(parse_heredoc_word(&dest), Ok(Some(_))) {
            return Err((InstructionError::HeredocDestination(kw), Some(dest)));
        }
        let mut sources = Vec::new();
        let mut contents = Vec::new();
        for s in srcs {
            match (node.json, parse_heredoc_word(s)) {
                (false, Ok(Some(h))) => {
                    let body = node
                        .heredocs
                        .iter()
                        .find(|d| d.name == h.name)
                        .map(|d| d.content.clone())
                        .unwrap_or_default();
                    contents.push(SourceContent {
                        path: h.name,
                        data: if h.chomp { chomp_heredoc(&body) } else { body },
                        expand: h.expand,
                    });
                }
                _ => sources.push(s.clone()),
            }
        }
        let c = CopyInstr {
            sources,
            contents,
            dest,
            from: if is_add { None } else { f.string("from") },
            chown: f.string("chown"),
            chmod: f.string("chmod"),
            link: f.bool("link").unwrap_or(false),
            parents: f.bool("parents").unwrap_or(false),
            exclude: f.strings("exclude"),
            checksum: f.string("checksum"),
            keep_git_dir: f.bool("keep-git-dir"),
            unpack: f.bool("unpack"),
        };
        if is_add {
            InstructionKind::Add(c)
        } else {
            InstructionKind::Copy(c)
        }
    })
}

/// ONBUILD: the trigger converted, the expression kept as written.
fn convert_onbuild(
    node: &Node,
    kw: String,
    column: usize,
) -> Result<InstructionKind, ConvertError> {
    let no_flags = || Flags::parse(&[], &node.flags).map_err(flag_err);
    Ok({
        let Some(sub) = &node.sub else {
            return Err((InstructionError::AtLeastOne(kw), None));
        };
        no_flags()?;
        let trigger = sub.keyword.to_ascii_uppercase();
        match trigger.as_str() {
            "ONBUILD" => return Err((InstructionError::OnbuildChain, None)),
            "MAINTAINER" | "FROM" => {
                return Err((
                    InstructionError::OnbuildTrigger(trigger),
                    Some(sub.keyword.clone()),
                ))
            }
            _ => {}
        }
        let mut inner = convert(sub, column)?;
        inner.span = Span {
            start_line: node.start_line,
            end_line: node.end_line,
            column,
        };
        let mut expression = strip_onbuild(&node.original).to_string();
        for h in &node.heredocs {
            expression.push('\n');
            expression.push_str(&h.content);
            expression.push_str(&h.name);
        }
        InstructionKind::Onbuild {
            expression,
            trigger: Box::new(inner),
        }
    })
}

/// HEALTHCHECK NONE or CMD, durations and retries checked.
fn convert_healthcheck(node: &Node, kw: String) -> Result<InstructionKind, ConvertError> {
    let args = &node.args;
    let no_flags = || Flags::parse(&[], &node.flags).map_err(flag_err);
    Ok({
        let Some(typ) = args.first() else {
            return Err((InstructionError::AtLeastOne(kw), None));
        };
        let typ = typ.to_ascii_uppercase();
        let rest = &args[1..];
        if typ == "NONE" {
            if !rest.is_empty() {
                return Err((InstructionError::HealthNoneArgs, None));
            }
            no_flags()?;
            InstructionKind::Healthcheck(Healthcheck::None)
        } else {
            let f = Flags::parse(HEALTH_FLAGS, &node.flags).map_err(flag_err)?;
            if typ != "CMD" {
                return Err((InstructionError::HealthType(typ), None));
            }
            let cmd: Vec<String> = if node.json {
                rest.to_vec()
            } else if rest.is_empty() {
                Vec::new()
            } else {
                vec![rest.join(" ")]
            };
            if cmd.is_empty() {
                return Err((InstructionError::HealthMissingCmd, None));
            }
            let mut test = vec![if node.json { "CMD" } else { "CMD-SHELL" }.to_string()];
            test.extend(cmd);
            let dur = |n: &str| -> Result<Option<Duration>, ConvertError> {
                let Some(v) = f.string(n) else {
                    return Ok(None);
                };
                let word = Some(format!("--{n}={v}"));
                match parse_go_duration(&v) {
                    None => Err((InstructionError::BadDuration(v), word)),
                    Some(d) if d < 0 => Err((InstructionError::IntervalNegative(n.into()), word)),
                    Some(0) => Ok(None),
                    Some(d) if d < 1_000_000 => {
                        Err((InstructionError::IntervalTooShort(n.into()), word))
                    }
                    Some(d) => Ok(Some(Duration::from_nanos(d as u64))),
                }
            };
            let retries = match f.string("retries") {
                None => None,
                Some(v) => match v.parse::<i64>() {
                    Ok(r) if r < 0 => return Err((InstructionError::RetriesNegative(r), None)),
                    Ok(r) => i32::try_from(r).ok(),
                    Err(_) => return Err((InstructionError::BadRetries(v), None)),
                },
            };
            InstructionKind::Healthcheck(Healthcheck::Cmd {
                test,
                interval: dur("interval")?,
                timeout: dur("timeout")?,
                start_period: dur("start-period")?,
                start_interval: dur("start-interval")?,
                retries,
            })
        }
    })
}

/// `(?i)^\s*ONBUILD\s*` removed.
fn strip_onbuild(original: &str) -> &str {
    let t = original.trim_start();
    if t.len() >= 7 && t[..7].eq_ignore_ascii_case("onbuild") {
        t[7..].trim_start()
    } else {
        t
    }
}

/// Go's `time.ParseDuration`, in nanoseconds.
pub fn parse_go_duration(s: &str) -> Option<i128> {
    let (neg, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let num = &rest[..num_len];
        if num.is_empty() || num == "." {
            return None;
        }
        let v: f64 = num.parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mult = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += v * mult;
    }
    let ns = total.round() as i128;
    Some(if neg { -ns } else { ns })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_go_duration("1m30s"), Some(90_000_000_000));
        assert_eq!(parse_go_duration("50ns"), Some(50));
        assert_eq!(parse_go_duration("1.5ms"), Some(1_500_000));
        assert_eq!(parse_go_duration("5"), None);
    }
}
