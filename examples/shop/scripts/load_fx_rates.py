"""Loads data/fx_rates.csv into the table `fx_rates` of the deployment's warehouse.

Offshoot runs this in a checkout of the commit with OFFSHOOT_WAREHOUSE_URL pointing at the
deployment's own SQLite database (sqlite:///path/to/file.db).
"""
import csv
import os
import sqlite3

url = os.environ["OFFSHOOT_WAREHOUSE_URL"]
path = url.removeprefix("sqlite://")
with open("data/fx_rates.csv", newline="") as f:
    rows = [(r["currency"], float(r["rate_to_eur"])) for r in csv.DictReader(f)]
db = sqlite3.connect(path)
with db:
    db.execute("DROP TABLE IF EXISTS fx_rates")
    db.execute("CREATE TABLE fx_rates (currency TEXT PRIMARY KEY, rate_to_eur REAL NOT NULL)")
    db.executemany("INSERT INTO fx_rates VALUES (?, ?)", rows)
print(f"loaded {len(rows)} exchange rates")
