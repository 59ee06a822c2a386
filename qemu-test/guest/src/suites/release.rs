//! The release notifier: one `SOCK_RELEASED` per imported socket, when the kernel is done
//! with it (and not before), `SOCK_EXPORTED` when it moves on, `SOCK_IMPORTED` when it
//! arrives; listeners by namespace and privilege; unloading with tracked sockets alive.

use super::common::{loaded, WITHOUT_NET_ADMIN};
use super::export::{connect_via_topology, wait_for};
use super::hops::connect_from;
use crate::check;
use crate::harness::{sh, Env, Log, Test, TestResult};
use crate::migrate::{expect_stream, flow_sockets, send_stream, Cluster};
use crate::module;
use crate::sockopt::set_int;
use crate::topology::{self, in_ns, Topology};
use prism_sock::{Client, Event, EventKind, EventListener, Group, ImportOptions, Reason};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::time::Duration;

pub fn tests() -> Vec<Test> {
    vec![
        Test {
            name: "release_after_client_closes",
            run: |e, l| close(e, l, Closer::Client, false),
        },
        Test {
            name: "release_after_server_closes_v6",
            run: |e, l| close(e, l, Closer::Server, true),
        },
        Test {
            name: "release_after_both_close_at_once",
            run: |e, l| close(e, l, Closer::Both, false),
        },
        Test {
            name: "release_on_client_reset",
            run: reset,
        },
        Test {
            name: "release_on_client_vanished_timeout",
            run: vanished,
        },
        Test {
            name: "release_hand_back_and_5_hop_chain",
            run: chain,
        },
        Test {
            name: "release_1000_closing_at_once",
            run: thousand,
        },
        Test {
            name: "release_overrun_listener_resyncs_with_sock_list",
            run: resync,
        },
        Test {
            name: "release_listeners_ynl_namespace_privilege",
            run: listeners,
        },
        Test {
            name: "release_group_carries_releases_only",
            run: releases_group,
        },
        Test {
            name: "release_seen_by_prismctl_monitor",
            run: prismctl_monitor,
        },
        Test {
            name: "release_rmmod_with_100_live_migrated",
            run: rmmod_live,
        },
        Test {
            name: "release_rmmod_during_a_stream_of_imports",
            run: rmmod_during_imports,
        },
    ]
}

const PORT: u16 = 8300;
const LAST_ACK: u8 = 9;
const QUIET: Duration = Duration::from_millis(1500);

fn listen(node: &'static str) -> Result<EventListener, String> {
    join(node, Group::Events)
}

fn join(node: &'static str, group: Group) -> Result<EventListener, String> {
    in_ns(node, move || EventListener::join(group))?.map_err(|e| format!("{group:?} listener in {node}: {e}"))
}

/// The kernel's YNL cli in `node`, subscribed to `group` for `secs` seconds, once it
/// has joined.
fn ynl_subscribe(env: &Env, node: &str, group: &str, secs: u32) -> Result<std::process::Child, String> {
    let ynl = std::process::Command::new("ip")
        .args(["netns", "exec", node, "python3"])
        .arg(&env.ynl)
        .arg("--spec")
        .arg(&env.spec)
        .arg("--schema")
        .arg(&env.schema)
        .args(["--subscribe", group, "--sleep", &secs.to_string()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    wait_joined(ynl.id(), "python")?;
    Ok(ynl)
}

/// What a [`ynl_subscribe`] cli printed, once it ends (logged with its errors).
fn ynl_output(ynl: std::process::Child, log: &mut Log) -> Result<String, String> {
    let out = ynl.wait_with_output().map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    log.line(format!("ynl: {text}\n{}", String::from_utf8_lossy(&out.stderr)));
    Ok(text)
}

fn next(l: &mut EventListener, log: &mut Log) -> Result<Event, String> {
    let e = l
        .next_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?
        .ok_or("no event within 30 s")?;
    log.line(format!("event {e:?}"));
    Ok(e)
}

/// Nothing more arrives for a while.
fn quiet(l: &mut EventListener, log: &mut Log) -> TestResult {
    match l.next_timeout(Some(QUIET)).map_err(|e| e.to_string())? {
        None => Ok(()),
        Some(e) => Err(format!("unexpected event {e:?}")),
    }
    .inspect_err(|e| log.line(e))
}

fn flow(client: &TcpStream) -> Result<(SocketAddr, SocketAddr), String> {
    Ok((
        client.peer_addr().map_err(|e| e.to_string())?,
        client.local_addr().map_err(|e| e.to_string())?,
    ))
}

/// The next event is the import of `client`'s flow, with sequence number `seq` if given.
fn expect_imported(
    l: &mut EventListener,
    log: &mut Log,
    client: &TcpStream,
    seq: Option<u64>,
) -> Result<Event, String> {
    let e = next(l, log)?;
    let (local, peer) = flow(client)?;
    check!(e.kind == EventKind::Imported, "{e:?}");
    check!(e.local == local && e.peer == peer, "tuple {} {}", e.local, e.peer);
    if let Some(seq) = seq {
        check!(e.seq == seq, "seq {} expected {seq}", e.seq);
    }
    Ok(e)
}

#[derive(Clone, Copy, PartialEq)]
enum Closer {
    Client,
    Server,
    Both,
}

/// A migrated connection on be1 closes cleanly: exactly one SOCK_RELEASED, once be1 has
/// no socket of the flow left (the last ACK of the FIN handshake went or came).
fn close(env: &Env, log: &mut Log, who: Closer, v6: bool) -> TestResult {
    let _t = Topology::up()?;
    let _c = loaded(env, log)?;
    let mut cluster = Cluster::new(v6)?;
    let mut events = listen("be1")?;
    let (mut client, mut server) = connect_via_topology(v6, PORT, None)?;
    send_stream(&mut client, 1, 1_000)?;
    let mut req = vec![0; 1_000];
    server.read_exact(&mut req).map_err(|e| e.to_string())?;
    let (mut owned, _, _) = cluster.hop(log, server, "fe", "be1", &req)?;
    let imported = expect_imported(&mut events, log, &client, Some(1))?;
    let reader = std::thread::spawn(move || -> Result<TcpStream, String> {
        expect_stream(&mut client, 2, 50_000)?;
        Ok(client)
    });
    send_stream(&mut owned, 2, 50_000)?;
    let mut client = reader.join().map_err(|_| "reader panicked")??;
    send_stream(&mut client, 3, 7_000)?;
    expect_stream(&mut owned, 3, 7_000)?;
    let port = client.local_addr().map_err(|e| e.to_string())?.port();
    let mut rest = Vec::new();
    match who {
        Closer::Client => {
            client.shutdown(Shutdown::Write).map_err(|e| e.to_string())?;
            owned.read_to_end(&mut rest).map_err(|e| e.to_string())?;
            drop(owned);
            client.read_to_end(&mut rest).map_err(|e| e.to_string())?;
        }
        Closer::Server => {
            owned.shutdown(Shutdown::Write).map_err(|e| e.to_string())?;
            client.read_to_end(&mut rest).map_err(|e| e.to_string())?;
            // No event while be1 waits for the client's FIN.
            std::thread::sleep(Duration::from_millis(500));
            quiet(&mut events, log)?;
            client.shutdown(Shutdown::Write).map_err(|e| e.to_string())?;
            owned.read_to_end(&mut rest).map_err(|e| e.to_string())?;
            drop(owned);
        }
        Closer::Both => {
            let t = std::thread::spawn(move || {
                let _ = owned.shutdown(Shutdown::Write);
                owned
            });
            client.shutdown(Shutdown::Write).map_err(|e| e.to_string())?;
            let mut owned = t.join().map_err(|_| "closer panicked")?;
            owned.read_to_end(&mut rest).map_err(|e| e.to_string())?;
            client.read_to_end(&mut rest).map_err(|e| e.to_string())?;
            drop(owned);
        }
    }
    check!(rest.is_empty(), "stray bytes");
    let e = next(&mut events, log)?;
    // At the event, be1 holds no socket of the flow but a TIME_WAIT.
    let left = flow_sockets("be1", port)?;
    check!(left.is_empty(), "be1 still has the flow in states {left:?}");
    check!(e.kind == EventKind::Released, "{e:?}");
    check!(e.reason == Some(Reason::Fin), "reason {:?}", e.reason);
    check!(e.seq == 2 && e.migration_id == imported.migration_id, "{e:?}");
    check!(e.sock_cookie == imported.sock_cookie, "cookie changed");
    check!(e.local == imported.local && e.peer == imported.peer, "tuple");
    check!(e.peer_fin, "peer FIN not seen");
    // Data bytes, plus one for a FIN counted in the sequence space.
    check!(
        (50_000..=50_001).contains(&e.bytes_acked),
        "bytes acked {}",
        e.bytes_acked
    );
    check!(
        (7_000..=7_001).contains(&e.bytes_received),
        "bytes received {}",
        e.bytes_received
    );
    // The side that closed first keeps the TIME_WAIT.
    let tw = e.time_wait_ms;
    match who {
        Closer::Client => check!(tw == 0, "time-wait {tw} after a passive close"),
        Closer::Server => check!(tw == 60_000, "time-wait {tw} after an active close"),
        // Which side's FIN lands first is up to timing: the one that left LAST_ACK
        // (answered a FIN) keeps none.
        Closer::Both => check!(
            (tw == 0) == (e.tcp_state == LAST_ACK),
            "time-wait {tw} leaving state {}",
            e.tcp_state
        ),
    }
    drop(client);
    quiet(&mut events, log)?;
    let info = cluster.nl("be1").info().map_err(|e| e.to_string())?;
    check!(info.tracked == 0 && info.events_lost == 0, "{info:?}");
    Ok(())
}

/// The client resets the migrated connection: reason rst.
fn reset(env: &Env, log: &mut Log) -> TestResult {
    let _t = Topology::up()?;
    let _c = loaded(env, log)?;
    let mut cluster = Cluster::new(false)?;
    let mut events = listen("be1")?;
    let (client, server) = connect_via_topology(false, PORT, None)?;
    let (_owned, _, _) = cluster.hop(log, server, "fe", "be1", b"")?;
    expect_imported(&mut events, log, &client, Some(1))?;
    // SO_LINGER {on, 0}: close sends RST.
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: valid fd and option buffer.
    unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&client),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    drop(client);
    let e = next(&mut events, log)?;
    check!(
        e.kind == EventKind::Released && e.reason == Some(Reason::Rst),
        "{e:?}"
    );
    check!(e.time_wait_ms == 0, "time-wait after a reset");
    quiet(&mut events, log)
}

/// The client disappears (its host drops everything): be1's user timeout gives up.
fn vanished(env: &Env, log: &mut Log) -> TestResult {
    let _t = Topology::up()?;
    let _c = loaded(env, log)?;
    let mut cluster = Cluster::new(false)?;
    let mut events = listen("be1")?;
    let (client, server) = connect_via_topology(false, PORT, None)?;
    let (mut owned, _, _) = cluster.hop(log, server, "fe", "be1", b"")?;
    expect_imported(&mut events, log, &client, Some(1))?;
    let rules =
        "add table inet gone\nadd chain inet gone in { type filter hook input priority 0; policy drop; }\n";
    std::fs::write("/tmp/prism-gone.nft", rules).map_err(|e| e.to_string())?;
    sh(
        log,
        "ip",
        &["netns", "exec", "client", "nft", "-f", "/tmp/prism-gone.nft"],
    )?;
    set_int(owned.as_fd(), libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, 1500).map_err(|e| e.to_string())?;
    owned.write_all(&[7; 10_000]).map_err(|e| e.to_string())?;
    let e = next(&mut events, log)?;
    check!(
        e.kind == EventKind::Released && e.reason == Some(Reason::Timeout),
        "{e:?}"
    );
    check!(
        e.duration >= Duration::from_millis(1500),
        "released after {:?}",
        e.duration
    );
    let err = owned.write(&[1]).err().and_then(|e| e.raw_os_error());
    check!(err == Some(libc::ETIMEDOUT), "socket error {err:?}");
    quiet(&mut events, log)
}

/// fe -> be1 -> fe (hand back) -> be2 -> be1 -> be2: each host that held the imported
/// socket and passed it on says SOCK_EXPORTED; one SOCK_RELEASED in total, on be2.
fn chain(env: &Env, log: &mut Log) -> TestResult {
    let _t = Topology::up()?;
    let _c = loaded(env, log)?;
    let mut cluster = Cluster::new(false)?;
    let mut ls = Vec::new();
    for node in topology::NODES {
        ls.push((node, listen(node)?));
    }
    let (mut client, server) = connect_via_topology(false, PORT, None)?;
    let route = ["fe", "be1", "fe", "be2", "be1", "be2"];
    let mut sock = server;
    let mut id = None;
    for (i, pair) in route.windows(2).enumerate() {
        send_stream(&mut client, 10 + i as u64, 3_000)?;
        expect_stream(&mut sock, 10 + i as u64, 3_000)?;
        let (s, _, _) = cluster.hop(log, sock, pair[0], pair[1], b"")?;
        sock = s;
        send_stream(&mut sock, 50 + i as u64, 3_000)?;
        expect_stream(&mut client, 50 + i as u64, 3_000)?;
        let to = &mut ls.iter_mut().find(|(n, _)| *n == pair[1]).expect("node").1;
        let imp = expect_imported(to, log, &client, None)?;
        if i > 0 {
            let from = &mut ls.iter_mut().find(|(n, _)| *n == pair[0]).expect("node").1;
            let e = next(from, log)?;
            check!(
                e.kind == EventKind::Exported && e.reason == Some(Reason::Exported),
                "hop {i}: {e:?}"
            );
            check!(Some(e.migration_id) == id, "hop {i}: exported id");
        }
        id = Some(imp.migration_id);
    }
    close_client_first(&mut client, sock)?;
    let be2 = &mut ls.iter_mut().find(|(n, _)| *n == "be2").expect("be2").1;
    let e = next(be2, log)?;
    check!(
        e.kind == EventKind::Released && e.reason == Some(Reason::Fin) && Some(e.migration_id) == id,
        "{e:?}"
    );
    for (_, l) in ls.iter_mut() {
        quiet(l, log)?;
    }
    Ok(())
}

/// `n` client connections (ports from `first`), accepted on fe, moved to be1 without
/// steering each flow: l4 routes the whole VIP to be1 once they are all there.
fn migrate_many(log: &mut Log, n: u16, first: u16) -> Result<(Vec<TcpStream>, Vec<TcpStream>), String> {
    let vip = SocketAddr::new(topology::vip(false), PORT);
    let listener = in_ns("fe", move || std::net::TcpListener::bind(vip))?.map_err(|e| e.to_string())?;
    let mut clients = Vec::new();
    let mut servers = Vec::new();
    for i in 0..n {
        let c = in_ns("client", move || connect_from(first + i, vip))?
            .map_err(|e| format!("connect {i}: {e}"))?;
        clients.push(c);
        servers.push(listener.accept().map_err(|e| e.to_string())?.0);
    }
    let fe = in_ns("fe", Client::connect)?.map_err(|e| e.to_string())?;
    let be1 = in_ns("be1", Client::connect)?.map_err(|e| e.to_string())?;
    let mut owned = Vec::new();
    for s in servers {
        let state = fe.export_detach(s.as_fd()).map_err(|e| format!("export: {e}"))?;
        let (t, _) = be1
            .import_stream(&state, &ImportOptions::default())
            .map_err(|e| format!("import: {e}"))?;
        owned.push(t);
    }
    Topology::route_vip(log, "be1")?;
    log.line(format!("{n} connections now on be1"));
    Ok((clients, owned))
}

/// Room for two sockets per connection and more.
fn raise_fd_limit() -> TestResult {
    let lim = libc::rlimit {
        rlim_cur: 8192,
        rlim_max: 8192,
    };
    // SAFETY: valid rlimit; the suite runs as root.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(format!("setrlimit: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// 1000 migrated connections close at once: 1000 SOCK_RELEASED, no duplicate, no gap for
/// a listener that keeps up; one that does not is told and sees the gap, and GET_INFO counts it.
fn thousand(env: &Env, log: &mut Log) -> TestResult {
    let _t = Topology::up()?;
    let _c = loaded(env, log)?;
    raise_fd_limit()?;
    let mut events = listen("be1")?;
    // A listener that does not read during the burst, with room for a few events only.
    let mut slow = listen("be1")?;
    slow.set_receive_buffer(4096).map_err(|e| e.to_string())?;
    let (clients, owned) = migrate_many(log, 1000, 41000)?;
    // be1 closes every connection, then the clients close theirs.
    drop(owned);
    let closer = std::thread::spawn(move || {
        for mut c in clients {
            let mut rest = Vec::new();
            let _ = c.read_to_end(&mut rest);
        }
    });
    let mut imported = std::collections::HashSet::new();
    let mut released = std::collections::HashSet::new();
    let mut seq = 0;
    while released.len() < 1000 {
        let e = events
            .next_timeout(Some(Duration::from_secs(60)))
            .map_err(|e| e.to_string())?
            .ok_or(format!(
                "{} imported, {} released, then silence",
                imported.len(),
                released.len()
            ))?;
        check!(e.seq == seq + 1, "seq {} after {seq}", e.seq);
        seq = e.seq;
        let fresh = match e.kind {
            EventKind::Imported => imported.insert(e.sock_cookie),
            EventKind::Released => {
                check!(
                    imported.contains(&e.sock_cookie),
                    "released before imported: {e:?}"
                );
                check!(e.reason == Some(Reason::Fin), "{e:?}");
                released.insert(e.sock_cookie)
            }
            EventKind::Exported => return Err(format!("{e:?}")),
        };
        check!(fresh, "duplicate {e:?}");
    }
    closer.join().map_err(|_| "closer panicked")?;
    log.line(format!(
        "{} imported, {} released, last seq {seq}",
        imported.len(),
        released.len()
    ));
    check!(imported.len() == 1000, "{} imported", imported.len());
    quiet(&mut events, log)?;
    // The slow listener lost events: it is told once, and sees the gap in `seq`.
    let (mut got, mut overrun, mut last) = (0u64, false, 0u64);
    loop {
        match slow.next_timeout(Some(Duration::from_millis(500))) {
            Ok(Some(e)) => {
                check!(e.seq > last, "slow listener: seq {} after {last}", e.seq);
                last = e.seq;
                got += 1;
            }
            Ok(None) => break,
            Err(e) if e.errno() == Some(libc::ENOBUFS) => overrun = true,
            Err(e) => return Err(e.to_string()),
        }
    }
    log.line(format!(
        "slow listener: {got} events, last seq {last}, overrun {overrun}"
    ));
    check!(
        overrun && got < 2000,
        "slow listener got {got}, overrun {overrun}"
    );
    let info = in_ns("be1", Client::connect)?
        .map_err(|e| e.to_string())?
        .info()
        .map_err(|e| e.to_string())?;
    log.line(format!("{info:?}"));
    check!(info.tracked == 0, "still tracked: {}", info.tracked);
    check!(info.events_lost > 0, "lost events not counted");
    Ok(())
}

/// The kernel's YNL cli receives the events with the project's spec; a listener in another
/// namespace sees nothing; without CAP_NET_ADMIN joining is refused.
fn listeners(env: &Env, log: &mut Log) -> TestResult {
    let _t = Topology::up()?;
    let _c = loaded(env, log)?;
    let mut other = listen("be2")?;
    let ynl = ynl_subscribe(env, "be1", "events", 20)?;
    let mut cluster = Cluster::new(false)?;
    let mut mine = listen("be1")?;
    let (mut client, server) = connect_via_topology(false, PORT, None)?;
    let (owned, _, _) = cluster.hop(log, server, "fe", "be1", b"")?;
    let imported = expect_imported(&mut mine, log, &client, Some(1))?;
    close_client_first(&mut client, owned)?;
    let e = next(&mut mine, log)?;
    check!(e.kind == EventKind::Released, "{e:?}");
    let text = ynl_output(ynl, log)?;
    for (name, id) in [
        ("sock-imported", imported.migration_id),
        ("sock-released", e.migration_id),
    ] {
        check!(text.contains(name), "ynl did not print {name}");
        check!(
            text.contains(&id.to_string()),
            "ynl did not print migration id {id}"
        );
    }
    check!(
        text.contains("'reason': 'fin'") || text.contains("'reason': 1"),
        "ynl reason"
    );
    // be2's listener saw nothing of be1's namespace.
    quiet(&mut other, log)?;
    // A listener without CAP_NET_ADMIN is refused, on either group.
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let me = me.to_string_lossy();
    let mut cmd: Vec<&str> = vec!["ip", "netns", "exec", "be1"];
    cmd.extend(WITHOUT_NET_ADMIN);
    cmd.extend([&*me, "listen-probe"]);
    let out = sh(log, cmd[0], &cmd[1..])?;
    let eperm = libc::EPERM;
    check!(
        out.trim() == format!("events errno {eperm}, releases errno {eperm}"),
        "unprivileged listener gave {out:?}"
    );
    Ok(())
}

/// The `releases` group: only SOCK_RELEASED, numbered as in `events`, also through YNL;
/// and while the host's only listeners are on `releases`, hops build no event.
fn releases_group(env: &Env, log: &mut Log) -> TestResult {
    let _t = Topology::up()?;
    let _c = loaded(env, log)?;
    let mut be1_releases = join("be1", Group::Releases)?;
    let mut be2_releases = join("be2", Group::Releases)?;
    let ynl = ynl_subscribe(env, "be2", "releases", 25)?;
    let mut cluster = Cluster::new(false)?;
    // Events count in the namespace of their socket: be1's and be2's together.
    let sent = |cluster: &mut Cluster| -> Result<u64, String> {
        let mut sent = 0;
        for node in ["be1", "be2"] {
            sent += cluster.nl(node).info().map_err(|e| e.to_string())?.events_sent;
        }
        Ok(sent)
    };
    let (mut client, server) = connect_via_topology(false, PORT, None)?;
    let (owned, _, _) = cluster.hop(log, server, "fe", "be1", b"")?;
    let (owned, _, _) = cluster.hop(log, owned, "be1", "be2", b"")?;
    // Two imports and an export with listeners on `releases` only: no event built.
    check!(sent(&mut cluster)? == 0, "the hops sent events");
    // The release goes to both groups, one event with one number.
    let mut be2_events = join("be2", Group::Events)?;
    close_client_first(&mut client, owned)?;
    let released = next(&mut be2_events, log)?;
    check!(
        released.kind == EventKind::Released && released.seq == 1,
        "{released:?}"
    );
    let only = next(&mut be2_releases, log)?;
    check!(
        only == released,
        "releases group: {only:?}, events group: {released:?}"
    );
    check!(sent(&mut cluster)? == 1, "a release to two groups counts once");
    quiet(&mut be2_releases, log)?;
    quiet(&mut be1_releases, log)?;
    let text = ynl_output(ynl, log)?;
    check!(
        text.contains("sock-released") && text.contains(&released.migration_id.to_string()),
        "ynl on releases did not print the release"
    );
    check!(
        !text.contains("sock-imported"),
        "ynl on releases printed an import"
    );
    Ok(())
}

/// Waits until process `pid`, once it runs `comm`, has a socket open, and a moment more:
/// a listener joins right after it opens its netlink socket. (`ip netns exec` has sockets
/// of its own before it execs the listener; loading a YNL spec takes seconds under TCG.)
fn wait_joined(pid: u32, comm: &str) -> TestResult {
    let start = std::time::Instant::now();
    let joined = || {
        let running = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .map(|c| c.starts_with(comm))
            .unwrap_or(false);
        let sockets = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| {
                d.flatten()
                    .filter(|f| {
                        std::fs::read_link(f.path())
                            .map(|l| l.to_string_lossy().starts_with("socket:"))
                            .unwrap_or(false)
                    })
                    .count()
            })
            .unwrap_or(0);
        running && sockets >= 1
    };
    while !joined() {
        check!(
            start.elapsed() < Duration::from_secs(120),
            "{comm} did not open its socket"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2));
    Ok(())
}

/// `prismctl monitor --json` prints the import and the release of a migrated connection,
/// and `prismctl status` shows nothing tracked afterwards.
fn prismctl_monitor(env: &Env, log: &mut Log) -> TestResult {
    let _t = Topology::up()?;
    let _c = loaded(env, log)?;
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let prismctl = me.with_file_name("prismctl");
    let monitor = std::process::Command::new("ip")
        .args(["netns", "exec", "be1"])
        .arg(&prismctl)
        .args(["monitor", "--json", "--count", "2", "--idle-timeout", "60"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    wait_joined(monitor.id(), "prismctl")?;
    let mut cluster = Cluster::new(false)?;
    let (mut client, server) = connect_via_topology(false, PORT, None)?;
    let (mut owned, _, _) = cluster.hop(log, server, "fe", "be1", b"")?;
    send_stream(&mut owned, 5, 20_000)?;
    expect_stream(&mut client, 5, 20_000)?;
    close_client_first(&mut client, owned)?;
    let out = monitor.wait_with_output().map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    log.line(format!(
        "prismctl monitor: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    ));
    check!(out.status.success(), "prismctl monitor failed");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("not JSON lines: {e}"))?;
    check!(lines.len() == 2, "{} lines", lines.len());
    check!(
        lines[0]["kind"] == "imported" && lines[0]["seq"] == 1,
        "{}",
        lines[0]
    );
    check!(
        lines[1]["kind"] == "released" && lines[1]["reason"] == "fin" && lines[1]["seq"] == 2,
        "{}",
        lines[1]
    );
    check!(
        lines[1]["bytes_acked"].as_u64().unwrap_or(0) >= 20_000,
        "{}",
        lines[1]
    );
    let status = sh(
        log,
        "ip",
        &[
            "netns",
            "exec",
            "be1",
            &prismctl.to_string_lossy(),
            "status",
            "--json",
        ],
    )?;
    let status: serde_json::Value = serde_json::from_str(&status).map_err(|e| e.to_string())?;
    check!(status["tracked"] == 0 && status["imports"] == 1, "{status}");
    Ok(())
}

/// Child side of the unprivileged listener check: prints how joining failed.
/// The client ends the connection: `owned` reads to its end and closes, then the
/// client reads to the end too (the FIN handshake completes).
fn close_client_first(client: &mut TcpStream, mut owned: TcpStream) -> TestResult {
    client.shutdown(Shutdown::Write).map_err(|e| e.to_string())?;
    let mut rest = Vec::new();
    owned.read_to_end(&mut rest).map_err(|e| e.to_string())?;
    drop(owned);
    client.read_to_end(&mut rest).map_err(|e| e.to_string())?;
    Ok(())
}

pub fn listen_probe() -> String {
    let try_join = |group| match EventListener::join(group) {
        Ok(_) => "joined".to_string(),
        Err(e) => format!("errno {}", e.errno().unwrap_or(0)),
    };
    format!(
        "events {}, releases {}",
        try_join(Group::Events),
        try_join(Group::Releases)
    )
}

/// rmmod while 100 migrated connections are tracked: they keep working and close
/// normally afterwards, with no event and no splat (run-guest checks dmesg).
fn rmmod_live(env: &Env, log: &mut Log) -> TestResult {
    let _t = Topology::up()?;
    module::load(log, &env.module)?;
    let (clients, owned) = migrate_many(log, 100, 42000)?;
    let info = in_ns("be1", Client::connect)?
        .map_err(|e| e.to_string())?
        .info()
        .map_err(|e| e.to_string())?;
    check!(info.tracked == 100, "tracked {}", info.tracked);
    module::unload(log)?;
    check!(!module::is_loaded(), "module still loaded");
    exchange_and_close(clients, owned, 2_000)?;
    Ok(())
}

/// `len` bytes each way over every client/owner pair on be1, then the clients close
/// their side, the owners close, and be1 is left with no TCP socket.
fn exchange_and_close(mut clients: Vec<TcpStream>, mut owned: Vec<TcpStream>, len: usize) -> TestResult {
    for (i, (c, s)) in clients.iter_mut().zip(owned.iter_mut()).enumerate() {
        send_stream(c, i as u64, len)?;
        expect_stream(s, i as u64, len)?;
        send_stream(s, 1000 + i as u64, len)?;
        expect_stream(c, 1000 + i as u64, len)?;
    }
    for (mut c, s) in clients.into_iter().zip(owned) {
        c.shutdown(Shutdown::Write).map_err(|e| e.to_string())?;
        drop(s);
        let mut rest = Vec::new();
        c.read_to_end(&mut rest).map_err(|e| e.to_string())?;
    }
    wait_for("be1's migrated sockets to close", || {
        crate::migrate::counters("be1")
            .map(|c| c.tcp_inuse == 0)
            .unwrap_or(false)
    })
}

/// The module is removed while a thread imports 150 exported connections on be1 one
/// after another (`delete_module` from a second thread once 20 are in): each import
/// gives a working socket or fails leaving nothing on be1. After insmod the failed ones
/// import from the same states, and every connection carries bytes both ways and
/// closes with no RST.
fn rmmod_during_imports(env: &Env, log: &mut Log) -> TestResult {
    const N: u16 = 150;
    const RMMOD_AFTER: usize = 20;
    let _t = Topology::up()?;
    module::load(log, &env.module)?;
    raise_fd_limit()?;
    let vip = SocketAddr::new(topology::vip(false), PORT);
    let listener = in_ns("fe", move || std::net::TcpListener::bind(vip))?.map_err(|e| e.to_string())?;
    let fe = in_ns("fe", Client::connect)?.map_err(|e| e.to_string())?;
    let (mut clients, mut states) = (Vec::new(), Vec::new());
    for i in 0..N {
        let c = in_ns("client", move || connect_from(44000 + i, vip))?
            .map_err(|e| format!("connect {i}: {e}"))?;
        let (s, _) = listener.accept().map_err(|e| e.to_string())?;
        states.push(
            fe.export_detach(s.as_fd())
                .map_err(|e| format!("export {i}: {e}"))?,
        );
        clients.push(c);
    }
    drop(fe);
    Topology::route_vip(log, "be1")?;
    let rst_before = crate::migrate::rsts_all()?;
    let be1 = in_ns("be1", Client::connect)?.map_err(|e| e.to_string())?;
    let imported = std::sync::atomic::AtomicUsize::new(0);
    let (results, removed) = std::thread::scope(|scope| {
        let remover = scope.spawn(|| {
            while imported.load(std::sync::atomic::Ordering::Relaxed) < RMMOD_AFTER {
                std::thread::sleep(Duration::from_millis(1));
            }
            // SAFETY: a NUL-terminated module name; O_NONBLOCK fails rather than waits
            // if the module is in use.
            let r =
                unsafe { libc::syscall(libc::SYS_delete_module, c"prism_sock".as_ptr(), libc::O_NONBLOCK) };
            let done = imported.load(std::sync::atomic::Ordering::Relaxed);
            (r == 0)
                .then_some(done)
                .ok_or_else(|| std::io::Error::last_os_error().to_string())
        });
        // Once the removal may have begun, imports are paced: the module's exit first
        // stops the tracker (RCU grace periods, tens of ms on a stock kernel) before it
        // unregisters the family, and an unpaced stream could finish in that time.
        let results: Vec<_> = states
            .iter()
            .enumerate()
            .map(|(i, st)| {
                if i >= RMMOD_AFTER {
                    std::thread::sleep(Duration::from_millis(5));
                }
                let r = be1.import_stream(st, &ImportOptions::default());
                imported.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                r.map(|(t, _)| t).map_err(|e| e.to_string())
            })
            .collect();
        (results, remover.join())
    });
    drop(be1);
    let removed_at = removed
        .map_err(|_| "remover panicked".to_string())?
        .map_err(|e| format!("delete_module: {e}"))?;
    check!(!module::is_loaded(), "module still loaded after delete_module");
    let mut errors: std::collections::BTreeMap<String, u32> = Default::default();
    for (i, r) in results.iter().enumerate() {
        if let Err(e) = r {
            *errors.entry(e.clone()).or_default() += 1;
            let port = 44000 + i as u16;
            let left = flow_sockets("be1", port)?;
            check!(left.is_empty(), "failed import {i} left sockets on be1: {left:?}");
        }
    }
    let failed = errors.values().sum::<u32>();
    log.line(format!(
        "delete_module returned after {removed_at} of {N} imports; {} succeeded, {failed} failed: {errors:?}",
        N as u32 - failed
    ));
    check!(
        results[..RMMOD_AFTER].iter().all(Result::is_ok),
        "an import before the removal failed"
    );
    check!(
        failed > 0,
        "every import finished before the module went: no race"
    );

    module::load(log, &env.module)?;
    let be1 = in_ns("be1", Client::connect)?.map_err(|e| e.to_string())?;
    let mut owned = Vec::new();
    for (i, (r, st)) in results.into_iter().zip(&states).enumerate() {
        owned.push(match r {
            Ok(t) => t,
            Err(_) => {
                be1.import_stream(st, &ImportOptions::default())
                    .map_err(|e| format!("import {i} again after insmod: {e}"))?
                    .0
            }
        });
    }
    exchange_and_close(clients, owned, 1_000)?;
    let rst_after = crate::migrate::rsts_all()?;
    check!(
        rst_after == rst_before,
        "a host sent RST: {rst_before:?} -> {rst_after:?}"
    );
    Ok(())
}

/// The socket's cookie (`SO_COOKIE`).
fn cookie(s: &TcpStream) -> u64 {
    let mut v = 0u64;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: an 8-byte value and its length, on our own socket.
    unsafe {
        libc::getsockopt(
            std::os::fd::AsRawFd::as_raw_fd(s),
            libc::SOL_SOCKET,
            libc::SO_COOKIE,
            (&mut v as *mut u64).cast(),
            &mut len,
        )
    };
    v
}

/// A listener that lost events (ENOBUFS) rebuilds its view with SOCK_LIST: exactly the
/// sockets still tracked in its namespace (the 180 of 200 imports not yet released),
/// each with the namespace's last sequence number, through userlib and through the
/// kernel's YNL CLI from the spec; another namespace lists none.
fn resync(env: &Env, log: &mut Log) -> TestResult {
    let _t = Topology::up()?;
    let _c = loaded(env, log)?;
    raise_fd_limit()?;
    let mut slow = listen("be1")?;
    slow.set_receive_buffer(4096).map_err(|e| e.to_string())?;
    let (mut clients, mut owned) = migrate_many(log, 200, 43000)?;
    let be1 = in_ns("be1", Client::connect)?.map_err(|e| e.to_string())?;
    // Twenty connections end: the client closes, then be1 (LAST_ACK -> CLOSE).
    for (c, s) in clients.drain(..20).zip(owned.drain(..20)) {
        c.shutdown(Shutdown::Write).map_err(|e| e.to_string())?;
        let mut s = s;
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).map_err(|e| e.to_string())?;
        drop(s);
        drop(c);
    }
    wait_for("twenty releases", || {
        std::thread::sleep(Duration::from_millis(20));
        be1.info().is_ok_and(|i| i.tracked == 180)
    })?;
    let mut overrun = false;
    loop {
        match slow.next_timeout(Some(Duration::from_millis(300))) {
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(e) if e.errno() == Some(libc::ENOBUFS) => overrun = true,
            Err(e) => return Err(e.to_string()),
        }
    }
    check!(overrun, "the slow listener was not overrun");
    let listed = be1.list_tracked().map_err(|e| e.to_string())?;
    log.line(format!(
        "listed {} on be1; first {:?}",
        listed.len(),
        listed.first()
    ));
    let want: std::collections::BTreeSet<u64> = owned.iter().map(cookie).collect();
    let got: std::collections::BTreeSet<u64> = listed.iter().map(|t| t.sock_cookie).collect();
    check!(
        listed.len() == 180 && got == want,
        "listed {} sockets, {} of the 180 live ones",
        listed.len(),
        got.intersection(&want).count()
    );
    // 200 imports and 20 releases were announced in be1's namespace.
    for t in &listed {
        check!(t.tcp_state == 1 && t.seq == 220, "{t:?}");
        check!(t.local.port() == 8300 && t.peer.port() >= 43000, "{t:?}");
    }
    let out = super::foundation::ynl(
        env,
        log,
        &["ip", "netns", "exec", "be1"],
        &["--dump", "sock-list", "--output-json"],
    )?;
    let v: serde_json::Value =
        serde_json::from_str(out.trim()).map_err(|e| format!("ynl output: {e}: {out}"))?;
    let ynl_cookies: std::collections::BTreeSet<u64> = v
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["sock-cookie"].as_u64()).collect())
        .unwrap_or_default();
    check!(ynl_cookies == want, "YNL listed {} sockets", ynl_cookies.len());
    let prismctl = std::env::current_exe()
        .map_err(|e| e.to_string())?
        .with_file_name("prismctl");
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", "be1"])
        .arg(&prismctl)
        .args(["list", "--json"])
        .output()
        .map_err(|e| e.to_string())?;
    check!(
        out.status.success(),
        "prismctl list: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ctl_cookies = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .map(|v| v["sock_cookie"].as_u64().unwrap_or(0))
                .map_err(|e| format!("prismctl list: not JSON: {e}: {l}"))
        })
        .collect::<Result<std::collections::BTreeSet<u64>, String>>()?;
    check!(
        ctl_cookies == want,
        "prismctl listed {} sockets",
        ctl_cookies.len()
    );
    let be2 = in_ns("be2", Client::connect)?.map_err(|e| e.to_string())?;
    let other = be2.list_tracked().map_err(|e| e.to_string())?;
    check!(other.is_empty(), "be2 lists {} sockets", other.len());
    drop(clients);
    Ok(())
}
