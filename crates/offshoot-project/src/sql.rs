//! SQL assets: the optional `/* offshoot ... */` TOML header, the one SELECT, the tables it reads
//! (CTE names excluded, scope by scope) and its canonical text for the derived code version.

use std::ops::ControlFlow;

use sqlparser::ast::{ObjectNamePart, Query, Spanned, Statement, TableFactor, Visit, Visitor};
use sqlparser::dialect::{Dialect as SqlDialect, GenericDialect, PostgreSqlDialect, SQLiteDialect};
use sqlparser::parser::{Parser, ParserError};

use crate::diagnostic::{line_column, Diagnostic};
use crate::Dialect;

/// One table a query reads, as written.
#[derive(Debug, Clone, PartialEq)]
pub struct TableReference {
    /// `(value, quoted)` per dotted part.
    pub parts: Vec<(String, bool)>,
    pub line: u32,
    pub column: u32,
}

impl TableReference {
    pub fn written(&self) -> String {
        self.parts
            .iter()
            .map(|(v, quoted)| if *quoted { format!("\"{v}\"") } else { v.clone() })
            .collect::<Vec<_>>()
            .join(".")
    }
}

pub struct ParsedSql {
    /// The statement's canonical text ([`crate::canonical`]): formatting and style gone.
    pub canonical: String,
    pub references: Vec<TableReference>,
}

/// Where the header's TOML sits in the file, if there is a header.
pub struct Header<'a> {
    pub toml: &'a str,
    /// Byte offset of `toml` in the file.
    pub offset: usize,
    /// The SQL after the header, as written.
    pub body: &'a str,
}

const HEADER_OPEN: &str = "/* offshoot";

/// Splits off the header. `Err` carries a diagnostic position for an unterminated header.
pub fn split_header(text: &str) -> Result<Option<Header<'_>>, (u32, u32)> {
    let start = text.len() - text.trim_start().len();
    if !text[start..].starts_with(HEADER_OPEN) {
        return Ok(None);
    }
    let toml_start = start + HEADER_OPEN.len();
    let Some(close) = text[toml_start..].find("*/") else {
        return Err(line_column(text, start));
    };
    let toml_end = toml_start + close;
    Ok(Some(Header {
        toml: &text[toml_start..toml_end],
        offset: toml_start,
        body: &text[toml_end + 2..],
    }))
}

pub(crate) fn sql_dialect(dialect: Dialect) -> Box<dyn SqlDialect> {
    match dialect {
        Dialect::Generic => Box::new(GenericDialect {}),
        Dialect::Sqlite => Box::new(SQLiteDialect {}),
        Dialect::Postgres => Box::new(PostgreSqlDialect {}),
    }
}

/// Parses the whole file (the header is an SQL comment, so positions are the file's own).
pub fn parse(path: &str, text: &str, dialect: Dialect) -> Result<ParsedSql, Diagnostic> {
    let dialect = sql_dialect(dialect);
    let statements = Parser::parse_sql(dialect.as_ref(), text)
        .map_err(|error| parser_diagnostic(path, text, error))?;
    let statement = match statements.as_slice() {
        [] => {
            return Err(Diagnostic::new(path, (1, 1), "expected one SELECT statement, found none")
                .hint("an SQL asset is one query whose result becomes the asset's table"))
        }
        [one] => one,
        [_, second, ..] => {
            let at = second.span().start;
            return Err(Diagnostic::new(
                path,
                position(at.line, at.column),
                "expected one SELECT statement, found several",
            )
            .hint("keep one query per file; split the others into assets of their own"));
        }
    };
    if !matches!(statement, Statement::Query(_)) {
        let at = statement.span().start;
        return Err(Diagnostic::new(path, position(at.line, at.column), "expected a SELECT statement")
            .hint("write only the query (SELECT or WITH ... SELECT); Offshoot creates the table from its result"));
    }
    let mut collector = ReferenceCollector { scopes: Vec::new(), references: Vec::new() };
    let _ = statement.visit(&mut collector);
    Ok(ParsedSql {
        canonical: crate::canonical::canonical_text(statement),
        references: collector.references,
    })
}

fn position(line: u64, column: u64) -> (u32, u32) {
    (line.clamp(1, u32::MAX as u64) as u32, column.clamp(1, u32::MAX as u64) as u32)
}

/// sqlparser puts the location at the end of its message: "... at Line: 3, Column: 7".
fn parser_diagnostic(path: &str, text: &str, error: ParserError) -> Diagnostic {
    let message = match error {
        ParserError::TokenizerError(m) | ParserError::ParserError(m) => m,
        ParserError::RecursionLimitExceeded => {
            return Diagnostic::new(path, (1, 1), "SQL syntax error: the query nests too deeply")
                .hint("flatten deeply nested subqueries or expressions")
        }
    };
    let (message, at) = match message.rfind(" at Line: ") {
        Some(index) => {
            let location = &message[index + " at Line: ".len()..];
            let mut numbers =
                location.split(", Column: ").map(|n| n.trim().parse::<u64>().unwrap_or(1));
            let line = numbers.next().unwrap_or(1);
            let column = numbers.next().unwrap_or(1);
            (message[..index].to_owned(), position(line, column))
        }
        None => (message, line_column(text, text.len())),
    };
    if let Some((word, keyword, word_at)) = misspelt_keyword_before(text, at) {
        return Diagnostic::new(path, word_at, format!("SQL syntax error: `{word}` is not a keyword, so it was read as an alias; did you mean `{keyword}`? (then: {message})"))
            .hint(format!("write `{keyword}`; `offshoot validate` re-checks every file"));
    }
    Diagnostic::new(path, at, format!("SQL syntax error: {message}"))
        .hint("fix the query; `offshoot validate` re-checks every file")
}

/// Clause keywords a typo most often hides: `SELECT id FORM t` parses `FORM` as an alias of `id`
/// and fails only at `t`, so the error belongs to the word before.
const CLAUSE_KEYWORDS: [&str; 9] =
    ["SELECT", "FROM", "WHERE", "GROUP", "ORDER", "HAVING", "JOIN", "LIMIT", "UNION"];

/// The word just before the error position, when it is a near miss of a clause keyword (and not
/// the keyword itself): (the word, the keyword, its position).
fn misspelt_keyword_before(
    text: &str,
    (line, column): (u32, u32),
) -> Option<(String, &'static str, (u32, u32))> {
    let line_start: usize = text.split_inclusive('\n').take(line as usize - 1).map(str::len).sum();
    let offset = line_start
        + text[line_start..].chars().take(column as usize - 1).map(char::len_utf8).sum::<usize>();
    let before = text.get(..offset)?.trim_end();
    let start = before.rfind(|c: char| !(c.is_alphanumeric() || c == '_')).map_or(0, |i| i + 1);
    let word = &before[start..];
    let upper = word.to_uppercase();
    if word.len() < 4 || CLAUSE_KEYWORDS.contains(&upper.as_str()) {
        return None;
    }
    let sorted = |w: &str| {
        let mut letters: Vec<char> = w.chars().collect();
        letters.sort_unstable();
        letters
    };
    // One edit, or two letters swapped (`FORM`, `GROPU`): Levenshtein counts a swap as two.
    let near = |keyword: &str| {
        let distance = crate::loader::edit_distance(keyword, &upper);
        distance == 1 || (distance == 2 && sorted(keyword) == sorted(&upper))
    };
    let keyword = CLAUSE_KEYWORDS.into_iter().find(|k| near(k))?;
    Some((word.to_owned(), keyword, line_column(text, start)))
}

struct ReferenceCollector {
    /// CTE names (lower-cased) in scope, innermost last.
    scopes: Vec<Vec<String>>,
    references: Vec<TableReference>,
}

impl Visitor for ReferenceCollector {
    type Break = ();

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        let names = query
            .with
            .iter()
            .flat_map(|with| with.cte_tables.iter())
            .map(|cte| cte.alias.name.value.to_lowercase())
            .collect();
        self.scopes.push(names);
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, _query: &Query) -> ControlFlow<()> {
        self.scopes.pop();
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
        // Table-valued functions (`generate_series(1, 3)`) carry args and are not tables.
        let TableFactor::Table { name, args: None, .. } = factor else {
            return ControlFlow::Continue(());
        };
        let parts: Vec<(String, bool)> = name
            .0
            .iter()
            .filter_map(|part| match part {
                ObjectNamePart::Identifier(ident) => {
                    Some((ident.value.clone(), ident.quote_style.is_some()))
                }
                ObjectNamePart::Function(_) => None,
            })
            .collect();
        if let [(single, _)] = parts.as_slice() {
            let lowered = single.to_lowercase();
            if self.scopes.iter().any(|scope| scope.contains(&lowered)) {
                return ControlFlow::Continue(());
            }
        }
        if parts.is_empty() {
            return ControlFlow::Continue(());
        }
        let start = name.span().start;
        let (line, column) = position(start.line, start.column);
        self.references.push(TableReference { parts, line, column });
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests {
    use expect_test::{expect, Expect};

    use super::*;

    fn check_references(sql: &str, expect: Expect) {
        let parsed = parse("a.sql", sql, Dialect::Generic).expect("valid SQL");
        let refs: Vec<String> = parsed
            .references
            .iter()
            .map(|r| format!("{}@{}:{}", r.written(), r.line, r.column))
            .collect();
        expect.assert_eq(&refs.join(" "));
    }

    #[test]
    fn references_skip_cte_names_in_scope() {
        check_references(
            "select * from orders o join customers c on o.id = c.id",
            expect!["orders@1:15 customers@1:29"],
        );
        check_references(
            "with recent as (select * from orders) select * from recent join recent r2 using (id)",
            expect!["orders@1:31"],
        );
        // A CTE name is only a CTE inside its WITH: the subquery's `payments` is a table.
        check_references(
            "select * from (with payments as (select 1) select * from payments) p join payments q on true",
            expect!["payments@1:75"],
        );
        check_references(
            "select * from main.\"Orders\", generate_series(1, 3)",
            expect![[r#"main."Orders"@1:15"#]],
        );
        check_references(
            "select (select max(x) from a where a.id in (select id from b)) from c",
            expect!["a@1:28 b@1:60 c@1:69"],
        );
        check_references("WITH Upper AS (SELECT 1) SELECT * FROM upper", expect![""]);
    }

    #[test]
    fn canonical_text_ignores_formatting() {
        let a = parse("a.sql", "select a,  b -- note\nfrom   t where x=1", Dialect::Generic)
            .expect("valid");
        let b = parse("a.sql", "SELECT a, b /* other */ FROM t WHERE x = 1\n", Dialect::Generic)
            .expect("valid");
        assert_eq!(a.canonical, b.canonical);
        let c = parse("a.sql", "SELECT a, b FROM t WHERE x = 2", Dialect::Generic).expect("valid");
        assert_ne!(a.canonical, c.canonical);
    }

    fn check_error(sql: &str, expect: Expect) {
        let error = parse("a.sql", sql, Dialect::Generic).err().expect("an error");
        expect.assert_eq(&error.to_string());
    }

    #[test]
    fn errors_carry_positions() {
        check_error(
            "select a from\nwhere x",
            expect![[r#"
            a.sql:2:1: error: SQL syntax error: Expected: table name, found: where
              = hint: fix the query; `offshoot validate` re-checks every file"#]],
        );
        check_error(
            "select 1; select 2",
            expect![[r#"
            a.sql:1:11: error: expected one SELECT statement, found several
              = hint: keep one query per file; split the others into assets of their own"#]],
        );
        check_error(
            "drop table orders",
            expect![[r#"
            a.sql:1:1: error: expected a SELECT statement
              = hint: write only the query (SELECT or WITH ... SELECT); Offshoot creates the table from its result"#]],
        );
        check_error(
            "-- nothing",
            expect![[r#"
            a.sql:1:1: error: expected one SELECT statement, found none
              = hint: an SQL asset is one query whose result becomes the asset's table"#]],
        );
        check_error(
            "SELECT id\nFORM raw_users",
            expect![[r#"
            a.sql:2:1: error: SQL syntax error: `FORM` is not a keyword, so it was read as an alias; did you mean `FROM`? (then: Expected: end of statement, found: raw_users)
              = hint: write `FROM`; `offshoot validate` re-checks every file"#]],
        );
        check_error(
            "select a, b from t\nwehre a > 1",
            expect![[r#"
            a.sql:2:1: error: SQL syntax error: `wehre` is not a keyword, so it was read as an alias; did you mean `WHERE`? (then: Expected: end of statement, found: a)
              = hint: write `WHERE`; `offshoot validate` re-checks every file"#]],
        );
        check_error(
            "select 'unterminated",
            expect![[r#"
            a.sql:1:8: error: SQL syntax error: Unterminated string literal
              = hint: fix the query; `offshoot validate` re-checks every file"#]],
        );
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let sql = format!("select {}1{}", "(".repeat(5000), ")".repeat(5000));
        assert!(parse("a.sql", &sql, Dialect::Generic).is_err());
    }
}
