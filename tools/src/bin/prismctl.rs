//! `prismctl`: inspect the prism_sock module from the command line.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(version, about = "Inspect and drive the prism_sock kernel module")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Is the module loaded? Its version, protocol version and counters.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn status(json: bool) -> Result<(), prism_sock::Error> {
    let client = prism_sock::Client::connect()?;
    let info = client.info()?;
    if json {
        println!("{}", serde_json::to_string(&info).expect("ModuleInfo serializes"));
    } else {
        println!(
            "module         loaded (generic netlink family {} id {})",
            prism_sock::uapi::FAMILY_NAME,
            client.family_id()
        );
        println!("module version {}", info.module_version);
        println!("protocol       {}", info.proto_version);
        println!("exports        {}", info.exports);
        println!("imports        {}", info.imports);
        println!("releases       {}", info.releases);
        println!("errors         {}", info.errors);
    }
    Ok(())
}

fn main() -> ExitCode {
    let res = match Cli::parse().cmd {
        Cmd::Status { json } => status(json),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("prismctl: {e}");
            ExitCode::FAILURE
        }
    }
}
