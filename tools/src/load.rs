//! prism-load: keep-alive HTTP clients that fetch catalogue objects through the VIP
//! and check every body against the digest its key implies.

use crate::cluster::Objects;
use crate::objects;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The outcome of a run.
#[derive(Debug, Default, Serialize)]
pub struct Summary {
    /// Responses read completely.
    pub requests: u64,
    /// 200 responses whose body matched.
    pub ok: u64,
    /// Requests that did not end in a matching 200 (non-200, I/O error, mismatch).
    pub failed: u64,
    /// 200 responses whose body did not match the key's digest.
    pub digest_mismatches: u64,
    /// Connections reset by the peer.
    pub resets: u64,
    /// Other I/O errors.
    pub io_errors: u64,
    /// Connections opened.
    pub connections: u64,
    /// Responses by status.
    pub statuses: BTreeMap<u16, u64>,
    /// Responses by `X-Served-By`.
    pub served_by: BTreeMap<String, u64>,
    /// Body bytes received.
    pub body_bytes: u64,
    /// Median request latency, ms.
    pub p50_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
}

struct Worker {
    summary: Summary,
    latencies: Vec<Duration>,
}

enum Outcome {
    Done {
        status: u16,
        served_by: String,
        body: Vec<u8>,
    },
    Closed,
}

async fn fetch(stream: &mut TcpStream, buf: &mut Vec<u8>, key: &str) -> std::io::Result<Outcome> {
    let req = format!("GET /objects/{key} HTTP/1.1\r\nHost: prism\r\nUser-Agent: prism-load\r\n\r\n");
    stream.write_all(req.as_bytes()).await?;
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        if let httparse::Status::Complete(head) = resp
            .parse(buf)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?
        {
            let value = |name: &str| {
                resp.headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case(name))
                    .map(|h| String::from_utf8_lossy(h.value).into_owned())
            };
            let len: usize = value("content-length")
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            let status = resp.code.unwrap_or(0);
            let served_by = value("x-served-by").unwrap_or_default();
            while buf.len() < head + len {
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    return Ok(Outcome::Closed);
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let body = buf[head..head + len].to_vec();
            buf.drain(..head + len);
            return Ok(Outcome::Done {
                status,
                served_by,
                body,
            });
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(Outcome::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn worker(target: SocketAddr, keys: Arc<Vec<(String, String)>>, until: Instant, seed: u64) -> Worker {
    let mut w = Worker {
        summary: Summary::default(),
        latencies: Vec::new(),
    };
    let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut conn: Option<(TcpStream, Vec<u8>)> = None;
    while Instant::now() < until {
        if conn.is_none() {
            match tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(target)).await {
                Ok(Ok(s)) => {
                    w.summary.connections += 1;
                    conn = Some((s, Vec::new()));
                }
                _ => {
                    w.summary.io_errors += 1;
                    w.summary.failed += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            }
        }
        let (stream, buf) = conn.as_mut().expect("connected above");
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let (key, digest) = &keys[(rng % keys.len() as u64) as usize];
        let t = Instant::now();
        let outcome = tokio::time::timeout(Duration::from_secs(30), fetch(stream, buf, key)).await;
        match outcome {
            Ok(Ok(Outcome::Done {
                status,
                served_by,
                body,
            })) => {
                w.latencies.push(t.elapsed());
                let s = &mut w.summary;
                s.requests += 1;
                *s.statuses.entry(status).or_default() += 1;
                *s.served_by.entry(served_by).or_default() += 1;
                s.body_bytes += body.len() as u64;
                if status != 200 {
                    s.failed += 1;
                } else if objects::digest(&body) != *digest {
                    s.digest_mismatches += 1;
                    s.failed += 1;
                } else {
                    s.ok += 1;
                }
            }
            Ok(Ok(Outcome::Closed)) => {
                w.summary.io_errors += 1;
                w.summary.failed += 1;
                conn = None;
            }
            Ok(Err(e)) => {
                if e.kind() == std::io::ErrorKind::ConnectionReset {
                    w.summary.resets += 1;
                } else {
                    w.summary.io_errors += 1;
                }
                w.summary.failed += 1;
                conn = None;
            }
            Err(_) => {
                w.summary.io_errors += 1;
                w.summary.failed += 1;
                conn = None;
            }
        }
    }
    w
}

/// Runs `connections` clients against `target` for `duration`, each fetching random
/// catalogue objects over one keep-alive connection (a new one after an error).
pub async fn run(target: SocketAddr, catalog: &Objects, connections: usize, duration: Duration) -> Summary {
    let mut keys: Vec<(String, String)> = digests(catalog).into_iter().collect();
    keys.sort();
    let keys = Arc::new(keys);
    let until = Instant::now() + duration;
    let tasks: Vec<_> = (0..connections)
        .map(|i| tokio::spawn(worker(target, keys.clone(), until, i as u64 + 1)))
        .collect();
    let mut total = Summary::default();
    let mut latencies = Vec::new();
    for t in tasks {
        let Ok(w) = t.await else { continue };
        let s = w.summary;
        total.requests += s.requests;
        total.ok += s.ok;
        total.failed += s.failed;
        total.digest_mismatches += s.digest_mismatches;
        total.resets += s.resets;
        total.io_errors += s.io_errors;
        total.connections += s.connections;
        total.body_bytes += s.body_bytes;
        merge(&mut total.statuses, s.statuses);
        merge(&mut total.served_by, s.served_by);
        latencies.extend(w.latencies);
    }
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    total.p50_ms = pct(0.5);
    total.p99_ms = pct(0.99);
    total
}

fn merge<K: Ord>(into: &mut BTreeMap<K, u64>, from: BTreeMap<K, u64>) {
    for (k, v) in from {
        *into.entry(k).or_default() += v;
    }
}

/// Expected digest of every catalogue key.
pub fn digests(catalog: &Objects) -> HashMap<String, String> {
    (0..catalog.count)
        .map(|i| {
            let key = objects::key(i);
            let digest = objects::expected_digest(catalog, &key).expect("catalogue key");
            (key, digest)
        })
        .collect()
}
