//! Handing a client connection to another node and taking one over.
//!
//! Between nodes a persistent TCP connection carries frames. The owner opens each
//! connection with a fresh challenge; every frame after it is signed with the cluster
//! secret over the challenge (HMAC-SHA256, as prism-steerd's control frames), and
//! request ids must grow on a connection, so a captured frame is refused when replayed
//! on another connection or on the same one. A request is `[id u64][deadline u64, ms since the epoch][hops u32]
//! [born u64][moves u32][parsed_at u64][exported_at u64][flags u8]` (born and moves:
//! the owner's [`Generation`]; the times are the sender's CLOCK_MONOTONIC ns, for the
//! owner's step timings) followed by a
//! [`Handoff`]; the answer is `[id u64][0 = imported, 1 = refused]` and a message. The
//! owner never imports after the deadline. A sender that hears no answer (the
//! connection broke, or a second past the deadline went by) asks the owner, with a
//! request flagged [`STATUS`] that names the hand-off's id, on a connection opened anew
//! if need be, and keeps asking for up to [`SETTLE_LIMIT`]. The owner's book
//! ([`super::outcomes`]) answers what it did, and refuses for good a hand-off it has not
//! seen yet. So exactly one of them ends up with the socket: the owner, or the sender,
//! which imports its copy of the state back and answers 503 itself. Only an owner that
//! cannot be reached for [`SETTLE_LIMIT`] is taken for dead.
//!
//! With the module, the sender's DETACH names the owner (`forward-to`, flag
//! [`FORWARDS`]): the client's packets that l4 still brings to the sender go on to the
//! owner, whose module drops those that arrive before its import. So the owner serves
//! the request as soon as it has imported; its answer to the sender and l4's steering
//! follow in the background.
//! Without the module, l4 holds the flow until the owner has steered it, and only then
//! does the owner serve.

use super::outcomes::Outcome;
use super::stats::HandTimes;
use super::{serve, steer_here, with_backend, BackendChoice, Conn, Fault, Node, STEER_WAIT};
use crate::steer_proto::{self, Generation, Request, NONCE_LEN};
use prism_sock::async_tokio::{read_frame, write_frame, EventStream};
use prism_sock::{EventKind, Exported, Handoff, ImportOptions, MAX_FRAME};
use std::collections::HashMap;
use std::future::poll_fn;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::BufReader;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// How long the owner may take to import, from the sender's export.
const BUDGET: Duration = Duration::from_secs(2);
/// Signing context of requests between nodes (with the connection's challenge).
pub const CONTEXT: &[u8] = b"prism-node handoff v3";
/// Signing context of answers (with the connection's challenge).
pub const ANSWER: &[u8] = b"prism-node answer v3";
/// Read buffer of a hand-off connection.
const READ_BUFFER: usize = 64 * 1024;
/// Request flag: the sender forwards the client's packets to the owner.
const FORWARDS: u8 = 1;
/// Request flag: not a hand-off but a question about the hand-off whose id follows
/// (8 bytes): answered 0 when the owner took it, 1 when it did not and never will.
const STATUS: u8 = 2;
/// How long a sender that heard no answer keeps asking before it takes the owner for
/// dead and imports its copy back.
const SETTLE_LIMIT: Duration = Duration::from_secs(10);
/// How long one question waits for its answer.
const ASK_WAIT: Duration = Duration::from_secs(1);
/// How late a node with [`Fault::SlowToAnswer`] answers after its import.
const SLOW_TO_ANSWER: Duration = Duration::from_secs(4);
/// How long a socket exported with the repair backend stays open after the owner took
/// the connection: the client's packets that passed l4 before its hold are on their
/// way here for microseconds, or milliseconds when a CPU is descheduled.
const EXPORTED_LINGER: Duration = Duration::from_secs(1);

/// How late a node with [`Fault::SlowToHearAnswers`] hears an answer.
const SLOW_TO_HEAR: Duration = Duration::from_secs(3);

type Waiter = oneshot::Sender<Result<(), String>>;

/// Why a hand-off connection could not be opened.
struct LinkError {
    why: String,
    /// Nothing listens at the peer's address: its process is gone.
    dead: bool,
}

impl From<String> for LinkError {
    fn from(why: String) -> Self {
        LinkError { why, dead: false }
    }
}

/// How a hand-off request ended for its sender.
enum Sent {
    /// The owner imported the connection.
    Taken,
    /// The owner did not and never will import it (or the request never left).
    Refused(String),
    /// No answer: the owner may or may not have imported it.
    Unknown(String),
}

struct Link {
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    /// The owner's challenge for this connection.
    nonce: Vec<u8>,
    waiting: Mutex<HashMap<u64, Waiter>>,
    alive: AtomicBool,
}

/// `label || nonce`: what a frame's tag covers besides its body.
fn context(label: &[u8], nonce: &[u8]) -> Vec<u8> {
    [label, nonce].concat()
}

/// Sockets this node exported with the repair backend, each kept open (dropping every
/// packet, see `prism_sock::repair::export_detach`) from the hand-off until
/// [`EXPORTED_LINGER`] after the owner took its connection, by flow.
#[derive(Default)]
pub struct Lingering {
    next: AtomicU64,
    sockets: Mutex<HashMap<SocketAddr, (u64, std::net::TcpStream)>>,
}

impl Lingering {
    /// Keeps `socket` of `flow` open; returns its id for [`Lingering::close`].
    fn keep(&self, flow: SocketAddr, socket: std::net::TcpStream) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.sockets
            .lock()
            .expect("not poisoned")
            .insert(flow, (id, socket));
        id
    }

    /// Closes the lingering socket of `flow` (only if it is `id`, when given).
    fn close(&self, flow: SocketAddr, id: Option<u64>) {
        let mut sockets = self.sockets.lock().expect("not poisoned");
        if sockets
            .get(&flow)
            .is_some_and(|(i, _)| id.is_none_or(|id| id == *i))
        {
            sockets.remove(&flow);
        }
    }
}

/// The outgoing hand-off connection to one node, opened at start by [`keep_links`]
/// and again after it breaks; requests on it are answered by id, so hand-offs do not
/// queue behind each other.
pub struct Peer {
    addr: SocketAddr,
    link: tokio::sync::Mutex<Option<Arc<Link>>>,
    next_id: AtomicU64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Peer {
    /// A peer reachable at `addr` (not connected yet).
    pub fn new(addr: SocketAddr) -> Self {
        Peer {
            addr,
            link: tokio::sync::Mutex::new(None),
            // From the clock, so that ids grow across this node's restarts too: an
            // owner's book keeps them for a minute.
            next_id: AtomicU64::new(now_ms().saturating_mul(1000).max(1)),
        }
    }

    async fn link(&self, secret: &[u8]) -> Result<Arc<Link>, LinkError> {
        let mut slot = self.link.lock().await;
        if let Some(link) = slot.as_ref().filter(|l| l.alive.load(Ordering::Acquire)) {
            return Ok(link.clone());
        }
        let session = async {
            let stream = TcpStream::connect(self.addr).await.map_err(|e| LinkError {
                why: format!("connect to {}: {e}", self.addr),
                dead: e.kind() == std::io::ErrorKind::ConnectionRefused,
            })?;
            let _ = stream.set_nodelay(true);
            let (rd, wr) = stream.into_split();
            let mut rd = BufReader::new(rd);
            let nonce = read_frame(&mut rd, NONCE_LEN)
                .await
                .map_err(|e| format!("challenge from {}: {e}", self.addr))?
                .ok_or_else(|| format!("{} closed before its challenge", self.addr))?;
            Ok::<_, LinkError>((rd, wr, nonce))
        };
        // A lost SYN is retransmitted after a second: the budget covers one.
        let (mut rd, wr, nonce) = tokio::time::timeout(BUDGET, session)
            .await
            .map_err(|_| LinkError::from(format!("connect to {} timed out", self.addr)))??;
        let answers = context(ANSWER, &nonce);
        let link = Arc::new(Link {
            writer: tokio::sync::Mutex::new(wr),
            nonce,
            waiting: Mutex::new(HashMap::new()),
            alive: AtomicBool::new(true),
        });
        let reader = link.clone();
        let (secret, addr) = (secret.to_vec(), self.addr);
        tokio::spawn(async move {
            while let Ok(Some(signed)) = read_frame(&mut rd, 64 * 1024).await {
                // A forged "refused" would have this node import its copy while the owner
                // serves the connection.
                let Ok(frame) = steer_proto::verify(&secret, &answers, &signed) else {
                    eprintln!("refused an answer from {addr} (bad tag); closing");
                    break;
                };
                let Some((id, rest)) = frame.split_first_chunk::<8>() else {
                    break;
                };
                let Some((&status, message)) = rest.split_first() else {
                    break;
                };
                let result = match status {
                    0 => Ok(()),
                    _ => Err(String::from_utf8_lossy(message).into_owned()),
                };
                let waiter = reader
                    .waiting
                    .lock()
                    .expect("not poisoned")
                    .remove(&u64::from_be_bytes(*id));
                if let Some(w) = waiter {
                    let _ = w.send(result);
                }
            }
            reader.alive.store(false, Ordering::Release);
            // Dropped unanswered: whether the owner took them is unknown.
            reader.waiting.lock().expect("not poisoned").clear();
        });
        *slot = Some(link.clone());
        Ok(link)
    }

    /// Sends `handoff` and waits for the owner's answer (or a second past the deadline).
    /// Returns the request's id with the outcome.
    async fn send(&self, secret: &[u8], header: &Header, handoff: &Handoff) -> (u64, Sent) {
        let link = match self.link(secret).await {
            Ok(l) => l,
            Err(e) => return (0, Sent::Refused(e.why)),
        };
        let handoff = handoff.to_bytes();
        let mut body = Vec::with_capacity(49 + handoff.len());
        body.extend_from_slice(&[0; 8]);
        body.extend_from_slice(&(now_ms() + BUDGET.as_millis() as u64).to_be_bytes());
        body.extend_from_slice(&header.hops.to_be_bytes());
        body.extend_from_slice(&header.generation.born_us.to_be_bytes());
        body.extend_from_slice(&header.generation.moves.to_be_bytes());
        body.extend_from_slice(&header.parsed_at.to_be_bytes());
        body.extend_from_slice(&header.exported_at.to_be_bytes());
        body.push(header.flags);
        body.extend_from_slice(&handoff);
        let (id, answer) = self.request(&link, secret, body).await;
        let Some(answer) = answer else {
            return (
                id,
                Sent::Unknown(format!("send to {}: connection lost", self.addr)),
            );
        };
        match tokio::time::timeout(BUDGET + Duration::from_secs(1), answer).await {
            Ok(Ok(Ok(()))) => (id, Sent::Taken),
            Ok(Ok(Err(why))) => (id, Sent::Refused(why)),
            Ok(Err(_)) => (id, Sent::Unknown("connection to the owner lost".into())),
            Err(_) => {
                link.waiting.lock().expect("not poisoned").remove(&id);
                let why = format!("{} did not answer before the deadline", self.addr);
                (id, Sent::Unknown(why))
            }
        }
    }

    /// Writes request `body` (its first 8 bytes become its id) on `link`; returns the id
    /// and where its answer will come, or `None` when the write failed.
    async fn request(
        &self,
        link: &Link,
        secret: &[u8],
        mut body: Vec<u8>,
    ) -> (u64, Option<oneshot::Receiver<Result<(), String>>>) {
        // The owner refuses an id that does not grow: ids are taken in the order the
        // frames are written, under the writer's lock.
        let (tx, rx) = oneshot::channel();
        let mut writer = link.writer.lock().await;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        body[..8].copy_from_slice(&id.to_be_bytes());
        link.waiting.lock().expect("not poisoned").insert(id, tx);
        let frame = steer_proto::sign(secret, &context(CONTEXT, &link.nonce), &body);
        let written = write_frame(&mut *writer, &frame).await;
        drop(writer);
        if written.is_err() {
            link.alive.store(false, Ordering::Release);
            link.waiting.lock().expect("not poisoned").remove(&id);
            return (id, None);
        }
        (id, Some(rx))
    }

    /// Asks the owner whether it took hand-off `id`, until it answers or
    /// [`SETTLE_LIMIT`] passes. True when it took it; an error when it is dead (nothing
    /// listens at its address: its sockets, an imported one too, died with it) or could
    /// not be reached for that long.
    async fn settle(&self, secret: &[u8], id: u64) -> Result<bool, String> {
        let give_up = tokio::time::Instant::now() + SETTLE_LIMIT;
        let mut last = String::new();
        while tokio::time::Instant::now() < give_up {
            match self.ask(secret, id).await {
                Ok(taken) => return Ok(taken),
                Err(e) if e.dead => return Err(format!("{} is dead ({})", self.addr, e.why)),
                Err(e) => last = e.why,
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(format!("{} unreachable for {SETTLE_LIMIT:?} ({last})", self.addr))
    }

    async fn ask(&self, secret: &[u8], id: u64) -> Result<bool, LinkError> {
        let link = self.link(secret).await?;
        let mut body = vec![0; 8];
        body.extend_from_slice(&[0; 8 + 4 + 8 + 4 + 8 + 8]);
        body.push(STATUS);
        body.extend_from_slice(&id.to_be_bytes());
        let (asked, answer) = self.request(&link, secret, body).await;
        let answer = answer.ok_or_else(|| LinkError::from("connection lost".to_string()))?;
        match tokio::time::timeout(ASK_WAIT, answer).await {
            Ok(Ok(result)) => Ok(result.is_ok()),
            Ok(Err(_)) => Err("connection lost".to_string().into()),
            Err(_) => {
                link.waiting.lock().expect("not poisoned").remove(&asked);
                Err("no answer".to_string().into())
            }
        }
    }
}

/// How often [`keep_links`] checks that every peer's hand-off connection is up.
const LINK_CHECK: Duration = Duration::from_millis(500);

/// Keeps a hand-off connection open to every other node, from start-up on, and opens
/// it again when it breaks, so that a hand-off never waits for a connection (and its
/// challenge) behind a busy peer's accept loop: one that did waited past its budget
/// and answered 503.
pub async fn keep_links(node: Arc<Node>) {
    let secret = node.cluster.secret.as_bytes().to_vec();
    loop {
        for (i, peer) in node.peers.iter().enumerate() {
            if i != node.me {
                // A peer not up yet, or gone, is tried again at the next check.
                let _ = peer.link(&secret).await;
            }
        }
        tokio::time::sleep(LINK_CHECK).await;
    }
}

/// Imports `state` on this node as a non-blocking socket (for tokio).
async fn import_here(node: &Node, state: &Exported) -> prism_sock::Result<OwnedFd> {
    let options = ImportOptions {
        nonblock: true,
        ..ImportOptions::default()
    };
    with_backend(node.backend, |b| b.and_then(|b| b.import(state, &options)))
}

/// Hands `conn` (whose buffer starts with the request parsed at `parsed_at`) to node
/// `owner`. Returns the connection, live again here, when that failed: the caller
/// answers 503.
pub async fn hand_off(node: &Arc<Node>, conn: Conn, owner: usize, parsed_at: u64) -> Option<Conn> {
    let name = node.name();
    let flow = conn.peer;
    let owner_name = &node.cluster.nodes[owner].name;
    // Between the export and the owner's steer, the client's packets still reach this
    // node. The module's RST guard drops them here (the client retransmits to the new
    // owner); without the module nothing would, so l4 holds the flow first.
    let hold = node.backend == BackendChoice::Repair;
    if hold {
        // From the hold on, the flow is not this node's to steer: a new session with
        // prism-steerd would steer it here again, and that steer ends the hold.
        node.steer.disown(flow);
        if let Err(e) = node.steer.call(Request::Hold { flow }, STEER_WAIT).await {
            // The hold stays queued: a steer of the flow's generation behind it ends
            // it, or it would cut the flow off later, and makes the flow ours again.
            eprintln!("{name}: {flow}: no hand-off to {owner_name}: hold: {e}");
            drop(node.steer.steer(flow, conn.generation, STEER_WAIT));
            return Some(conn);
        }
    }
    let Conn {
        stream,
        peer,
        buf,
        hops,
        generation,
        ..
    } = conn;
    let std_stream = match stream.into_std() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{name}: {flow}: cannot take the socket from tokio: {e}");
            return None;
        }
    };
    let forwards = !hold;
    let to = node.cluster.nodes[owner].addr4;
    let exported = with_backend(node.backend, |c| {
        c.and_then(|c| {
            if forwards {
                c.export_detach_to(&std_stream, to)
            } else {
                c.export_detach(&std_stream)
            }
        })
    });
    let state = match exported {
        Ok(state) => state,
        Err(e) => {
            // The socket is untouched: keep serving it here, steered as before.
            eprintln!("{name}: {flow}: export for {owner_name} refused: {e}");
            let stream = TcpStream::from_std(std_stream).ok()?;
            if hold {
                // Ends the hold, and the flow is ours again.
                if let Err(e) = node.steer.steer(flow, generation, STEER_WAIT).await {
                    eprintln!("{name}: {flow}: ending the hold: {e} (kept queued)");
                }
            }
            return Some(Conn {
                stream,
                peer,
                buf,
                hops,
                generation,
                handed_at: None,
                direct: false,
            });
        }
    };
    // With the module the kernel guards the tuple; the repair backend's socket guards
    // it itself (it drops every packet now) for as long as it stays open: until the
    // packets l4 sent here before the hold have arrived. It lingers from before the
    // frame goes: the owner can hand the connection back here before this task hears
    // its answer, and that import, which closes the flow's lingering socket first,
    // needs the tuple.
    let guard = (!forwards).then(|| node.lingering.keep(flow, std_stream));
    node.steer.disown(flow);
    let exported_at = super::stats::mono_ns();
    let handoff = Handoff { state, request: buf };
    let flags = if forwards { FORWARDS } else { 0 };
    let header = Header {
        hops: hops + 1,
        generation: generation.after(1),
        parsed_at,
        exported_at,
        flags,
    };
    let secret = node.cluster.secret.as_bytes();
    let (id, sent) = node.peers[owner].send(secret, &header, &handoff).await;
    if node.fault == Some(Fault::SlowToHearAnswers) {
        tokio::time::sleep(SLOW_TO_HEAR).await;
    }
    let refused = match sent {
        Sent::Taken => None,
        Sent::Refused(why) => Some(why),
        // The owner may have imported: importing our copy too would give the client
        // two endpoints. Ask.
        Sent::Unknown(why) => {
            eprintln!("{name}: {flow}: no answer from {owner_name} ({why}); asking it");
            match node.peers[owner].settle(secret, id).await {
                Ok(true) => {
                    eprintln!("{name}: {flow}: {owner_name} had taken it");
                    None
                }
                Ok(false) => Some(format!("{why}; {owner_name} did not take it")),
                Err(e) => Some(format!("{why}; {e}")),
            }
        }
    };
    let Some(why) = refused else {
        super::Stats::bump(&node.stats.handoffs_out);
        if forwards {
            super::Stats::bump(&node.stats.forwards);
        }
        if let Some(id) = guard {
            let node = node.clone();
            tokio::spawn(async move {
                tokio::time::sleep(EXPORTED_LINGER).await;
                node.lingering.close(flow, Some(id));
            });
        }
        return None;
    };
    // The copy taken back needs the tuple.
    if let Some(id) = guard {
        node.lingering.close(flow, Some(id));
    }
    eprintln!("{name}: {flow}: hand-off to {owner_name} failed ({why}); importing it back");
    super::Stats::bump(&node.stats.handoffs_back);
    let Handoff { state, request } = handoff;
    match import_here(node, &state).await {
        Ok(fd) => {
            let stream = TcpStream::from_std(std::net::TcpStream::from(fd)).ok()?;
            // The owner may have imported and steered (generation + 1) before the
            // exchange broke: taking the connection back is the move after that.
            let generation = generation.after(2);
            steer_here(node, flow, generation).await;
            Some(Conn {
                stream,
                peer,
                buf: request,
                hops,
                generation,
                handed_at: None,
                direct: false,
            })
        }
        Err(e) => {
            eprintln!("{name}: {flow}: connection lost: cannot import it back: {e}");
            None
        }
    }
}

/// When `import` failed because the state's tuple is taken here: by what, for the
/// log (else "").
fn tuple_taken_by(state: &Exported, import: &prism_sock::Error) -> String {
    let taken = match import {
        prism_sock::Error::Io(io) => matches!(
            io.kind(),
            std::io::ErrorKind::AddrNotAvailable | std::io::ErrorKind::AddrInUse
        ),
        other => matches!(other.errno(), Some(libc::EADDRNOTAVAIL | libc::EADDRINUSE)),
    };
    let tuple = match state {
        Exported::Repair(r) => Some((r.local, r.peer)),
        Exported::Module(m) => m.decode().ok().and_then(|d| d.local.zip(d.peer)),
    };
    match tuple.filter(|_| taken) {
        Some((local, peer)) => super::tuple_holder::describe(local, peer),
        None => String::new(),
    }
}

/// Serves hand-offs from other nodes on a thread and runtime of their own: reading a
/// frame, importing and answering never wait behind the connections this node serves,
/// which under load kept the main runtime's queue seconds long and let imports miss
/// their deadline (the sender then answered 503). Imported connections are served on
/// the runtime this is called from.
pub fn spawn_control_server(node: Arc<Node>, listener: TcpListener) -> Result<(), String> {
    let listener = listener
        .into_std()
        .map_err(|e| format!("hand-off listener: {e}"))?;
    let serving = tokio::runtime::Handle::current();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("hand-off runtime: {e}"))?;
    std::thread::Builder::new()
        .name("handoffs".into())
        .spawn(move || {
            runtime.block_on(async move {
                match TcpListener::from_std(listener) {
                    Ok(l) => control_server(node, l, serving).await,
                    Err(e) => eprintln!("{}: hand-off listener: {e}", node.name()),
                }
            })
        })
        .map_err(|e| format!("hand-off thread: {e}"))?;
    Ok(())
}

/// Accepts hand-offs from the other nodes; `serving` runs the connections taken over.
async fn control_server(node: Arc<Node>, listener: TcpListener, serving: tokio::runtime::Handle) {
    while let Ok((stream, from)) = listener.accept().await {
        let _ = stream.set_nodelay(true);
        let node = node.clone();
        let serving = serving.clone();
        tokio::spawn(async move {
            let (rd, mut wr) = stream.into_split();
            // A frame in one read where it fits (a hand-off is mostly a few hundred bytes).
            let mut rd = BufReader::with_capacity(READ_BUFFER, rd);
            let Ok(nonce) = steer_proto::new_nonce() else {
                return;
            };
            if write_frame(&mut wr, &nonce).await.is_err() {
                return;
            }
            let requests = context(CONTEXT, &nonce);
            let wr = Arc::new(Answers {
                wr: tokio::sync::Mutex::new(wr),
                context: context(ANSWER, &nonce),
                secret: node.cluster.secret.as_bytes().to_vec(),
            });
            let mut last_id = 0;
            loop {
                let frame = match read_frame(&mut rd, MAX_FRAME).await {
                    Ok(Some(f)) => f,
                    Ok(None) => return,
                    Err(e) => {
                        eprintln!("{}: hand-off connection from {from}: {e}", node.name());
                        return;
                    }
                };
                let body = match steer_proto::verify(node.cluster.secret.as_bytes(), &requests, &frame) {
                    Ok(b) => b,
                    Err(e) => {
                        eprintln!(
                            "{}: refused hand-off frame from {from}: {e}; closing",
                            node.name()
                        );
                        return;
                    }
                };
                let parsed = body.split_first_chunk::<8>().and_then(|(id, rest)| {
                    let (deadline, rest) = rest.split_first_chunk::<8>()?;
                    let (hops, rest) = rest.split_first_chunk::<4>()?;
                    let (born, rest) = rest.split_first_chunk::<8>()?;
                    let (moves, rest) = rest.split_first_chunk::<4>()?;
                    let (parsed_at, rest) = rest.split_first_chunk::<8>()?;
                    let (exported_at, rest) = rest.split_first_chunk::<8>()?;
                    let (&flags, rest) = rest.split_first()?;
                    let timing = Timing {
                        deadline: u64::from_be_bytes(*deadline),
                        hops: u32::from_be_bytes(*hops),
                        generation: Generation {
                            born_us: u64::from_be_bytes(*born),
                            moves: u32::from_be_bytes(*moves),
                        },
                        times: HandTimes {
                            parsed: u64::from_be_bytes(*parsed_at),
                            exported: u64::from_be_bytes(*exported_at),
                            received: super::stats::mono_ns(),
                            imported: 0,
                            answered: 0,
                            writing: 0,
                        },
                        forwarded: flags & FORWARDS != 0,
                    };
                    Some((u64::from_be_bytes(*id), timing, flags, rest))
                });
                let Some((id, timing, flags, rest)) = parsed else {
                    eprintln!("{}: malformed hand-off frame from {from}; closing", node.name());
                    return;
                };
                if id <= last_id {
                    eprintln!(
                        "{}: refused hand-off frame from {from}: id {id} after {last_id} (replayed); closing",
                        node.name()
                    );
                    return;
                }
                last_id = id;
                if flags & STATUS != 0 {
                    let Some(asked) = rest.first_chunk::<8>() else {
                        eprintln!("{}: malformed question from {from}; closing", node.name());
                        return;
                    };
                    let asked = u64::from_be_bytes(*asked);
                    tokio::spawn(answer_question(node.clone(), wr.clone(), id, from.ip(), asked));
                    continue;
                }
                let handoff = match Handoff::from_bytes(rest) {
                    Ok(h) => h,
                    Err(e) => {
                        wr.answer(id, Err(e.to_string())).await;
                        continue;
                    }
                };
                let from = from.ip();
                tokio::spawn(take_over(
                    node.clone(),
                    serving.clone(),
                    (wr.clone(), from, id),
                    timing,
                    handoff,
                ));
            }
        });
    }
}

/// The owner's side of a hand-off connection: answers, signed for its challenge.
struct Answers {
    wr: tokio::sync::Mutex<OwnedWriteHalf>,
    context: Vec<u8>,
    secret: Vec<u8>,
}

impl Answers {
    async fn answer(&self, id: u64, result: Result<(), String>) -> bool {
        let mut body = id.to_be_bytes().to_vec();
        match result {
            Ok(()) => body.push(0),
            Err(e) => {
                body.push(1);
                body.extend_from_slice(e.as_bytes());
            }
        }
        let frame = steer_proto::sign(&self.secret, &self.context, &body);
        write_frame(&mut *self.wr.lock().await, &frame).await.is_ok()
    }
}

/// What the sender puts before a hand-off's state.
pub struct Header {
    /// Hand-offs of the connection, this one included.
    hops: u32,
    /// The owner's generation.
    generation: Generation,
    /// When the sender parsed the request (CLOCK_MONOTONIC ns).
    parsed_at: u64,
    /// When the sender exported the socket.
    exported_at: u64,
    /// [`FORWARDS`] or 0.
    flags: u8,
}

/// The header of a hand-off request, as the owner reads it.
struct Timing {
    /// Last moment (ms since the epoch) the owner may import.
    deadline: u64,
    /// Hand-offs of the connection, this one included.
    hops: u32,
    /// The owner's generation.
    generation: Generation,
    /// When the steps so far ended.
    times: HandTimes,
    /// The sender forwards the client's packets here.
    forwarded: bool,
}

/// Answers a sender's question `id` about its hand-off `asked`, once the book knows.
async fn answer_question(node: Arc<Node>, wr: Arc<Answers>, id: u64, from: IpAddr, asked: u64) {
    // An import takes milliseconds; past this, the sender asks again.
    for _ in 0..1000 {
        match node.outcomes.ask(from, asked) {
            Some(Outcome::Taken) => {
                wr.answer(id, Ok(())).await;
                return;
            }
            Some(_) => {
                wr.answer(id, Err(format!("{}: hand-off {asked} not taken", node.name())))
                    .await;
                return;
            }
            None => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

async fn take_over(
    node: Arc<Node>,
    serving: tokio::runtime::Handle,
    (wr, from, id): (Arc<Answers>, IpAddr, u64),
    timing: Timing,
    handoff: Handoff,
) {
    let Timing {
        deadline,
        hops,
        generation,
        mut times,
        forwarded,
    } = timing;
    let name = node.name().to_string();
    if node.fault == Some(Fault::DieOnHandoff) {
        eprintln!("{name}: fault injection: dying before the import");
        // SAFETY: plain signal to this process.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
    if !node.outcomes.claim(from, id) {
        // The sender asked before this frame came, and took the connection back.
        super::Stats::bump(&node.stats.handoffs_refused);
        wr.answer(id, Err("the sender gave this hand-off up".into()))
            .await;
        return;
    }
    if now_ms() > deadline {
        node.outcomes.settle(from, id, Outcome::Refused);
        super::Stats::bump(&node.stats.handoffs_refused);
        wr.answer(id, Err("deadline passed before the import".into()))
            .await;
        return;
    }
    let Handoff { state, request } = handoff;
    // A flow coming back while its socket from the last time lingers here: the import
    // needs the tuple, and the new socket takes over the late packets.
    if let Exported::Repair(r) = &state {
        node.lingering.close(r.peer, None);
    }
    let imported = import_here(&node, &state).await;
    let imported = match imported {
        Ok(i) => i,
        Err(e) => {
            node.outcomes.settle(from, id, Outcome::Refused);
            eprintln!("{name}: refused a hand-off: {e}{}", tuple_taken_by(&state, &e));
            super::Stats::bump(&node.stats.handoffs_refused);
            wr.answer(id, Err(format!("{name}: import: {e}"))).await;
            return;
        }
    };
    times.imported = super::stats::mono_ns();
    node.outcomes.settle(from, id, Outcome::Taken);
    let std_stream = std::net::TcpStream::from(imported);
    let Ok(peer) = std_stream.peer_addr() else { return };
    if node.fault == Some(Fault::SlowToAnswer) {
        tokio::time::sleep(SLOW_TO_ANSWER).await;
    }
    // The client waits for none of this: with forwarding its packets reach this node
    // through the sender until l4 steers them, so the answer and the steer go out in
    // a task of their own, which runs once the first response write has gone (or on
    // an idle worker). Without forwarding l4 holds the flow until the steer is in, so
    // serving waits for it; the answer goes out meanwhile.
    let steered = steer_here(&node, peer, generation);
    let answered = {
        let name = name.clone();
        async move {
            if !wr.answer(id, Ok(())).await {
                // The connection is ours all the same: a sender that heard nothing
                // asks, and the book tells it so.
                eprintln!("{name}: hand-off {id}: answer not delivered; the connection stays here");
            }
        }
    };
    if forwarded {
        tokio::spawn(async move {
            tokio::join!(answered, steered);
        });
    } else {
        tokio::join!(answered, steered);
    }
    times.answered = super::stats::mono_ns();
    super::Stats::bump(&node.stats.handoffs_in);
    serving.spawn(async move {
        let Ok(stream) = TcpStream::from_std(std_stream) else {
            return;
        };
        let conn = Conn {
            stream,
            peer,
            buf: request,
            hops,
            generation,
            handed_at: Some(times),
            direct: false,
        };
        serve(node, conn).await;
    });
}

/// Tells prism-steerd about every VIP socket this node released, so it removes the
/// flow's entry (after the TIME_WAIT the event reports).
pub async fn forward_releases(node: Arc<Node>, mut events: EventStream) {
    loop {
        let next = poll_fn(|cx| futures_core::Stream::poll_next(Pin::new(&mut events), cx)).await;
        match next {
            None => return,
            Some(Err(e)) if e.errno() == Some(libc::ENOBUFS) => {
                eprintln!("{}: events: {e}", node.name());
                // Events dropped while the queue is full raise no new error until it
                // has been emptied: empty it, then ask the module what is still alive.
                loop {
                    match events.try_next() {
                        Ok(Some(ev)) => forward_release(&node, &ev),
                        Ok(None) => break,
                        Err(e) if e.errno() == Some(libc::ENOBUFS) => {}
                        Err(e) => {
                            eprintln!("{}: events: {e}", node.name());
                            break;
                        }
                    }
                }
                resync_releases(&node);
            }
            Some(Err(e)) => eprintln!("{}: events: {e}", node.name()),
            Some(Ok(ev)) => forward_release(&node, &ev),
        }
        if node.fault == Some(Fault::LaggingEventReader) {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

fn forward_release(node: &Node, ev: &prism_sock::Event) {
    if ev.kind == EventKind::Released && node.cluster.is_vip(ev.local.ip()) {
        super::Stats::bump(&node.stats.releases);
        node.steer.release(ev.peer, ev.time_wait_ms.into());
    }
}

/// After lost events: each flow this node owned before the module listed the sockets
/// it tracks, and that is not among them, was released meanwhile (or handed on, which
/// `release_if_owned` and prism-steerd's generations tell apart). Its TIME_WAIT is not
/// known any more: the entry stays the longest linger.
fn resync_releases(node: &Node) {
    let owned = node.steer.owned();
    let listed = with_backend(node.backend, |b| match b {
        Ok(prism_sock::Backend::Module(c)) => c.list_tracked(),
        Ok(_) => Ok(Vec::new()),
        Err(e) => Err(e),
    });
    let tracked: std::collections::HashSet<SocketAddr> = match listed {
        Ok(list) => list.into_iter().map(|t| t.peer).collect(),
        Err(e) => {
            eprintln!(
                "{}: cannot list tracked sockets to re-sync releases: {e}",
                node.name()
            );
            return;
        }
    };
    let linger = node.cluster.steerd.max_linger_ms;
    let released = owned
        .into_iter()
        .filter(|(flow, _)| !tracked.contains(flow))
        .filter(|(flow, generation)| node.steer.release_if_owned(*flow, *generation, linger))
        .count();
    node.stats
        .releases
        .fetch_add(released as u64, std::sync::atomic::Ordering::Relaxed);
    eprintln!(
        "{}: lost release events; re-synced from the module: {released} flows released meanwhile",
        node.name()
    );
}
