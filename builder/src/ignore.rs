//! `.dockerignore` files and `COPY --exclude` patterns, with the rules of
//! moby/patternmatcher (what Docker and BuildKit use):
//!
//! - A pattern is trimmed and cleaned like Go's `filepath.Clean` (`./a/` is `a`);
//!   a leading `!` makes it an exception that re-includes what earlier patterns
//!   excluded. Syntax is checked like Go's `filepath.Match` (`[]a]`, `[x-]`, a
//!   trailing `\` are errors), and a lone `!` is an error.
//! - `*` and `?` never cross `/`; `**` matches any number of path segments
//!   (`**/` at the start also matches none); `[...]` classes and `\` escapes as
//!   in Go's regexp, which patternmatcher compiles patterns into.
//! - A path is excluded when the last pattern matching it, or one of its parent
//!   directories, is not an exception.
//!
//! Paths are relative and `/`-separated. [`read_ignore_file`] parses a
//! `.dockerignore`: `#` comments, blank lines, a leading `/` (also after `!`).

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PatternError {
    #[error("illegal exclusion pattern: \"!\"")]
    LoneExclamation,
    #[error("syntax error in pattern {0:?}")]
    Syntax(String),
}

#[derive(Debug, Clone)]
enum Kind {
    Exact,
    /// `dir/**`: everything starting with the text before `**`.
    Prefix(String),
    /// `**/name`: everything ending with the text after `**`.
    Suffix(String),
    Regex(regex::Regex),
}

#[derive(Debug, Clone)]
struct Pattern {
    /// Cleaned, without the `!`.
    text: String,
    exception: bool,
    kind: Kind,
}

impl Pattern {
    fn matches(&self, path: &str) -> bool {
        match &self.kind {
            Kind::Exact => path == self.text,
            Kind::Prefix(p) => path.starts_with(p.as_str()),
            Kind::Suffix(s) => {
                path.ends_with(s.as_str()) || (s.starts_with('/') && path == &s[1..])
            }
            Kind::Regex(r) => r.is_match(path),
        }
    }

    /// The pattern with a trailing `/**` or `/*` removed (used to decide whether
    /// an exception could apply below a directory).
    fn without_trailing_glob(&self) -> &str {
        let t = self.text.as_str();
        let t = t.strip_suffix("/**").unwrap_or(t);
        t.strip_suffix("/*").unwrap_or(t)
    }
}

/// Which patterns matched a directory, handed down to its children while walking
/// (patternmatcher's `MatchInfo`).
#[derive(Debug, Clone, Default)]
pub struct MatchInfo(Vec<bool>);

/// A compiled list of patterns.
#[derive(Debug, Clone, Default)]
pub struct Matcher {
    patterns: Vec<Pattern>,
    exceptions: bool,
    /// No exception pattern has a wildcard before a trailing `/*` or `/**`: a
    /// walk may then skip an excluded directory unless an exception names a
    /// path below it.
    only_prefix_exceptions: bool,
}

impl Matcher {
    /// Compiles patterns: each trimmed, empty ones dropped, cleaned, syntax-checked.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Matcher, PatternError> {
        let mut out = Matcher {
            only_prefix_exceptions: true,
            ..Matcher::default()
        };
        for p in patterns {
            let p = p.as_ref().trim();
            if p.is_empty() {
                continue;
            }
            let cleaned = clean(p);
            let (exception, text) = match cleaned.strip_prefix('!') {
                Some("") => return Err(PatternError::LoneExclamation),
                Some(rest) => (true, rest.to_string()),
                None => (false, cleaned),
            };
            if !valid_glob(&text) {
                return Err(PatternError::Syntax(p.to_string()));
            }
            let kind = compile(&text).ok_or_else(|| PatternError::Syntax(p.to_string()))?;
            let pat = Pattern {
                text,
                exception,
                kind,
            };
            if exception {
                out.exceptions = true;
                if pat
                    .without_trailing_glob()
                    .contains(['*', '[', ']', '?', '^', '\\'])
                {
                    out.only_prefix_exceptions = false;
                }
            }
            out.patterns.push(pat);
        }
        Ok(out)
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// How many patterns were kept (empty ones are dropped).
    pub fn len(&self) -> usize {
        self.patterns.len()
    }

    /// Whether any pattern is a `!` exception.
    pub fn has_exceptions(&self) -> bool {
        self.exceptions
    }

    /// Whether `path` is excluded: the last pattern matching it or one of its
    /// parent directories is not an exception (`MatchesOrParentMatches`).
    pub fn matches(&self, path: &str) -> bool {
        let parents: Vec<&str> = match path.rfind('/') {
            Some(i) => path[..i].split('/').collect(),
            None => Vec::new(),
        };
        let mut matched = false;
        for p in &self.patterns {
            if p.exception != matched {
                continue;
            }
            let mut hit = p.matches(path);
            if !hit && !parents.is_empty() {
                let mut prefix = String::new();
                for (i, seg) in parents.iter().enumerate() {
                    if i > 0 {
                        prefix.push('/');
                    }
                    prefix.push_str(seg);
                    if p.matches(&prefix) {
                        hit = true;
                        break;
                    }
                }
            }
            if hit {
                matched = !p.exception;
            }
        }
        matched
    }

    /// The walking form (`MatchesUsingParentResults`): `parent` is what this
    /// returned for the parent directory (default for a top-level entry).
    pub fn matches_in(&self, path: &str, parent: &MatchInfo) -> (bool, MatchInfo) {
        if parent.0.is_empty() {
            // Nothing known about the parents: the full check, then record which
            // patterns hold here.
            let mut info = vec![false; self.patterns.len()];
            let mut matched = false;
            for (i, p) in self.patterns.iter().enumerate() {
                if p.exception != matched {
                    continue;
                }
                let mut hit = p.matches(path);
                if !hit {
                    if let Some(idx) = path.rfind('/') {
                        let dir = &path[..idx];
                        hit = dir
                            .match_indices('/')
                            .map(|(j, _)| &dir[..j])
                            .chain(std::iter::once(dir))
                            .any(|prefix| p.matches(prefix));
                    }
                }
                info[i] = hit;
                if hit {
                    matched = !p.exception;
                }
            }
            return (matched, MatchInfo(info));
        }
        let mut info = vec![false; self.patterns.len()];
        let mut matched = false;
        for (i, p) in self.patterns.iter().enumerate() {
            let mut hit = parent.0.get(i).copied().unwrap_or(false);
            if !hit {
                if p.exception != matched {
                    continue;
                }
                hit = p.matches(path);
            }
            info[i] = hit;
            if hit {
                matched = !p.exception;
            }
        }
        (matched, MatchInfo(info))
    }

    /// For an excluded directory: whether a walk must still look inside it,
    /// because an exception might re-include something below (the walker's
    /// "exclusions" rule; without exceptions nothing below can come back).
    pub fn must_descend(&self, dir: &str) -> bool {
        if !self.exceptions {
            return false;
        }
        if !self.only_prefix_exceptions {
            return true;
        }
        let dir_slash = format!("{dir}/");
        self.patterns
            .iter()
            .filter(|p| p.exception)
            .any(|p| format!("{}/", p.without_trailing_glob()).starts_with(&dir_slash))
    }

    /// For include patterns (`COPY --parents`): whether anything below an
    /// unmatched directory could still match.
    pub fn could_match_below(&self, dir: &str) -> bool {
        let dir_slash = format!("{dir}/");
        self.patterns.iter().filter(|p| !p.exception).any(|p| {
            let t = p.without_trailing_glob();
            t.contains(['*', '[', ']', '?', '^', '\\']) || format!("{t}/").starts_with(&dir_slash)
        })
    }
}

/// Parses a `.dockerignore` into patterns, as `ignorefile.ReadAll` does.
pub fn read_ignore_file(content: &str) -> Vec<String> {
    let content = content.strip_prefix('\u{feff}').unwrap_or(content);
    let mut out = Vec::new();
    for line in content.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        // A comment only when `#` is the very first character.
        if line.starts_with('#') {
            continue;
        }
        let mut pattern = line.trim();
        if pattern.is_empty() {
            continue;
        }
        let invert = pattern.starts_with('!');
        if invert {
            pattern = pattern[1..].trim();
        }
        let mut p = String::new();
        if !pattern.is_empty() {
            p = clean(pattern);
            if p.len() > 1 && p.starts_with('/') {
                p.remove(0);
            }
        }
        out.push(if invert { format!("!{p}") } else { p });
    }
    out
}

/// Go's `filepath.Clean` for `/`-separated paths.
pub fn clean(path: &str) -> String {
    if path.is_empty() {
        return ".".into();
    }
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|l| *l != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            s => parts.push(s),
        }
    }
    let body = parts.join("/");
    match (rooted, body.is_empty()) {
        (true, _) => format!("/{body}"),
        (false, true) => ".".into(),
        (false, false) => body,
    }
}

/// Go's `filepath.Match` syntax check (Unix rules: `\` escapes).
fn valid_glob(p: &str) -> bool {
    let chars: Vec<char> = p.chars().collect();
    let mut i = 0;
    // One class member: an escaped or plain char that is not `-` or `]`, and
    // more pattern must follow it.
    let esc = |i: &mut usize| -> bool {
        match chars.get(*i) {
            None | Some('-') | Some(']') => return false,
            Some('\\') => {
                *i += 1;
                if *i >= chars.len() {
                    return false;
                }
            }
            _ => {}
        }
        *i += 1;
        *i < chars.len()
    };
    while i < chars.len() {
        match chars[i] {
            '\\' => {
                if i + 1 >= chars.len() {
                    return false;
                }
                i += 2;
            }
            '[' => {
                i += 1;
                if chars.get(i) == Some(&'^') {
                    i += 1;
                }
                let mut ranges = 0;
                loop {
                    if chars.get(i) == Some(&']') && ranges > 0 {
                        i += 1;
                        break;
                    }
                    if !esc(&mut i) {
                        return false;
                    }
                    if chars[i] == '-' {
                        i += 1;
                        if !esc(&mut i) {
                            return false;
                        }
                    }
                    ranges += 1;
                }
            }
            _ => i += 1,
        }
    }
    true
}

/// patternmatcher's translation of a cleaned pattern.
fn compile(p: &str) -> Option<Kind> {
    #[derive(PartialEq)]
    enum T {
        Exact,
        Prefix,
        Suffix,
        Regex,
    }
    let chars: Vec<char> = p.chars().collect();
    let mut re = String::from("^");
    let mut kind = T::Exact;
    let mut i = 0;
    let mut first = true;
    // The wildcard just emitted: a run of equal wildcards means what one does, and
    // emitting it once keeps the automaton as small as the pattern's meaning.
    let mut last: Option<&str> = None;
    while i < chars.len() {
        let ch = chars[i];
        i += 1;
        let prev = last.take();
        match ch {
            '*' if chars.get(i) == Some(&'*') => {
                i += 1;
                // `**/` is `**`.
                if chars.get(i) == Some(&'/') {
                    i += 1;
                }
                if i >= chars.len() {
                    if kind == T::Exact {
                        kind = T::Prefix;
                    } else {
                        re.push_str(".*");
                        kind = T::Regex;
                    }
                } else {
                    // Non-capturing: capture slots would make the PikeVM's memory
                    // grow with the number of groups.
                    if prev != Some("(?:.*/)?") {
                        re.push_str("(?:.*/)?");
                    }
                    last = Some("(?:.*/)?");
                    kind = T::Regex;
                }
                if first {
                    kind = T::Suffix;
                }
            }
            '*' => {
                if prev != Some("[^/]*") {
                    re.push_str("[^/]*");
                }
                last = Some("[^/]*");
                kind = T::Regex;
            }
            '?' => {
                re.push_str("[^/]");
                kind = T::Regex;
            }
            '.' | '+' | '(' | ')' | '|' | '{' | '}' | '$' => {
                re.push('\\');
                re.push(ch);
            }
            '\\' => match chars.get(i) {
                Some(&next) => {
                    i += 1;
                    if next.is_ascii_alphanumeric() {
                        // Go's regexp gives `\d` and friends their class meaning.
                        re.push('\\');
                        re.push(next);
                    } else {
                        re.push_str(&regex::escape(&next.to_string()));
                    }
                    kind = T::Regex;
                }
                None => re.push_str("\\\\"),
            },
            '[' | ']' => {
                re.push(ch);
                kind = T::Regex;
            }
            c => re.push(c),
        }
        first = false;
    }
    Some(match kind {
        T::Exact => Kind::Exact,
        T::Prefix => Kind::Prefix(p[..p.len() - 2].to_string()),
        T::Suffix => Kind::Suffix(p[2..].to_string()),
        T::Regex => {
            re.push('$');
            Kind::Regex(regex::Regex::new(&re).ok()?)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_like_go() {
        assert_eq!(clean("./a/"), "a");
        assert_eq!(clean("a/../../b"), "../b");
        assert_eq!(clean("/../a"), "/a");
        assert_eq!(clean(""), ".");
        assert_eq!(clean("!./x"), "!./x");
        assert_eq!(clean("!/a/../b"), "!/b");
    }

    #[test]
    fn exceptions_with_wildcards_force_descending() {
        let m = Matcher::new(&["a", "!a/b"]).unwrap();
        assert!(m.must_descend("a"));
        assert!(!m.must_descend("c"));
        let m = Matcher::new(&["*", "!*/keep"]).unwrap();
        assert!(m.must_descend("anything"));
        let m = Matcher::new(&["a"]).unwrap();
        assert!(!m.must_descend("a"));
    }

    #[test]
    fn a_long_run_of_wildcards_compiles_to_a_small_automaton() {
        let line = format!("{}y", "*".repeat(5000));
        let m = Matcher::new(&[line.as_str()]).unwrap();
        let deep = vec!["d"; 40].join("/");
        assert!(m.matches(&format!("{deep}/y")));
        assert!(m.matches("y"));
        assert!(!m.matches(&format!("{deep}/x")));
        let Kind::Regex(re) = &m.patterns[0].kind else {
            panic!("a regex")
        };
        assert_eq!(re.as_str(), "^(?:.*/)?y$");
        let m = Matcher::new(&[format!("a/{}b", "*?".repeat(2000))]).unwrap();
        assert!(m.matches(&format!("a/{}b", "x".repeat(2000))));
        assert!(
            !m.matches(&format!("a/{}/b", "x".repeat(2000))),
            "`*` never crosses `/`"
        );
    }
}
