//! prism-steerd's hands on l4: `nft` batches for the steering table, and policy
//! routing that sends each node's mark to that node.

use super::table::{Entry, Hold, Table, TABLE};
use crate::cluster::Cluster;
use serde_json::Value;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::process::{Command, Stdio};
use std::time::Instant;

/// Runs `prog args` with `input` on its stdin; Err carries the first line of stderr.
fn pipe(prog: &str, args: &[&str], input: &str) -> Result<(), String> {
    let mut child = Command::new(prog)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{prog}: {e}"))?;
    child
        .stdin
        .take()
        .expect("stdin piped")
        .write_all(input.as_bytes())
        .map_err(|e| format!("{prog}: {e}"))?;
    let out = child.wait_with_output().map_err(|e| format!("{prog}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    Err(format!("{prog}: {}", err.lines().next().unwrap_or("failed")))
}

/// Runs `commands` as one atomic nft transaction: through libnftables when it loads,
/// else with `nft -f -`.
pub fn run(commands: &[String]) -> Result<(), String> {
    if commands.is_empty() {
        return Ok(());
    }
    let text = commands.join("\n") + "\n";
    super::libnft::run(&text).unwrap_or_else(|| pipe("nft", &["-f", "-"], &text))
}

fn rules(c: &Cluster) -> Vec<String> {
    let (v4, v6, port) = (c.vip4, c.vip6, c.port);
    let chain = format!("add rule {TABLE} steer");
    vec![
        format!("{chain} ip daddr {v4} tcp dport {port} ip saddr . tcp sport @hold4 drop"),
        format!("{chain} ip6 daddr {v6} tcp dport {port} ip6 saddr . tcp sport @hold6 drop"),
        format!("{chain} ip daddr {v4} tcp dport {port} meta mark set ip saddr . tcp sport map @flows4"),
        format!("{chain} ip6 daddr {v6} tcp dport {port} meta mark set ip6 saddr . tcp sport map @flows6"),
    ]
}

/// Creates the steering table, or adopts the one a previous prism-steerd left (its
/// entries are live flows), and installs this configuration's rules. Few processes: a
/// restart must be quick, nodes wait for it.
pub fn setup(cluster: &Cluster) -> Result<Table, String> {
    let table = adopt()?;
    let mut batch = vec![
        format!("add table {TABLE}"),
        format!("add set {TABLE} hold4 {{ type ipv4_addr . inet_service; }}"),
        format!("add set {TABLE} hold6 {{ type ipv6_addr . inet_service; }}"),
        format!("add map {TABLE} flows4 {{ type ipv4_addr . inet_service : mark; }}"),
        format!("add map {TABLE} flows6 {{ type ipv6_addr . inet_service : mark; }}"),
        format!("add chain {TABLE} steer {{ type filter hook prerouting priority mangle; policy accept; }}"),
        format!("flush chain {TABLE} steer"),
    ];
    batch.extend(rules(cluster));
    run(&batch)?;
    routes(cluster)?;
    Ok(table)
}

/// The VIP's default route leads to the front node, and mark M selects routing table
/// 200+M, whose VIP routes lead to node M: one
/// `ip -batch` per family and step (rules an earlier run left at the same priority are
/// replaced).
fn routes(cluster: &Cluster) -> Result<(), String> {
    for family in ["-4", "-6"] {
        let mut dels = String::new();
        let mut adds = String::new();
        for n in &cluster.nodes {
            let (mark, table, pref) = (n.mark, 200 + n.mark, 1000 + n.mark);
            dels += &format!("rule del pref {pref}\n");
            adds += &format!("rule add pref {pref} fwmark {mark} lookup {table}\n");
            adds += &match family {
                "-4" => format!(
                    "route replace {}/32 via {} table {table}\n",
                    cluster.vip4, n.addr4
                ),
                _ => format!(
                    "route replace {}/128 via {} table {table}\n",
                    cluster.vip6, n.addr6
                ),
            };
        }
        // Flows without an entry follow the main table to the front node.
        let front = cluster.front();
        adds += &match family {
            "-4" => format!("route replace {}/32 via {}\n", cluster.vip4, front.addr4),
            _ => format!("route replace {}/128 via {}\n", cluster.vip6, front.addr6),
        };
        // Deleting what is not there fails: -force goes on; the adds must all succeed.
        ip_batch(family, &dels, true)?;
        ip_batch(family, &adds, false)?;
    }
    Ok(())
}

fn ip_batch(family: &str, commands: &str, force: bool) -> Result<(), String> {
    if force {
        // -force goes on after a failed line; the outcome does not matter.
        let _ = pipe("ip", &["-force", family, "-batch", "-"], commands);
        return Ok(());
    }
    pipe("ip", &[family, "-batch", "-"], commands)
}

fn flow_of(concat: &Value) -> Option<SocketAddr> {
    let parts = concat.get("concat")?.as_array()?;
    let ip: IpAddr = parts.first()?.as_str()?.parse().ok()?;
    let port = u16::try_from(parts.get(1)?.as_u64()?).ok()?;
    Some(SocketAddr::new(ip, port))
}

/// Reads the flows and holds a previous prism-steerd left in nftables (none if there
/// is no table).
fn adopt() -> Result<Table, String> {
    let mut table = Table::default();
    let out = Command::new("nft")
        .args(["-j", "list", "table", "inet", "prism"])
        .output()
        .map_err(|e| format!("nft: {e}"))?;
    if !out.status.success() {
        return Ok(table);
    }
    let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| format!("nft -j: {e}"))?;
    let now = Instant::now();
    for object in v["nftables"].as_array().into_iter().flatten() {
        let elems = |kind: &str| {
            object
                .get(kind)
                .filter(|s| {
                    s["name"]
                        .as_str()
                        .is_some_and(|n| n.starts_with(if kind == "map" { "flows" } else { "hold" }))
                })
                .and_then(|s| s.get("elem"))
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        };
        for e in elems("map") {
            let pair = e.as_array();
            let flow = pair.and_then(|p| p.first()).and_then(flow_of);
            let mark = pair.and_then(|p| p.get(1)).and_then(Value::as_u64);
            if let (Some(flow), Some(mark)) = (flow, mark) {
                table.flows.insert(
                    flow,
                    Entry {
                        mark: mark as u32,
                        expires: None,
                    },
                );
            }
        }
        for e in elems("set") {
            if let Some(flow) = flow_of(&e) {
                table.holds.insert(
                    flow,
                    Hold {
                        mark: None,
                        since: now,
                    },
                );
            }
        }
    }
    Ok(table)
}
