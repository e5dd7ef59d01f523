//! Diagnostics: one problem in one file, printed as `path:line:col: error: message` plus a hint.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Diagnostic {
    pub path: String,
    /// 1-based.
    pub line: u32,
    /// 1-based, in characters.
    pub column: u32,
    pub message: String,
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn new(path: &str, (line, column): (u32, u32), message: impl Into<String>) -> Diagnostic {
        Diagnostic { path: path.to_owned(), line, column, message: message.into(), hint: None }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Diagnostic {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: error: {}", self.path, self.line, self.column, self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  = hint: {hint}")?;
        }
        Ok(())
    }
}

/// 1-based (line, column) of a byte offset in `text`; offsets past the end clamp to the end.
pub fn line_column(text: &str, offset: usize) -> (u32, u32) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = text[line_start..offset].chars().count() + 1;
    (line as u32, column as u32)
}

/// The (line, column) in `file` of a TOML error in the TOML text that starts at byte `base` of it.
pub fn toml_error_position(file: &str, error: &toml::de::Error, base: usize) -> (u32, u32) {
    line_column(file, base + error.span().map_or(0, |span| span.start))
}

/// A TOML error's message without the source excerpt `toml` adds; an unknown field gets the
/// closest expected one ("unknown field `nam`, expected one of `name`, ...; did you mean `name`?").
pub fn toml_error_message(error: &toml::de::Error) -> String {
    let message = error.message().trim().trim_end_matches('.');
    let suggestion = message.strip_prefix("unknown field `").and_then(|rest| {
        let (unknown, expected) = rest.split_once('`')?;
        let expected = expected.strip_prefix(", expected one of ")?;
        closest(unknown, expected.split(", ").map(|k| k.trim_matches('`')))
    });
    match suggestion {
        Some(known) => format!("{message}; did you mean `{known}`?"),
        None => message.to_owned(),
    }
}

/// The candidate within two edits of `word` (ignoring case), the nearest first.
pub(crate) fn closest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let word = word.to_lowercase();
    candidates
        .into_iter()
        .map(|k| (crate::loader::edit_distance(k, &word), k))
        .filter(|(d, k)| *d <= 2 && *d < k.len())
        .min()
        .map(|(_, k)| k)
}
