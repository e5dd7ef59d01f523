"""Every dbt model, seed and source of dbt_shop as a Dagster asset, with code references to the
SQL files."""

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DagsterDbtTranslatorSettings, DbtCliResource, dbt_assets

from dagster_dbt_shop.project import shop_dbt

translator = DagsterDbtTranslator(settings=DagsterDbtTranslatorSettings(enable_code_references=True))


@dbt_assets(manifest=shop_dbt.manifest_path, project=shop_dbt, dagster_dbt_translator=translator)
def shop_dbt_assets(context: dg.AssetExecutionContext, dbt: DbtCliResource):
    """dbt build of the selected models, in the deployment's schema."""
    yield from dbt.cli(["build"], context=context).stream()


@dg.asset(deps=[dg.AssetKey("customer_orders")], group_name="reports", kinds={"python"})
def top_customers_note() -> dg.MaterializeResult:
    """A Python asset downstream of dbt: what a report would read."""
    return dg.MaterializeResult(metadata={"note": "see customer_orders"})
