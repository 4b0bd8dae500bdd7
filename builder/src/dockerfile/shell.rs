//! Word expansion, a port of BuildKit's shell lexer (`frontend/dockerfile/shell/lex.go`).
//!
//! It does what BuildKit does for ADD, COPY, ENV, EXPOSE, FROM, LABEL, STOPSIGNAL, USER,
//! VOLUME, WORKDIR and ARG defaults: quote removal, escapes, `$VAR`, `${VAR}` and the
//! `${VAR<op>word}` operators. It is not a shell: no command substitution, no globbing.

use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Where the lexer reads variables from.
pub trait EnvLookup {
    /// The value of `name`, or `None` when it is unset (set-but-empty is `Some("")`).
    fn lookup(&self, name: &str) -> Option<&str>;
}

impl EnvLookup for HashMap<String, String> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

impl EnvLookup for BTreeMap<String, String> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

/// An ordered `KEY=VALUE` list where a later entry wins (as BuildKit's env lists).
impl EnvLookup for [(String, String)] {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

impl EnvLookup for Vec<(String, String)> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.as_slice().lookup(name)
    }
}

/// No variables at all.
pub struct NoEnv;

impl EnvLookup for NoEnv {
    fn lookup(&self, _name: &str) -> Option<&str> {
        None
    }
}

/// Why an expansion failed. `Display` gives BuildKit's text after `failed to process "word": `.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpandErrorKind {
    #[error("unexpected end of statement while looking for matching single-quote")]
    UnterminatedSingleQuote,
    #[error("unexpected end of statement while looking for matching double-quote")]
    UnterminatedDoubleQuote,
    #[error("unexpected end of statement while looking for matching {0}")]
    UnexpectedEnd(char),
    #[error("syntax error: missing '}}'")]
    MissingBrace,
    #[error("syntax error: missing '/' in ${{}}")]
    MissingSlash,
    #[error("syntax error: bad substitution")]
    BadSubstitution,
    #[error("unsupported modifier ({0}) in substitution")]
    UnsupportedModifier(String),
    #[error("{name}: {message}")]
    Required { name: String, message: String },
    #[error("invalid pattern ({pattern}) in substitution: invalid escape '\\{ch}'")]
    InvalidPattern { pattern: String, ch: char },
    #[error("${{...}} nested deeper than {MAX_NESTING} levels")]
    TooDeep,
    #[error("pattern ({0}) in substitution is too large")]
    PatternTooLarge(String),
}

/// How deeply `${...}` may nest. Expansion recurses once per level (about 3.5 KiB
/// of stack in a debug build, far less optimised), so this bounds it to a few MiB,
/// well inside the 64 MiB stack the cli runs its work on; no real Dockerfile comes
/// near it.
pub const MAX_NESTING: usize = 1000;

/// An expansion error, naming the word that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("failed to process \"{word}\": {kind}")]
pub struct ExpandError {
    pub word: String,
    pub kind: ExpandErrorKind,
}

/// What a word expanded to, with the variables it referenced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expansion {
    /// The single-word result (quotes removed, variables substituted).
    pub result: String,
    /// The result split into words on unquoted whitespace.
    pub words: Vec<String>,
    /// Names referenced and set (even if empty).
    pub matched: BTreeSet<String>,
    /// Names referenced and unset.
    pub unmatched: BTreeSet<String>,
}

/// BuildKit's `shell.Lex`, with its mode switches.
#[derive(Debug, Clone, Copy)]
pub struct Lexer {
    pub escape: char,
    /// Keep quote characters in the output.
    pub raw_quotes: bool,
    /// Keep escape characters in the output.
    pub raw_escapes: bool,
    /// Leave references to unset variables as written.
    pub skip_unset_env: bool,
    /// Treat quotes as ordinary characters.
    pub skip_process_quotes: bool,
}

impl Lexer {
    pub fn new(escape: char) -> Self {
        Lexer {
            escape,
            raw_quotes: false,
            raw_escapes: false,
            skip_unset_env: false,
            skip_process_quotes: false,
        }
    }

    /// Expand `word` into one string (BuildKit's `ProcessWord`).
    pub fn process_word(&self, word: &str, env: &dyn EnvLookup) -> Result<String, ExpandError> {
        self.process(word, env).map(|e| e.result)
    }

    /// Expand and split on unquoted whitespace (BuildKit's `ProcessWords`).
    pub fn process_words(
        &self,
        word: &str,
        env: &dyn EnvLookup,
    ) -> Result<Vec<String>, ExpandError> {
        self.process(word, env).map(|e| e.words)
    }

    /// Expand, reporting which variables were found and which were not.
    pub fn process(&self, word: &str, env: &dyn EnvLookup) -> Result<Expansion, ExpandError> {
        let mut sw = ShellWord {
            chars: word.chars().collect(),
            pos: 0,
            env,
            lex: *self,
            raw_escapes: self.raw_escapes,
            matched: BTreeSet::new(),
            unmatched: BTreeSet::new(),
            depth: 0,
        };
        match sw.process_stop_on(None, self.raw_escapes) {
            Ok((result, words)) => Ok(Expansion {
                result,
                words,
                matched: sw.matched,
                unmatched: sw.unmatched,
            }),
            Err(kind) => Err(ExpandError {
                // A word too deep to expand is too long to quote whole.
                word: match kind {
                    ExpandErrorKind::TooDeep if word.chars().count() > 80 => {
                        format!("{}...", word.chars().take(80).collect::<String>())
                    }
                    _ => word.to_string(),
                },
                kind,
            }),
        }
    }
}

#[derive(Default)]
struct Words {
    word: String,
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    fn add_char(&mut self, ch: char) {
        if ch.is_whitespace() {
            if self.in_word && !self.word.is_empty() {
                self.words.push(std::mem::take(&mut self.word));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(ch);
        }
    }
    fn add_raw_char(&mut self, ch: char) {
        self.word.push(ch);
        self.in_word = true;
    }
    fn add_string(&mut self, s: &str) {
        for ch in s.chars() {
            self.add_char(ch);
        }
    }
    fn add_raw_string(&mut self, s: &str) {
        self.word.push_str(s);
        self.in_word = true;
    }
    fn finish(mut self) -> Vec<String> {
        if !self.word.is_empty() {
            self.words.push(self.word);
        }
        self.words
    }
}

struct ShellWord<'a> {
    chars: Vec<char>,
    pos: usize,
    env: &'a dyn EnvLookup,
    lex: Lexer,
    raw_escapes: bool,
    matched: BTreeSet<String>,
    unmatched: BTreeSet<String>,
    /// `${` levels currently open.
    depth: usize,
}

type R<T> = Result<T, ExpandErrorKind>;

impl ShellWord<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }
    fn next(&mut self) -> Option<char> {
        let c = self.chars.get(self.pos).copied();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    fn get_env(&mut self, name: &str) -> Option<String> {
        match self.env.lookup(name) {
            Some(v) => {
                self.matched.insert(name.to_string());
                Some(v.to_string())
            }
            None => {
                self.unmatched.insert(name.to_string());
                None
            }
        }
    }

    fn process_stop_on(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
    ) -> R<(String, Vec<String>)> {
        let saved = self.raw_escapes;
        self.raw_escapes = raw_escapes;
        let r = self.stop_on_inner(stop);
        self.raw_escapes = saved;
        r
    }

    fn stop_on_inner(&mut self, stop: Option<char>) -> R<(String, Vec<String>)> {
        let mut result = String::new();
        let mut words = Words::default();
        while let Some(ch) = self.peek() {
            if Some(ch) == stop {
                self.next();
                return Ok((result, words.finish()));
            }
            let quotes = !self.lex.skip_process_quotes;
            if ch == '$' {
                let tmp = self.process_dollar()?;
                result.push_str(&tmp);
                words.add_string(&tmp);
            } else if quotes && ch == '\'' {
                let tmp = self.process_single_quote()?;
                result.push_str(&tmp);
                words.add_raw_string(&tmp);
            } else if quotes && ch == '"' {
                let tmp = self.process_double_quote()?;
                result.push_str(&tmp);
                words.add_raw_string(&tmp);
            } else {
                self.next();
                if ch == self.lex.escape {
                    if self.raw_escapes {
                        words.add_raw_char(ch);
                        result.push(ch);
                    }
                    match self.next() {
                        None => break,
                        Some(c) => {
                            words.add_raw_char(c);
                            result.push(c);
                        }
                    }
                } else {
                    words.add_char(ch);
                    result.push(ch);
                }
            }
        }
        if let Some(s) = stop {
            return Err(ExpandErrorKind::UnexpectedEnd(s));
        }
        Ok((result, words.finish()))
    }

    fn process_single_quote(&mut self) -> R<String> {
        let mut result = String::new();
        let open = self.next();
        if self.lex.raw_quotes {
            result.extend(open);
        }
        loop {
            match self.next() {
                None => return Err(ExpandErrorKind::UnterminatedSingleQuote),
                Some('\'') => {
                    if self.lex.raw_quotes {
                        result.push('\'');
                    }
                    return Ok(result);
                }
                Some(c) => result.push(c),
            }
        }
    }

    fn process_double_quote(&mut self) -> R<String> {
        let mut result = String::new();
        let open = self.next();
        if self.lex.raw_quotes {
            result.extend(open);
        }
        loop {
            match self.peek() {
                None => return Err(ExpandErrorKind::UnterminatedDoubleQuote),
                Some('"') => {
                    self.next();
                    if self.lex.raw_quotes {
                        result.push('"');
                    }
                    return Ok(result);
                }
                Some('$') => {
                    let v = self.process_dollar()?;
                    result.push_str(&v);
                }
                Some(_) => {
                    let Some(mut ch) = self.next() else { continue };
                    if ch == self.lex.escape {
                        match self.peek() {
                            // A lone escape at the end is dropped; the loop then reports the quote.
                            None => continue,
                            Some(c) if c == '"' || c == '$' || c == self.lex.escape => {
                                if self.raw_escapes {
                                    result.push(ch);
                                }
                                self.next();
                                ch = c;
                            }
                            Some(_) => {}
                        }
                    }
                    result.push(ch);
                }
            }
        }
    }

    fn process_name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && ch.is_ascii_digit() {
                while let Some(d) = self.peek().filter(|c| c.is_ascii_digit()) {
                    self.next();
                    name.push(d);
                }
                return name;
            }
            if name.is_empty() && matches!(ch, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
                self.next();
                return ch.to_string();
            }
            if !ch.is_alphanumeric() && ch != '_' {
                break;
            }
            self.next();
            name.push(ch);
        }
        name
    }

    /// `$...` at the cursor; every nesting of the grammar passes through here.
    fn process_dollar(&mut self) -> R<String> {
        if self.depth >= MAX_NESTING {
            return Err(ExpandErrorKind::TooDeep);
        }
        self.depth += 1;
        let r = self.process_dollar_inner();
        self.depth -= 1;
        r
    }

    fn process_dollar_inner(&mut self) -> R<String> {
        self.next();
        if self.peek() != Some('{') {
            let name = self.process_name();
            if name.is_empty() {
                return Ok("$".to_string());
            }
            return Ok(match self.get_env(&name) {
                Some(v) => v,
                None if self.lex.skip_unset_env => format!("${name}"),
                None => String::new(),
            });
        }
        self.next();
        match self.peek() {
            None => return Err(ExpandErrorKind::MissingBrace),
            Some('{' | '}' | ':') => return Err(ExpandErrorKind::BadSubstitution),
            _ => {}
        }
        let name = self.process_name();
        let Some(mut ch) = self.next() else {
            return Err(ExpandErrorKind::MissingBrace);
        };
        let mut chs = ch.to_string();
        match ch {
            '}' => Ok(match self.get_env(&name) {
                Some(v) => v,
                None if self.lex.skip_unset_env => format!("${{{name}}}"),
                None => String::new(),
            }),
            ':' | '+' | '-' | '?' | '#' | '%' => {
                let null_is_unset = ch == ':';
                if null_is_unset {
                    match self.next() {
                        Some(c) => {
                            ch = c;
                            chs.push(c);
                        }
                        None => return Err(ExpandErrorKind::MissingBrace),
                    }
                }
                let raw = ch == '#' || ch == '%';
                if null_is_unset && raw {
                    return Err(ExpandErrorKind::UnsupportedModifier(chs));
                }
                let word = match self.process_stop_on(Some('}'), raw) {
                    Ok((w, _)) => w,
                    Err(e) => {
                        if self.peek().is_none() {
                            return Err(ExpandErrorKind::MissingBrace);
                        }
                        return Err(e);
                    }
                };
                let value = self.get_env(&name);
                if self.lex.skip_unset_env && value.is_none() {
                    return Ok(format!("${{{name}{chs}{word}}}"));
                }
                let unsetish = match &value {
                    None => true,
                    Some(v) => null_is_unset && v.is_empty(),
                };
                match ch {
                    '-' => Ok(if unsetish {
                        word
                    } else {
                        value.unwrap_or_default()
                    }),
                    '+' => Ok(if unsetish { String::new() } else { word }),
                    '?' => match value {
                        None => Err(ExpandErrorKind::Required {
                            name,
                            message: if word.is_empty() {
                                "is not allowed to be unset".into()
                            } else {
                                word
                            },
                        }),
                        Some(v) if null_is_unset && v.is_empty() => {
                            Err(ExpandErrorKind::Required {
                                name,
                                message: if word.is_empty() {
                                    "is not allowed to be empty".into()
                                } else {
                                    word
                                },
                            })
                        }
                        Some(v) => Ok(v),
                    },
                    '%' | '#' => {
                        let value = value.unwrap_or_default();
                        let (pat, greedy) = match word.strip_prefix(ch) {
                            Some(rest) => (rest.to_string(), true),
                            None => (word.clone(), false),
                        };
                        if ch == '%' {
                            trim_suffix(&pat, &value, greedy)
                        } else {
                            trim_prefix(&pat, &value, greedy)
                        }
                    }
                    _ => Err(ExpandErrorKind::UnsupportedModifier(chs)),
                }
            }
            '/' => {
                let replace_all = self.peek() == Some('/');
                if replace_all {
                    self.next();
                }
                let pattern = match self.process_stop_on(Some('/'), true) {
                    Ok((w, _)) => w,
                    Err(e) => {
                        if self.peek().is_none() {
                            return Err(ExpandErrorKind::MissingSlash);
                        }
                        return Err(e);
                    }
                };
                let replacement = match self.process_stop_on(Some('}'), true) {
                    Ok((w, _)) => w,
                    Err(e) => {
                        if self.peek().is_none() {
                            return Err(ExpandErrorKind::MissingBrace);
                        }
                        return Err(e);
                    }
                };
                let value = self.get_env(&name);
                if self.lex.skip_unset_env && value.is_none() {
                    return Ok(format!("${{{name}/{pattern}/{replacement}}}"));
                }
                let value = value.unwrap_or_default();
                let re = PatRe::new(&pattern, &compile_pattern(&pattern)?, true)?;
                Ok(replace(&re, &value, &replacement, replace_all))
            }
            _ => Err(ExpandErrorKind::UnsupportedModifier(chs)),
        }
    }
}

/// One element of a shell pattern (`*`, `?`, or a literal), as BuildKit's regexp conversion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pat {
    Star,
    Any,
    Lit(char),
}

fn compile_pattern(pattern: &str) -> R<Vec<Pat>> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = Vec::with_capacity(chars.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        match c {
            '*' => out.push(Pat::Star),
            '?' => out.push(Pat::Any),
            '\\' => {
                // `\}` and `\/` only protect the ${} syntax; the escape is not in the pattern.
                if matches!(chars.get(i), Some('}' | '/')) {
                    continue;
                }
                match chars.get(i) {
                    Some(&n @ ('*' | '?' | '\\')) => {
                        out.push(Pat::Lit(n));
                        i += 1;
                    }
                    other => {
                        return Err(ExpandErrorKind::InvalidPattern {
                            pattern: pattern.to_string(),
                            // Go's scanner yields EOF (-1) here, printed as U+FFFD.
                            ch: other.copied().unwrap_or('\u{FFFD}'),
                        });
                    }
                }
            }
            c => out.push(Pat::Lit(c)),
        }
    }
    Ok(out)
}

/// A shell pattern as BuildKit runs it: translated to a regexp (`*` is `.*`, or
/// `.*?` for the shortest match; `?` is `.`). The regex crate's leftmost-first
/// semantics give the match a backtracking engine prefers, in time linear in the
/// text, with no recursion on the pattern's length.
struct PatRe(regex::Regex);

impl PatRe {
    fn new(pattern: &str, pat: &[Pat], greedy: bool) -> R<PatRe> {
        let mut re = String::from("(?:");
        for p in pat {
            match p {
                Pat::Star if greedy => re.push_str(".*"),
                Pat::Star => re.push_str(".*?"),
                Pat::Any => re.push('.'),
                Pat::Lit(c) => re.push_str(&regex::escape(c.encode_utf8(&mut [0; 4]))),
            }
        }
        re.push(')');
        regex::RegexBuilder::new(&re)
            .build()
            .map(PatRe)
            .map_err(|_| ExpandErrorKind::PatternTooLarge(pattern.to_string()))
    }

    /// The end (a byte offset) of the preferred match starting at byte 0.
    fn prefix(&self, s: &str) -> Option<usize> {
        self.0.find(s).filter(|m| m.start() == 0).map(|m| m.end())
    }
}

fn trim_prefix(pattern: &str, value: &str, greedy: bool) -> R<String> {
    let re = PatRe::new(pattern, &compile_pattern(pattern)?, greedy)?;
    Ok(match re.prefix(value) {
        Some(end) => value[end..].to_string(),
        None => value.to_string(),
    })
}

/// Reverse a pattern without splitting an escape from the character it escapes.
fn reverse_pattern(pattern: &str) -> String {
    let p: Vec<char> = pattern.chars().collect();
    let mut out = vec!['\0'; p.len()];
    let last = p.len().saturating_sub(1);
    let mut i = 0;
    while i < p.len() {
        let o = last - i;
        if p[i] == '\\' && i != last {
            out[o - 1] = '\\';
            out[o] = p[i + 1];
            i += 2;
        } else {
            out[o] = p[i];
            i += 1;
        }
    }
    out.into_iter().collect()
}

fn trim_suffix(pattern: &str, value: &str, greedy: bool) -> R<String> {
    // Matching the shortest rightmost suffix = the shortest prefix of the reversed text.
    let rp = reverse_pattern(pattern);
    let rv: String = value.chars().rev().collect();
    let r = trim_prefix(&rp, &rv, greedy)?;
    Ok(r.chars().rev().collect())
}

fn replace(re: &PatRe, value: &str, replacement: &str, all: bool) -> String {
    let mut out = String::new();
    let mut pos = 0;
    while pos <= value.len() {
        // The leftmost match at or after `pos`, as trying each position would find.
        let Some(m) = re.0.find_at(value, pos) else {
            break;
        };
        out.push_str(&value[pos..m.start()]);
        out.push_str(replacement);
        pos = m.end();
        if m.is_empty() {
            // Empty match: copy one char and move on, as Go's ReplaceAll does.
            match value[pos..].chars().next() {
                Some(c) => {
                    out.push(c);
                    pos += c.len_utf8();
                }
                None => pos += 1,
            }
        }
        if !all {
            break;
        }
    }
    if pos <= value.len() {
        out.push_str(&value[pos..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn operators() {
        let e = env(&[("A", "hello.tar.gz"), ("E", "")]);
        let l = Lexer::new('\\');
        let w = |s: &str| l.process_word(s, &e);
        assert_eq!(w("${A%.*}").as_deref(), Ok("hello.tar"));
        assert_eq!(w("${A%%.*}").as_deref(), Ok("hello"));
        assert_eq!(w("${A#*.}").as_deref(), Ok("tar.gz"));
        assert_eq!(w("${A##*.}").as_deref(), Ok("gz"));
        assert_eq!(w("${A/l/L}").as_deref(), Ok("heLlo.tar.gz"));
        assert_eq!(w("${A//l/L}").as_deref(), Ok("heLLo.tar.gz"));
        assert_eq!(w("${E:-x}").as_deref(), Ok("x"));
        assert_eq!(w("${E-x}").as_deref(), Ok(""));
        assert_eq!(
            w("${E:?boom}").map_err(|e| e.to_string()),
            Err("failed to process \"${E:?boom}\": E: boom".to_string())
        );
    }

    /// `${a:-${a:-...x...}}`, `depth` levels.
    fn nested(depth: usize) -> String {
        format!("{}x{}", "${a:-".repeat(depth), "}".repeat(depth))
    }

    #[test]
    fn nesting_up_to_the_limit_expands_and_deeper_is_a_clear_error() {
        // 8 MiB: less than the cli's work thread, more than the limit needs.
        std::thread::Builder::new()
            .stack_size(8 << 20)
            .spawn(|| {
                let l = Lexer::new('\\');
                assert_eq!(
                    l.process_word(&nested(MAX_NESTING), &NoEnv).as_deref(),
                    Ok("x")
                );
                for depth in [MAX_NESTING + 1, 12_000, 20_000] {
                    let e = l.process_word(&nested(depth), &NoEnv).unwrap_err();
                    assert_eq!(e.kind, ExpandErrorKind::TooDeep);
                    let text = e.to_string();
                    assert!(text.contains("nested deeper than 1000 levels"), "{text}");
                    assert!(text.len() < 200, "{text}");
                }
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn patterns_with_thousands_of_stars_match_in_linear_time() {
        let e = env(&[("A", &"ab".repeat(500))]);
        let l = Lexer::new('\\');
        let stars = "*a".repeat(200);
        // Backtracking took exponential time here; the automaton does not.
        let started = std::time::Instant::now();
        assert_eq!(
            l.process_word(&format!("${{A#{stars}c}}"), &e).unwrap(),
            "ab".repeat(500)
        );
        assert_eq!(
            l.process_word(&format!("${{A/{stars}c/x}}"), &e).unwrap(),
            "ab".repeat(500)
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
        // Shortest and longest matches, replacement of empty matches, non-ASCII.
        let e = env(&[("A", "héllo.tar.gz"), ("N", "a\nb")]);
        let w = |s: &str| l.process_word(s, &e).unwrap();
        assert_eq!(w("${A#*l}"), "lo.tar.gz");
        assert_eq!(w("${A##*l}"), "o.tar.gz");
        assert_eq!(w("${A%.*}"), "héllo.tar");
        assert_eq!(w("${A/é/e}"), "hello.tar.gz");
        assert_eq!(w("${A//?/x}"), "xxxxxxxxxxxx");
        assert_eq!(w("${A//x*/-}"), "héllo.tar.gz");
        assert_eq!(w("${A/l*./L}"), "héLgz");
        assert_eq!(w("${A//l/L}"), "héLLo.tar.gz");
        assert_eq!(w("${N#*}"), "a\nb");
        assert_eq!(w("${N##*}"), "\nb", "`*` does not cross a newline");
    }
}
