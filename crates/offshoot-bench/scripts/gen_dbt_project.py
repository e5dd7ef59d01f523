#!/usr/bin/env python3
"""Write a synthetic dbt project (PostgreSQL dialect) for Offshoot's benchmarks.

Usage: gen_dbt_project.py OUT_DIR [N] [--name NAME] [--seed S] [--modify PERCENT] [--force]

The project has N models (default 500) in three layers:
  models/staging/       about 10%: views, each reading one seed or one `raw` source table
  models/intermediate/  about 70%: views, each reading 1-3 earlier models via ref()
  models/marts/         the rest: tables, each reading 1-3 earlier models via ref()
plus a schema.yml per layer (a description for every model, tags and meta on some, a few
unique/not_null tests), seeds, a `raw` source and data/seed_raw.sql, which creates and fills
the source tables so the project can be built as well as parsed.

Every model has the same four columns (id, amount, status, created_at), so any model can read
any earlier one and the whole project really runs. Models use only ref()/source(), never a
schema name, and the profile is `offshoot` (Offshoot writes profiles.yml at run time).

The output is deterministic: the same arguments always give the same files. --modify P edits
about P% of the models (a changed filter), giving a "feature branch" variant of the same project.
"""

import argparse
import os
import random
import shutil
import sys

GENERATED_DIRS = ("models", "seeds", "data")
STAGING_SHARE = 0.10
MARTS_SHARE = 0.20
SEEDS = 5
SEED_ROWS = 20
SOURCE_ROWS = 50
STATUSES = ("placed", "paid", "shipped", "returned", "cancelled")
DOMAINS = ("sales", "billing", "marketing", "support", "logistics", "finance", "product", "growth", "risk", "hr")
OWNERS = ("analytics@example.com", "data-platform@example.com", "finance-data@example.com", "growth@example.com")
TAGS = ("finance", "pii", "daily", "core")


def layer_sizes(n):
    staging = max(1, round(n * STAGING_SHARE))
    rest = n - staging
    marts = min(rest, round(n * MARTS_SHARE))
    return staging, rest - marts, marts


class Model:
    def __init__(self, index, layer, name, domain):
        self.index = index
        self.layer = layer
        self.name = name
        self.domain = domain
        self.parents = []
        self.reads = None  # for staging: ("seed", name) or ("source", table)
        self.shape = "join"
        self.modified = False
        self.tags = []
        self.owner = None
        self.tested = False


def plan(n, seed, modify_percent):
    rng = random.Random(seed)
    n_staging, n_intermediate, n_marts = layer_sizes(n)
    models = []
    prefixes = {"staging": "stg", "intermediate": "int", "marts": "fct"}
    layers = ["staging"] * n_staging + ["intermediate"] * n_intermediate + ["marts"] * n_marts
    seeds = [f"seed_{DOMAINS[i % len(DOMAINS)]}_{i:02d}" for i in range(min(SEEDS, n_staging))]
    sources = []
    for i, layer in enumerate(layers):
        domain = DOMAINS[rng.randrange(len(DOMAINS))]
        m = Model(i, layer, f"{prefixes[layer]}_{domain}_{i:05d}", domain)
        if layer == "staging":
            if i < len(seeds):
                m.reads = ("seed", seeds[i])
            else:
                table = f"{domain}_events_{i:05d}"
                sources.append(table)
                m.reads = ("source", table)
            m.shape = "clean"
        else:
            # Prefer recent models so the graph gets deep, but allow long edges too.
            m.shape = rng.choice(("join", "join", "filter", "aggregate"))
            window = max(n_staging, 40)
            low = max(0, i - window)
            count = min(i, rng.choice((1, 2, 2, 3))) if m.shape == "join" else 1
            parents = set()
            while len(parents) < count:
                if rng.random() < 0.8:
                    parents.add(rng.randrange(low, i))
                else:
                    parents.add(rng.randrange(0, i))
            m.parents = sorted(parents)
        if rng.random() < 0.15:
            m.tags = sorted(set(rng.sample(TAGS, rng.choice((1, 2)))))
        if rng.random() < 0.30:
            m.owner = OWNERS[rng.randrange(len(OWNERS))]
        m.tested = layer == "marts" or rng.random() < 0.05
        models.append(m)
    if modify_percent > 0:
        count = max(1, round(n * modify_percent / 100))
        for i in random.Random(seed + 1).sample(range(n), min(n, count)):
            models[i].modified = True
    return models, seeds, sources


def render_model(m, models):
    changed = "\n  and amount >= 0 -- changed on the feature branch" if m.modified else ""
    if m.layer == "staging":
        kind, name = m.reads
        rel = f"{{{{ ref('{name}') }}}}" if kind == "seed" else f"{{{{ source('raw', '{name}') }}}}"
        return (
            "select\n"
            "    cast(id as integer) as id,\n"
            "    cast(amount as numeric(12, 2)) as amount,\n"
            "    lower(status) as status,\n"
            "    cast(created_at as timestamp) as created_at\n"
            f"from {rel}\n"
            f"where id is not null{changed}\n"
        )
    refs = [models[p].name for p in m.parents]
    if m.shape == "aggregate":
        return (
            "select\n"
            "    id,\n"
            "    sum(amount) as amount,\n"
            "    max(status) as status,\n"
            "    max(created_at) as created_at\n"
            f"from {{{{ ref('{refs[0]}') }}}}\n"
            f"where status <> 'cancelled'{changed}\n"
            "group by id\n"
        )
    if m.shape == "filter":
        return (
            "select id, amount, status, created_at\n"
            f"from {{{{ ref('{refs[0]}') }}}}\n"
            f"where status in ('paid', 'shipped'){changed}\n"
        )
    amount = " + ".join(["t0.amount"] + [f"coalesce(t{k}.amount, 0)" for k in range(1, len(refs))])
    lines = [
        "select",
        "    t0.id,",
        f"    {amount} as amount,",
        "    t0.status,",
        "    t0.created_at",
        f"from {{{{ ref('{refs[0]}') }}}} as t0",
    ]
    for k, r in enumerate(refs[1:], start=1):
        lines.append(f"left join {{{{ ref('{r}') }}}} as t{k} on t{k}.id = t0.id")
    lines.append(f"where t0.amount is not null{changed}")
    return "\n".join(lines) + "\n"


def yaml_str(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_schema(layer_models, models):
    out = ["version: 2", "", "models:"]
    for m in layer_models:
        if m.layer == "staging":
            what = f"the {m.reads[0]} {m.reads[1]}"
        else:
            what = ", ".join(models[p].name for p in m.parents)
        out.append(f"  - name: {m.name}")
        out.append(f"    description: {yaml_str(f'{m.domain.capitalize()} records from {what} ({m.shape}).')}")
        if m.tags or m.owner:
            out.append("    config:")
            if m.tags:
                out.append("      tags: [" + ", ".join(yaml_str(t) for t in m.tags) + "]")
            if m.owner:
                out.append("      meta:")
                out.append(f"        owner: {yaml_str(m.owner)}")
        out.append("    columns:")
        out.append("      - name: id")
        out.append("        description: Record identifier.")
        if m.tested:
            out.append("        data_tests:")
            out.append("          - not_null")
            if m.shape in ("aggregate", "clean"):
                out.append("          - unique")
        out.append("      - name: amount")
        out.append("        description: Amount in EUR.")
    return "\n".join(out) + "\n"


def render_sources(sources):
    out = [
        "version: 2",
        "",
        "sources:",
        "  - name: raw",
        "    description: Raw event tables loaded by data/seed_raw.sql.",
        "    schema: \"{{ var('raw_schema', 'bench_raw') }}\"",
        "    tables:",
    ]
    for t in sources:
        out.append(f"      - name: {t}")
        out.append(f"        description: {yaml_str(f'Raw {t} events.')}")
    if not sources:
        out[-1] = "    tables: []"
    return "\n".join(out) + "\n"


def seed_rows(rng, rows):
    for i in range(1, rows + 1):
        amount = rng.randrange(100, 100000) / 100
        status = STATUSES[rng.randrange(len(STATUSES))]
        day = 1 + rng.randrange(28)
        month = 1 + rng.randrange(12)
        yield i, amount, status, f"2024-{month:02d}-{day:02d} {rng.randrange(24):02d}:00:00"


def render_seed_csv(name, seed):
    rng = random.Random(f"{seed}:{name}")
    lines = ["id,amount,status,created_at"]
    lines += [f"{i},{a:.2f},{s},{t}" for i, a, s, t in seed_rows(rng, SEED_ROWS)]
    return "\n".join(lines) + "\n"


def render_seed_sql(sources, seed):
    out = [
        "-- Raw source tables for the generated benchmark project (schema bench_raw). Idempotent:",
        "-- tables are created if missing and refilled, never dropped (dbt's views depend on them).",
        "--   psql -v ON_ERROR_STOP=1 -d DATABASE -f data/seed_raw.sql",
        "SET client_min_messages = warning;",
        "BEGIN;",
        "CREATE SCHEMA IF NOT EXISTS bench_raw;",
    ]
    for t in sources:
        rng = random.Random(f"{seed}:{t}")
        out.append(
            f"CREATE TABLE IF NOT EXISTS bench_raw.{t} (id integer PRIMARY KEY, amount numeric(12, 2), "
            "status text NOT NULL, created_at timestamp NOT NULL);"
        )
        out.append(f"TRUNCATE bench_raw.{t};")
        values = ",\n    ".join(f"({i}, {a:.2f}, '{s}', '{ts}')" for i, a, s, ts in seed_rows(rng, SOURCE_ROWS))
        out.append(f"INSERT INTO bench_raw.{t} (id, amount, status, created_at) VALUES\n    {values};")
    out.append("COMMIT;")
    return "\n".join(out) + "\n"


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)


def main(argv):
    p = argparse.ArgumentParser(description="Write a synthetic dbt project for Offshoot benchmarks.")
    p.add_argument("out_dir")
    p.add_argument("n", nargs="?", type=int, default=500, help="number of models (default 500)")
    p.add_argument("--name", default="dbt_bench", help="project name (default dbt_bench)")
    p.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    p.add_argument("--modify", type=float, default=0.0, metavar="PERCENT",
                   help="edit about PERCENT%% of the models (a feature-branch variant)")
    p.add_argument("--force", action="store_true",
                   help="write into a non-empty OUT_DIR, replacing its models/, seeds/ and data/")
    args = p.parse_args(argv)
    if args.n < 1:
        p.error("N must be at least 1")
    if not args.name.isidentifier():
        p.error("--name must be a valid identifier (letters, digits, underscores)")

    out = args.out_dir
    if os.path.isdir(out) and os.listdir(out):
        if not args.force:
            p.error(f"{out} is not empty (use --force to replace its models/, seeds/ and data/)")
        for d in GENERATED_DIRS:
            shutil.rmtree(os.path.join(out, d), ignore_errors=True)
    os.makedirs(out, exist_ok=True)

    models, seeds, sources = plan(args.n, args.seed, args.modify)

    write(os.path.join(out, "offshoot.toml"),
          f'[project]\nname = "{args.name}"\nproduction_branch = "main"\n\n[location]\ntype = "dbt"\n')
    write(os.path.join(out, "dbt_project.yml"), "\n".join([
        f"# Generated by gen_dbt_project.py: {args.n} models, seed {args.seed}.",
        f"name: {args.name}",
        'version: "1.0.0"',
        "config-version: 2",
        "profile: offshoot",
        "",
        'model-paths: ["models"]',
        'seed-paths: ["seeds"]',
        'clean-targets: ["target", "dbt_packages"]',
        "",
        "models:",
        f"  {args.name}:",
        "    staging:",
        "      +materialized: view",
        '      +tags: ["staging"]',
        "    intermediate:",
        "      +materialized: view",
        '      +tags: ["intermediate"]',
        "    marts:",
        "      +materialized: table",
        '      +tags: ["marts"]',
        "",
    ]))
    write(os.path.join(out, ".gitignore"), "target/\nlogs/\ndbt_packages/\n")
    for m in models:
        write(os.path.join(out, "models", m.layer, m.name + ".sql"), render_model(m, models))
    for layer in ("staging", "intermediate", "marts"):
        layer_models = [m for m in models if m.layer == layer]
        if layer_models:
            write(os.path.join(out, "models", layer, "schema.yml"), render_schema(layer_models, models))
    write(os.path.join(out, "models", "staging", "sources.yml"), render_sources(sources))
    for s in seeds:
        write(os.path.join(out, "seeds", s + ".csv"), render_seed_csv(s, args.seed))
    write(os.path.join(out, "data", "seed_raw.sql"), render_seed_sql(sources, args.seed))

    counts = {layer: sum(1 for m in models if m.layer == layer) for layer in ("staging", "intermediate", "marts")}
    print(f"wrote {args.n} models to {out}: {counts['staging']} staging, {counts['intermediate']} "
          f"intermediate, {counts['marts']} marts; {len(seeds)} seeds, {len(sources)} sources, "
          f"{sum(m.modified for m in models)} modified")


if __name__ == "__main__":
    main(sys.argv[1:])
