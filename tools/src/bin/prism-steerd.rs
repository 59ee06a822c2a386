//! prism-steerd: the L4 steering daemon (runs on the L4 host, programs nftables).

use clap::Parser;
use prism_tools::cluster::Cluster;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(about = "Steers each client flow to the node that owns its connection")]
struct Cli {
    /// Cluster configuration (JSON).
    #[arg(long)]
    config: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = Cluster::load(&cli.config).and_then(|c| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("tokio: {e}"))?
            .block_on(prism_tools::steerd::run(c))
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("prism-steerd: {e}");
            ExitCode::FAILURE
        }
    }
}
