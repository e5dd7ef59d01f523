//! The native format as a code location: SQL and command assets read from the commit's tree,
//! built asset by asset by the server.

use std::collections::BTreeMap;

use offshoot_core::{AssetKey, Snapshot};
use offshoot_project::Manifest;

use crate::{
    BuildOutcome, BuildRequest, CodeLocation, LoadInput, LocationError, ToolCommand, ToolOutput,
};

pub struct NativeLocation;

impl CodeLocation for NativeLocation {
    fn kind(&self) -> &'static str {
        "native"
    }

    fn needs_checkout(&self) -> bool {
        false
    }

    fn load(&self, _manifest: &Manifest, input: &LoadInput<'_>) -> Result<Snapshot, LocationError> {
        Ok(offshoot_project::load(input.files)?.snapshot)
    }

    fn build_command(&self, _request: &BuildRequest<'_>) -> Option<Result<ToolCommand, String>> {
        None
    }

    fn build_outcomes(
        &self,
        _request: &BuildRequest<'_>,
        _output: &ToolOutput,
    ) -> BTreeMap<AssetKey, BuildOutcome> {
        BTreeMap::new()
    }
}
