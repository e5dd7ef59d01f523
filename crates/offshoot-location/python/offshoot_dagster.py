"""Offshoot's window into a Dagster code location. Standard library and dagster only; Python 3.9+.

Offshoot runs this file with the project's own Python, in a checkout of the project. The code
location is named like Dagster's CLI names it: `-m MODULE` or `-f FILE`, and `-a NAME` (also
spelled --module, --file, --attribute).

    python offshoot_dagster.py defs (-m M | -f F) [-a NAME] [--output FILE]
        Loads the code location and prints its assets as one JSON object:
        {"dagster_version": ..., "assets": [{"key": [...], "kind": "asset"|"source", ...}]}.

    python offshoot_dagster.py results [--output FILE]
        Reads the runs of the instance in $DAGSTER_HOME (where a materialization just ran) and
        prints {"runs", "status", "materialized", "failed"} as one JSON object.

    python offshoot_dagster.py materialize (-m M | -f F) [-a NAME] --select SEL [--partition KEY]
        What `dagster asset materialize` does, into the instance in $DAGSTER_HOME, except that a
        selection holding partitioned assets needs no --partition: they run unpartitioned, whole.

JSON goes to --output if given (written whole or not at all), else to stdout; anything the
user's code prints goes to stderr. On failure the Python traceback goes to stderr, then a line
starting with `offshoot:`, and the exit status is 1 (2 for a usage error); with --output, the
error is also written to OUTPUT.error.json: {"type", "message"} of the root exception (the last
cause of the chain), "frames" ([file, line], outermost first) of its traceback and of every
exception that wrapped it, and "wrappers" ([{"type", "message"}], outermost first).

The code location is imported as Dagster's code server imports it: inside a load context naming
the module or file (`LoadableTargetOrigin`), which dagster-cloud's
`link_code_references_to_git_if_cloud` reads to find the repository.
"""

import argparse
import ast
import hashlib
import importlib
import importlib.util
import inspect
import json
import os
import re
import sys
import textwrap
import traceback
from contextlib import contextmanager
from enum import Enum

ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")

# The partitions definitions Dagster's DailyPartitionsDefinition etc. build by default; any other
# time-window definition is reported as {"type": "other"} with everything that makes it differ.
STANDARD_CADENCES = {
    "hourly": ("0 * * * *", "%Y-%m-%d-%H:%M"),
    "daily": ("0 0 * * *", "%Y-%m-%d"),
    "weekly": ("0 0 * * 0", "%Y-%m-%d"),
    "monthly": ("0 0 1 * *", "%Y-%m-%d"),
}


class Failure(Exception):
    """An error with a message for the user and no traceback worth showing."""


@contextmanager
def stdout_to_stderr():
    """Sends whatever is written to stdout (by Python code or by child processes) to stderr."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    real_stdout = sys.stdout
    sys.stdout = sys.stderr
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stdout = real_stdout
        os.dup2(saved, 1)
        os.close(saved)


def emit(value, output=None):
    """Writes `value` as JSON to the file `output` (whole or not at all), else to stdout."""
    text = json.dumps(value, indent=2, ensure_ascii=False) + "\n"
    if output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    partial = output + ".partial"
    with open(partial, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(partial, output)


# --- loading the code location ---------------------------------------------------------------


def import_code_location(module=None, file=None):
    """Imports the module (importable from the current directory) or the Python file, inside the
    load context Dagster's code server sets."""
    with load_context(module, file):
        return _import_code_location(module, file)


@contextmanager
def load_context(module=None, file=None):
    """What `dagster code-server` sets around an import: the LoadableTargetOrigin being loaded."""
    try:
        from dagster._core.types.loadable_target_origin import (
            LoadableTargetOrigin,
            enter_loadable_target_origin_load_context,
        )
    except ImportError:  # older Dagster
        yield
        return
    origin = LoadableTargetOrigin(
        executable_path=sys.executable,
        module_name=module,
        python_file=os.path.abspath(file) if file else None,
        working_directory=os.getcwd(),
    )
    with enter_loadable_target_origin_load_context(origin):
        yield


def _import_code_location(module=None, file=None):
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    if module is not None:
        return importlib.import_module(module)

    path = os.path.abspath(file)
    if not os.path.isfile(path):
        raise Failure(f"no such file: {file}")
    folder = os.path.dirname(path)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    name = os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    loaded = importlib.util.module_from_spec(spec)
    sys.modules[name] = loaded
    spec.loader.exec_module(loaded)
    return loaded


def _loadable_types():
    import dagster as dg

    types = [dg.Definitions, dg.RepositoryDefinition]
    try:  # what @dg.definitions returns (Dagster 1.10+)
        from dagster.components.definitions import LazyDefinitions

        types.append(LazyDefinitions)
    except ImportError:
        pass
    return tuple(types)


def find_definitions(loaded, attribute=None):
    """(name, object) of the Definitions: `attribute`, else `defs`, else the only one in the module."""
    loadable = _loadable_types()
    where = loaded.__name__
    if attribute is not None:
        if not hasattr(loaded, attribute):
            raise Failure(f"{where} has no attribute `{attribute}`")
        target = getattr(loaded, attribute)
        if not isinstance(target, loadable):
            raise Failure(f"`{where}.{attribute}` is a {type(target).__name__}, not a dagster Definitions object")
        return attribute, target
    if isinstance(getattr(loaded, "defs", None), loadable):
        return "defs", loaded.defs
    found = {name: value for name, value in vars(loaded).items() if isinstance(value, loadable)}
    distinct = {id(value): name for name, value in found.items()}
    if len(distinct) == 1:
        name = next(iter(distinct.values()))
        return name, found[name]
    if not distinct:
        raise Failure(f"{where} defines no dagster Definitions object (looked for `defs`, then any Definitions)")
    names = ", ".join(sorted(distinct.values()))
    raise Failure(f"{where} defines several Definitions objects ({names}); name one with --attribute")


def repository_of(target):
    """The RepositoryDefinition Dagster itself builds from the target, as its CLI and servers do."""
    from dagster._core.definitions.reconstruct import repository_def_from_target_def

    try:  # Dagster 1.8+: state-backed definitions load as at a code server's start
        from dagster._core.definitions.definitions_load_context import (
            DefinitionsLoadContext,
            DefinitionsLoadType,
        )

        DefinitionsLoadContext.set(
            DefinitionsLoadContext(load_type=DefinitionsLoadType.INITIALIZATION, repository_load_data=None)
        )
    except ImportError:
        pass
    repository = repository_def_from_target_def(target)
    if repository is None:
        raise Failure(f"cannot build a repository from {type(target).__name__}")
    return repository


def load_repository(module=None, file=None, attribute=None):
    _name, target = find_definitions(import_code_location(module, file), attribute)
    return repository_of(target)


# --- describing assets -----------------------------------------------------------------------


def plain(value):
    """A JSON-ready, deterministic copy of `value` (records and named tuples become dicts)."""
    try:
        from dagster_shared.record import as_dict, is_record
    except ImportError:  # older Dagster
        as_dict = is_record = None
    from dagster import AssetKey

    if isinstance(value, AssetKey):
        return "/".join(value.path)
    if is_record is not None and is_record(value):
        return {name: plain(item) for name, item in as_dict(value).items()}
    if hasattr(value, "model_dump") and callable(value.model_dump):  # pydantic (DagsterModel)
        return plain(value.model_dump())
    if isinstance(value, tuple) and hasattr(value, "_asdict"):
        return {name: plain(item) for name, item in value._asdict().items()}
    if isinstance(value, dict) or (hasattr(value, "items") and hasattr(value, "keys")):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if isinstance(value, (set, frozenset)):
        return sorted((plain(item) for item in value), key=lambda item: json.dumps(item, sort_keys=True, default=str))
    if isinstance(value, Enum):
        return plain(value.value)
    return value


def render_metadata_value(value):
    from dagster import MetadataValue

    if isinstance(value, MetadataValue):
        value = value.value
    if isinstance(value, str):
        return value
    text = json.dumps(plain(value), sort_keys=True, default=str)
    return ADDRESS.sub("", text)


def render_metadata(metadata):
    from dagster._core.definitions.metadata import normalize_metadata

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "arbitrary metadata values" deprecation
        normalized = normalize_metadata(dict(metadata), allow_invalid=True)
    return {key: render_metadata_value(normalized[key]) for key in sorted(normalized)}


def _format_time(moment, fmt):
    return moment.strftime(fmt) if moment is not None else None


def describe_partitions(partitions_def):
    """A deterministic description of a partitions definition, for {"type": "other"}."""
    import dagster as dg

    if isinstance(partitions_def, dg.TimeWindowPartitionsDefinition):
        exclusions = [str(plain(item)) for item in (partitions_def.exclusions or [])]
        return (
            f"time window: cron '{partitions_def.cron_schedule}', timezone {partitions_def.timezone},"
            f" start {_format_time(partitions_def.start, partitions_def.fmt)},"
            f" end {_format_time(partitions_def.end, partitions_def.fmt) or 'open'}, format '{partitions_def.fmt}',"
            f" end offset {partitions_def.end_offset}, exclusions [{', '.join(exclusions)}]"
        )
    if isinstance(partitions_def, dg.StaticPartitionsDefinition):
        return "static: " + ", ".join(partitions_def.get_partition_keys())
    if isinstance(partitions_def, dg.DynamicPartitionsDefinition):
        if partitions_def.name:
            return f"dynamic: {partitions_def.name}"
        return "dynamic: from a function"
    if isinstance(partitions_def, dg.MultiPartitionsDefinition):
        return "multi: " + "; ".join(
            f"{dimension.name} = ({describe_partitions(dimension.partitions_def)})"
            for dimension in partitions_def.partitions_defs
        )
    kind = f"{type(partitions_def).__module__}.{type(partitions_def).__qualname__}"
    return ADDRESS.sub("", f"{kind}: {partitions_def}")


def render_partitions(partitions_def):
    import dagster as dg

    if partitions_def is None:
        return None
    if isinstance(partitions_def, dg.TimeWindowPartitionsDefinition):
        for cadence, (cron, fmt) in STANDARD_CADENCES.items():
            if (
                partitions_def.cron_schedule == cron
                and partitions_def.fmt == fmt
                and partitions_def.timezone == "UTC"
                and partitions_def.end_offset == 0
                and not partitions_def.exclusions
            ):
                return {
                    "type": "time",
                    "cadence": cadence,
                    "start": _format_time(partitions_def.start, fmt),
                    "end": _format_time(partitions_def.end, fmt),
                }
    if isinstance(partitions_def, dg.StaticPartitionsDefinition):
        return {"type": "static", "keys": list(partitions_def.get_partition_keys())}
    return {"type": "other", "description": describe_partitions(partitions_def)}


def node_definition(assets_def):
    """The op or graph that materializes (or observes) `assets_def`; None for external assets."""
    if not assets_def.is_executable:
        return None
    try:
        return assets_def.node_def
    except Exception:  # noqa: BLE001 - Dagster raises a CheckError when there is none
        return None


def compute_function(assets_def):
    """The user's function that materializes (or observes) `assets_def`, if it has one."""
    import dagster as dg

    node_def = node_definition(assets_def)
    if not isinstance(node_def, dg.OpDefinition):
        return None  # graph-backed: no single function
    function = node_def.compute_fn
    function = getattr(function, "decorated_fn", function)
    try:
        function = inspect.unwrap(function)
    except ValueError:
        pass
    return _past_dagster_shims(function)


def _is_dagster_code(function):
    module = getattr(function, "__module__", None) or ""
    return module == "dagster" or module.startswith("dagster.")


def _past_dagster_shims(function):
    """The user's function where Dagster wrapped it in one of its own (an observable source
    asset's observe function, say), found among the wrapper's closure variables."""
    if not _is_dagster_code(function):
        return function
    for cell in getattr(function, "__closure__", None) or ():
        try:
            inner = cell.cell_contents
        except ValueError:  # empty cell
            continue
        if inspect.isfunction(inner) and not _is_dagster_code(inner):
            return inner
    return function


def function_source(function):
    """(code, path relative to cwd, line of the `def`), or ("", "", 0) if unavailable.

    The code is the dedented function without its decorators, which carry tags and metadata
    that Dagster reports on their own.
    """
    if function is None:
        return "", "", 0
    try:
        lines, first_line = inspect.getsourcelines(function)
        source_file = inspect.getsourcefile(function) or inspect.getfile(function)
    except (OSError, TypeError):
        return "", "", 0
    code = textwrap.dedent("".join(lines))
    def_offset = 0
    try:
        tree = ast.parse(code)
        node = tree.body[0] if tree.body else None
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            def_offset = node.lineno - 1  # the `def` line, after any decorators
    except SyntaxError:
        pass
    code = "".join(code.splitlines(keepends=True)[def_offset:])
    line = first_line + def_offset if first_line else 0
    path = os.path.relpath(os.path.abspath(source_file), os.getcwd())
    if path.startswith(".." + os.sep) or path == ".." or os.path.isabs(path):
        path, line = "", 0  # outside the project (a library's factory, say)
    return code, path.replace(os.sep, "/"), line


def code_fingerprint(code):
    """What an unversioned asset's derived version hashes: the function's syntax tree without
    docstrings (a docstring is the description, which is metadata). Comments and formatting are
    not in the tree, so `ruff format` or `black` change nothing."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return hashlib.sha256(code.encode("utf-8")).hexdigest()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            body = node.body
            first = body[0] if body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                node.body = body[1:] or [ast.Pass()]
    text = "python-ast-1\n" + ast.dump(tree, annotate_fields=True, include_attributes=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def grain(metadata):
    """The columns that identify a row: those of `dagster/column_schema` that are unique and not
    nullable (Dagster's table-schema constraints), in table order."""
    schema = (metadata or {}).get("dagster/column_schema")
    schema = getattr(schema, "schema", schema)
    columns = getattr(schema, "columns", None) or []
    keys = []
    for column in columns:
        constraints = getattr(column, "constraints", None)
        if constraints is not None and getattr(constraints, "unique", False) and not getattr(constraints, "nullable", True):
            keys.append(column.name)
    return keys


def describe_asset(node):
    assets_def = node.assets_def
    function = compute_function(assets_def)
    code, path, line = function_source(function)
    node_def = node_definition(assets_def)
    op_name = node_def.name if node_def is not None else None
    return {
        "key": list(node.key.path),
        "kind": "asset" if node.is_materializable else "source",
        "deps": sorted(list(parent.path) for parent in node.parent_keys),
        "code_version": node.code_version,
        "source_hash": code_fingerprint(code) if code else None,
        "code": code,
        "path": path,
        "line": line,
        "op_name": op_name,
        "tags": {key: node.tags[key] for key in sorted(node.tags)},
        "metadata": render_metadata(node.metadata),
        "partitions": render_partitions(node.partitions_def),
        "group": node.group_name,
        "owners": list(node.owners),
        "kinds": sorted(node.kinds),
        "description": node.description,
        "grain": grain(node.metadata),
    }


def command_defs(arguments):
    import dagster

    with stdout_to_stderr():
        repository = load_repository(arguments.module, arguments.file, arguments.attribute)
        asset_graph = repository.asset_graph
        keys = sorted(asset_graph.get_all_asset_keys(), key=lambda key: list(key.path))
        assets = [describe_asset(asset_graph.get(key)) for key in keys]
        schedules = [describe_schedule(repository, schedule) for schedule in repository.schedule_defs]
    emit(
        {"dagster_version": dagster.__version__, "assets": assets, "schedules": schedules},
        arguments.output,
    )


def describe_schedule(repository, schedule):
    """A ScheduleDefinition as Offshoot runs it: its pattern(s), zone and the job's asset keys.

    What Offshoot cannot express is said in `problem` (the schedule is listed, never run): a job
    of ops rather than assets, or a schedule without a job (a custom evaluation function only)."""
    cron = schedule.cron_schedule
    described = {
        "name": schedule.name,
        "cron": [cron] if isinstance(cron, str) else list(cron),
        "timezone": schedule.execution_timezone,
        "job": None,
        "keys": [],
        "problem": None,
    }
    try:
        job_name = schedule.job_name
    except Exception:  # noqa: BLE001 - Dagster raises for schedules without a job
        job_name = None
    if not job_name:
        described["problem"] = "it targets no job"
        return described
    described["job"] = job_name
    job = repository.get_job(job_name)
    layer = getattr(job, "asset_layer", None)
    keys = sorted(layer.selected_asset_keys, key=lambda key: list(key.path)) if layer else []
    if not keys:
        described["problem"] = f"its job `{job_name}` runs ops, not assets"
    described["keys"] = [list(key.path) for key in keys]
    return described


# --- run results -----------------------------------------------------------------------------


def error_message(error, max_lines=12):
    """The user's exception (what Dagster wrapped) and its causes, one message a line or so."""
    if error is None:
        return ""
    chain = [error]
    while chain[-1].cause is not None and len(chain) < 10:
        chain.append(chain[-1].cause)
    # DagsterExecutionStepExecutionError "Error occurred while executing op ...": the step
    # names the op already; what it wraps is the user's exception.
    if len(chain) > 1 and (chain[0].cls_name or "").endswith(("StepExecutionError", "UserCodeExecutionError")):
        chain = chain[1:]
    lines = []
    for item in chain:
        lines.extend(line for line in (item.message or "").strip().splitlines() if line.strip())
    return "\n".join(lines[:max_lines])


def command_results(arguments):
    from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus

    with stdout_to_stderr():
        if not os.environ.get("DAGSTER_HOME"):
            raise Failure("DAGSTER_HOME is not set")
        instance = DagsterInstance.get()
        records = sorted(instance.get_run_records(), key=lambda record: record.create_timestamp)
        runs = [record.dagster_run for record in records]
        materialized = set()
        failed = []
        for run in runs:
            step_failures = 0
            run_failure = None
            for entry in instance.all_logs(run.run_id):
                event = entry.dagster_event
                if event is None:
                    continue
                if event.event_type == DagsterEventType.ASSET_MATERIALIZATION:
                    materialized.add(tuple(event.asset_key.path))
                elif event.event_type == DagsterEventType.STEP_FAILURE:
                    step_failures += 1
                    failed.append({"step": event.step_key, "message": error_message(event.step_failure_data.error)})
                elif event.event_type == DagsterEventType.RUN_FAILURE:
                    data = event.event_specific_data
                    run_failure = error_message(getattr(data, "error", None)) or entry.message or "run failed"
            if run_failure is not None and step_failures == 0:
                failed.append({"step": None, "message": run_failure})
        statuses = [run.status for run in runs]
        if not statuses:
            status = None
        elif len(set(statuses)) == 1:
            status = statuses[0].value
        elif DagsterRunStatus.FAILURE in statuses:
            status = DagsterRunStatus.FAILURE.value
        elif DagsterRunStatus.CANCELED in statuses:
            status = DagsterRunStatus.CANCELED.value
        else:
            status = statuses[-1].value
    emit(
        {
            "runs": len(runs),
            "status": status,
            "materialized": [list(key) for key in sorted(materialized)],
            "failed": failed,
        },
        arguments.output,
    )


# --- materializing --------------------------------------------------------------------------


def command_materialize(arguments):
    """`dagster asset materialize`, except that partitioned assets may be selected without a
    partition (the CLI refuses them): they run once, unpartitioned, i.e. materialized whole."""
    from dagster import AssetSelection, DagsterInstance, execute_job
    from dagster._core.code_pointer import CodePointer
    from dagster._core.definitions.reconstruct import ReconstructableRepository

    with stdout_to_stderr():
        name, _target = find_definitions(import_code_location(arguments.module, arguments.file), arguments.attribute)
        cwd = os.getcwd()
        if arguments.module:
            pointer = CodePointer.from_module(arguments.module, name, cwd)
        else:
            pointer = CodePointer.from_python_file(os.path.abspath(arguments.file), name, cwd)
        # Reconstructable like the CLI's, so the multiprocess executor's steps can load it.
        repository = ReconstructableRepository(pointer, executable_path=sys.executable)
        repository_def = repository.get_definition()
        selection = AssetSelection.from_coercible(arguments.select.split(","))
        keys = selection.resolve(repository_def.asset_graph)
        if not keys:
            raise Failure(f"the selection `{arguments.select}` matches no asset")
        job_def = repository_def.get_implicit_job_def_for_assets(keys)
        if job_def is None:
            raise Failure("the selected assets cannot run in one job")
        tags = {}
        if arguments.partition:
            tags = job_def.get_tags_for_partition_key(arguments.partition, selected_asset_keys=keys)
        with DagsterInstance.get() as instance:
            result = execute_job(
                repository.get_reconstructable_job(job_def.name),
                instance=instance,
                asset_selection=sorted(keys, key=lambda key: list(key.path)),
                tags=tags,
            )
        if not result.success:
            raise Failure(f"the run {result.run_id} failed")


# --- errors ----------------------------------------------------------------------------------


def exception_chain(error):
    """`error` and what caused it, outermost first (explicit causes, else implicit context)."""
    chain = [error]
    while len(chain) < 20:
        current = chain[-1]
        following = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
        if following is None or following in chain:
            break
        chain.append(following)
    return chain


def describe_error(error):
    """The root exception first: what the user needs to see, and where it happened."""
    chain = exception_chain(error)
    root = chain[-1]
    frames = []
    for item in chain:
        for summary in traceback.extract_tb(item.__traceback__):
            frames.append([os.path.abspath(summary.filename), summary.lineno or 1])
    return {
        "type": type(root).__name__,
        "message": str(root),
        "root_frames": [
            [os.path.abspath(s.filename), s.lineno or 1] for s in traceback.extract_tb(root.__traceback__)
        ],
        "frames": frames,
        "wrappers": [{"type": type(item).__name__, "message": str(item)} for item in chain[:-1]],
    }


# --- main ------------------------------------------------------------------------------------


def main(argv=None):
    parser = argparse.ArgumentParser(prog="offshoot_dagster.py", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    def add_target(command):
        """The code location, spelled like Dagster's CLI (-m/-f/-a) or in full."""
        where = command.add_mutually_exclusive_group(required=True)
        where.add_argument("-m", "--module", "--module-name", dest="module", help="module importable from the cwd")
        where.add_argument("-f", "--file", "--python-file", dest="file", help="Python file")
        command.add_argument(
            "-a", "--attribute", help="name of the Definitions object (default: `defs`, else the only one)"
        )

    defs = commands.add_parser("defs", help="print the code location's assets as JSON")
    add_target(defs)
    defs.add_argument("--output", help="write the JSON to this file instead of stdout")
    results = commands.add_parser("results", help="print the outcome of the runs in $DAGSTER_HOME as JSON")
    results.add_argument("--output", help="write the JSON to this file instead of stdout")
    materialize = commands.add_parser(
        "materialize", help="like `dagster asset materialize`, partitioned assets run whole unless --partition"
    )
    add_target(materialize)
    materialize.add_argument("--select", required=True, help="comma-separated asset selection, as Dagster's CLI")
    materialize.add_argument("--partition", help="partition key for the partitioned assets selected")
    arguments = parser.parse_args(argv)

    if arguments.command == "results":
        context = "could not read the run results from DAGSTER_HOME " + os.environ.get("DAGSTER_HOME", "(unset)")
        run = command_results
    else:
        what = f"module {arguments.module}" if arguments.module else f"file {arguments.file}"
        if arguments.command == "defs":
            context = f"could not load the Dagster definitions from {what}"
            run = command_defs
        else:
            context = f"could not materialize `{arguments.select}` from {what}"
            run = command_materialize
    try:
        run(arguments)
    except Failure as failure:
        # The reason on a line of its own, where Python would print an exception's message.
        print(str(failure), file=sys.stderr)
        print(f"offshoot: {context}", file=sys.stderr)
        return 1
    except BaseException as error:  # noqa: BLE001 - the user's code may raise anything, SystemExit included
        traceback.print_exc()
        sys.stderr.flush()
        print(f"offshoot: {context}", file=sys.stderr)
        if getattr(arguments, "output", None):
            try:
                emit(describe_error(error), arguments.output + ".error.json")
            except Exception:  # noqa: BLE001 - the traceback above says it all
                pass
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
