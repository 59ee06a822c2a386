//! prism-steerd: the L4 layer. It keeps l4's nftables steering state (a per-flow map
//! client address and port -> node mark, and a hold set of flows being handed off) in
//! step with what the nodes report over the authenticated control protocol of
//! [`crate::steer_proto`]. Entries go when their owner's `SOCK_RELEASED` arrives
//! (after the TIME_WAIT it reports, at most `max_linger_ms`), or when their node has
//! been silent for `node_timeout_ms`. It never flushes the table: a restarted
//! prism-steerd adopts the entries it finds, and those that no node steers again within
//! `node_timeout_ms` (nodes steer every flow they own again when they reconnect) go.
//! Steers and releases are numbered per flow ([`steer_proto::Generation`]), so a late
//! one from an earlier owner changes nothing.

mod elements;
mod libnft;
pub mod nft;
pub mod table;

use crate::cluster::Cluster;
use crate::steer_proto::{self, Reply, Request, MAX_FRAME};
use prism_sock::async_tokio::{read_frame, write_frame};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use table::{Op, Table, UndoLog};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

type Done = oneshot::Sender<Result<(), String>>;

/// Starts the daemon and serves until the process ends.
pub async fn run(cluster: Cluster) -> Result<(), String> {
    let table = tokio::task::spawn_blocking({
        let c = cluster.clone();
        move || nft::setup(&c)
    })
    .await
    .map_err(|e| e.to_string())??;
    eprintln!(
        "prism-steerd: adopted {} flows and {} holds from nftables (set up through {}); changes go out as nf_tables netlink batches",
        table.flows.len(),
        table.holds.len(),
        if libnft::available() {
            "libnftables"
        } else {
            "the nft command"
        }
    );
    let listener = TcpListener::bind(cluster.steerd.listen)
        .await
        .map_err(|e| format!("bind {}: {e}", cluster.steerd.listen))?;
    eprintln!("prism-steerd: listening on {}", cluster.steerd.listen);
    let cluster = Arc::new(cluster);
    // Every node counts as just seen: nodes of adopted entries get a full timeout to
    // come back.
    let start = Instant::now();
    let seen: Arc<Mutex<HashMap<u32, Instant>>> = Arc::new(Mutex::new(
        cluster.nodes.iter().map(|n| (n.mark, start)).collect(),
    ));
    let (ops, rx) = mpsc::channel(8192);
    tokio::spawn(apply(rx, table, cluster.clone(), seen.clone(), ops.clone()));
    loop {
        let (stream, from) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                eprintln!("prism-steerd: accept: {e}");
                continue;
            }
        };
        let (cluster, ops, seen) = (cluster.clone(), ops.clone(), seen.clone());
        tokio::spawn(async move {
            if let Err(e) = session(stream, &cluster, ops, seen).await {
                eprintln!("prism-steerd: {from}: {e}");
            }
        });
    }
}

/// One node connection: challenge, then authenticated requests, answered in order.
async fn session(
    stream: tokio::net::TcpStream,
    cluster: &Cluster,
    ops: mpsc::Sender<(Op, Option<Done>)>,
    seen: Arc<Mutex<HashMap<u32, Instant>>>,
) -> Result<(), String> {
    let from = stream.peer_addr().map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    let (rd, mut wr) = stream.into_split();
    // Every frame in one read rather than a header and a body.
    let mut rd = tokio::io::BufReader::new(rd);
    let nonce = steer_proto::new_nonce().map_err(|e| e.to_string())?;
    write_frame(&mut wr, &nonce).await.map_err(|e| e.to_string())?;
    let secret = cluster.secret.as_bytes().to_vec();
    // Replies are written by their own task in request order while the requests are
    // applied in batches; the replies of one batch go out in one write.
    let (replies, mut pending) = mpsc::unbounded_channel::<(u64, oneshot::Receiver<Result<(), String>>)>();
    tokio::spawn(async move {
        let mut next = None;
        loop {
            let item = match next.take() {
                Some(item) => Some(item),
                None => pending.recv().await,
            };
            let Some((seq, done)) = item else {
                return;
            };
            let stopping = || Err("prism-steerd stopping".to_string());
            let mut out = Vec::new();
            let mut put = |seq, result: Result<(), String>| {
                let reply = Reply {
                    seq,
                    error: result.err(),
                };
                let _ = prism_sock::write_frame(&mut out, &steer_proto::seal_reply(&secret, &nonce, &reply));
            };
            put(seq, done.await.unwrap_or_else(|_| stopping()));
            while let Ok((seq, mut done)) = pending.try_recv() {
                match done.try_recv() {
                    Ok(result) => put(seq, result),
                    Err(oneshot::error::TryRecvError::Closed) => put(seq, stopping()),
                    Err(oneshot::error::TryRecvError::Empty) => {
                        next = Some((seq, done));
                        break;
                    }
                }
            }
            if wr.write_all(&out).await.is_err() {
                return;
            }
        }
    });
    let mut last_seq = 0u64;
    let mut node_name = None;
    loop {
        let frame = match read_frame(&mut rd, MAX_FRAME).await {
            Ok(Some(f)) => f,
            Ok(None) => return Ok(()),
            Err(e) => return Err(format!("refused: {e}; closing")),
        };
        let env = steer_proto::open(cluster.secret.as_bytes(), &nonce, &frame)
            .map_err(|e| format!("refused control message: {e}; closing"))?;
        let node = cluster
            .node(&env.node)
            .ok_or_else(|| format!("refused control message: unknown node {:?}; closing", env.node))?;
        if from.ip() != std::net::IpAddr::V4(node.addr4) {
            return Err(format!(
                "refused control message: node {} must connect from {}; closing",
                node.name, node.addr4
            ));
        }
        if env.seq <= last_seq || node_name.as_ref().is_some_and(|n| *n != node.name) {
            return Err(format!(
                "refused control message: seq {} after {last_seq} or node changed; closing",
                env.seq
            ));
        }
        last_seq = env.seq;
        node_name = Some(node.name.clone());
        seen.lock()
            .expect("not poisoned")
            .insert(node.mark, Instant::now());
        let mark = node.mark;
        let op = match env.request {
            Request::Heartbeat => None,
            Request::Hold { flow } => Some(Op::Hold { flow, mark }),
            Request::Unhold { flow } => Some(Op::Unhold { flow, mark }),
            Request::Steer { flow, generation } => Some(Op::Steer {
                flow,
                mark,
                generation,
            }),
            Request::Release {
                flow,
                linger_ms,
                generation,
            } => Some(Op::Release {
                flow,
                mark,
                linger: Duration::from_millis(linger_ms.min(cluster.steerd.max_linger_ms)),
                generation,
            }),
        };
        let (done, wait) = oneshot::channel();
        match op {
            Some(op) => ops
                .send((op, Some(done)))
                .await
                .map_err(|_| "stopping".to_string())?,
            None => {
                let _ = done.send(Ok(()));
            }
        }
        if replies.send((env.seq, wait)).is_err() {
            return Ok(());
        }
    }
}

/// The only writer of the table: applies queued ops in batches (whatever queued while
/// the previous batch was in the kernel), one nf_tables transaction each, and runs the
/// expiry sweep.
async fn apply(
    mut rx: mpsc::Receiver<(Op, Option<Done>)>,
    mut table: Table,
    cluster: Arc<Cluster>,
    seen: Arc<Mutex<HashMap<u32, Instant>>>,
    ops: mpsc::Sender<(Op, Option<Done>)>,
) {
    // The sweep is queued like any op, so it is ordered with them.
    let node_timeout = Duration::from_millis(cluster.steerd.node_timeout_ms);
    let max_linger = Duration::from_millis(cluster.steerd.max_linger_ms);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        // Nodes steer what they own again on reconnecting, within a node timeout.
        let sweep = Op::Expire {
            orphans_after: node_timeout.max(max_linger),
        };
        loop {
            tick.tick().await;
            if ops.send((sweep.clone(), None)).await.is_err() {
                return;
            }
        }
    });
    let mut nfnl = elements::Nfnl::new();
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < 512 {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let now = Instant::now();
        if batch.iter().any(|(op, _)| matches!(op, Op::Expire { .. })) {
            let dead: Vec<u32> = seen
                .lock()
                .expect("not poisoned")
                .iter()
                .filter(|(_, t)| now.duration_since(**t) > node_timeout)
                .map(|(m, _)| *m)
                .collect();
            for mark in dead.into_iter().filter(|m| table.has_node(*m)) {
                let name = cluster.node_by_mark(mark).map_or("?", |n| n.name.as_str());
                eprintln!("prism-steerd: node {name} silent for {node_timeout:?}: its entries expire");
                batch.push((Op::DropNode { mark }, None));
            }
        }
        let mut log = UndoLog::default();
        let changes: Vec<_> = batch
            .iter()
            .flat_map(|(op, _)| table.apply_logged(op, now, &mut log))
            .collect();
        // One netlink round trip: short enough to make on the runtime thread.
        let result = nfnl.apply(&changes);
        match result {
            Ok(()) => {
                for (_, done) in batch {
                    if let Some(d) = done {
                        let _ = d.send(Ok(()));
                    }
                }
            }
            Err(e) => {
                // The kernel took none of it. Find the culprit: one transaction per op.
                table.undo(log);
                eprintln!(
                    "prism-steerd: batch of {} failed ({e}); applying one by one",
                    batch.len()
                );
                for (op, done) in batch {
                    let mut log = UndoLog::default();
                    let changes = table.apply_logged(&op, now, &mut log);
                    let r = nfnl.apply(&changes);
                    if r.is_err() {
                        table.undo(log);
                        eprintln!("prism-steerd: {op:?}: {r:?}");
                    }
                    if let Some(d) = done {
                        let _ = d.send(r);
                    }
                }
            }
        }
    }
}
