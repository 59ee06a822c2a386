//! Which local socket holds a connection's 4-tuple, read from /proc/net/tcp{,6}: an
//! import whose connect finds the tuple taken fails, and the log should say by what
//! (a socket in TIME_WAIT or LAST_ACK from an earlier connection of the same client
//! port, or one a process still owns).

use std::net::{IpAddr, SocketAddr};

/// TCP states as /proc/net/tcp numbers them (include/net/tcp_states.h).
const STATES: [&str; 12] = [
    "?",
    "ESTABLISHED",
    "SYN_SENT",
    "SYN_RECV",
    "FIN_WAIT1",
    "FIN_WAIT2",
    "TIME_WAIT",
    "CLOSE",
    "CLOSE_WAIT",
    "LAST_ACK",
    "LISTEN",
    "CLOSING",
];

/// `local` and `peer` as /proc/net/tcp writes them: each 32-bit word of the address
/// as the CPU reads it, in hex, and the port in hex.
fn hex(a: SocketAddr) -> String {
    let words: Vec<u32> = match a.ip() {
        IpAddr::V4(v4) => vec![u32::from_ne_bytes(v4.octets())],
        IpAddr::V6(v6) => v6
            .octets()
            .chunks_exact(4)
            .map(|c| u32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    };
    let addr: String = words.iter().map(|w| format!("{w:08X}")).collect();
    format!("{addr}:{:04X}", a.port())
}

/// The holder of `local`-`peer` found in `table` (the text of /proc/net/tcp or
/// tcp6): its state and the inode of its socket (0: no process owns it).
fn find(table: &str, local: SocketAddr, peer: SocketAddr) -> Option<(String, u64)> {
    let (l, p) = (hex(local), hex(peer));
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.get(1) != Some(&l.as_str()) || f.get(2) != Some(&p.as_str()) {
            return None;
        }
        let state = usize::from_str_radix(f.get(3)?, 16).ok()?;
        let inode = f.get(9)?.parse().ok()?;
        Some((STATES.get(state).unwrap_or(&"?").to_string(), inode))
    })
}

/// "; held here by a socket in STATE ..." when a local socket has the tuple, else "".
pub fn describe(local: SocketAddr, peer: SocketAddr) -> String {
    let file = if local.is_ipv4() {
        "/proc/net/tcp"
    } else {
        "/proc/net/tcp6"
    };
    let Ok(table) = std::fs::read_to_string(file) else {
        return String::new();
    };
    match find(&table, local, peer) {
        Some((state, 0)) => format!("; the tuple is held here by a socket in {state} that no process owns"),
        Some((state, inode)) => format!("; the tuple is held here by socket inode {inode} in {state}"),
        None => "; no socket here holds the tuple now".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_holder_of_a_tuple() {
        let local: SocketAddr = "10.100.0.1:80".parse().unwrap();
        let peer: SocketAddr = "10.0.0.2:38530".parse().unwrap();
        let table = format!(
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
             \x20  0: 00000000:1BBC 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1234 1 0\n\
             \x20  1: {} {} 09 00000001:00000000 01:00000032 00000002     0        0 0 1 0\n",
            hex(local),
            hex(peer)
        );
        assert_eq!(find(&table, local, peer), Some(("LAST_ACK".into(), 0)));
        let other: SocketAddr = "10.0.0.2:38531".parse().unwrap();
        assert_eq!(find(&table, local, other), None);
        // 10.100.0.1 is 0A 64 00 01 in memory.
        if cfg!(target_endian = "little") {
            assert_eq!(hex(local), "0100640A:0050");
        }
        let v6: SocketAddr = "[fd00:100::1]:80".parse().unwrap();
        assert_eq!(hex(v6).len(), 32 + 5);
    }
}
