//! The line parser: text → BuildKit-shaped nodes (no expansion, no validation).
//!
//! This follows BuildKit's `parser.Parse` step by step, so that [`Ast::dump`] is
//! byte-identical to `AST.Dump()`; see `shared/conformance/README.md` §1.1.

use super::shell::{Lexer, NoEnv};

/// Longest physical line BuildKit's scanner accepts (bufio.MaxScanTokenSize, newline included).
const MAX_LINE: usize = 65536;

/// A heredoc body attached to RUN, COPY or ADD.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Heredoc {
    /// The delimiter, quotes removed.
    pub name: String,
    /// The body, each line with its newline; tabs kept even for `<<-` (see `chomp`).
    pub content: String,
    /// False when any part of the delimiter was quoted: the body is then not expanded.
    pub expand: bool,
    /// `<<-`: leading tabs are to be stripped from every line.
    pub chomp: bool,
    /// The file descriptor written before `<<` (0 when none).
    pub fd: u32,
}

impl Heredoc {
    /// The body with leading tabs removed from each line when `chomp` is set.
    pub fn chomped(&self) -> String {
        if self.chomp {
            chomp_heredoc(&self.content)
        } else {
            self.content.clone()
        }
    }
}

/// Remove the leading tabs of every line (what `<<-` means).
pub fn chomp_heredoc(content: &str) -> String {
    content
        .split_inclusive('\n')
        .map(|l| l.trim_start_matches('\t'))
        .collect()
}

/// One instruction as the line parser sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Node {
    /// The keyword as written (`run`, `RUN`, `Run`...).
    pub keyword: String,
    /// Leading `--flag` words, quotes and escapes already removed.
    pub flags: Vec<String>,
    /// The argument chain, as in BuildKit's `Node.Next` list.
    pub args: Vec<String>,
    /// ONBUILD's nested instruction.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<Box<Node>>,
    /// The arguments came from a JSON array (exec form).
    pub json: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub heredocs: Vec<Heredoc>,
    /// The logical line (continuations joined, escape tokens removed).
    pub original: String,
    /// First and last physical line, 1-based, comments and heredoc bodies included.
    pub start_line: usize,
    pub end_line: usize,
    /// Comment lines directly above the instruction (without `#`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub comments: Vec<String>,
}

impl Node {
    /// The keyword in lower case.
    pub fn name(&self) -> String {
        self.keyword.to_ascii_lowercase()
    }

    fn can_contain_heredoc(&self) -> bool {
        let node = match (&self.sub, self.name().as_str()) {
            (Some(sub), "onbuild") => sub,
            _ => self,
        };
        matches!(node.name().as_str(), "run" | "copy" | "add") && !node.json
    }

    /// BuildKit's `Node.Dump()` for this instruction (without the outer parentheses).
    pub fn dump(&self) -> String {
        let mut s = self.name();
        if !self.flags.is_empty() {
            s.push_str(" [");
            let q: Vec<String> = self.flags.iter().map(|f| go_quote(f)).collect();
            s.push_str(&q.join(" "));
            s.push(']');
        }
        if let Some(sub) = &self.sub {
            s.push_str(" (");
            s.push_str(&sub.dump());
            s.push(')');
        }
        for a in &self.args {
            s.push(' ');
            s.push_str(&go_quote(a));
        }
        s.trim().to_string()
    }
}

/// A parser directive found at the top of the file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Directive {
    pub name: String,
    pub value: String,
    pub line: usize,
}

/// A non-fatal finding of the line parser (BuildKit's empty-continuation warning).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ParseWarning {
    pub kind: ParseWarningKind,
    pub short: String,
    pub detail: String,
    pub line: usize,
}

/// Which parser warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ParseWarningKind {
    /// Blank lines inside a continuation (BuildKit's NoEmptyContinuation).
    EmptyContinuation,
    /// The file ends while a line continuation is open; BuildKit accepts it silently.
    ContinuationAtEof,
}

/// The whole file as the line parser sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Ast {
    pub nodes: Vec<Node>,
    pub directives: Vec<Directive>,
    pub escape: char,
    pub warnings: Vec<ParseWarning>,
}

impl Ast {
    /// `AST.Dump() + "\n"`, the format of BuildKit's parser test `result` files.
    pub fn dump(&self) -> String {
        let mut s = String::new();
        for n in &self.nodes {
            s.push('(');
            s.push_str(&n.dump());
            s.push_str(")\n");
        }
        s
    }

    /// The value of a directive (`syntax`, `escape`, `check`).
    pub fn directive(&self, name: &str) -> Option<&str> {
        self.directives
            .iter()
            .find(|d| d.name == name)
            .map(|d| d.value.as_str())
    }
}

/// What went wrong in the line parser, with the 1-based lines it concerns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyntaxErrorKind {
    #[error("dockerfile line greater than max allowed size of 65535")]
    LineTooLong,
    #[error("only one {0} parser directive can be used")]
    DuplicateDirective(String),
    #[error("invalid ESCAPE '{0}'. Must be ` or \\")]
    InvalidEscape(String),
    #[error("file with no instructions")]
    NoInstructions,
    #[error("{0} must have two arguments")]
    NeedsTwoArguments(String),
    #[error("Syntax error - can't find = in \"{word}\". Must be of the form: name=value")]
    MissingEquals { word: String },
    #[error("when using JSON array syntax, arrays must be comprised of strings only")]
    NotStringArray,
    #[error("unterminated heredoc")]
    UnterminatedHeredoc,
    #[error("{0}")]
    Heredoc(super::shell::ExpandError),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}")]
pub struct SyntaxError {
    pub kind: SyntaxErrorKind,
    pub start_line: usize,
    pub end_line: usize,
}

struct Directives {
    escape: char,
    done: bool,
    seen: Vec<Directive>,
}

impl Directives {
    /// BuildKit's `DirectiveParser.ParseLine`: `#[ \t]*key[ \t]*=[ \t]*value`.
    fn possible(&mut self, line: &str, line_no: usize) -> Result<(), SyntaxErrorKind> {
        if self.done {
            return Ok(());
        }
        let Some((k, v)) = parse_directive_line(line) else {
            self.done = true;
            return Ok(());
        };
        let k = k.to_ascii_lowercase();
        if !matches!(k.as_str(), "syntax" | "escape" | "check") {
            self.done = true;
            return Ok(());
        }
        if self.seen.iter().any(|d| d.name == k) {
            return Err(SyntaxErrorKind::DuplicateDirective(k));
        }
        if k == "escape" {
            match v {
                "\\" => self.escape = '\\',
                "`" => self.escape = '`',
                other => return Err(SyntaxErrorKind::InvalidEscape(other.to_string())),
            }
        }
        self.seen.push(Directive {
            name: k,
            value: v.to_string(),
            line: line_no,
        });
        Ok(())
    }
}

fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// Split `#[ \t]*key[ \t]*=[ \t]*value[ \t]*` into key and value.
pub(crate) fn parse_directive_line(line: &str) -> Option<(&str, &str)> {
    let rest = line.strip_prefix('#')?.trim_start_matches(is_blank);
    let key_len = rest
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())))
        .map_or(rest.len(), |(i, _)| i);
    if key_len == 0 {
        return None;
    }
    let (key, rest) = rest.split_at(key_len);
    let rest = rest.trim_start_matches(is_blank).strip_prefix('=')?;
    let value = rest.trim_matches(is_blank);
    if value.is_empty() {
        return None;
    }
    Some((key, value))
}

fn is_comment(line: &str) -> bool {
    line.trim_start().starts_with('#')
}

/// BuildKit's `[\t\v\f\r ]`.
fn is_ws(c: char) -> bool {
    matches!(c, '\t' | '\x0b' | '\x0c' | '\r' | ' ')
}

/// Remove a trailing escape token (and blanks after it); `true` when the line ends here.
fn trim_continuation(line: &str, escape: char) -> (String, bool) {
    let t = line.trim_end_matches(is_blank);
    if let Some(before) = t.strip_suffix(escape) {
        if before.is_empty() {
            return (String::new(), false);
        }
        if !before.ends_with(escape) {
            return (before.to_string(), false);
        }
    }
    (line.to_string(), true)
}

/// Parse Dockerfile text the way BuildKit's `parser.Parse` does.
pub fn parse_ast(text: &str) -> Result<Ast, SyntaxError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let raw_lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut d = Directives {
        escape: '\\',
        done: false,
        seen: Vec::new(),
    };
    let mut nodes = Vec::new();
    let mut warnings = Vec::new();
    let mut comments: Vec<String> = Vec::new();
    let mut current = 0usize;
    let mut idx = 0usize;
    let err = |kind, s, e| SyntaxError {
        kind,
        start_line: s,
        end_line: e,
    };

    let trim_nl = |l: &str| -> String {
        l.strip_suffix('\n')
            .map(|l| l.strip_suffix('\r').unwrap_or(l))
            .unwrap_or(l)
            .to_string()
    };

    while idx < raw_lines.len() {
        let raw = raw_lines[idx];
        idx += 1;
        if raw.len() > MAX_LINE {
            return Err(err(SyntaxErrorKind::LineTooLong, current, 0));
        }
        let no_nl = trim_nl(raw);
        if is_comment(&no_nl) {
            let c = no_nl.trim_start()[1..].trim().to_string();
            if c.is_empty() {
                comments.clear();
            } else {
                comments.push(c);
            }
        }
        let stripped = no_nl.trim_start();
        d.possible(stripped, current + 1)
            .map_err(|k| err(k, current, 0))?;
        let processed = if is_comment(stripped) { "" } else { stripped };
        current += 1;
        let start_line = current;
        let (line, mut eol) = trim_continuation(processed, d.escape);
        if eol && line.is_empty() {
            continue;
        }
        let mut buf = line.clone();
        let mut empty_continuation = false;
        while !eol && idx < raw_lines.len() {
            let raw = raw_lines[idx];
            idx += 1;
            if raw.len() > MAX_LINE {
                return Err(err(SyntaxErrorKind::LineTooLong, current, 0));
            }
            let no_nl = trim_nl(raw);
            d.possible(&no_nl, current + 1)
                .map_err(|k| err(k, current, 0))?;
            current += 1;
            if is_comment(&no_nl) {
                continue;
            }
            if no_nl.trim_start().is_empty() {
                empty_continuation = true;
                continue;
            }
            let (cont, e) = trim_continuation(&no_nl, d.escape);
            eol = e;
            buf.push_str(&cont);
        }
        if empty_continuation {
            warnings.push(ParseWarning {
                kind: ParseWarningKind::EmptyContinuation,
                short: format!("Empty continuation line found in: {buf}"),
                detail: "Empty continuation lines will become errors in a future release".into(),
                line: current,
            });
        }
        if !eol {
            warnings.push(ParseWarning {
                kind: ParseWarningKind::ContinuationAtEof,
                short: "file ends in a line continuation".into(),
                detail: "the escape character at the end of the last line continues into nothing"
                    .into(),
                line: current,
            });
        }
        let mut node = node_from_line(&buf, d.escape).map_err(|k| err(k, start_line, current))?;
        if node.can_contain_heredoc() && line.contains("<<") {
            let docs = heredocs_from_line(&line).map_err(|k| err(k, start_line, current))?;
            for mut h in docs {
                let mut terminated = false;
                while idx < raw_lines.len() {
                    let raw = raw_lines[idx];
                    idx += 1;
                    current += 1;
                    let t = trim_nl(raw);
                    let candidate = if h.chomp {
                        t.trim_start_matches('\t')
                    } else {
                        t.as_str()
                    };
                    if candidate == h.name {
                        terminated = true;
                        break;
                    }
                    h.content.push_str(raw);
                }
                if !terminated {
                    return Err(err(
                        SyntaxErrorKind::UnterminatedHeredoc,
                        start_line,
                        current,
                    ));
                }
                node.heredocs.push(h);
            }
        }
        node.start_line = start_line;
        node.end_line = current;
        node.comments = std::mem::take(&mut comments);
        nodes.push(node);
    }
    if nodes.is_empty() {
        return Err(err(SyntaxErrorKind::NoInstructions, current, 0));
    }
    Ok(Ast {
        nodes,
        directives: d.seen,
        escape: d.escape,
        warnings,
    })
}

/// Split a logical line into keyword, flags and the rest, then parse the rest by keyword.
pub(crate) fn node_from_line(line: &str, escape: char) -> Result<Node, SyntaxErrorKind> {
    let t = line.trim();
    let (keyword, rest) = match t.find(is_ws) {
        Some(i) => (&t[..i], t[i..].trim_start_matches(is_ws)),
        None => (t, ""),
    };
    let (rest, flags) = extract_flags(rest, escape);
    let rest = rest.trim();
    let mut node = Node {
        keyword: keyword.to_string(),
        flags,
        args: Vec::new(),
        sub: None,
        json: false,
        heredocs: Vec::new(),
        original: line.to_string(),
        start_line: 0,
        end_line: 0,
        comments: Vec::new(),
    };
    match keyword.to_ascii_lowercase().as_str() {
        "run" | "cmd" | "entrypoint" | "shell" => {
            if !rest.is_empty() {
                match parse_json(rest) {
                    Ok(Some(a)) => {
                        node.args = a;
                        node.json = true;
                    }
                    Ok(None) => node.args = vec![rest.to_string()],
                    Err(e) => return Err(e),
                }
            }
        }
        "add" | "copy" | "volume" => {
            if !rest.is_empty() {
                match parse_json(rest)? {
                    Some(a) => {
                        node.args = a;
                        node.json = true;
                    }
                    None => node.args = split_ws(rest),
                }
            }
        }
        "from" | "expose" => node.args = split_ws(rest),
        "env" | "label" => node.args = parse_name_val(rest, &keyword.to_ascii_uppercase(), escape)?,
        "arg" => node.args = parse_words(rest, escape),
        "maintainer" | "user" | "workdir" | "stopsignal" => {
            if !rest.is_empty() {
                node.args = vec![rest.to_string()];
            }
        }
        "healthcheck" => {
            // BuildKit scans bytes here, so only ASCII whitespace separates the type.
            let sep = rest
                .bytes()
                .position(|b| b.is_ascii_whitespace() || b == 0x0b)
                .unwrap_or(rest.len());
            if sep > 0 {
                let after = rest[sep..].trim_start();
                node.args.push(rest[..sep].to_string());
                if !after.is_empty() {
                    match parse_json(after)? {
                        Some(a) => {
                            node.args.extend(a);
                            node.json = true;
                        }
                        None => node.args.push(after.to_string()),
                    }
                }
            }
        }
        "onbuild" => {
            if !rest.is_empty() {
                node.sub = Some(Box::new(node_from_line(rest, escape)?));
            }
        }
        _ => node.args = vec![String::new()],
    }
    Ok(node)
}

/// `Ok(None)` when the text is not a JSON array (then it is shell form).
pub(crate) fn parse_json(rest: &str) -> Result<Option<Vec<String>>, SyntaxErrorKind> {
    let rest = rest.trim_start();
    if !rest.starts_with('[') {
        return Ok(None);
    }
    let Ok(values) = serde_json::from_str::<Vec<serde_json::Value>>(rest) else {
        return Ok(None);
    };
    values
        .into_iter()
        .map(|v| match v {
            serde_json::Value::String(s) => Ok(s),
            _ => Err(SyntaxErrorKind::NotStringArray),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

fn split_ws(rest: &str) -> Vec<String> {
    rest.split(is_ws)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// BuildKit's `extractBuilderFlags`: leading `--flag` words off the rest of the line.
fn extract_flags(line: &str, escape: char) -> (String, Vec<String>) {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let chars: Vec<(usize, char)> = line.char_indices().collect();
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut quote = '\0';
    let mut blank_ok = false;
    let mut i = 0;
    loop {
        let at_end = i >= chars.len();
        if phase == Phase::Spaces {
            if at_end {
                break;
            }
            let (off, ch) = chars[i];
            if ch.is_whitespace() {
                i += 1;
                continue;
            }
            if ch != '-' || chars.get(i + 1).map(|c| c.1) != Some('-') {
                return (line[off..].to_string(), words);
            }
            phase = Phase::Word;
        }
        if at_end {
            if word != "--" && (blank_ok || !word.is_empty()) {
                words.push(word);
            }
            break;
        }
        let (off, mut ch) = chars[i];
        if phase == Phase::Word {
            if ch.is_whitespace() {
                phase = Phase::Spaces;
                if word == "--" {
                    return (line[off..].to_string(), words);
                }
                if blank_ok || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                word.clear();
                blank_ok = false;
                i += 1;
                continue;
            }
            if ch == '\'' || ch == '"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
                i += 1;
                continue;
            }
            if ch == escape {
                if i + 1 == chars.len() {
                    i += 1;
                    continue;
                }
                i += 1;
                ch = chars[i].1;
            }
            word.push(ch);
            i += 1;
            continue;
        }
        // Phase::Quote
        if ch == quote {
            phase = Phase::Word;
            i += 1;
            continue;
        }
        if ch == escape {
            if i + 1 == chars.len() {
                phase = Phase::Word;
                i += 1;
                continue;
            }
            i += 1;
            ch = chars[i].1;
        }
        word.push(ch);
        i += 1;
    }
    (String::new(), words)
}

/// BuildKit's `parseWords`: split on whitespace outside quotes, keeping quotes and escapes.
pub fn parse_words(rest: &str, escape: char) -> Vec<String> {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let chars: Vec<char> = rest.chars().collect();
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut quote = '\0';
    let mut blank_ok = false;
    let mut i = 0;
    loop {
        let at_end = i >= chars.len();
        if phase == Phase::Spaces {
            if at_end {
                break;
            }
            if chars[i].is_whitespace() {
                i += 1;
                continue;
            }
            phase = Phase::Word;
        }
        if at_end {
            if blank_ok || !word.is_empty() {
                words.push(word);
            }
            break;
        }
        let mut ch = chars[i];
        if phase == Phase::Word {
            if ch.is_whitespace() {
                phase = Phase::Spaces;
                if blank_ok || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                blank_ok = false;
                i += 1;
                continue;
            }
            if ch == '\'' || ch == '"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
            }
            if ch == escape {
                if i + 1 == chars.len() {
                    i += 1;
                    continue;
                }
                word.push(ch);
                i += 1;
                ch = chars[i];
            }
            word.push(ch);
            i += 1;
            continue;
        }
        // Phase::Quote
        if ch == quote {
            phase = Phase::Word;
        }
        if ch == escape && quote != '\'' {
            if i + 1 == chars.len() {
                phase = Phase::Word;
                i += 1;
                continue;
            }
            word.push(ch);
            i += 1;
            ch = chars[i];
        }
        word.push(ch);
        i += 1;
    }
    words
}

/// ENV and LABEL: `k=v ...` triples `k v "="`, or the legacy `k v` as `k v ""`.
fn parse_name_val(rest: &str, key: &str, escape: char) -> Result<Vec<String>, SyntaxErrorKind> {
    let words = parse_words(rest, escape);
    let Some(first) = words.first() else {
        return Ok(Vec::new());
    };
    if !first.contains('=') {
        let Some(i) = rest.find(is_ws) else {
            return Err(SyntaxErrorKind::NeedsTwoArguments(key.to_string()));
        };
        let value = rest[i..].trim_start_matches(is_ws);
        return Ok(vec![
            rest[..i].to_string(),
            value.to_string(),
            String::new(),
        ]);
    }
    let mut out = Vec::with_capacity(words.len() * 3);
    for w in words {
        let Some((k, v)) = w.split_once('=') else {
            return Err(SyntaxErrorKind::MissingEquals { word: w });
        };
        out.push(k.to_string());
        out.push(v.to_string());
        out.push("=".to_string());
    }
    Ok(out)
}

/// BuildKit's `ParseHeredoc` for one word: `Ok(None)` when it is not a heredoc opener.
pub fn parse_heredoc_word(src: &str) -> Result<Option<Heredoc>, super::shell::ExpandError> {
    let digits = src.bytes().take_while(u8::is_ascii_digit).count();
    let Some(after) = src[digits..].strip_prefix("<<") else {
        return Ok(None);
    };
    let (chomp, rest) = match after.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, after),
    };
    if rest.contains('<') || rest.is_empty() {
        return Ok(None);
    }
    let fd = src[..digits].parse::<u32>().unwrap_or(0);
    let mut lex = Lexer::new('\\');
    lex.skip_unset_env = true;
    let words = lex.process_words(rest, &NoEnv)?;
    let [word] = words.as_slice() else {
        return Ok(None);
    };
    lex.raw_quotes = true;
    let raw = lex.process_words(rest, &NoEnv)?;
    let quotes = |s: &str| s.chars().filter(|&c| c == '\'' || c == '"').count();
    let expand = raw.first().map(|r| quotes(r)) == Some(quotes(word));
    Ok(Some(Heredoc {
        name: word.clone(),
        content: String::new(),
        expand,
        chomp,
        fd,
    }))
}

/// The heredocs an instruction line opens, in order.
pub fn heredocs_from_line(line: &str) -> Result<Vec<Heredoc>, SyntaxErrorKind> {
    let mut lex = Lexer::new('\\');
    lex.raw_quotes = true;
    lex.raw_escapes = true;
    lex.skip_unset_env = true;
    let words = lex.process_words(line, &NoEnv).unwrap_or_default();
    // BuildKit's lexer keeps `<<` and the word after it together (`<<  EOF`), but not `<<-`.
    let mut joined: Vec<String> = Vec::with_capacity(words.len());
    let mut it = words.into_iter().peekable();
    while let Some(w) = it.next() {
        let digits = w.bytes().take_while(u8::is_ascii_digit).count();
        if &w[digits..] == "<<" {
            if let Some(n) = it.next() {
                joined.push(format!("{w} {n}"));
                continue;
            }
        }
        joined.push(w);
    }
    let mut docs = Vec::new();
    for w in joined {
        if let Some(h) = parse_heredoc_word(&w).map_err(SyntaxErrorKind::Heredoc)? {
            docs.push(h);
        }
    }
    Ok(docs)
}

/// Go's `strconv.Quote`.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x0b' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\x7f' => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if is_go_printable(c) => out.push(c),
            c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push('"');
    out
}

/// An approximation of Go's `unicode.IsPrint`: no controls, no format characters and no
/// spaces other than U+0020.
fn is_go_printable(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    if c.is_control() || c.is_whitespace() {
        return false;
    }
    !matches!(c as u32,
        0xAD | 0x600..=0x605 | 0x61C | 0x6DD | 0x70F | 0x180E | 0x200B..=0x200F
        | 0x202A..=0x202E | 0x2060..=0x2064 | 0x2066..=0x206F | 0xFEFF | 0xFFF9..=0xFFFB
        | 0xE000..=0xF8FF | 0xD800..=0xDFFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuation_rules() {
        assert_eq!(trim_continuation("a \\", '\\'), ("a ".into(), false));
        assert_eq!(trim_continuation("a\\\\", '\\'), ("a\\\\".into(), true));
        assert_eq!(trim_continuation("\\  ", '\\'), ("".into(), false));
        assert_eq!(trim_continuation("a `", '`'), ("a ".into(), false));
    }

    #[test]
    fn quote_like_go() {
        assert_eq!(
            go_quote("a\"b\\\u{0}♥\u{a0}"),
            "\"a\\\"b\\\\\\x00♥\\u00a0\""
        );
    }
}
