//! `we`: the command line of codeb's control plane. A thin client of `codeb-daemon`'s
//! `/api/v1` (the contract is `codeb-api`): it parses, sends, and renders; the server
//! authorizes and does the work.
//!
//! - [`cli`]: the commands of the operations manual (clap).
//! - [`config`]: server and token (credentials file, `CODEB_SERVER`/`CODEB_TOKEN`).
//! - [`client`]: reqwest with timeouts and a user agent; API errors → `we` errors.
//! - [`commands`]: one function per command, returning the exit status; [`domain`]: `we domain`.
//! - [`follow`]: `logs -f` across reconnects without repeated or lost lines.
//! - [`scale`]: `we scale k8s render|apply` (renders with codeb-k8s, applies with kube-rs).
//! - [`scan`]: the local side of `we scan --diff` (through codeb-workflow-gen's library).
//! - [`output`]: tables or `--json` on stdout, messages and the spinner on stderr.
//! - [`exit`]: the exit codes (0 ok, 1 wrong, 2 usage, 3 forbidden, 4 not logged in).

pub mod backup;
pub mod cli;
pub mod client;
pub mod commands;
pub mod config;
pub mod domain;
pub mod exit;
pub mod follow;
pub mod init;
pub mod output;
pub mod scale;
pub mod scan;

use std::process::ExitCode;

use clap::Parser;

use crate::config::Env;
use crate::exit::Exit;
use crate::output::Out;

/// The binary: arguments and environment in, exit code out.
pub fn main() -> ExitCode {
    let env = Env::from_process();
    let cli = match cli::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                Exit::Usage.into()
            } else {
                Exit::Ok.into()
            };
        }
    };
    run(cli, &env).into()
}

/// Runs one command; errors are reported on stderr and become their exit code.
pub fn run(cli: cli::Cli, env: &Env) -> Exit {
    let out = Out::new(cli.json, env.no_color);
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            out.error(&exit::WeError::Io(format!(
                "cannot start the async runtime: {e}"
            )));
            return Exit::Usage;
        }
    };
    match rt.block_on(commands::dispatch(cli.command, env, &out)) {
        Ok(status) => status,
        Err(e) => {
            out.error(&e);
            e.exit()
        }
    }
}
