//! L7 direct server return against a real proxy: the same objects fetched through the
//! VIP by wrk (keep-alive) from (a) nginx on the front node proxying to the owner,
//! (b) prism-node handing each connection to the owner, with the owner changing at
//! every request or (`prism-affine`) never after the first, (c) the owners directly;
//! then the same over HTTPS (`-tls`: nginx terminating TLS, prism-node terminating it in
//! kernel TLS that moves with the connection, the owners' own HTTPS). The front node
//! runs on one CPU. Then the hand-off time, step by step, as the owners
//! record it, with one connection (requests one at a time) and under load, with the
//! module and with the repair backend.

use super::results::{Dist, DsrCase, HandoffCase, StepDists};
use crate::harness::{sh, Env, Log};
use crate::migrate::counters;
use crate::stack::{self, fe_tx_bytes, Backend, Setup, Stack};
use prism_tools::node::stats::Steps;
use prism_tools::objects;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The CPU the front node's processes are confined to.
const FRONT_CPU: u32 = 0;
/// nginx's port on the VIP (prism-node has 80 there).
const NGINX_PORT: u16 = 8080;
/// nginx's HTTPS port on the VIP (prism-node has the cluster's https_port there).
const NGINX_TLS_PORT: u16 = 8443;
/// Objects of the benchmark's catalogue: `COUNT` keys cycling through the sizes.
const COUNT: u32 = 32;

/// How long and how wide the load runs are.
pub struct Load {
    pub sizes: Vec<usize>,
    pub connections: usize,
    /// wrk connections of the hand-off runs (4 KiB objects, owner changing every time).
    pub handoff_connections: Vec<usize>,
    pub secs: u32,
}

/// Keys of `size` owned by be1 and be2, interleaved so that on one connection the
/// owner changes with every request.
fn keys_of(stack: &Stack, size: usize) -> Result<(Vec<String>, Vec<String>), String> {
    let (mut be1, mut be2) = (Vec::new(), Vec::new());
    for key in (0..COUNT).map(objects::key) {
        if objects::size_of(&stack.cluster.objects, &key) != Some(size) {
            continue;
        }
        match stack.owner(&key).as_str() {
            "be1" => be1.push(key),
            "be2" => be2.push(key),
            _ => {}
        }
    }
    if be1.is_empty() || be2.is_empty() {
        return Err(format!("no {size} B key for be1 or be2 in the catalogue"));
    }
    Ok((be1, be2))
}

fn interleave(a: &[String], b: &[String]) -> Vec<String> {
    let n = a.len().max(b.len());
    (0..n)
        .flat_map(|i| [a.get(i % a.len()), b.get(i % b.len())])
        .flatten()
        .cloned()
        .collect()
}

/// A wrk script that cycles through `keys` and prints its summary as one JSON line.
fn wrk_script(stack: &Stack, name: &str, keys: &[String]) -> Result<String, String> {
    let paths: Vec<String> = keys.iter().map(|k| format!("\"/objects/{k}\"")).collect();
    let lua = format!(
        r#"local paths = {{{}}}
local i = 0
request = function()
  i = i % #paths + 1
  return wrk.format("GET", paths[i])
end
done = function(s, latency, requests)
  local e = s.errors
  io.write(string.format("WRKJSON {{\"requests\":%.0f,\"bytes\":%.0f,\"us\":%.0f,\"errors\":%.0f}}\n",
    s.requests, s.bytes, s.duration, e.connect + e.read + e.write + e.status + e.timeout))
end
"#,
        paths.join(", ")
    );
    let path = stack.dir.join(format!("{name}.lua"));
    std::fs::write(&path, lua).map_err(|e| e.to_string())?;
    Ok(path.to_string_lossy().into_owned())
}

/// What one wrk run reported.
#[derive(Default, Clone, Copy)]
struct Wrk {
    requests: u64,
    bytes: u64,
    secs: f64,
    errors: u64,
}

fn spawn_wrk(script: &str, url: &str, connections: usize, secs: u32) -> Result<Child, String> {
    Command::new("ip")
        .args(["netns", "exec", "client", "wrk", "-t1"])
        .arg(format!("-c{connections}"))
        .arg(format!("-d{secs}s"))
        .args(["--timeout", "30s", "-s", script, url])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("wrk: {e}"))
}

fn wrk_result(child: Child) -> Result<Wrk, String> {
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("WRKJSON "))
        .ok_or_else(|| {
            format!(
                "wrk printed no summary: {text} {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    let v: serde_json::Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
    let n = |k: &str| v[k].as_f64().unwrap_or(0.0);
    Ok(Wrk {
        requests: n("requests") as u64,
        bytes: n("bytes") as u64,
        secs: n("us") / 1e6,
        errors: n("errors") as u64,
    })
}

/// RSTs the nodes sent so far.
fn node_rsts() -> Result<u64, String> {
    ["fe", "be1", "be2"]
        .iter()
        .map(|n| counters(n).map(|c| c.out_rsts))
        .sum()
}

/// CPU seconds the front node's processes used so far.
fn fe_cpu_secs() -> Result<f64, String> {
    let pids = sh(&mut Log::default(), "ip", &["netns", "pids", "fe"])?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let mut ticks = 0u64;
    for pid in pids.split_whitespace() {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the command (which may hold spaces): utime and stime are the
        // 12th and 13th of them.
        let rest = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
        let f: Vec<&str> = rest.split_whitespace().collect();
        ticks += f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        ticks += f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    }
    Ok(ticks as f64 / hz)
}

/// Runs the `(script, url, connections)` loads at once and measures the front node.
fn measure(
    log: &mut Log,
    stack: &Stack,
    mode: &str,
    size: usize,
    runs: &[(String, String, usize)],
    secs: u32,
) -> Result<DsrCase, String> {
    let (cpu0, tx0) = (fe_cpu_secs()?, fe_tx_bytes()?);
    let resets0 = counters("client")?.estab_resets;
    let rsts0 = node_rsts()?;
    // Only this run's RSTs in the trace, to say which one a node sent if it sends any.
    crate::harness::rst_trace::restart();
    let children: Vec<Child> = runs
        .iter()
        .map(|(script, url, c)| spawn_wrk(script, url, *c, secs))
        .collect::<Result<_, _>>()?;
    let mut total = Wrk::default();
    for c in children {
        let w = wrk_result(c)?;
        total.requests += w.requests;
        total.bytes += w.bytes;
        total.errors += w.errors;
        total.secs = total.secs.max(w.secs);
    }
    let (cpu1, tx1) = (fe_cpu_secs()?, fe_tx_bytes()?);
    let client_resets = counters("client")?.estab_resets - resets0;
    let node_rsts = node_rsts()? - rsts0;
    let per = |x: f64| {
        if total.requests > 0 {
            x / total.requests as f64
        } else {
            0.0
        }
    };
    let case = DsrCase {
        mode: mode.into(),
        object_size: size,
        connections: runs.iter().map(|r| r.2).sum(),
        secs: total.secs,
        requests: total.requests,
        errors: total.errors,
        client_resets,
        node_rsts,
        req_per_s: total.requests as f64 / total.secs.max(1e-9),
        gbit_per_s: total.bytes as f64 * 8.0 / total.secs.max(1e-9) / 1e9,
        fe_cpu_ms_per_request: per((cpu1 - cpu0) * 1e3),
        fe_tx_bytes_per_request: per((tx1 - tx0) as f64),
    };
    log.line(format!(
        "{mode:6} {size:>9} B x{}: {} requests in {:.1} s ({} errors, {} RSTs from the nodes, {} client EstabResets): {:.1} req/s, {:.4} Gbit/s; front node {:.2} ms CPU and {:.0} B sent per request",
        case.connections, case.requests, case.secs, case.errors, case.node_rsts, case.client_resets, case.req_per_s, case.gbit_per_s, case.fe_cpu_ms_per_request, case.fe_tx_bytes_per_request
    ));
    if case.requests == 0 {
        return Err(format!("{mode} {size} B: no request answered"));
    }
    // A benchmark reports what it saw: failed requests and prism's node RSTs go into
    // the figures and the nodes' logs into the bench log; bench_smoke fails on them.
    // (nginx resets its upstream connection when wrk aborts a request mid-response: a
    // node-to-node RST. prism's nodes have none to send.)
    if case.errors > 0 || (mode.starts_with("prism") && case.node_rsts > 0) {
        log.line(format!(
            "{mode} {size} B: {} failed requests, {} RSTs from the nodes; the nodes' logs:\n{}",
            case.errors,
            case.node_rsts,
            stack.logs()
        ));
        let events = crate::harness::rst_trace::events().unwrap_or_default();
        log.line(format!("RSTs traced during the run:\n{}", events.join("\n")));
    }
    Ok(case)
}

/// nginx on fe (one worker, on the front CPU) proxying each key to its owner over
/// keep-alive upstream connections.
fn start_nginx(stack: &Stack, keys: &[String]) -> Result<Child, String> {
    let dir = stack.dir.join("nginx");
    std::fs::create_dir_all(dir.join("logs")).map_err(|e| e.to_string())?;
    let mut map = String::new();
    for k in keys {
        map += &format!("        /objects/{k} {};\n", stack.owner(k));
    }
    let upstream = |name: &str| -> Result<String, String> {
        let n = stack.cluster.node(name).ok_or("no such node")?;
        Ok(format!(
            "    upstream {name} {{ server {}:{}; keepalive 64; keepalive_requests 1000000; }}\n",
            n.addr4, stack.cluster.port
        ))
    };
    let conf = format!(
        r#"user root;
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/logs/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    proxy_max_temp_file_size 0;
{}{}    map $uri $owner {{
        default be1;
{map}    }}
    server {{
        listen {vip}:{NGINX_PORT} reuseport;
        location /objects/ {{
            proxy_pass http://$owner;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
    server {{
        listen {vip}:{NGINX_TLS_PORT} ssl reuseport;
        ssl_certificate {tls}/cert.pem;
        ssl_certificate_key {tls}/key.pem;
        location /objects/ {{
            proxy_pass http://$owner;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"#,
        upstream("be1")?,
        upstream("be2")?,
        vip = stack.cluster.vip4,
        tls = stack.dir.join("tls").display(),
        dir = dir.display(),
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).map_err(|e| e.to_string())?;
    let child = stack.spawn_on(
        "fe",
        Some(FRONT_CPU),
        std::path::Path::new("/usr/sbin/nginx"),
        &["-p", &dir.to_string_lossy(), "-c", &path.to_string_lossy()],
        "nginx.log",
    )?;
    let want = format!("{}:{NGINX_PORT} ", stack.cluster.vip4);
    stack::wait("nginx to listen", Duration::from_secs(20), || {
        stack::listening("fe", &want)
    })?;
    Ok(child)
}

/// What the owners recorded since `before` (their counts of hand-offs and steers).
struct Recorded {
    steps: Vec<Steps>,
    steers: Vec<f64>,
}

fn recorded(stack: &Stack, before: &mut [(usize, usize); 2]) -> Result<Recorded, String> {
    let mut out = Recorded {
        steps: Vec::new(),
        steers: Vec::new(),
    };
    for (i, node) in ["be1", "be2"].iter().enumerate() {
        let body = stack.admin(node, "/stats/steps")?;
        let steps: Vec<Steps> =
            serde_json::from_str(&body).map_err(|e| format!("{node} /stats/steps: {e}"))?;
        let body = stack.admin(node, "/stats/steers")?;
        let steers: Vec<u32> =
            serde_json::from_str(&body).map_err(|e| format!("{node} /stats/steers: {e}"))?;
        out.steps.extend(steps.iter().skip(before[i].0).copied());
        out.steers
            .extend(steers.iter().skip(before[i].1).map(|&us| f64::from(us)));
        before[i] = (steps.len(), steers.len());
    }
    Ok(out)
}

/// Hand-offs of 4 KiB objects, the owner changing at every request, with each of
/// `connections` wrk connections in turn.
fn handoff_cases(
    log: &mut Log,
    stack: &Stack,
    backend: &str,
    load: &Load,
) -> Result<Vec<HandoffCase>, String> {
    let size = 4096;
    let (be1, be2) = keys_of(stack, size)?;
    let both = wrk_script(stack, &format!("handoff-{backend}"), &interleave(&be1, &be2))?;
    let url = format!("http://{}/", stack.cluster.vip4);
    let mut before = [(0usize, 0usize); 2];
    recorded(stack, &mut before)?;
    let mut out = Vec::new();
    for &c in &load.handoff_connections {
        let run = measure(
            log,
            stack,
            "prism",
            size,
            &[(both.clone(), url.clone(), c)],
            load.secs,
        )?;
        let r = recorded(stack, &mut before)?;
        let of = |f: fn(&Steps) -> u32| Dist::of(r.steps.iter().map(|s| f64::from(f(s))).collect());
        let steps = StepDists {
            export: of(|s| s.export),
            frame: of(|s| s.frame),
            import: of(|s| s.import),
            to_first_byte: of(|s| s.to_first_byte),
            answer: of(|s| s.answer),
            serve: of(|s| s.serve),
            write: of(|s| s.write),
            steer: Dist::of(r.steers),
        };
        let latency = of(|s| s.total);
        log.line(format!(
            "hand-off, {backend}, {c} connections: parsed on the front node -> first byte from the owner: median {:.0} us, p99 {:.0} us over {}; medians: export {:.0}, frame {:.0}, import {:.0}, import -> first byte {:.0} (answer {:.0}, serve {:.0}, first write {:.0}), steer round trip {:.0} us",
            latency.median_us, latency.p99_us, latency.n, steps.export.median_us, steps.frame.median_us, steps.import.median_us, steps.to_first_byte.median_us, steps.answer.median_us, steps.serve.median_us, steps.write.median_us, steps.steer.median_us
        ));
        out.push(HandoffCase {
            backend: backend.into(),
            object_size: size,
            connections: c,
            latency,
            steps: Some(steps),
            errors: run.errors,
        });
    }
    Ok(out)
}

/// Every mode for every size with the module (unless not `sweep`), and the module's
/// hand-off runs; then the hand-off runs again with the repair backend.
pub fn run(
    env: &Env,
    log: &mut Log,
    load: &Load,
    sweep: bool,
) -> Result<(Vec<DsrCase>, Vec<HandoffCase>), String> {
    // The catalogue holds every size whichever sizes a run loads, so a key has the same
    // size and owner in the smoke test as in the published run.
    let sizes = [4096, 65536, 1 << 20, 16 << 20];
    let mut cases = Vec::new();
    let mut handoff = Vec::new();
    {
        let stack = Stack::start(
            env,
            log,
            &Setup {
                objects: Some((COUNT, &sizes)),
                front_cpu: Some(FRONT_CPU),
                ..Setup::default()
            },
        )?;
        let all: Vec<String> = (0..COUNT).map(objects::key).collect();
        let mut nginx = start_nginx(&stack, &all)?;
        let result = (|| -> Result<(), String> {
            let sizes = if sweep { &load.sizes[..] } else { &[] };
            for &size in sizes {
                let (be1, be2) = keys_of(&stack, size)?;
                let both = wrk_script(&stack, &format!("mixed-{size}"), &interleave(&be1, &be2))?;
                let only1 = wrk_script(&stack, &format!("be1-{size}"), &be1)?;
                let only2 = wrk_script(&stack, &format!("be2-{size}"), &be2)?;
                let vip = stack.cluster.vip4;
                let c = load.connections;
                cases.push(measure(
                    log,
                    &stack,
                    "nginx",
                    size,
                    &[(both.clone(), format!("http://{vip}:{NGINX_PORT}/"), c)],
                    load.secs,
                )?);
                cases.push(measure(
                    log,
                    &stack,
                    "prism",
                    size,
                    &[(both.clone(), format!("http://{vip}/"), c)],
                    load.secs,
                )?);
                let direct = |node: &str| -> Result<String, String> {
                    let n = stack.cluster.node(node).ok_or("no such node")?;
                    Ok(format!("http://{}/", n.addr4))
                };
                // Prism's best case: each connection asks for one owner's keys, so it
                // hops once, to that owner, and stays.
                cases.push(measure(
                    log,
                    &stack,
                    "prism-affine",
                    size,
                    &[
                        (only1.clone(), format!("http://{vip}/"), c.div_ceil(2)),
                        (only2.clone(), format!("http://{vip}/"), c / 2),
                    ],
                    load.secs,
                )?);
                cases.push(measure(
                    log,
                    &stack,
                    "direct",
                    size,
                    &[
                        (only1.clone(), direct("be1")?, c.div_ceil(2)),
                        (only2.clone(), direct("be2")?, c / 2),
                    ],
                    load.secs,
                )?);
                // The same over HTTPS: nginx terminates TLS and proxies; prism-node
                // terminates it in kernel TLS, which moves with each hand-off.
                let https = stack.cluster.https_port.ok_or("the cluster has no https_port")?;
                let direct_tls = |node: &str| -> Result<String, String> {
                    let n = stack.cluster.node(node).ok_or("no such node")?;
                    Ok(format!("https://{}:{https}/", n.addr4))
                };
                cases.push(measure(
                    log,
                    &stack,
                    "nginx-tls",
                    size,
                    &[(both.clone(), format!("https://{vip}:{NGINX_TLS_PORT}/"), c)],
                    load.secs,
                )?);
                cases.push(measure(
                    log,
                    &stack,
                    "prism-tls",
                    size,
                    &[(both.clone(), format!("https://{vip}:{https}/"), c)],
                    load.secs,
                )?);
                cases.push(measure(
                    log,
                    &stack,
                    "prism-tls-affine",
                    size,
                    &[
                        (only1.clone(), format!("https://{vip}:{https}/"), c.div_ceil(2)),
                        (only2.clone(), format!("https://{vip}:{https}/"), c / 2),
                    ],
                    load.secs,
                )?);
                cases.push(measure(
                    log,
                    &stack,
                    "direct-tls",
                    size,
                    &[
                        (only1, direct_tls("be1")?, c.div_ceil(2)),
                        (only2, direct_tls("be2")?, c / 2),
                    ],
                    load.secs,
                )?);
            }
            handoff.extend(handoff_cases(log, &stack, "module", load)?);
            Ok(())
        })();
        let _ = nginx.kill();
        let _ = nginx.wait();
        if result.is_err() {
            log.line(stack.logs());
            log.line(std::fs::read_to_string(stack.dir.join("nginx/logs/error.log")).unwrap_or_default());
        }
        result?;
    }
    // The repair backend runs with the module unloaded; the module is loaded again
    // by whatever needs it next.
    let stack = Stack::start(
        env,
        log,
        &Setup {
            backend: Backend::Repair,
            objects: Some((COUNT, &sizes)),
            front_cpu: Some(FRONT_CPU),
            ..Setup::default()
        },
    )?;
    handoff.extend(handoff_cases(log, &stack, "repair", load).inspect_err(|_| log.line(stack.logs()))?);
    Ok((cases, handoff))
}
