//! prism-node: one node of the Prism-style object store (any role: front or owner).

use clap::{Parser, Subcommand};
use prism_tools::cluster::Cluster;
use prism_tools::node::{self, BackendChoice, Fault};
use prism_tools::objects;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(about = "Object-store node that hands client connections to the key's owner")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve as node NAME of the cluster in CONFIG (needs CAP_NET_ADMIN, the module).
    Run {
        /// Cluster configuration (JSON).
        #[arg(long)]
        config: PathBuf,
        /// This node's name in the configuration.
        #[arg(long)]
        name: String,
        /// How sockets are moved: the module, TCP_REPAIR, or the module when loaded.
        #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
        backend: BackendChoice,
        /// Inject a fault (tests only).
        #[arg(long, hide = true)]
        fault: Option<Fault>,
        /// Serve HTTPS on the VIP's https_port too, with this certificate chain (PEM);
        /// the session runs in kernel TLS and moves with the connection.
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The certificate's private key (PEM).
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
    },
    /// Write a demo CA (ca.pem) and a certificate signed by it (cert.pem, key.pem) to
    /// DIR, for the names given (host names or IP addresses).
    TlsCert {
        /// Where to write the PEM files.
        #[arg(long)]
        out: PathBuf,
        /// A name the certificate is for (repeat for more).
        #[arg(long = "name", default_value = "prism.test")]
        names: Vec<String>,
    },
    /// Print the SHA-256 an object's body must have, and its owner.
    Digest {
        /// Cluster configuration (JSON).
        #[arg(long)]
        config: PathBuf,
        /// Object keys.
        keys: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Run {
            config,
            name,
            backend,
            fault,
            tls_cert,
            tls_key,
        } => Cluster::load(&config).and_then(|c| {
            let tls = match (tls_cert, tls_key) {
                (Some(cert), Some(key)) => Some(node::tls::server_config(&cert, &key)?),
                _ => None,
            };
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("tokio: {e}"))?
                .block_on(node::run(c, &name, fault, backend, tls))
        }),
        Cmd::TlsCert { out, names } => node::tls::make_certificate(&out, &names),
        Cmd::Digest { config, keys } => Cluster::load(&config).and_then(|c| {
            let ring = c.ring();
            for key in keys {
                let size = objects::size_of(&c.objects, &key).ok_or_else(|| format!("no object {key}"))?;
                let owner = ring.owner(&key).map_or("?", |i| c.nodes[i].name.as_str());
                println!(
                    "{key} {size} {owner} {}",
                    objects::digest(&objects::content(&key, size))
                );
            }
            Ok(())
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("prism-node: {e}");
            ExitCode::FAILURE
        }
    }
}
