//! The cluster configuration every prism-node and prism-steerd reads: the service
//! address, the nodes, the steering daemon and the shared secret of its control
//! protocol. One JSON file, readable by root only, on every host.

use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

/// The whole cluster.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    /// IPv4 service address (held by every node).
    pub vip4: Ipv4Addr,
    /// IPv6 service address (held by every node).
    pub vip6: Ipv6Addr,
    /// HTTP port on the VIP.
    #[serde(default = "default_port")]
    pub port: u16,
    /// HTTPS port on the VIP, if the cluster serves HTTPS (nodes started with a
    /// certificate terminate TLS there; the session runs in kernel TLS and moves).
    #[serde(default)]
    pub https_port: Option<u16>,
    /// Key of the steering control protocol's HMAC (at least 16 bytes).
    pub secret: String,
    /// The steering daemon.
    pub steerd: Steerd,
    /// The object catalogue.
    #[serde(default)]
    pub objects: Objects,
    /// The nodes, in ring order (the order does not change ownership).
    pub nodes: Vec<Node>,
}

/// prism-steerd's settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Steerd {
    /// Where it listens for nodes.
    pub listen: SocketAddr,
    /// A node unheard of for this long is dead: its flows' entries expire.
    #[serde(default = "default_node_timeout")]
    pub node_timeout_ms: u64,
    /// Longest an entry is kept after its owner's release (TIME_WAIT cover).
    #[serde(default = "default_max_linger")]
    pub max_linger_ms: u64,
    /// The node new flows (no entry) go to; the first node if unset.
    #[serde(default)]
    pub front: Option<String>,
}

/// One node.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    /// Its name (also the `X-Served-By` header).
    pub name: String,
    /// Packet mark l4 gives the node's flows; selects its routing table there.
    pub mark: u32,
    /// Its own IPv4 address (l4 routes its flows there).
    pub addr4: Ipv4Addr,
    /// Its own IPv6 address.
    pub addr6: Ipv6Addr,
    /// Port of its hand-off control listener on `addr4`.
    pub control_port: u16,
    /// Port of its statistics listener on `addr4`.
    pub admin_port: u16,
    /// Address by which it reaches prism-steerd.
    pub steerd: SocketAddr,
}

/// Synthetic objects `obj-0` .. `obj-{count-1}`, sizes cycling through `sizes`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Objects {
    /// How many objects.
    pub count: u32,
    /// Their sizes in bytes, in turn.
    pub sizes: Vec<usize>,
}

impl Default for Objects {
    fn default() -> Self {
        Objects {
            count: 24,
            sizes: vec![4096, 65536, 1 << 20],
        }
    }
}

fn default_port() -> u16 {
    80
}
fn default_node_timeout() -> u64 {
    5000
}
fn default_max_linger() -> u64 {
    60_000
}

impl Cluster {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let cluster: Cluster = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        cluster.check().map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(cluster)
    }

    /// Rejects configurations the daemons could not work with.
    pub fn check(&self) -> Result<(), String> {
        if self.secret.len() < 16 {
            return Err("secret: at least 16 bytes".into());
        }
        if self.nodes.is_empty() {
            return Err("nodes: none".into());
        }
        if self.objects.sizes.is_empty() || self.objects.sizes.iter().any(|s| *s > 256 << 20) {
            return Err("objects.sizes: one size at least, each at most 256 MiB".into());
        }
        if let Some(f) = self.steerd.front.as_deref().filter(|f| self.node(f).is_none()) {
            return Err(format!("steerd.front: no node called {f}"));
        }
        for (i, n) in self.nodes.iter().enumerate() {
            if !(1..=255).contains(&n.mark) {
                return Err(format!("node {}: mark must be 1..255", n.name));
            }
            for m in &self.nodes[..i] {
                if m.name == n.name || m.mark == n.mark {
                    return Err(format!("nodes {} and {}: name or mark repeated", m.name, n.name));
                }
            }
        }
        Ok(())
    }

    /// The front node: where flows without an entry go.
    pub fn front(&self) -> &Node {
        self.steerd
            .front
            .as_deref()
            .and_then(|f| self.node(f))
            .unwrap_or(&self.nodes[0])
    }

    /// The consistent-hashing ring over the nodes, in configuration order.
    pub fn ring(&self) -> crate::ring::Ring {
        crate::ring::Ring::new(&self.nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>())
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The node with packet mark `mark`.
    pub fn node_by_mark(&self, mark: u32) -> Option<&Node> {
        self.nodes.iter().find(|n| n.mark == mark)
    }

    /// Whether `addr` is one of the service addresses.
    pub fn is_vip(&self, addr: IpAddr) -> bool {
        match addr {
            IpAddr::V4(a) => a == self.vip4,
            IpAddr::V6(a) => a == self.vip6 || a.to_ipv4_mapped() == Some(self.vip4),
        }
    }
}

impl Node {
    /// Its hand-off control address.
    pub fn control_addr(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.addr4), self.control_port)
    }

    /// Its statistics address.
    pub fn admin_addr(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.addr4), self.admin_port)
    }
}

#[cfg(test)]
pub(crate) fn sample() -> Cluster {
    serde_json::from_str(
        r#"{"vip4": "10.100.0.1", "vip6": "fd00:100::1", "secret": "0123456789abcdef",
            "steerd": {"listen": "0.0.0.0:7000"},
            "nodes": [
              {"name": "fe", "mark": 1, "addr4": "10.0.1.2", "addr6": "fd00:1::2",
               "control_port": 7100, "admin_port": 7101, "steerd": "10.0.1.1:7000"},
              {"name": "be1", "mark": 2, "addr4": "10.0.2.2", "addr6": "fd00:2::2",
               "control_port": 7100, "admin_port": 7101, "steerd": "10.0.2.1:7000"},
              {"name": "be2", "mark": 3, "addr4": "10.0.3.2", "addr6": "fd00:3::2",
               "control_port": 7100, "admin_port": 7101, "steerd": "10.0.3.1:7000"}]}"#,
    )
    .unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_checks_and_bad_ones_do_not() {
        let c = sample();
        c.check().unwrap();
        assert_eq!(c.node_by_mark(2).unwrap().name, "be1");
        assert!(c.is_vip("::ffff:10.100.0.1".parse().unwrap()));
        let mut short = c.clone();
        short.secret = "x".into();
        assert!(short.check().is_err());
        let mut twice = c.clone();
        twice.nodes[2].mark = 2;
        assert!(twice.check().unwrap_err().contains("repeated"));
        let mut zero = c.clone();
        zero.nodes[0].mark = 0;
        assert!(zero.check().is_err());
        assert_eq!(c.front().name, "fe");
        let mut front = c;
        front.steerd.front = Some("be9".into());
        assert!(front.check().unwrap_err().contains("be9"));
    }
}
