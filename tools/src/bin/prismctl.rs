//! `prismctl`: inspect the prism_sock module from the command line.

use clap::{Parser, Subcommand};
use prism_sock::{Client, ImportOptions, MigrationState};
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(version, about = "Inspect and drive the prism_sock kernel module")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Is the module loaded? Its version, protocol version and counters.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The migrated sockets the module tracks in this network namespace, one line each
    /// (what a monitor that lost events re-syncs from).
    List {
        /// One JSON object per line instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print the module's events (imported, exported, released), one line each.
    Monitor {
        /// One JSON object per line instead of text.
        #[arg(long)]
        json: bool,
        /// Stop after this many events.
        #[arg(long)]
        count: Option<u64>,
        /// Stop after this many seconds without an event.
        #[arg(long)]
        idle_timeout: Option<u64>,
        /// Join the `releases` group (SOCK_RELEASED only) instead of `events`.
        #[arg(long)]
        releases: bool,
    },
    /// Export a TCP socket of a running process (or of prismctl itself) to a state file.
    Export {
        /// Process holding the socket (default: prismctl, for an inherited fd).
        #[arg(long)]
        pid: Option<i32>,
        /// The socket's fd number in that process.
        #[arg(long)]
        fd: i32,
        /// Finish the socket here without a packet to the peer (a real hand-off).
        #[arg(long)]
        detach: bool,
        /// Where to write the state blob.
        #[arg(long, short)]
        out: PathBuf,
        /// Also print the state readable (JSON) on stdout.
        #[arg(long)]
        decode: bool,
    },
    /// Print a state file readable (JSON).
    Decode {
        /// The state blob.
        file: PathBuf,
        /// Also print kTLS keys, IVs and salts (left out by default: they are secret).
        #[arg(long)]
        show_secrets: bool,
    },
    /// Import a state file and run COMMAND with the live socket as its fd 3.
    Import {
        /// The state blob.
        file: PathBuf,
        /// Print the state readable (JSON) on stderr first.
        #[arg(long)]
        decode: bool,
        /// Own this local address instead of the exported one.
        #[arg(long)]
        bind: Option<IpAddr>,
        /// The local address need not be configured here (IP_FREEBIND).
        #[arg(long)]
        freebind: bool,
        /// TPROXY-style ownership of a non-local address (IP_TRANSPARENT).
        #[arg(long)]
        transparent: bool,
        /// The program (and arguments) that takes the socket over as fd 3.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
}

/// Any failure of a subcommand, as one line.
type CmdResult = Result<(), String>;

fn pidfd_getfd(pid: i32, fd: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: plain syscalls with integer arguments; the fds they return are ours.
    unsafe {
        let pidfd = libc::syscall(libc::SYS_pidfd_open, pid, 0);
        if pidfd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let pidfd = OwnedFd::from_raw_fd(pidfd as i32);
        let got = libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0);
        if got < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(OwnedFd::from_raw_fd(got as i32))
    }
}

fn decoded_json(state: &MigrationState) -> Result<String, String> {
    decoded_json_with(state, false)
}

/// The state as JSON; kTLS key material only with `secrets`.
fn decoded_json_with(state: &MigrationState, secrets: bool) -> Result<String, String> {
    let d = state.decode().map_err(|e| format!("decode: {e}"))?;
    let mut v = serde_json::to_value(&d).map_err(|e| e.to_string())?;
    if let (true, Some(tls)) = (secrets, &d.tls) {
        v["tls"]["secrets"] = serde_json::to_value(&tls.secrets).map_err(|e| e.to_string())?;
    }
    v["send_queue_bytes"] = d.send_queue.len().into();
    v["recv_queue_bytes"] = d.recv_queue.len().into();
    v["blob_bytes"] = state.as_bytes().len().into();
    serde_json::to_string_pretty(&v).map_err(|e| e.to_string())
}

fn export(pid: Option<i32>, fd: i32, detach: bool, out: &PathBuf, decode: bool) -> CmdResult {
    let pid = pid.unwrap_or_else(|| std::process::id() as i32);
    let sock = pidfd_getfd(pid, fd).map_err(|e| format!("fd {fd} of process {pid}: {e}"))?;
    let client = Client::connect().map_err(|e| e.to_string())?;
    let state = if detach {
        client.export_detach(&sock)
    } else {
        client.export_snapshot(&sock)
    }
    .map_err(|e| format!("export: {e}"))?;
    std::fs::write(out, state.as_bytes()).map_err(|e| format!("{}: {e}", out.display()))?;
    if decode {
        println!("{}", decoded_json(&state)?);
    }
    Ok(())
}

fn read_state(file: &PathBuf) -> Result<MigrationState, String> {
    let blob = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
    Ok(MigrationState::from_bytes(blob))
}

fn import(file: &PathBuf, decode: bool, options: ImportOptions, command: &[String]) -> CmdResult {
    let state = read_state(file)?;
    if decode {
        eprintln!("{}", decoded_json(&state)?);
    }
    let client = Client::connect().map_err(|e| e.to_string())?;
    let imported = client
        .import(&state, &options)
        .map_err(|e| format!("import: {e}"))?;
    eprintln!(
        "prismctl: imported (migration {:#x}); running {}",
        imported.migration_id, command[0]
    );
    let raw = imported.fd.as_raw_fd();
    let mut child = std::process::Command::new(&command[0]);
    child.args(&command[1..]);
    // SAFETY: only async-signal-safe dup2 between fork and exec.
    unsafe {
        child.pre_exec(move || {
            // dup2 onto itself would keep O_CLOEXEC: clear it instead.
            let ok = if raw == 3 {
                libc::fcntl(3, libc::F_SETFD, 0) == 0
            } else {
                libc::dup2(raw, 3) == 3
            };
            if !ok {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let status = child.status().map_err(|e| format!("{}: {e}", command[0]))?;
    drop(imported);
    if status.success() {
        Ok(())
    } else {
        Err(format!("{} exited with {status}", command[0]))
    }
}

fn list(json: bool) -> Result<(), prism_sock::Error> {
    let client = prism_sock::Client::connect()?;
    for t in client.list_tracked()? {
        if json {
            println!("{}", serde_json::to_string(&t).expect("TrackedSocket serializes"));
        } else {
            println!(
                "migration {:#018x} {} <- {} state {} for {:?} (cookie {}, seq {})",
                t.migration_id, t.local, t.peer, t.tcp_state, t.since_import, t.sock_cookie, t.seq
            );
        }
    }
    Ok(())
}

fn status(json: bool) -> Result<(), prism_sock::Error> {
    let client = prism_sock::Client::connect()?;
    let info = client.info()?;
    if json {
        println!("{}", serde_json::to_string(&info).expect("ModuleInfo serializes"));
    } else {
        println!(
            "module         loaded (generic netlink family {} id {})",
            prism_sock::uapi::FAMILY_NAME,
            client.family_id()
        );
        println!("module version {}", info.module_version);
        println!("protocol       {}", info.proto_version);
        println!("exports        {}", info.exports);
        println!("imports        {}", info.imports);
        println!("releases       {}", info.releases);
        println!("errors         {}", info.errors);
        println!("tracked        {}", info.tracked);
        println!("events sent    {}", info.events_sent);
        println!("events lost    {}", info.events_lost);
        let d = &info.departed;
        println!(
            "rst guard      {} tuples (namespace quota {}, host capacity {}), {} ms; dropped {}, expired {}, full {}",
            d.active, d.quota, d.capacity, d.timeout_ms, d.dropped, d.expired, d.full
        );
    }
    Ok(())
}

fn monitor(
    group: prism_sock::Group,
    json: bool,
    count: Option<u64>,
    idle: Option<u64>,
) -> Result<(), prism_sock::Error> {
    use std::io::Write;
    let mut events = prism_sock::EventListener::join(group)?;
    let mut seen = 0;
    while count.is_none_or(|c| seen < c) {
        let Some(e) = events.next_timeout(idle.map(std::time::Duration::from_secs))? else {
            break;
        };
        seen += 1;
        let line = if json {
            serde_json::to_string(&e).expect("Event serializes")
        } else {
            let why = e
                .reason
                .map(|r| format!(" {r:?}").to_lowercase())
                .unwrap_or_default();
            format!(
                "#{} {:?}{why} {} <-> {} migration {:#x} acked {} received {} after {:?} time-wait {} ms",
                e.seq,
                e.kind,
                e.local,
                e.peer,
                e.migration_id,
                e.bytes_acked,
                e.bytes_received,
                e.duration,
                e.time_wait_ms
            )
        };
        let mut out = std::io::stdout().lock();
        if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
            break;
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let res = match Cli::parse().cmd {
        Cmd::Status { json } => status(json).map_err(|e| e.to_string()),
        Cmd::List { json } => list(json).map_err(|e| e.to_string()),
        Cmd::Monitor {
            json,
            count,
            idle_timeout,
            releases,
        } => {
            let group = if releases {
                prism_sock::Group::Releases
            } else {
                prism_sock::Group::Events
            };
            monitor(group, json, count, idle_timeout).map_err(|e| e.to_string())
        }
        Cmd::Export {
            pid,
            fd,
            detach,
            out,
            decode,
        } => export(pid, fd, detach, &out, decode),
        Cmd::Decode { file, show_secrets } => read_state(&file)
            .and_then(|s| decoded_json_with(&s, show_secrets))
            .map(|j| println!("{j}")),
        Cmd::Import {
            file,
            decode,
            bind,
            freebind,
            transparent,
            command,
        } => {
            let options = ImportOptions {
                bind_addr: bind,
                freebind,
                transparent,
                nonblock: false,
            };
            import(&file, decode, options, &command)
        }
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("prismctl: {e}");
            ExitCode::FAILURE
        }
    }
}
