//! Loading and unloading the module under test.

use crate::harness::{sh, Log};
use std::path::Path;

pub const NAME: &str = "prism_sock";

pub fn is_loaded() -> bool {
    Path::new("/sys/module").join(NAME).exists()
}

pub fn load(log: &mut Log, ko: &Path) -> Result<(), String> {
    load_with(log, ko, &[])
}

/// Loads the module with parameters (`name=value`).
pub fn load_with(log: &mut Log, ko: &Path, params: &[&str]) -> Result<(), String> {
    let ko = ko.to_string_lossy();
    let mut args = vec![&*ko];
    args.extend(params);
    sh(log, "insmod", &args).map(|_| ())
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
