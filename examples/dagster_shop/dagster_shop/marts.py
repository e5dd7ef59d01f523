"""Marts: what the business reads."""

import dagster as dg

from dagster_shop.staging import stg_customers, stg_orders
from dagster_shop.warehouse import Warehouse

MART = dict(owners=["team:analytics", "finance@shop.example"], kinds={"python", "sql"}, group_name="marts")


@dg.asset(
    deps=[stg_orders, stg_customers],
    tags={"layer": "mart", "tier": "gold"},
    code_version="1",
    metadata={
        "grain": "one row per order",
        "dagster/column_schema": dg.TableSchema(
            columns=[
                dg.TableColumn("order_id", "integer", description="Primary key"),
                dg.TableColumn("customer_id", "integer"),
                dg.TableColumn("country", "text"),
                dg.TableColumn("order_date", "text"),
                dg.TableColumn("amount_eur", "numeric"),
                dg.TableColumn("is_completed", "integer"),
            ]
        ),
    },
    **MART,
)
def fct_orders(warehouse: Warehouse) -> dg.MaterializeResult:
    """Orders with their customer's country: the fact table of the shop."""
    rows = warehouse.replace_table(
        "fct_orders",
        """
        SELECT o.order_id, o.customer_id, c.country, o.order_date, o.amount_eur, o.is_completed
        FROM stg_orders AS o
        JOIN stg_customers AS c ON c.customer_id = o.customer_id
        """,
    )
    return dg.MaterializeResult(metadata={"dagster/row_count": rows})


@dg.asset(
    deps=[fct_orders],
    partitions_def=dg.DailyPartitionsDefinition(start_date="2024-01-01"),
    tags={"layer": "mart", "tier": "gold"},
    metadata={"owner": "finance@shop.example", "currency": "EUR"},
    **MART,
)
def daily_revenue(warehouse: Warehouse) -> dg.MaterializeResult:
    """Completed revenue per day, the number finance reports. Partitioned by day, rebuilt whole."""
    rows = warehouse.replace_table(
        "daily_revenue",
        """
        SELECT order_date, count(*) AS orders, sum(amount_eur) AS revenue_eur
        FROM fct_orders
        WHERE is_completed = 1
        GROUP BY order_date
        """,
    )
    return dg.MaterializeResult(metadata={"dagster/row_count": rows})


@dg.asset(
    deps=[fct_orders, stg_customers],
    tags={"layer": "mart"},
    code_version="1",
    metadata={"grain": "one row per customer", "lookback_days": 365},
    **MART,
)
def customer_lifetime_value(warehouse: Warehouse) -> dg.MaterializeResult:
    """What each customer has spent so far, counting completed orders only."""
    rows = warehouse.replace_table(
        "customer_lifetime_value",
        """
        SELECT c.customer_id,
               c.email,
               count(o.order_id) AS orders,
               coalesce(sum(o.amount_eur), 0) AS lifetime_value_eur
        FROM stg_customers AS c
        LEFT JOIN fct_orders AS o ON o.customer_id = c.customer_id AND o.is_completed = 1
        GROUP BY c.customer_id, c.email
        """,
    )
    return dg.MaterializeResult(metadata={"dagster/row_count": rows})
