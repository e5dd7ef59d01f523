#!/usr/bin/env python3
"""How long a deploy's load of a dbt project and of a Dagster code location takes, and how much of
it is the tool's own work. Reproduce (from the repository root, after `bash .ci/run` installed the
tools and `cargo build --release -p offshoot`):

    PATH="$PWD/target/python-tools/bin:$PATH" python3 crates/offshoot-bench/scripts/location_load.py [N=500] [RUNS=5]

For each project it times, RUNS times each, in one run:
  - `offshoot validate --rev main`: what a deploy does on a commit it has not loaded yet (export
    the commit's files, run the tool in its own folder, read its output into a snapshot);
  - the tool alone on the same files with the same settings (`dbt parse` with a fresh target/;
    the Dagster entry point's `defs`);
  - the tool's floor: `dbt --version` / `python -c "import dagster"` (interpreter and imports).
Prints medians and the part Offshoot adds (validate minus the tool alone).
"""

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "../../.."))
OFFSHOOT = os.path.join(ROOT, "target/release/offshoot")
ENTRY = os.path.join(ROOT, "crates/offshoot-location/python/offshoot_dagster.py")


def run(args, cwd=None, env=None):
    started = time.perf_counter()
    done = subprocess.run(args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{' '.join(args)} failed:\n{done.stdout[-3000:]}")
    return elapsed


def interleaved(commands, runs):
    """Medians of each command, run in turns (A B C A B C ...) so a change in the machine's load
    hits them alike. A command is (args, cwd, env, before)."""
    times = [[] for _ in commands]
    for _ in range(runs):
        for index, (args, cwd, env, before) in enumerate(commands):
            if before:
                before()
            times[index].append(run(args, cwd=cwd, env=env))
    return [statistics.median(t) for t in times]


def git_repo(path):
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "bench"]):
        subprocess.run(["git", "-C", path, *args], check=True, env={**os.environ, "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@b", "GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@b"})


def main():
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    if not os.path.exists(OFFSHOOT):
        sys.exit("build it first: cargo build --release -p offshoot")
    work = tempfile.mkdtemp(prefix="offshoot-location-bench-")
    rows = []
    try:
        # dbt: parse needs the profile's variables, not a database.
        dbt_repo = os.path.join(work, "dbt")
        subprocess.run([sys.executable, os.path.join(HERE, "gen_dbt_project.py"), dbt_repo, str(count)], check=True, stdout=subprocess.DEVNULL)
        git_repo(dbt_repo)
        profiles = os.path.join(work, "profiles")
        os.makedirs(profiles)
        with open(os.path.join(profiles, "profiles.yml"), "w") as f:
            # The profile Offshoot writes (crates/offshoot-location/dbt/profiles.yml).
            f.write(open(os.path.join(ROOT, "crates/offshoot-location/dbt/profiles.yml")).read())
        target = os.path.join(work, "dbt-target")
        # The environment Offshoot gives the tool: PATH and HOME, nothing else inherited.
        minimal = {k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ}
        dbt_env = {**minimal, "OFFSHOOT_PG_HOST": "127.0.0.1", "OFFSHOOT_PG_PORT": "5432", "OFFSHOOT_PG_USER": "postgres",
                   "OFFSHOOT_PG_DATABASE": "postgres", "OFFSHOOT_SCHEMA": "bench__prod", "DBT_PROFILES_DIR": profiles,
                   "DBT_PROFILE": "offshoot", "DBT_TARGET": "offshoot", "DBT_TARGET_PATH": target,
                   "DBT_LOG_PATH": os.path.join(work, "dbt-logs"), "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}
        total, tool, floor = interleaved([
            ([OFFSHOOT, "validate", "--repo", dbt_repo, "--rev", "main"], None, None, None),
            (["dbt", "parse"], dbt_repo, dbt_env, lambda: shutil.rmtree(target, ignore_errors=True)),
            (["dbt", "--version"], None, None, None),
        ], runs)
        rows.append((f"dbt, {count} models", total, tool, floor))

        # A branch commit: 2% of the models edited, parsed from the base commit's partial-parse
        # state, as the server does for every commit after the first (dbt.rs, seed_partial_parse).
        branch_repo = os.path.join(work, "dbt-branch")
        subprocess.run([sys.executable, os.path.join(HERE, "gen_dbt_project.py"), branch_repo, str(count), "--modify", "2"], check=True, stdout=subprocess.DEVNULL)
        shutil.rmtree(target, ignore_errors=True)
        run(["dbt", "parse"], cwd=dbt_repo, env=dbt_env)
        base_state = os.path.join(work, "base-partial-parse.msgpack")
        shutil.copy(os.path.join(target, "partial_parse.msgpack"), base_state)

        def seeded():
            shutil.rmtree(target, ignore_errors=True)
            os.makedirs(target)
            shutil.copy(base_state, os.path.join(target, "partial_parse.msgpack"))

        (seeded_time,) = interleaved([(["dbt", "parse"], branch_repo, dbt_env, seeded)], runs)
        rows.append((f"dbt, {count} models, branch commit parsed from the base's state", None, seeded_time, floor))

        dagster_repo = os.path.join(work, "dagster")
        subprocess.run([sys.executable, os.path.join(HERE, "gen_dagster_project.py"), dagster_repo, str(count)], check=True)
        git_repo(dagster_repo)
        out = os.path.join(work, "defs.json")
        total, tool, floor = interleaved([
            ([OFFSHOOT, "validate", "--repo", dagster_repo, "--rev", "main"], None, None, None),
            (["python", ENTRY, "defs", "-m", "bench_location.definitions", "--output", out], dagster_repo, {**minimal, "PYTHONDONTWRITEBYTECODE": "1"}, None),
            (["python", "-c", "import dagster"], None, None, None),
        ], runs)
        rows.append((f"Dagster, {count} assets", total, tool, floor))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"medians of {runs} runs; seconds")
    print("| project | Offshoot load (validate --rev) | the tool alone | tool floor (start + imports) | Offshoot adds |")
    print("|---|---|---|---|---|")
    for name, total, tool, floor in rows:
        if total is None:
            print(f"| {name} | (server only) | {tool:.2f} | {floor:.2f} | |")
        else:
            print(f"| {name} | {total:.2f} | {tool:.2f} | {floor:.2f} | {total - tool:+.2f} ({(total - tool) / total * 100:.0f}%) |")


if __name__ == "__main__":
    main()
