//! Source locations and the caret snippet the CLI prints under an error.

/// A place in a Dockerfile: 1-based line and column, and how many characters to underline.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Location {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub len: usize,
    /// The text of `line`, for the snippet.
    pub line_text: String,
}

impl Location {
    /// Locate `needle` on `line` of `source` (its first occurrence at or after `column`);
    /// without a needle, underline the line's first word from `column`.
    pub fn find(
        file: &str,
        source: &str,
        line: usize,
        column: usize,
        needle: Option<&str>,
    ) -> Location {
        let line_text = source
            .strip_prefix('\u{feff}')
            .unwrap_or(source)
            .lines()
            .nth(line.saturating_sub(1))
            .unwrap_or("")
            .trim_end_matches('\r')
            .to_string();
        let col0 = column.saturating_sub(1);
        let chars: Vec<char> = line_text.chars().collect();
        let (col, len) = match needle.filter(|n| !n.is_empty()) {
            Some(n) => {
                let hay: String = chars.iter().skip(col0).collect();
                match hay.find(n) {
                    Some(b) => (col0 + hay[..b].chars().count(), n.chars().count()),
                    None => (col0, word_len(&chars, col0)),
                }
            }
            None => (col0, word_len(&chars, col0)),
        };
        Location {
            file: file.to_string(),
            line,
            column: col + 1,
            len: len.max(1),
            line_text,
        }
    }
}

fn word_len(chars: &[char], from: usize) -> usize {
    chars
        .iter()
        .skip(from)
        .take_while(|c| !c.is_whitespace())
        .count()
}

/// Render `error: message` (see [`render_as`]).
pub fn render(message: &str, loc: &Location) -> String {
    render_as("error", message, loc)
}

/// Render `level: message` with `--> file:line:col` and the line with a caret under the span,
/// in the style of rustc and codespan-reporting.
pub fn render_as(level: &str, message: &str, loc: &Location) -> String {
    let num = loc.line.to_string();
    let pad = " ".repeat(num.len());
    let indent: String = loc
        .line_text
        .chars()
        .take(loc.column.saturating_sub(1))
        .map(|c| if c == '\t' { '\t' } else { ' ' })
        .collect();
    format!(
        "{level}: {message}\n{pad}--> {}:{}:{}\n{pad} |\n{num} | {}\n{pad} | {indent}{}\n",
        loc.file,
        loc.line,
        loc.column,
        loc.line_text,
        "^".repeat(loc.len)
    )
}
