//! Services: what the server does, independent of how it is asked. `deployments` applies
//! lifecycle events to the core state machine; `deployer` turns pushes into ready revisions;
//! `runner` launches and executes runs; `catch_up` brings production up to date after a deploy
//! (promoting what branches built, rebuilding the rest) and rolls it back; `maintenance` keeps things tidy (reconcile at start-up,
//! the heartbeat, the TTL, teardown and folder sweeps); `intake` carries out recorded webhooks;
//! `remotes` fetches mirrors when needed; `feedback` writes pull-request comments when told a
//! revision finished; `schedules` starts production's runs (and switched-on branches') when
//! their cron patterns say; `data_diff` compares a branch's tables with production's (`stored_diff` is the form its
//! cache keeps); `watch` polls
//! local repositories. Every operation returns [`error::ServiceError`]; nothing here knows HTTP.

pub mod catch_up;
pub mod data_diff;
pub mod deployer;
pub mod deployments;
pub mod error;
pub mod feedback;
pub mod intake;
pub mod lookup;
pub mod maintenance;
pub mod remotes;
pub mod runner;
pub mod schedules;
pub mod stored_diff;
pub mod watch;
