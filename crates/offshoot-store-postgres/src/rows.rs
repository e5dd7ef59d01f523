//! Rows to domain types: exposes a sqlx row's columns to the shared decoders in
//! `offshoot_store::rows`, so no sqlx type leaves this crate.

use offshoot_store::rows::{self, Columns};
use offshoot_store::{
    Deployment, Materialization, Revision, Run, RunStep, StoreError, StoreResult,
};
use sqlx::postgres::{PgRow, Postgres};
use sqlx::{Decode, Row as _, Type};

struct Row<'a>(&'a PgRow);

impl Row<'_> {
    fn get<'r, T>(&'r self, column: &str) -> StoreResult<Option<T>>
    where
        T: Decode<'r, Postgres> + Type<Postgres>,
    {
        self.0
            .try_get(column)
            .map_err(|error| StoreError::Backend(format!("reading column {column}: {error}")))
    }
}

impl Columns for Row<'_> {
    fn integer(&self, column: &str) -> StoreResult<Option<i64>> {
        self.get(column)
    }

    fn text(&self, column: &str) -> StoreResult<Option<String>> {
        self.get(column)
    }

    fn boolean(&self, column: &str) -> StoreResult<Option<bool>> {
        self.get(column)
    }
}

pub(crate) fn deployment(row: &PgRow) -> StoreResult<Deployment> {
    rows::deployment(&Row(row))
}

pub(crate) fn revision(row: &PgRow) -> StoreResult<Revision> {
    rows::revision(&Row(row))
}

pub(crate) fn run(row: &PgRow) -> StoreResult<Run> {
    rows::run(&Row(row))
}

pub(crate) fn step(row: &PgRow) -> StoreResult<RunStep> {
    rows::step(&Row(row))
}

pub(crate) fn materialization(row: &PgRow) -> StoreResult<Materialization> {
    rows::materialization(&Row(row))
}

pub(crate) fn intake(row: &PgRow) -> StoreResult<offshoot_store::Intake> {
    rows::intake(&Row(row))
}

pub(crate) fn materialization_id(
    row: &PgRow,
) -> StoreResult<(offshoot_core::AssetKey, offshoot_store::ReadMaterialization)> {
    rows::materialization_id(&Row(row))
}

pub(crate) fn recorded_materialization(
    row: &PgRow,
) -> StoreResult<offshoot_store::RecordedMaterialization> {
    rows::recorded_materialization(&Row(row))
}

pub(crate) fn upstream_read(
    row: &PgRow,
) -> StoreResult<(offshoot_store::MaterializationId, offshoot_store::UpstreamProvenance)> {
    rows::upstream_read(&Row(row))
}

pub(crate) fn schedule_state(row: &PgRow) -> StoreResult<offshoot_store::ScheduleState> {
    rows::schedule_state(&Row(row))
}

pub(crate) fn schedule_tick(row: &PgRow) -> StoreResult<offshoot_store::ScheduleTick> {
    rows::schedule_tick(&Row(row))
}

pub(crate) fn variable(row: &PgRow) -> StoreResult<offshoot_store::StoredVariable> {
    rows::variable(&Row(row))
}

pub(crate) fn stored_data_diff(row: &PgRow) -> StoreResult<offshoot_store::StoredDataDiff> {
    rows::stored_data_diff(&Row(row))
}

pub(crate) fn deployment_version(row: &PgRow) -> StoreResult<(offshoot_store::DeploymentId, i64)> {
    rows::deployment_version(&Row(row))
}

pub(crate) fn activity_row(row: &PgRow) -> StoreResult<rows::ActivityRow> {
    rows::activity_row(&Row(row))
}
