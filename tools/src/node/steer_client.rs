//! A node's link to prism-steerd: a reliable, ordered queue of requests. Requests
//! survive a lost connection or a restarted daemon: they are sent again, in order,
//! once it answers (every request is idempotent), so a caller that stopped waiting
//! still gets its request applied later. The link also knows which flows the node
//! owns: on every new connection it steers them again (a restarted daemon only adopted
//! their entries) and drops queued steers of flows that have moved on since.

use crate::steer_proto::{self, Envelope, Generation, Reply, Request, NONCE_LEN};
use prism_sock::async_tokio::{read_frame, write_frame};
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

type Done = oneshot::Sender<Result<(), String>>;

/// Most requests sent in one write.
const BURST: usize = 256;

/// The flows this node owns, with the generation it steered.
type Owned = Arc<Mutex<HashMap<SocketAddr, Generation>>>;

/// Handle to the queue; cheap to clone.
#[derive(Clone)]
pub struct SteerClient {
    tx: mpsc::UnboundedSender<(Request, Option<Done>)>,
    owned: Owned,
}

impl SteerClient {
    /// Starts the link task for node `node` (must run inside a tokio runtime).
    pub fn start(node: String, steerd: SocketAddr, secret: Vec<u8>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let owned = Owned::default();
        tokio::spawn(link(node, steerd, secret, owned.clone(), rx));
        SteerClient { tx, owned }
    }

    /// Records that this node owns `flow` in `generation` (until [`Self::disown`] or
    /// [`Self::release`]) and queues its steer, both before returning; the future
    /// waits at most `timeout` for prism-steerd to apply it.
    pub fn steer(
        &self,
        flow: SocketAddr,
        generation: Generation,
        timeout: Duration,
    ) -> impl std::future::Future<Output = Result<(), String>> + Send + 'static {
        self.owned.lock().expect("not poisoned").insert(flow, generation);
        let queued = self.queue(Request::Steer { flow, generation });
        async move { wait(queued?, timeout).await }
    }

    /// `flow` was handed on: its next owner steers it.
    pub fn disown(&self, flow: SocketAddr) {
        self.owned.lock().expect("not poisoned").remove(&flow);
    }

    /// The flows this node owns now, with their generations.
    pub fn owned(&self) -> Vec<(SocketAddr, Generation)> {
        let owned = self.owned.lock().expect("not poisoned");
        owned.iter().map(|(f, g)| (*f, *g)).collect()
    }

    /// Queues the release of `flow` if this node still owns it in `generation`; whether
    /// it did.
    pub fn release_if_owned(&self, flow: SocketAddr, generation: Generation, linger_ms: u64) -> bool {
        let mut owned = self.owned.lock().expect("not poisoned");
        if owned.get(&flow) != Some(&generation) {
            return false;
        }
        owned.remove(&flow);
        drop(owned);
        self.post(Request::Release {
            flow,
            linger_ms,
            generation,
        });
        true
    }

    /// This node's socket of `flow` is gone: queues its release, for the generation
    /// this node steered (zero if it never steered the flow).
    pub fn release(&self, flow: SocketAddr, linger_ms: u64) {
        let generation = self
            .owned
            .lock()
            .expect("not poisoned")
            .remove(&flow)
            .unwrap_or_default();
        self.post(Request::Release {
            flow,
            linger_ms,
            generation,
        });
    }

    /// Queues `request` and waits at most `timeout` for prism-steerd to apply it.
    pub async fn call(&self, request: Request, timeout: Duration) -> Result<(), String> {
        wait(self.queue(request)?, timeout).await
    }

    fn queue(&self, request: Request) -> Result<oneshot::Receiver<Result<(), String>>, String> {
        let (done, applied) = oneshot::channel();
        self.tx
            .send((request, Some(done)))
            .map_err(|_| "steering link stopped".to_string())?;
        Ok(applied)
    }

    /// Queues `request` without waiting.
    pub fn post(&self, request: Request) {
        let _ = self.tx.send((request, None));
    }
}

/// Waits at most `timeout` for the answer to a queued request.
async fn wait(applied: oneshot::Receiver<Result<(), String>>, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, applied).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err("steering link stopped".into()),
        Err(_) => Err(format!("prism-steerd did not answer within {timeout:?}")),
    }
}

struct Pending {
    seq: u64,
    request: Request,
    done: Option<Done>,
}

/// Drops the queued steers of flows this node no longer owns in that generation, and
/// puts a steer for every owned flow without one at the head of the queue: such a
/// flow's steer was applied before anything still queued (a hold of it for a hand-off
/// in particular, which the steer would otherwise end too early and so send the
/// client's packets to a node that no longer has the socket).
fn resteer(unacked: &mut VecDeque<Pending>, owned: &Owned) {
    let owned = owned.lock().expect("not poisoned").clone();
    unacked.retain_mut(|p| match p.request {
        Request::Steer { flow, generation } if owned.get(&flow) != Some(&generation) => {
            if let Some(done) = p.done.take() {
                let _ = done.send(Err("superseded: the flow moved on".into()));
            }
            false
        }
        _ => true,
    });
    let queued: HashSet<SocketAddr> = unacked
        .iter()
        .filter_map(|p| match p.request {
            Request::Steer { flow, .. } => Some(flow),
            _ => None,
        })
        .collect();
    for (flow, generation) in owned {
        if !queued.contains(&flow) {
            unacked.push_front(Pending {
                seq: 0,
                request: Request::Steer { flow, generation },
                done: None,
            });
        }
    }
}

async fn link(
    node: String,
    steerd: SocketAddr,
    secret: Vec<u8>,
    owned: Owned,
    mut rx: mpsc::UnboundedReceiver<(Request, Option<Done>)>,
) {
    let mut unacked: VecDeque<Pending> = VecDeque::new();
    let mut seq = 0u64;
    let mut warned = false;
    loop {
        let session = async {
            let mut sock = TcpStream::connect(steerd).await.map_err(|e| e.to_string())?;
            sock.set_nodelay(true).map_err(|e| e.to_string())?;
            let nonce = read_frame(&mut sock, NONCE_LEN)
                .await
                .map_err(|e| e.to_string())?
                .ok_or("closed before its challenge")?;
            Ok::<_, String>((sock, nonce))
        };
        let (sock, nonce) = match tokio::time::timeout(Duration::from_secs(2), session).await {
            Ok(Ok(s)) => s,
            failed => {
                if !warned {
                    let why =
                        failed.map_or_else(|_| "connect timed out".into(), |r| r.err().unwrap_or_default());
                    eprintln!("{node}: prism-steerd at {steerd} unreachable ({why}); retrying");
                    warned = true;
                }
                if rx.is_closed() && unacked.is_empty() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        if warned {
            eprintln!("{node}: prism-steerd at {steerd} reachable again");
        }
        let (rd, mut wr) = sock.into_split();
        let mut rd = tokio::io::BufReader::new(rd);
        // Frames are read by their own task: a read cut short by `select!` would lose
        // the bytes it had taken.
        let (reply_tx, mut replies) = mpsc::unbounded_channel::<Reply>();
        let (reply_secret, reply_nonce, who) = (secret.clone(), nonce.clone(), node.clone());
        let reader = tokio::spawn(async move {
            while let Ok(Some(f)) = read_frame(&mut rd, steer_proto::MAX_FRAME).await {
                let reply = match steer_proto::open_reply(&reply_secret, &reply_nonce, &f) {
                    Ok(reply) => reply,
                    Err(e) => {
                        eprintln!("{who}: refused a reply from prism-steerd ({e}); reconnecting");
                        return;
                    }
                };
                if reply_tx.send(reply).is_err() {
                    return;
                }
            }
        });
        let seal = |seq: u64, request: &Request| {
            steer_proto::seal(
                &secret,
                &nonce,
                &Envelope {
                    node: node.clone(),
                    seq,
                    request: request.clone(),
                },
            )
        };
        // Heartbeat first, then everything not yet acknowledged, in order, renumbered,
        // and the flows this node owns.
        resteer(&mut unacked, &owned);
        let mut out = Vec::new();
        seq += 1;
        let _ = prism_sock::write_frame(&mut out, &seal(seq, &Request::Heartbeat));
        for p in unacked.iter_mut() {
            seq += 1;
            p.seq = seq;
            let _ = prism_sock::write_frame(&mut out, &seal(p.seq, &p.request));
        }
        let mut ok = wr.write_all(&out).await.is_ok();
        let mut beat = tokio::time::interval(Duration::from_secs(1));
        while ok {
            tokio::select! {
                queued = rx.recv() => {
                    let Some(first) = queued else { return };
                    // Everything queued meanwhile goes out in the same write: a burst
                    // of hand-offs costs one segment and one wake-up of the daemon.
                    let mut out = Vec::new();
                    let mut next = Some(first);
                    let mut taken = 0;
                    while let Some((request, done)) = next.take() {
                        seq += 1;
                        taken += 1;
                        let _ = prism_sock::write_frame(&mut out, &seal(seq, &request));
                        unacked.push_back(Pending { seq, request, done });
                        if taken < BURST {
                            next = rx.try_recv().ok();
                        }
                    }
                    ok = wr.write_all(&out).await.is_ok();
                }
                reply = replies.recv() => {
                    let Some(reply) = reply else { ok = false; continue };
                    // Replies come in order; a heartbeat's has no queue entry.
                    while unacked.front().is_some_and(|p| p.seq <= reply.seq) {
                        let p = unacked.pop_front().expect("front checked");
                        if p.seq == reply.seq {
                            if let Some(e) = &reply.error {
                                eprintln!("{node}: prism-steerd refused {:?}: {e}", p.request);
                            }
                            if let Some(done) = p.done {
                                let _ = done.send(reply.error.clone().map_or(Ok(()), Err));
                            }
                        }
                    }
                }
                _ = beat.tick() => {
                    seq += 1;
                    ok = write_frame(&mut wr, &seal(seq, &Request::Heartbeat)).await.is_ok();
                }
            }
        }
        reader.abort();
        eprintln!(
            "{node}: lost prism-steerd at {steerd}; {} requests queued",
            unacked.len()
        );
        warned = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gen(moves: u32) -> Generation {
        Generation { born_us: 5, moves }
    }

    fn steer(flow: SocketAddr, moves: u32) -> Request {
        Request::Steer {
            flow,
            generation: gen(moves),
        }
    }

    #[test]
    fn a_new_session_steers_what_the_node_owns_and_nothing_it_handed_on() {
        let [a, b, c, d]: [SocketAddr; 4] =
            ["10.0.0.2:1", "10.0.0.2:2", "10.0.0.2:3", "10.0.0.2:4"].map(|s| s.parse().unwrap());
        let (done, mut superseded) = oneshot::channel();
        let pending = |request, done| Pending {
            seq: 9,
            request,
            done,
        };
        let release = Request::Release {
            flow: b,
            linger_ms: 0,
            generation: gen(1),
        };
        // d is being handed on: its hold was queued after its steer was applied.
        let hold = Request::Hold { flow: d };
        let mut unacked: VecDeque<Pending> = [
            pending(steer(a, 1), Some(done)),
            pending(release.clone(), None),
            pending(steer(c, 2), None),
            pending(hold.clone(), None),
        ]
        .into();
        // a came back in a later generation; d was steered and acknowledged before.
        let owned = Owned::default();
        owned
            .lock()
            .unwrap()
            .extend([(a, gen(3)), (c, gen(2)), (d, gen(4))]);
        resteer(&mut unacked, &owned);
        let mut requests: Vec<Request> = unacked.into_iter().map(|p| p.request).collect();
        // The owned flows without a queued steer go first, in any order: d's steer
        // must not end its hold.
        requests[..2].sort_by_key(|r| format!("{r:?}"));
        assert_eq!(requests, [steer(a, 3), steer(d, 4), release, steer(c, 2), hold]);
        assert!(matches!(superseded.try_recv(), Ok(Err(_))), "its caller hears");
    }
}
