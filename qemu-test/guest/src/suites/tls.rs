//! kTLS connections move with their TLS state: every version and cipher this kernel
//! offers, records in flight both ways, a thousand hops of one connection, and the
//! refusals of a TLS layer that holds bytes the TCP queues do not. The client is a kTLS
//! socket keyed directly (see `crate::ktls`): it authenticates every record it reads,
//! so a wrong key, IV or record sequence after a move fails its read.

use super::common::{expect_refusal, loaded};
use super::export::connect_via_topology;
use super::import_refusals::{encode, parse};
use crate::check;
use crate::harness::{sh, Env, Log, Test, TestResult};
use crate::ktls::{self, Pair, CIPHERS, TLS_1_2, TLS_1_3};
use crate::migrate::{no_rst_since, pattern_at, rsts_all, Cluster, Retries};
use crate::topology::Topology;
use prism_sock::uapi::StateAttr;
use prism_sock::{ImportOptions, MigrationState};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsFd;
use std::time::Duration;

pub fn tests() -> Vec<Test> {
    vec![
        Test {
            name: "tls_hop_every_version_and_cipher",
            run: every_cipher,
        },
        Test {
            name: "tls_1000_hops_of_one_connection_every_byte_checked",
            run: thousand_hops,
        },
        Test {
            name: "tls_python_client_through_hops_after_a_rustls_handshake",
            run: python_client,
        },
        Test {
            name: "tls_records_in_flight_both_ways_across_10_hops",
            run: in_flight,
        },
        Test {
            name: "tls_tampered_key_fails_the_peer_not_the_kernel",
            run: tampered,
        },
        Test {
            name: "tls_decrypted_records_move_busy_layers_are_refused",
            run: refusals,
        },
        Test {
            name: "tls_import_refuses_malformed_tls_attributes",
            run: malformed,
        },
        // Needs tls as a loadable module (Debian's kernel has it so); the test kernel
        // builds it in, and `make test` leaves this test out.
        Test {
            name: "tls_module_not_loaded_import_loads_it_or_refuses_cleanly",
            run: module_on_demand,
        },
    ]
}

const PORT: u16 = 8400;
const TIMEOUT: Duration = Duration::from_secs(30);

fn io(what: &'static str) -> impl Fn(std::io::Error) -> String {
    move |e| format!("{what}: {e}")
}

/// A connection through the topology, both ends keyed with `pair`.
fn keyed(v6: bool, port: u16, pair: &Pair) -> Result<(TcpStream, TcpStream), String> {
    let (client, server) = connect_via_topology(v6, port, None)?;
    pair.client(client.as_fd()).map_err(io("kTLS on the client"))?;
    pair.server(server.as_fd()).map_err(io("kTLS on fe"))?;
    for s in [&client, &server] {
        s.set_read_timeout(Some(TIMEOUT)).map_err(io("timeout"))?;
    }
    Ok((client, server))
}

/// Writes one record of `len` bytes of stream `seed` from `offset`.
fn send_record(s: &mut TcpStream, seed: u64, offset: u64, len: usize) -> Result<(), String> {
    s.write_all(&pattern_at(seed, offset, len))
        .map_err(io("send a record"))
}

/// Reads `len` bytes and checks they are stream `seed` from `offset`.
fn expect(s: &mut TcpStream, seed: u64, offset: u64, len: usize) -> Result<(), String> {
    let mut got = vec![0u8; len];
    s.read_exact(&mut got).map_err(io("read records"))?;
    check!(
        got == pattern_at(seed, offset, len),
        "{len} bytes from offset {offset} of stream {seed} differ"
    );
    Ok(())
}

/// Ciphers every kernel the suite runs on must offer kTLS with.
const REQUIRED: [&str; 4] = ["AES-GCM-128", "AES-GCM-256", "AES-CCM-128", "ChaCha20-Poly1305"];

/// Whether this kernel offers `version` with cipher `c` (a client-side probe).
fn offered(v6: bool, port: u16, version: u16, c: ktls::Cipher) -> Result<Option<std::io::Error>, String> {
    let (client, _server) = connect_via_topology(v6, port, None)?;
    Ok(Pair::new(version, c).client(client.as_fd()).err())
}

/// Each version and cipher the kernel offers: a connection with records read, one
/// record left unread in fe's receive queue and one sent by fe, hops to be1 and back;
/// the blob carries the record sequences, the new owner reads the unread record and
/// both ends go on exchanging records. The ciphers in `REQUIRED` must be offered (the
/// test kernel and Debian's have them; SM4 and ARIA only the test kernel).
fn every_cipher(env: &Env, log: &mut Log) -> TestResult {
    let _t = Topology::up()?;
    let _c = loaded(env, log)?;
    let mut cluster = Cluster::new(false)?;
    let rst_before = rsts_all()?;
    let mut port = PORT;
    let mut moved = Vec::new();
    for version in [TLS_1_2, TLS_1_3] {
        for cipher in CIPHERS {
            port += 1;
            if let Some(e) = offered(false, port, version, cipher)? {
                log.line(format!("{version:#06x} {}: not offered here ({e})", cipher.name));
                check!(
                    !REQUIRED.contains(&cipher.name),
                    "{} must be offered: {e}",
                    cipher.name
                );
                continue;
            }
            port += 1;
            let pair = Pair::new(version, cipher);
            let (mut client, mut fe) = keyed(false, port, &pair)?;
            let tls13 = version == TLS_1_3;
            ktls::set_option(fe.as_fd(), ktls::TLS_TX_ZEROCOPY_RO, 1).map_err(io("zerocopy"))?;
            if tls13 {
                ktls::set_option(fe.as_fd(), ktls::TLS_RX_EXPECT_NO_PAD, 1).map_err(io("no-pad"))?;
            }
            for i in 0..3 {
                send_record(&mut client, 1, 1000 * i, 1000)?;
            }
            expect(&mut fe, 1, 0, 2000)?;
            send_record(&mut fe, 2, 0, 700)?;
            expect(&mut client, 2, 0, 700)?;
            super::export::wait_for("the third record queued on fe", || {
                crate::sockopt::queued(fe.as_fd(), false) > 1000
            })?;
            let state = cluster
                .nl("fe")
                .export_snapshot(fe.as_fd())
                .and_then(|s| s.decode())
                .map_err(|e| format!("snapshot: {e}"))?;
            let tls = state.tls.ok_or("the blob carries no kTLS state")?;
            check!(
                tls.version == version && tls.cipher == cipher.id,
                "blob says version {:#x} cipher {}",
                tls.version,
                tls.cipher
            );
            check!(
                tls.tx_rec_seq == Some(pair.down.rec_seq + 1) && tls.rx_rec_seq == Some(pair.up.rec_seq + 2),
                "record sequences {:?}/{:?}, expected {}/{}",
                tls.tx_rec_seq,
                tls.rx_rec_seq,
                pair.down.rec_seq + 1,
                pair.up.rec_seq + 2
            );
            check!(
                tls.tx_zerocopy && tls.rx_no_pad == tls13,
                "options zerocopy {} no-pad {}",
                tls.tx_zerocopy,
                tls.rx_no_pad
            );
            let (mut be1, _, _) = cluster.hop(log, fe, "fe", "be1", &[])?;
            be1.set_read_timeout(Some(TIMEOUT)).map_err(io("timeout"))?;
            let zc = ktls::get_option(be1.as_fd(), ktls::TLS_TX_ZEROCOPY_RO).map_err(io("zerocopy"))?;
            let np = if tls13 {
                ktls::get_option(be1.as_fd(), ktls::TLS_RX_EXPECT_NO_PAD).map_err(io("no-pad"))?
            } else {
                0
            };
            check!(
                zc == 1 && np == u32::from(tls13),
                "be1's options: zerocopy {zc}, no-pad {np}"
            );
            expect(&mut be1, 1, 2000, 1000)?;
            send_record(&mut be1, 2, 700, 5000)?;
            expect(&mut client, 2, 700, 5000)?;
            send_record(&mut client, 1, 3000, 300)?;
            let (mut back, _, _) = cluster.hop(log, be1, "be1", "fe", &[])?;
            back.set_read_timeout(Some(TIMEOUT)).map_err(io("timeout"))?;
            expect(&mut back, 1, 3000, 300)?;
            send_record(&mut back, 2, 5700, 16384)?;
            expect(&mut client, 2, 5700, 16384)?;
            moved.push(format!("{version:#06x} {}", cipher.name));
        }
    }
    log.line(format!("moved and checked: {}", moved.join(", ")));
    check!(
        moved.len() >= 4,
        "only {} version/cipher pairs moved",
        moved.len()
    );
    no_rst_since(&rst_before)?;
    Ok(())
}

/// One TLS 1.3 connection hops 1,000 times, fe to fe (export with detach, import in
/// the same namespace: no steering, so the hops are many). Between hops the client and
/// the owner exchange a record each of a size that varies; every tenth hop a client
/// record waits unread in the receive queue across the hop.
fn thousand_hops(env: &Env, log: &mut Log) -> TestResult {
    let _t = Topology::up()?;
    let _c = loaded(env, log)?;
    let cluster = Cluster::new(false)?;
    let pair = Pair::new(TLS_1_3, CIPHERS[0]);
    let (mut client, mut owner) = keyed(false, PORT + 40, &pair)?;
    let nl = cluster.nl("fe");
    let (mut up, mut down) = (0u64, 0u64);
    let mut pending = None;
    for hop in 0..1000u64 {
        let len = 1 + (hop * 7919 % 6000) as usize;
        send_record(&mut client, 3, up, len)?;
        if hop % 10 == 0 {
            pending = Some((up, len));
        } else {
            if let Some((at, l)) = pending.take() {
                expect(&mut owner, 3, at, l)?;
            }
            expect(&mut owner, 3, up, len)?;
        }
        up += len as u64;
        send_record(&mut owner, 4, down, len / 2 + 1)?;
        expect(&mut client, 4, down, len / 2 + 1)?;
        down += len as u64 / 2 + 1;
        let state = nl
            .export_detach(owner.as_fd())
            .map_err(|e| format!("export {hop}: {e}"))?;
        drop(owner);
        owner = nl
            .import_stream(&state, &ImportOptions::default())
            .map_err(|e| format!("import {hop}: {e}"))?
            .0;
        owner.set_read_timeout(Some(TIMEOUT)).map_err(io("timeout"))?;
    }
    if let Some((at, l)) = pending.take() {
        expect(&mut owner, 3, at, l)?;
    }
    log.line(format!(
        "1000 hops; {up} bytes up and {down} bytes down checked, in records"
    ));
    Ok(())
}

/// The client streams 1,000-byte records up and reads the owner's 2,000-byte records
/// down in threads of its own, while the connection hops fe -> be1 -> be2 -> fe ...
/// ten times: exports meet records partly received, unacknowledged data both ways
/// and the peer's window at work. An export that finds the TLS layer busy (EAGAIN) is
/// made again. Every byte is checked at both ends.
fn in_flight(env: &Env, log: &mut Log) -> TestResult {
    let _t = Topology::up()?;
    let _c = loaded(env, log)?;
    let mut cluster = Cluster::new(false)?;
    let rst_before = rsts_all()?;
    let pair = Pair::new(TLS_1_2, CIPHERS[1]);
    let (client, mut owner) = keyed(false, PORT + 50, &pair)?;
    // The owner's receive buffer is bounded, or the streaming client fills more than the
    // module's max-queue-bytes (1 MiB) into it.
    crate::sockopt::set_int(owner.as_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF, 128 << 10)
        .map_err(io("SO_RCVBUF"))?;
    const HOPS: usize = 10;
    const UP: u64 = 1000;
    const UP_PER_HOP: u64 = 150;
    const DOWN: u64 = 2000;
    const DOWN_PER_HOP: u64 = 60;
    let mut writer = client.try_clone().map_err(io("clone"))?;
    let mut reader = client;
    let (up_done, down_done) = std::thread::scope(|s| -> Result<_, String> {
        let up = s.spawn(move || -> Result<u64, String> {
            for i in 0..UP_PER_HOP * (HOPS as u64 + 1) {
                send_record(&mut writer, 5, i * UP, UP as usize)?;
            }
            Ok(UP_PER_HOP * (HOPS as u64 + 1) * UP)
        });
        let down = s.spawn(move || -> Result<u64, String> {
            let total = DOWN_PER_HOP * (HOPS as u64 + 1) * DOWN;
            expect(&mut reader, 6, 0, total as usize)?;
            Ok(total)
        });
        let route = ["fe", "be1", "be2"];
        let mut retries = Retries::default();
        let pause = |on: bool| {
            if on {
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(())
        };
        for hop in 0..=HOPS as u64 {
            expect(&mut owner, 5, hop * UP_PER_HOP * UP, (UP_PER_HOP * UP) as usize)?;
            for i in 0..DOWN_PER_HOP {
                send_record(&mut owner, 6, (hop * DOWN_PER_HOP + i) * DOWN, DOWN as usize)?;
            }
            if hop == HOPS as u64 {
                break;
            }
            let (from, to) = (route[hop as usize % 3], route[(hop as usize + 1) % 3]);
            owner = cluster.hop_retrying(log, owner, (from, to), 400, &pause, &mut retries)?;
            owner.set_read_timeout(Some(TIMEOUT)).map_err(io("timeout"))?;
        }
        log.line(format!("{HOPS} hops; calls made again: {:?}", retries.errors));
        let up = up.join().map_err(|_| "writer panicked")??;
        let down = down.join().map_err(|_| "reader panicked")??;
        Ok((up, down))
    })?;
    log.line(format!("{up_done} bytes up, {down_done} bytes down checked"));
    no_rst_since(&rst_before)?;
    Ok(())
}

/// The attributes of a blob with one of them replaced.
fn with_attr(state: &MigrationState, kind: StateAttr, f: impl Fn(&mut Vec<u8>)) -> MigrationState {
    let k = u16::from(kind);
    let mut attrs = parse(state.as_bytes());
    for (t, p) in attrs.iter_mut() {
        if *t == k {
            f(p);
        }
    }
    MigrationState::from_bytes(encode(&attrs))
}

/// A blob whose transmit key was changed imports (the module cannot know the key), and
/// the client's first read after the move fails authentication (EBADMSG): the peer
/// refuses the records, the kernel carries on.
fn tampered(env: &Env, log: &mut Log) -> TestResult {
    let _t = Topology::up()?;
    let _c = loaded(env, log)?;
    let cluster = Cluster::new(false)?;
    let pair = Pair::new(TLS_1_3, CIPHERS[0]);
    let (mut client, fe) = keyed(false, PORT + 60, &pair)?;
    let state = cluster
        .nl("fe")
        .export_detach(fe.as_fd())
        .map_err(|e| format!("export: {e}"))?;
    let bad = with_attr(&state, StateAttr::TlsTxKey, |k| k[0] ^= 1);
    let (mut be1, _) = cluster
        .nl("be1")
        .import_stream(&bad, &ImportOptions::default())
        .map_err(|e| format!("import: {e}"))?;
    let port = client.local_addr().map_err(|e| e.to_string())?.port();
    Topology::steer_flow(log, false, port, "be1", true)?;
    send_record(&mut be1, 7, 0, 100)?;
    let mut buf = [0u8; 100];
    let r = client.read(&mut buf);
    log.line(format!("client read after the tampered move: {r:?}"));
    check!(
        r.as_ref().err().and_then(|e| e.raw_os_error()) == Some(libc::EBADMSG),
        "expected EBADMSG, got {r:?}"
    );
    drop(cluster);
    Ok(())
}

/// What the TLS layer holds outside the TCP queues: the ULP with no keys is refused
/// (EOPNOTSUPP), and userlib's TCP_REPAIR backend refuses any kTLS socket; a record partly read or only peeked at waits decrypted, and moves as
/// such; a record still open on the sending side (MSG_MORE) and an unread control
/// record are refused (EAGAIN) and the socket works on, and once the reason is gone
/// the same socket moves. Detached with a whole record parsed, its old fd reports
/// ECONNABORTED.
fn refusals(env: &Env, log: &mut Log) -> TestResult {
    let _t = Topology::up()?;
    let nl = loaded(env, log)?;
    let cluster = Cluster::new(false)?;
    let fe_nl = cluster.nl("fe");
    let hop = |s: TcpStream| -> Result<TcpStream, String> {
        let state = fe_nl
            .export_detach(s.as_fd())
            .map_err(|e| format!("export: {e}"))?;
        drop(s);
        let (s, _) = fe_nl
            .import_stream(&state, &ImportOptions::default())
            .map_err(|e| format!("import: {e}"))?;
        s.set_read_timeout(Some(TIMEOUT)).map_err(io("timeout"))?;
        Ok(s)
    };

    let (_c0, bare) = connect_via_topology(false, PORT + 70, None)?;
    ktls::attach_ulp(bare.as_fd()).map_err(io("ULP"))?;
    expect_refusal(
        fe_nl.export_snapshot(bare.as_fd()),
        libc::EOPNOTSUPP,
        "neither TLS_TX nor TLS_RX",
        log,
    )?;

    let pair = Pair::new(TLS_1_2, CIPHERS[0]);
    let (mut client, mut fe) = keyed(false, PORT + 71, &pair)?;
    // The TCP_REPAIR backend cannot read kTLS state: it refuses, and the socket goes on.
    let r = prism_sock::repair::export_detach(&fe);
    log.line(format!("repair backend: {:?}", r.as_ref().err()));
    check!(
        r.as_ref()
            .is_err_and(|e| e.to_string().contains("upper-layer protocol")),
        "the TCP_REPAIR backend took a kTLS socket"
    );
    // Partly read: 600 bytes of the record wait decrypted.
    send_record(&mut client, 8, 0, 1000)?;
    expect(&mut fe, 8, 0, 400)?;
    let d = fe_nl
        .export_snapshot(fe.as_fd())
        .and_then(|s| s.decode())
        .map_err(|e| format!("snapshot: {e}"))?;
    let carried = d.tls.as_ref().map(|t| t.rx_decrypted);
    check!(carried == Some(600), "decrypted bytes in the blob: {carried:?}");
    let mut fe = hop(fe)?;
    expect(&mut fe, 8, 400, 600)?;
    // Peeked at: the whole record waits decrypted.
    send_record(&mut client, 8, 1000, 700)?;
    let mut peek = [0u8; 300];
    // SAFETY: a valid buffer on our own socket.
    let n = unsafe {
        libc::recv(
            std::os::fd::AsRawFd::as_raw_fd(&fe),
            peek.as_mut_ptr().cast(),
            peek.len(),
            libc::MSG_PEEK,
        )
    };
    check!(n == 300, "MSG_PEEK: {n}");
    let mut fe = hop(fe)?;
    expect(&mut fe, 8, 1000, 700)?;

    // SAFETY: a valid buffer on our own socket.
    let n = unsafe {
        libc::send(
            std::os::fd::AsRawFd::as_raw_fd(&fe),
            pattern_at(9, 0, 100).as_ptr().cast(),
            100,
            libc::MSG_MORE,
        )
    };
    check!(n == 100, "send with MSG_MORE: {n}");
    expect_refusal(
        fe_nl.export_detach(fe.as_fd()),
        libc::EAGAIN,
        "being built or sent",
        log,
    )?;
    send_record(&mut fe, 9, 100, 100)?;
    expect(&mut client, 9, 0, 200)?;

    // An alert read without a control buffer fails the read and waits decrypted.
    ktls::send_typed(client.as_fd(), 21, &[1, 0]).map_err(io("send an alert"))?;
    let mut buf = [0u8; 64];
    let r = fe.read(&mut buf);
    check!(
        r.as_ref().err().and_then(|e| e.raw_os_error()) == Some(libc::EIO),
        "a plain read of an alert: {r:?}"
    );
    expect_refusal(
        fe_nl.export_detach(fe.as_fd()),
        libc::EAGAIN,
        "control record",
        log,
    )?;
    let (kind, n) = ktls::recv_typed(fe.as_fd(), &mut buf).map_err(io("read the alert"))?;
    check!(
        kind == 21 && buf[..n] == [1, 0],
        "alert read as type {kind}: {:?}",
        &buf[..n]
    );

    let mut again = hop(fe)?;
    send_record(&mut client, 8, 1700, 500)?;
    expect(&mut again, 8, 1700, 500)?;
    send_record(&mut again, 9, 200, 500)?;
    expect(&mut client, 9, 200, 500)?;

    // A detached TLS socket whose parser holds a whole record from the receive queue:
    // its old fd reports the detach (the parser let go of the queue TCP dropped), and
    // the record reaches the new owner.
    send_record(&mut client, 8, 2200, 800)?;
    super::export::wait_for("the record queued", || {
        crate::sockopt::queued(again.as_fd(), false) > 800
    })?;
    let state = fe_nl
        .export_detach(again.as_fd())
        .map_err(|e| format!("export with a record ready: {e}"))?;
    let mut buf = [0u8; 800];
    let old = again.read(&mut buf);
    log.line(format!("the detached TLS socket's read: {old:?}"));
    check!(
        old.as_ref().err().and_then(|e| e.raw_os_error()) == Some(libc::ECONNABORTED),
        "the detached TLS socket read {old:?}"
    );
    drop(again);
    let (mut last, _) = fe_nl
        .import_stream(&state, &ImportOptions::default())
        .map_err(|e| format!("import: {e}"))?;
    last.set_read_timeout(Some(TIMEOUT)).map_err(io("timeout"))?;
    expect(&mut last, 8, 2200, 800)?;
    send_record(&mut last, 9, 700, 100)?;
    expect(&mut client, 9, 700, 100)?;
    drop(nl);
    Ok(())
}

/// Import refuses kTLS attributes that cannot be right, before anything is built:
/// an unknown cipher, an unknown version, a key of the wrong size, a direction with
/// a field missing.
fn malformed(env: &Env, log: &mut Log) -> TestResult {
    let _t = Topology::up()?;
    let _c = loaded(env, log)?;
    let cluster = Cluster::new(false)?;
    let pair = Pair::new(TLS_1_3, CIPHERS[1]);
    let (client, fe) = keyed(false, PORT + 80, &pair)?;
    let port = client.local_addr().map_err(|e| e.to_string())?.port();
    let state = cluster
        .nl("fe")
        .export_snapshot(fe.as_fd())
        .map_err(|e| format!("export: {e}"))?;
    secrets_hidden(env, log, &state)?;
    let be1 = cluster.nl("be1");
    let import = |s: &MigrationState| be1.import(s, &ImportOptions::default());
    expect_refusal(
        import(&with_attr(&state, StateAttr::TlsCipher, |p| {
            p.copy_from_slice(&99u16.to_ne_bytes())
        })),
        libc::EOPNOTSUPP,
        "tls-cipher",
        log,
    )?;
    expect_refusal(
        import(&with_attr(&state, StateAttr::TlsVersion, |p| {
            p.copy_from_slice(&0x0302u16.to_ne_bytes())
        })),
        libc::EINVAL,
        "tls-version",
        log,
    )?;
    expect_refusal(
        import(&with_attr(&state, StateAttr::TlsRxKey, |p| p.truncate(16))),
        libc::EINVAL,
        "cipher's size",
        log,
    )?;
    let k = u16::from(StateAttr::TlsTxIv);
    let attrs: Vec<_> = parse(state.as_bytes())
        .into_iter()
        .filter(|(t, _)| *t != k)
        .collect();
    expect_refusal(
        import(&MigrationState::from_bytes(encode(&attrs))),
        libc::EINVAL,
        "missing attribute: tls-tx-iv",
        log,
    )?;
    // Decrypted records: an empty one, more than max-queue-bytes of them, one longer
    // than a record, and any for a connection without kTLS receive keys.
    let decrypted = u16::from(StateAttr::TlsRxDecrypted);
    let with_records = |base: &MigrationState, records: &[Vec<u8>]| {
        let mut attrs = parse(base.as_bytes());
        attrs.extend(records.iter().map(|r| (decrypted, r.clone())));
        MigrationState::from_bytes(encode(&attrs))
    };
    expect_refusal(
        import(&with_records(&state, &[vec![]])),
        libc::EINVAL,
        "empty queue chunk",
        log,
    )?;
    expect_refusal(
        import(&with_records(&state, &vec![vec![0x5a; 16 << 10]; 65])),
        libc::E2BIG,
        "max-queue-bytes",
        log,
    )?;
    // The attribute policy's length bound (16 KiB) answers for the kernel.
    expect_refusal(
        import(&with_records(&state, &[vec![0x5a; (16 << 10) + 1]])),
        libc::ERANGE,
        "failed policy validation",
        log,
    )?;
    let (_c, plain) = connect_via_topology(false, PORT + 81, None)?;
    let plain = cluster
        .nl("fe")
        .export_snapshot(plain.as_fd())
        .map_err(|e| format!("export of a plain socket: {e}"))?;
    expect_refusal(
        import(&with_records(&plain, &[vec![1; 100]])),
        libc::EINVAL,
        "without kTLS receive keys",
        log,
    )?;
    check!(
        crate::migrate::flow_sockets("be1", port)?.is_empty(),
        "a refused import left a socket on be1"
    );
    Ok(())
}

/// `prismctl decode` shows the kTLS version, cipher and record sequences but not the
/// keys, IVs and salts; `--show-secrets` shows them.
fn secrets_hidden(env: &Env, log: &mut Log, state: &MigrationState) -> TestResult {
    let bin = env.repo()?.join("target/release/prismctl");
    let file = std::env::temp_dir().join(format!("tls-blob-{}.bin", std::process::id()));
    std::fs::write(&file, state.as_bytes()).map_err(io("write the blob"))?;
    let mut decode = |extra: &[&str]| -> Result<serde_json::Value, String> {
        let mut args = vec!["decode", file.to_str().unwrap_or_default()];
        args.extend(extra);
        let out = sh(log, &bin.to_string_lossy(), &args)?;
        serde_json::from_str(out.trim()).map_err(|e| format!("prismctl output: {e}: {out}"))
    };
    let plain = decode(&[])?;
    let shown = decode(&["--show-secrets"])?;
    let _ = std::fs::remove_file(&file);
    let d = state.decode().map_err(|e| e.to_string())?;
    let tls = d.tls.ok_or("no kTLS state")?;
    let key: String = tls.secrets.tx_key.iter().map(|b| format!("{b:02x}")).collect();
    check!(
        plain["tls"]["cipher"] == tls.cipher && plain["tls"]["tx_rec_seq"] == tls.tx_rec_seq.unwrap_or(0),
        "prismctl decode: {plain}"
    );
    check!(
        !plain.to_string().contains(&key) && plain["tls"].get("secrets").is_none(),
        "prismctl decode printed key material: {plain}"
    );
    check!(
        shown["tls"]["secrets"]["tx_key"] == key.as_str(),
        "prismctl decode --show-secrets: {shown}"
    );
    Ok(())
}

/// The client of `python_client`: Python's `ssl` (OpenSSL) with the test CA, one TLS
/// connection, `n` requests "i len" each answered by `len` bytes it checks; it knows
/// nothing of the moves. Prints "OK <requests> <bytes> <version> <cipher>".
const PY_CLIENT: &str = r#"
import socket, ssl, sys
host, port, ca, n, ver = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.load_verify_locations(ca)
v = ssl.TLSVersion.TLSv1_2 if ver == "1.2" else ssl.TLSVersion.TLSv1_3
ctx.minimum_version = v
ctx.maximum_version = v
s = ctx.wrap_socket(socket.create_connection((host, port)), server_hostname="prism.test")
pat = bytes(range(251)) * 100
total = 0
for i in range(n):
    ln = 1 + (i * 7919) % 20000
    s.sendall(("%d %d\n" % (i, ln)).encode())
    got = bytearray()
    while len(got) < ln:
        chunk = s.recv(ln - len(got))
        if not chunk:
            sys.exit("EOF after %d of %d bytes of response %d" % (len(got), ln, i))
        got += chunk
    off = (i * 31) % 251
    if bytes(got) != pat[off:off + ln]:
        sys.exit("response %d differs" % i)
    total += ln
print("OK", n, total, s.version(), s.cipher()[0])
"#;

/// The answer to request `i` of `len` bytes, as `PY_CLIENT` expects it.
fn py_answer(i: u64, len: usize) -> Vec<u8> {
    let off = (i * 31 % 251) as usize;
    (0..len).map(|k| ((off + k) % 251) as u8).collect()
}

/// A server configuration for one TLS version and cipher suite, with the certificate
/// and key the demo's `prism-node tls-cert` wrote to `dir`.
fn server_config(
    version: &'static rustls::SupportedProtocolVersion,
    suite: rustls::SupportedCipherSuite,
    dir: &std::path::Path,
) -> Result<std::sync::Arc<rustls::ServerConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let cert = CertificateDer::from_pem_file(dir.join("cert.pem")).map_err(|e| format!("cert.pem: {e}"))?;
    let key = PrivateKeyDer::from_pem_file(dir.join("key.pem")).map_err(|e| format!("key.pem: {e}"))?;
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites = vec![suite];
    let mut config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(provider))
        .with_protocol_versions(&[version])
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .map_err(|e| e.to_string())?;
    config.enable_secret_extraction = true;
    Ok(std::sync::Arc::new(config))
}

/// A rustls handshake (userlib `tls::accept`) switches the connection to kTLS; then a
/// Python `ssl` client sends requests on it and checks every answer while the
/// connection moves after each request: within the owner's namespace, and every 250th
/// time to the next host. TLS 1.3 with AES-256-GCM (1,000 hops), TLS 1.2 with
/// AES-128-GCM (300), and ChaCha20-Poly1305 when the kernel offers it (300).
fn python_client(env: &Env, log: &mut Log) -> TestResult {
    use rustls::crypto::ring::cipher_suite as cs;
    let _t = Topology::up()?;
    let _c = loaded(env, log)?;
    let mut cluster = Cluster::new(false)?;
    let rst_before = rsts_all()?;
    let mut runs = vec![
        (
            &rustls::version::TLS13,
            cs::TLS13_AES_256_GCM_SHA384,
            "1.3",
            1000u64,
        ),
        (
            &rustls::version::TLS12,
            cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            "1.2",
            300,
        ),
    ];
    if let Some(e) = offered(false, PORT + 90, TLS_1_3, CIPHERS[3])? {
        return Err(format!("ChaCha20-Poly1305 is not offered by this kernel: {e}"));
    }
    runs.push((
        &rustls::version::TLS13,
        cs::TLS13_CHACHA20_POLY1305_SHA256,
        "1.3",
        300,
    ));
    let certs = std::env::temp_dir().join(format!("prism-tls-certs-{}", std::process::id()));
    prism_tools::node::tls::make_certificate(&certs, &["prism.test".to_string()])?;
    let ca = certs.join("ca.pem");
    for (run, (version, suite, ver, hops)) in runs.into_iter().enumerate() {
        let config = server_config(version, suite, &certs)?;
        let port = PORT + 91 + run as u16;
        let vip = std::net::SocketAddr::new(crate::topology::vip(false), port);
        let listener =
            crate::topology::in_ns("fe", move || std::net::TcpListener::bind(vip))?.map_err(io("listen"))?;
        let script = std::env::temp_dir().join(format!("prism-tls-client-{}.py", std::process::id()));
        std::fs::write(&script, PY_CLIENT).map_err(io("write the client"))?;
        let child = std::process::Command::new("ip")
            .args(["netns", "exec", "client", "python3"])
            .arg(&script)
            .args([vip.ip().to_string(), port.to_string()])
            .arg(&ca)
            .args([hops.to_string(), ver.to_string()])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(io("python3"))?;
        let mut child = child;
        let tcp = accept_from(&listener, &mut child)?;
        tcp.set_read_timeout(Some(TIMEOUT)).map_err(io("timeout"))?;
        let accepted = prism_sock::tls::accept(tcp, config).map_err(|e| format!("handshake: {e}"))?;
        check!(accepted.early.is_empty(), "early data {:?}", accepted.early);
        let mut owner = accepted.stream;
        owner.set_read_timeout(Some(TIMEOUT)).map_err(io("timeout"))?;
        let route = ["fe", "be1", "be2"];
        let mut at = 0usize;
        let mut bytes = 0usize;
        for i in 0..hops {
            let mut line = Vec::new();
            let mut byte = [0u8; 256];
            while !line.ends_with(b"\n") {
                let n = owner.read(&mut byte).map_err(io("read a request"))?;
                check!(n > 0, "the client closed at request {i}");
                line.extend_from_slice(&byte[..n]);
            }
            let text = String::from_utf8_lossy(&line);
            let mut words = text.split_whitespace();
            let (idx, len): (u64, usize) = match (words.next(), words.next()) {
                (Some(a), Some(b)) => (
                    a.parse().map_err(|_| format!("request {text:?}"))?,
                    b.parse().map_err(|_| format!("request {text:?}"))?,
                ),
                _ => return Err(format!("request {text:?}")),
            };
            check!(idx == i, "request {idx} arrived as number {i}");
            owner.write_all(&py_answer(i, len)).map_err(io("answer"))?;
            bytes += len;
            if i % 250 == 125 {
                let (from, to) = (route[at], route[(at + 1) % 3]);
                owner = cluster.hop(log, owner, from, to, &[])?.0;
                at = (at + 1) % 3;
            } else {
                let nl = cluster.nl(route[at]);
                let state = nl
                    .export_detach(owner.as_fd())
                    .map_err(|e| format!("export {i}: {e}"))?;
                drop(owner);
                owner = nl
                    .import_stream(&state, &ImportOptions::default())
                    .map_err(|e| format!("import {i}: {e}"))?
                    .0;
            }
            owner.set_read_timeout(Some(TIMEOUT)).map_err(io("timeout"))?;
        }
        let out = child.wait_with_output().map_err(io("python3"))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        log.line(format!(
            "TLS {ver} {:?}: {hops} hops, {bytes} bytes answered; client: {} {}",
            suite.suite(),
            stdout.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
        check!(
            out.status.success() && stdout.starts_with(&format!("OK {hops} {bytes}")),
            "the Python client failed: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let _ = std::fs::remove_file(&script);
    }
    let _ = std::fs::remove_dir_all(&certs);
    no_rst_since(&rst_before)?;
    Ok(())
}

/// The connection of `client` (a child process) on `listener`; if the child exits
/// first, or after 60 s, an error with what it printed.
fn accept_from(
    listener: &std::net::TcpListener,
    client: &mut std::process::Child,
) -> Result<TcpStream, String> {
    listener.set_nonblocking(true).map_err(io("nonblocking"))?;
    let start = std::time::Instant::now();
    loop {
        match listener.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).map_err(io("blocking"))?;
                return Ok(s);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(format!("accept: {e}")),
        }
        let exited = client.try_wait().map_err(io("client"))?.is_some();
        if exited || start.elapsed() > Duration::from_secs(60) {
            let _ = client.kill();
            let mut out = String::new();
            if let Some(mut e) = client.stderr.take() {
                let _ = e.read_to_string(&mut out);
            }
            return Err(format!("the client never connected: {out}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether kTLS is a loadable module here: `modinfo` names a tls.ko file (for a
/// built-in it prints "(builtin)", and without a module tree it fails).
fn tls_is_modular() -> bool {
    std::process::Command::new("modinfo")
        .args(["-F", "filename", "tls"])
        .output()
        .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains(".ko"))
}

/// Whether the tls module is loaded.
fn tls_loaded() -> Result<bool, String> {
    let text = std::fs::read_to_string("/proc/modules").map_err(io("/proc/modules"))?;
    Ok(text.lines().any(|l| l.split_whitespace().next() == Some("tls")))
}

/// Unloads tls; the last kTLS socket's destruction may come a moment after its close.
fn unload_tls(log: &mut Log) -> TestResult {
    for _ in 0..100 {
        if !tls_loaded()? {
            return Ok(());
        }
        if sh(log, "rmmod", &["tls"]).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err("tls stays loaded: a kTLS socket is still open".into())
}

/// `/proc/sys/kernel/modprobe` as it was, written back when dropped.
struct ModprobePath(String);

impl ModprobePath {
    const FILE: &'static str = "/proc/sys/kernel/modprobe";

    fn save() -> Result<Self, String> {
        Ok(Self(std::fs::read_to_string(Self::FILE).map_err(io(Self::FILE))?))
    }

    fn set(&self, path: &str) -> TestResult {
        std::fs::write(Self::FILE, path).map_err(io(Self::FILE))
    }
}

impl Drop for ModprobePath {
    fn drop(&mut self) {
        let _ = std::fs::write(Self::FILE, self.0.trim_end());
    }
}

/// A TLS socket's blob imported on a host whose tls module is not loaded: with module
/// loading broken (modprobe path gone) the import is refused with ENOENT and a message
/// and leaves no socket behind; with it working the same blob imports, the import loads
/// tls on demand, and the connection carries records both ways.
fn module_on_demand(env: &Env, log: &mut Log) -> TestResult {
    let _t = Topology::up()?;
    let _c = loaded(env, log)?;
    check!(
        tls_is_modular(),
        "tls is built into this kernel: this test needs it as a module (make stock-kernel-test)"
    );
    let cluster = Cluster::new(false)?;
    let nl = cluster.nl("fe");
    let modprobe = ModprobePath::save()?;
    let pair = Pair::new(TLS_1_3, CIPHERS[0]);
    // The client stays plain TCP until the move: its kTLS would hold the module.
    let (mut client, fe) = connect_via_topology(false, PORT + 100, None)?;
    client.set_read_timeout(Some(TIMEOUT)).map_err(io("timeout"))?;
    pair.server(fe.as_fd()).map_err(io("kTLS on fe"))?;
    let state = nl.export_detach(fe.as_fd()).map_err(|e| format!("export: {e}"))?;
    drop(fe);
    unload_tls(log)?;
    let port = client.local_addr().map_err(|e| e.to_string())?.port();

    modprobe.set("/nonexistent/modprobe")?;
    expect_refusal(
        nl.import_stream(&state, &ImportOptions::default()).map(|r| r.0),
        libc::ENOENT,
        "kTLS is not available on this host",
        log,
    )?;
    check!(!tls_loaded()?, "tls was loaded with modprobe gone");
    let left = crate::migrate::flow_sockets("fe", port)?;
    check!(left.is_empty(), "the refused import left sockets: {left:?}");

    modprobe.set(modprobe.0.trim_end())?;
    let (mut moved, _) = nl
        .import_stream(&state, &ImportOptions::default())
        .map_err(|e| format!("import with modprobe back: {e}"))?;
    moved.set_read_timeout(Some(TIMEOUT)).map_err(io("timeout"))?;
    check!(tls_loaded()?, "the import did not load tls");
    pair.client(client.as_fd()).map_err(io("kTLS on the client"))?;
    send_record(&mut moved, 11, 0, 3000)?;
    expect(&mut client, 11, 0, 3000)?;
    send_record(&mut client, 12, 0, 3000)?;
    expect(&mut moved, 12, 0, 3000)?;
    log.line("refused without modprobe; loaded on demand, records both ways after");
    Ok(())
}
