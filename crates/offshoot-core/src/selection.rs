//! The selection language, a Dagster-compatible subset:
//!
//! ```text
//! key:orders   key:stg_*   group:marts   tag:tier=gold   tag:pii   kind:sql   kind:dbt
//! changed_in_branch:ANY   changed_in_branch:CODE_VERSION   orders (a bare key)
//! +sel  2+sel  sel+  sel+1   a and b   a or b   not a   (a or b) and not c
//! ```
//! Values may be double-quoted (`key:"orders"`). Evaluation runs on a head snapshot and the change
//! set against its base; removed assets are not in head, so nothing selects them.

use std::collections::BTreeSet;
use std::fmt;

use crate::graph;
use crate::{AssetKey, ChangeReason, ChangeSet, Snapshot};

/// A parsed selection.
#[derive(Debug, Clone, PartialEq)]
pub enum Selection {
    Key(String),
    Group(String),
    Tag {
        key: String,
        value: Option<String>,
    },
    Kind(String),
    /// `None` is ANY.
    ChangedInBranch(Option<ChangeReason>),
    /// Only with `changed_in_branch:IMPACTED`.
    Impacted,
    Upstream {
        inner: Box<Selection>,
        depth: Option<u32>,
    },
    Downstream {
        inner: Box<Selection>,
        depth: Option<u32>,
    },
    And(Box<Selection>, Box<Selection>),
    Or(Box<Selection>, Box<Selection>),
    Not(Box<Selection>),
}

/// A selection that does not parse: `column` is 1-based, in characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("selection error at column {column}: {message}")]
pub struct SelectionError {
    pub column: usize,
    pub message: String,
}

impl SelectionError {
    /// The input with a caret under the offending column, for terminals.
    pub fn render(&self, input: &str) -> String {
        format!("{self}\n  {input}\n  {}^", " ".repeat(self.column.saturating_sub(1)))
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Quoted(String),
    Colon,
    Plus,
    Number(u32),
    Open,
    Close,
}

struct Lexed {
    token: Token,
    column: usize,
}

const MAX_LENGTH: usize = 10_000;
const MAX_DEPTH: usize = 64;

fn lex(input: &str) -> Result<Vec<Lexed>, SelectionError> {
    let chars: Vec<char> = input.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    let is_word = |c: char| c.is_alphanumeric() || matches!(c, '_' | '*' | '=' | '-' | '.' | '/');
    while i < chars.len() {
        let c = chars[i];
        let column = i + 1;
        let token = match c {
            c if c.is_whitespace() => {
                i += 1;
                continue;
            }
            ':' => Token::Colon,
            '+' => Token::Plus,
            '(' => Token::Open,
            ')' => Token::Close,
            '"' => {
                let mut value = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => {
                            return Err(SelectionError {
                                column,
                                message: "unterminated quoted value".into(),
                            })
                        }
                        Some('"') => break,
                        Some('\\') if chars.get(i + 1).is_some() => {
                            value.push(chars[i + 1]);
                            i += 2;
                        }
                        Some(c) => {
                            value.push(*c);
                            i += 1;
                        }
                    }
                }
                tokens.push(Lexed { token: Token::Quoted(value), column });
                i += 1;
                continue;
            }
            c if is_word(c) => {
                let start = i;
                while i < chars.len() && is_word(chars[i]) {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let token = match word.parse::<u32>() {
                    Ok(n) if word.chars().all(|c| c.is_ascii_digit()) => Token::Number(n),
                    _ => Token::Word(word),
                };
                tokens.push(Lexed { token, column });
                continue;
            }
            other => {
                return Err(SelectionError {
                    column,
                    message: format!("unexpected character `{other}`"),
                });
            }
        };
        tokens.push(Lexed { token, column });
        i += 1;
    }
    Ok(tokens)
}

struct Parser {
    tokens: Vec<Lexed>,
    position: usize,
    end_column: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.position).map(|t| &t.token)
    }

    fn column(&self) -> usize {
        self.tokens.get(self.position).map_or(self.end_column, |t| t.column)
    }

    fn error<T>(&self, message: impl Into<String>) -> Result<T, SelectionError> {
        Err(SelectionError { column: self.column(), message: message.into() })
    }

    fn is_keyword(&self, keyword: &str) -> bool {
        matches!(self.peek(), Some(Token::Word(w)) if w.eq_ignore_ascii_case(keyword))
            && !matches!(self.tokens.get(self.position + 1).map(|t| &t.token), Some(Token::Colon))
    }

    fn or(&mut self) -> Result<Selection, SelectionError> {
        let mut left = self.and()?;
        while self.is_keyword("or") {
            self.position += 1;
            let right = self.and()?;
            left = Selection::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Selection, SelectionError> {
        let mut left = self.not()?;
        while self.is_keyword("and") {
            self.position += 1;
            let right = self.not()?;
            left = Selection::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn not(&mut self) -> Result<Selection, SelectionError> {
        if self.is_keyword("not") {
            self.position += 1;
            self.enter()?;
            let inner = self.not()?;
            self.depth -= 1;
            return Ok(Selection::Not(Box::new(inner)));
        }
        self.traversal()
    }

    fn enter(&mut self) -> Result<(), SelectionError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return self.error(format!("the selection nests deeper than {MAX_DEPTH} levels"));
        }
        Ok(())
    }

    /// `[N]+ primary +[N]`
    fn traversal(&mut self) -> Result<Selection, SelectionError> {
        let mut upstream = None;
        if let (Some(Token::Number(n)), Some(Token::Plus)) =
            (self.peek(), self.tokens.get(self.position + 1).map(|t| &t.token))
        {
            upstream = Some(Some(*n));
            self.position += 2;
        } else if self.peek() == Some(&Token::Plus) {
            upstream = Some(None);
            self.position += 1;
        }
        let mut selection = self.primary()?;
        if let Some(depth) = upstream {
            selection = Selection::Upstream { inner: Box::new(selection), depth };
        }
        if self.peek() == Some(&Token::Plus) {
            self.position += 1;
            let depth = match self.peek() {
                Some(Token::Number(n)) => {
                    let n = *n;
                    self.position += 1;
                    Some(n)
                }
                _ => None,
            };
            selection = Selection::Downstream { inner: Box::new(selection), depth };
        }
        Ok(selection)
    }

    fn primary(&mut self) -> Result<Selection, SelectionError> {
        match self.peek().cloned() {
            Some(Token::Open) => {
                let open = self.column();
                self.position += 1;
                self.enter()?;
                let inner = self.or()?;
                self.depth -= 1;
                if self.peek() != Some(&Token::Close) {
                    return self.error(format!("expected `)` to close the `(` at column {open}"));
                }
                self.position += 1;
                Ok(inner)
            }
            Some(Token::Word(word)) | Some(Token::Quoted(word)) => {
                let word_column = self.column();
                self.position += 1;
                if self.peek() != Some(&Token::Colon) {
                    return Ok(Selection::Key(word));
                }
                self.position += 1;
                let value_column = self.column();
                let value = match self.peek().cloned() {
                    Some(Token::Word(v)) | Some(Token::Quoted(v)) => v,
                    Some(Token::Number(n)) => n.to_string(),
                    _ => return self.error(format!("expected a value after `{word}:`")),
                };
                self.position += 1;
                attribute(&word, value, word_column, value_column)
            }
            Some(Token::Close) => self.error("unexpected `)`"),
            Some(Token::Plus) => {
                self.error("unexpected `+`: write it right before or after a selection")
            }
            Some(Token::Colon) => self.error("unexpected `:`: write `attribute:value`"),
            Some(Token::Number(n)) => Ok(Selection::Key(n.to_string())),
            None => self.error("expected a selection"),
        }
    }
}

fn attribute(
    name: &str,
    value: String,
    name_column: usize,
    value_column: usize,
) -> Result<Selection, SelectionError> {
    match name {
        "key" => Ok(Selection::Key(value)),
        "group" => Ok(Selection::Group(value)),
        "kind" => Ok(Selection::Kind(value)),
        "tag" => Ok(match value.split_once('=') {
            Some((key, value)) => {
                Selection::Tag { key: key.to_owned(), value: Some(value.to_owned()) }
            }
            None => Selection::Tag { key: value, value: None },
        }),
        "changed_in_branch" => {
            if value.eq_ignore_ascii_case("ANY") {
                Ok(Selection::ChangedInBranch(None))
            } else if value.eq_ignore_ascii_case("IMPACTED") {
                Ok(Selection::Impacted)
            } else if let Some(reason) = ChangeReason::parse(&value) {
                Ok(Selection::ChangedInBranch(Some(reason)))
            } else {
                let names: Vec<&str> = ChangeReason::ALL.iter().map(|r| r.as_str()).collect();
                Err(SelectionError {
                    column: value_column,
                    message: format!(
                        "unknown change reason `{value}`; use ANY, IMPACTED or one of {}",
                        names.join(", ")
                    ),
                })
            }
        }
        other => Err(SelectionError {
            column: name_column,
            message: format!(
                "unknown attribute `{other}`; use key, group, tag, kind or changed_in_branch"
            ),
        }),
    }
}

impl Selection {
    pub fn parse(input: &str) -> Result<Selection, SelectionError> {
        if input.chars().count() > MAX_LENGTH {
            return Err(SelectionError {
                column: MAX_LENGTH + 1,
                message: format!("a selection is at most {MAX_LENGTH} characters"),
            });
        }
        let tokens = lex(input)?;
        let mut parser =
            Parser { tokens, position: 0, end_column: input.chars().count() + 1, depth: 0 };
        let selection = parser.or()?;
        if parser.position < parser.tokens.len() {
            return parser.error("expected `and`, `or` or the end of the selection");
        }
        Ok(selection)
    }

    /// The keys of `head` this selection names, given the change set of head against its base.
    pub fn evaluate(&self, head: &Snapshot, changes: &ChangeSet) -> BTreeSet<AssetKey> {
        let filter = |keep: &dyn Fn(&crate::Asset) -> bool| -> BTreeSet<AssetKey> {
            head.assets().filter(|a| keep(a)).map(|a| a.key.clone()).collect()
        };
        match self {
            Selection::Key(pattern) => filter(&|a| glob_match(pattern, a.key.as_str())),
            Selection::Group(group) => filter(&|a| glob_match(group, &a.group)),
            Selection::Kind(kind) => {
                filter(&|a| a.kind.as_str() == kind || a.kinds.contains(kind.as_str()))
            }
            Selection::Tag { key, value } => filter(&|a| match (a.tags.get(key), value) {
                (Some(actual), Some(wanted)) => actual == wanted,
                (Some(_), None) => true,
                (None, _) => false,
            }),
            Selection::ChangedInBranch(reason) => changes
                .changes
                .iter()
                .filter(|c| head.contains(&c.key))
                .filter(|c| reason.is_none_or(|r| c.reasons.contains(&r)))
                .map(|c| c.key.clone())
                .collect(),
            Selection::Impacted => changes.impacted.iter().map(|i| i.key.clone()).collect(),
            Selection::Upstream { inner, depth } => {
                graph::reachable(inner.evaluate(head, changes), *depth, |k| head.upstream_of(k))
            }
            Selection::Downstream { inner, depth } => {
                graph::reachable(inner.evaluate(head, changes), *depth, |k| {
                    head.downstream_of(k).iter()
                })
            }
            Selection::And(a, b) => {
                let left = a.evaluate(head, changes);
                left.intersection(&b.evaluate(head, changes)).cloned().collect()
            }
            Selection::Or(a, b) => {
                let mut left = a.evaluate(head, changes);
                left.extend(b.evaluate(head, changes));
                left
            }
            Selection::Not(inner) => {
                let excluded = inner.evaluate(head, changes);
                filter(&|a| !excluded.contains(&a.key))
            }
        }
    }
}

/// `*` matches any run of characters; everything else matches itself.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    if !pattern.contains('*') {
        return pattern == text;
    }
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    true
}

impl fmt::Display for Selection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let depth = |d: &Option<u32>| d.map(|d| d.to_string()).unwrap_or_default();
        match self {
            Selection::Key(k) => write!(f, "key:{k}"),
            Selection::Group(g) => write!(f, "group:{g}"),
            Selection::Kind(k) => write!(f, "kind:{k}"),
            Selection::Tag { key, value: Some(v) } => write!(f, "tag:{key}={v}"),
            Selection::Tag { key, value: None } => write!(f, "tag:{key}"),
            Selection::ChangedInBranch(None) => write!(f, "changed_in_branch:ANY"),
            Selection::ChangedInBranch(Some(r)) => write!(f, "changed_in_branch:{r}"),
            Selection::Impacted => write!(f, "changed_in_branch:IMPACTED"),
            Selection::Upstream { inner, depth: d } => write!(f, "{}+({inner})", depth(d)),
            Selection::Downstream { inner, depth: d } => write!(f, "({inner})+{}", depth(d)),
            Selection::And(a, b) => write!(f, "({a} and {b})"),
            Selection::Or(a, b) => write!(f, "({a} or {b})"),
            Selection::Not(inner) => write!(f, "not ({inner})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use expect_test::{expect, Expect};

    use super::*;

    fn check(input: &str, expect: Expect) {
        let actual = match Selection::parse(input) {
            Ok(selection) => selection.to_string(),
            Err(error) => error.render(input),
        };
        expect.assert_eq(&actual);
    }

    #[test]
    fn parses_attributes_and_operators() {
        check("changed_in_branch:ANY+", expect!["(changed_in_branch:ANY)+"]);
        check("changed_in_branch:\"ANY\"", expect!["changed_in_branch:ANY"]);
        check("+key:orders", expect!["+(key:orders)"]);
        check("2+key:orders+1", expect!["(2+(key:orders))+1"]);
        check("orders", expect!["key:orders"]);
        check("key:stg_* and not tag:pii", expect!["(key:stg_* and not (tag:pii))"]);
        check(
            "group:marts or tag:tier=gold and kind:sql",
            expect!["(group:marts or (tag:tier=gold and kind:sql))"],
        );
        check(
            "(group:a or group:b) and changed_in_branch:code_version",
            expect!["((group:a or group:b) and changed_in_branch:CODE_VERSION)"],
        );
        check("key:and", expect!["key:and"]);
    }

    #[test]
    fn errors_point_at_the_position() {
        check(
            "changed_in_branch:SOMETHING",
            expect![[r#"
            selection error at column 19: unknown change reason `SOMETHING`; use ANY, IMPACTED or one of NEW, REMOVED, CODE_VERSION, DEPENDENCIES, PARTITIONS_DEFINITION, TAGS, METADATA
              changed_in_branch:SOMETHING
                                ^"#]],
        );
        check(
            "key:a and",
            expect![[r#"
            selection error at column 10: expected a selection
              key:a and
                       ^"#]],
        );
        check(
            "(key:a or key:b",
            expect![[r#"
            selection error at column 16: expected `)` to close the `(` at column 1
              (key:a or key:b
                             ^"#]],
        );
        check(
            "colour:red",
            expect![[r#"
            selection error at column 1: unknown attribute `colour`; use key, group, tag, kind or changed_in_branch
              colour:red
              ^"#]],
        );
        check(
            "key:a key:b",
            expect![[r#"
            selection error at column 7: expected `and`, `or` or the end of the selection
              key:a key:b
                    ^"#]],
        );
        check(
            "key:\"open",
            expect![[r#"
            selection error at column 5: unterminated quoted value
              key:"open
                  ^"#]],
        );
        check(
            "key:a;drop",
            expect![[r#"
            selection error at column 6: unexpected character `;`
              key:a;drop
                   ^"#]],
        );
    }

    #[test]
    fn hostile_input_never_panics() {
        for input in [
            "", "(", ")", "+", "++", "+)", "not", "not not", "key:", ":", "1+", "1+1+", "\"",
            "é:é", "((((", "a+b",
        ] {
            let _ = Selection::parse(input);
        }
        assert!(Selection::parse(&"(".repeat(10_000)).is_err());
        assert!(Selection::parse(&"not ".repeat(1_000)).is_err());
    }

    #[test]
    fn globs() {
        assert!(glob_match("stg_*", "stg_orders"));
        assert!(glob_match("*orders", "stg_orders"));
        assert!(glob_match("s*o*s", "stg_orders"));
        assert!(!glob_match("s*x*s", "stg_orders"));
        assert!(!glob_match("ab*ba", "aba"));
    }
}
