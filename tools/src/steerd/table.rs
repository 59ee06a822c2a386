//! prism-steerd's view of the l4 steering state and the set element changes that move
//! the kernel's copy from one state to the next. Pure: no I/O, so it is unit-tested.
//!
//! l4's table has a hold set per address family and a flow set per node and family:
//! a flow is steered to node M while it is in `flows4_M` (or `flows6_M`).

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// nftables table that holds the steering state.
pub const TABLE: &str = "inet prism";

/// A set of the steering table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetKind {
    /// Flows being handed off: their packets are dropped.
    Hold,
    /// Flows steered to the node with this mark.
    Flows(u32),
}

impl SetKind {
    /// The set's name in the table, for IPv4 or IPv6 flows.
    pub fn name(self, v4: bool) -> String {
        let f = if v4 { '4' } else { '6' };
        match self {
            SetKind::Hold => format!("hold{f}"),
            SetKind::Flows(mark) => format!("flows{f}_{mark}"),
        }
    }

    /// The set a table name stands for, and whether it holds IPv4 flows.
    pub fn parse(name: &str) -> Option<(Self, bool)> {
        let family = |f: &str| match f {
            "4" => Some(true),
            "6" => Some(false),
            _ => None,
        };
        if let Some(f) = name.strip_prefix("hold") {
            return Some((SetKind::Hold, family(f)?));
        }
        let (f, mark) = name.strip_prefix("flows")?.split_once('_')?;
        Some((SetKind::Flows(mark.parse().ok()?), family(f)?))
    }
}

/// One element added to or deleted from a set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Added, else deleted.
    pub add: bool,
    /// Which set.
    pub set: SetKind,
    /// The element: client address and port.
    pub flow: SocketAddr,
}

impl Change {
    fn add(set: SetKind, flow: SocketAddr) -> Self {
        Self { add: true, set, flow }
    }

    fn del(set: SetKind, flow: SocketAddr) -> Self {
        Self {
            add: false,
            set,
            flow,
        }
    }
}

/// The change as an nft command.
impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = if self.add { "add" } else { "delete" };
        let set = self.set.name(self.flow.is_ipv4());
        write!(
            f,
            "{verb} element {TABLE} {set} {{ {} . {} }}",
            self.flow.ip(),
            self.flow.port()
        )
    }
}

/// One change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Drop the flow's packets (hand-off under way), on behalf of node `mark`.
    Hold {
        /// Client address and port.
        flow: SocketAddr,
        /// The holding node.
        mark: u32,
    },
    /// End node `mark`'s hold without steering.
    Unhold {
        /// Client address and port.
        flow: SocketAddr,
        /// The node that held it.
        mark: u32,
    },
    /// Send the flow to node `mark`; ends a hold.
    Steer {
        /// Client address and port.
        flow: SocketAddr,
        /// Its new owner.
        mark: u32,
    },
    /// Node `mark` released the flow: remove its entry after `linger`.
    Release {
        /// Client address and port.
        flow: SocketAddr,
        /// The releasing node.
        mark: u32,
        /// How long to keep the entry (TIME_WAIT cover).
        linger: Duration,
    },
    /// Remove the entries whose linger ended, and holds nobody claims (found in
    /// nftables at start) older than `orphan_holds_after`.
    Expire {
        /// Age after which an unclaimed hold goes.
        orphan_holds_after: Duration,
    },
    /// Node `mark` is dead: remove its entries and holds.
    DropNode {
        /// The dead node.
        mark: u32,
    },
}

/// A steering entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The owner's mark.
    pub mark: u32,
    /// When a released entry goes.
    pub expires: Option<Instant>,
}

/// A hold on a flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    /// The node that asked, if known (holds found in nftables at start are not).
    pub mark: Option<u32>,
    /// Since when.
    pub since: Instant,
}

/// The whole steering state.
#[derive(Debug, Clone, Default)]
pub struct Table {
    /// Per-flow owner.
    pub flows: HashMap<SocketAddr, Entry>,
    /// Flows being handed off.
    pub holds: HashMap<SocketAddr, Hold>,
}

/// The flow with a v4-mapped address written as plain IPv4.
pub fn canonical(flow: SocketAddr) -> SocketAddr {
    match flow.ip() {
        IpAddr::V6(a) => a
            .to_ipv4_mapped()
            .map_or(flow, |v4| SocketAddr::new(v4.into(), flow.port())),
        IpAddr::V4(_) => flow,
    }
}

impl Table {
    /// Applies `op` at time `now` and returns the element changes that do the same in
    /// the kernel, in order.
    pub fn apply(&mut self, op: &Op, now: Instant) -> Vec<Change> {
        let mut out = Vec::new();
        match *op {
            Op::Hold { flow, mark } => {
                let flow = canonical(flow);
                if !self.holds.contains_key(&flow) {
                    out.push(Change::add(SetKind::Hold, flow));
                }
                self.holds.insert(
                    flow,
                    Hold {
                        mark: Some(mark),
                        since: now,
                    },
                );
            }
            Op::Unhold { flow, mark } => {
                let flow = canonical(flow);
                if self
                    .holds
                    .get(&flow)
                    .is_some_and(|h| h.mark.is_none_or(|m| m == mark))
                {
                    self.holds.remove(&flow);
                    out.push(Change::del(SetKind::Hold, flow));
                }
            }
            Op::Steer { flow, mark } => {
                let flow = canonical(flow);
                if self.holds.remove(&flow).is_some() {
                    out.push(Change::del(SetKind::Hold, flow));
                }
                // A new owner: out of the old owner's set, into the new one's.
                let old = self.flows.get(&flow).map(|e| e.mark);
                if old != Some(mark) {
                    if let Some(old) = old {
                        out.push(Change::del(SetKind::Flows(old), flow));
                    }
                    out.push(Change::add(SetKind::Flows(mark), flow));
                }
                self.flows.insert(flow, Entry { mark, expires: None });
            }
            Op::Release { flow, mark, linger } => {
                let flow = canonical(flow);
                if let Some(entry) = self.flows.get_mut(&flow).filter(|e| e.mark == mark) {
                    if linger.is_zero() {
                        self.flows.remove(&flow);
                        out.push(Change::del(SetKind::Flows(mark), flow));
                    } else {
                        entry.expires = Some(now + linger);
                    }
                }
            }
            Op::Expire { orphan_holds_after } => {
                self.drop_flows(&mut out, |e| e.expires.is_some_and(|t| t <= now));
                self.drop_holds(&mut out, |h| {
                    h.mark.is_none() && now.duration_since(h.since) > orphan_holds_after
                });
            }
            Op::DropNode { mark } => {
                self.drop_flows(&mut out, |e| e.mark == mark);
                self.drop_holds(&mut out, |h| h.mark == Some(mark));
            }
        }
        out
    }

    /// Removes the entries `gone` picks, with the changes that remove them.
    fn drop_flows(&mut self, out: &mut Vec<Change>, gone: impl Fn(&Entry) -> bool) {
        self.flows.retain(|flow, e| {
            let drop = gone(e);
            if drop {
                out.push(Change::del(SetKind::Flows(e.mark), *flow));
            }
            !drop
        });
    }

    /// Removes the holds `gone` picks, with the changes that remove them.
    fn drop_holds(&mut self, out: &mut Vec<Change>, gone: impl Fn(&Hold) -> bool) {
        self.holds.retain(|flow, h| {
            let drop = gone(h);
            if drop {
                out.push(Change::del(SetKind::Hold, *flow));
            }
            !drop
        });
    }

    /// Whether node `mark` has anything in the table.
    pub fn has_node(&self, mark: u32) -> bool {
        self.flows.values().any(|e| e.mark == mark) || self.holds.values().any(|h| h.mark == Some(mark))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn text(changes: Vec<Change>) -> Vec<String> {
        changes.iter().map(Change::to_string).collect()
    }

    #[test]
    fn set_names_round_trip() {
        for (kind, v4) in [
            (SetKind::Hold, true),
            (SetKind::Hold, false),
            (SetKind::Flows(3), true),
            (SetKind::Flows(12), false),
        ] {
            assert_eq!(SetKind::parse(&kind.name(v4)), Some((kind, v4)));
        }
        for other in ["flows4", "flows5_1", "hold", "flows4_x", "steer"] {
            assert_eq!(SetKind::parse(other), None, "{other}");
        }
    }

    #[test]
    fn a_handoff_holds_steers_and_releases() {
        let mut t = Table::default();
        let now = Instant::now();
        let f = flow("10.0.0.2:40000");
        assert_eq!(
            text(t.apply(&Op::Hold { flow: f, mark: 1 }, now)),
            ["add element inet prism hold4 { 10.0.0.2 . 40000 }"]
        );
        assert!(
            t.apply(&Op::Hold { flow: f, mark: 1 }, now).is_empty(),
            "idempotent"
        );
        assert_eq!(
            text(t.apply(&Op::Steer { flow: f, mark: 2 }, now)),
            [
                "delete element inet prism hold4 { 10.0.0.2 . 40000 }",
                "add element inet prism flows4_2 { 10.0.0.2 . 40000 }"
            ]
        );
        // Next hop: out of the old owner's set, into the new one's.
        assert_eq!(
            text(t.apply(&Op::Steer { flow: f, mark: 3 }, now)),
            [
                "delete element inet prism flows4_2 { 10.0.0.2 . 40000 }",
                "add element inet prism flows4_3 { 10.0.0.2 . 40000 }"
            ]
        );
        assert!(
            t.apply(
                &Op::Release {
                    flow: f,
                    mark: 2,
                    linger: Duration::ZERO
                },
                now
            )
            .is_empty(),
            "stale"
        );
        assert_eq!(t.flows[&f].mark, 3);
        let linger = Duration::from_secs(1);
        assert!(t
            .apply(
                &Op::Release {
                    flow: f,
                    mark: 3,
                    linger
                },
                now
            )
            .is_empty());
        let expire = Op::Expire {
            orphan_holds_after: linger,
        };
        assert!(t.apply(&expire, now).is_empty());
        assert_eq!(t.apply(&expire, now + linger).len(), 1);
        assert!(t.flows.is_empty() && t.holds.is_empty());
    }

    #[test]
    fn v6_and_mapped_flows_and_dead_nodes() {
        let mut t = Table::default();
        let now = Instant::now();
        let v6 = flow("[fd00::2]:41000");
        let mapped = flow("[::ffff:10.0.0.2]:42000");
        assert_eq!(
            text(t.apply(&Op::Steer { flow: v6, mark: 2 }, now)),
            ["add element inet prism flows6_2 { fd00::2 . 41000 }"]
        );
        assert_eq!(
            text(t.apply(
                &Op::Hold {
                    flow: mapped,
                    mark: 2
                },
                now
            )),
            ["add element inet prism hold4 { 10.0.0.2 . 42000 }"]
        );
        t.apply(
            &Op::Steer {
                flow: flow("10.0.0.2:43000"),
                mark: 3,
            },
            now,
        );
        assert!(t.has_node(2));
        assert_eq!(t.apply(&Op::DropNode { mark: 2 }, now).len(), 2);
        assert!(!t.has_node(2));
        assert_eq!(t.flows.len(), 1);
        let back = t.apply(
            &Op::Release {
                flow: flow("10.0.0.2:43000"),
                mark: 3,
                linger: Duration::ZERO,
            },
            now,
        );
        assert_eq!(
            text(back),
            ["delete element inet prism flows4_3 { 10.0.0.2 . 43000 }"]
        );
        // A hold adopted at start with no owner goes after the timeout.
        t.holds.insert(
            flow("10.0.0.2:44000"),
            Hold {
                mark: None,
                since: now,
            },
        );
        let expire = Op::Expire {
            orphan_holds_after: Duration::from_secs(5),
        };
        assert!(t.apply(&expire, now + Duration::from_secs(1)).is_empty());
        assert_eq!(t.apply(&expire, now + Duration::from_secs(6)).len(), 1);
    }
}
