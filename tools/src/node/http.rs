//! HTTP/1.1 on the client's connection: request heads parsed with httparse, object
//! responses written by whichever node holds the connection now.

/// Longest request head accepted.
pub const MAX_HEAD: usize = 16 * 1024;

/// One parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// Bytes of the head in the buffer (the request has no body).
    pub len: usize,
    /// `GET` or `HEAD`.
    pub head_only: bool,
    /// The object's key, if the path is `/objects/<key>`.
    pub key: Option<String>,
    /// The connection stays open after the response.
    pub keep_alive: bool,
}

/// What the buffer holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// Not a whole head yet.
    Partial,
    /// A request to answer.
    Request(Head),
    /// A request to refuse (status, reason); the connection closes after it.
    Refuse(u16, &'static str),
}

/// Parses the first request head in `buf`.
pub fn parse(buf: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
            return Parsed::Refuse(431, "Request Header Fields Too Large")
        }
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => {
            return Parsed::Refuse(431, "Request Header Fields Too Large")
        }
        Err(_) => return Parsed::Refuse(400, "Bad Request"),
    };
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).to_ascii_lowercase())
    };
    // Objects are read-only: a request with a body is not one of ours.
    if header("transfer-encoding").is_some() || header("content-length").is_some_and(|v| v.trim() != "0") {
        return Parsed::Refuse(400, "Bad Request");
    }
    let head_only = match req.method {
        Some("GET") => false,
        Some("HEAD") => true,
        _ => return Parsed::Refuse(405, "Method Not Allowed"),
    };
    let connection = header("connection").unwrap_or_default();
    let keep_alive = if req.version == Some(0) {
        connection.contains("keep-alive")
    } else {
        !connection.contains("close")
    };
    let key = req
        .path
        .and_then(|p| p.strip_prefix("/objects/"))
        .filter(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        .map(str::to_string);
    Parsed::Request(Head {
        len,
        head_only,
        key,
        keep_alive,
    })
}

/// The head of a response; `extra` are more header lines, each ending in CRLF.
pub fn response_head(status: u16, reason: &str, len: usize, keep_alive: bool, extra: &str) -> Vec<u8> {
    let connection = if keep_alive { "keep-alive" } else { "close" };
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Length: {len}\r\nContent-Type: application/octet-stream\r\n\
         Connection: {connection}\r\n{extra}\r\n"
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_keep_alive_gets_and_refuses_the_rest() {
        let get = b"GET /objects/obj-3 HTTP/1.1\r\nHost: x\r\n\r\nGET /next";
        let Parsed::Request(h) = parse(get) else { panic!() };
        assert_eq!(h.len, get.len() - 9);
        assert_eq!(h.key.as_deref(), Some("obj-3"));
        assert!(h.keep_alive && !h.head_only);
        let Parsed::Request(h) = parse(b"HEAD /objects/a HTTP/1.0\r\n\r\n") else {
            panic!()
        };
        assert!(h.head_only && !h.keep_alive);
        let Parsed::Request(h) = parse(b"GET /x HTTP/1.1\r\nConnection: close\r\n\r\n") else {
            panic!()
        };
        assert!(h.key.is_none() && !h.keep_alive);
        let Parsed::Request(h) = parse(b"GET /objects/../etc HTTP/1.1\r\n\r\n") else {
            panic!()
        };
        assert!(h.key.is_none());
        assert_eq!(parse(b"GET /objects/a HTTP/1.1\r\nHo"), Parsed::Partial);
        assert_eq!(
            parse(b"POST /objects/a HTTP/1.1\r\n\r\n"),
            Parsed::Refuse(405, "Method Not Allowed")
        );
        assert!(matches!(
            parse(b"GET /a HTTP/1.1\r\nContent-Length: 5\r\n\r\n"),
            Parsed::Refuse(400, _)
        ));
        assert!(matches!(
            parse(b"\x01\x02 nonsense\r\n\r\n"),
            Parsed::Refuse(400, _)
        ));
        assert!(matches!(
            parse(&vec![b'a'; MAX_HEAD + 1]),
            Parsed::Refuse(400 | 431, _)
        ));
        let mut long = b"GET /objects/a HTTP/1.1\r\n".to_vec();
        long.resize(MAX_HEAD + 10, b'x');
        assert!(matches!(parse(&long), Parsed::Refuse(431 | 400, _)));
    }
}
