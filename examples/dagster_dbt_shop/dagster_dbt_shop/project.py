"""The dbt project the code location builds, as dagster-dbt names it."""

from pathlib import Path

from dagster_dbt import DbtProject

ROOT = Path(__file__).resolve().parent.parent

shop_dbt = DbtProject(
    project_dir=ROOT / "dbt_shop",
    profiles_dir=ROOT / "dbt_profiles",
    target="offshoot",
)
