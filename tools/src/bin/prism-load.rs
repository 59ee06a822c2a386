//! prism-load: keep-alive load through the VIP with a digest check of every body.

use clap::Parser;
use prism_tools::cluster::Cluster;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(about = "Fetch catalogue objects over keep-alive connections and check them")]
struct Cli {
    /// Cluster configuration (JSON): the catalogue.
    #[arg(long)]
    config: PathBuf,
    /// Address to connect to (the VIP and port).
    #[arg(long)]
    target: SocketAddr,
    /// Concurrent connections.
    #[arg(long, default_value_t = 10)]
    connections: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let cluster = match Cluster::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("prism-load: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build();
    let Ok(runtime) = runtime else {
        eprintln!("prism-load: cannot start tokio");
        return ExitCode::FAILURE;
    };
    let duration = Duration::from_secs_f64(cli.duration.max(0.0));
    let summary = runtime.block_on(prism_tools::load::run(
        cli.target,
        &cluster.objects,
        cli.connections,
        duration,
    ));
    println!("{}", serde_json::to_string(&summary).unwrap_or_default());
    if summary.failed == 0 && summary.requests > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
