//! Helpers shared by the suites.

use crate::check;
use crate::harness::{Env, Log, TestResult};
use crate::module;
use prism_sock::{Client, Error};

/// Command prefix that runs a program as the same user without CAP_NET_ADMIN.
pub const WITHOUT_NET_ADMIN: [&str; 6] = [
    "setpriv",
    "--bounding-set",
    "-net_admin",
    "--inh-caps",
    "-net_admin",
    "--",
];

/// Generic netlink command number of GET_INFO, for raw requests.
pub const GET_INFO: u8 = 1;

/// Loads the module and connects to its family.
pub fn loaded(env: &Env, log: &mut Log) -> Result<Client, String> {
    module::load(log, &env.module)?;
    Client::connect().map_err(|e| format!("connect: {e}"))
}

/// The request must have been refused with `errno` and an extack message containing `msg`.
pub fn expect_refusal(
    res: Result<impl std::fmt::Debug, Error>,
    errno: i32,
    msg: &str,
    log: &mut Log,
) -> TestResult {
    log.line(format!("{res:?}"));
    match res {
        Err(Error::Kernel(k)) => {
            check!(k.errno == errno, "errno {} ({}), expected {errno}", k.errno, k);
            check!(
                k.message.as_deref().is_some_and(|m| m.contains(msg)),
                "extack message {:?}, expected one containing {msg:?}",
                k.message
            );
            Ok(())
        }
        other => Err(format!("expected errno {errno} with {msg:?}, got {other:?}")),
    }
}
