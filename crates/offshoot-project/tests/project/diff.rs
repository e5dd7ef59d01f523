//! Change tracking: one `check(before, after, expect)` per reason and per edge case.

use std::fmt::Write;

use expect_test::{expect, Expect};
use offshoot_core::{diff, ChangeSet};

use crate::load_ok;

fn render(changes: &ChangeSet) -> String {
    let mut out = String::new();
    for change in &changes.changes {
        let reasons: Vec<&str> = change.reasons.iter().map(|r| r.as_str()).collect();
        let _ = writeln!(out, "{} {}", change.key, reasons.join(","));
        let d = &change.details;
        if let Some(deps) = &d.dependencies {
            let _ = writeln!(out, "  deps +{:?} -{:?}", deps.added, deps.removed);
        }
        if let Some((old, new)) = &d.partitions {
            let show = |p: &Option<offshoot_core::PartitionsDefinition>| {
                p.as_ref().map_or("none".to_owned(), |p| p.to_string())
            };
            let _ = writeln!(out, "  partitions {} => {}", show(old), show(new));
        }
        for (label, map) in [("tags", &d.tags), ("metadata", &d.metadata)] {
            if let Some(map) = map {
                let _ = writeln!(
                    out,
                    "  {label} +{:?} ~{:?} -{:?}",
                    map.added, map.changed, map.removed
                );
            }
        }
        if let Some(code) = &d.code {
            let diff = code.unified_diff("base", "head");
            let changed: Vec<&str> = diff
                .lines()
                .filter(|l| {
                    (l.starts_with('+') || l.starts_with('-'))
                        && !l.starts_with("+++")
                        && !l.starts_with("---")
                })
                .collect();
            let _ = writeln!(out, "  code {}", changed.join(" | "));
        }
    }
    for impacted in &changes.impacted {
        let path: Vec<&str> = impacted.path.iter().map(|k| k.as_str()).collect();
        let _ = writeln!(out, "{} IMPACTED via {}", impacted.key, path.join(" -> "));
    }
    out
}

fn check(before: &[(&str, &str)], after: &[(&str, &str)], expect: Expect) {
    let base = load_ok(before);
    let head = load_ok(after);
    expect.assert_eq(&render(&diff(&base.snapshot, &head.snapshot)));
}

const ORDERS: &str = "SELECT id, customer_id FROM raw_orders";
const CUSTOMERS: &str = "SELECT id FROM raw_customers";
const REVENUE: &str = "SELECT customer_id, count(*) AS n FROM orders GROUP BY customer_id";

#[test]
fn identical_projects_have_no_changes() {
    check(&[("assets/orders.sql", ORDERS)], &[("assets/orders.sql", ORDERS)], expect![""]);
}

#[test]
fn formatting_comments_and_keyword_case_are_not_changes() {
    check(
        &[("assets/orders.sql", "SELECT id, customer_id FROM raw_orders")],
        &[(
            "assets/orders.sql",
            "-- the orders\nselect\n    id,\n    customer_id /* who */\nfrom raw_orders\n",
        )],
        expect![""],
    );
}

#[test]
fn new_and_removed() {
    check(
        &[("assets/orders.sql", ORDERS)],
        &[("assets/customers.sql", CUSTOMERS)],
        expect![[r#"
            customers NEW
            orders REMOVED
        "#]],
    );
}

#[test]
fn a_rename_is_removed_plus_new() {
    check(
        &[("assets/orders.sql", ORDERS), ("assets/revenue.sql", REVENUE)],
        &[
            ("assets/orders_v2.sql", ORDERS),
            ("assets/revenue.sql", &REVENUE.replace("orders", "orders_v2")),
        ],
        expect![[r#"
            orders REMOVED
            orders_v2 NEW
            revenue CODE_VERSION,DEPENDENCIES
              deps +["orders_v2"] -["orders"]
              code -SELECT customer_id, count(*) AS n FROM orders GROUP BY customer_id | +SELECT customer_id, count(*) AS n FROM orders_v2 GROUP BY customer_id
        "#]],
    );
}

#[test]
fn code_version_and_impacted_downstream_with_path() {
    let top = "SELECT customer_id, n FROM revenue WHERE n > 1";
    check(
        &[("assets/orders.sql", ORDERS), ("assets/revenue.sql", REVENUE), ("assets/top.sql", top)],
        &[
            ("assets/orders.sql", "SELECT id, customer_id FROM raw_orders WHERE id > 0"),
            ("assets/revenue.sql", REVENUE),
            ("assets/top.sql", top),
        ],
        expect![[r#"
            orders CODE_VERSION
              code -SELECT id, customer_id FROM raw_orders | +SELECT id, customer_id FROM raw_orders WHERE id > 0
            revenue IMPACTED via orders -> revenue
            top IMPACTED via orders -> revenue -> top
        "#]],
    );
}

#[test]
fn explicit_code_version_wins() {
    let v1 = "/* offshoot\ncode_version = \"1\"\n*/\nSELECT id FROM raw_orders";
    let v1_edited = "/* offshoot\ncode_version = \"1\"\n*/\nSELECT id, 2 AS two FROM raw_orders";
    let v2 = "/* offshoot\ncode_version = \"2\"\n*/\nSELECT id, 2 AS two FROM raw_orders";
    check(&[("assets/orders.sql", v1)], &[("assets/orders.sql", v1_edited)], expect![""]);
    check(
        &[("assets/orders.sql", v1)],
        &[("assets/orders.sql", v2)],
        expect![[r#"
            orders CODE_VERSION
              code -SELECT id FROM raw_orders | +SELECT id, 2 AS two FROM raw_orders
        "#]],
    );
}

#[test]
fn dependencies_tags_metadata_and_partitions() {
    let before = "/* offshoot\ntags = { tier = \"gold\", pii = \"no\" }\nmetadata = { owner = \"ana\", sla = 6 }\n*/\nSELECT id FROM raw_orders";
    let after = "/* offshoot\ntags = { tier = \"silver\", team = \"growth\" }\nmetadata = { owner = \"ana\", sla = 4 }\ndeps = [\"raw_customers\"]\npartitions = { type = \"daily\", start = \"2024-01-01\" }\n*/\nSELECT id FROM raw_orders";
    check(
        &[("assets/orders.sql", before)],
        &[("assets/orders.sql", after)],
        expect![[r#"
            orders DEPENDENCIES,PARTITIONS_DEFINITION,TAGS,METADATA
              deps +["raw_customers"] -[]
              partitions none => daily from 2024-01-01
              tags +{"team": "growth"} ~{"tier": ("gold", "silver")} -{"pii": "no"}
              metadata +{} ~{"sla": ("6", "4")} -{}
        "#]],
    );
}

#[test]
fn static_partition_keys_changes() {
    let p = |keys: &str| {
        format!("/* offshoot\npartitions = {{ type = \"static\", keys = [{keys}] }}\n*/\nSELECT id FROM raw_orders")
    };
    check(
        &[("assets/orders.sql", &p("\"eu\", \"us\""))],
        &[("assets/orders.sql", &p("\"eu\", \"us\", \"apac\""))],
        expect![[r#"
            orders PARTITIONS_DEFINITION
              partitions static [eu, us] => static [eu, us, apac]
        "#]],
    );
}

#[test]
fn command_assets_change_with_their_inputs() {
    let asset = "command = \"python3 load.py\"\ninputs = [\"load.py\"]\n";
    check(
        &[("assets/rates.toml", asset), ("load.py", "print(1)\n")],
        &[("assets/rates.toml", asset), ("load.py", "print(2)\n")],
        expect![[r#"
            rates CODE_VERSION
              code 
        "#]],
    );
    check(
        &[("assets/rates.toml", asset), ("load.py", "print(1)\n")],
        &[
            (
                "assets/rates.toml",
                "command = \"python3 load.py\"  # comment only\ninputs = [\"load.py\"]\n",
            ),
            ("load.py", "print(1)\n"),
        ],
        expect![""],
    );
}

#[test]
fn tag_changes_are_tracked_but_impact_nothing() {
    let manifest_before =
        "[project]\nname = \"t\"\n[sources.raw_orders]\ntags = { owner = \"ops\" }\n";
    let manifest_after =
        "[project]\nname = \"t\"\n[sources.raw_orders]\ntags = { owner = \"payments\" }\n";
    check(
        &[("offshoot.toml", manifest_before), ("assets/orders.sql", "SELECT id FROM raw_orders")],
        &[("offshoot.toml", manifest_after), ("assets/orders.sql", "SELECT id FROM raw_orders")],
        expect![[r#"
            raw_orders TAGS
              tags +{} ~{"owner": ("ops", "payments")} -{}
        "#]],
    );
}
