//! End-to-end tests of the codeb binaries, run against real components: real sockets, real
//! HTTP servers, act (a real Actions runtime), actionlint and zizmor. Each test gets its own
//! temporary directory and an environment scrubbed of the ambient CI's variables.
//!
//! The binaries must be built first (`cargo build --workspace --bins`); `scripts/test` does it.

#![allow(clippy::print_stdout, clippy::print_stderr)] // tests report what they measured

mod util;

mod actions;
mod backup;
mod caddy_reload;
mod daemon_intake;
mod deploy;
mod doctor;
mod domain;
mod fake_github;
mod healthcheck;
mod infra;
mod install;
mod port_validate;
mod preview_data;
mod previews;
mod provision;
mod scale_hosts;
mod stores;
mod sudo;
mod tidy;
mod we_cli;
mod we_control;
mod we_scale;
mod workflow_gen;
