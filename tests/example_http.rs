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
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

mod example_proc;

/// Bound on every single wait of these tests.
const WAIT: Duration = Duration::from_secs(10);

/// A test per backend, each with its own server (started with the
/// arguments given); a backend this build lacks has no tests.
macro_rules! on_each_backend {
    ($($t:ident($($arg:literal),*)),* $(,)?) => {
        #[cfg(feature = "epoll")]
        mod epoll {
            $(#[test] fn $t() { super::with_server("epoll", &[$($arg),*], super::$t) })*
        }
        #[cfg(feature = "uring")]
        mod uring {
            $(#[test] fn $t() { super::with_server("uring", &[$($arg),*], super::$t) })*
        }
    };
}

on_each_backend!(
    curl_gets_status_as_json_and_404_elsewhere(),
    curl_reuses_the_connection(),
    bad_requests_get_400_or_431_and_a_close(),
    pipelined_requests_are_answered_in_order(),
    http_1_0_closes_unless_keep_alive(),
    a_slow_client_does_not_block_others(),
    idle_connections_are_closed("--idle-ms", "300"),
    connections_over_max_conns_are_refused_and_serving_goes_on("--max-conns", "1"),
    wrk_sees_no_errors(),
    sigterm_exits_0(),
);

fn with_server(backend: &str, args: &[&str], test: fn(Server)) {
    if let Some(srv) = Server::start(backend, args) {
        test(srv);
    }
}

// ---- the server process --------------------------------------------------------

/// The example running as a child; killed when dropped, on every path.
struct Server {
    backend: String,
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

impl Server {
    /// Starts the server on port 0 with `args`; `None` when the backend is
    /// unavailable on this kernel (as the uring tests skip).
    fn start(backend: &str, args: &[&str]) -> Option<Server> {
        let child = example_proc::command("http_status", "uring", &[])
            .args(["0", "--backend", backend])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning http_status");
        let mut srv = Server {
            backend: backend.to_string(),
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            stderr: Arc::default(),
        };
        let (pipe, lines) = (srv.child.stderr.take().unwrap(), srv.stderr.clone());
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let _ = tx.send(line.clone());
                lines.lock().unwrap().push(line);
            }
        });
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            // Exited (the example built without this backend's feature,
            // say: build it with the test's features) or hung.
            let Ok(line) = rx.recv_timeout(left) else {
                panic!("http_status did not start on {backend}: {:?}", srv.log())
            };
            if let Some(a) = line.strip_prefix("http_status: listening on ") {
                srv.addr = a.parse().expect("the bound address");
                return Some(srv);
            }
            if line.contains("unavailable") {
                eprintln!("SKIPPED on {backend}: {line}");
                return None;
            }
        }
    }

    fn log(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn connect(&self) -> Client {
        let s = TcpStream::connect(self.addr).expect("connect");
        s.set_read_timeout(Some(WAIT)).unwrap();
        s.set_write_timeout(Some(WAIT)).unwrap();
        Client(s)
    }

    /// The `/status` document, over a connection of its own.
    fn status(&self) -> Json {
        let mut c = self.connect();
        c.send(&with("Connection: close"));
        let r = c.response();
        assert_eq!(r.code, 200);
        parse_json(&r.body)
    }
}

/// Asserts that no more than `max` has passed since `t`.
fn within(t: Instant, max: Duration) {
    assert!(t.elapsed() < max, "took {:?}", t.elapsed());
}

/// Retries `f` every 50 ms until it holds, at most 100 times.
fn eventually(mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..100 {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

// ---- a raw HTTP client -------------------------------------------------------------

struct Client(TcpStream);

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

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").into_bytes()
}

impl Client {
    fn send(&mut self, bytes: &[u8]) {
        self.0.write_all(bytes).expect("sending the request");
    }

    fn get(&mut self, path: &str) -> Response {
        self.send(&get(path));
        self.response()
    }

    fn response(&mut self) -> Response {
        self.try_response(false).expect("a response")
    }

    /// Reads one response (`to_head`: to a HEAD, no body); `None` at the
    /// end of stream before its first byte.
    fn try_response(&mut self, to_head: bool) -> Option<Response> {
        let mut bytes = Vec::new();
        let mut byte = [0u8; 1];
        // Byte by byte: the next pipelined response stays in the socket.
        while !bytes.ends_with(b"\r\n\r\n") {
            match self.0.read(&mut byte) {
                Ok(0) if bytes.is_empty() => return None,
                Ok(0) => panic!("end of stream in a head: {bytes:?}"),
                Ok(_) => bytes.push(byte[0]),
                Err(e) => panic!("reading a response head: {e}"),
            }
            assert!(bytes.len() < 16 * 1024, "a head that does not end");
        }
        let head = String::from_utf8(bytes).expect("an ASCII head");
        let code = head.split(' ').nth(1).and_then(|c| c.parse().ok());
        let code = code.unwrap_or_else(|| panic!("a status line: {head:?}"));
        let mut r = Response {
            code,
            head,
            body: String::new(),
        };
        let len = r.header("content-length").expect("a Content-Length");
        let mut body = vec![0u8; if to_head { 0 } else { len.parse().unwrap() }];
        self.0.read_exact(&mut body).expect("the body");
        r.body = String::from_utf8(body).expect("a UTF-8 body");
        Some(r)
    }

    /// The server closes: end of stream (not a reset), within the bound.
    fn expect_eof(&mut self) {
        let mut rest = Vec::new();
        match self.0.read_to_end(&mut rest) {
            Ok(_) => assert!(rest.is_empty(), "bytes after the last response: {rest:?}"),
            Err(e) => panic!("expected a close, got {e}"),
        }
    }
}

// ---- external programs -------------------------------------------------------------

/// Runs `program` or fails naming the Debian package that provides it.
fn run(program: &str, package: &str, args: &[&str]) -> Output {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output();
    match out {
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

fn curl_code(url: &str) -> String {
    let out = curl(&["--output", "/dev/null", "--write-out", "%{http_code}", url]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

// ---- a small JSON reader (no serde here) ------------------------------------------

/// What the server's JSON is made of: objects, strings without escapes,
/// numbers, booleans.
#[derive(Debug, PartialEq)]
enum Json {
    Bool(bool),
    Num(f64),
    Str(String),
    Obj(Vec<(String, Json)>),
}

impl Json {
    fn get(&self, key: &str) -> &Json {
        let Json::Obj(fields) = self else {
            panic!("not an object")
        };
        let v = fields.iter().find(|(k, _)| k == key).map(|(_, v)| v);
        v.unwrap_or_else(|| panic!("no key {key:?} in {self:?}"))
    }

    fn num(&self, key: &str) -> f64 {
        match self.get(key) {
            Json::Num(n) => *n,
            v => panic!("{key} is not a number: {v:?}"),
        }
    }
}

/// Parses a whole document; panics on anything else.
fn parse_json(text: &str) -> Json {
    let mut rest = text.as_bytes();
    let v = json_value(&mut rest);
    assert!(rest.trim_ascii().is_empty(), "JSON: more after {text:?}");
    v
}

/// The first `n` bytes of `s`, taken off it.
fn take(s: &mut &[u8], n: usize) -> String {
    let (head, tail) = s.split_at(n);
    *s = tail;
    std::str::from_utf8(head).unwrap().to_string()
}

fn json_value(s: &mut &[u8]) -> Json {
    *s = s.trim_ascii_start();
    match s.first() {
        Some(b'"') => {
            let n = s[1..].iter().position(|&c| c == b'"').expect("a '\"'");
            let text = take(s, n + 2);
            assert!(!text.contains('\\'), "JSON: no escapes expected");
            Json::Str(text[1..=n].to_string())
        }
        _ if s.starts_with(b"true") => Json::Bool(take(s, 4) == "true"),
        _ if s.starts_with(b"false") => Json::Bool(take(s, 5) == "true"),
        Some(b'{') => {
            take(s, 1);
            let mut fields = Vec::new();
            if s.trim_ascii_start().starts_with(b"}") {
                *s = &s.trim_ascii_start()[1..];
                return Json::Obj(fields);
            }
            loop {
                let Json::Str(key) = json_value(s) else {
                    panic!("JSON: a key")
                };
                *s = s.trim_ascii_start().strip_prefix(b":").expect("a ':'");
                fields.push((key, json_value(s)));
                *s = s.trim_ascii_start();
                let sep = s.first().copied();
                *s = s.get(1..).unwrap_or_default();
                match sep {
                    Some(b',') => continue,
                    Some(b'}') => return Json::Obj(fields),
                    c => panic!("JSON: {c:?} in an object"),
                }
            }
        }
        _ => {
            let n = s.iter().take_while(|c| b"0123456789+-.eE".contains(c));
            let n = n.count();
            let text = take(s, n);
            Json::Num(text.parse().expect("a JSON number"))
        }
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

fn curl_gets_status_as_json_and_404_elsewhere(srv: Server) {
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
    let name = if srv.backend == "uring" {
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
        doc.num("tasks_in_use") >= 2.0,
        "the accept loop and this connection"
    );
    assert!(matches!(doc.get("stats"), Json::Obj(_)));
    let stats = Json::Bool(cfg!(feature = "stats"));
    assert_eq!(doc.get("stats_enabled"), &stats);
    // HEAD: the same head, no body.
    let out = curl(&["--head", &srv.url("/status")]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    assert!(text.contains("Content-Length: "), "{text}");
    for path in ["/", "/nope", "/status/x"] {
        assert_eq!(curl_code(&srv.url(path)), "404", "{path}");
    }
    assert_eq!(curl_code(&srv.url("/status?x=1")), "200", "with a query");
}

fn curl_reuses_the_connection(srv: Server) {
    let (a, b) = (srv.url("/status"), srv.url("/nope"));
    let null = "/dev/null";
    let out = curl(&["-v", "--http1.1", "-o", null, "-o", null, &a, &b]);
    assert!(out.status.success());
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("Re-using existing connection"), "{log}");
    assert!(log.contains("left intact"), "{log}");
    assert_eq!(log.matches("Connected to").count(), 1, "{log}");
    // The server saw one connection for both (and this one).
    assert_eq!(srv.status().num("connections_total"), 2.0);
}

/// A GET with the `headers` given (and `Host`).
fn with(headers: &str) -> Vec<u8> {
    format!("GET /status HTTP/1.1\r\nHost: t\r\n{headers}\r\n\r\n").into_bytes()
}

fn big_head(value_len: usize) -> Vec<u8> {
    with(&format!("X-Big: {}", "a".repeat(value_len)))
}

fn bad_requests_get_400_or_431_and_a_close(srv: Server) {
    let bad = [
        (with("Bad header"), 400),
        (b"\x01\x02 nonsense\r\n\r\n".to_vec(), 400),
        (b"GET /status HTTP/1.1\r\n\r\n".to_vec(), 400), // no Host
        (with("Content-Length: +5"), 400),
        (with("Content-Length: 1\r\nContent-Length: 2"), 400),
        (with("Transfer-Encoding: chunked\r\n\r\n0"), 400), // not decoded
        (big_head(9 * 1024), 431),
    ];
    for (req, code) in bad {
        let mut c = srv.connect();
        c.send(&req);
        let r = c.response();
        assert_eq!(r.code, code, "{:?}", String::from_utf8_lossy(&req));
        assert_eq!(r.header("connection"), Some("close"));
        c.expect_eof();
    }
    // Just under the limit is fine.
    let mut c = srv.connect();
    c.send(&big_head(7 * 1024));
    assert_eq!(c.response().code, 200);
}

fn pipelined_requests_are_answered_in_order(srv: Server) {
    let mut c = srv.connect();
    let mut all = get("/status");
    all.extend_from_slice(b"HEAD /status HTTP/1.1\r\nHost: t\r\n\r\n");
    // A body larger than the request buffer, read and discarded.
    all.extend_from_slice(b"POST /status HTTP/1.1\r\nHost: t\r\nContent-Length: 20000\r\n\r\n");
    all.resize(all.len() + 20000, b'G');
    all.extend_from_slice(b"GET /missing HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello");
    all.extend_from_slice(&with("Connection: close"));
    c.send(&all); // one write
    let first = c.response();
    let head = c.try_response(true).expect("the HEAD's response");
    let (post, missing, last) = (c.response(), c.response(), c.response());
    let codes = [first.code, head.code, post.code, missing.code, last.code];
    assert_eq!(codes, [200, 200, 405, 404, 200]);
    assert!(head.header("content-length").is_some_and(|n| n != "0"));
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
    assert_eq!(missing.body, "not found\n");
    let (n1, n5) = (parse_json(&first.body), parse_json(&last.body));
    let served = n5.num("requests_served") - n1.num("requests_served");
    assert_eq!(served, 4.0, "answered in the order sent");
    assert_eq!(last.header("connection"), Some("close"));
    c.expect_eof();
}

fn http_1_0_closes_unless_keep_alive(srv: Server) {
    let mut c = srv.connect();
    c.send(b"GET /status HTTP/1.0\r\n\r\n");
    let r = c.response();
    assert_eq!((r.code, r.header("connection")), (200, Some("close")));
    c.expect_eof();
    let mut c = srv.connect();
    for _ in 0..2 {
        c.send(b"GET /status HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        let r = c.response();
        assert_eq!((r.code, r.header("connection")), (200, Some("keep-alive")));
    }
}

fn a_slow_client_does_not_block_others(srv: Server) {
    let mut slow = srv.connect();
    slow.send(b"GET /status HTTP/1.1\r\nHo");
    let mut quick = srv.connect();
    for _ in 0..3 {
        let r = quick.get("/status");
        assert_eq!(r.code, 200);
        // Answered while the slow one is open (admitted, its task
        // waiting for the rest of its head), with no time limit to guess:
        // a server that waited for it would answer only once the slow
        // one's head came, or close it on its idle timeout, and the
        // slow request below would then fail.
        assert_eq!(parse_json(&r.body).num("connections_open"), 2.0);
    }
    // The slow one was waiting, not dropped: its request completes.
    slow.send(b"st: t\r\n\r\n");
    assert_eq!(slow.response().code, 200);
}

fn idle_connections_are_closed(srv: Server) {
    // Silent from the start; then idle after a response.
    for request in [false, true] {
        let mut c = srv.connect();
        if request {
            assert_eq!(c.get("/status").code, 200);
        }
        let t = Instant::now();
        c.expect_eof();
        assert!(t.elapsed() > Duration::from_millis(250), "closed early");
        within(t, Duration::from_secs(5));
    }
    // A head trickled a byte at a time does not keep it open: the whole
    // head must come within the idle time (a timeout per read would let
    // this go on for 4 s).
    let mut c = srv.connect();
    c.send(b"GET /status HTTP/1.1\r\nHost: t\r\nX-Slow: ");
    c.0.set_read_timeout(Some(Duration::from_millis(10)))
        .unwrap();
    let t = Instant::now();
    let closed = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(40));
        let mut byte = [0u8; 1];
        match c.0.write_all(b".").and_then(|()| c.0.read(&mut byte)) {
            Ok(0) => true,
            Ok(_) => panic!("a response to a head that never ended"),
            Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        }
    });
    assert!(closed, "a trickling client kept its connection for 4 s");
    within(t, Duration::from_secs(2));
}

fn connections_over_max_conns_are_refused_and_serving_goes_on(srv: Server) {
    let mut held = srv.connect();
    assert_eq!(held.get("/status").code, 200);
    for _ in 0..2 {
        let mut c = srv.connect();
        assert_eq!(c.response().code, 503);
        c.expect_eof();
    }
    // The stderr reader thread may lag the server a little.
    let refusals = || srv.log().iter().filter(|l| l.contains("refusing")).count();
    assert!(eventually(|| refusals() > 0), "not logged: {:?}", srv.log());
    assert_eq!(refusals(), 1, "logged once: {:?}", srv.log());
    // The held connection is still served; once closed, its slot is free.
    assert_eq!(held.get("/status").code, 200);
    drop(held);
    let served = eventually(|| {
        let mut c = srv.connect();
        c.send(&get("/status"));
        c.try_response(false).is_some_and(|r| r.code == 200)
    });
    assert!(
        served,
        "none served after the held one closed: {:?}",
        srv.log()
    );
}

fn wrk_sees_no_errors(srv: Server) {
    let out = run("wrk", "wrk", &["-t1", "-c16", "-d3s", &srv.url("/status")]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "wrk: {text}{:?}", out.stderr);
    let count = text
        .lines()
        .find_map(|l| l.trim().split_once(" requests in "));
    let requests: u64 = count.expect("a request count").0.parse().unwrap();
    assert!(requests > 0, "{text}");
    if let Some(line) = text.lines().find(|l| l.contains("Socket errors")) {
        // Every count is zero: nothing but zeros between the non-digits.
        let mut numbers = line.split(|c: char| !c.is_ascii_digit());
        assert!(
            numbers.all(|n| n.trim_start_matches('0').is_empty()),
            "{text}"
        );
    }
    assert!(!text.contains("Non-2xx"), "{text}");
    let rate = text.lines().find(|l| l.starts_with("Requests/sec:"));
    let rate = rate.unwrap_or("?");
    eprintln!("wrk on {}: {requests} requests, {rate}", srv.backend);
    // Every wrk connection is closed and its task gone.
    let settled = eventually(|| {
        let doc = srv.status();
        doc.num("connections_open") == 1.0 && doc.num("tasks_in_use") == 2.0
    });
    assert!(settled, "connections left after wrk: {:?}", srv.status());
}

fn sigterm_exits_0(mut srv: Server) {
    // A keep-alive connection stays open across the stop.
    let mut c = srv.connect();
    assert_eq!(c.get("/status").code, 200);
    let pid = srv.child.id() as libc::pid_t;
    // SAFETY: signals our own child, still running (not reaped).
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(st) = srv.child.try_wait().expect("try_wait") {
            break st;
        }
        assert!(Instant::now() < deadline, "running {WAIT:?} after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit status {status}: {:?}", srv.log());
    // The reader thread may lag the exit a little.
    let summary = || {
        srv.log()
            .iter()
            .any(|l| l.contains("stopped after 1 requests"))
    };
    let summary = eventually(summary);
    assert!(summary, "{:?}", srv.log());
}
