"""Raw layer: the shop database's nightly CSV exports, loaded as they are."""

import csv
from pathlib import Path

import dagster as dg

from dagster_shop.warehouse import Warehouse

DATA = Path(__file__).resolve().parent.parent / "data"

# The exports are produced by the shop backend, not by this pipeline: external assets.
orders_export = dg.AssetSpec(
    key=["exports", "orders_csv"],
    description="Orders as the shop database exports them every night (data/orders.csv).",
    group_name="exports",
    owners=["team:shop-backend"],
    kinds={"csv"},
    metadata={"path": "data/orders.csv"},
)

customers_export = dg.AssetSpec(
    key=["exports", "customers_csv"],
    description="Customer accounts as the shop database exports them (data/customers.csv).",
    group_name="exports",
    owners=["team:shop-backend"],
    kinds={"csv"},
    tags={"pii": "true"},
    metadata={"path": "data/customers.csv"},
)

ORDERS_COLUMNS = [
    ("order_id", "INTEGER"),
    ("customer_id", "INTEGER"),
    ("ordered_on", "TEXT"),
    ("status", "TEXT"),
    ("amount_cents", "INTEGER"),
]
CUSTOMERS_COLUMNS = [
    ("customer_id", "INTEGER"),
    ("name", "TEXT"),
    ("email", "TEXT"),
    ("country", "TEXT"),
    ("signed_up_on", "TEXT"),
]


def _read_csv(name: str, columns):
    with open(DATA / name, newline="") as f:
        return [
            tuple(int(row[c]) if t == "INTEGER" else row[c] for c, t in columns)
            for row in csv.DictReader(f)
        ]


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            key=["raw", "orders"],
            deps=[orders_export],
            description="Every order of the export, untouched.",
            group_name="raw",
            owners=["team:data-platform"],
            kinds={"python", "sql"},
            tags={"layer": "raw"},
            code_version="1",
            metadata={"source_file": "data/orders.csv"},
        ),
        dg.AssetSpec(
            key=["raw", "customers"],
            deps=[customers_export],
            description="Every customer account of the export, untouched.",
            group_name="raw",
            owners=["team:data-platform"],
            kinds={"python", "sql"},
            tags={"layer": "raw", "pii": "true"},
            code_version="1",
            metadata={"source_file": "data/customers.csv"},
        ),
    ],
)
def load_exports(warehouse: Warehouse):
    """Loads both CSV exports into the tables `orders` and `customers`."""
    orders = warehouse.load_rows("orders", ORDERS_COLUMNS, _read_csv("orders.csv", ORDERS_COLUMNS))
    yield dg.MaterializeResult(asset_key=["raw", "orders"], metadata={"dagster/row_count": orders})
    customers = warehouse.load_rows("customers", CUSTOMERS_COLUMNS, _read_csv("customers.csv", CUSTOMERS_COLUMNS))
    yield dg.MaterializeResult(asset_key=["raw", "customers"], metadata={"dagster/row_count": customers})
