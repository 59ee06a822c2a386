//! A small test runner: each test is a function that returns `Ok` or a reason; panics
//! count as failures. Results are written where the host harness reads them.

use std::fmt::Write as _;
use std::io::Write as _;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

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

/// A named test.
pub struct Test {
    pub name: &'static str,
    pub run: fn(&Env, &mut Log) -> TestResult,
}

/// Per-test log, saved next to the results.
#[derive(Default)]
pub struct Log(String);

impl Log {
    pub fn line(&mut self, s: impl AsRef<str>) {
        let _ = writeln!(self.0, "{}", s.as_ref());
    }

    pub fn text(&self) -> &str {
        &self.0
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

pub fn run(env: &Env, out: &Path, filter: Option<&str>) -> ExitCode {
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
    let mut failed = 0;
    for t in crate::suites::all()
        .into_iter()
        .filter(|t| filter.is_none_or(|f| t.name.contains(f)))
    {
        let mut log = Log::default();
        let start = Instant::now();
        let res = catch_unwind(AssertUnwindSafe(|| (t.run)(env, &mut log)))
            .unwrap_or_else(|p| Err(format!("panicked: {}", panic_text(&p))));
        // Whatever the test did, the next one starts from a clean guest.
        crate::topology::Topology::teardown_all();
        let _ = crate::module::unload_if_loaded();
        let ms = start.elapsed().as_millis();
        let line = match &res {
            Ok(()) => format!("PASS {} {ms}ms", t.name),
            Err(e) => {
                failed += 1;
                log.line(format!("FAILED: {e}"));
                format!("FAIL {} {ms}ms {}", t.name, e.replace('\n', " | "))
            }
        };
        println!("{line}");
        let _ = writeln!(results, "{line}");
        let _ = std::fs::write(logs.join(format!("{}.log", t.name)), &log.0);
    }
    let _ = results.flush();
    if failed == 0 {
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
    let out = std::process::Command::new(prog)
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
