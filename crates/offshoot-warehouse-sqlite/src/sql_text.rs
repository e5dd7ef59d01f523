//! SQL text handling that SQLite's own API does not give us through sqlx: quoting identifiers and
//! making sure an asset's SQL is exactly one statement before it is spliced into ours.
//!
//! Why a guard is needed: sqlx runs *every* statement of a query string, one after the other. A
//! branch's select written as `select 1; detach prod; attach 'prod.db' as prod; ...` would otherwise
//! re-attach production read-write. Embedded after `CREATE TABLE … AS `, the first statement can
//! only be a select; the guard refuses anything after the first top-level `;`.
//!
//! The scan mirrors the token rules of SQLite's tokenizer (`tokenize.c`) for what can hide a `;`:
//! `'…'` strings (`''` inside), `"…"` and `` `…` `` identifiers (doubled quote inside), `[…]`
//! identifiers, `-- …` line comments and `/* … */` comments (an unterminated one runs to the end).
//! That is all it needs: it does not parse SQL, and it errs on the side of refusing.

use offshoot_warehouse::{WarehouseError, WarehouseResult};

/// `name` as a double-quoted SQLite identifier, embedded quotes doubled.
pub(crate) fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The one statement in `sql`, without a trailing `;` and what follows it (only blanks and
/// comments may follow). Refuses a second statement and NUL characters (SQLite stops reading at a
/// NUL, sqlx carries on after it).
pub(crate) fn single_statement(sql: &str) -> WarehouseResult<&str> {
    if sql.contains('\0') {
        return Err(WarehouseError::Refused("the SQL contains a NUL character".to_owned()));
    }
    let Some(end) = first_top_level_semicolon(sql, 0) else {
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

/// What a byte position of SQL text belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Token {
    /// Whitespace or a comment.
    Blank,
    Semicolon,
    /// Anything else: a keyword, an operator, a literal, a quoted identifier.
    Code,
}

/// Calls `visit` with each token's start byte and kind, from `start` on, until it returns false.
fn scan(sql: &str, start: usize, mut visit: impl FnMut(usize, Token) -> bool) {
    let bytes = sql.as_bytes();
    let mut at = start;
    while at < bytes.len() {
        let (kind, next) = match bytes[at] {
            b' ' | b'\t' | b'\n' | b'\x0c' | b'\r' => (Token::Blank, at + 1),
            b'-' if bytes.get(at + 1) == Some(&b'-') => {
                let end = bytes[at..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(bytes.len(), |offset| at + offset + 1);
                (Token::Blank, end)
            }
            b'/' if bytes.get(at + 1) == Some(&b'*') => {
                let end = find(bytes, at + 2, b"*/").map_or(bytes.len(), |offset| offset + 2);
                (Token::Blank, end)
            }
            b';' => (Token::Semicolon, at + 1),
            quote @ (b'\'' | b'"' | b'`') => (Token::Code, end_of_quoted(bytes, at + 1, quote)),
            b'[' => {
                let end = bytes[at..]
                    .iter()
                    .position(|&b| b == b']')
                    .map_or(bytes.len(), |offset| at + offset + 1);
                (Token::Code, end)
            }
            _ => (Token::Code, at + 1),
        };
        if !visit(at, kind) {
            return;
        }
        at = next;
    }
}

/// The byte after the closing `quote` of a quoted token whose body starts at `at`; a doubled
/// quote is part of the body. Unterminated: the end of the text (SQLite rejects it).
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

fn find(bytes: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    bytes
        .get(from..)?
        .windows(needle.len())
        .position(|window| window == needle)
        .map(|offset| from + offset)
}

fn first_top_level_semicolon(sql: &str, start: usize) -> Option<usize> {
    let mut found = None;
    scan(sql, start, |at, kind| {
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
