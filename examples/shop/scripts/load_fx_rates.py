"""Loads data/fx_rates.csv into the table `fx_rates` of the deployment's warehouse.

Offshoot runs this in a checkout of the commit with OFFSHOOT_WAREHOUSE_URL pointing at the
deployment's own warehouse: `sqlite:///path/to/file.db` (the embedded default) or
`postgres://...` (written with `psql` into OFFSHOOT_SCHEMA, the deployment's own schema: an
unqualified DROP would find production's table through the search_path, and a branch may not
touch production).
"""
import csv
import os
import sqlite3
import subprocess

url = os.environ["OFFSHOOT_WAREHOUSE_URL"]
with open("data/fx_rates.csv", newline="") as f:
    rows = [(r["currency"], float(r["rate_to_eur"])) for r in csv.DictReader(f)]

if url.startswith(("postgres://", "postgresql://")):
    schema = '"' + os.environ["OFFSHOOT_SCHEMA"].replace('"', '""') + '"'
    values = ", ".join(f"('{currency}', {rate})" for currency, rate in rows if currency.isalpha())
    script = (
        "BEGIN;\n"
        f"DROP TABLE IF EXISTS {schema}.fx_rates;\n"
        f"CREATE TABLE {schema}.fx_rates (currency TEXT PRIMARY KEY, rate_to_eur NUMERIC NOT NULL);\n"
        f"INSERT INTO {schema}.fx_rates VALUES {values};\n"
        "COMMIT;\n"
    )
    subprocess.run(["psql", url, "-v", "ON_ERROR_STOP=1", "-q"], input=script, text=True, check=True)
else:
    db = sqlite3.connect(url.removeprefix("sqlite://"))
    with db:
        db.execute("DROP TABLE IF EXISTS fx_rates")
        db.execute("CREATE TABLE fx_rates (currency TEXT PRIMARY KEY, rate_to_eur REAL NOT NULL)")
        db.executemany("INSERT INTO fx_rates VALUES (?, ?)", rows)
print(f"loaded {len(rows)} exchange rates")
