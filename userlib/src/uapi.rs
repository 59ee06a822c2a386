//! Numbers of the `prism_sock` generic netlink family, as in
//! `docs/netlink/prism_sock.yaml` (and `kmod/uapi.rs`).

/// Generic netlink family name.
pub const FAMILY_NAME: &str = "prism_sock";
/// Protocol version this library speaks.
pub const PROTO_VERSION: u32 = 1;
/// Name of the multicast group carrying migration events.
pub const MCGRP_EVENTS: &str = "events";
/// Multicast group carrying `SOCK_RELEASED` only.
pub const MCGRP_RELEASES: &str = "releases";

/// Commands of the family.
#[neli::neli_enum(serialized_type = "u8")]
pub enum Command {
    /// Module version, protocol version and counters.
    GetInfo = 1,
    /// The whole state of a TCP socket.
    SockExport = 2,
    /// Build a socket from a state blob and install it as an fd.
    SockImport = 3,
    /// Event: a socket was imported on this host and is tracked.
    SockImported = 4,
    /// Event: a tracked socket was exported again (DETACH) and left this host.
    SockExported = 5,
    /// Event: a tracked socket is finished on this host.
    SockReleased = 6,
    /// Send a departed connection's late packets to its new owner.
    SockForward = 7,
    /// Dump: the tracked sockets of the caller's namespace.
    SockList = 8,
}
impl neli::consts::genl::Cmd for Command {}

impl Command {
    /// Whether the module answers the request with a message of its own; the others
    /// are acknowledged.
    pub fn replies(&self) -> bool {
        !matches!(self, Command::SockForward)
    }
}

/// Attributes of the `info` attribute set.
#[neli::neli_enum(serialized_type = "u16")]
pub enum InfoAttr {
    /// Padding for 64-bit attributes.
    Pad = 1,
    /// Module version string.
    ModuleVersion = 2,
    /// Protocol version (request: the caller's; reply: the module's).
    ProtoVersion = 3,
    /// Sockets exported since load.
    Exports = 4,
    /// Sockets imported since load.
    Imports = 5,
    /// Imported sockets released since load (whether or not anyone listened).
    Releases = 6,
    /// Requests that failed after validation.
    Errors = 7,
    /// Largest send + receive queue one export carries.
    MaxQueueBytes = 8,
    /// Tuples the RST guard currently protects.
    DepartedActive = 9,
    /// Most tuples the RST guard holds.
    DepartedCapacity = 10,
    /// How long a tuple is guarded, in milliseconds.
    DepartedTimeoutMs = 11,
    /// Packets dropped instead of answered with RST.
    DepartedDropped = 12,
    /// Guarded tuples that expired.
    DepartedExpired = 13,
    /// DETACH requests refused because the guard was full.
    DepartedFull = 14,
    /// Imported sockets currently tracked for their release.
    Tracked = 15,
    /// Events sent (delivered to every listener, or nobody listened).
    EventsSent = 16,
    /// Events at least one listener missed (its buffer was full) or that could not be built.
    EventsLost = 17,
    /// Packets of departed tuples sent on to their new owner.
    DepartedForwarded = 18,
    /// Bytes of those packets.
    DepartedForwardedBytes = 19,
    /// Packets that had a forward address but were dropped.
    DepartedForwardFailed = 20,
    /// Packets forwarded here for a connection with no socket here, dropped.
    ForwardedUnowned = 21,
    /// Most departed tuples one network namespace may hold.
    DepartedQuota = 22,
}
impl neli::consts::genl::NlAttrType for InfoAttr {}

/// Attributes of the `state` attribute set: the state blob of `SOCK_EXPORT` (see the
/// spec for each one's meaning).
#[neli::neli_enum(serialized_type = "u16")]
pub enum StateAttr {
    /// `fd`
    Fd = 1,
    /// `blob-version`
    BlobVersion = 2,
    /// `family`
    Family = 3,
    /// `saddr`
    Saddr = 4,
    /// `daddr`
    Daddr = 5,
    /// `sport`
    Sport = 6,
    /// `dport`
    Dport = 7,
    /// `tcp-state`
    TcpState = 8,
    /// `snd-una`
    SndUna = 9,
    /// `snd-nxt`
    SndNxt = 10,
    /// `write-seq`
    WriteSeq = 11,
    /// `rcv-nxt`
    RcvNxt = 12,
    /// `send-queue`
    SendQueue = 13,
    /// `recv-queue`
    RecvQueue = 14,
    /// `fin-received`
    FinReceived = 15,
    /// `mss-clamp`
    MssClamp = 16,
    /// `snd-wscale`
    SndWscale = 17,
    /// `rcv-wscale`
    RcvWscale = 18,
    /// `timestamps`
    Timestamps = 19,
    /// `sack`
    Sack = 20,
    /// `wscale-ok`
    WscaleOk = 21,
    /// `ts-now`
    TsNow = 22,
    /// `ts-recent`
    TsRecent = 23,
    /// `snd-wl1`
    SndWl1 = 24,
    /// `snd-wnd`
    SndWnd = 25,
    /// `max-window`
    MaxWindow = 26,
    /// `rcv-wnd`
    RcvWnd = 27,
    /// `rcv-wup`
    RcvWup = 28,
    /// `snd-cwnd`
    SndCwnd = 29,
    /// `snd-ssthresh`
    SndSsthresh = 30,
    /// `srtt-us`
    SrttUs = 31,
    /// `mdev-us`
    MdevUs = 32,
    /// `cc-name`
    CcName = 33,
    /// `nodelay`
    Nodelay = 34,
    /// `cork`
    Cork = 35,
    /// `keepalive`
    Keepalive = 36,
    /// `mark`
    Mark = 37,
    /// `user-timeout`
    UserTimeout = 38,
    /// `notsent-lowat`
    NotsentLowat = 39,
    /// TCP_KEEPIDLE (seconds).
    Keepidle = 40,
    /// TCP_KEEPINTVL (seconds).
    Keepintvl = 41,
    /// TCP_KEEPCNT.
    Keepcnt = 42,
    /// Send buffer size.
    Sndbuf = 43,
    /// Receive buffer size.
    Rcvbuf = 44,
    /// Which buffer sizes the application set.
    BufLocks = 45,
    /// IP_TOS / IPV6_TCLASS.
    Tos = 46,
    /// Largest receive window to advertise.
    WindowClamp = 47,
    /// Receive-window growth threshold.
    RcvSsthresh = 48,
    /// SO_REUSEADDR.
    Reuseaddr = 49,
    /// Alignment padding.
    Pad = 50,
    /// Migration id.
    MigrationId = 51,
    /// SOCK_EXPORT: finish the socket here.
    Detach = 52,
    /// SOCK_IMPORT: local address to bind instead.
    BindAddr = 53,
    /// SOCK_IMPORT: IP_FREEBIND.
    Freebind = 54,
    /// SOCK_IMPORT: IP_TRANSPARENT.
    Transparent = 55,
    /// SOCK_IMPORT: O_NONBLOCK.
    Nonblock = 56,
    /// SOCK_EXPORT with DETACH, SOCK_FORWARD: IPv4 address of the new owner, where the
    /// peer's packets that still arrive here are sent.
    ForwardTo = 57,
}
impl neli::consts::genl::NlAttrType for StateAttr {}

/// Names of the `state` attributes in spec order, for contract checks and decoding.
pub const STATE_ATTR_NAMES: [&str; 57] = [
    "fd",
    "blob-version",
    "family",
    "saddr",
    "daddr",
    "sport",
    "dport",
    "tcp-state",
    "snd-una",
    "snd-nxt",
    "write-seq",
    "rcv-nxt",
    "send-queue",
    "recv-queue",
    "fin-received",
    "mss-clamp",
    "snd-wscale",
    "rcv-wscale",
    "timestamps",
    "sack",
    "wscale-ok",
    "ts-now",
    "ts-recent",
    "snd-wl1",
    "snd-wnd",
    "max-window",
    "rcv-wnd",
    "rcv-wup",
    "snd-cwnd",
    "snd-ssthresh",
    "srtt-us",
    "mdev-us",
    "cc-name",
    "nodelay",
    "cork",
    "keepalive",
    "mark",
    "user-timeout",
    "notsent-lowat",
    "keepidle",
    "keepintvl",
    "keepcnt",
    "sndbuf",
    "rcvbuf",
    "buf-locks",
    "tos",
    "window-clamp",
    "rcv-ssthresh",
    "reuseaddr",
    "pad",
    "migration-id",
    "detach",
    "bind-addr",
    "freebind",
    "transparent",
    "nonblock",
    "forward-to",
];

/// Attributes of the `event` attribute set (messages of the `events` group).
#[neli::neli_enum(serialized_type = "u16")]
pub enum EventAttr {
    /// Padding for 64-bit attributes.
    Pad = 1,
    /// Id of the hand-off that brought the socket here.
    MigrationId = 2,
    /// Per-namespace event sequence number, from 1: a gap means events were lost.
    Seq = 3,
    /// The socket's cookie (SO_COOKIE).
    SockCookie = 4,
    /// The network namespace's cookie.
    NetnsCookie = 5,
    /// Address family.
    Family = 6,
    /// Local address.
    Saddr = 7,
    /// Peer address.
    Daddr = 8,
    /// Local port.
    Sport = 9,
    /// Peer port.
    Dport = 10,
    /// TCP state (imported: current; exported/released: the state it left).
    TcpState = 11,
    /// Why the socket left (see [`Reason`](crate::Reason)).
    Reason = 12,
    /// Bytes the peer acknowledged since the import.
    BytesAcked = 13,
    /// Bytes received since the import.
    BytesReceived = 14,
    /// Nanoseconds since the import.
    DurationNs = 15,
    /// Milliseconds a TIME_WAIT (or FIN_WAIT2) mini-socket may still answer the flow here.
    TimeWaitMs = 16,
    /// Whether the peer's FIN arrived.
    PeerFin = 17,
}
impl neli::consts::genl::NlAttrType for EventAttr {}
