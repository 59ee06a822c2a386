//! prism-steerd's set-up of l4: the steering table (through libnftables, or `nft`),
//! the state a previous prism-steerd left in it, and policy routing that sends each
//! node's mark to that node. Changes after set-up go through [`super::elements`].

use super::table::{Entry, Hold, SetKind, Table, TABLE};
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
fn run(commands: &[String]) -> Result<(), String> {
    if commands.is_empty() {
        return Ok(());
    }
    let text = commands.join("\n") + "\n";
    super::libnft::run(&text).unwrap_or_else(|| pipe("nft", &["-f", "-"], &text))
}

/// The sets of every node and the hold sets, both families.
fn sets(c: &Cluster) -> Vec<(SetKind, bool)> {
    let kinds = std::iter::once(SetKind::Hold).chain(c.nodes.iter().map(|n| SetKind::Flows(n.mark)));
    kinds.flat_map(|k| [(k, true), (k, false)]).collect()
}

fn rules(c: &Cluster) -> Vec<String> {
    let (v4, v6) = (c.vip4, c.vip6);
    // The VIP's service ports: HTTP, and HTTPS when the cluster serves it.
    let port = match c.https_port {
        Some(https) => format!("{{ {}, {https} }}", c.port),
        None => c.port.to_string(),
    };
    let chain = format!("add rule {TABLE} steer");
    let mut out = vec![
        format!("{chain} ip daddr {v4} tcp dport {port} ip saddr . tcp sport @hold4 drop"),
        format!("{chain} ip6 daddr {v6} tcp dport {port} ip6 saddr . tcp sport @hold6 drop"),
    ];
    for n in &c.nodes {
        let m = n.mark;
        out.push(format!(
            "{chain} ip daddr {v4} tcp dport {port} ip saddr . tcp sport @flows4_{m} meta mark set {m}"
        ));
        out.push(format!(
            "{chain} ip6 daddr {v6} tcp dport {port} ip6 saddr . tcp sport @flows6_{m} meta mark set {m}"
        ));
    }
    out
}

/// Creates the steering table, or adopts the one a previous prism-steerd left (its
/// entries are live flows), and installs this configuration's rules. Few processes: a
/// restart must be quick, nodes wait for it.
pub fn setup(cluster: &Cluster) -> Result<Table, String> {
    let (table, legacy) = adopt()?;
    let mut batch = vec![format!("add table {TABLE}")];
    for (kind, v4) in sets(cluster) {
        let key = if v4 { "ipv4_addr" } else { "ipv6_addr" };
        batch.push(format!(
            "add set {TABLE} {} {{ type {key} . inet_service; }}",
            kind.name(v4)
        ));
    }
    batch.push(format!(
        "add chain {TABLE} steer {{ type filter hook prerouting priority mangle; policy accept; }}"
    ));
    batch.push(format!("flush chain {TABLE} steer"));
    batch.extend(rules(cluster));
    // Flows an older prism-steerd kept in one map (flow : mark) move into the sets.
    if !legacy.is_empty() {
        for (flow, entry) in &table.flows {
            let set = SetKind::Flows(entry.mark).name(flow.is_ipv4());
            batch.push(format!(
                "add set {TABLE} {set} {{ type {} . inet_service; }}",
                if flow.is_ipv4() { "ipv4_addr" } else { "ipv6_addr" }
            ));
            batch.push(format!(
                "add element {TABLE} {set} {{ {} . {} }}",
                flow.ip(),
                flow.port()
            ));
        }
        batch.extend(legacy.iter().map(|m| format!("delete map {TABLE} {m}")));
    }
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
/// is no table), and the names of maps of the older one-map layout.
fn adopt() -> Result<(Table, Vec<String>), String> {
    let mut table = Table::default();
    let mut legacy = Vec::new();
    let out = Command::new("nft")
        .args(["-j", "list", "table", "inet", "prism"])
        .output()
        .map_err(|e| format!("nft: {e}"))?;
    if !out.status.success() {
        return Ok((table, legacy));
    }
    let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| format!("nft -j: {e}"))?;
    let now = Instant::now();
    for object in v["nftables"].as_array().into_iter().flatten() {
        let elems = |s: &Value| {
            s.get("elem")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        };
        if let Some(map) = object.get("map") {
            // The older layout: flows4/flows6 maps of flow -> mark.
            let name = map["name"].as_str().unwrap_or_default();
            if name == "flows4" || name == "flows6" {
                legacy.push(name.to_string());
                for e in elems(map) {
                    let pair = e.as_array();
                    let flow = pair.and_then(|p| p.first()).and_then(flow_of);
                    let mark = pair.and_then(|p| p.get(1)).and_then(Value::as_u64);
                    if let (Some(flow), Some(Ok(mark))) = (flow, mark.map(u32::try_from)) {
                        table.flows.insert(flow, Entry::adopted(mark, now));
                    }
                }
            }
        }
        let Some(set) = object.get("set") else { continue };
        let kind = set["name"].as_str().and_then(SetKind::parse);
        for flow in elems(set).iter().filter_map(flow_of) {
            match kind {
                Some((SetKind::Hold, _)) => {
                    table.holds.insert(
                        flow,
                        Hold {
                            mark: None,
                            since: now,
                        },
                    );
                }
                Some((SetKind::Flows(mark), _)) => {
                    table.flows.insert(flow, Entry::adopted(mark, now));
                }
                None => {}
            }
        }
    }
    Ok((table, legacy))
}
