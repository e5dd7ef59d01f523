//! The example shop project (examples/shop), embedded so `offshoot demo` needs no checkout, and
//! the feature branch the demo builds on top of it.

use offshoot_repo::write::Tree;

/// examples/shop as committed to the demo's `main`.
pub const FILES: &[(&str, &str)] = &[
    (
        "assets/ingest/fx_rates.toml",
        include_str!("../../../examples/shop/assets/ingest/fx_rates.toml"),
    ),
    (
        "assets/intermediate/int_order_payments.sql",
        include_str!("../../../examples/shop/assets/intermediate/int_order_payments.sql"),
    ),
    (
        "assets/marts/customer_lifetime_value.sql",
        include_str!("../../../examples/shop/assets/marts/customer_lifetime_value.sql"),
    ),
    (
        "assets/marts/daily_revenue.sql",
        include_str!("../../../examples/shop/assets/marts/daily_revenue.sql"),
    ),
    (
        "assets/marts/dim_customers.sql",
        include_str!("../../../examples/shop/assets/marts/dim_customers.sql"),
    ),
    (
        "assets/marts/fct_orders.sql",
        include_str!("../../../examples/shop/assets/marts/fct_orders.sql"),
    ),
    (
        "assets/marts/orders_by_country.sql",
        include_str!("../../../examples/shop/assets/marts/orders_by_country.sql"),
    ),
    (
        "assets/staging/stg_customers.sql",
        include_str!("../../../examples/shop/assets/staging/stg_customers.sql"),
    ),
    (
        "assets/staging/stg_orders.sql",
        include_str!("../../../examples/shop/assets/staging/stg_orders.sql"),
    ),
    (
        "assets/staging/stg_payments.sql",
        include_str!("../../../examples/shop/assets/staging/stg_payments.sql"),
    ),
    ("data/fx_rates.csv", include_str!("../../../examples/shop/data/fx_rates.csv")),
    ("offshoot.toml", include_str!("../../../examples/shop/offshoot.toml")),
    ("scripts/load_fx_rates.py", include_str!("../../../examples/shop/scripts/load_fx_rates.py")),
];

pub fn main_tree() -> Tree {
    FILES.iter().map(|(p, c)| (p.to_string(), c.as_bytes().to_vec())).collect()
}

/// A later commit on `main`, after the feature branch forked: merge-base comparison keeps it out
/// of the branch's change set.
pub fn main_after_fork(mut tree: Tree) -> Tree {
    let path = "assets/staging/stg_payments.sql";
    let sql = String::from_utf8_lossy(&tree[path])
        .replace("WHERE status = 'succeeded'", "WHERE status IN ('succeeded', 'settled')");
    tree.insert(path.to_owned(), sql.into_bytes());
    tree
}

/// The feature branch: a changed model, a new one, a removed one, a tag change and a
/// formatting-only edit that change tracking must not report.
pub fn feature_tree(mut tree: Tree) -> Tree {
    let edit = |tree: &mut Tree, path: &str, from: &str, to: &str| {
        let text = String::from_utf8_lossy(&tree[path]).into_owned();
        assert!(text.contains(from), "the demo edit of {path} must apply");
        tree.insert(path.to_owned(), text.replace(from, to).into_bytes());
    };
    edit(
        &mut tree,
        "assets/marts/fct_orders.sql",
        "LEFT JOIN fx_rates AS fx ON fx.currency = p.currency\n",
        "LEFT JOIN fx_rates AS fx ON fx.currency = p.currency\nWHERE p.amount_cents > 0\n",
    );
    edit(
        &mut tree,
        "assets/marts/customer_lifetime_value.sql",
        "tier = \"silver\"",
        "tier = \"gold\"",
    );
    edit(
        &mut tree,
        "assets/staging/stg_orders.sql",
        "SELECT\n    id AS order_id,",
        "-- Formatting only: change tracking ignores this edit.\nselect\n    id as order_id,",
    );
    tree.remove("assets/marts/orders_by_country.sql");
    tree.insert(
        "assets/marts/weekly_revenue.sql".to_owned(),
        b"/* offshoot
description = \"Revenue per ISO week, for the Monday report\"
tags = { layer = \"mart\", tier = \"silver\" }
*/
SELECT strftime('%Y-%W', order_date) AS week, count(*) AS orders, sum(amount_eur) AS revenue_eur
FROM fct_orders
GROUP BY 1
"
        .to_vec(),
    );
    tree
}

/// The production warehouse's source tables for the demo: deterministic, a few thousand rows.
pub const SEED_SQL: &str = "
DROP TABLE IF EXISTS raw_customers;
CREATE TABLE raw_customers AS
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300)
SELECT i AS id,
       'Customer' || i || '@Shop.example' AS email,
       CASE i % 5 WHEN 0 THEN 'DE' WHEN 1 THEN 'US' WHEN 2 THEN 'GB' WHEN 3 THEN 'CH' ELSE 'FR' END AS country,
       datetime('2024-01-01', '+' || (i % 300) || ' days') AS created_at
FROM n;
DROP TABLE IF EXISTS raw_orders;
CREATE TABLE raw_orders AS
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000)
SELECT i AS id,
       1 + (i * 7) % 300 AS customer_id,
       CASE WHEN i % 11 = 0 THEN 'cancelled' ELSE 'completed' END AS status,
       datetime('2024-03-01', '+' || (i % 270) || ' days', '+' || (i % 24) || ' hours') AS ordered_at,
       CASE i % 4 WHEN 0 THEN 'EUR' WHEN 1 THEN 'USD' WHEN 2 THEN 'GBP' ELSE 'CHF' END AS currency,
       CASE WHEN i % 97 = 0 THEN 1 ELSE 0 END AS is_test
FROM n;
DROP TABLE IF EXISTS raw_payments;
CREATE TABLE raw_payments AS
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000)
SELECT i AS id,
       i AS order_id,
       CASE i % 3 WHEN 0 THEN 'card' WHEN 1 THEN 'paypal' ELSE 'invoice' END AS method,
       CASE WHEN i % 17 = 0 THEN 0 ELSE 500 + (i * 37) % 20000 END AS amount_cents,
       CASE WHEN i % 13 = 0 THEN 'failed' WHEN i % 29 = 0 THEN 'settled' ELSE 'succeeded' END AS status
FROM n;
";
