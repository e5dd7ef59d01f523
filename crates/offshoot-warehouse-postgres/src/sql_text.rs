//! SQL text handling PostgreSQL's API does not give us through sqlx: quoting identifiers, and
//! cutting an asset's SQL to its one statement before it is spliced into `CREATE TABLE … AS`.
//!
//! Why a guard is needed although the extended protocol (which runs the asset's statement)
//! already refuses a second statement: a clear `Refused` error instead of a syntax error, and a
//! second line of defence should the statement ever be sent another way.
//!
//! The scan mirrors the rules of PostgreSQL's lexer (`scan.l`) for what can hide a `;`:
//! `'…'` strings (`''` inside; backslashes are plain characters, as the adapter sets
//! `standard_conforming_strings = on`), `E'…'` strings (a backslash escapes the next character),
//! `"…"` identifiers (`""` inside), `$tag$…$tag$` dollar quotes, `--` comments (to the end of the
//! line, `\n` or `\r`) and nested `/* … */` comments. Only the text before the first top-level
//! `;` is ever sent, so a mistake in the scan can make it refuse or cut a valid statement, never
//! send a second one. It is not shared with the SQLite adapter because the lexers differ (no
//! dollar quotes or `E''` strings there; `[…]` and backquoted identifiers, which PostgreSQL does
//! not have).

use offshoot_warehouse::{WarehouseError, WarehouseResult};

/// `name` as a double-quoted PostgreSQL identifier, embedded quotes doubled.
pub(crate) fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The one statement in `sql`, without a trailing `;` and what follows it (only blanks and
/// comments may follow). Refuses a second statement and NUL characters (PostgreSQL cannot store
/// them in text, and a client might stop reading at one).
pub(crate) fn single_statement(sql: &str) -> WarehouseResult<&str> {
    if sql.contains('\0') {
        return Err(WarehouseError::Refused("the SQL contains a NUL character".to_owned()));
    }
    let Some(end) = first_top_level_semicolon(sql) else {
        return Ok(sql);
    };
    if has_code_after(sql, end + 1) {
        return Err(WarehouseError::Refused(
            "an asset's SQL must be a single SELECT statement; found another statement after `;`"
                .to_owned(),
        ));
    }
    Ok(&sql[..end])
}

/// What a stretch of SQL text is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Token {
    /// Whitespace or a comment.
    Blank,
    Semicolon,
    /// Anything else: a keyword, an operator, a literal, a quoted identifier.
    Code,
}

/// Calls `visit` with each token's kind, from `start` on, until it returns false.
fn scan(sql: &str, start: usize, mut visit: impl FnMut(usize, Token) -> bool) {
    let bytes = sql.as_bytes();
    let mut at = start;
    while at < bytes.len() {
        let (kind, next) = match bytes[at] {
            b' ' | b'\t' | b'\n' | b'\r' | b'\x0b' | b'\x0c' => (Token::Blank, at + 1),
            b'-' if bytes.get(at + 1) == Some(&b'-') => {
                let end = bytes[at..]
                    .iter()
                    .position(|&b| b == b'\n' || b == b'\r')
                    .map_or(bytes.len(), |offset| at + offset + 1);
                (Token::Blank, end)
            }
            b'/' if bytes.get(at + 1) == Some(&b'*') => {
                (Token::Blank, end_of_block_comment(bytes, at + 2))
            }
            b';' => (Token::Semicolon, at + 1),
            b'\'' if starts_escape_string(bytes, at) => {
                (Token::Code, end_of_escape_string(bytes, at + 1))
            }
            quote @ (b'\'' | b'"') => (Token::Code, end_of_quoted(bytes, at + 1, quote)),
            b'$' => (Token::Code, end_of_dollar_quote(bytes, at).unwrap_or(at + 1)),
            _ => (Token::Code, at + 1),
        };
        if !visit(at, kind) {
            return;
        }
        at = next;
    }
}

/// A byte that continues an identifier or number; a `$` or quote right after one is not the
/// start of a dollar quote or of an `E''` string.
fn continues_word(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'$' || byte >= 0x80
}

/// Whether the quote at `at` opens an `E'…'` string: an `e` or `E` right before it that is not
/// the end of a longer word (`somee'x'` is the identifier `somee` and a plain string).
fn starts_escape_string(bytes: &[u8], at: usize) -> bool {
    match at.checked_sub(1).map(|before| (before, bytes[before])) {
        Some((before, b'e' | b'E')) => before == 0 || !continues_word(bytes[before - 1]),
        _ => false,
    }
}

/// The byte after the closing quote of a `'…'` or `"…"` token whose body starts at `at`; a
/// doubled quote is part of the body. Unterminated: the end of the text (PostgreSQL rejects it).
fn end_of_quoted(bytes: &[u8], mut at: usize, quote: u8) -> usize {
    while at < bytes.len() {
        if bytes[at] == quote {
            if bytes.get(at + 1) == Some(&quote) {
                at += 2;
                continue;
            }
            return at + 1;
        }
        at += 1;
    }
    bytes.len()
}

/// Like [`end_of_quoted`] for an `E'…'` body, where a backslash escapes the next byte.
fn end_of_escape_string(bytes: &[u8], mut at: usize) -> usize {
    while at < bytes.len() {
        match bytes[at] {
            b'\\' => at += 2,
            b'\'' if bytes.get(at + 1) == Some(&b'\'') => at += 2,
            b'\'' => return at + 1,
            _ => at += 1,
        }
    }
    bytes.len()
}

/// The byte after a (nested) block comment whose body starts at `at`.
fn end_of_block_comment(bytes: &[u8], mut at: usize) -> usize {
    let mut depth = 1_usize;
    while at < bytes.len() {
        if bytes[at] == b'/' && bytes.get(at + 1) == Some(&b'*') {
            depth += 1;
            at += 2;
        } else if bytes[at] == b'*' && bytes.get(at + 1) == Some(&b'/') {
            depth -= 1;
            at += 2;
            if depth == 0 {
                return at;
            }
        } else {
            at += 1;
        }
    }
    bytes.len()
}

/// If a `$tag$` delimiter starts at `at` (and is not part of a word or a `$1` parameter), the
/// byte after the matching closing delimiter, or the end of the text if there is none.
fn end_of_dollar_quote(bytes: &[u8], at: usize) -> Option<usize> {
    if at > 0 && continues_word(bytes[at - 1]) {
        return None;
    }
    let mut tag_end = at + 1;
    while tag_end < bytes.len() && bytes[tag_end] != b'$' {
        let byte = bytes[tag_end];
        let allowed = byte.is_ascii_alphabetic()
            || byte == b'_'
            || byte >= 0x80
            || (tag_end > at + 1 && byte.is_ascii_digit());
        if !allowed {
            return None;
        }
        tag_end += 1;
    }
    if tag_end >= bytes.len() {
        return None;
    }
    let delimiter = &bytes[at..=tag_end];
    let body = tag_end + 1;
    let end = bytes[body..].windows(delimiter.len()).position(|window| window == delimiter);
    Some(end.map_or(bytes.len(), |offset| body + offset + delimiter.len()))
}

fn first_top_level_semicolon(sql: &str) -> Option<usize> {
    let mut found = None;
    scan(sql, 0, |at, kind| {
        if kind == Token::Semicolon {
            found = Some(at);
        }
        found.is_none()
    });
    found
}

fn has_code_after(sql: &str, start: usize) -> bool {
    let mut code = false;
    scan(sql, start, |_, kind| {
        code = kind == Token::Code;
        !code
    });
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Some(statement)` for what is sent, `None` for a refusal.
    fn check(sql: &str, expect: Option<&str>) {
        let got = single_statement(sql).ok();
        assert_eq!(got, expect, "{sql:?}");
    }

    #[test]
    fn one_statement_is_sent_without_what_follows_its_semicolon() {
        check("SELECT 1", Some("SELECT 1"));
        check("SELECT 1;", Some("SELECT 1"));
        check("SELECT 1; ;\n -- done\n /* really */", Some("SELECT 1"));
        check("/* leading; comment */ SELECT 1", Some("/* leading; comment */ SELECT 1"));
        check("SELECT ';' AS x", Some("SELECT ';' AS x"));
        check(
            "SELECT 'it''s; fine' AS x -- trailing; comment",
            Some("SELECT 'it''s; fine' AS x -- trailing; comment"),
        );
        check("SELECT 1 AS \"x;y\"", Some("SELECT 1 AS \"x;y\""));
        check("SELECT 1 AS \"a\"\";\"", Some("SELECT 1 AS \"a\"\";\""));
        check("SELECT E'\\';' AS x", Some("SELECT E'\\';' AS x"));
        check("SELECT e'\\\\' AS x; ", Some("SELECT e'\\\\' AS x"));
        check("SELECT $$;$$ AS x", Some("SELECT $$;$$ AS x"));
        check("SELECT $a$ $$; $a$ AS x;", Some("SELECT $a$ $$; $a$ AS x"));
        check(
            "SELECT 1 /* outer /* inner; */ still; */",
            Some("SELECT 1 /* outer /* inner; */ still; */"),
        );
    }

    #[test]
    fn a_second_statement_is_refused() {
        check("select 1; drop schema shop__prod cascade", None);
        check("SELECT 1 /* ; */ ; DROP TABLE orders", None);
        check("SELECT 'a'';' AS x; DROP TABLE orders", None);
        // Without `E`, a backslash does not escape (standard_conforming_strings is on).
        check("SELECT '\\'; DROP TABLE orders; --'", None);
        // `somee` is an identifier: what follows is a plain string, not an `E''` one.
        check("SELECT somee'\\'; DROP TABLE orders; --'", None);
        // PostgreSQL ends `--` comments at a carriage return too.
        check("SELECT 1 -- comment\r; DROP TABLE orders", None);
        // A nested comment ends at its outermost `*/`.
        check("SELECT 1 /* a /* b */ c */; DROP TABLE orders", None);
        // `$1` is a parameter and `a$$` a word, not dollar quotes.
        check("SELECT $1; DROP TABLE orders; $1", None);
        check("SELECT a$$; DROP TABLE orders; $$", None);
        // An unterminated dollar quote runs to the end: sent whole, PostgreSQL rejects it.
        check("SELECT $a$ x $b$; DROP TABLE orders", Some("SELECT $a$ x $b$; DROP TABLE orders"));
        check("SELECT 1\0; DROP TABLE orders", None);
    }

    #[test]
    fn identifiers_are_double_quoted_with_quotes_doubled() {
        assert_eq!(quote_identifier("order"), "\"order\"");
        assert_eq!(quote_identifier("MixedCase"), "\"MixedCase\"");
        assert_eq!(quote_identifier("a\"b"), "\"a\"\"b\"");
    }
}
