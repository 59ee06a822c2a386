//! The multi-host test topology, built from network namespaces:
//!
//! ```text
//!   client --- l4 --- fe        every node (fe, be1, be2) holds the VIP on a dummy
//!              |  \-- be1       device (LVS direct-routing style); l4 routes the VIP
//!              \----- be2       to fe unless a test or the steering daemon says otherwise
//! ```
//!
//! Host `i` (client=0, fe=1, be1=2, be2=3) sits on 10.0.i.0/24 and fd00:i::/64, with
//! l4 at .1/::1 and the host at .2/::2.

use crate::harness::{sh, Log};
use crate::netlink_raw;

// Policy rule attributes (linux/fib_rules.h).
const FRA_SRC: u16 = 2;
const FRA_PRIORITY: u16 = 6;
const FRA_TABLE: u16 = 15;
const FRA_IP_PROTO: u16 = 22;
const FRA_SPORT_RANGE: u16 = 23;
const FR_ACT_TO_TBL: u8 = 1;

fn check_ack(ack: std::io::Result<netlink_raw::Ack>) -> Result<(), String> {
    match ack {
        Ok(a) if a.errno == 0 => Ok(()),
        Ok(a) => Err(format!("rtnetlink: errno {} {:?}", a.errno, a.message)),
        Err(e) => Err(format!("rtnetlink: {e}")),
    }
}
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;

/// The service address all nodes hold.
pub const VIP4: Ipv4Addr = Ipv4Addr::new(10, 100, 0, 1);
/// The IPv6 service address all nodes hold.
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x100, 0, 0, 0, 0, 0, 1);
/// Hosts behind l4, in subnet order.
pub const HOSTS: [&str; 4] = ["client", "fe", "be1", "be2"];
/// The hosts that serve the VIP.
pub const NODES: [&str; 3] = ["fe", "be1", "be2"];
/// The router between the client and the nodes.
pub const L4: &str = "l4";

fn index(host: &str) -> u8 {
    HOSTS.iter().position(|h| *h == host).expect("unknown host") as u8
}

/// A host's own (link) address.
pub fn addr(host: &str, v6: bool) -> IpAddr {
    let i = index(host);
    if v6 {
        IpAddr::V6(Ipv6Addr::new(0xfd00, i.into(), 0, 0, 0, 0, 0, 2))
    } else {
        IpAddr::V4(Ipv4Addr::new(10, 0, i, 2))
    }
}

/// The VIP of one family.
pub fn vip(v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(VIP6)
    } else {
        IpAddr::V4(VIP4)
    }
}

/// A built topology; dropping it removes every namespace.
pub struct Topology {
    _private: (),
}

impl Topology {
    /// Builds the topology (removing leftovers of an earlier one first).
    pub fn up() -> Result<Self, String> {
        Self::teardown_all();
        let mut log = Log::default();
        let t = Topology { _private: () };
        t.build(&mut log).map_err(|e| format!("{e}\n{}", log.text()))?;
        Ok(t)
    }

    fn build(&self, log: &mut Log) -> Result<(), String> {
        let ip = |log: &mut Log, args: &str| -> Result<(), String> {
            sh(log, "ip", &args.split_whitespace().collect::<Vec<_>>()).map(|_| ())
        };
        for ns in HOSTS.iter().chain([L4].iter()) {
            ip(log, &format!("netns add {ns}"))?;
            ip(log, &format!("-n {ns} link set lo up"))?;
        }
        for host in HOSTS {
            let i = index(host);
            ip(
                log,
                &format!("-n {L4} link add l4-{host} type veth peer name eth0 netns {host}"),
            )?;
            ip(log, &format!("-n {L4} addr add 10.0.{i}.1/24 dev l4-{host}"))?;
            ip(
                log,
                &format!("-n {L4} addr add fd00:{i}::1/64 dev l4-{host} nodad"),
            )?;
            ip(log, &format!("-n {L4} link set l4-{host} up"))?;
            ip(log, &format!("-n {host} addr add 10.0.{i}.2/24 dev eth0"))?;
            ip(log, &format!("-n {host} addr add fd00:{i}::2/64 dev eth0 nodad"))?;
            ip(log, &format!("-n {host} link set eth0 up"))?;
            ip(log, &format!("-n {host} route add default via 10.0.{i}.1"))?;
            ip(log, &format!("-n {host} -6 route add default via fd00:{i}::1"))?;
        }
        for node in NODES {
            ip(log, &format!("-n {node} link add vip0 type dummy"))?;
            ip(log, &format!("-n {node} addr add {VIP4}/32 dev vip0"))?;
            ip(log, &format!("-n {node} addr add {VIP6}/128 dev vip0 nodad"))?;
            ip(log, &format!("-n {node} link set vip0 up"))?;
            // Forwarded packets of a flow handed here arrive inside IPIP or 6in4: the
            // fallback tunnel devices take the outer header off. The inner source is
            // the client, reached through eth0: reverse-path filtering would drop it.
            ip(log, &format!("-n {node} link set tunl0 up"))?;
            ip(log, &format!("-n {node} link set sit0 up"))?;
            for knob in ["all", "tunl0"] {
                sh(
                    log,
                    "ip",
                    &[
                        "netns",
                        "exec",
                        node,
                        "sysctl",
                        "-qw",
                        &format!("net.ipv4.conf.{knob}.rp_filter=0"),
                    ],
                )?;
            }
        }
        sh(
            log,
            "ip",
            &["netns", "exec", L4, "sysctl", "-qw", "net.ipv4.ip_forward=1"],
        )?;
        sh(
            log,
            "ip",
            &[
                "netns",
                "exec",
                L4,
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.forwarding=1",
            ],
        )?;
        // One routing table per node (100 + index) whose VIP route leads to it: per-flow
        // steering is a policy rule that picks the table.
        for node in NODES {
            let i = index(node);
            ip(
                log,
                &format!(
                    "-n {L4} route add {VIP4}/32 via 10.0.{i}.2 table {}",
                    100 + u32::from(i)
                ),
            )?;
            ip(
                log,
                &format!(
                    "-n {L4} -6 route add {VIP6}/128 via fd00:{i}::2 table {}",
                    100 + u32::from(i)
                ),
            )?;
        }
        Self::route_vip(log, "fe")
    }

    /// Sends the client's TCP flow from source port `port` to `node` from now on: a
    /// policy rule in l4 (replacing the flow's earlier one; `fresh`: it has none yet),
    /// added over rtnetlink directly since tests steer thousands of flows.
    pub fn steer_flow(log: &mut Log, v6: bool, port: u16, node: &str, fresh: bool) -> Result<(), String> {
        // The rule's priority is derived from the port, so a flow has one rule at most;
        // it must stay below the main table's (32766), which routes the VIP to fe.
        let pref = u32::from(if port > 30000 { port - 30000 } else { port });
        let table = 100 + u32::from(index(node));
        let family = if v6 { libc::AF_INET6 } else { libc::AF_INET } as u8;
        let client = match addr("client", v6) {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        };
        let attr = move |body: &mut Vec<u8>, kind: u16, payload: &[u8]| {
            body.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
            body.extend_from_slice(&kind.to_ne_bytes());
            body.extend_from_slice(payload);
            body.resize((body.len() + 3) & !3, 0);
        };
        // struct fib_rule_hdr: family, dst_len, src_len, tos, table, res1, res2, action, flags.
        let header = move |src_len: u8, action: u8| {
            let mut h = vec![family, 0, src_len, 0, 0, 0, 0, action];
            h.extend_from_slice(&0u32.to_ne_bytes());
            h
        };
        let run = move |fresh: bool| -> Result<(), String> {
            if !fresh {
                let mut del = header(0, 0);
                attr(&mut del, FRA_PRIORITY, &pref.to_ne_bytes());
                check_ack(netlink_raw::rtnl(libc::RTM_DELRULE, 0, &del))?;
            }
            let mut add = header((client.len() * 8) as u8, FR_ACT_TO_TBL);
            attr(&mut add, FRA_PRIORITY, &pref.to_ne_bytes());
            attr(&mut add, FRA_SRC, &client);
            attr(&mut add, FRA_TABLE, &table.to_ne_bytes());
            attr(&mut add, FRA_IP_PROTO, &[libc::IPPROTO_TCP as u8]);
            let mut range = port.to_ne_bytes().to_vec();
            range.extend_from_slice(&port.to_ne_bytes());
            attr(&mut add, FRA_SPORT_RANGE, &range);
            let flags = (libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16;
            check_ack(netlink_raw::rtnl(libc::RTM_NEWRULE, flags, &add))
        };
        log.line(format!(
            "l4: flow from client port {port} -> {node} (rule {pref}, table {table})"
        ));
        in_ns(L4, move || run(fresh))?
    }

    /// Makes l4 drop (`on`) or pass again the client's packets (IPv4 or IPv6) from TCP
    /// port `port`: the flow is held while its socket is between hosts.
    pub fn hold_flow(log: &mut Log, port: u16, on: bool) -> Result<(), String> {
        // One set of held client ports, so flows are held and let go one by one; the
        // chain's two rules are rewritten with every hold, in the same transaction.
        let script = if on {
            format!(
                "add table inet hold\n\
                 add chain inet hold pre {{ type filter hook prerouting priority -150; }}\n\
                 add set inet hold ports {{ type inet_service; }}\n\
                 add element inet hold ports {{ {port} }}\n\
                 flush chain inet hold pre\n\
                 add rule inet hold pre ip saddr 10.0.0.2 tcp sport @ports drop\n\
                 add rule inet hold pre ip6 saddr fd00::2 tcp sport @ports drop\n"
            )
        } else {
            format!("delete element inet hold ports {{ {port} }}\n")
        };
        let path = std::env::temp_dir().join(format!("hold-{}-{port}.nft", std::process::id()));
        std::fs::write(&path, script).map_err(|e| e.to_string())?;
        let r = sh(
            log,
            "ip",
            &["netns", "exec", "l4", "nft", "-f", &path.to_string_lossy()],
        )
        .map(|_| ());
        let _ = std::fs::remove_file(&path);
        r
    }

    /// Makes l4 send VIP traffic of every flow without a more specific rule to `node`.
    pub fn route_vip(log: &mut Log, node: &str) -> Result<(), String> {
        let i = index(node);
        sh(
            log,
            "ip",
            &[
                "-n",
                L4,
                "route",
                "replace",
                &format!("{VIP4}/32"),
                "via",
                &format!("10.0.{i}.2"),
            ],
        )?;
        sh(
            log,
            "ip",
            &[
                "-n",
                L4,
                "-6",
                "route",
                "replace",
                &format!("{VIP6}/128"),
                "via",
                &format!("fd00:{i}::2"),
            ],
        )
        .map(|_| ())
    }

    /// Routes `host`'s packets to the client through a host route whose TCP connections
    /// use microsecond timestamps (`features tcp_usec_ts`; iproute2 6.1 cannot say
    /// it, so the route is added over rtnetlink).
    pub fn client_route_usec_ts(host: &str, v6: bool) -> Result<(), String> {
        const RTA_DST: u16 = 1;
        const RTA_GATEWAY: u16 = 5;
        const RTA_METRICS: u16 = 8;
        const RTAX_FEATURES: u16 = 12;
        const RTAX_FEATURE_TCP_USEC_TS: u32 = 1 << 4;
        let octets = |a: IpAddr| match a {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        };
        let i = index(host);
        let gateway = if v6 {
            IpAddr::V6(Ipv6Addr::new(0xfd00, i.into(), 0, 0, 0, 0, 0, 1))
        } else {
            IpAddr::V4(Ipv4Addr::new(10, 0, i, 1))
        };
        let (dst, gateway) = (octets(addr("client", v6)), octets(gateway));
        let attr = |body: &mut Vec<u8>, kind: u16, payload: &[u8]| {
            body.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
            body.extend_from_slice(&kind.to_ne_bytes());
            body.extend_from_slice(payload);
            body.resize((body.len() + 3) & !3, 0);
        };
        // struct rtmsg: family, dst_len, src_len, tos, table (main), protocol (boot),
        // scope (universe), type (unicast), flags.
        let family = if v6 { libc::AF_INET6 } else { libc::AF_INET } as u8;
        let mut body = vec![family, (dst.len() * 8) as u8, 0, 0, 254, 3, 0, 1];
        body.extend_from_slice(&0u32.to_ne_bytes());
        attr(&mut body, RTA_DST, &dst);
        attr(&mut body, RTA_GATEWAY, &gateway);
        let mut metrics = Vec::new();
        attr(
            &mut metrics,
            RTAX_FEATURES,
            &RTAX_FEATURE_TCP_USEC_TS.to_ne_bytes(),
        );
        attr(&mut body, RTA_METRICS, &metrics);
        let flags = (libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16;
        in_ns(host, move || {
            check_ack(netlink_raw::rtnl(libc::RTM_NEWROUTE, flags, &body))
        })?
    }

    /// Removes every namespace of the topology, whether or not it is complete.
    pub fn teardown_all() {
        for ns in HOSTS.iter().chain([L4].iter()) {
            if std::path::Path::new("/run/netns").join(ns).exists() {
                let _ = std::process::Command::new("ip")
                    .args(["netns", "del", ns])
                    .status();
            }
        }
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        Self::teardown_all();
    }
}

/// Network namespace `ns`, to enter later with [`enter`].
pub fn netns(ns: &str) -> Result<std::fs::File, String> {
    let path = format!("/run/netns/{ns}");
    std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))
}

/// Moves the calling thread (only it) into the network namespace `file`.
pub fn enter(file: &std::fs::File) -> Result<(), String> {
    // SAFETY: setns on this thread only, with a valid namespace fd.
    let ret = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if ret != 0 {
        return Err(format!("setns: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Runs `f` on a thread that entered network namespace `ns`; sockets it creates live
/// there for good.
pub fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
    let file = netns(ns)?;
    std::thread::spawn(move || {
        enter(&file)?;
        Ok(f())
    })
    .join()
    .map_err(|_| "namespace thread panicked".to_string())?
}
