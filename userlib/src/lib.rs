//! # prism-sock
//!
//! User-space side of prism-sock: talks to the `prism_sock` kernel module over its
//! generic netlink family (see `docs/netlink/prism_sock.yaml`).
//!
//! ```no_run
//! let client = prism_sock::Client::connect()?;
//! let info = client.info()?;
//! println!("module {} speaks protocol {}", info.module_version, info.proto_version);
//! # Ok::<(), prism_sock::Error>(())
//! ```

#![warn(missing_docs)]

#[cfg(feature = "tokio")]
pub mod async_tokio;
mod backend;
mod client;
mod error;
mod events;
pub mod repair;
mod state;
#[cfg(feature = "tls")]
pub mod tls;
pub mod transfer;
pub mod uapi;

pub use backend::{Backend, Exported};
pub use client::{Client, DepartedInfo, ImportOptions, Imported, ModuleInfo, RawAttr};
pub use error::{Error, KernelError, Result};
pub use events::{Event, EventKind, EventListener, Group, Reason, TrackedSocket};
pub use state::{DecodedState, DecodedTls, MigrationState, TlsSecrets, BLOB_VERSION};
pub use transfer::{read_frame, write_frame, Handoff, MAX_FRAME};
