//! prism-sock's tools: the object-store node (`prism-node`), the L4 steering daemon
//! (`prism-steerd`), the load generator (`prism-load`) and what they share.

#![warn(missing_docs)]

pub mod cluster;
pub mod load;
pub mod node;
pub mod objects;
pub mod ring;
pub mod steer_proto;
pub mod steerd;
