"""Parity oracle: what Dagster's own branch-deployment differ says changed between two checkouts.

    python dagster_differ.py BASE_DIR BRANCH_DIR MODULE [--attribute NAME]

Loads the code location MODULE in each directory, each in its own Python process (the two
versions of the module must not meet in one sys.modules), takes the RepositorySnap Dagster's
code servers send to the webserver, rebuilds the RemoteRepositoryAssetGraph the webserver builds
from it, and asks dagster's AssetGraphDiffer (what Dagster+ uses for "changed in branch") about
every asset of either side. Prints {"a/b": ["CODE_VERSION", ...]} (reasons sorted) for each asset
that changed, sorted by key; unchanged assets are left out.

Internally: `dagster_differ.py --snapshot DIR MODULE OUT [--attribute NAME]` writes DIR's
serialized RepositorySnap to OUT.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def write_snapshot(directory, module, out, attribute=None):
    """In a fresh process: load `module` from `directory` and write its RepositorySnap to `out`."""
    sys.dont_write_bytecode = True  # leave no __pycache__ beside this script or in the checkouts
    os.chdir(directory)
    sys.path.insert(0, HERE)
    import offshoot_dagster  # same loading rules as `offshoot_dagster.py defs`

    from dagster._core.remote_representation.external_data import RepositorySnap
    from dagster._serdes import serialize_value

    with offshoot_dagster.stdout_to_stderr():
        repository = offshoot_dagster.load_repository(module=module, attribute=attribute)
        snapshot = RepositorySnap.from_def(repository)
        with open(out, "w", encoding="utf-8") as f:
            f.write(serialize_value(snapshot))


def asset_graph_of(directory, module, attribute=None):
    from dagster._core.definitions.assets.graph.remote_asset_graph import RemoteRepositoryAssetGraph
    from dagster._core.remote_representation.external import RemoteRepository
    from dagster._core.remote_representation.external_data import RepositorySnap
    from dagster._core.remote_representation.handle import RepositoryHandle
    from dagster._serdes import deserialize_value

    with tempfile.TemporaryDirectory() as scratch:
        out = os.path.join(scratch, "snapshot.json")
        command = [sys.executable, os.path.abspath(__file__), "--snapshot", directory, module, out]
        if attribute:
            command += ["--attribute", attribute]
        completed = subprocess.run(command, stdout=sys.stderr)
        if completed.returncode != 0:
            raise SystemExit(f"dagster_differ: could not load {module} in {directory}")
        with open(out, encoding="utf-8") as f:
            snapshot = deserialize_value(f.read(), RepositorySnap)
    handle = RepositoryHandle.for_test(location_name=module, repository_name=snapshot.name)
    repository = RemoteRepository(snapshot, handle, auto_materialize_use_sensors=True)
    return RemoteRepositoryAssetGraph.build(repository)


def diff(base_dir, branch_dir, module, attribute=None):
    from dagster._core.definitions.assets.graph.asset_graph_differ import AssetGraphDiffer

    base = asset_graph_of(os.path.abspath(base_dir), module, attribute)
    branch = asset_graph_of(os.path.abspath(branch_dir), module, attribute)
    differ = AssetGraphDiffer(branch_asset_graph=branch, base_asset_graph=base)
    keys = set(base.get_all_asset_keys()) | set(branch.get_all_asset_keys())
    changes = {}
    for key in sorted(keys, key=lambda key: list(key.path)):
        reasons = sorted(change.value for change in differ.get_changes_for_asset(key))
        if reasons:
            changes["/".join(key.path)] = reasons
    return changes


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--snapshot"]:
        parser = argparse.ArgumentParser(prog="dagster_differ.py --snapshot")
        parser.add_argument("directory")
        parser.add_argument("module")
        parser.add_argument("out")
        parser.add_argument("--attribute")
        arguments = parser.parse_args(argv[1:])
        write_snapshot(arguments.directory, arguments.module, arguments.out, arguments.attribute)
        return 0
    parser = argparse.ArgumentParser(prog="dagster_differ.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("base_dir")
    parser.add_argument("branch_dir")
    parser.add_argument("module")
    parser.add_argument("--attribute", help="name of the Definitions object (default: `defs`, else the only one)")
    arguments = parser.parse_args(argv)
    changes = diff(arguments.base_dir, arguments.branch_dir, arguments.module, arguments.attribute)
    print(json.dumps(changes, indent=2, sort_keys=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
