//! `examples/http_status.rs` run as a process, on each backend: curl,
//! wrk and raw `std::net::TcpStream` clients on loopback check the
//! responses, keep-alive, pipelining, the error paths, the timeouts and
//! the exit on SIGTERM.
//!
//! Build the example first (`cargo test` without `--test` does it):
//! `cargo build -p pinion --features uring,stats,embedded-io --example http_status`.
//! curl and wrk must be installed (Debian packages `curl` and `wrk`); a
//! missing one fails the test that needs it.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Bound on every single wait of these tests.
const WAIT: Duration = Duration::from_secs(10);

macro_rules! on_each_backend {
    ($($t:ident),* $(,)?) => {
        mod epoll {
            $(#[test] fn $t() { super::$t("epoll") })*
        }
        #[cfg(feature = "uring")]
        mod uring {
            $(#[test] fn $t() { super::$t("uring") })*
        }
    };
}

on_each_backend!(
    status_is_json,
    curl_gets_404_for_other_paths,
    curl_reuses_the_connection,
    malformed_requests_get_400_and_a_close,
    a_head_over_8_kib_gets_431_and_a_close,
    pipelined_requests_are_answered_in_order,
    bodies_are_discarded_and_chunked_is_refused,
    http_1_0_closes_unless_keep_alive,
    a_slow_client_does_not_block_others,
    idle_connections_are_closed,
    connections_over_max_conns_are_refused_and_serving_goes_on,
    wrk_sees_no_errors,
    sigterm_exits_0,
);

// ---- the server process --------------------------------------------------------

/// The example running as a child; killed when dropped, on every path.
struct Server {
    child: Child,
    addr: SocketAddr,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn example() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/debug/deps/example_http-HASH -> target/debug/examples/http_status
    let path = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("examples").join("http_status"))
        .expect("the test binary's directory");
    if !path.exists() {
        panic!(
            "{} is missing: build the examples first: `cargo test` builds them (or \
             `cargo build --example http_status --features ...`)",
            path.display()
        );
    }
    path
}

impl Server {
    /// Starts the server on port 0 with `args`; `None` when the backend is
    /// unavailable on this kernel (as the uring tests skip).
    fn start(backend: &str, args: &[&str]) -> Option<Server> {
        let child = Command::new(example())
            .args(["0", "--backend", backend])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning http_status");
        let mut server = Server {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            stderr: Arc::default(),
        };
        let pipe = server.child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        let lines = server.stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let _ = tx.send(line.clone());
                lines.lock().unwrap().push(line);
            }
        });
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(a) = line.strip_prefix("http_status: listening on ") {
                        server.addr = a.parse().expect("the bound address");
                        return Some(server);
                    }
                    if line.contains("unavailable") {
                        eprintln!("SKIPPED on {backend}: {line}");
                        return None;
                    }
                }
                // Exited (the example built without this backend's
                // feature, say: build it with the test's features) or hung.
                Err(_) => panic!("http_status did not start on {backend}: {:?}", server.log()),
            }
        }
    }

    fn log(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr).expect("connect");
        s.set_read_timeout(Some(WAIT)).unwrap();
        s.set_write_timeout(Some(WAIT)).unwrap();
        s
    }

    /// The `/status` document, over a connection of its own.
    fn status(&self) -> Json {
        let mut s = self.connect();
        send(
            &mut s,
            b"GET /status HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        );
        let r = read_response(&mut s, false).expect("a response");
        assert_eq!(r.code, 200);
        parse_json(&r.body)
    }
}

// ---- raw HTTP clients -----------------------------------------------------------

fn send(s: &mut TcpStream, bytes: &[u8]) {
    s.write_all(bytes).expect("sending the request");
}

struct Response {
    code: u16,
    head: String,
    body: String,
}

impl Response {
    /// The value of header `name` (case-insensitive).
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then_some(v.trim())
        })
    }
}

/// Reads one response (`to_head`: to a HEAD request, no body); `None` at
/// end of stream before its first byte.
fn read_response(s: &mut TcpStream, to_head: bool) -> Option<Response> {
    let mut bytes = Vec::new();
    let mut byte = [0u8; 1];
    // Byte by byte: the next pipelined response stays in the socket.
    while !bytes.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(0) if bytes.is_empty() => return None,
            Ok(0) => panic!(
                "end of stream inside a head: {:?}",
                String::from_utf8_lossy(&bytes)
            ),
            Ok(_) => bytes.push(byte[0]),
            Err(e) => panic!("reading a response head: {e}"),
        }
        assert!(bytes.len() < 16 * 1024, "a head that does not end");
    }
    let head = String::from_utf8(bytes).expect("an ASCII head");
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("a status line: {head:?}"));
    let mut r = Response {
        code,
        head,
        body: String::new(),
    };
    let len: usize = r
        .header("content-length")
        .map(|v| v.parse().expect("a Content-Length"))
        .expect("every response has a Content-Length");
    if !to_head {
        let mut body = vec![0u8; len];
        s.read_exact(&mut body).expect("the body");
        r.body = String::from_utf8(body).expect("a UTF-8 body");
    }
    Some(r)
}

/// The server closes: end of stream, not a reset, within the bound.
fn expect_eof(s: &mut TcpStream) {
    let mut rest = Vec::new();
    match s.read_to_end(&mut rest) {
        Ok(_) => assert!(rest.is_empty(), "bytes after the last response: {rest:?}"),
        Err(e) => panic!("expected a close, got {e}"),
    }
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").into_bytes()
}

// ---- external programs -------------------------------------------------------------

/// Runs `program` or fails naming the Debian package that provides it.
fn run(program: &str, package: &str, args: &[&str]) -> Output {
    match Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == ErrorKind::NotFound => panic!(
            "`{program}` is not installed: this test needs it (Debian package `{package}`: \
             apt-get install {package})"
        ),
        Err(e) => panic!("running {program}: {e}"),
    }
}

fn curl(args: &[&str]) -> Output {
    let mut all = vec!["--silent", "--show-error", "--max-time", "10"];
    all.extend_from_slice(args);
    run("curl", "curl", &all)
}

// ---- a small JSON reader (no serde in this crate) ------------------------------------

#[derive(Debug, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    fn get(&self, key: &str) -> &Json {
        match self {
            Json::Obj(fields) => fields
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v)
                .unwrap_or_else(|| panic!("no key {key:?} in {self:?}")),
            _ => panic!("not an object: {self:?}"),
        }
    }

    fn num(&self, key: &str) -> f64 {
        match self.get(key) {
            Json::Num(n) => *n,
            v => panic!("{key} is not a number: {v:?}"),
        }
    }
}

/// Parses a whole document; panics on anything that is not JSON.
fn parse_json(text: &str) -> Json {
    let mut p = JsonParser {
        s: text.as_bytes(),
        i: 0,
    };
    let v = p.value();
    p.ws();
    assert_eq!(
        p.i,
        p.s.len(),
        "trailing bytes after the JSON value in {text:?}"
    );
    v
}

struct JsonParser<'a> {
    s: &'a [u8],
    i: usize,
}

impl JsonParser<'_> {
    fn ws(&mut self) {
        while self.s.get(self.i).is_some_and(|c| c.is_ascii_whitespace()) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) {
        self.ws();
        let got = self.s.get(self.i).copied();
        assert_eq!(got, Some(c), "JSON: expected {:?} at {}", c as char, self.i);
        self.i += 1;
    }

    fn value(&mut self) -> Json {
        self.ws();
        let rest = &self.s[self.i..];
        for (word, v) in [
            ("null", Json::Null),
            ("true", Json::Bool(true)),
            ("false", Json::Bool(false)),
        ] {
            if rest.starts_with(word.as_bytes()) {
                self.i += word.len();
                return v;
            }
        }
        match rest.first() {
            Some(b'"') => Json::Str(self.string()),
            Some(b'[') => {
                self.i += 1;
                let mut items = Vec::new();
                self.ws();
                if self.s.get(self.i) == Some(&b']') {
                    self.i += 1;
                    return Json::Arr(items);
                }
                loop {
                    items.push(self.value());
                    self.ws();
                    self.i += 1;
                    match self.s[self.i - 1] {
                        b',' => continue,
                        b']' => return Json::Arr(items),
                        c => panic!("JSON: {:?} in an array", c as char),
                    }
                }
            }
            Some(b'{') => {
                self.i += 1;
                let mut fields = Vec::new();
                self.ws();
                if self.s.get(self.i) == Some(&b'}') {
                    self.i += 1;
                    return Json::Obj(fields);
                }
                loop {
                    self.ws();
                    let k = self.string();
                    self.eat(b':');
                    fields.push((k, self.value()));
                    self.ws();
                    self.i += 1;
                    match self.s[self.i - 1] {
                        b',' => continue,
                        b'}' => return Json::Obj(fields),
                        c => panic!("JSON: {:?} in an object", c as char),
                    }
                }
            }
            _ => {
                let n = rest
                    .iter()
                    .take_while(|c| c.is_ascii_digit() || b"+-.eE".contains(c))
                    .count();
                let text = std::str::from_utf8(&rest[..n]).unwrap();
                self.i += n;
                Json::Num(
                    text.parse()
                        .unwrap_or_else(|_| panic!("JSON: bad number {text:?}")),
                )
            }
        }
    }

    /// A string without escapes (the server writes none).
    fn string(&mut self) -> String {
        self.eat(b'"');
        let n = self.s[self.i..]
            .iter()
            .position(|&c| c == b'"')
            .expect("JSON: an unterminated string");
        let s = std::str::from_utf8(&self.s[self.i..self.i + n]).unwrap();
        assert!(!s.contains('\\'), "JSON: escapes are not expected");
        self.i += n + 1;
        s.to_string()
    }
}

// ---- the tests -------------------------------------------------------------------

const KEYS: &[&str] = &[
    "uptime_ms",
    "requests_served",
    "connections_open",
    "connections_total",
    "ops_in_use",
    "ops_capacity",
    "descriptors_in_use",
    "timers_in_use",
    "tasks_in_use",
    "tasks_capacity",
];

fn status_is_json(backend: &str) {
    let Some(srv) = Server::start(backend, &[]) else {
        return;
    };
    let out = curl(&["--include", &srv.url("/status")]);
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(head.contains("Content-Type: application/json"), "{head}");
    let doc = parse_json(body);
    let name = if backend == "uring" {
        "io_uring"
    } else {
        "epoll"
    };
    assert_eq!(doc.get("backend"), &Json::Str(name.into()));
    for key in KEYS {
        assert!(doc.num(key) >= 0.0, "{key}");
    }
    assert_eq!(doc.num("requests_served"), 1.0);
    assert_eq!(doc.num("connections_open"), 1.0);
    assert!(
        doc.num("tasks_in_use") >= 3.0,
        "accept loop, signal waiter, this connection"
    );
    assert!(matches!(doc.get("stats"), Json::Obj(_)));
    assert_eq!(
        doc.get("stats_enabled"),
        &Json::Bool(cfg!(feature = "stats"))
    );

    // HEAD: the same head, no body.
    let out = curl(&["--head", &srv.url("/status")]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with("HTTP/1.1 200 OK") && text.contains("Content-Length: "),
        "{text}"
    );
}

fn curl_gets_404_for_other_paths(backend: &str) {
    let Some(srv) = Server::start(backend, &[]) else {
        return;
    };
    for path in ["/", "/nope", "/status/x"] {
        let out = curl(&[
            "--output",
            "/dev/null",
            "--write-out",
            "%{http_code}",
            &srv.url(path),
        ]);
        assert_eq!(String::from_utf8_lossy(&out.stdout), "404", "{path}");
    }
    // A query string does not change the path.
    let out = curl(&[
        "--output",
        "/dev/null",
        "--write-out",
        "%{http_code}",
        &srv.url("/status?x=1"),
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
}

fn curl_reuses_the_connection(backend: &str) {
    let Some(srv) = Server::start(backend, &[]) else {
        return;
    };
    let (a, b) = (srv.url("/status"), srv.url("/nope"));
    let out = curl(&[
        "--verbose",
        "--http1.1",
        "-o",
        "/dev/null",
        "-o",
        "/dev/null",
        &a,
        &b,
    ]);
    assert!(out.status.success());
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("Re-using existing connection"), "{log}");
    assert!(log.contains("left intact"), "{log}");
    assert_eq!(log.matches("Connected to").count(), 1, "{log}");
    // The server saw one connection for both (and this one).
    assert_eq!(srv.status().num("connections_total"), 2.0);
}

fn malformed_requests_get_400_and_a_close(backend: &str) {
    let Some(srv) = Server::start(backend, &[]) else {
        return;
    };
    let bad: [&[u8]; 5] = [
        b"GET /status HTTP/1.1\r\nHost t\r\n\r\n",
        b"\x01\x02 nonsense\r\n\r\n",
        b"GET /status HTTP/1.1\r\n\r\n", // no Host
        b"GET /status HTTP/1.1\r\nHost: t\r\nContent-Length: +5\r\n\r\n",
        b"GET /status HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    ];
    for req in bad {
        let mut s = srv.connect();
        send(&mut s, req);
        let r = read_response(&mut s, false).expect("a 400");
        assert_eq!(r.code, 400, "{:?}", String::from_utf8_lossy(req));
        assert_eq!(r.header("connection"), Some("close"));
        expect_eof(&mut s);
    }
}

fn big_head(value_len: usize) -> Vec<u8> {
    let mut req = b"GET /status HTTP/1.1\r\nHost: t\r\nX-Big: ".to_vec();
    req.resize(req.len() + value_len, b'a');
    req.extend_from_slice(b"\r\n\r\n");
    req
}

fn a_head_over_8_kib_gets_431_and_a_close(backend: &str) {
    let Some(srv) = Server::start(backend, &[]) else {
        return;
    };
    let mut s = srv.connect();
    send(&mut s, &big_head(9 * 1024));
    let r = read_response(&mut s, false).expect("a 431");
    assert_eq!(r.code, 431);
    expect_eof(&mut s);
    // Just under the limit is fine.
    let mut s = srv.connect();
    send(&mut s, &big_head(7 * 1024));
    assert_eq!(read_response(&mut s, false).expect("a 200").code, 200);
}

fn pipelined_requests_are_answered_in_order(backend: &str) {
    let Some(srv) = Server::start(backend, &[]) else {
        return;
    };
    let mut s = srv.connect();
    let mut all = get("/status");
    all.extend_from_slice(b"HEAD /status HTTP/1.1\r\nHost: t\r\n\r\n");
    all.extend_from_slice(&get("/missing"));
    all.extend_from_slice(b"GET /status HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    send(&mut s, &all); // one write
    let first = read_response(&mut s, false).expect("response 1");
    let head = read_response(&mut s, true).expect("response 2");
    let missing = read_response(&mut s, false).expect("response 3");
    let last = read_response(&mut s, false).expect("response 4");
    assert_eq!(
        [first.code, head.code, missing.code, last.code],
        [200, 200, 404, 200]
    );
    assert!(head.header("content-length").is_some_and(|n| n != "0"));
    assert_eq!(missing.body, "not found\n");
    let (n1, n4) = (parse_json(&first.body), parse_json(&last.body));
    assert_eq!(
        n4.num("requests_served") - n1.num("requests_served"),
        3.0,
        "answered in the order sent"
    );
    assert_eq!(last.header("connection"), Some("close"));
    expect_eof(&mut s);
}

fn bodies_are_discarded_and_chunked_is_refused(backend: &str) {
    let Some(srv) = Server::start(backend, &[]) else {
        return;
    };
    let mut s = srv.connect();
    // A body larger than the request buffer, then a pipelined GET.
    let mut req = b"POST /status HTTP/1.1\r\nHost: t\r\nContent-Length: 20000\r\n\r\n".to_vec();
    req.resize(req.len() + 20000, b'G');
    req.extend_from_slice(b"GET /status HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello");
    req.extend_from_slice(&get("/status"));
    send(&mut s, &req);
    let post = read_response(&mut s, false).expect("the 405");
    assert_eq!(post.code, 405);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
    assert_eq!(
        read_response(&mut s, false)
            .expect("the GET with a body")
            .code,
        200
    );
    assert_eq!(
        read_response(&mut s, false).expect("the last GET").code,
        200
    );
    // Chunked bodies are not decoded: 400 and close.
    let mut s = srv.connect();
    send(
        &mut s,
        b"POST /status HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    );
    assert_eq!(read_response(&mut s, false).expect("a 400").code, 400);
    expect_eof(&mut s);
}

fn http_1_0_closes_unless_keep_alive(backend: &str) {
    let Some(srv) = Server::start(backend, &[]) else {
        return;
    };
    let mut s = srv.connect();
    send(&mut s, b"GET /status HTTP/1.0\r\n\r\n");
    let r = read_response(&mut s, false).expect("a response");
    assert_eq!((r.code, r.header("connection")), (200, Some("close")));
    expect_eof(&mut s);
    let mut s = srv.connect();
    for _ in 0..2 {
        send(
            &mut s,
            b"GET /status HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        );
        let r = read_response(&mut s, false).expect("a response");
        assert_eq!((r.code, r.header("connection")), (200, Some("keep-alive")));
    }
}

fn a_slow_client_does_not_block_others(backend: &str) {
    let Some(srv) = Server::start(backend, &[]) else {
        return;
    };
    let mut slow = srv.connect();
    send(&mut slow, b"GET /status HTTP/1.1\r\nHo");
    std::thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    let mut quick = srv.connect();
    for _ in 0..3 {
        send(&mut quick, &get("/status"));
        assert_eq!(
            read_response(&mut quick, false).expect("a response").code,
            200
        );
    }
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "served in {:?}",
        t.elapsed()
    );
    // The slow one was waiting, not dropped: its request completes.
    send(&mut slow, b"st: t\r\n\r\n");
    assert_eq!(
        read_response(&mut slow, false)
            .expect("the slow response")
            .code,
        200
    );
}

/// How long until the server closes `s`.
fn time_to_close(s: &mut TcpStream) -> Duration {
    let t = Instant::now();
    expect_eof(s);
    t.elapsed()
}

fn idle_connections_are_closed(backend: &str) {
    let Some(srv) = Server::start(backend, &["--idle-ms", "300"]) else {
        return;
    };
    let window = Duration::from_millis(250)..Duration::from_secs(5);
    // Silent from the start.
    let mut s = srv.connect();
    let d = time_to_close(&mut s);
    assert!(window.contains(&d), "closed after {d:?}");
    // Idle after a response.
    let mut s = srv.connect();
    send(&mut s, &get("/status"));
    assert_eq!(read_response(&mut s, false).expect("a response").code, 200);
    let d = time_to_close(&mut s);
    assert!(window.contains(&d), "closed after {d:?}");
    // A head trickled a byte at a time does not keep it open.
    let mut s = srv.connect();
    let t = Instant::now();
    let closed = b"GET /status HTTP/1.1\r\nHost: t\r\nX-Slow: ....................\r\n"
        .iter()
        .any(|&b| {
            std::thread::sleep(Duration::from_millis(50));
            s.write_all(&[b]).is_err()
        });
    if !closed {
        expect_eof(&mut s);
    }
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "closed after {:?}",
        t.elapsed()
    );
}

fn connections_over_max_conns_are_refused_and_serving_goes_on(backend: &str) {
    let Some(srv) = Server::start(backend, &["--max-conns", "1"]) else {
        return;
    };
    let mut held = srv.connect();
    send(&mut held, &get("/status"));
    assert_eq!(read_response(&mut held, false).expect("admitted").code, 200);
    for _ in 0..2 {
        let mut s = srv.connect();
        let r = read_response(&mut s, false).expect("a 503");
        assert_eq!(r.code, 503);
        expect_eof(&mut s);
    }
    let refusals = |srv: &Server| srv.log().iter().filter(|l| l.contains("refusing")).count();
    assert_eq!(refusals(&srv), 1, "logged once: {:?}", srv.log());
    // The held connection is still served; once closed, its slot is free.
    send(&mut held, &get("/status"));
    assert_eq!(
        read_response(&mut held, false).expect("still served").code,
        200
    );
    drop(held);
    let served = (0..100).any(|_| {
        let mut s = srv.connect();
        send(&mut s, &get("/status"));
        let ok = read_response(&mut s, false).is_some_and(|r| r.code == 200);
        if !ok {
            std::thread::sleep(Duration::from_millis(50));
        }
        ok
    });
    assert!(
        served,
        "no connection served after the held one closed: {:?}",
        srv.log()
    );
}

fn wrk_sees_no_errors(backend: &str) {
    let Some(srv) = Server::start(backend, &[]) else {
        return;
    };
    let out = run("wrk", "wrk", &["-t1", "-c16", "-d3s", &srv.url("/status")]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "wrk: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let requests: u64 = text
        .lines()
        .find_map(|l| {
            l.trim()
                .split_once(" requests in ")
                .map(|(n, _)| n.parse().unwrap())
        })
        .unwrap_or_else(|| panic!("no request count in: {text}"));
    assert!(requests > 0, "{text}");
    if let Some(line) = text.lines().find(|l| l.contains("Socket errors")) {
        let nonzero = line
            .split(|c: char| !c.is_ascii_digit())
            .any(|n| !n.is_empty() && n != "0");
        assert!(!nonzero, "{text}");
    }
    assert!(!text.contains("Non-2xx"), "{text}");
    let rate = text
        .lines()
        .find(|l| l.starts_with("Requests/sec:"))
        .unwrap_or("Requests/sec: ?");
    eprintln!("wrk on {backend}: {requests} requests, {rate}");
    // Every wrk connection is closed and its task gone (bounded wait).
    let settled = (0..100).any(|_| {
        let doc = srv.status();
        let done = doc.num("connections_open") == 1.0 && doc.num("tasks_in_use") == 3.0;
        if !done {
            std::thread::sleep(Duration::from_millis(50));
        }
        done
    });
    assert!(
        settled,
        "connections left open after wrk: {:?}",
        srv.status()
    );
}

fn sigterm_exits_0(backend: &str) {
    let Some(mut srv) = Server::start(backend, &[]) else {
        return;
    };
    // A keep-alive connection stays open across the stop.
    let mut s = srv.connect();
    send(&mut s, &get("/status"));
    assert_eq!(read_response(&mut s, false).expect("a response").code, 200);
    let pid = srv.child.id() as libc::pid_t;
    // SAFETY: sends a signal to our own child, which is still running (not reaped).
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(st) = srv.child.try_wait().expect("try_wait") {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "still running {WAIT:?} after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit status {status}: {:?}", srv.log());
    // The reader thread may lag the exit a little.
    let summary = (0..100).any(|_| {
        let found = srv
            .log()
            .iter()
            .any(|l| l.contains("stopped after 1 requests"));
        if !found {
            std::thread::sleep(Duration::from_millis(20));
        }
        found
    });
    assert!(summary, "{:?}", srv.log());
}
