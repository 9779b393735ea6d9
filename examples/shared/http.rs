//! HTTP/1.1 request heads answered into a fixed buffer: `http_status`'s
//! request handling, apart from its I/O so that the fuzz target
//! `fuzz/fuzz_targets/http_request.rs` can include it (with `#[path]`) and
//! drive it with arbitrary bytes. Needs `httparse`.
#![allow(dead_code)] // each includer uses a part

use core::fmt::{self, Write as _};

/// The largest request head.
pub const HEADER_LIMIT: usize = 8 * 1024;
/// The most one response takes (a `/status` body at most `STATUS_BODY`).
pub const MAX_RESPONSE: usize = 1536;
pub const STATUS_BODY: usize = 1024;

/// An answered head: its bytes, the body bytes to discard after it, and
/// whether the connection stays open (the default: an error, closing).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Done {
    pub used: usize,
    pub body: usize,
    pub keep: bool,
}

/// Parses the head at the start of `bytes` and writes its response to
/// `out`, with `status` writing the `/status` body; `None` while the head
/// is incomplete (nothing is written then).
pub fn answer(
    bytes: &[u8], out: &mut Cursor<'_>, status: impl FnOnce(&mut Cursor<'_>) -> fmt::Result,
) -> Option<Done> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    let used = match req.parse(bytes) {
        Ok(httparse::Status::Complete(n)) if n <= HEADER_LIMIT => n,
        Ok(httparse::Status::Partial) if bytes.len() < HEADER_LIMIT => return None,
        Ok(_) | Err(httparse::Error::TooManyHeaders) => return fail(out, 431),
        Err(_) => return fail(out, 400),
    };
    let http11 = req.version == Some(1);
    let (mut close, mut keep_alive, mut host) = (false, false, false);
    let mut length = None;
    for h in req.headers.iter() {
        let is = |name: &str| h.name.eq_ignore_ascii_case(name);
        if is("connection") {
            for token in h.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if is("content-length") {
            // Digits only (`usize::from_str` takes a `+`); two
            // different lengths would be a request smuggling attempt.
            let n = Some(h.value)
                .filter(|v| !v.is_empty() && v.iter().all(u8::is_ascii_digit))
                .and_then(|v| core::str::from_utf8(v).ok()?.parse::<usize>().ok());
            if n.is_none() || length.is_some_and(|l| Some(l) != n) {
                return fail(out, 400);
            }
            length = n;
        } else if is("transfer-encoding") {
            return fail(out, 400); // chunked is not decoded
        }
        host |= is("host");
    }
    if http11 && !host {
        return fail(out, 400);
    }
    let keep = !close && (http11 || keep_alive);
    let path = req.path.unwrap_or("/");
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    let head = req.method == Some("HEAD");
    if !head && req.method != Some("GET") {
        respond(out, 405, b"method not allowed\n", false, keep);
    } else if path == "/status" {
        let mut body = [0u8; STATUS_BODY];
        let mut w = Cursor::new(&mut body);
        match status(&mut w) {
            Ok(()) => {
                let len = w.len;
                respond(out, 200, &body[..len], head, keep)
            }
            Err(_) => respond(out, 500, b"status too large\n", head, keep),
        }
    } else {
        respond(out, 404, b"not found\n", head, keep);
    }
    let body = length.unwrap_or(0);
    Some(Done { used, body, keep })
}

/// An error response, then a close.
fn fail(out: &mut Cursor<'_>, code: u16) -> Option<Done> {
    let body: &[u8] = match code {
        431 => b"request header fields too large\n",
        _ => b"bad request\n",
    };
    respond(out, code, body, false, false);
    Some(Done::default())
}

/// Writes a response to `out`, which has `MAX_RESPONSE` bytes of room
/// (the caller flushed first); a longer one would be cut short.
fn respond(out: &mut Cursor<'_>, code: u16, body: &[u8], head: bool, keep: bool) {
    let (reason, ctype) = match code {
        200 => ("OK", "application/json"),
        400 => ("Bad Request", "text/plain"),
        404 => ("Not Found", "text/plain"),
        405 => ("Method Not Allowed", "text/plain\r\nAllow: GET, HEAD"),
        431 => ("Request Header Fields Too Large", "text/plain"),
        _ => ("Internal Server Error", "text/plain"),
    };
    let _ = write!(
        out,
        "HTTP/1.1 {code} {reason}\r\nServer: pinion-http_status\r\nContent-Type: {ctype}\r\n\
         Content-Length: {}\r\nConnection: {}\r\n\r\n",
        body.len(),
        if keep { "keep-alive" } else { "close" },
    );
    if !head {
        let _ = out.put(body);
    }
}

/// Text into a fixed byte buffer; `fmt::Error` when it is full.
pub struct Cursor<'a> {
    buf: &'a mut [u8],
    /// Bytes written so far.
    pub len: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(buf: &'a mut [u8]) -> Self {
        Cursor { buf, len: 0 }
    }

    pub fn put(&mut self, bytes: &[u8]) -> fmt::Result {
        let end = self.len + bytes.len();
        let dst = self.buf.get_mut(self.len..end).ok_or(fmt::Error)?;
        dst.copy_from_slice(bytes);
        self.len = end;
        Ok(())
    }
}

impl fmt::Write for Cursor<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.put(s.as_bytes())
    }
}

/// Rewrites a flat struct's `Debug` text, `Name { a: 1, b: 2 }`, as the
/// JSON object `{"a":1,"b":2}` on the fly: the backends' counters are such
/// structs of integers, and generic code knows only that they are `Debug`.
/// Anything else (strings, nesting) is `fmt::Error`.
/// The state: past the opening brace; inside a field name.
pub struct DebugAsJson<'w, 'a>(pub &'w mut Cursor<'a>, pub (bool, bool));

impl fmt::Write for DebugAsJson<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let Self(out, (open, name)) = self;
        for c in s.bytes() {
            if !*open {
                // Skip the struct's name, up to its brace.
                *open = c == b'{';
                if *open {
                    out.put(b"{")?;
                }
                continue;
            }
            if *name && !(c.is_ascii_alphanumeric() || c == b'_') {
                *name = false;
                out.put(b"\"")?;
            }
            match c {
                _ if *name => out.put(&[c])?,
                b'a'..=b'z' | b'A'..=b'Z' | b'_' => {
                    *name = true;
                    out.put(&[b'"', c])?;
                }
                b'0'..=b'9' | b':' | b',' | b'}' => out.put(&[c])?,
                b' ' => {}
                _ => return Err(fmt::Error),
            }
        }
        Ok(())
    }
}
