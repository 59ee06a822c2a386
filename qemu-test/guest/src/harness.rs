//! A small test runner. Each test runs in a child process of this binary with a time
//! limit, so a hung or crashing test fails alone and the suite goes on. Results are
//! written where the host harness reads them.

use std::io::Write as _;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

/// Outcome of one test.
pub type TestResult = Result<(), String>;

/// Paths the tests need, passed by the guest script.
#[derive(clap::Args, Clone)]
pub struct Env {
    /// The module to load.
    #[arg(long)]
    pub module: PathBuf,
    /// The family's YNL spec.
    #[arg(long)]
    pub spec: PathBuf,
    /// The kernel's tools/net/ynl/cli.py.
    #[arg(long)]
    pub ynl: PathBuf,
    /// The kernel's Documentation/netlink/genetlink.yaml schema.
    #[arg(long)]
    pub schema: PathBuf,
}

impl Env {
    /// The repository: the spec is its `docs/netlink/prism_sock.yaml`. (Not the
    /// module's folder: a module built elsewhere, as for Debian's stock kernel, lives
    /// in another tree.)
    pub fn repo(&self) -> Result<PathBuf, String> {
        self.spec
            .ancestors()
            .nth(3)
            .map(PathBuf::from)
            .ok_or_else(|| format!("{} is not in a repository's docs/netlink", self.spec.display()))
    }

    fn args(&self) -> Vec<String> {
        let mut v = Vec::new();
        for (k, p) in [
            ("--module", &self.module),
            ("--spec", &self.spec),
            ("--ynl", &self.ynl),
            ("--schema", &self.schema),
        ] {
            v.push(k.to_string());
            v.push(p.to_string_lossy().into_owned());
        }
        v
    }
}

/// A named test.
#[derive(Clone, Copy)]
pub struct Test {
    pub name: &'static str,
    pub run: fn(&Env, &mut Log) -> TestResult,
}

/// Per-test log, saved next to the results.
#[derive(Default)]
pub struct Log {
    text: String,
    /// Also print each line as it comes (the benchmark's progress).
    echo: bool,
}

impl Log {
    /// A log that also prints every line to stdout.
    pub fn echoing() -> Self {
        Self {
            text: String::new(),
            echo: true,
        }
    }

    pub fn line(&mut self, s: impl AsRef<str>) {
        if self.echo {
            println!("{}", s.as_ref());
        }
        self.text.push_str(s.as_ref());
        self.text.push('\n');
    }

    pub fn text(&self) -> &str {
        &self.text
    }
}

/// Turns a failed check into a test failure with a message.
#[macro_export]
macro_rules! check {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

/// Runs every test (or those whose name contains one of the comma-separated parts of
/// `filter`, less those that contain one of `skip`'s) `repeat` times, each run in its
/// own child process that may run `timeout` at most.
pub fn run(
    env: &Env,
    out: &Path,
    (filter, skip): (Option<&str>, Option<&str>),
    timeout: Duration,
    repeat: u32,
) -> ExitCode {
    let logs = out.join("logs");
    if let Err(e) = std::fs::create_dir_all(&logs) {
        eprintln!("cannot create {}: {e}", logs.display());
        return ExitCode::FAILURE;
    }
    let mut results = match std::fs::File::create(out.join("results.txt")) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("cannot write results: {e}");
            return ExitCode::FAILURE;
        }
    };
    let me = std::env::current_exe().expect("own path");
    let mut failed = 0;
    let matches = |list: &str, name: &str| {
        list.split(',')
            .any(|part| !part.is_empty() && name.contains(part))
    };
    let (skipped, chosen): (Vec<_>, Vec<_>) = crate::suites::all()
        .into_iter()
        .filter(|t| filter.is_none_or(|f| matches(f, t.name)))
        .partition(|t| skip.is_some_and(|s| matches(s, t.name)));
    for t in skipped {
        let line = format!("SKIP {} (left out of this run)", t.name);
        println!("{line}");
        let _ = writeln!(results, "{line}");
    }
    let runs = chosen
        .into_iter()
        .flat_map(|t| (1..=repeat.max(1)).map(move |k| (t, k)));
    for (t, k) in runs {
        // A repeated test's runs keep their own logs: name, name.2, name.3, ...
        let file = match k {
            1 => t.name.to_string(),
            k => format!("{}.{k}", t.name),
        };
        let log_path = logs.join(format!("{file}.log"));
        let start = Instant::now();
        rst_trace::restart();
        let res = run_child(&me, env, t.name, &log_path, timeout);
        if res.is_err() {
            rst_trace::append_to(&log_path);
        }
        // Whatever the test did, the next one starts from a clean guest.
        crate::topology::Topology::teardown_all();
        let _ = crate::module::unload_if_loaded();
        let ms = start.elapsed().as_millis();
        let line = match &res {
            Ok(()) => format!("PASS {file} {ms}ms"),
            Err(e) => {
                failed += 1;
                format!("FAIL {file} {ms}ms {}", e.replace('\n', " | "))
            }
        };
        println!("{line}");
        let _ = writeln!(results, "{line}");
        let _ = results.flush();
    }
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Every RST the guest's kernel sends during a test, with its reason and the stack that
/// sent it, kept in a tracefs instance of its own: a failing test's log ends with them,
/// so a reset seen once in a long run can be traced to its code path.
pub mod rst_trace {
    use std::io::Write as _;
    use std::path::{Path, PathBuf};

    fn dir() -> Option<PathBuf> {
        ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
            .iter()
            .map(Path::new)
            .find(|p| p.join("instances").is_dir())
            .map(|p| p.join("instances/prism-rst"))
    }

    /// Creates the instance once and empties it: tracing is best effort, a kernel
    /// without tracefs runs the tests all the same.
    pub fn restart() {
        let Some(dir) = dir() else { return };
        if !dir.is_dir() {
            let _ = std::fs::create_dir(&dir);
            let _ = std::fs::write(dir.join("buffer_size_kb"), "2048");
            for ev in ["tcp_send_reset", "tcp_receive_reset"] {
                let ev = dir.join("events/tcp").join(ev);
                let _ = std::fs::write(ev.join("trigger"), "stacktrace");
                let _ = std::fs::write(ev.join("enable"), "1");
            }
        }
        let _ = std::fs::write(dir.join("trace"), "");
    }

    /// The events the instance holds (RSTs with their stacks), if tracing works here.
    pub fn events() -> Option<Vec<String>> {
        let text = dir().and_then(|d| std::fs::read_to_string(d.join("trace")).ok())?;
        Some(
            text.lines()
                .filter(|l| !l.starts_with('#'))
                .map(str::to_string)
                .collect(),
        )
    }

    /// Appends what the instance holds to `log`.
    pub fn append_to(log: &Path) {
        let Some(events) = events() else {
            return;
        };
        if let Ok(mut f) = std::fs::OpenOptions::new().append(true).open(log) {
            let _ = writeln!(f, "---- RSTs sent and received in the guest during the test");
            for l in events {
                let _ = writeln!(f, "{l}");
            }
        }
    }
}

fn run_child(me: &Path, env: &Env, name: &str, log_path: &Path, timeout: Duration) -> TestResult {
    let mut child = Command::new(me)
        .arg("run-one")
        .args(env.args())
        .args(["--name", name, "--log"])
        .arg(log_path)
        .spawn()
        .map_err(|e| format!("spawn: {e}"))?;
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                let log = std::fs::read_to_string(log_path).unwrap_or_default();
                return if status.success() {
                    Ok(())
                } else {
                    let reason = log.lines().rev().find_map(|l| l.strip_prefix("FAILED: "));
                    Err(reason
                        .map(str::to_string)
                        .unwrap_or_else(|| format!("test process {status}")))
                };
            }
            Ok(None) if start.elapsed() > timeout => {
                let _ = child.kill();
                let _ = child.wait();
                let mut f = std::fs::OpenOptions::new()
                    .append(true)
                    .create(true)
                    .open(log_path)
                    .ok();
                if let Some(f) = f.as_mut() {
                    let _ = writeln!(f, "FAILED: timed out after {} s", timeout.as_secs());
                }
                return Err(format!("timed out after {} s", timeout.as_secs()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(format!("wait: {e}")),
        }
    }
}

/// Child side: runs one test, writes its log, and exits 0 on success.
pub fn run_one(env: &Env, name: &str, log_path: &Path) -> ExitCode {
    let Some(t) = crate::suites::all().into_iter().find(|t| t.name == name) else {
        eprintln!("no test named {name}");
        return ExitCode::FAILURE;
    };
    let mut log = Log::default();
    let res = catch_unwind(AssertUnwindSafe(|| (t.run)(env, &mut log)))
        .unwrap_or_else(|p| Err(format!("panicked: {}", panic_text(&p))));
    if let Err(e) = &res {
        log.line(format!("FAILED: {e}"));
    }
    let _ = std::fs::write(log_path, log.text());
    if res.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into())
}

/// Runs a command, returning its stdout, or an error with its stderr.
pub fn sh(log: &mut Log, prog: &str, args: &[&str]) -> Result<String, String> {
    log.line(format!("$ {prog} {}", args.join(" ")));
    let out = Command::new(prog)
        .args(args)
        .output()
        .map_err(|e| format!("{prog}: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !stdout.is_empty() {
        log.line(stdout.trim_end());
    }
    if !stderr.is_empty() {
        log.line(stderr.trim_end());
    }
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "{prog} {} failed ({}): {}",
            args.join(" "),
            out.status,
            stderr.trim()
        ))
    }
}
