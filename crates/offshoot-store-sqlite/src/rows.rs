//! Rows to domain types: exposes a sqlx row's columns to the shared decoders in
//! `offshoot_store::rows`, so no sqlx type leaves this crate.

use offshoot_store::rows::{self, Columns};
use offshoot_store::{
    Deployment, Materialization, Revision, Run, RunStep, StoreError, StoreResult,
};
use sqlx::sqlite::{Sqlite, SqliteRow};
use sqlx::{Decode, Row as _, Type};

struct Row<'a>(&'a SqliteRow);

impl Row<'_> {
    fn get<'r, T>(&'r self, column: &str) -> StoreResult<Option<T>>
    where
        T: Decode<'r, Sqlite> + Type<Sqlite>,
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

pub(crate) fn deployment(row: &SqliteRow) -> StoreResult<Deployment> {
    rows::deployment(&Row(row))
}

pub(crate) fn revision(row: &SqliteRow) -> StoreResult<Revision> {
    rows::revision(&Row(row))
}

pub(crate) fn run(row: &SqliteRow) -> StoreResult<Run> {
    rows::run(&Row(row))
}

pub(crate) fn step(row: &SqliteRow) -> StoreResult<RunStep> {
    rows::step(&Row(row))
}

pub(crate) fn materialization(row: &SqliteRow) -> StoreResult<Materialization> {
    rows::materialization(&Row(row))
}

pub(crate) fn intake(row: &SqliteRow) -> StoreResult<offshoot_store::Intake> {
    rows::intake(&Row(row))
}

pub(crate) fn materialization_id(
    row: &SqliteRow,
) -> StoreResult<(offshoot_core::AssetKey, offshoot_store::ReadMaterialization)> {
    rows::materialization_id(&Row(row))
}

pub(crate) fn recorded_materialization(
    row: &SqliteRow,
) -> StoreResult<offshoot_store::RecordedMaterialization> {
    rows::recorded_materialization(&Row(row))
}

pub(crate) fn upstream_read(
    row: &SqliteRow,
) -> StoreResult<(offshoot_store::MaterializationId, offshoot_store::UpstreamProvenance)> {
    rows::upstream_read(&Row(row))
}

pub(crate) fn schedule_state(row: &SqliteRow) -> StoreResult<offshoot_store::ScheduleState> {
    rows::schedule_state(&Row(row))
}

pub(crate) fn schedule_tick(row: &SqliteRow) -> StoreResult<offshoot_store::ScheduleTick> {
    rows::schedule_tick(&Row(row))
}

pub(crate) fn variable(row: &SqliteRow) -> StoreResult<offshoot_store::StoredVariable> {
    rows::variable(&Row(row))
}

pub(crate) fn stored_data_diff(row: &SqliteRow) -> StoreResult<offshoot_store::StoredDataDiff> {
    rows::stored_data_diff(&Row(row))
}

pub(crate) fn deployment_version(
    row: &SqliteRow,
) -> StoreResult<(offshoot_store::DeploymentId, i64)> {
    rows::deployment_version(&Row(row))
}

pub(crate) fn activity_row(row: &SqliteRow) -> StoreResult<rows::ActivityRow> {
    rows::activity_row(&Row(row))
}
