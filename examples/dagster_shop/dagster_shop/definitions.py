"""The code location: `dagster asset materialize -m dagster_shop.definitions --select ...`."""

import dagster as dg

from dagster_shop import marts, raw, staging
from dagster_shop.warehouse import Warehouse

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([raw, staging, marts], include_specs=True),
    resources={"warehouse": Warehouse()},
    # Steps are small SQL statements: running them in the run's own process saves starting a
    # Python process per step. Remove this line to get Dagster's default multiprocess executor.
    executor=dg.in_process_executor,
)
