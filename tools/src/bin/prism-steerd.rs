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
    // Every steering batch allocates a 128 KiB message buffer (rustables). glibc maps
    // blocks that size afresh each time and unmaps them after (or trims the heap under
    // a freed one), and each unmap stops every CPU running one of the daemon's threads
    // to flush its TLB: milliseconds per batch in an emulated guest. Kept in the heap,
    // the memory is reused.
    // SAFETY: mallopt only sets allocator parameters; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
    }
    let result = Cluster::load(&cli.config).and_then(|c| {
        // One thread: every request passes three tasks (session, batcher, replies),
        // and on a runtime with several workers each pass could wake another thread;
        // the batcher's netlink round trip is short, and batches grow under load.
        tokio::runtime::Builder::new_current_thread()
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
