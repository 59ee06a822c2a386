//! prism-steerd's view of the l4 steering state and the nftables commands that move
//! the kernel's copy from one state to the next. Pure: no I/O, so it is unit-tested.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// nftables table that holds the steering state.
pub const TABLE: &str = "inet prism";

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

fn element(flow: SocketAddr) -> (char, String) {
    match flow.ip() {
        IpAddr::V4(a) => ('4', format!("{a} . {}", flow.port())),
        IpAddr::V6(a) => ('6', format!("{a} . {}", flow.port())),
    }
}

fn del_flow(out: &mut Vec<String>, flow: SocketAddr) {
    let (f, e) = element(flow);
    out.push(format!("delete element {TABLE} flows{f} {{ {e} }}"));
}

fn del_hold(out: &mut Vec<String>, flow: SocketAddr) {
    let (f, e) = element(flow);
    out.push(format!("delete element {TABLE} hold{f} {{ {e} }}"));
}

impl Table {
    /// Applies `op` at time `now` and returns the nft commands that do the same in the
    /// kernel.
    pub fn apply(&mut self, op: &Op, now: Instant) -> Vec<String> {
        let mut out = Vec::new();
        match *op {
            Op::Hold { flow, mark } => {
                let flow = canonical(flow);
                if !self.holds.contains_key(&flow) {
                    let (f, e) = element(flow);
                    out.push(format!("add element {TABLE} hold{f} {{ {e} }}"));
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
                    del_hold(&mut out, flow);
                }
            }
            Op::Steer { flow, mark } => {
                let flow = canonical(flow);
                if self.holds.remove(&flow).is_some() {
                    del_hold(&mut out, flow);
                }
                // A new owner: the old entry must go before the new one is added.
                let old = self.flows.get(&flow).map(|e| e.mark);
                if old != Some(mark) {
                    if old.is_some() {
                        del_flow(&mut out, flow);
                    }
                    let (f, e) = element(flow);
                    out.push(format!("add element {TABLE} flows{f} {{ {e} : {mark} }}"));
                }
                self.flows.insert(flow, Entry { mark, expires: None });
            }
            Op::Release { flow, mark, linger } => {
                let flow = canonical(flow);
                if let Some(entry) = self.flows.get_mut(&flow).filter(|e| e.mark == mark) {
                    if linger.is_zero() {
                        self.flows.remove(&flow);
                        del_flow(&mut out, flow);
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

    /// Removes the entries `gone` picks, with the commands that remove them.
    fn drop_flows(&mut self, out: &mut Vec<String>, gone: impl Fn(&Entry) -> bool) {
        self.flows.retain(|flow, e| {
            let drop = gone(e);
            if drop {
                del_flow(out, *flow);
            }
            !drop
        });
    }

    /// Removes the holds `gone` picks, with the commands that remove them.
    fn drop_holds(&mut self, out: &mut Vec<String>, gone: impl Fn(&Hold) -> bool) {
        self.holds.retain(|flow, h| {
            let drop = gone(h);
            if drop {
                del_hold(out, *flow);
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

    #[test]
    fn a_handoff_holds_steers_and_releases() {
        let mut t = Table::default();
        let now = Instant::now();
        let f = flow("10.0.0.2:40000");
        assert_eq!(
            t.apply(&Op::Hold { flow: f, mark: 1 }, now),
            ["add element inet prism hold4 { 10.0.0.2 . 40000 }"]
        );
        assert!(
            t.apply(&Op::Hold { flow: f, mark: 1 }, now).is_empty(),
            "idempotent"
        );
        assert_eq!(
            t.apply(&Op::Steer { flow: f, mark: 2 }, now),
            [
                "delete element inet prism hold4 { 10.0.0.2 . 40000 }",
                "add element inet prism flows4 { 10.0.0.2 . 40000 : 2 }"
            ]
        );
        // Next hop: the old entry must go before the new one is added.
        assert_eq!(
            t.apply(&Op::Steer { flow: f, mark: 3 }, now)[..],
            [
                "delete element inet prism flows4 { 10.0.0.2 . 40000 }",
                "add element inet prism flows4 { 10.0.0.2 . 40000 : 3 }"
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
            t.apply(&Op::Steer { flow: v6, mark: 2 }, now),
            ["add element inet prism flows6 { fd00::2 . 41000 : 2 }"]
        );
        assert_eq!(
            t.apply(
                &Op::Hold {
                    flow: mapped,
                    mark: 2
                },
                now
            ),
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
        assert_eq!(back, ["delete element inet prism flows4 { 10.0.0.2 . 43000 }"]);
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
