//! One interface over both ways of moving a socket: the module (atomic, one call each
//! way) and user-space TCP_REPAIR ([`crate::repair`]), picked automatically.

use crate::client::{Client, ImportOptions};
use crate::error::{Error, Result};
use crate::repair::{self, RepairState};
use crate::state::MigrationState;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, OwnedFd};

/// Which way exports and imports are done.
pub enum Backend {
    /// The prism_sock module.
    Module(Client),
    /// TCP_REPAIR in user space.
    Repair,
}

/// An exported socket, from either backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exported {
    /// The module's blob.
    Module(MigrationState),
    /// A TCP_REPAIR capture.
    Repair(RepairState),
}

impl Exported {
    /// The module's blob unchanged, or the repair state (which starts with `PRRP`,
    /// something a module blob, a netlink attribute, never does).
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Exported::Module(m) => m.as_bytes().to_vec(),
            Exported::Repair(r) => r.to_bytes(),
        }
    }

    /// Reads what [`Exported::to_bytes`] wrote.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        if bytes.starts_with(b"PRRP") {
            RepairState::from_bytes(bytes).map(Exported::Repair)
        } else {
            Ok(Exported::Module(MigrationState::from_bytes(bytes.to_vec())))
        }
    }
}

impl Backend {
    /// The module if it is loaded, else `repair`.
    pub fn auto() -> Result<Self> {
        match Client::connect() {
            Ok(c) => Ok(Backend::Module(c)),
            Err(Error::ModuleNotLoaded) => Ok(Backend::Repair),
            Err(e) => Err(e),
        }
    }

    /// `module` or `repair`.
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Module(_) => "module",
            Backend::Repair => "repair",
        }
    }

    /// Exports `fd` and finishes it here without a packet to the peer. With the
    /// repair backend the socket then drops every packet and still holds its tuple:
    /// keep `fd` open until L4 has moved the flow (see [`repair::export_detach`]).
    pub fn export_detach(&self, fd: impl AsFd) -> Result<Exported> {
        match self {
            Backend::Module(c) => c.export_detach(fd).map(Exported::Module),
            Backend::Repair => repair::export_detach(fd).map(Exported::Repair),
        }
    }

    /// Exports `fd` and finishes it here; with the module, the peer's packets that still
    /// arrive here go on to the new owner at `owner` (see [`Client::export_detach_to`]).
    /// The repair backend cannot forward: it exports as [`Backend::export_detach`].
    pub fn export_detach_to(&self, fd: impl AsFd, owner: Ipv4Addr) -> Result<Exported> {
        match self {
            Backend::Module(c) => c.export_detach_to(fd, owner).map(Exported::Module),
            Backend::Repair => repair::export_detach(fd).map(Exported::Repair),
        }
    }

    /// Rebuilds `state` as a live socket here; a state from the other backend is refused.
    pub fn import(&self, state: &Exported, options: &ImportOptions) -> Result<OwnedFd> {
        match (self, state) {
            (Backend::Module(c), Exported::Module(m)) => c.import(m, options).map(|i| i.fd),
            (Backend::Repair, Exported::Repair(r)) => repair::import(r, options),
            _ => Err(Error::Protocol(format!(
                "a state exported by the other backend cannot be imported with {}",
                self.name()
            ))),
        }
    }
}
