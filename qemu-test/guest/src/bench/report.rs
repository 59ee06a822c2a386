//! docs/benchmarks.md, docs/benchmarks.svg and docs/benchmarks.json from one run's
//! results: tables, the ratios measured within the run, and one plot.

use super::results::{Dist, DsrCase, HopCase, Results};
use plotters::prelude::*;
use std::fmt::Write;
use std::path::Path;

fn size(b: usize) -> String {
    match b {
        0 => "0".into(),
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} B"),
    }
}

fn hop<'a>(r: &'a Results, backend: &str, queued: usize) -> Option<&'a HopCase> {
    r.hops.iter().find(|h| h.backend == backend && h.queued == queued)
}

fn dsr<'a>(r: &'a Results, mode: &str, size: usize) -> Option<&'a DsrCase> {
    r.dsr.iter().find(|d| d.mode == mode && d.object_size == size)
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
        _ => "n/a".into(),
    }
}

fn syscalls((lo, hi): (u64, u64)) -> String {
    if lo == hi {
        lo.to_string()
    } else {
        format!("{lo}-{hi}")
    }
}

/// Round trips that stand in for a hop as floors, not hops.
const FLOORS: [&str; 3] = ["getinfo", "raw-getinfo", "raw-genl"];

/// The queue sizes measured, in order.
fn queues(r: &Results) -> Vec<usize> {
    let mut q: Vec<usize> = r
        .hops
        .iter()
        .filter(|h| !FLOORS.contains(&h.backend.as_str()))
        .map(|h| h.queued)
        .collect();
    q.sort_unstable();
    q.dedup();
    q
}

fn sizes(r: &Results) -> Vec<usize> {
    let mut s: Vec<usize> = r.dsr.iter().map(|d| d.object_size).collect();
    s.sort_unstable();
    s.dedup();
    s
}

/// The markdown page.
pub fn markdown(r: &Results) -> String {
    let mut m = String::new();
    let w = &mut m;
    let _ = writeln!(w, "# Benchmarks\n");
    let _ = writeln!(
        w,
        "Measured by `make bench` in one guest run: Linux {}, {} vCPUs, {}. {}\
         Compare the ratios, which are measured side by side in the same run; raw figures are \
         in [benchmarks.json](benchmarks.json), the plot is [benchmarks.svg](benchmarks.svg).\n",
        r.kernel,
        r.cpus,
        if r.accel == "tcg" {
            "emulated by QEMU TCG (no KVM on this machine)"
        } else {
            "QEMU with KVM"
        },
        if r.accel == "tcg" {
            "Every instruction is emulated, so absolute times are many times those of real hardware. "
        } else {
            ""
        }
    );
    let _ = writeln!(w, "![hop cost, throughput, live sockets](benchmarks.svg)\n");

    let _ = writeln!(w, "## 1. Migration cost per hop\n");
    let _ = writeln!(
        w,
        "One hop is an export with DETACH and close on `fe` plus an import on `be1`; the \
         connection goes back and forth while l4 holds the client's packets, and afterwards \
         every queued byte is checked in both directions. The repair hop is CRIU libsoccr's \
         order (`repair::export_held`: TCP_REPAIR, capture, close in repair mode; the l4 \
         hold keeps packets away, as CRIU's network lock does). *queued* is the bytes in each \
         direction: unread by the server, and sent by it but unacknowledged. System calls are \
         counted with a perf counter on `raw_syscalls:sys_enter` for the worker thread of \
         each side, over separate hops from the timed ones.\n"
    );
    let _ = writeln!(
        w,
        "| backend | queued | hops | hop median | hop p99 | export median | import median | syscalls export+close | syscalls import | state |"
    );
    let _ = writeln!(w, "|---|---|---|---|---|---|---|---|---|---|");
    let mut rows: Vec<&HopCase> = r.hops.iter().collect();
    rows.sort_by_key(|h| (h.backend.clone(), h.queued));
    for h in rows {
        let _ = writeln!(
            w,
            "| {} | {} | {} | {:.0} us | {:.0} us | {:.0} us | {:.0} us | {} | {} | {} B |",
            h.backend,
            size(h.queued),
            h.hop.n,
            h.hop.median_us,
            h.hop.p99_us,
            h.export.median_us,
            h.import.median_us,
            syscalls(h.syscalls_export),
            syscalls(h.syscalls_import),
            h.state_bytes
        );
    }
    let med = |b: &str, q: usize| hop(r, b, q).map(|h| h.hop.median_us);
    let p99 = |b: &str, q: usize| hop(r, b, q).map(|h| h.hop.p99_us);
    let _ = writeln!(
        w,
        "\nTime of a module hop relative to a TCP_REPAIR hop and to the floor (median; p99 in brackets):\n"
    );
    for q in queues(r) {
        let _ = writeln!(
            w,
            "- queued {} each way: module / repair = **{}** ({}); module / GET_INFO floor = {}",
            size(q),
            ratio(med("module", q), med("repair", q)),
            ratio(p99("module", q), p99("repair", q)),
            ratio(med("module", q), med("getinfo", 0)),
        );
    }
    let sys = |b: &str| hop(r, b, 0).map(|h| h.syscalls_export.1 + h.syscalls_import.1);
    let _ = writeln!(
        w,
        "\nSystem calls per hop (both sides, empty queues): module {}, repair {}.",
        sys("module").map_or("n/a".into(), |n| n.to_string()),
        sys("repair").map_or("n/a".into(), |n| n.to_string())
    );
    let _ = writeln!(
        w,
        "\nThe floors are one round trip on each side: `getinfo` is userlib's `Client::info` \
         (GET_INFO), `raw-getinfo` the same request over a raw netlink socket with no \
         library, `raw-genl` nlctrl's CTRL_CMD_GETFAMILY over a raw socket: what any \
         generic netlink call costs here. userlib / raw GET_INFO = **{}**; raw GET_INFO / \
         raw nlctrl = {}; module hop (empty) / raw nlctrl = {}.\n",
        ratio(med("getinfo", 0), med("raw-getinfo", 0)),
        ratio(med("raw-getinfo", 0), med("raw-genl", 0)),
        ratio(med("module", 0), med("raw-genl", 0)),
    );
    if !r.throughput.is_empty() {
        let mut ratios: Vec<f64> = r
            .throughput
            .iter()
            .map(|t| t.moved_mbs / t.never_moved_mbs)
            .collect();
        ratios.sort_by(f64::total_cmp);
        let rounds: Vec<String> = r
            .throughput
            .iter()
            .map(|t| format!("{:.0} / {:.0} MB/s", t.moved_mbs, t.never_moved_mbs))
            .collect();
        let _ = writeln!(
            w,
            "### Throughput after a move\n\n64 MiB sent to the client over a connection \
             warmed on `fe` and moved to `be1`, against one that never moved, side by side: \
             moved / never moved = **{:.0}%** (median of {} rounds: {}).\n",
            100.0 * ratios[ratios.len() / 2],
            ratios.len(),
            rounds.join(", ")
        );
    }
    let _ = writeln!(w, "### End-to-end hand-off, step by step\n");
    let _ = writeln!(
        w,
        "wrk fetches 4 KiB objects through the VIP, the owner changing at every request, with \
         one connection (one request at a time: the idle case) and with more. From the moment \
         the sender has a request parsed to the moment the owner's first response byte is \
         written; both ends read CLOCK_MONOTONIC of the one guest kernel. Steps (medians): \
         the sender's export; the signed hand-off frame to the owner; the owner's import; \
         import -> first byte (the answer to the sender and, with the module, the response \
         at once while prism-steerd steers the flow in the background and the sender forwards \
         the client's late packets; with the repair backend, which cannot forward, the flow is \
         held at l4 and the owner waits for the steer), and that step in three: the answer \
         to the sender written, the request served from its buffer, and the first response \
         write (a system call that carries the segments through two veth pairs and l4's \
         forwarding to the client). Steer is the owners' round trip to \
         prism-steerd (one nf_tables netlink batch). The nodes, prism-steerd, wrk and l4 share \
         the guest's CPUs.\n"
    );
    let _ = writeln!(
        w,
        "| backend | connections | hand-offs | failed requests | median | p99 | export | frame | import | import -> first byte | of it: answer | serve | first write | steer |"
    );
    let _ = writeln!(w, "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for h in &r.handoff {
        let step = |f: fn(&super::results::StepDists) -> &Dist| {
            h.steps
                .as_ref()
                .map_or("-".to_string(), |s| format!("{:.0} us", f(s).median_us))
        };
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {:.0} us | {:.0} us | {} | {} | {} | {} | {} | {} | {} | {} |",
            h.backend,
            h.connections,
            h.latency.n,
            h.errors,
            h.latency.median_us,
            h.latency.p99_us,
            step(|s| &s.export),
            step(|s| &s.frame),
            step(|s| &s.import),
            step(|s| &s.to_first_byte),
            step(|s| &s.answer),
            step(|s| &s.serve),
            step(|s| &s.write),
            step(|s| &s.steer),
        );
    }
    let e2e = |b: &str, c: usize| {
        r.handoff
            .iter()
            .find(|h| h.backend == b && h.connections == c)
            .map(|h| h.latency.median_us)
    };
    for c in r
        .handoff
        .iter()
        .filter(|h| h.backend == "module")
        .map(|h| h.connections)
    {
        let _ = writeln!(
            w,
            "\n{c} connection(s): module / repair, median: **{}**; module hand-off / module hop (empty): {}",
            ratio(e2e("module", c), e2e("repair", c)),
            ratio(e2e("module", c), med("module", 0)),
        );
    }

    let _ = writeln!(w, "\n## 2. L7 direct server return against a reverse proxy\n");
    let _ = writeln!(
        w,
        "wrk with keep-alive connections fetches objects owned by be1 and be2. **nginx**: \
         Debian's nginx on `fe` (one worker), `proxy_pass` to the owner over keep-alive upstream \
         connections; every connection asks for keys of both owners in turn. **prism**: \
         prism-node on every node with the module, same requests: the owner changes at every \
         request, so every request hops (from fe for a connection's first, then from owner to \
         owner: fe sees only the first). **prism-affine**: each connection asks for one owner's \
         keys, so it hops once and stays. **direct**: each client talks straight to the owner \
         of its keys (the upper bound). The `-tls` modes are the same over HTTPS (wrk with \
         OpenSSL, one handshake per connection): nginx terminates TLS and proxies in clear; \
         prism-node terminates it with rustls and runs the session in kernel TLS, whose state \
         moves with every hand-off; direct-tls is the owners' own HTTPS. The front node's processes run on one CPU (taskset). \
         Front CPU is the user and system time of every process in `fe`'s namespace; softirq \
         work charged to other tasks is not in it. Bytes sent is what `fe`'s link transmitted, \
         retransmissions included: relayed responses for nginx, hand-off frames for prism. \
         Node RSTs are the resets fe, be1 and be2 sent (a prism run with any fails; nginx \
         resets its upstream connection when wrk aborts a request mid-response); client \
         EstabResets counts resets either way, among them wrk's own aborts of the requests \
         still in flight when its time is up.\n"
    );
    let _ = writeln!(
        w,
        "| object | mode | conns | requests | errors | node RSTs | client EstabResets | req/s | Gbit/s | front CPU ms/req | front bytes sent/req |"
    );
    let _ = writeln!(w, "|---|---|---|---|---|---|---|---|---|---|---|");
    for s in sizes(r) {
        for mode in [
            "nginx",
            "prism",
            "prism-affine",
            "direct",
            "nginx-tls",
            "prism-tls",
            "prism-tls-affine",
            "direct-tls",
        ] {
            if let Some(d) = dsr(r, mode, s) {
                let _ = writeln!(
                    w,
                    "| {} | {mode} | {} | {} | {} | {} | {} | {:.1} | {:.4} | {:.3} | {:.0} |",
                    size(s),
                    d.connections,
                    d.requests,
                    d.errors,
                    d.node_rsts,
                    d.client_resets,
                    d.req_per_s,
                    d.gbit_per_s,
                    d.fe_cpu_ms_per_request,
                    d.fe_tx_bytes_per_request
                );
            }
        }
    }
    let _ = writeln!(w, "\nRatios:\n");
    for s in sizes(r) {
        let f = |m: &str, g: fn(&DsrCase) -> f64| dsr(r, m, s).map(g);
        let _ = writeln!(
            w,
            "- {}: throughput prism / nginx **{}**, prism-affine / nginx **{}**, prism / direct {}; front CPU per request nginx / prism **{}**; front bytes per request nginx / prism {}",
            size(s),
            ratio(f("prism", |d| d.req_per_s), f("nginx", |d| d.req_per_s)),
            ratio(f("prism-affine", |d| d.req_per_s), f("nginx", |d| d.req_per_s)),
            ratio(f("prism", |d| d.req_per_s), f("direct", |d| d.req_per_s)),
            ratio(f("nginx", |d| d.fe_cpu_ms_per_request), f("prism", |d| d.fe_cpu_ms_per_request)),
            ratio(f("nginx", |d| d.fe_tx_bytes_per_request), f("prism", |d| d.fe_tx_bytes_per_request)),
        );
        if dsr(r, "prism-tls", s).is_some() {
            let _ = writeln!(
                w,
                "- {} over HTTPS: throughput prism-tls / nginx-tls **{}**, prism-tls-affine / nginx-tls **{}**, prism-tls / direct-tls {}; front CPU per request nginx-tls / prism-tls **{}**; front bytes per request nginx-tls / prism-tls {}",
                size(s),
                ratio(f("prism-tls", |d| d.req_per_s), f("nginx-tls", |d| d.req_per_s)),
                ratio(f("prism-tls-affine", |d| d.req_per_s), f("nginx-tls", |d| d.req_per_s)),
                ratio(f("prism-tls", |d| d.req_per_s), f("direct-tls", |d| d.req_per_s)),
                ratio(f("nginx-tls", |d| d.fe_cpu_ms_per_request), f("prism-tls", |d| d.fe_cpu_ms_per_request)),
                ratio(f("nginx-tls", |d| d.fe_tx_bytes_per_request), f("prism-tls", |d| d.fe_tx_bytes_per_request)),
            );
        }
    }

    let _ = writeln!(w, "\n## 3. Scaling\n");
    let _ = writeln!(w, "Hop cost as the queues grow (median, each way; 512 KiB each way is the module's limit of 1 MiB per socket):\n");
    let _ = writeln!(w, "| queued each way | module | repair | module / repair |");
    let _ = writeln!(w, "|---|---|---|---|");
    for q in queues(r) {
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} |",
            size(q),
            med("module", q).map_or("n/a".into(), |v| format!("{v:.0} us")),
            med("repair", q).map_or("n/a".into(), |v| format!("{v:.0} us")),
            ratio(med("module", q), med("repair", q))
        );
    }
    let _ = writeln!(
        w,
        "\nHop cost of one connection while many migrated sockets are alive (imported on be1 and \
         tracked by the module until their release):\n"
    );
    let _ = writeln!(w, "| live sockets | hops | median | p99 | median / first |");
    let _ = writeln!(w, "|---|---|---|---|---|");
    let first = r.live.first().map(|l| l.hop.median_us);
    for l in &r.live {
        let _ = writeln!(
            w,
            "| {} | {} | {:.0} us | {:.0} us | {} |",
            l.live,
            l.hop.n,
            l.hop.median_us,
            l.hop.p99_us,
            ratio(Some(l.hop.median_us), first)
        );
    }
    let _ = writeln!(w, "\n## Reproduce\n");
    let _ = writeln!(
        w,
        "`make bench` builds (or reuses) the test kernel, the module and the tools, boots the \
         guest, runs every part and rewrites this page, the plot and the JSON. The guest suite's \
         `bench_smoke` test runs the same code with a few hops and two-second loads."
    );
    m
}

type Series = (String, Vec<f64>, RGBColor);

fn panel(
    area: &DrawingArea<SVGBackend, plotters::coord::Shift>,
    title: &str,
    x: &[String],
    y_desc: &str,
    series: &[Series],
) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Debug| format!("plot {title}: {e:?}");
    let top = series
        .iter()
        .flat_map(|s| s.1.iter().copied())
        .fold(0.0f64, f64::max)
        .max(1e-9)
        * 1.2;
    let n = x.len().max(1);
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), 0f64..top)
        .map_err(|e| err(&e))?;
    let labels = x.to_vec();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n * 2 + 1)
        .x_label_formatter(&move |v| {
            let i = v.round();
            if (v - i).abs() < 0.05 && i >= 0.0 {
                labels.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_desc(y_desc)
        .y_label_formatter(&|v| {
            if top > 10.0 {
                format!("{v:.0}")
            } else {
                format!("{v:.2}")
            }
        })
        .draw()
        .map_err(|e| err(&e))?;
    for (name, ys, color) in series {
        let pts: Vec<(f64, f64)> = ys.iter().enumerate().map(|(i, y)| (i as f64, *y)).collect();
        let c = *color;
        chart
            .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], c.stroke_width(2)));
        chart
            .draw_series(pts.iter().map(|p| Circle::new(*p, 4, c.filled())))
            .map_err(|e| err(&e))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))
}

/// The three-panel plot.
pub fn plot(r: &Results, path: &Path) -> Result<(), String> {
    let root = SVGBackend::new(path, (1500, 460)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| format!("{e:?}"))?;
    let areas = root.split_evenly((1, 3));
    let qs = queues(r);
    let floor = hop(r, "raw-genl", 0).map_or(0.0, |h| h.hop.median_us);
    let by_queue = |b: &str| {
        qs.iter()
            .map(|&q| hop(r, b, q).map_or(0.0, |h| h.hop.median_us))
            .collect()
    };
    panel(
        &areas[0],
        "Hop cost (median) vs bytes queued each way",
        &qs.iter().map(|&q| size(q)).collect::<Vec<_>>(),
        "us per hop",
        &[
            ("module".into(), by_queue("module"), BLUE),
            ("repair (TCP_REPAIR)".into(), by_queue("repair"), RED),
            (
                "raw genl round trip x2 (floor)".into(),
                vec![floor; qs.len()],
                BLACK,
            ),
        ],
    )?;
    let ss = sizes(r);
    let by_size = |m: &str| {
        ss.iter()
            .map(|&s| dsr(r, m, s).map_or(0.0, |d| d.gbit_per_s))
            .collect()
    };
    panel(
        &areas[1],
        "Response throughput vs object size",
        &ss.iter().map(|&s| size(s)).collect::<Vec<_>>(),
        "Gbit/s",
        &[
            ("nginx proxy".into(), by_size("nginx"), RED),
            ("prism, owner changes per request".into(), by_size("prism"), BLUE),
            (
                "prism, one owner per connection".into(),
                by_size("prism-affine"),
                GREEN,
            ),
            ("direct to owner".into(), by_size("direct"), BLACK),
        ],
    )?;
    panel(
        &areas[2],
        "Hop cost (median) vs live migrated sockets",
        &r.live.iter().map(|l| l.live.to_string()).collect::<Vec<_>>(),
        "us per hop",
        &[(
            "module".into(),
            r.live.iter().map(|l| l.hop.median_us).collect(),
            BLUE,
        )],
    )?;
    root.present().map_err(|e| format!("{e:?}"))
}

/// Writes benchmarks.md, benchmarks.svg and benchmarks.json into `dir`.
pub fn write(r: &Results, dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    plot(r, &dir.join("benchmarks.svg"))?;
    std::fs::write(dir.join("benchmarks.md"), markdown(r)).map_err(|e| e.to_string())?;
    let json = serde_json::to_string_pretty(r).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("benchmarks.json"), json + "\n").map_err(|e| e.to_string())
}
