//! A node's link to prism-steerd: a reliable, ordered queue of requests. Requests
//! survive a lost connection or a restarted daemon: they are sent again, in order,
//! once it answers (every request is idempotent), so a caller that stopped waiting
//! still gets its request applied later.

use crate::steer_proto::{self, Envelope, Reply, Request, NONCE_LEN};
use prism_sock::async_tokio::{read_frame, write_frame};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

type Done = oneshot::Sender<Result<(), String>>;

/// Most requests sent in one write.
const BURST: usize = 256;

/// Handle to the queue; cheap to clone.
#[derive(Clone)]
pub struct SteerClient {
    tx: mpsc::UnboundedSender<(Request, Option<Done>)>,
}

impl SteerClient {
    /// Starts the link task for node `node` (must run inside a tokio runtime).
    pub fn start(node: String, steerd: SocketAddr, secret: Vec<u8>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(link(node, steerd, secret, rx));
        SteerClient { tx }
    }

    /// Queues `request` and waits at most `timeout` for prism-steerd to apply it.
    pub async fn call(&self, request: Request, timeout: Duration) -> Result<(), String> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send((request, Some(done)))
            .map_err(|_| "steering link stopped".to_string())?;
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err("steering link stopped".into()),
            Err(_) => Err(format!("prism-steerd did not answer within {timeout:?}")),
        }
    }

    /// Queues `request` without waiting.
    pub fn post(&self, request: Request) {
        let _ = self.tx.send((request, None));
    }
}

struct Pending {
    seq: u64,
    request: Request,
    done: Option<Done>,
}

async fn link(
    node: String,
    steerd: SocketAddr,
    secret: Vec<u8>,
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
        let reader = tokio::spawn(async move {
            while let Ok(Some(f)) = read_frame(&mut rd, steer_proto::MAX_FRAME).await {
                let Ok(reply) = serde_json::from_slice::<Reply>(&f) else {
                    return;
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
        // Heartbeat first, then everything not yet acknowledged, in order, renumbered.
        let mut ok = true;
        seq += 1;
        ok &= write_frame(&mut wr, &seal(seq, &Request::Heartbeat))
            .await
            .is_ok();
        for p in unacked.iter_mut() {
            seq += 1;
            p.seq = seq;
            ok = ok && write_frame(&mut wr, &seal(p.seq, &p.request)).await.is_ok();
        }
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
