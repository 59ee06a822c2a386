//! SOCK_IMPORT refuses every malformed or conflicting blob with a meaningful errno and an
//! extack message naming the attribute, and leaves nothing behind.

use super::common::{expect_refusal, loaded, WITHOUT_NET_ADMIN};
use super::export::connect_via_topology;
use crate::check;
use crate::harness::{sh, Env, Log, Test, TestResult};
use crate::migrate::counters;
use crate::topology::{in_ns, Topology};
use prism_sock::uapi::StateAttr;
use prism_sock::{Client, ImportOptions, MigrationState};
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsFd;

pub fn tests() -> Vec<Test> {
    vec![
        Test {
            name: "import_refuses_malformed_blobs",
            run: malformed,
        },
        Test {
            name: "import_refuses_caller_without_net_admin",
            run: unprivileged,
        },
        Test {
            name: "import_bounds_buffers_by_the_callers_rights",
            run: buffer_bounds,
        },
    ]
}

pub(super) type Attrs = Vec<(u16, Vec<u8>)>;

pub(super) fn parse(blob: &[u8]) -> Attrs {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 4 <= blob.len() {
        let len = u16::from_ne_bytes([blob[at], blob[at + 1]]) as usize;
        let kind = u16::from_ne_bytes([blob[at + 2], blob[at + 3]]);
        out.push((kind, blob[at + 4..at + len].to_vec()));
        at += (len + 3) & !3;
    }
    out
}

pub(super) fn encode(attrs: &Attrs) -> Vec<u8> {
    let mut out = Vec::new();
    for (kind, p) in attrs {
        out.extend_from_slice(&((4 + p.len()) as u16).to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(p);
        out.resize((out.len() + 3) & !3, 0);
    }
    out
}

fn set(attrs: &Attrs, kind: StateAttr, payload: Vec<u8>) -> Vec<u8> {
    let k = u16::from(kind);
    encode(
        &attrs
            .iter()
            .map(|(t, p)| (*t, if *t == k { payload.clone() } else { p.clone() }))
            .collect(),
    )
}

fn get_u32(attrs: &Attrs, kind: StateAttr) -> u32 {
    let k = u16::from(kind);
    let p = &attrs.iter().find(|(t, _)| *t == k).expect("attribute in blob").1;
    u32::from_ne_bytes(p[..4].try_into().unwrap())
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0)
}

fn malformed(env: &Env, log: &mut Log) -> TestResult {
    let _t = Topology::up()?;
    let _c = loaded(env, log)?;
    let (_client, server) = connect_via_topology(false, 8090, None)?;
    // fe's own netlink socket: SOCK_IMPORT builds in the requester's namespace.
    let fe = in_ns("fe", Client::connect)?.map_err(|e| e.to_string())?;
    let good = fe.export_snapshot(server.as_fd()).map_err(|e| e.to_string())?;
    let attrs = parse(good.as_bytes());
    let be1 = in_ns("be1", Client::connect)?.map_err(|e| e.to_string())?;
    let fds_before = open_fds();
    let inuse_before = counters("be1")?.tcp_inuse;
    let errors_before = be1.info().map_err(|e| e.to_string())?.errors;

    let try_import =
        |bytes: Vec<u8>, opts: &ImportOptions| be1.import(&MigrationState::from_bytes(bytes), opts);
    let plain = ImportOptions::default();
    let einval = libc::EINVAL;

    // Truncated inside an attribute: the request ends in the middle of it.
    let cut = attrs
        .iter()
        .take(5)
        .map(|(_, p)| (4 + p.len() + 3) & !3)
        .sum::<usize>()
        + 4;
    expect_refusal(
        try_import(good.as_bytes()[..cut].to_vec(), &plain),
        einval,
        "leftover",
        log,
    )?;
    // Truncated at an attribute boundary: everything after tcp-state is missing, and
    // fin-received is the first attribute checked after it.
    let state_at = attrs
        .iter()
        .position(|(t, _)| *t == u16::from(StateAttr::TcpState))
        .unwrap();
    let head = encode(&attrs[..=state_at].to_vec());
    expect_refusal(
        try_import(head, &plain),
        einval,
        "missing attribute: fin-received",
        log,
    )?;

    let cases: Vec<(Vec<u8>, i32, &str)> = vec![
        (
            set(&attrs, StateAttr::BlobVersion, 2u32.to_ne_bytes().to_vec()),
            libc::EPROTONOSUPPORT,
            "blob-version is newer",
        ),
        (
            // What version 1 looks like when exported on a host of the other byte order.
            set(
                &attrs,
                StateAttr::BlobVersion,
                1u32.swap_bytes().to_ne_bytes().to_vec(),
            ),
            libc::EPROTONOSUPPORT,
            "other byte order",
        ),
        (
            set(&attrs, StateAttr::SndWscale, vec![15]),
            libc::EFBIG,
            "snd-wscale",
        ),
        (
            set(&attrs, StateAttr::RcvWscale, vec![15]),
            libc::EFBIG,
            "rcv-wscale",
        ),
        (
            set(&attrs, StateAttr::MssClamp, 20u16.to_ne_bytes().to_vec()),
            einval,
            "mss-clamp",
        ),
        (
            set(&attrs, StateAttr::Family, 99u16.to_ne_bytes().to_vec()),
            libc::EAFNOSUPPORT,
            "family",
        ),
        (
            set(&attrs, StateAttr::Saddr, vec![10, 0, 0, 1, 5]),
            einval,
            "address length",
        ),
        (
            set(
                &attrs,
                StateAttr::SndNxt,
                get_u32(&attrs, StateAttr::WriteSeq)
                    .wrapping_add(10)
                    .to_ne_bytes()
                    .to_vec(),
            ),
            einval,
            "snd-nxt",
        ),
        (
            set(&attrs, StateAttr::SndCwnd, 0u32.to_ne_bytes().to_vec()),
            einval,
            "snd-cwnd",
        ),
        (
            set(&attrs, StateAttr::TcpState, vec![10]),
            libc::EOPNOTSUPP,
            "tcp-state",
        ),
        (
            set(&attrs, StateAttr::FinReceived, vec![1]),
            einval,
            "fin-received",
        ),
        (
            set(&attrs, StateAttr::MaxWindow, 1u32.to_ne_bytes().to_vec()),
            einval,
            "max-window",
        ),
        (
            // Above 65535 << 14, the largest window TCP can express.
            set(&attrs, StateAttr::RcvWnd, u32::MAX.to_ne_bytes().to_vec()),
            einval,
            "rcv-wnd",
        ),
        (
            set(&attrs, StateAttr::WindowClamp, u32::MAX.to_ne_bytes().to_vec()),
            einval,
            "window-clamp exceeds",
        ),
        (
            set(&attrs, StateAttr::Keepcnt, 1000u32.to_ne_bytes().to_vec()),
            einval,
            "keepcnt",
        ),
        (
            set(&attrs, StateAttr::Keepidle, 32768u32.to_ne_bytes().to_vec()),
            einval,
            "keepidle",
        ),
        (
            set(&attrs, StateAttr::Keepintvl, 40000u32.to_ne_bytes().to_vec()),
            einval,
            "keepintvl",
        ),
        (
            set(&attrs, StateAttr::Sndbuf, 0u32.to_ne_bytes().to_vec()),
            einval,
            "sndbuf",
        ),
        (
            set(&attrs, StateAttr::Rcvbuf, u32::MAX.to_ne_bytes().to_vec()),
            einval,
            "rcvbuf",
        ),
        (set(&attrs, StateAttr::BufLocks, vec![4]), einval, "buf-locks"),
        (set(&attrs, StateAttr::Reuseaddr, vec![2]), einval, "reuseaddr"),
        (set(&attrs, StateAttr::Nodelay, vec![7]), einval, "nodelay"),
        (
            set(&attrs, StateAttr::CcName, b"cubic".to_vec()),
            einval,
            "cc-name",
        ),
        (
            set(&attrs, StateAttr::Sport, 0u16.to_ne_bytes().to_vec()),
            einval,
            "sport",
        ),
    ];
    for (bytes, errno, msg) in cases {
        expect_refusal(try_import(bytes, &plain), errno, msg, log)?;
    }
    // The same attribute twice.
    let mut twice = attrs.clone();
    twice.push(attrs[1].clone());
    expect_refusal(try_import(encode(&twice), &plain), einval, "given twice", log)?;
    // Attributes of SOCK_EXPORT in an import: the spec's sock-import request does not
    // list them, so the generated policy leaves them NLA_UNSPEC and genetlink's strict
    // validation refuses them, naming the attribute.
    for extra in [
        (u16::from(StateAttr::Fd), 3u32.to_ne_bytes().to_vec()),
        (u16::from(StateAttr::Detach), Vec::new()),
    ] {
        let mut with = attrs.clone();
        with.push(extra);
        expect_refusal(
            try_import(encode(&with), &plain),
            einval,
            "Unsupported attribute",
            log,
        )?;
    }
    // Empty queue chunks: they carry nothing and would leave the chunk count unbounded.
    for kind in [StateAttr::SendQueue, StateAttr::RecvQueue] {
        let mut empty = attrs.clone();
        empty.push((u16::from(kind), Vec::new()));
        expect_refusal(
            try_import(encode(&empty), &plain),
            einval,
            "empty queue chunk",
            log,
        )?;
    }
    // Queues above the module's limit (1 MiB): 33 chunks of 32 KiB.
    let mut big = attrs.clone();
    let extra = 33 * (32 << 10);
    for _ in 0..33 {
        big.push((u16::from(StateAttr::SendQueue), vec![0x5a; 32 << 10]));
    }
    let big = set(
        &big,
        StateAttr::WriteSeq,
        get_u32(&attrs, StateAttr::WriteSeq)
            .wrapping_add(extra)
            .to_ne_bytes()
            .to_vec(),
    );
    let big = set(
        &parse(&big),
        StateAttr::SndNxt,
        get_u32(&attrs, StateAttr::SndNxt).to_ne_bytes().to_vec(),
    );
    expect_refusal(try_import(big, &plain), libc::E2BIG, "max-queue-bytes", log)?;
    // A local address this host does not have, without freebind.
    let foreign = ImportOptions {
        bind_addr: Some(IpAddr::V4(Ipv4Addr::new(10, 99, 99, 99))),
        ..ImportOptions::default()
    };
    expect_refusal(
        try_import(good.as_bytes().to_vec(), &foreign),
        libc::EADDRNOTAVAIL,
        "freebind",
        log,
    )?;
    let wrong_len = ImportOptions {
        bind_addr: Some("fd00::9".parse().unwrap()),
        ..ImportOptions::default()
    };
    expect_refusal(
        try_import(good.as_bytes().to_vec(), &wrong_len),
        einval,
        "address length",
        log,
    )?;
    // The tuple is still in use on fe, where the original socket lives.
    expect_refusal(fe.import(&good, &plain), libc::EADDRINUSE, "already in use", log)?;

    // Nothing was left behind: no fd, no socket; the counters saw every refusal.
    check!(open_fds() == fds_before, "fds {fds_before} -> {}", open_fds());
    let inuse_after = counters("be1")?.tcp_inuse;
    check!(
        inuse_after == inuse_before,
        "be1 TCP sockets {inuse_before} -> {inuse_after}"
    );
    let errors_after = be1.info().map_err(|e| e.to_string())?.errors;
    log.line(format!("module errors {errors_before} -> {errors_after}"));
    check!(errors_after > errors_before, "errors counter did not move");

    // Nothing half-built holds the tuple: the good blob imports on be1.
    let s = be1
        .import(&good, &plain)
        .map_err(|e| format!("import after the refusals: {e}"))?;
    let local = std::net::TcpStream::from(s.fd)
        .local_addr()
        .map_err(|e| e.to_string())?;
    check!(local.port() == 8090, "bound to {local}");
    Ok(())
}

fn unprivileged(env: &Env, log: &mut Log) -> TestResult {
    let _t = Topology::up()?;
    let _c = loaded(env, log)?;
    let (_client, server) = connect_via_topology(false, 8091, None)?;
    let fe = Client::connect().map_err(|e| e.to_string())?;
    let blob = fe.export_snapshot(server.as_fd()).map_err(|e| e.to_string())?;
    let path = "/tmp/prism-import-probe.blob";
    std::fs::write(path, blob.as_bytes()).map_err(|e| e.to_string())?;
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let me = me.to_string_lossy();
    let mut cmd: Vec<&str> = vec!["ip", "netns", "exec", "be1"];
    cmd.extend(WITHOUT_NET_ADMIN);
    cmd.extend([&*me, "import-probe", path]);
    let out = sh(log, cmd[0], &cmd[1..])?;
    check!(
        out.trim() == format!("errno {}", libc::EPERM),
        "unprivileged import gave {out:?}"
    );
    Ok(())
}

/// Child side of `import_refuses_caller_without_net_admin`: imports the blob in `path`
/// and prints how it failed.
pub fn import_probe(path: &str) -> String {
    let run = || -> Result<String, String> {
        let blob = std::fs::read(path).map_err(|e| e.to_string())?;
        let c = Client::connect().map_err(|e| e.to_string())?;
        Ok(
            match c.import(&MigrationState::from_bytes(blob), &ImportOptions::default()) {
                Ok(_) => "imported".into(),
                Err(e) => format!("errno {}", e.errno().unwrap_or(0)),
            },
        )
    };
    run().unwrap_or_else(|e| e)
}

/// Socket buffer size a blob asks for, beyond every sysctl maximum.
const HUGE_BUF: u32 = 64 << 20;

/// A blob that asks for [`HUGE_BUF`] buffers, both set by the application, is imported
/// with them by host root, and by the root of a user namespace (CAP_NET_ADMIN over its
/// own network namespace only) with SO_SNDBUF/SO_RCVBUF's limits: twice
/// net.core.wmem_max/rmem_max. Either connection carries data.
fn buffer_bounds(env: &Env, log: &mut Log) -> TestResult {
    let _c = loaded(env, log)?;
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let probe = format!("ip link set lo up && exec {} buffer-probe", me.to_string_lossy());
    let sysctl = |name: &str| -> Result<u64, String> {
        let path = format!("/proc/sys/net/core/{name}");
        let v = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
        v.trim().parse().map_err(|e| format!("{path}: {e}"))
    };
    let (wmem_max, rmem_max) = (sysctl("wmem_max")?, sysctl("rmem_max")?);
    let sizes = |out: String| -> Result<(u64, u64), String> {
        let mut it = out.split_whitespace().map(str::parse::<u64>);
        match (it.next(), it.next()) {
            (Some(Ok(s)), Some(Ok(r))) => Ok((s, r)),
            _ => Err(format!("buffer probe printed {out:?}")),
        }
    };
    let root = sizes(sh(log, "unshare", &["-n", "sh", "-c", &probe])?)?;
    let userns = sizes(sh(log, "unshare", &["-Urn", "sh", "-c", &probe])?)?;
    log.line(format!(
        "asked {HUGE_BUF}: host root got {root:?}, user-namespace root {userns:?} \
         (wmem_max {wmem_max}, rmem_max {rmem_max})"
    ));
    let huge = u64::from(HUGE_BUF);
    check!(root == (huge, huge), "host root's import got {root:?}");
    check!(
        userns == (2 * wmem_max, 2 * rmem_max),
        "a user namespace's import got {userns:?}, SO_SNDBUF/SO_RCVBUF allow {:?}",
        (2 * wmem_max, 2 * rmem_max)
    );
    Ok(())
}

/// Child side of `import_bounds_buffers_by_the_callers_rights`, in a network namespace
/// of its own with lo up: moves a loopback connection within the namespace with a blob
/// that asks for [`HUGE_BUF`] buffers, checks that bytes flow, and prints the
/// imported socket's SO_SNDBUF and SO_RCVBUF.
pub fn buffer_probe() -> Result<String, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let mut client = std::net::TcpStream::connect(l.local_addr().map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    let (server, _) = l.accept().map_err(|e| e.to_string())?;
    let c = Client::connect().map_err(|e| e.to_string())?;
    let blob = c
        .export_detach(server.as_fd())
        .map_err(|e| format!("export: {e}"))?;
    drop(server);
    let mut attrs = parse(blob.as_bytes());
    for (kind, payload) in &mut attrs {
        if *kind == u16::from(StateAttr::Sndbuf) || *kind == u16::from(StateAttr::Rcvbuf) {
            *payload = HUGE_BUF.to_ne_bytes().to_vec();
        } else if *kind == u16::from(StateAttr::BufLocks) {
            *payload = vec![3];
        }
    }
    let imported = c
        .import(
            &MigrationState::from_bytes(encode(&attrs)),
            &ImportOptions::default(),
        )
        .map_err(|e| format!("import: {e}"))?;
    let mut moved = std::net::TcpStream::from(imported.fd);
    use std::io::{Read, Write};
    client.write_all(b"ping").map_err(|e| e.to_string())?;
    let mut buf = [0u8; 4];
    moved.read_exact(&mut buf).map_err(|e| e.to_string())?;
    check!(&buf == b"ping", "read {buf:?} on the imported socket");
    let get = |opt| crate::sockopt::get_int(moved.as_fd(), libc::SOL_SOCKET, opt);
    let snd = get(libc::SO_SNDBUF).map_err(|e| format!("SO_SNDBUF: errno {e}"))?;
    let rcv = get(libc::SO_RCVBUF).map_err(|e| format!("SO_RCVBUF: errno {e}"))?;
    Ok(format!("{snd} {rcv}"))
}
