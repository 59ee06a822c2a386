//! prism-node: one node of the object store. It answers `GET /objects/<key>` on the
//! VIP for the keys it owns and hands every other connection, with the request it just
//! read, to the key's owner, which answers the client directly (L7 direct server
//! return) and keeps the connection for the next request.

pub mod handoff;
pub mod http;
mod outcomes;
pub mod stats;
pub mod steer_client;
pub mod tls;
mod tuple_holder;

use crate::cluster::Cluster;
use crate::objects;
use crate::ring::Ring;
use crate::steer_proto::Generation;
use http::Parsed;
use prism_sock::{Backend, Client};
use stats::Stats;
use std::cell::RefCell;
use std::collections::HashMap;
use std::io::IoSlice;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use steer_client::SteerClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How long a node waits for prism-steerd before it gives up on a hand-off (covers a
/// restart of the daemon).
pub const STEER_WAIT: Duration = Duration::from_secs(10);

/// How a node moves sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendChoice {
    /// The module if it is loaded, else repair.
    Auto,
    /// The prism_sock module.
    Module,
    /// TCP_REPAIR in user space (no module needed).
    Repair,
}

/// Test-only faults a node can be started with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Fault {
    /// Die (SIGKILL) on receiving a hand-off, before importing it.
    DieOnHandoff,
    /// Listen for releases with the smallest receive buffer and pause half a second
    /// after each event, so a burst of releases overruns the listener.
    LaggingEventReader,
    /// Hear each hand-off's answer three seconds late, as a sender whose task waits behind
    /// a busy runtime: the connection can come back before the sender has heard that
    /// it left.
    SlowToHearAnswers,
    /// Answer each hand-off four seconds after importing it, as an owner stopped between
    /// its import and its answer: the sender hears nothing in time and asks.
    SlowToAnswer,
}

/// Everything a node's tasks share.
pub struct Node {
    /// The cluster.
    pub cluster: Cluster,
    /// This node's index in `cluster.nodes`.
    pub me: usize,
    ring: Ring,
    /// The objects this node owns, by key, with their digests.
    objects: HashMap<String, (Arc<Vec<u8>>, String)>,
    /// Counters.
    pub stats: Stats,
    /// The steering link.
    pub steer: SteerClient,
    /// Outgoing hand-off connections, one per other node.
    pub peers: Vec<handoff::Peer>,
    /// Injected fault, if any.
    pub fault: Option<Fault>,
    /// `Module` or `Repair` (resolved at start).
    pub backend: BackendChoice,
    /// Sockets exported with the repair backend that still guard their tuple.
    pub lingering: handoff::Lingering,
    /// What became of the hand-offs other nodes sent here, for their questions.
    pub outcomes: outcomes::Outcomes,
}

impl Node {
    /// This node's name.
    pub fn name(&self) -> &str {
        &self.cluster.nodes[self.me].name
    }
}

/// A client connection held by this node.
pub struct Conn {
    /// The socket.
    pub stream: TcpStream,
    /// The client's address and port.
    pub peer: SocketAddr,
    /// Bytes read and not yet answered.
    pub buf: Vec<u8>,
    /// How many times the connection was handed off so far.
    pub hops: u32,
    /// Which owner of the connection this node is, for prism-steerd.
    pub generation: Generation,
    /// When the steps of the hand-off that brought this connection here ended; taken
    /// when the first response byte is written, to time the hand-off.
    pub handed_at: Option<stats::HandTimes>,
    /// Accepted on the node's own address, not the VIP: a proxy or a client that knows
    /// the owner. Such a flow is not steered at l4, so it is never handed off.
    pub direct: bool,
}

thread_local! {
    static BACKEND: RefCell<Option<Backend>> = const { RefCell::new(None) };
}

/// Runs `f` right here, on the runtime's thread, with this thread's backend (a netlink
/// client for the module, opened on first use) or the error of opening it. An export or
/// import is one short netlink round trip (the repair backend's few dozen setsockopts
/// do not block either), cheaper than a hop to the blocking pool and back, which cost
/// about a millisecond each way. `f` always runs, so it can hand back what it was given.
pub fn with_backend<T>(choice: BackendChoice, f: impl FnOnce(prism_sock::Result<&Backend>) -> T) -> T {
    BACKEND.with(|slot| {
        let mut slot = slot.borrow_mut();
        if slot.is_none() {
            let made = match choice {
                BackendChoice::Repair => Ok(Backend::Repair),
                _ => Client::connect().map(Backend::Module),
            };
            match made {
                Ok(b) => *slot = Some(b),
                Err(e) => return f(Err(e)),
            }
        }
        f(Ok(slot.as_ref().expect("set above")))
    })
}

/// Starts node `name` and serves until the process ends.
pub async fn run(
    cluster: Cluster,
    name: &str,
    fault: Option<Fault>,
    backend: BackendChoice,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> Result<(), String> {
    let backend = match backend {
        BackendChoice::Auto => match Client::connect() {
            Ok(_) => BackendChoice::Module,
            Err(prism_sock::Error::ModuleNotLoaded) => BackendChoice::Repair,
            Err(e) => return Err(e.to_string()),
        },
        chosen => chosen,
    };
    let me = cluster
        .nodes
        .iter()
        .position(|n| n.name == name)
        .ok_or_else(|| format!("no node called {name} in the configuration"))?;
    let ring = cluster.ring();
    let mut owned = HashMap::new();
    for i in 0..cluster.objects.count {
        let key = objects::key(i);
        if ring.owner(&key) == Some(me) {
            let size = objects::size_of(&cluster.objects, &key).expect("key from the catalogue");
            let body = objects::content(&key, size);
            let digest = objects::digest(&body);
            owned.insert(key, (Arc::new(body), digest));
        }
    }
    let this = &cluster.nodes[me];
    let steer = SteerClient::start(name.to_string(), this.steerd, cluster.secret.as_bytes().to_vec());
    let peers = cluster
        .nodes
        .iter()
        .map(|n| handoff::Peer::new(n.control_addr()))
        .collect();
    let bind = |addr: SocketAddr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|e| format!("bind {addr}: {e}"))
    };
    let vip4 = bind(SocketAddr::new(cluster.vip4.into(), cluster.port)).await?;
    let vip6 = bind(SocketAddr::new(cluster.vip6.into(), cluster.port)).await?;
    let direct4 = bind(SocketAddr::new(this.addr4.into(), cluster.port)).await?;
    let direct6 = bind(SocketAddr::new(this.addr6.into(), cluster.port)).await?;
    let https = match (cluster.https_port, tls) {
        (Some(port), Some(config)) => Some((
            [
                (bind(SocketAddr::new(cluster.vip4.into(), port)).await?, false),
                (bind(SocketAddr::new(cluster.vip6.into(), port)).await?, false),
                (bind(SocketAddr::new(this.addr4.into(), port)).await?, true),
                (bind(SocketAddr::new(this.addr6.into(), port)).await?, true),
            ],
            config,
        )),
        (Some(port), None) => {
            eprintln!("{name}: no certificate (--tls-cert, --tls-key): not serving HTTPS on port {port}");
            None
        }
        (None, Some(_)) => return Err("a certificate, but the cluster has no https_port".into()),
        (None, None) => None,
    };
    let control = bind(this.control_addr()).await?;
    let admin = bind(this.admin_addr()).await?;
    // Without the module there are no release events: the node reports its own closes.
    // Releases are all it needs: the `events` group would wake it for every hop too.
    let events = match backend {
        BackendChoice::Module => Some(
            prism_sock::async_tokio::EventStream::join(prism_sock::Group::Releases)
                .map_err(|e| format!("cannot subscribe to prism_sock releases: {e}"))?,
        ),
        _ => None,
    };
    if let (Some(events), Some(Fault::LaggingEventReader)) = (&events, fault) {
        events
            .listener()
            .set_receive_buffer(1)
            .map_err(|e| format!("event buffer: {e}"))?;
    }
    let node = Arc::new(Node {
        ring,
        objects: owned,
        stats: Stats::default(),
        steer,
        peers,
        fault,
        backend,
        lingering: handoff::Lingering::default(),
        outcomes: outcomes::Outcomes::default(),
        me,
        cluster,
    });
    eprintln!(
        "{name}: serving {} of {} objects on the VIP, hand-offs on {}",
        node.objects.len(),
        node.cluster.objects.count,
        node.cluster.nodes[me].control_addr()
    );
    eprintln!("{name}: backend {backend:?}");
    if let Some(events) = events {
        tokio::spawn(handoff::forward_releases(node.clone(), events));
    }
    handoff::spawn_control_server(node.clone(), control)?;
    tokio::spawn(handoff::keep_links(node.clone()));
    tokio::spawn(admin_server(node.clone(), admin));
    if let Some((listeners, config)) = https {
        eprintln!(
            "{name}: HTTPS on port {}, in kernel TLS",
            listeners[0].0.local_addr().map_or(0, |a| a.port())
        );
        for (listener, direct) in listeners {
            tokio::spawn(accept_tls(node.clone(), listener, config.clone(), direct));
        }
    }
    tokio::spawn(accept(node.clone(), direct4, true));
    tokio::spawn(accept(node.clone(), direct6, true));
    tokio::spawn(accept(node.clone(), vip6, false));
    accept(node, vip4, false).await;
    Ok(())
}

async fn accept(node: Arc<Node>, listener: TcpListener, direct: bool) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let conn = Conn {
                    stream,
                    peer,
                    buf: Vec::new(),
                    hops: 0,
                    generation: Generation::born_now(),
                    handed_at: None,
                    direct,
                };
                tokio::spawn(serve(node.clone(), conn));
            }
            Err(e) => {
                eprintln!("{}: accept: {e}", node.name());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// HTTPS: each connection's handshake ends in kernel TLS, and from then on it is
/// served (and, on the VIP, handed off) as a plain one.
async fn accept_tls(node: Arc<Node>, listener: TcpListener, config: Arc<rustls::ServerConfig>, direct: bool) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                eprintln!("{}: accept: {e}", node.name());
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let node = node.clone();
        let config = config.clone();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            match tls::accept(stream, config).await {
                Ok((stream, early)) => {
                    let conn = Conn {
                        stream,
                        peer,
                        buf: early,
                        hops: 0,
                        generation: Generation::born_now(),
                        handed_at: None,
                        direct,
                    };
                    serve(node, conn).await;
                }
                Err(e) => eprintln!("{}: TLS handshake with {peer}: {e}", node.name()),
            }
        });
    }
}

/// Answers requests on `conn` until the client closes, or hands it to a key's owner.
pub async fn serve(node: Arc<Node>, conn: Conn) {
    let flow = conn.peer;
    let direct = conn.direct;
    let handed_off = answer_requests(node.clone(), conn).await;
    // The module reports a release when the kernel is done with the socket; with the
    // repair backend the node reports its own close, and prism-steerd keeps the entry
    // for max_linger_ms to cover the FIN exchange.
    if !handed_off && node.backend == BackendChoice::Repair && !direct {
        Stats::bump(&node.stats.releases);
        node.steer.release(flow, node.cluster.steerd.max_linger_ms);
    }
}

/// The request loop; true when the connection was handed on.
async fn answer_requests(node: Arc<Node>, mut conn: Conn) -> bool {
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        let head = match http::parse(&conn.buf) {
            Parsed::Partial => {
                match conn.stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return false,
                    Ok(n) => conn.buf.extend_from_slice(&chunk[..n]),
                }
                continue;
            }
            Parsed::Refuse(status, reason) => {
                Stats::bump(&node.stats.responses_4xx);
                let head = http::response_head(status, reason, 0, false, &served_by(&node, &conn));
                let _ = respond(&node, &mut conn, &head, &[]).await;
                let _ = conn.stream.shutdown().await;
                return false;
            }
            Parsed::Request(head) => head,
        };
        let parsed_at = stats::mono_ns();
        let owner = head
            .key
            .as_deref()
            .and_then(|k| objects::size_of(&node.cluster.objects, k).and_then(|_| node.ring.owner(k)));
        match owner.filter(|o| *o != node.me) {
            Some(owner) if conn.direct => {
                // Only a VIP flow can be steered to the owner: say who it is instead.
                Stats::bump(&node.stats.responses_4xx);
                let extra = format!(
                    "{}X-Owner: {}\r\n",
                    served_by(&node, &conn),
                    node.cluster.nodes[owner].name
                );
                let reply = http::response_head(421, "Misdirected Request", 0, head.keep_alive, &extra);
                if respond(&node, &mut conn, &reply, &[]).await.is_err() {
                    return false;
                }
            }
            Some(owner) => match handoff::hand_off(&node, conn, owner, parsed_at).await {
                None => return true,
                Some(back) => {
                    conn = back;
                    Stats::bump(&node.stats.responses_503);
                    let extra = format!("{}Retry-After: 1\r\n", served_by(&node, &conn));
                    let reply = http::response_head(503, "Service Unavailable", 0, head.keep_alive, &extra);
                    if respond(&node, &mut conn, &reply, &[]).await.is_err() {
                        return false;
                    }
                }
            },
            None => {
                if write_object(&node, &mut conn, &head).await.is_err() {
                    return false;
                }
            }
        }
        conn.buf.drain(..head.len);
        if !head.keep_alive {
            let _ = conn.stream.shutdown().await;
            return false;
        }
    }
}

fn served_by(node: &Node, conn: &Conn) -> String {
    format!("X-Served-By: {}\r\nX-Prism-Hops: {}\r\n", node.name(), conn.hops)
}

async fn write_object(node: &Node, conn: &mut Conn, head: &http::Head) -> std::io::Result<()> {
    let object = head.key.as_ref().and_then(|k| node.objects.get(k));
    let Some((body, digest)) = object else {
        Stats::bump(&node.stats.responses_4xx);
        let reply = http::response_head(404, "Not Found", 0, head.keep_alive, &served_by(node, conn));
        return respond(node, conn, &reply, &[]).await;
    };
    let extra = format!("{}X-Object-Sha256: {}\r\n", served_by(node, conn), digest);
    let reply = http::response_head(200, "OK", body.len(), head.keep_alive, &extra);
    let body = if head.head_only { &[][..] } else { &body[..] };
    respond(node, conn, &reply, body).await?;
    node.stats
        .body_bytes
        .fetch_add(body.len() as u64, std::sync::atomic::Ordering::Relaxed);
    Stats::bump(&node.stats.responses_200);
    Ok(())
}

/// Writes a response, `head` then `body`, in as few writes as the socket takes (on a
/// TCP_NODELAY socket two writes send the head in a segment of its own), and ends the
/// hand-off timer once the first bytes are out. The first write goes to the socket at
/// once: through tokio it would wait for the reactor to report a socket it has just
/// registered (one taken over) writable, a trip through the event loop per hand-off.
async fn respond(node: &Node, conn: &mut Conn, head: &[u8], body: &[u8]) -> std::io::Result<()> {
    let total = head.len() + body.len();
    if let Some(t) = conn.handed_at.as_mut().filter(|t| t.writing == 0) {
        t.writing = stats::mono_ns();
    }
    let parts = [IoSlice::new(head), IoSlice::new(body)];
    let mut done = match socket2::SockRef::from(&conn.stream).send_vectored(&parts) {
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
        Err(e) => return Err(e),
    };
    if done > 0 {
        first_byte_out(node, conn);
    }
    while done < total {
        let n = if done < head.len() {
            let parts = [IoSlice::new(&head[done..]), IoSlice::new(body)];
            conn.stream.write_vectored(&parts).await?
        } else {
            conn.stream.write(&body[done - head.len()..]).await?
        };
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        if done == 0 {
            first_byte_out(node, conn);
        }
        done += n;
    }
    Ok(())
}

/// Ends the hand-off timer of a connection taken over, once its answer started.
fn first_byte_out(node: &Node, conn: &mut Conn) {
    if let Some(t) = conn.handed_at.take() {
        node.stats.record_handoff(t);
    }
}

/// What the admin port serves.
enum Page {
    /// `/stats`: the counters.
    Stats,
    /// `/stats/handoffs`: every hand-off time kept.
    Handoffs,
    /// `/stats/steps`: every hand-off's steps kept.
    Steps,
    /// `/stats/steers`: every steer round trip kept.
    Steers,
}

async fn admin_server(node: Arc<Node>, listener: TcpListener) {
    while let Ok((mut stream, _)) = listener.accept().await {
        let node = node.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut used = 0;
            let page = loop {
                match stream.read(&mut buf[used..]).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => used += n,
                }
                match http::parse(&buf[..used]) {
                    Parsed::Partial if used < buf.len() => continue,
                    Parsed::Request(_) if buf[..used].starts_with(b"GET /stats ") => break Some(Page::Stats),
                    Parsed::Request(_) if buf[..used].starts_with(b"GET /stats/handoffs ") => {
                        break Some(Page::Handoffs)
                    }
                    Parsed::Request(_) if buf[..used].starts_with(b"GET /stats/steps ") => {
                        break Some(Page::Steps)
                    }
                    Parsed::Request(_) if buf[..used].starts_with(b"GET /stats/steers ") => {
                        break Some(Page::Steers)
                    }
                    _ => break None,
                }
            };
            let (status, body) = match page {
                Some(Page::Stats) => {
                    let snap = node.stats.snapshot(node.name());
                    ("200 OK", serde_json::to_vec(&snap).unwrap_or_default())
                }
                Some(Page::Handoffs) => (
                    "200 OK",
                    serde_json::to_vec(&node.stats.handoff_samples()).unwrap_or_default(),
                ),
                Some(Page::Steps) => (
                    "200 OK",
                    serde_json::to_vec(&node.stats.step_samples()).unwrap_or_default(),
                ),
                Some(Page::Steers) => (
                    "200 OK",
                    serde_json::to_vec(&node.stats.steer_samples()).unwrap_or_default(),
                ),
                None => ("404 Not Found", Vec::new()),
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(&body).await;
        });
    }
}

/// Steers `flow` to this node, its owner of `generation`: the ownership and the
/// request are recorded before this returns; the future logs (does not fail) when
/// prism-steerd is slow, as the request stays queued and is applied when it answers.
pub fn steer_here(
    node: &Arc<Node>,
    flow: SocketAddr,
    generation: Generation,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let since = stats::mono_ns();
    let steered = node.steer.steer(flow, generation, STEER_WAIT);
    let node = node.clone();
    async move {
        match steered.await {
            Ok(()) => node.stats.record_steer(since),
            Err(e) => eprintln!("{}: steer {flow} here: {e} (kept queued)", node.name()),
        }
    }
}
