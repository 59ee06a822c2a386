//! The owner's book of the hand-offs it was sent: what a sender that heard no answer
//! learns when it asks, so that exactly one node keeps the connection.
//!
//! A sender that hears no answer (its connection broke, or the owner was slow) cannot
//! tell whether the owner imported. It asks instead of importing its copy back. The
//! book answers from what the owner did; a hand-off the owner has not seen yet is
//! refused from that moment on, so a frame that arrives after the question is not
//! imported. Either way only one of the two nodes goes on with the connection.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long an outcome is kept: far longer than a sender asks (`SETTLE_LIMIT`).
const KEPT: Duration = Duration::from_secs(60);
/// Entries between two sweeps of the outdated ones.
const SWEEP_EVERY: usize = 4096;

/// What became of one hand-off on the owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The import is under way.
    Importing,
    /// Imported: the connection is the owner's.
    Taken,
    /// Refused, failed, or given up by the sender's question before it arrived.
    Refused,
}

/// Outcomes by sender address and hand-off id (a sender's ids grow across its
/// restarts: they start from the clock).
#[derive(Default)]
pub struct Outcomes {
    book: Mutex<Book>,
}

#[derive(Default)]
struct Book {
    entries: HashMap<(IpAddr, u64), (Outcome, Instant)>,
    since_sweep: usize,
}

impl Outcomes {
    /// Claims hand-off `id` from `from` for an import; false when the sender asked about
    /// it first (it has taken the connection back) or it was seen before.
    pub fn claim(&self, from: IpAddr, id: u64) -> bool {
        let mut book = self.book.lock().unwrap_or_else(|e| e.into_inner());
        book.sweep();
        if book.entries.contains_key(&(from, id)) {
            return false;
        }
        book.entries
            .insert((from, id), (Outcome::Importing, Instant::now()));
        true
    }

    /// Records how a claimed hand-off ended.
    pub fn settle(&self, from: IpAddr, id: u64, outcome: Outcome) {
        let mut book = self.book.lock().unwrap_or_else(|e| e.into_inner());
        book.entries.insert((from, id), (outcome, Instant::now()));
    }

    /// The answer to the sender's question about hand-off `id`: `None` while it is
    /// being imported. An id not seen yet is refused from now on.
    pub fn ask(&self, from: IpAddr, id: u64) -> Option<Outcome> {
        let mut book = self.book.lock().unwrap_or_else(|e| e.into_inner());
        book.sweep();
        let entry = book
            .entries
            .entry((from, id))
            .or_insert((Outcome::Refused, Instant::now()));
        (entry.0 != Outcome::Importing).then_some(entry.0)
    }
}

impl Book {
    fn sweep(&mut self) {
        self.since_sweep += 1;
        if self.since_sweep < SWEEP_EVERY {
            return;
        }
        self.since_sweep = 0;
        let now = Instant::now();
        self.entries
            .retain(|_, (outcome, at)| *outcome == Outcome::Importing || now.duration_since(*at) < KEPT);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 1, 2));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 2, 2));

    #[test]
    fn a_question_before_the_frame_refuses_the_frame() {
        let book = Outcomes::default();
        assert_eq!(book.ask(A, 7), Some(Outcome::Refused));
        assert!(
            !book.claim(A, 7),
            "a frame after the question must not be imported"
        );
        assert!(book.claim(B, 7), "another sender's id is another hand-off");
    }

    #[test]
    fn a_question_during_the_import_waits_for_its_end() {
        let book = Outcomes::default();
        assert!(book.claim(A, 9));
        assert_eq!(book.ask(A, 9), None);
        book.settle(A, 9, Outcome::Taken);
        assert_eq!(book.ask(A, 9), Some(Outcome::Taken));
        assert!(!book.claim(A, 9), "a replayed frame is not imported twice");
    }
}
