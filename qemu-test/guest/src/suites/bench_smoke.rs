//! `make bench` must not rot: every part runs briefly, with the behaviour behind its
//! figures checked (bytes intact, system calls counted, the front node relaying
//! nothing with prism and everything with nginx), and the report is rendered.

use crate::bench::{self, Options};
use crate::check;
use crate::harness::{Env, Log, Test, TestResult};

pub fn tests() -> Vec<Test> {
    vec![Test {
        name: "bench_smoke",
        run: smoke,
    }]
}

fn smoke(env: &Env, log: &mut Log) -> TestResult {
    let opts = Options::smoke();
    let r = bench::run(env, log, &opts, "tcg")?;
    for h in &r.hops {
        let hops = if opts.main_queues.contains(&h.queued) {
            opts.hops
        } else {
            opts.sweep_hops
        };
        check!(
            h.hop.n == hops && h.hop.median_us > 0.0,
            "{} queued {}: {} hops timed",
            h.backend,
            h.queued,
            h.hop.n
        );
        check!(
            h.syscalls_export.0 > 0 && h.syscalls_import.0 > 0,
            "{} queued {}: no system call counted",
            h.backend,
            h.queued
        );
    }
    let of = |b: &str| r.hops.iter().find(|h| h.backend == b && h.queued == 0);
    let (Some(module), Some(repair), Some(floor)) = (of("module"), of("repair"), of("getinfo")) else {
        return Err("a backend's empty-queue case is missing".into());
    };
    // One request and its answer per side, plus the close of the exported fd.
    check!(
        module.syscalls_export.1 <= 3 && module.syscalls_import.1 <= 2,
        "module hop made {:?} + {:?} system calls",
        module.syscalls_export,
        module.syscalls_import
    );
    check!(
        repair.syscalls_export.0 > module.syscalls_export.1
            && repair.syscalls_import.0 > module.syscalls_import.1,
        "repair made no more system calls than the module: {:?}/{:?}",
        repair.syscalls_export,
        repair.syscalls_import
    );
    check!(
        floor.syscalls_export.1 <= 3,
        "GET_INFO took {:?} system calls",
        floor.syscalls_export
    );
    for raw in ["raw-getinfo", "raw-genl"] {
        let Some(h) = of(raw) else {
            return Err(format!("the {raw} floor is missing"));
        };
        // A send and a receive, nothing else.
        check!(
            h.syscalls_export == (2, 2) && h.syscalls_import == (2, 2),
            "{raw} round trip made {:?} / {:?} system calls",
            h.syscalls_export,
            h.syscalls_import
        );
    }
    check!(
        r.live.len() == opts.live.len(),
        "live-socket cases: {}",
        r.live.len()
    );
    for size in &opts.load.sizes {
        for mode in ["nginx", "prism", "direct", "nginx-tls", "prism-tls", "direct-tls"] {
            check!(
                r.dsr
                    .iter()
                    .any(|d| d.mode == mode && d.object_size == *size && d.requests > 0),
                "no {mode} run for {size} B"
            );
        }
    }
    let big = *opts.load.sizes.iter().max().unwrap_or(&0);
    let sent = |m: &str| {
        r.dsr
            .iter()
            .find(|d| d.mode == m && d.object_size == big)
            .map_or(0.0, |d| d.fe_tx_bytes_per_request)
    };
    for (proxy, prism) in [("nginx", "prism"), ("nginx-tls", "prism-tls")] {
        let (relayed, not_relayed) = (sent(proxy) >= big as f64, sent(prism) < big as f64 / 8.0);
        check!(
            relayed,
            "{proxy}'s front node sent {:.0} B per {big} B object",
            sent(proxy)
        );
        check!(
            not_relayed,
            "{prism}'s front node sent {:.0} B per {big} B object",
            sent(prism)
        );
    }
    for backend in ["module", "repair"] {
        check!(
            r.handoff.iter().any(|h| h.backend == backend && h.latency.n > 0),
            "no hand-off timed with {backend}"
        );
    }
    // The bench records failures instead of stopping on them; here they fail.
    for d in &r.dsr {
        check!(
            d.errors == 0 && (!d.mode.starts_with("prism") || d.node_rsts == 0),
            "{} {} B: {} failed requests, {} RSTs from the nodes",
            d.mode,
            d.object_size,
            d.errors,
            d.node_rsts
        );
    }
    for h in &r.handoff {
        check!(
            h.errors == 0,
            "hand-off run ({}, {} connections): {} failed requests",
            h.backend,
            h.connections,
            h.errors
        );
    }
    let dir = std::env::temp_dir().join(format!("bench-report-{}", std::process::id()));
    bench::report::write(&r, &dir)?;
    let md = std::fs::read_to_string(dir.join("benchmarks.md")).map_err(|e| e.to_string())?;
    let svg = std::fs::read_to_string(dir.join("benchmarks.svg")).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_dir_all(&dir);
    check!(
        md.contains("## 1. Migration cost") && md.contains("| prism |") && svg.contains("<svg"),
        "the report is incomplete"
    );
    Ok(())
}
