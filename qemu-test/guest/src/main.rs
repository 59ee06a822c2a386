//! Guest-side entry point: runs the prism-sock test suite inside the test kernel, or
//! brings the multi-host topology up for the demo.

mod harness;
mod module;
mod netlink_raw;
mod suites;
mod topology;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(about = "prism-sock guest test suite")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the tests; results go to OUT/results.txt, one log per test in OUT/logs/.
    Suite {
        #[command(flatten)]
        env: harness::Env,
        /// Output folder (shared with the host).
        #[arg(long)]
        out: PathBuf,
        /// Run only tests whose name contains this.
        #[arg(long)]
        filter: Option<String>,
    },
    /// Build the topology (client, l4, fe, be1, be2) and leave it up.
    TopologyUp,
}

fn main() -> ExitCode {
    match Cli::parse().cmd {
        Cmd::Suite { env, out, filter } => harness::run(&env, &out, filter.as_deref()),
        Cmd::TopologyUp => match topology::Topology::up() {
            Ok(t) => {
                std::mem::forget(t);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("topology: {e}");
                ExitCode::FAILURE
            }
        },
    }
}
