//! prism-steerd's view of the l4 steering state and the set element changes that move
//! the kernel's copy from one state to the next. Pure: no I/O, so it is unit-tested.
//!
//! l4's table has a hold set per address family and a flow set per node and family:
//! a flow is steered to node M while it is in `flows4_M` (or `flows6_M`).

use crate::steer_proto::Generation;
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
    /// Send the flow to node `mark`; ends a hold. Ignored when a later generation
    /// of the flow was steered or released.
    Steer {
        /// Client address and port.
        flow: SocketAddr,
        /// Its new owner.
        mark: u32,
        /// The owner's generation (zero from nodes that do not number steers).
        generation: Generation,
    },
    /// Node `mark` released generation `generation` of the flow: remove its entry
    /// after `linger`, if no later generation owns it.
    Release {
        /// Client address and port.
        flow: SocketAddr,
        /// The releasing node.
        mark: u32,
        /// How long to keep the entry (TIME_WAIT cover).
        linger: Duration,
        /// The released generation (zero if unknown).
        generation: Generation,
    },
    /// Remove the entries whose linger ended, and entries and holds found in nftables
    /// at start that nobody claimed within `orphans_after`.
    Expire {
        /// Age after which an unclaimed entry or hold goes; also how long a release
        /// keeps older steers of its flow out.
        orphans_after: Duration,
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
    /// The generation whose steer made it (zero when adopted or unnumbered).
    pub generation: Generation,
    /// Found in nftables at start (when) and not claimed by a steer since. Nodes steer
    /// every flow they own again when they reconnect, so what nobody claims was
    /// released, or lingering, while no prism-steerd ran.
    pub adopted: Option<Instant>,
}

impl Entry {
    /// An entry found in nftables at start.
    pub fn adopted(mark: u32, now: Instant) -> Self {
        Entry {
            mark,
            expires: None,
            generation: Generation::default(),
            adopted: Some(now),
        }
    }
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
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Table {
    /// Per-flow owner.
    pub flows: HashMap<SocketAddr, Entry>,
    /// Flows being handed off.
    pub holds: HashMap<SocketAddr, Hold>,
    /// Recently released flows: the generation released and when. A steer of that
    /// generation or an earlier one arriving late would otherwise steer a closed
    /// connection for good.
    pub released: HashMap<SocketAddr, (Generation, Instant)>,
}

/// What a batch of [`Table::apply_logged`] replaced, for [`Table::undo`] when the
/// kernel refuses the batch: the kernel's copy is then still the old state. A log,
/// not a copy of the table taken per batch, so a steer costs the same with a million
/// flows as with ten.
#[derive(Debug, Default)]
pub struct UndoLog(Vec<Undo>);

#[derive(Debug)]
enum Undo {
    /// A one-flow op ran: the flow's entry, hold and release as they were.
    Flow {
        flow: SocketAddr,
        entry: Option<Entry>,
        hold: Option<Hold>,
        released: Option<(Generation, Instant)>,
    },
    /// A sweep ran: it only removes, so this is what it removed.
    Removed(Removed),
}

/// What a sweep removed.
#[derive(Debug, Default)]
struct Removed {
    flows: Vec<(SocketAddr, Entry)>,
    holds: Vec<(SocketAddr, Hold)>,
    released: Vec<(SocketAddr, (Generation, Instant))>,
}

/// Puts `old` back as `key`'s value (or removes `key` when it had none).
fn put_back<V>(map: &mut HashMap<SocketAddr, V>, key: SocketAddr, old: Option<V>) {
    match old {
        Some(v) => {
            map.insert(key, v);
        }
        None => {
            map.remove(&key);
        }
    }
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
        self.apply_into(op, now, &mut Removed::default())
    }

    /// [`Table::apply`], noting in `log` what it replaces.
    pub fn apply_logged(&mut self, op: &Op, now: Instant, log: &mut UndoLog) -> Vec<Change> {
        match *op {
            Op::Hold { flow, .. }
            | Op::Unhold { flow, .. }
            | Op::Steer { flow, .. }
            | Op::Release { flow, .. } => {
                let flow = canonical(flow);
                log.0.push(Undo::Flow {
                    flow,
                    entry: self.flows.get(&flow).cloned(),
                    hold: self.holds.get(&flow).cloned(),
                    released: self.released.get(&flow).copied(),
                });
                self.apply(op, now)
            }
            Op::Expire { .. } | Op::DropNode { .. } => {
                let mut removed = Removed::default();
                let out = self.apply_into(op, now, &mut removed);
                log.0.push(Undo::Removed(removed));
                out
            }
        }
    }

    /// Puts back what the ops noted in `log` replaced, last first.
    pub fn undo(&mut self, log: UndoLog) {
        for undo in log.0.into_iter().rev() {
            match undo {
                Undo::Flow {
                    flow,
                    entry,
                    hold,
                    released,
                } => {
                    put_back(&mut self.flows, flow, entry);
                    put_back(&mut self.holds, flow, hold);
                    put_back(&mut self.released, flow, released);
                }
                Undo::Removed(r) => {
                    self.flows.extend(r.flows);
                    self.holds.extend(r.holds);
                    self.released.extend(r.released);
                }
            }
        }
    }

    /// [`Table::apply`]; a sweep notes what it removes in `removed`.
    fn apply_into(&mut self, op: &Op, now: Instant, removed: &mut Removed) -> Vec<Change> {
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
            Op::Steer {
                flow,
                mark,
                generation,
            } => {
                let flow = canonical(flow);
                if self.stale(flow, generation) {
                    return out;
                }
                self.released.remove(&flow);
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
                self.flows.insert(
                    flow,
                    Entry {
                        mark,
                        expires: None,
                        generation,
                        adopted: None,
                    },
                );
            }
            Op::Release {
                flow,
                mark,
                linger,
                generation,
            } => {
                let flow = canonical(flow);
                let known = !generation.is_unknown();
                // The releasing owner's own entry, or one an earlier generation left
                // (its owner handed the connection on, so it never releases it).
                let releases = |e: &Entry| {
                    (e.mark == mark && (!known || e.generation <= generation))
                        || (known && e.generation < generation)
                };
                if known {
                    let last = self.released.entry(flow).or_insert((generation, now));
                    if last.0 <= generation {
                        *last = (generation, now);
                    }
                }
                if let Some(entry) = self.flows.get_mut(&flow).filter(|e| releases(e)) {
                    let mark = entry.mark;
                    if linger.is_zero() {
                        self.flows.remove(&flow);
                        out.push(Change::del(SetKind::Flows(mark), flow));
                    } else {
                        entry.expires = Some(now + linger);
                    }
                }
            }
            Op::Expire { orphans_after } => {
                let old = |since: Instant| now.duration_since(since) > orphans_after;
                self.drop_flows(&mut out, removed, |e| {
                    e.expires.is_some_and(|t| t <= now) || e.adopted.is_some_and(old)
                });
                self.drop_holds(&mut out, removed, |h| h.mark.is_none() && old(h.since));
                self.released.retain(|flow, r| {
                    let keep = !old(r.1);
                    if !keep {
                        removed.released.push((*flow, *r));
                    }
                    keep
                });
            }
            Op::DropNode { mark } => {
                self.drop_flows(&mut out, removed, |e| e.mark == mark);
                self.drop_holds(&mut out, removed, |h| h.mark == Some(mark));
            }
        }
        out
    }

    /// Whether a steer of `generation` comes after the flow moved on: a later
    /// generation was released, or steered (and claimed its entry). Unnumbered steers
    /// always apply, as before generations.
    fn stale(&self, flow: SocketAddr, generation: Generation) -> bool {
        if generation.is_unknown() {
            return false;
        }
        let released = self.released.get(&flow).is_some_and(|(g, _)| *g >= generation);
        let steered = self
            .flows
            .get(&flow)
            .is_some_and(|e| e.adopted.is_none() && e.generation > generation);
        released || steered
    }

    /// Removes the entries `gone` picks, with the changes that remove them.
    fn drop_flows(&mut self, out: &mut Vec<Change>, removed: &mut Removed, gone: impl Fn(&Entry) -> bool) {
        self.flows.retain(|flow, e| {
            let drop = gone(e);
            if drop {
                out.push(Change::del(SetKind::Flows(e.mark), *flow));
                removed.flows.push((*flow, e.clone()));
            }
            !drop
        });
    }

    /// Removes the holds `gone` picks, with the changes that remove them.
    fn drop_holds(&mut self, out: &mut Vec<Change>, removed: &mut Removed, gone: impl Fn(&Hold) -> bool) {
        self.holds.retain(|flow, h| {
            let drop = gone(h);
            if drop {
                out.push(Change::del(SetKind::Hold, *flow));
                removed.holds.push((*flow, h.clone()));
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

    fn gen(moves: u32) -> Generation {
        Generation { born_us: 10, moves }
    }

    fn steer(flow: SocketAddr, mark: u32, moves: u32) -> Op {
        Op::Steer {
            flow,
            mark,
            generation: gen(moves),
        }
    }

    fn release(flow: SocketAddr, mark: u32, moves: u32, linger: Duration) -> Op {
        Op::Release {
            flow,
            mark,
            linger,
            generation: gen(moves),
        }
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
            text(t.apply(&steer(f, 2, 1), now)),
            [
                "delete element inet prism hold4 { 10.0.0.2 . 40000 }",
                "add element inet prism flows4_2 { 10.0.0.2 . 40000 }"
            ]
        );
        // Next hop: out of the old owner's set, into the new one's.
        assert_eq!(
            text(t.apply(&steer(f, 3, 2), now)),
            [
                "delete element inet prism flows4_2 { 10.0.0.2 . 40000 }",
                "add element inet prism flows4_3 { 10.0.0.2 . 40000 }"
            ]
        );
        assert!(
            t.apply(&release(f, 2, 1, Duration::ZERO), now).is_empty(),
            "stale"
        );
        assert_eq!(t.flows[&f].mark, 3);
        let linger = Duration::from_secs(1);
        assert!(t.apply(&release(f, 3, 2, linger), now).is_empty());
        let expire = Op::Expire {
            orphans_after: linger,
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
            text(t.apply(&steer(v6, 2, 1), now)),
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
        t.apply(&steer(flow("10.0.0.2:43000"), 3, 1), now);
        assert!(t.has_node(2));
        assert_eq!(t.apply(&Op::DropNode { mark: 2 }, now).len(), 2);
        assert!(!t.has_node(2));
        assert_eq!(t.flows.len(), 1);
        let back = t.apply(&release(flow("10.0.0.2:43000"), 3, 1, Duration::ZERO), now);
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
            orphans_after: Duration::from_secs(5),
        };
        assert!(t.apply(&expire, now + Duration::from_secs(1)).is_empty());
        assert_eq!(t.apply(&expire, now + Duration::from_secs(6)).len(), 1);
    }

    /// Steers queued on three nodes while prism-steerd was down arrive in any order;
    /// the flow ends up with its last owner, whose release removes the entry.
    #[test]
    fn late_steers_of_earlier_owners_change_nothing() {
        let mut t = Table::default();
        let now = Instant::now();
        let f = flow("10.0.0.2:40000");
        t.apply(&steer(f, 3, 3), now);
        assert!(t.apply(&steer(f, 1, 2), now).is_empty(), "older than the entry");
        assert!(t.apply(&steer(f, 2, 1), now).is_empty());
        assert_eq!(t.flows[&f].mark, 3);
        assert_eq!(t.apply(&release(f, 3, 3, Duration::ZERO), now).len(), 1);
        // After the release, a late steer of the same connection does not bring the
        // entry back; a new connection on the port (born later) is steered.
        assert!(t.apply(&steer(f, 1, 2), now).is_empty(), "released");
        let newer = Op::Steer {
            flow: f,
            mark: 2,
            generation: Generation {
                born_us: 11,
                moves: 1,
            },
        };
        assert_eq!(
            text(t.apply(&newer, now)),
            ["add element inet prism flows4_2 { 10.0.0.2 . 40000 }"]
        );
        // Unnumbered steers (older nodes) apply as they come.
        let unnumbered = Op::Steer {
            flow: f,
            mark: 1,
            generation: Generation::default(),
        };
        assert_eq!(t.apply(&unnumbered, now).len(), 2);
    }

    /// An earlier owner's steer won the race to prism-steerd; the last owner's release
    /// still removes it, as that generation is later.
    #[test]
    fn a_later_release_removes_an_earlier_owners_entry() {
        let mut t = Table::default();
        let now = Instant::now();
        let f = flow("10.0.0.2:40000");
        t.apply(&steer(f, 1, 2), now);
        assert!(
            t.apply(&release(f, 2, 1, Duration::ZERO), now).is_empty(),
            "older"
        );
        assert_eq!(
            text(t.apply(&release(f, 3, 3, Duration::ZERO), now)),
            ["delete element inet prism flows4_1 { 10.0.0.2 . 40000 }"]
        );
    }

    /// Entries found at start go unless a steer claims them in time: their owners steer
    /// again on reconnecting, so the rest were released meanwhile.
    #[test]
    fn adopted_entries_nobody_claims_expire() {
        let mut t = Table::default();
        let now = Instant::now();
        let (a, b) = (flow("10.0.0.2:40000"), flow("10.0.0.2:40001"));
        t.flows.insert(a, Entry::adopted(1, now));
        t.flows.insert(b, Entry::adopted(2, now));
        // Any numbered steer claims an adopted entry, whatever its generation was.
        assert!(t.apply(&steer(a, 1, 1), now).is_empty());
        assert_eq!(text(t.apply(&steer(b, 3, 1), now)).len(), 2);
        t.flows.insert(flow("10.0.0.2:40002"), Entry::adopted(2, now));
        let expire = Op::Expire {
            orphans_after: Duration::from_secs(4),
        };
        assert!(t.apply(&expire, now + Duration::from_secs(1)).is_empty());
        assert_eq!(
            text(t.apply(&expire, now + Duration::from_secs(5))),
            ["delete element inet prism flows4_2 { 10.0.0.2 . 40002 }"]
        );
        assert_eq!(t.flows.len(), 2);
        assert!(t.released.is_empty());
    }

    /// A batch the kernel refuses leaves the table as it was, whatever the batch did:
    /// holds, steers, releases of one flow several times over, a sweep and a dead node.
    #[test]
    fn a_refused_batch_is_undone_exactly() {
        let mut t = Table::default();
        let now = Instant::now();
        let (a, b, c) = (
            flow("10.0.0.2:40000"),
            flow("[fd00::2]:40001"),
            flow("10.0.0.2:40002"),
        );
        t.apply(&steer(a, 1, 1), now);
        t.apply(&steer(b, 2, 1), now);
        t.apply(&release(c, 3, 1, Duration::from_secs(1)), now);
        t.apply(&Op::Hold { flow: c, mark: 2 }, now);
        t.flows.insert(flow("10.0.0.2:40003"), Entry::adopted(3, now));
        t.apply(
            &Op::Hold {
                flow: flow("10.0.0.2:40004"),
                mark: 2,
            },
            now,
        );
        t.holds.insert(
            flow("10.0.0.2:40005"),
            Hold {
                mark: None,
                since: now,
            },
        );
        let before = t.clone();
        let later = now + Duration::from_secs(10);
        let batch = [
            Op::Hold { flow: a, mark: 1 },
            steer(a, 2, 2),
            release(a, 2, 2, Duration::from_secs(1)),
            steer(c, 1, 2),
            Op::Unhold { flow: c, mark: 2 },
            Op::Expire {
                orphans_after: Duration::from_secs(4),
            },
            Op::DropNode { mark: 2 },
            steer(flow("10.0.0.9:1"), 3, 1),
        ];
        let mut log = UndoLog::default();
        let changes: Vec<_> = batch
            .iter()
            .flat_map(|op| t.apply_logged(op, later, &mut log))
            .collect();
        assert!(!changes.is_empty());
        assert_ne!(t, before);
        t.undo(log);
        assert_eq!(t, before);
    }

    /// A one-flow op logs that flow alone, however many flows the table holds.
    #[test]
    fn a_steer_logs_its_flow_not_the_table() {
        let mut t = Table::default();
        let now = Instant::now();
        for port in 0..50_000u16 {
            t.apply(&steer(SocketAddr::new([10, 0, 0, 2].into(), port), 1, 1), now);
        }
        let mut log = UndoLog::default();
        t.apply_logged(&steer(flow("10.0.0.2:7"), 2, 2), now, &mut log);
        assert!(matches!(log.0.as_slice(), [Undo::Flow { entry: Some(_), .. }]));
    }
}
