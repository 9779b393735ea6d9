//! `http_status`'s request handling (`examples/shared/http.rs`) on
//! arbitrary bytes: every complete head gets exactly one well-formed
//! response whose `Content-Length` matches the body written (or no body,
//! for HEAD) and whose `Connection` matches the keep-alive decision;
//! errors close; an incomplete head writes nothing; and the answer does
//! not depend on how the bytes arrived (a prefix that is answered is
//! answered the same way once more bytes are in).
#![no_main]

#[path = "../../examples/shared/http.rs"]
mod http;

use http::{answer, Cursor, Done, HEADER_LIMIT, MAX_RESPONSE};

fn run(bytes: &[u8]) -> (Option<Done>, Vec<u8>) {
    let mut out = [0u8; MAX_RESPONSE];
    let mut w = Cursor::new(&mut out);
    let done = answer(bytes, &mut w, |w| w.put(b"{\"ok\":1}\n"));
    let len = w.len;
    (done, out[..len].to_vec())
}

fn check(bytes: &[u8], done: Option<Done>, out: &[u8]) {
    let Some(done) = done else {
        assert!(out.is_empty(), "nothing is written for an incomplete head");
        assert!(bytes.len() < HEADER_LIMIT, "a full buffer is answered");
        return;
    };
    assert!(done.used <= bytes.len().min(HEADER_LIMIT), "{done:?}");
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut resp = httparse::Response::new(&mut headers);
    let head = match resp.parse(out) {
        Ok(httparse::Status::Complete(n)) => n,
        r => panic!(
            "response not well-formed ({r:?}): {:?}",
            String::from_utf8_lossy(out)
        ),
    };
    let code = resp.code.expect("a status code");
    assert!(
        [200, 400, 404, 405, 431, 500].contains(&code),
        "status {code}"
    );
    if code == 400 || code == 431 {
        assert_eq!(done, Done::default(), "an error closes");
    }
    let value = |name: &str| {
        resp.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
            .unwrap_or_else(|| panic!("no {name} header"))
    };
    let length: usize = std::str::from_utf8(value("content-length"))
        .unwrap()
        .parse()
        .unwrap();
    let body = out.len() - head;
    assert!(
        body == length || body == 0,
        "Content-Length {length}, body {body}"
    );
    let connection = value("connection");
    assert_eq!(connection == b"keep-alive", done.keep, "{done:?}");
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let (cut, bytes) = match data {
        [a, b, rest @ ..] => (u16::from_le_bytes([*a, *b]) as usize, rest),
        _ => return,
    };
    let (done, out) = run(bytes);
    check(bytes, done, &out);
    // The same bytes, of which only a prefix had arrived.
    let cut = cut % (bytes.len() + 1);
    let (early, early_out) = run(&bytes[..cut]);
    check(&bytes[..cut], early, &early_out);
    if early.is_some() {
        assert_eq!(
            (early, early_out),
            (done, out),
            "answered differently after {cut} bytes"
        );
    }
});
