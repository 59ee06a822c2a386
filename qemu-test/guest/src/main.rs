//! Guest-side entry point: runs the prism-sock test suite inside the test kernel, or
//! brings the multi-host topology up for the demo.

mod bench;
mod harness;
mod ktls;
mod migrate;
mod module;
mod netlink_raw;
mod sockopt;
mod stack;
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
        /// Leave out tests whose name contains one of these comma-separated parts (a
        /// kernel that lacks what they need); each is reported as SKIP.
        #[arg(long)]
        skip: Option<String>,
        /// Longest one test may run, in seconds.
        #[arg(long, default_value_t = 180)]
        test_timeout: u64,
        /// Runs of each test (more than one to catch a rare failure).
        #[arg(long, default_value_t = 1)]
        repeat: u32,
    },
    /// Run one test (the suite runs each test this way, in its own process).
    #[command(hide = true)]
    RunOne {
        #[command(flatten)]
        env: harness::Env,
        #[arg(long)]
        name: String,
        #[arg(long)]
        log: PathBuf,
    },
    /// Run the benchmarks (`make bench`); results go to OUT/bench.json.
    Bench {
        #[command(flatten)]
        env: harness::Env,
        #[arg(long)]
        out: PathBuf,
        /// How the guest is run: `tcg` or `kvm` (for the report).
        #[arg(long, default_value = "tcg")]
        accel: String,
        /// A short run of every part.
        #[arg(long)]
        smoke: bool,
        /// Only these parts: hops, live, dsr, or handoff (the hand-off runs of dsr).
        #[arg(long, value_delimiter = ',', default_value = "hops,live,dsr")]
        parts: Vec<String>,
        /// wrk connections of the hand-off runs, instead of the run's own.
        #[arg(long, value_delimiter = ',')]
        handoff_connections: Vec<usize>,
        /// Seconds of each load run, instead of the run's own.
        #[arg(long)]
        load_secs: Option<u32>,
    },
    /// Hop one way of moving `hops` times (`make profile` records it with perf).
    HopLoop {
        #[command(flatten)]
        env: harness::Env,
        /// module, repair, getinfo, raw-getinfo or raw-genl.
        #[arg(long, default_value = "module")]
        mech: String,
        /// Bytes queued in each direction.
        #[arg(long, default_value_t = 0)]
        queued: usize,
        #[arg(long, default_value_t = 10_000)]
        hops: usize,
        /// Connections that hop together.
        #[arg(long, default_value_t = 16)]
        batch: usize,
        /// perf's control fifo (`perf record -D -1 --control fifo:...`): recording is
        /// enabled for the hops only, not for the set-up.
        #[arg(long)]
        perf_ctl: Option<PathBuf>,
    },
    /// Write docs/benchmarks.{md,svg,json} from a bench.json (runs on the host).
    BenchReport {
        /// The guest's bench.json.
        results: PathBuf,
        /// Where the page goes.
        #[arg(long, default_value = "docs")]
        dir: PathBuf,
    },
    /// Build the topology (client, l4, fe, be1, be2) and leave it up.
    TopologyUp,
    /// Try one export and print the errno (run without CAP_NET_ADMIN by a test).
    #[command(hide = true)]
    ExportProbe,
    /// Try one import of the blob in FILE and print the errno (run without
    /// CAP_NET_ADMIN by a test).
    #[command(hide = true)]
    ImportProbe { file: String },
    /// Export the inherited socket FD with DETACH and write the blob to OUT (traced by a
    /// test to count system calls).
    #[command(hide = true)]
    HopExportProbe { fd: i32, out: String },
    /// Import the blob in FILE and write REPLY on the new socket (traced by a test).
    #[command(hide = true)]
    HopImportProbe { file: String, reply: String },
    /// Join each multicast group and print how that went (run without CAP_NET_ADMIN by a test).
    #[command(hide = true)]
    ListenProbe,
    /// Move a loopback connection with a blob asking for huge buffers and print the
    /// sizes the import gave (run in a fresh network namespace by a test).
    #[command(hide = true)]
    BufferProbe,
    /// Detach loopback connections past the namespace quota and print how each went
    /// (run in a user and network namespace by a test).
    #[command(hide = true)]
    QuotaProbe,
}

fn main() -> ExitCode {
    match Cli::parse().cmd {
        Cmd::Suite {
            env,
            out,
            filter,
            skip,
            test_timeout,
            repeat,
        } => harness::run(
            &env,
            &out,
            (filter.as_deref(), skip.as_deref()),
            std::time::Duration::from_secs(test_timeout),
            repeat,
        ),
        Cmd::RunOne { env, name, log } => harness::run_one(&env, &name, &log),
        Cmd::Bench {
            env,
            out,
            accel,
            smoke,
            parts,
            handoff_connections,
            load_secs,
        } => {
            let mut opts = if smoke {
                bench::Options::smoke()
            } else {
                bench::Options::full()
            };
            if !handoff_connections.is_empty() {
                opts.load.handoff_connections = handoff_connections;
            }
            if let Some(secs) = load_secs {
                opts.load.secs = secs;
            }
            let mut log = harness::Log::echoing();
            let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
            let run = bench::run_parts(&env, &mut log, &opts, &accel, &parts).and_then(|r| {
                let json = serde_json::to_string_pretty(&r).map_err(|e| e.to_string())?;
                std::fs::write(out.join("bench.json"), json).map_err(|e| e.to_string())
            });
            probe_exit(run)
        }
        Cmd::HopLoop {
            env,
            mech,
            queued,
            hops,
            batch,
            perf_ctl,
        } => probe_exit(bench::hop_loop(
            &env,
            &mech,
            queued,
            hops,
            batch,
            perf_ctl.as_deref(),
        )),
        Cmd::BenchReport { results, dir } => probe_exit(
            std::fs::read_to_string(&results)
                .map_err(|e| format!("{}: {e}", results.display()))
                .and_then(|t| serde_json::from_str(&t).map_err(|e| format!("{}: {e}", results.display())))
                .and_then(|r| bench::report::write(&r, &dir)),
        ),
        Cmd::ImportProbe { file } => {
            println!("{}", suites::import_refusals::import_probe(&file));
            ExitCode::SUCCESS
        }
        Cmd::QuotaProbe => probe_exit(suites::export::quota_probe().map(|out| println!("{out}"))),
        Cmd::BufferProbe => {
            probe_exit(suites::import_refusals::buffer_probe().map(|sizes| println!("{sizes}")))
        }
        Cmd::HopExportProbe { fd, out } => probe_exit(suites::hops::hop_export_probe(fd, &out)),
        Cmd::HopImportProbe { file, reply } => probe_exit(suites::hops::hop_import_probe(&file, &reply)),
        Cmd::ListenProbe => {
            println!("{}", suites::release::listen_probe());
            ExitCode::SUCCESS
        }
        Cmd::ExportProbe => {
            println!("{}", suites::export::export_probe());
            ExitCode::SUCCESS
        }
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

fn probe_exit(r: Result<(), String>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
