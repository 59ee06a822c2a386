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
    /// Print the module's events (imported, exported, released), one line each.
    Monitor {
        /// One JSON object per line instead of text.
        #[arg(long)]
        json: bool,
        /// Stop after this many events.
        #[arg(long)]
        count: Option<u64>,
        /// Stop after this many seconds without an event.
        #[arg(long)]
        idle_timeout: Option<u64>,
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
        println!("tracked        {}", info.tracked);
        println!("events sent    {}", info.events_sent);
        println!("events lost    {}", info.events_lost);
        let d = &info.departed;
        println!(
            "rst guard      {} of {} tuples, {} ms; dropped {}, expired {}, full {}",
            d.active, d.capacity, d.timeout_ms, d.dropped, d.expired, d.full
        );
    }
    Ok(())
}

fn monitor(json: bool, count: Option<u64>, idle: Option<u64>) -> Result<(), prism_sock::Error> {
    use std::io::Write;
    let mut events = prism_sock::EventListener::open()?;
    let mut seen = 0;
    while count.is_none_or(|c| seen < c) {
        let Some(e) = events.next_timeout(idle.map(std::time::Duration::from_secs))? else {
            break;
        };
        seen += 1;
        let line = if json {
            serde_json::to_string(&e).expect("Event serializes")
        } else {
            let why = e
                .reason
                .map(|r| format!(" {r:?}").to_lowercase())
                .unwrap_or_default();
            format!(
                "#{} {:?}{why} {} <-> {} migration {:#x} acked {} received {} after {:?} time-wait {} ms",
                e.seq,
                e.kind,
                e.local,
                e.peer,
                e.migration_id,
                e.bytes_acked,
                e.bytes_received,
                e.duration,
                e.time_wait_ms
            )
        };
        let mut out = std::io::stdout().lock();
        if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
            break;
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let res = match Cli::parse().cmd {
        Cmd::Status { json } => status(json),
        Cmd::Monitor {
            json,
            count,
            idle_timeout,
        } => monitor(json, count, idle_timeout),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("prismctl: {e}");
            ExitCode::FAILURE
        }
    }
}
