//! The error type of the library.

use std::fmt;

/// Result alias used throughout the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong talking to the module.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The `prism_sock` generic netlink family is not registered: the module is not loaded.
    #[error("the prism_sock kernel module is not loaded (no generic netlink family `prism_sock`)")]
    ModuleNotLoaded,
    /// The module (or the netlink core) refused the request.
    #[error("{0}")]
    Kernel(KernelError),
    /// Netlink transport or parsing failure.
    #[error("netlink: {0}")]
    Netlink(String),
    /// The module answered with something this library does not understand.
    #[error("protocol: {0}")]
    Protocol(String),
    /// A hand-off or frame from another host that does not parse.
    #[error("malformed {0}")]
    Malformed(String),
    /// I/O on a socket or control connection failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// A request refused by the kernel: errno plus the extended-ack details, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelError {
    /// Positive errno value (`libc::EINVAL`, ...).
    pub errno: i32,
    /// Extended-ack message, when the kernel set one.
    pub message: Option<String>,
    /// Offset of the offending attribute in the request, when the kernel named one.
    pub bad_attr_offset: Option<u32>,
}

impl fmt::Display for KernelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", std::io::Error::from_raw_os_error(self.errno))?;
        if let Some(m) = &self.message {
            write!(f, ": {m}")?;
        }
        if let Some(o) = self.bad_attr_offset {
            write!(f, " (attribute at offset {o})")?;
        }
        Ok(())
    }
}

impl Error {
    /// The errno, if the kernel refused the request.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Kernel(k) => Some(k.errno),
            _ => None,
        }
    }

    /// The extended-ack message, if the kernel sent one.
    pub fn ext_ack_message(&self) -> Option<&str> {
        match self {
            Error::Kernel(k) => k.message.as_deref(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_error_names_errno_message_and_offset() {
        let e = Error::Kernel(KernelError {
            errno: 22,
            message: Some("Unknown attribute type".into()),
            bad_attr_offset: Some(20),
        });
        let text = e.to_string();
        assert!(text.contains("Invalid argument"), "{text}");
        assert!(text.contains("Unknown attribute type"), "{text}");
        assert!(text.contains("offset 20"), "{text}");
        assert_eq!(e.errno(), Some(22));
        assert_eq!(e.ext_ack_message(), Some("Unknown attribute type"));
        assert_eq!(Error::ModuleNotLoaded.errno(), None);
    }
}
