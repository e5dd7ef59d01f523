"""Staging: one cleaned table per raw table."""

import dagster as dg

from dagster_shop.warehouse import Warehouse


@dg.asset(
    deps=[["raw", "orders"]],
    group_name="staging",
    owners=["team:analytics"],
    kinds={"python", "sql"},
    tags={"layer": "staging"},
    code_version="2",
    metadata={"grain": "one row per order", "excludes": ["pending orders"]},
)
def stg_orders(warehouse: Warehouse) -> dg.MaterializeResult:
    """Orders that were placed for real: pending checkouts dropped, amounts in euros."""
    rows = warehouse.replace_table(
        "stg_orders",
        """
        SELECT order_id,
               customer_id,
               ordered_on AS order_date,
               status,
               round(amount_cents / 100.0, 2) AS amount_eur,
               CASE WHEN status = 'completed' THEN 1 ELSE 0 END AS is_completed
        FROM orders
        WHERE status <> 'pending'
        """,
    )
    return dg.MaterializeResult(metadata={"dagster/row_count": rows})


@dg.asset(
    deps=[["raw", "customers"]],
    group_name="staging",
    owners=["team:analytics"],
    kinds={"python", "sql"},
    tags={"layer": "staging", "pii": "true"},
    metadata={"grain": "one row per customer"},
)
def stg_customers(warehouse: Warehouse) -> dg.MaterializeResult:
    """Customers with normalised e-mail addresses."""
    rows = warehouse.replace_table(
        "stg_customers",
        """
        SELECT customer_id,
               name,
               lower(trim(email)) AS email,
               country,
               signed_up_on
        FROM customers
        """,
    )
    return dg.MaterializeResult(metadata={"dagster/row_count": rows})
