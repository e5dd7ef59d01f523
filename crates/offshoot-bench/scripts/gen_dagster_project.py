#!/usr/bin/env python3
"""Writes a Dagster code location with N assets for Offshoot's load benchmark.

    python3 gen_dagster_project.py OUT_DIR [N=500]

Assets live in modules of 50 (`bench_location/assets_NN.py`); each reads 1-3 earlier assets,
every third has a code version, every tenth is daily-partitioned, all have tags, metadata, an
owner and kinds, like a real project's. Deterministic: the same N writes the same files.
"""

import os
import random
import sys

PER_MODULE = 50


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 500
    rng = random.Random(1)
    package = os.path.join(out, "bench_location")
    os.makedirs(package, exist_ok=True)
    with open(os.path.join(out, "offshoot.toml"), "w") as f:
        f.write('[project]\nname = "bench_location"\nproduction_branch = "main"\n\n'
                '[location]\ntype = "dagster"\nmodule = "bench_location.definitions"\n')
    open(os.path.join(package, "__init__.py"), "w").close()
    modules = []
    for start in range(0, count, PER_MODULE):
        name = f"assets_{start // PER_MODULE:02d}"
        modules.append(name)
        lines = ["import dagster as dg\n", "\n"]
        for i in range(start, min(start + PER_MODULE, count)):
            deps = sorted({f"a{rng.randrange(i)}" for _ in range(rng.randint(1, 3))}) if i > 0 else []
            options = [
                f"deps={deps!r}",
                f'group_name="layer_{i * 5 // count}"',
                f'tags={{"layer": "{i * 5 // count}", "tier": "{rng.choice(["gold", "silver", "bronze"])}"}}',
                f'metadata={{"rows_expected": {rng.randint(10, 10000)}, "grain": "one row per thing {i}"}}',
                'owners=["team:analytics"]',
                'kinds={"python", "sql"}',
            ]
            if i % 3 == 0:
                options.append(f'code_version="{rng.randint(1, 9)}"')
            if i % 10 == 0:
                options.append('partitions_def=dg.DailyPartitionsDefinition(start_date="2024-01-01")')
            lines.append("@dg.asset(\n    " + ",\n    ".join(options) + ",\n)\n")
            lines.append(f"def a{i}() -> None:\n    \"\"\"Asset {i} of the benchmark.\"\"\"\n    return None\n\n\n")
        with open(os.path.join(package, name + ".py"), "w") as f:
            f.write("".join(lines).rstrip() + "\n")
    with open(os.path.join(package, "definitions.py"), "w") as f:
        f.write("import dagster as dg\n\nfrom bench_location import " + ", ".join(modules) + "\n\n")
        f.write("defs = dg.Definitions(assets=dg.load_assets_from_modules([" + ", ".join(modules) + "]))\n")


if __name__ == "__main__":
    main()
