//! All guest tests, in the order they run.

mod foundation;

use crate::harness::Test;

pub fn all() -> Vec<Test> {
    foundation::tests()
}
