"""The code location, as Dagster+ projects write it: source code references on every asset,
linked to the git host when running in Dagster+ (or Offshoot)."""

from pathlib import Path

import dagster as dg
from dagster_cloud.metadata.source_code import link_code_references_to_git_if_cloud
from dagster_dbt import DbtCliResource

from dagster_dbt_shop.assets import shop_dbt_assets, top_customers_note
from dagster_dbt_shop.project import shop_dbt

defs = dg.Definitions(
    assets=link_code_references_to_git_if_cloud(
        dg.with_source_code_references([shop_dbt_assets, top_customers_note]),
        file_path_mapping=dg.AnchorBasedFilePathMapping(
            local_file_anchor=Path(__file__),
            file_anchor_path_in_repository="dagster_dbt_shop/definitions.py",
        ),
    ),
    resources={"dbt": DbtCliResource(project_dir=shop_dbt, profiles_dir=str(shop_dbt.profiles_dir))},
)
