//! The object store's processes on a fresh topology: prism-steerd in l4 and a
//! prism-node on fe, be1 and be2, started from qemu-test/cluster.json with a fresh
//! secret; used by the dsr tests and the benchmarks.

use crate::check;
use crate::harness::{sh, Env, Log, TestResult};
use crate::suites::common::loaded;
use crate::topology::{in_ns, Topology};
use prism_tools::cluster::Cluster;
use prism_tools::steer_proto;
use prism_tools::{objects, ring::Ring};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const NODES: [&str; 3] = ["fe", "be1", "be2"];

/// How the nodes move sockets.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The module, loaded.
    Module,
    /// TCP_REPAIR, with the module unloaded.
    Repair,
}

/// How to start a [`Stack`].
#[derive(Clone, Copy)]
pub struct Setup<'a> {
    /// `(node, fault)` pairs passed as `--fault`.
    pub faults: &'a [(&'a str, &'a str)],
    pub backend: Backend,
    /// The catalogue `(count, sizes)` instead of qemu-test/cluster.json's.
    pub objects: Option<(u32, &'a [usize])>,
    /// Run the front node's prism-node on this CPU alone.
    pub front_cpu: Option<u32>,
}

impl Default for Setup<'_> {
    fn default() -> Self {
        Self {
            faults: &[],
            backend: Backend::Module,
            objects: None,
            front_cpu: None,
        }
    }
}

/// prism-steerd and three prism-nodes on a fresh topology; killed on drop.
pub struct Stack {
    _topology: Topology,
    pub dir: PathBuf,
    pub bin: PathBuf,
    pub config: PathBuf,
    pub cluster: Cluster,
    ring: Ring,
    steerd: Option<Child>,
    nodes: Vec<(String, Child)>,
    backend: Backend,
    front_cpu: Option<u32>,
}

impl Stack {
    pub fn up(env: &Env, log: &mut Log, faults: &[(&str, &str)]) -> Result<Self, String> {
        Self::up_with(env, log, faults, Backend::Module)
    }

    pub fn up_with(
        env: &Env,
        log: &mut Log,
        faults: &[(&str, &str)],
        backend: Backend,
    ) -> Result<Self, String> {
        Self::start(
            env,
            log,
            &Setup {
                faults,
                backend,
                ..Setup::default()
            },
        )
    }

    pub fn start(env: &Env, log: &mut Log, setup: &Setup) -> Result<Self, String> {
        let Setup {
            faults,
            backend,
            objects,
            front_cpu,
        } = *setup;
        match backend {
            Backend::Module if crate::module::is_loaded() => {}
            Backend::Module => drop(loaded(env, log)?),
            Backend::Repair => crate::module::unload_if_loaded()?,
        }
        let topology = Topology::up()?;
        let repo = env.repo()?;
        let dir = std::env::temp_dir().join(format!("prism-dsr-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let secret = hex(&steer_proto::new_nonce().map_err(|e| e.to_string())?);
        let template =
            std::fs::read_to_string(repo.join("qemu-test/cluster.json")).map_err(|e| e.to_string())?;
        let config = dir.join("cluster.json");
        let mut text = template.replace("@SECRET@", &secret);
        if let Some((count, sizes)) = objects {
            let mut v: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
            v["objects"] = serde_json::json!({ "count": count, "sizes": sizes });
            text = v.to_string();
        }
        std::fs::write(&config, text).map_err(|e| e.to_string())?;
        let cluster = Cluster::load(&config)?;
        // A demo CA and a certificate for the VIP: the nodes serve HTTPS too.
        let names = [
            "prism.test".to_string(),
            cluster.vip4.to_string(),
            cluster.vip6.to_string(),
        ];
        prism_tools::node::tls::make_certificate(&dir.join("tls"), &names)?;
        let mut stack = Stack {
            _topology: topology,
            dir,
            bin: repo.join("target/release"),
            config,
            ring: cluster.ring(),
            cluster,
            steerd: None,
            nodes: Vec::new(),
            backend,
            front_cpu,
        };
        // Point the VIP elsewhere: prism-steerd must route new flows to the front node
        // (fe) itself; the owner-death tests need fe to be the one handing off.
        Topology::route_vip(log, "be2")?;
        stack.start_steerd()?;
        for node in NODES {
            let fault = faults.iter().find(|(n, _)| *n == node).map(|(_, f)| *f);
            stack.start_node(node, fault)?;
        }
        stack.wait_ready(log)?;
        Ok(stack)
    }

    pub fn spawn(&self, ns: &str, prog: &str, args: &[&str], log_name: &str) -> Result<Child, String> {
        self.spawn_on(ns, None, &self.bin.join(prog), args, log_name)
    }

    /// Starts `prog` in `ns`, on CPU `cpu` alone if given, stderr to `log_name`.
    pub fn spawn_on(
        &self,
        ns: &str,
        cpu: Option<u32>,
        prog: &std::path::Path,
        args: &[&str],
        log_name: &str,
    ) -> Result<Child, String> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(log_name))
            .map_err(|e| e.to_string())?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns]);
        if let Some(cpu) = cpu {
            cmd.args(["taskset", "-c", &cpu.to_string()]);
        }
        cmd.arg(prog)
            .args(args)
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .map_err(|e| format!("{}: {e}", prog.display()))
    }

    pub fn start_steerd(&mut self) -> Result<(), String> {
        let config = self.config.to_string_lossy().into_owned();
        self.steerd = Some(self.spawn("l4", "prism-steerd", &["--config", &config], "steerd.log")?);
        wait("prism-steerd to listen", Duration::from_secs(10), || {
            listening("l4", ":7000 ")
        })
    }

    pub fn start_node(&mut self, name: &str, fault: Option<&str>) -> Result<(), String> {
        let config = self.config.to_string_lossy().into_owned();
        let backend = match self.backend {
            Backend::Module => "module",
            Backend::Repair => "repair",
        };
        let cert = self.dir.join("tls/cert.pem").to_string_lossy().into_owned();
        let key = self.dir.join("tls/key.pem").to_string_lossy().into_owned();
        let mut args = vec![
            "run",
            "--config",
            &config,
            "--name",
            name,
            "--backend",
            backend,
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
        ];
        if let Some(f) = fault {
            args.extend(["--fault", f]);
        }
        let cpu = self.front_cpu.filter(|_| name == self.cluster.front().name);
        let child = self.spawn_on(
            name,
            cpu,
            &self.bin.join("prism-node"),
            &args,
            &format!("node-{name}.log"),
        )?;
        self.nodes.push((name.to_string(), child));
        Ok(())
    }

    pub fn wait_ready(&self, log: &mut Log) -> TestResult {
        wait("the nodes to listen on the VIP", Duration::from_secs(20), || {
            NODES
                .iter()
                .all(|n| listening(n, "10.100.0.1:80 ") && listening(n, "10.100.0.1:443 "))
        })?;
        wait(
            "three nodes connected to prism-steerd",
            Duration::from_secs(20),
            || established_to("l4", 7000) >= 3,
        )?;
        // Each node opens its hand-off connections at start: the first hand-off to a
        // peer must not wait for one behind that peer's busy accept loop.
        wait(
            "every node's hand-off connections from the two others",
            Duration::from_secs(20),
            || NODES.iter().all(|n| established_to(n, 7100) >= NODES.len() - 1),
        )?;
        let want = match self.backend {
            Backend::Module => "backend Module",
            Backend::Repair => "backend Repair",
        };
        wait(
            &format!("every node to report {want}"),
            Duration::from_secs(10),
            || {
                NODES
                    .iter()
                    .all(|n| self.read_log(&format!("node-{n}.log")).contains(want))
            },
        )?;
        log.line(format!(
            "stack up: prism-steerd in l4, prism-node on fe, be1, be2 ({want})"
        ));
        Ok(())
    }

    /// The demo CA the nodes' certificate is signed by (PEM), for HTTPS clients.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("tls/ca.pem")
    }

    /// `GET path` on `node`'s admin port, the body.
    pub fn admin(&self, node: &str, path: &str) -> Result<String, String> {
        let at = self
            .cluster
            .node(node)
            .ok_or_else(|| format!("no node {node}"))?
            .admin_addr();
        let request = format!("GET {path} HTTP/1.1\r\nHost: admin\r\n\r\n");
        let ns = node.to_string();
        in_ns(&ns, move || -> Result<String, String> {
            let mut s = TcpStream::connect(at).map_err(|e| format!("admin {at}: {e}"))?;
            s.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
            let mut out = String::new();
            s.read_to_string(&mut out).map_err(|e| e.to_string())?;
            let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string());
            body.ok_or_else(|| format!("admin {at}: no body"))
        })?
    }

    pub fn kill_node(&mut self, name: &str) {
        if let Some(i) = self.nodes.iter().position(|(n, _)| n == name) {
            let (_, mut child) = self.nodes.remove(i);
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn kill_steerd(&mut self) {
        if let Some(mut c) = self.steerd.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn read_log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name)).unwrap_or_default()
    }

    /// Every log and every live node's counters, for the test's own log on failure.
    pub fn logs(&self) -> String {
        let mut all = String::new();
        for name in ["steerd.log", "node-fe.log", "node-be1.log", "node-be2.log"] {
            all += &format!("---- {name}\n{}", self.read_log(name));
        }
        for (node, _) in &self.nodes {
            let stats = self.admin(node, "/stats").unwrap_or_else(|e| e);
            all += &format!("---- {node} /stats\n{stats}\n");
        }
        all
    }

    pub fn owner(&self, key: &str) -> String {
        let i = self.ring.owner(key).expect("three nodes");
        self.cluster.nodes[i].name.clone()
    }

    /// First catalogue key owned by `node`.
    pub fn key_of(&self, node: &str) -> String {
        (0..self.cluster.objects.count)
            .map(objects::key)
            .find(|k| self.owner(k) == node)
            .expect("every node owns keys")
    }

    pub fn digest(&self, key: &str) -> String {
        objects::expected_digest(&self.cluster.objects, key).expect("catalogue key")
    }

    /// Steering entries and holds in l4.
    pub fn entries(&self) -> Result<usize, String> {
        let v = steering_table()?;
        Ok(v["nftables"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|o| o.get("map").or_else(|| o.get("set")))
            .map(|s| s.get("elem").and_then(|e| e.as_array()).map_or(0, Vec::len))
            .sum())
    }

    pub fn wait_empty(&self, log: &mut Log) -> TestResult {
        let r = wait(
            "prism-steerd's map and hold set to empty",
            Duration::from_secs(20),
            || self.entries() == Ok(0),
        );
        if r.is_err() {
            let _ = sh(
                log,
                "ip",
                &["netns", "exec", "l4", "nft", "list", "table", "inet", "prism"],
            );
        }
        r
    }

    /// prism-load in the client namespace, its JSON summary on stdout.
    pub fn load_command(&self, target: &str, connections: usize, secs: u32) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", "client"])
            .arg(self.bin.join("prism-load"))
            .arg("--config")
            .arg(&self.config)
            .args(["--target", target])
            .args([
                "--connections",
                &connections.to_string(),
                "--duration",
                &secs.to_string(),
            ]);
        cmd
    }

    pub fn load(
        &self,
        log: &mut Log,
        target: &str,
        connections: usize,
        secs: u32,
    ) -> Result<serde_json::Value, String> {
        let out = self
            .load_command(target, connections, secs)
            .output()
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&out.stdout);
        log.line(format!(
            "prism-load {target} x{connections} {secs}s: {}",
            text.trim()
        ));
        serde_json::from_str(text.trim()).map_err(|e| {
            format!(
                "prism-load printed no summary ({e}): {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        for (_, mut c) in self
            .nodes
            .drain(..)
            .chain(self.steerd.take().map(|c| (String::new(), c)))
        {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// l4's steering table as `nft -j` prints it.
pub fn steering_table() -> Result<serde_json::Value, String> {
    let out = sh(
        &mut Log::default(),
        "ip",
        &[
            "netns", "exec", "l4", "nft", "-j", "list", "table", "inet", "prism",
        ],
    )?;
    serde_json::from_str(&out).map_err(|e| e.to_string())
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Established TCP connections in namespace `ns` whose local port is `port`.
fn established_to(ns: &str, port: u16) -> usize {
    let sport = format!("= :{port}");
    sh(
        &mut Log::default(),
        "ip",
        &[
            "netns",
            "exec",
            ns,
            "ss",
            "-Htn",
            "state",
            "established",
            "sport",
            &sport,
        ],
    )
    .map_or(0, |o| o.lines().count())
}

pub fn listening(ns: &str, what: &str) -> bool {
    sh(&mut Log::default(), "ip", &["netns", "exec", ns, "ss", "-Hltn"]).is_ok_and(|o| o.contains(what))
}

pub fn wait(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) -> TestResult {
    let start = Instant::now();
    while !cond() {
        check!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// Bytes fe's link has sent so far.
pub fn fe_tx_bytes() -> Result<u64, String> {
    let out = sh(
        &mut Log::default(),
        "ip",
        &[
            "netns",
            "exec",
            "fe",
            "cat",
            "/sys/class/net/eth0/statistics/tx_bytes",
        ],
    )?;
    out.trim().parse().map_err(|e| format!("tx_bytes: {e}"))
}
