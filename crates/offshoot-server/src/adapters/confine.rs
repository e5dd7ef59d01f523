//! Where processes started from a project's code (location tools, command assets) may write.
//! With Landlock (Linux 5.13+), every such process is confined to its own work folders and what
//! its target's warehouse says it may write (the SQLite warehouse: the target's database folder),
//! so a branch's code cannot write production's file, the metadata store, or another branch.
//!
//! Without Landlock, production's builds run unconfined; a branch's tool or command (and any
//! dbt or Dagster load) on a warehouse of files is refused unless the operator set
//! `allow_unconfined_branch_commands = true`. On a warehouse that is a server (PostgreSQL), the
//! database's own roles keep branches from writing production, so those run unconfined with a
//! warning at start-up.

use std::path::PathBuf;

use offshoot_location::Sandbox;
use offshoot_warehouse::Target;

use crate::state::AppState;

/// What the process is for: loading a commit (any commit's code), or building `target`.
pub enum Purpose<'a> {
    Load,
    Build(&'a Target),
}

/// The sandbox of a process for `purpose` that writes its own folders `work` (created here,
/// with a `tmp` inside, which the caller should give the process as TMPDIR), or why it may not
/// run.
pub fn sandbox(
    state: &AppState,
    purpose: Purpose<'_>,
    work: &[PathBuf],
) -> Result<Option<Sandbox>, String> {
    let (warehouse_paths, is_production) = match purpose {
        Purpose::Load => (Vec::new(), false),
        Purpose::Build(target) => (state.warehouse.writable_paths(target), target.is_production()),
    };
    for folder in work {
        std::fs::create_dir_all(folder.join("tmp"))
            .map_err(|e| format!("{}: {e}", folder.display()))?;
    }
    match &state.landlock {
        Ok(_) => {
            let mut writable: Vec<PathBuf> = work.to_vec();
            for path in &warehouse_paths {
                std::fs::create_dir_all(path).map_err(|e| format!("{}: {e}", path.display()))?;
            }
            writable.extend(warehouse_paths);
            Ok(Some(Sandbox::writing(writable)))
        }
        Err(_) if is_production || state.config.allow_unconfined_branch_commands || !files_backed(state) => Ok(None),
        Err(why) => Err(format!(
            "refusing to run a branch's code unconfined on the embedded warehouse: {why}; \
             set allow_unconfined_branch_commands = true to run it anyway (it could then write production's file)"
        )),
    }
}

/// Whether the warehouse keeps deployments in files the server's processes could write (SQLite),
/// rather than behind a server's own access control.
fn files_backed(state: &AppState) -> bool {
    let probe = offshoot_core::SchemaName::parse("offshoot__probe").expect("a valid schema name");
    !state.warehouse.writable_paths(&Target { schema: probe.clone(), production: probe }).is_empty()
}

/// What the server says at start-up about confinement.
pub fn describe(state: &AppState) -> (bool, String) {
    match &state.landlock {
        Ok(abi) => (true, format!("processes from project code are confined with Landlock (ABI {abi})")),
        Err(why) if files_backed(state) && state.config.allow_unconfined_branch_commands => (
            false,
            format!("{why}: branch processes run UNCONFINED (allow_unconfined_branch_commands = true) and could write production's warehouse file"),
        ),
        Err(why) if files_backed(state) => {
            (false, format!("{why}: dbt/Dagster loads and branch command assets on the embedded warehouse will be refused"))
        }
        Err(why) => (false, format!("{why}: processes from project code run unconfined; the warehouse's roles still keep branches out of production")),
    }
}
