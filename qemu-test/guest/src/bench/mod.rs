//! `make bench`: what one atomic call saves and what direct server return gives an L7
//! load balancer, measured side by side in one guest run. Benchmarks print figures; the
//! `bench_smoke` test runs them briefly so they keep working. `report` turns the
//! results into docs/benchmarks.md and its plot.

pub mod dsr;
pub mod hops;
mod raw;
pub mod report;
pub mod results;
mod syscalls;

use crate::harness::{Env, Log};
use crate::suites::common::loaded;
use crate::topology::Topology;
use hops::{Bench, Mech};
use results::Results;

/// How much to run.
pub struct Options {
    /// Timed hops of the main cases (empty queues and 64 KiB each way).
    pub hops: usize,
    /// Further hops with system calls counted.
    pub counted: usize,
    /// Connections that hop together (one export loop, then one import loop).
    pub batch: usize,
    /// Timed hops of each other queue size.
    pub sweep_hops: usize,
    /// Bytes queued in each direction: the main cases first.
    pub main_queues: Vec<usize>,
    pub sweep_queues: Vec<usize>,
    /// Live migrated sockets at which hop cost is measured, and hops at each.
    pub live: Vec<usize>,
    pub live_hops: usize,
    /// Rounds of the 64 MiB moved/never-moved throughput comparison.
    pub throughput_rounds: u16,
    pub load: dsr::Load,
}

impl Options {
    /// The published run: at least 10,000 hops per main case.
    pub fn full() -> Self {
        Self {
            hops: 10_000,
            counted: 100,
            batch: 16,
            sweep_hops: 1_000,
            main_queues: vec![0, 64 << 10],
            // 512 KiB each way is 1 MiB queued: the module's limit per socket.
            sweep_queues: vec![4 << 10, 512 << 10],
            live: vec![1, 1_000, 10_000],
            live_hops: 1_000,
            throughput_rounds: 3,
            load: dsr::Load {
                sizes: vec![4 << 10, 64 << 10, 1 << 20, 16 << 20],
                connections: 8,
                handoff_connections: vec![1, 8, 64],
                secs: 10,
            },
        }
    }

    /// A short run of every part, for the smoke test.
    pub fn smoke() -> Self {
        Self {
            hops: 40,
            counted: 5,
            batch: 2,
            sweep_hops: 10,
            main_queues: vec![0, 64 << 10],
            sweep_queues: vec![512 << 10],
            live: vec![1, 50],
            live_hops: 10,
            throughput_rounds: 1,
            load: dsr::Load {
                sizes: vec![4 << 10, 1 << 20],
                connections: 4,
                handoff_connections: vec![1, 4],
                secs: 2,
            },
        }
    }
}

/// Runs every part; figures go to `log` as they come.
pub fn run(env: &Env, log: &mut Log, opts: &Options, accel: &str) -> Result<Results, String> {
    run_parts(env, log, opts, accel, &["hops", "live", "dsr"])
}

/// Runs the parts named (`hops`, `live`, `dsr`; `handoff` is the hand-off runs of `dsr`
/// alone, for profiling).
pub fn run_parts(
    env: &Env,
    log: &mut Log,
    opts: &Options,
    accel: &str,
    parts: &[&str],
) -> Result<Results, String> {
    let mut results = Results {
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_err(|e| e.to_string())?
            .trim()
            .to_string(),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        accel: accel.to_string(),
        ..Results::default()
    };
    log.line(format!(
        "guest kernel {}, {} CPUs, {}",
        results.kernel, results.cpus, results.accel
    ));
    if !crate::module::is_loaded() {
        drop(loaded(env, log)?);
    }
    if parts.contains(&"hops") || parts.contains(&"live") {
        let _topology = Topology::up()?;
        if parts.contains(&"hops") {
            results.hops.extend(interleaved(log, opts)?);
        }
        if parts.contains(&"hops") {
            results.hops.extend(floors(log, opts)?);
        }
        if parts.contains(&"live") {
            results.live = Bench::new(Mech::Module, opts.batch)?.live(log, &opts.live, opts.live_hops)?;
        }
        // Last: each round steers its moved flow's ephemeral client port to be1, and a
        // later connection that drew the same port would be steered there too.
        if parts.contains(&"hops") {
            results.throughput = crate::suites::hops::throughput_rounds(log, opts.throughput_rounds, 8900)?
                .into_iter()
                .map(|(never_moved_mbs, moved_mbs)| results::ThroughputCase {
                    never_moved_mbs,
                    moved_mbs,
                })
                .collect();
        }
    }
    if parts.contains(&"dsr") || parts.contains(&"handoff") {
        let sweep = parts.contains(&"dsr");
        let (dsr, handoff) = dsr::run(env, log, &opts.load, sweep)?;
        results.dsr = dsr;
        results.handoff = handoff;
    }
    Ok(results)
}

/// The module and repair cases side by side, batch by batch (see
/// [`hops::side_by_side`]).
fn interleaved(log: &mut Log, opts: &Options) -> Result<Vec<results::HopCase>, String> {
    let mut module = Bench::new(Mech::Module, opts.batch)?;
    let mut repair = Bench::new(Mech::Repair, opts.batch)?;
    let cases = opts
        .main_queues
        .iter()
        .map(|&q| (q, opts.hops))
        .chain(opts.sweep_queues.iter().map(|&q| (q, opts.sweep_hops)));
    let mut out = Vec::new();
    for (queued, hops) in cases {
        let mut samples = [hops::Samples::default(), hops::Samples::default()];
        let benches = &mut [&mut module, &mut repair];
        hops::side_by_side(log, benches, queued, hops, opts.counted, &mut samples)?;
        for (mech, s) in [Mech::Module, Mech::Repair].into_iter().zip(samples) {
            out.push(s.summary(log, mech, queued));
        }
    }
    // The report lists each mechanism's cases together.
    out.sort_by_key(|c| c.backend != Mech::Module.name());
    Ok(out)
}

/// The floors call by call side by side (see [`hops::Bench::floor_samples`]): the
/// userlib / raw ratio compares figures taken at the same moments.
fn floors(log: &mut Log, opts: &Options) -> Result<Vec<results::HopCase>, String> {
    let mechs = [Mech::GetInfo, Mech::RawGetInfo, Mech::RawGenl];
    let mut bench = Bench::new(Mech::GetInfo, opts.batch)?;
    let mut samples: [hops::Samples; 3] = Default::default();
    bench.floor_samples(&mechs, opts.hops, opts.counted, &mut samples)?;
    Ok(mechs
        .iter()
        .zip(samples)
        .map(|(mech, s)| s.summary(log, *mech, 0))
        .collect())
}

/// `hops` hops (or floor round trips) of one mechanism named as in the report, for a
/// profiler to record: topology and module set up first, figures printed after. With
/// `perf_ctl`, perf records the hops alone.
pub fn hop_loop(
    env: &Env,
    mech: &str,
    queued: usize,
    hops: usize,
    batch: usize,
    perf_ctl: Option<&std::path::Path>,
) -> Result<(), String> {
    let mech = [
        Mech::Module,
        Mech::Repair,
        Mech::GetInfo,
        Mech::RawGetInfo,
        Mech::RawGenl,
    ]
    .into_iter()
    .find(|m| m.name() == mech)
    .ok_or_else(|| format!("unknown mechanism {mech}"))?;
    let mut log = Log::echoing();
    if !crate::module::is_loaded() {
        drop(loaded(env, &mut log)?);
    }
    let _topology = Topology::up()?;
    let mut bench = Bench::new(mech, batch)?;
    let perf = |cmd: &str| match perf_ctl {
        Some(p) => std::fs::write(p, cmd).map_err(|e| format!("{}: {e}", p.display())),
        None => Ok(()),
    };
    println!("hop-loop: start");
    perf("enable\n")?;
    let done = bench.case(&mut log, mech, queued, hops, 0);
    perf("disable\n")?;
    done?;
    Ok(())
}
