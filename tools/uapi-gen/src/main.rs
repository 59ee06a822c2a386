//! `prism-uapi-gen`: writes `kmod/uapi_generated.rs` and `userlib/src/uapi_generated.rs`
//! from `docs/netlink/prism_sock.yaml` (`make uapi`), or with `--check` fails when
//! they are not what the spec gives.

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(about = "Generate the prism_sock uapi modules from the YNL spec")]
struct Cli {
    /// The repository's top folder.
    #[arg(long, default_value = ".")]
    root: PathBuf,
    /// Write nothing; fail if a generated file is stale.
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match prism_uapi_gen::sync(&cli.root, cli.check) {
        Ok(stale) if cli.check && !stale.is_empty() => {
            for p in stale {
                eprintln!("prism-uapi-gen: {} is stale: run `make uapi`", p.display());
            }
            ExitCode::FAILURE
        }
        Ok(written) => {
            for p in written {
                eprintln!("prism-uapi-gen: wrote {}", p.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("prism-uapi-gen: {e}");
            ExitCode::FAILURE
        }
    }
}
