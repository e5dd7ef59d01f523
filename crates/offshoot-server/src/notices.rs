//! In-process notices: what one part of the server announces and others subscribe to, so the
//! deployer and the runner never call feedback or data diffs directly. A broadcast channel: a
//! subscriber that falls more than [`CAPACITY`] behind is told how many it missed.

use offshoot_store::{DeploymentId, RunId};
use tokio::sync::{broadcast, watch};

/// Notices held for slow subscribers.
pub const CAPACITY: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A deployment's revision `number` became ready or failed.
    RevisionFinished { deployment: DeploymentId, number: u32 },
    /// A run of the deployment finished (whatever its outcome).
    RunFinished { deployment: DeploymentId },
    /// The deployment's data diffs were computed after a run.
    DataDiffsReady { deployment: DeploymentId },
    /// Production's catch-up run `run` finished; `sources` are the branch deployments whose
    /// tables it promoted.
    CatchUpFinished { production: DeploymentId, run: RunId, sources: Vec<DeploymentId> },
}

pub struct Notices {
    sender: broadcast::Sender<Notice>,
    /// Bumped after every lifecycle write on this server: a hint to event streams to look at the
    /// store now, never the change itself.
    written: watch::Sender<u64>,
}

impl Default for Notices {
    fn default() -> Notices {
        Notices { sender: broadcast::channel(CAPACITY).0, written: watch::channel(0).0 }
    }
}

impl Notices {
    /// Announces `notice`; with no subscriber it is simply gone.
    pub fn send(&self, notice: Notice) {
        let _ = self.sender.send(notice);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Notice> {
        self.sender.subscribe()
    }

    /// After a lifecycle write: wakes everyone watching [`Notices::lifecycle_writes`].
    pub fn lifecycle_written(&self) {
        self.written.send_modify(|count| *count = count.wrapping_add(1));
    }

    pub fn lifecycle_writes(&self) -> watch::Receiver<u64> {
        self.written.subscribe()
    }
}
