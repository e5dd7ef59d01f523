//! End-to-end tests of the `offshoot` binary: local commands, and the server as a real process
//! driven over HTTP and by the CLI, against git repositories built by real `git`.

mod auth;
mod commands;
mod confinement;
mod dagster_cloud;
mod data_diff;
mod formatters;
mod hooks;
mod integrations;
mod lifecycle;
mod locations;
mod merge;
mod schedules;
mod server;
mod support;
mod waits;
