//! The canonical text of a query: what the derived code version hashes. It erases exactly what
//! the engine ignores, so that a formatter (`sqlfluff fix`, `sqlfmt`) or a style-only edit never
//! counts as a change, and keeps everything the engine does not ignore.
//!
//! Erased: whitespace, comments and keyword case (the parser's own printing); the case of
//! unquoted identifiers and function names (PostgreSQL folds them to lower case, SQLite compares
//! them case-insensitively, and the generic dialect is treated like both); `INNER` in `INNER
//! JOIN` and `OUTER` in `LEFT/RIGHT OUTER JOIN`; `AS` before a table alias; parentheses that do
//! not change precedence (around a whole condition or select item, around a name, a literal or
//! a call, and around an operand that binds tighter than its operator); `!=` versus `<>`; the
//! operand order of `=` and `<>`.
//!
//! Kept: quoted identifiers as written, literals, the order of select columns and of `ORDER BY`
//! terms, `UNION` versus `UNION ALL`, join types, and every parenthesis that groups.
//!
//! [`VERSION`] names these rules. Derived versions are never stored or compared across Offshoot
//! versions (both sides of every diff are loaded by the running server), so a change to the rules
//! cannot make every asset look changed; the version is still hashed in, so that if that ever
//! changed the mismatch would be total and visible rather than subtle.

use std::ops::ControlFlow;

use sqlparser::ast::{
    BinaryOperator, Expr, Join, JoinOperator, Select, SelectItem, Statement, TableAlias,
    TableFactor, VisitMut, VisitorMut,
};

/// The canonicalization rules' version, part of every derived SQL code version.
pub const VERSION: &str = "sql-canonical-2";

/// [`VERSION`], or in debug builds `OFFSHOOT_TEST_CANONICAL_VERSION` when set: the tests run a
/// server as if it were upgraded to other rules, to show an upgrade marks nothing changed.
pub fn version() -> String {
    #[cfg(debug_assertions)]
    if let Ok(version) = std::env::var("OFFSHOOT_TEST_CANONICAL_VERSION") {
        return version;
    }
    VERSION.to_owned()
}

/// The canonical text of `statement` (see the module documentation).
pub fn canonical_text(statement: &Statement) -> String {
    let mut statement = statement.clone();
    let _ = statement.visit(&mut Canonicalizer);
    statement.to_string()
}

struct Canonicalizer;

impl VisitorMut for Canonicalizer {
    type Break = ();

    fn pre_visit_ident(&mut self, ident: &mut sqlparser::ast::Ident) -> ControlFlow<()> {
        if ident.quote_style.is_none() {
            ident.value = ident.value.to_lowercase();
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_select(&mut self, select: &mut Select) -> ControlFlow<()> {
        for item in &mut select.projection {
            match item {
                SelectItem::UnnamedExpr(expr) | SelectItem::ExprWithAlias { expr, .. } => {
                    strip_outer(expr)
                }
                _ => {}
            }
        }
        for expr in
            [&mut select.selection, &mut select.having, &mut select.qualify].into_iter().flatten()
        {
            strip_outer(expr);
        }
        for table in &mut select.from {
            for join in &mut table.joins {
                canonical_join(join);
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
        if let TableFactor::NestedJoin { table_with_joins, .. } = factor {
            for join in &mut table_with_joins.joins {
                canonical_join(join);
            }
        }
        if let Some(alias) = table_alias(factor) {
            alias.explicit = true;
        }
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        // Children first (post order), so comparing them below compares canonical text.
        match expr {
            Expr::Nested(inner) if is_atomic(inner) => {
                let inner = std::mem::replace(inner.as_mut(), placeholder());
                *expr = inner;
            }
            Expr::BinaryOp { left, op, right } => {
                if let Some(parent) = precedence(op) {
                    unwrap_if_tighter(left, parent, Side::Left);
                    unwrap_if_tighter(right, parent, Side::Right);
                }
                if matches!(op, BinaryOperator::Eq | BinaryOperator::NotEq)
                    && left.to_string() > right.to_string()
                {
                    std::mem::swap(left, right);
                }
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }
}

/// `JOIN` is `INNER JOIN`; `LEFT OUTER JOIN` is `LEFT JOIN`; `RIGHT OUTER JOIN` is `RIGHT JOIN`;
/// the `ON` condition loses parentheses around it.
fn canonical_join(join: &mut Join) {
    let operator = std::mem::replace(&mut join.join_operator, JoinOperator::CrossApply);
    join.join_operator = match operator {
        JoinOperator::Join(constraint) => JoinOperator::Inner(constraint),
        JoinOperator::LeftOuter(constraint) => JoinOperator::Left(constraint),
        JoinOperator::RightOuter(constraint) => JoinOperator::Right(constraint),
        other => other,
    };
    let constraint = match &mut join.join_operator {
        JoinOperator::Inner(c)
        | JoinOperator::Left(c)
        | JoinOperator::Right(c)
        | JoinOperator::FullOuter(c) => Some(c),
        _ => None,
    };
    if let Some(sqlparser::ast::JoinConstraint::On(on)) = constraint {
        strip_outer(on);
    }
}

fn table_alias(factor: &mut TableFactor) -> Option<&mut TableAlias> {
    match factor {
        TableFactor::Table { alias, .. }
        | TableFactor::Derived { alias, .. }
        | TableFactor::TableFunction { alias, .. }
        | TableFactor::Function { alias, .. }
        | TableFactor::UNNEST { alias, .. }
        | TableFactor::NestedJoin { alias, .. } => alias.as_mut(),
        _ => None,
    }
}

/// Parentheses around a whole expression (a condition, a select item) never change it.
fn strip_outer(expr: &mut Expr) {
    while let Expr::Nested(inner) = expr {
        let inner = std::mem::replace(inner.as_mut(), placeholder());
        *expr = inner;
    }
}

/// Expressions that parentheses around cannot regroup.
fn is_atomic(expr: &Expr) -> bool {
    matches!(
        expr,
        Expr::Identifier(_)
            | Expr::CompoundIdentifier(_)
            | Expr::Value(_)
            | Expr::Function(_)
            | Expr::Nested(_)
            | Expr::Cast { .. }
    )
}

#[derive(Clone, Copy, PartialEq)]
enum Side {
    Left,
    Right,
}

/// Binding strength of the operators whose parentheses can be judged; others keep theirs.
fn precedence(op: &BinaryOperator) -> Option<u8> {
    Some(match op {
        BinaryOperator::Or => 1,
        BinaryOperator::And => 2,
        BinaryOperator::Eq
        | BinaryOperator::NotEq
        | BinaryOperator::Lt
        | BinaryOperator::LtEq
        | BinaryOperator::Gt
        | BinaryOperator::GtEq => 4,
        BinaryOperator::Plus | BinaryOperator::Minus => 6,
        BinaryOperator::Multiply | BinaryOperator::Divide | BinaryOperator::Modulo => 7,
        _ => return None,
    })
}

/// Removes parentheses around `operand` of an operator binding with `parent` when they change
/// nothing: the operand binds tighter, or as tight on the left (these operators associate to
/// the left, and comparisons do not chain).
fn unwrap_if_tighter(operand: &mut Box<Expr>, parent: u8, side: Side) {
    let Expr::Nested(inner) = operand.as_mut() else { return };
    let redundant = match inner.as_ref() {
        Expr::BinaryOp { op, .. } => match precedence(op) {
            Some(child) if parent == 4 && child == 4 => false,
            Some(child) => child > parent || (child == parent && side == Side::Left),
            None => false,
        },
        other => is_atomic(other),
    };
    if redundant {
        let inner = std::mem::replace(inner.as_mut(), placeholder());
        **operand = inner;
    }
}

fn placeholder() -> Expr {
    Expr::Identifier(sqlparser::ast::Ident::new(""))
}

/// The canonical text of a Jinja-templated SQL model (dbt): the template's blocks are kept as
/// opaque tokens (whitespace inside them and `-`/`+` whitespace control normalized, `{# #}`
/// comments dropped), the SQL around them canonicalized. When the SQL with each `{{ }}` standing
/// for a name parses as one statement (blocks before and after it, like `{{ config(...) }}`, set
/// aside in order), the rules above apply in full; otherwise (a `{% if %}` inside the query)
/// token by token: whitespace, comments, keyword and identifier case, `INNER`, `OUTER`, `AS`
/// and `!=` are erased, parentheses and operand order still count.
pub fn canonical_template(text: &str, dialect: crate::Dialect) -> String {
    let dialect = crate::sql::sql_dialect(dialect);
    let dialect = dialect.as_ref();
    let pieces = template_pieces(text);
    if let Some(body) = parsed_canonical(&pieces, dialect) {
        return body;
    }
    // Blocks before the first and after the last SQL (`{{ config(...) }}`) set aside, in order.
    let is_sql = |p: &Piece| matches!(p, Piece::Sql(t) if has_tokens(t, dialect));
    if let (Some(first), Some(last)) =
        (pieces.iter().position(is_sql), pieces.iter().rposition(is_sql))
    {
        let outside = |range: &[Piece]| {
            range
                .iter()
                .filter(|p| !matches!(p, Piece::Sql(_)))
                .map(Piece::text)
                .collect::<Vec<_>>()
                .join(" ")
        };
        if let Some(body) = parsed_canonical(&pieces[first..=last], dialect) {
            return format!(
                "{}\n{body}\n{}",
                outside(&pieces[..first]),
                outside(&pieces[last + 1..])
            );
        }
    }
    canonical_tokens(&pieces, dialect)
}

/// The canonical text of `pieces` parsed as one statement with each `{{ }}` standing for a
/// name; `None` if they hold a `{% %}` or do not parse so.
fn parsed_canonical(pieces: &[Piece], dialect: &dyn sqlparser::dialect::Dialect) -> Option<String> {
    let mut sql = String::new();
    let mut expressions = Vec::new();
    for piece in pieces {
        match piece {
            Piece::Sql(text) => sql.push_str(text),
            Piece::Expression(text) => {
                sql.push_str(&format!(" offshoot_jinja_{}_ ", expressions.len()));
                expressions.push(text.clone());
            }
            Piece::Statement(_) => return None,
        }
    }
    let statements = sqlparser::parser::Parser::parse_sql(dialect, &sql).ok()?;
    let [statement] = statements.as_slice() else { return None };
    let mut text = canonical_text(statement);
    // Back to front, so `_1_` is not found inside `_11_`.
    for (index, expression) in expressions.iter().enumerate().rev() {
        text = text.replace(&format!("offshoot_jinja_{index}_"), expression);
    }
    Some(text)
}

/// Whether SQL text holds anything but whitespace and comments.
fn has_tokens(text: &str, dialect: &dyn sqlparser::dialect::Dialect) -> bool {
    match sqlparser::tokenizer::Tokenizer::new(dialect, text).tokenize() {
        Ok(tokens) => {
            tokens.iter().any(|t| !matches!(t, sqlparser::tokenizer::Token::Whitespace(_)))
        }
        Err(_) => !text.trim().is_empty(),
    }
}

enum Piece {
    Sql(String),
    /// `{{ ... }}`, normalized.
    Expression(String),
    /// `{% ... %}`, normalized.
    Statement(String),
}

impl Piece {
    fn text(&self) -> String {
        match self {
            Piece::Sql(text) => text.clone(),
            Piece::Expression(text) | Piece::Statement(text) => text.clone(),
        }
    }
}

/// Splits a template into SQL text and Jinja blocks; comments are dropped, an unterminated
/// block is SQL text (the tool reports the error).
fn template_pieces(text: &str) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find('{') {
        let close = match rest[start..].chars().nth(1) {
            Some('{') => "}}",
            Some('%') => "%}",
            Some('#') => "#}",
            _ => {
                push_sql(&mut pieces, &rest[..start + 1]);
                rest = &rest[start + 1..];
                continue;
            }
        };
        let Some(end) = rest[start + 2..].find(close) else { break };
        push_sql(&mut pieces, &rest[..start]);
        let inner = &rest[start + 2..start + 2 + end];
        let open = &rest[start..start + 2];
        match open {
            "{{" => pieces.push(Piece::Expression(format!("{{{{ {} }}}}", normalize_block(inner)))),
            "{%" => pieces.push(Piece::Statement(format!("{{% {} %}}", normalize_block(inner)))),
            _ => {} // a comment
        }
        rest = &rest[start + 2 + end + 2..];
    }
    push_sql(&mut pieces, rest);
    pieces
}

fn push_sql(pieces: &mut Vec<Piece>, text: &str) {
    if text.is_empty() {
        return;
    }
    if let Some(Piece::Sql(previous)) = pieces.last_mut() {
        previous.push_str(text);
    } else {
        pieces.push(Piece::Sql(text.to_owned()));
    }
}

/// A block's inside without whitespace control (`-`, `+`) and with whitespace outside string
/// literals collapsed to single spaces.
fn normalize_block(inner: &str) -> String {
    let inner = inner.strip_prefix(['-', '+']).unwrap_or(inner);
    let inner = inner.strip_suffix(['-', '+']).unwrap_or(inner);
    let mut out = String::with_capacity(inner.len());
    let mut quote: Option<char> = None;
    let mut pending_space = false;
    for c in inner.trim().chars() {
        match quote {
            Some(q) => {
                out.push(c);
                if c == q {
                    quote = None;
                }
            }
            None if c.is_whitespace() => pending_space = true,
            None => {
                if pending_space {
                    // No space is needed next to punctuation: `ref( 'x' )` is `ref('x')`.
                    let previous = out.chars().last();
                    let word = |c: char| c.is_alphanumeric() || c == '_' || c == '\'' || c == '"';
                    let between_words = previous.is_some_and(word) && word(c);
                    let around_punctuation =
                        previous.is_some_and(|p| !"([{,.".contains(p)) && !")]},.:([".contains(c);
                    if between_words || around_punctuation {
                        out.push(' ');
                    }
                    pending_space = false;
                }
                if c == '\'' || c == '"' {
                    quote = Some(c);
                }
                out.push(c);
            }
        }
    }
    out
}

/// Token by token, for templates whose SQL does not parse on its own.
fn canonical_tokens(pieces: &[Piece], dialect: &dyn sqlparser::dialect::Dialect) -> String {
    use sqlparser::tokenizer::{Token, Tokenizer};
    let mut out: Vec<String> = Vec::new();
    for piece in pieces {
        let Piece::Sql(text) = piece else {
            out.push(piece.text());
            continue;
        };
        let Ok(tokens) = Tokenizer::new(dialect, text).tokenize() else {
            out.push(text.split_whitespace().collect::<Vec<_>>().join(" "));
            continue;
        };
        let tokens: Vec<Token> =
            tokens.into_iter().filter(|t| !matches!(t, Token::Whitespace(_))).collect();
        for (index, token) in tokens.iter().enumerate() {
            let word = |t: Option<&Token>| match t {
                Some(Token::Word(w)) if w.quote_style.is_none() => Some(w.value.to_lowercase()),
                _ => None,
            };
            let this = word(Some(token));
            let next = word(tokens.get(index + 1));
            let previous = index.checked_sub(1).and_then(|i| word(tokens.get(i)));
            match this.as_deref() {
                Some("inner") if next.as_deref() == Some("join") => continue,
                Some("outer") if matches!(previous.as_deref(), Some("left" | "right" | "full")) => {
                    continue
                }
                Some("as") if next.is_some() => continue,
                Some(lowered) => out.push(lowered.to_owned()),
                None => out.push(token.to_string()),
            }
        }
    }
    out.join(" ")
}

#[cfg(test)]
mod tests {
    use sqlparser::dialect::{GenericDialect, PostgreSqlDialect, SQLiteDialect};
    use sqlparser::parser::Parser;

    use super::*;

    fn canonical(sql: &str) -> String {
        let dialects: [Box<dyn sqlparser::dialect::Dialect>; 3] = [
            Box::new(GenericDialect {}),
            Box::new(PostgreSqlDialect {}),
            Box::new(SQLiteDialect {}),
        ];
        let texts: Vec<String> = dialects
            .iter()
            .map(|d| {
                canonical_text(
                    &Parser::parse_sql(d.as_ref(), sql).unwrap_or_else(|e| panic!("{sql}: {e}"))[0],
                )
            })
            .collect();
        texts[0].clone()
    }

    #[test]
    fn style_only_rewrites_are_the_same_query() {
        let same = [
            ("SELECT count(*) FROM t", "select COUNT(*) from T"),
            ("SELECT Amount FROM Orders", "SELECT amount FROM orders"),
            ("SELECT CURRENT_DATE, CURRENT_TIMESTAMP", "select current_date, current_timestamp"),
            (
                "SELECT a.x FROM a JOIN b ON a.id = b.id",
                "SELECT a.x FROM a INNER JOIN b ON a.id = b.id",
            ),
            (
                "SELECT a.x FROM a LEFT JOIN b ON a.id = b.id",
                "SELECT a.x FROM a LEFT OUTER JOIN b ON a.id = b.id",
            ),
            (
                "SELECT a.x FROM a RIGHT JOIN b ON a.id = b.id",
                "SELECT a.x FROM a RIGHT OUTER JOIN b ON a.id = b.id",
            ),
            ("SELECT o.x FROM orders o", "SELECT o.x FROM orders AS o"),
            ("SELECT x FROM t WHERE (a = 1)", "SELECT x FROM t WHERE a = 1"),
            ("SELECT x FROM t WHERE a = 1 AND (b = 2)", "SELECT x FROM t WHERE a = 1 AND b = 2"),
            (
                "SELECT x FROM t WHERE (a = 1 AND b = 2) OR c = 3",
                "SELECT x FROM t WHERE a = 1 AND b = 2 OR c = 3",
            ),
            ("SELECT (a + b) AS s FROM t", "SELECT a + b AS s FROM t"),
            ("SELECT (a * b) + c FROM t", "SELECT a * b + c FROM t"),
            ("SELECT (x) FROM t", "SELECT x FROM t"),
            ("SELECT x FROM t WHERE a <> 1", "SELECT x FROM t WHERE a != 1"),
            (
                "SELECT o.x FROM o JOIN p ON p.order_id = o.order_id",
                "SELECT o.x FROM o JOIN p ON o.order_id = p.order_id",
            ),
            ("SELECT x FROM t WHERE 1 <> a", "SELECT x FROM t WHERE a != 1"),
            ("SELECT x FROM a JOIN b ON (a.id = b.id)", "SELECT x FROM a JOIN b ON a.id = b.id"),
            (
                "WITH c AS (SELECT Id FROM T) SELECT * FROM c",
                "with C as (select id from t) select * from C",
            ),
            ("SELECT sum(x) AS total FROM t", "SELECT SUM(x) total FROM t"),
        ];
        for (a, b) in same {
            assert_eq!(canonical(a), canonical(b), "{a}  vs  {b}");
        }
    }

    #[test]
    fn what_the_engine_does_not_ignore_still_counts() {
        let different = [
            ("SELECT \"Amount\" FROM t", "SELECT \"amount\" FROM t"),
            ("SELECT 'A' FROM t", "SELECT 'a' FROM t"),
            ("SELECT a, b FROM t", "SELECT b, a FROM t"),
            ("SELECT a FROM t ORDER BY a, b", "SELECT a FROM t ORDER BY b, a"),
            ("SELECT a FROM t ORDER BY a ASC", "SELECT a FROM t ORDER BY a DESC"),
            ("SELECT a FROM t UNION SELECT a FROM u", "SELECT a FROM t UNION ALL SELECT a FROM u"),
            ("SELECT x FROM a JOIN b ON a.id = b.id", "SELECT x FROM a LEFT JOIN b ON a.id = b.id"),
            ("SELECT (a + b) * c FROM t", "SELECT a + b * c FROM t"),
            ("SELECT a - (b - c) FROM t", "SELECT a - b - c FROM t"),
            (
                "SELECT x FROM t WHERE (a = 1 OR b = 2) AND c = 3",
                "SELECT x FROM t WHERE a = 1 OR b = 2 AND c = 3",
            ),
            ("SELECT x FROM t WHERE a < 1", "SELECT x FROM t WHERE 1 < a"),
            ("SELECT x FROM t WHERE a > 1", "SELECT x FROM t WHERE a > 2"),
            ("SELECT x AS y FROM t", "SELECT x AS z FROM t"),
        ];
        for (a, b) in different {
            assert_ne!(canonical(a), canonical(b), "{a}  vs  {b}");
        }
    }

    fn template(sql: &str) -> String {
        canonical_template(sql, crate::Dialect::Postgres)
    }

    #[test]
    fn templates_ignore_style_and_keep_their_jinja() {
        let same = [
            ("select * from {{ ref('a') }}", "SELECT *\nFROM {{ref('a')}}"),
            ("select * from {{ ref( 'a' ) }} as x", "select * from {{- ref('a') -}} x"),
            (
                "{{ config(materialized='table') }}\nselect a from {{ ref('t') }}",
                "{{config(materialized='table')}}\n\nSELECT A FROM {{ ref('t') }}",
            ),
            ("select a from t -- note\n{# a jinja comment #}", "select a from t"),
            (
                "select a.x from {{ ref('a') }} a join b on b.id = a.id",
                "select a.x from {{ ref('a') }} as a inner join b on a.id = b.id",
            ),
            (
                "select a from t {% if is_incremental() %} where a > 1 {% endif %}",
                "SELECT a\nFROM t\n{%- if is_incremental() -%}\n  WHERE a > 1\n{% endif %}",
            ),
            (
                "select a from t {% if x %} left outer join u as v on true {% endif %}",
                "select a from t {% if x %} LEFT JOIN u v on true {% endif %}",
            ),
        ];
        for (a, b) in same {
            assert_eq!(template(a), template(b), "{a}  vs  {b}");
        }
        let different = [
            ("select * from {{ ref('a') }}", "select * from {{ ref('b') }}"),
            (
                "{{ config(materialized='table') }} select 1",
                "{{ config(materialized='view') }} select 1",
            ),
            (
                "select a from t {% if x %} where a > 1 {% endif %}",
                "select a from t {% if x %} where a > 2 {% endif %}",
            ),
            (
                "select a from t {% if x %} where a > 1 {% endif %}",
                "select a from t where a > 1 {% if x %} {% endif %}",
            ),
            (
                "select a from t where b = {{ var('x') }}",
                "select a from t where b = {{ var('y') }}",
            ),
            ("select 'A' from t", "select 'a' from t"),
        ];
        for (a, b) in different {
            assert_ne!(template(a), template(b), "{a}  vs  {b}");
        }
    }
}
