//! Loading and unloading the module under test.

use crate::harness::{sh, Log};
use std::path::Path;

pub const NAME: &str = "prism_sock";

pub fn is_loaded() -> bool {
    Path::new("/sys/module").join(NAME).exists()
}

pub fn load(log: &mut Log, ko: &Path) -> Result<(), String> {
    sh(log, "insmod", &[&ko.to_string_lossy()]).map(|_| ())
}

pub fn unload(log: &mut Log) -> Result<(), String> {
    sh(log, "rmmod", &[NAME]).map(|_| ())
}

pub fn unload_if_loaded() -> Result<(), String> {
    if is_loaded() {
        unload(&mut Log::default())?;
    }
    Ok(())
}
