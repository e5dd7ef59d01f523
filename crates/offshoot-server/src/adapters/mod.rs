//! Adapters: the server's ways to the world outside it. `project` loads a commit's project
//! (through `offshoot-location`) and reads git; `mirror` keeps remote repositories as bare
//! mirrors; `forge` is the GitHub and GitLab REST client; `confine` says which folders a
//! process from project code may write; `process` runs and streams a command step. Adapters use
//! only the foundation (and `confine`), never a service or the HTTP layer.

pub mod confine;
pub mod forge;
pub mod mirror;
pub mod process;
pub mod project;
