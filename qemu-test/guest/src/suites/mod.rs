//! All guest tests, in the order they run.

mod bench_smoke;
pub mod common;
pub mod export;
mod faults;
mod forward;
mod foundation;
mod fuzz;
mod hop_stress;
pub mod hops;
pub mod import_refusals;
mod migration;
mod objectstore;
pub mod release;
mod repair;
mod state;
mod tls;

use crate::harness::Test;

pub fn all() -> Vec<Test> {
    let mut all = foundation::tests();
    all.extend(export::tests());
    all.extend(migration::tests());
    all.extend(state::tests());
    all.extend(forward::tests());
    all.extend(hops::tests());
    all.extend(hop_stress::tests());
    all.extend(import_refusals::tests());
    all.extend(tls::tests());
    all.extend(faults::tests());
    all.extend(fuzz::tests());
    all.extend(release::tests());
    all.extend(objectstore::tests());
    all.extend(repair::tests());
    all.extend(bench_smoke::tests());
    all
}
