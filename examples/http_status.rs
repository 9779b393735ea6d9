//! A small HTTP/1.1 server with keep-alive: `GET /status` answers 200 and
//! a JSON document of the context's counters; every other path is 404.
//!
//! ```text
//! http_status [PORT] [--bind ADDR] [--max-conns N] [--idle-ms MS] [--threads N] [--backend epoll|uring]
//! ```
//! PORT defaults to 8080 (0: the kernel picks one), ADDR to 127.0.0.1,
//! `--max-conns` to 1024, `--idle-ms` to 5000, `--threads` to 1, the
//! backend to epoll (`uring` needs the `uring` feature). Once bound it
//! prints `http_status: listening on ADDR` to stderr.
//!
//! One task per connection (`IoContext::spawn`), with a request buffer
//! and a response buffer from pools made at start-up: nothing is
//! allocated per connection or per request. A connection that finds no
//! buffer or task slot gets a best-effort 503 and is closed (logged once
//! per run of refusals); the server keeps serving the others.
//!
//! Requests are parsed with `httparse` over the bytes read so far: an
//! incomplete head reads more; a head over 8 KiB is 431 and a parse error
//! 400, both followed by a close. Pipelined requests are answered in
//! order, their responses gathered into one write. `Connection: close`
//! and HTTP/1.0 (unless `Connection: keep-alive`) close after the
//! response. A `Content-Length` body is read and discarded; a
//! `Transfer-Encoding` (chunked) body is not decoded: 400 and close. HEAD
//! answers GET's head without the body; other methods are 405. An
//! HTTP/1.1 request without `Host` is 400, as RFC 9112 requires.
//!
//! Timeouts: the next request's head must arrive within `--idle-ms` of
//! the last response (or of the accept), so an idle client and a client
//! that trickles a head byte by byte are both closed; while a body is
//! discarded, or a response written, each read or write may take
//! `--idle-ms`. Before closing after an error the server shuts down its
//! sending side and drains what the client still sends, for up to a
//! second, so the client reads the error instead of a reset.
//!
//! SIGTERM and SIGINT stop the server (a signal handler sends a datagram
//! to a UDP socket a task reads, which stops the context); it prints a
//! one-line summary and exits 0.

use core::fmt::{self, Write as _};
use core::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::process::exit;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use std::time::Duration;

use pinion::aio::{sleep, timeout};
use pinion::backend::Sched;
use pinion::buf::{BufPool, PoolBuf};
use pinion::builder::Builder;
use pinion::context::IoContext;
use pinion::net::{TcpListener, TcpStream, UdpSocket};
use pinion::sync::FutexMutex;
use pinion::{Backend, BuildError, Error, Instant, IoBuf, IoBufMut, Owned, Shutdown};

/// The largest request head (request line and headers) accepted.
const HEADER_LIMIT: usize = 8 * 1024;
/// A head of up to the limit, plus room for the start of a pipelined one.
const REQ_SIZE: usize = HEADER_LIMIT + 512;
/// Several responses, gathered from pipelined requests.
const RESP_SIZE: usize = 4096;
/// Room a response needs at most (the JSON body and the head): flush first
/// when less is left.
const MAX_RESPONSE: usize = 1536;
/// The `/status` JSON body's room.
const STATUS_BODY: usize = 1024;
/// A task slot: the connection future (432 bytes on x86-64, debug build;
/// a bigger one would be refused with `TaskTooLarge`, and logged).
const TASK_BYTES: usize = 1024;
/// The longest a closing connection is drained, and how much of it.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 256 * 1024;

type ReqBuf = PoolBuf<'static, FutexMutex, REQ_SIZE>;
type RespBuf = PoolBuf<'static, FutexMutex, RESP_SIZE>;

/// Shared by every task; made once and leaked (it lives as long as the
/// process).
struct Server<B: Backend> {
    ctx: &'static IoContext<B>,
    listener: TcpListener<'static, B>,
    reqs: BufPool<FutexMutex, REQ_SIZE>,
    resps: BufPool<FutexMutex, RESP_SIZE>,
    idle: Duration,
    threads: usize,
    started: Instant,
    requests: AtomicUsize,
    open: AtomicUsize,
    total: AtomicUsize,
    refused: AtomicUsize,
    /// A refusal was logged and no connection was admitted since.
    refusing: AtomicBool,
    /// An accept error was logged and no accept succeeded since.
    accept_failing: AtomicBool,
}

fn main() {
    let cfg = Config::parse();
    match cfg.backend.as_str() {
        #[cfg(feature = "epoll")]
        "epoll" => run::<pinion::epoll::Backend>(&cfg),
        #[cfg(not(feature = "epoll"))]
        "epoll" => fail("built without the `epoll` feature"),
        #[cfg(feature = "uring")]
        "uring" => run::<pinion::uring::Backend>(&cfg),
        #[cfg(not(feature = "uring"))]
        "uring" => fail("built without the `uring` feature: rebuild with `--features uring`"),
        other => usage(&format!("unknown backend {other} (epoll or uring)")),
    }
}

fn run<B: Backend>(cfg: &Config)
where
    Sched<B>: Sync,
{
    let n = cfg.max_conns;
    // Per connection: a read or write and the timeout's timer wait, each
    // an operation and a rendezvous slot; tasks: one per connection, the
    // accept loop and the signal waiter.
    let ctx = Builder::<B>::new()
        .ops(8 * n + 64)
        .descriptors(n + 16)
        .timers(n + 16)
        .tasks(n + 2, TASK_BYTES)
        .concurrency_hint(cfg.threads)
        .build_static()
        .unwrap_or_else(|e| match e {
            BuildError::NotSupported
            | BuildError::Disabled(_)
            | BuildError::PermissionDenied
            | BuildError::KernelTooOld(_) => fail(&format!("backend {} unavailable: {e}", B::NAME)),
            e => fail(&format!("building the context: {e}")),
        });
    let addr = SocketAddr::new(cfg.bind, cfg.port);
    let listener =
        TcpListener::bind(ctx, addr).unwrap_or_else(|e| fail(&format!("bind {addr}: {e}")));
    let s: &'static Server<B> = Box::leak(Box::new(Server {
        ctx,
        listener,
        reqs: BufPool::boxed(n),
        resps: BufPool::boxed(n),
        idle: cfg.idle,
        threads: cfg.threads,
        started: ctx.now(),
        requests: AtomicUsize::new(0),
        open: AtomicUsize::new(0),
        total: AtomicUsize::new(0),
        refused: AtomicUsize::new(0),
        refusing: AtomicBool::new(false),
        accept_failing: AtomicBool::new(false),
    }));
    stop_on_signals(ctx);
    if ctx.spawn(accept_loop(s)).is_err() {
        fail("no task slot for the accept loop");
    }
    let bound = listener
        .local_addr()
        .unwrap_or_else(|e| fail(&format!("local_addr: {e}")));
    eprintln!("http_status: listening on {bound}");
    std::thread::scope(|sc| {
        for _ in 1..cfg.threads {
            sc.spawn(|| ctx.run());
        }
        ctx.run();
    });
    eprintln!(
        "http_status: stopped after {} requests on {} connections ({} refused, {} open)",
        s.requests.load(Ordering::Relaxed),
        s.total.load(Ordering::Relaxed),
        s.refused.load(Ordering::Relaxed),
        s.open.load(Ordering::Relaxed),
    );
    exit(0)
}

// ---- accepting ----------------------------------------------------------------

async fn accept_loop<B: Backend>(s: &'static Server<B>)
where
    Sched<B>: Sync,
{
    loop {
        match s.listener.accept().await {
            Ok((conn, _peer)) => {
                s.accept_failing.store(false, Ordering::Relaxed);
                admit(s, conn);
            }
            Err(Error::OperationAborted) => return,
            // EMFILE, a full descriptor table: the connection waits in the
            // backlog; one closing meanwhile makes room.
            Err(e) => {
                if !s.accept_failing.swap(true, Ordering::Relaxed) {
                    eprintln!("http_status: accept failed: {e}; retrying");
                }
                let _ = sleep(s.ctx, Duration::from_millis(50)).await;
            }
        }
    }
}

/// Counts a connection open from its admission to the end of its task
/// (or to the drop of a future that never ran).
struct OpenGuard<B: Backend>(&'static Server<B>);

impl<B: Backend> Drop for OpenGuard<B> {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Gives the connection its buffers and its task, or refuses it.
fn admit<B: Backend>(s: &'static Server<B>, conn: Owned<TcpStream<'static, B>>)
where
    Sched<B>: Sync,
{
    s.total.fetch_add(1, Ordering::Relaxed);
    let (Some(req), Some(out)) = (s.reqs.alloc(), s.resps.alloc()) else {
        return refuse(
            s,
            &conn,
            &format_args!("all {} buffers in use", s.reqs.capacity()),
        );
    };
    let _ = conn.set_nodelay(true);
    s.open.fetch_add(1, Ordering::Relaxed);
    let guard = OpenGuard(s);
    let stream = *conn;
    match s.ctx.spawn(serve(s, conn, req, out, guard)) {
        // Detached: the task ends with its connection.
        Ok(_task) => s.refusing.store(false, Ordering::Relaxed),
        Err(r) => {
            match r.error {
                Error::TaskTooLarge(bytes) => refuse(
                    s,
                    &stream,
                    &format_args!("the connection future needs {bytes} bytes, over TASK_BYTES"),
                ),
                e => refuse(s, &stream, &format_args!("no task slot ({e})")),
            }
            // Dropping the future closes the stream and frees its buffers.
            drop(r);
        }
    }
}

/// A best-effort 503 (a non-blocking send of a static reply: no buffer,
/// no task), then the connection is closed by its owner.
fn refuse<B: Backend>(s: &Server<B>, conn: &TcpStream<'static, B>, why: &dyn fmt::Display) {
    s.refused.fetch_add(1, Ordering::Relaxed);
    if !s.refusing.swap(true, Ordering::Relaxed) {
        eprintln!("http_status: refusing connections: {why} (see --max-conns)");
    }
    let _ = conn.try_write(
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    let _ = conn.shutdown(Shutdown::Write);
}

// ---- one connection --------------------------------------------------------------

/// What the head at the start of the buffer asked for.
enum Parsed {
    /// The head is not all here yet.
    Partial,
    /// Answered; `used` bytes of head, then `body` bytes to discard.
    Answered {
        used: usize,
        body: usize,
        keep: bool,
    },
    /// An error response is written; the connection closes after it.
    Fatal,
}

async fn serve<B: Backend>(
    s: &'static Server<B>, conn: Owned<TcpStream<'static, B>>, mut req: ReqBuf, mut out: RespBuf,
    _open: OpenGuard<B>,
) where
    Sched<B>: Sync,
{
    let ctx = s.ctx;
    let mut idle_since = ctx.now();
    // Body bytes of the last request not read yet.
    let mut skip = 0usize;
    loop {
        // Answer every complete request buffered, in order.
        let mut at = 0;
        let mut close = false;
        loop {
            let n = skip.min(req.bytes_len() - at);
            at += n;
            skip -= n;
            if skip > 0 || at == req.bytes_len() {
                break;
            }
            if out.spare() < MAX_RESPONSE {
                let Some(b) = flush(s, &conn, out).await else {
                    return;
                };
                out = b;
            }
            match answer(s, &req.as_slice()[at..], &mut out) {
                Parsed::Partial => break,
                Parsed::Answered { used, body, keep } => {
                    at += used;
                    skip = body;
                    if !keep {
                        close = true;
                        break;
                    }
                }
                Parsed::Fatal => {
                    close = true;
                    break;
                }
            }
        }
        compact(&mut req, at);
        if out.bytes_len() > 0 {
            let Some(b) = flush(s, &conn, out).await else {
                return;
            };
            out = b;
            idle_since = ctx.now();
        }
        if close {
            return linger(s, &conn, req).await;
        }
        let wait = if skip > 0 {
            s.idle
        } else {
            (idle_since + s.idle).saturating_duration_since(ctx.now())
        };
        // A timeout drops the read (and the buffer with it, once the read
        // is cancelled): the connection closes.
        let Ok((r, b)) = read_for(ctx, wait, &conn, req).await else {
            return;
        };
        req = b;
        if r.is_err() {
            return; // end of stream, reset
        }
        if skip > 0 {
            idle_since = ctx.now(); // a body is progress
        }
    }
}

/// Writes every gathered response; `None` if the connection is done.
async fn flush<B: Backend>(
    s: &Server<B>, conn: &TcpStream<'static, B>, out: RespBuf,
) -> Option<RespBuf>
where
    Sched<B>: Sync,
{
    match write_for(s.ctx, s.idle, conn, out).await {
        Ok((Ok(()), mut out)) => {
            out.clear();
            Some(out)
        }
        _ => None,
    }
}

/// `conn.read(buf)` for at most `d`, as a plain function whose future is
/// declared `Send`: spawning an `async fn` that awaits the read directly
/// fails ("implementation of `IoBufMut` is not general enough"), because
/// rustc checks the task's `Send` with lifetimes erased and `PoolBuf` is
/// an I/O buffer only as `PoolBuf<'static, ..>`. Here the lifetime is
/// still known.
fn read_for<'a, B: Backend>(
    ctx: &'static IoContext<B>, d: Duration, conn: &'a TcpStream<'static, B>, buf: ReqBuf,
) -> impl Future<Output = pinion::Result<(pinion::Result<usize>, ReqBuf)>> + Send + 'a
where
    Sched<B>: Sync,
{
    timeout(ctx, d, conn.read(buf))
}

/// `conn.write_all(buf)` for at most `d` (a plain function: see [`read_for`]).
fn write_for<'a, B: Backend>(
    ctx: &'static IoContext<B>, d: Duration, conn: &'a TcpStream<'static, B>, buf: RespBuf,
) -> impl Future<Output = pinion::Result<(pinion::Result<()>, RespBuf)>> + Send + 'a
where
    Sched<B>: Sync,
{
    timeout(ctx, d, conn.write_all(buf))
}

/// Moves the bytes after `at` to the front.
fn compact(buf: &mut ReqBuf, at: usize) {
    let len = buf.bytes_len();
    if at > 0 {
        buf.as_mut_full().copy_within(at..len, 0);
        buf.set_len(len - at);
    }
}

/// Half-closes, then reads and drops what the client still sends (for a
/// bounded time and amount), so that closing does not reset the
/// connection before the client has read the last response.
async fn linger<B: Backend>(s: &Server<B>, conn: &TcpStream<'static, B>, mut buf: ReqBuf)
where
    Sched<B>: Sync,
{
    let _ = conn.shutdown(Shutdown::Write);
    let until = s.ctx.now() + LINGER;
    let mut drained = 0;
    while drained < LINGER_BYTES {
        buf.clear();
        let left = until.saturating_duration_since(s.ctx.now());
        match read_for(s.ctx, left, conn, buf).await {
            Ok((Ok(n), b)) => {
                buf = b;
                drained += n;
            }
            _ => return,
        }
    }
}

// ---- HTTP ----------------------------------------------------------------------

/// Parses the head at the start of `bytes` and writes its response to `out`.
fn answer<B: Backend>(s: &Server<B>, bytes: &[u8], out: &mut RespBuf) -> Parsed
where
    Sched<B>: Sync,
{
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    let used = match req.parse(bytes) {
        Ok(httparse::Status::Complete(n)) if n <= HEADER_LIMIT => n,
        Ok(httparse::Status::Complete(_)) | Err(httparse::Error::TooManyHeaders) => {
            return fatal(s, out, 431)
        }
        Ok(httparse::Status::Partial) if bytes.len() >= HEADER_LIMIT => return fatal(s, out, 431),
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return fatal(s, out, 400),
    };
    let http11 = req.version == Some(1);
    let (mut close, mut keep_alive, mut host) = (false, false, false);
    let mut length: Option<usize> = None;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if h.name.eq_ignore_ascii_case("content-length") {
            // Digits only (`usize::from_str` would take a `+`); two
            // different lengths are a smuggling attempt.
            let n = parse_length(h.value);
            if n.is_none() || (length.is_some() && length != n) {
                return fatal(s, out, 400);
            }
            length = n;
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // Chunked bodies are not decoded (see the module docs).
            return fatal(s, out, 400);
        } else if h.name.eq_ignore_ascii_case("host") {
            host = true;
        }
    }
    if http11 && !host {
        return fatal(s, out, 400);
    }
    let keep = !close && (http11 || keep_alive);
    let path = req.path.unwrap_or("/");
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    let head = match req.method {
        Some("GET") => false,
        Some("HEAD") => true,
        _ => {
            respond(
                s,
                out,
                405,
                "text/plain",
                b"method not allowed\n",
                false,
                keep,
            );
            return answered(used, length, keep);
        }
    };
    if path == "/status" {
        let mut body = [0u8; STATUS_BODY];
        let mut w = Cursor::new(&mut body);
        // Counted before the body is written, so it includes this request.
        let served = s.requests.fetch_add(1, Ordering::Relaxed) + 1;
        if status_json(s, served, &mut w).is_ok() {
            let len = w.len;
            write_response(out, 200, "application/json", &body[..len], head, keep);
        } else {
            write_response(out, 500, "text/plain", b"status too large\n", head, keep);
        }
    } else {
        respond(s, out, 404, "text/plain", b"not found\n", head, keep);
    }
    answered(used, length, keep)
}

fn answered(used: usize, length: Option<usize>, keep: bool) -> Parsed {
    Parsed::Answered {
        used,
        body: length.unwrap_or(0),
        keep,
    }
}

fn parse_length(v: &[u8]) -> Option<usize> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    core::str::from_utf8(v).ok()?.parse().ok()
}

/// An error response after which the connection closes.
fn fatal<B: Backend>(s: &Server<B>, out: &mut RespBuf, code: u16) -> Parsed {
    let body: &[u8] = match code {
        431 => b"request header fields too large\n",
        _ => b"bad request\n",
    };
    respond(s, out, code, "text/plain", body, false, false);
    Parsed::Fatal
}

/// A response that counts as served.
fn respond<B: Backend>(
    s: &Server<B>, out: &mut RespBuf, code: u16, ctype: &str, body: &[u8], head: bool, keep: bool,
) {
    s.requests.fetch_add(1, Ordering::Relaxed);
    write_response(out, code, ctype, body, head, keep);
}

/// Appends a response to `out`, which has at least `MAX_RESPONSE` bytes of
/// room (the caller flushes first); a response that would not fit is cut
/// off, which cannot happen with the bodies above.
fn write_response(out: &mut RespBuf, code: u16, ctype: &str, body: &[u8], head: bool, keep: bool) {
    let reason = match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Internal Server Error",
    };
    let len = out.bytes_len();
    let mut w = Cursor::new(&mut out.as_mut_full()[len..]);
    let _ = write!(
        w,
        "HTTP/1.1 {code} {reason}\r\nServer: pinion-http_status\r\nContent-Type: {ctype}\r\n\
         Content-Length: {}\r\nConnection: {}\r\n{}\r\n",
        body.len(),
        if keep { "keep-alive" } else { "close" },
        if code == 405 {
            "Allow: GET, HEAD\r\n"
        } else {
            ""
        },
    );
    if !head {
        let _ = w.put(body);
    }
    let written = w.len;
    out.set_len(len + written);
}

/// The `/status` document.
fn status_json<B: Backend>(s: &Server<B>, served: usize, w: &mut Cursor<'_>) -> fmt::Result
where
    Sched<B>: Sync,
{
    let c = s.ctx;
    let (ops, ops_cap) = c.ops_in_use();
    let (tasks, tasks_cap) = c.tasks_in_use();
    write!(
        w,
        "{{\"backend\":\"{}\",\"uptime_ms\":{},\"threads\":{},\"requests_served\":{served},\
         \"connections_open\":{},\"connections_total\":{},\"connections_refused\":{},\
         \"ops_in_use\":{ops},\"ops_capacity\":{ops_cap},\"descriptors_in_use\":{},\
         \"timers_in_use\":{},\"tasks_in_use\":{tasks},\"tasks_capacity\":{tasks_cap},\
         \"outstanding_work\":{},\"stats_enabled\":{},\"stats\":",
        c.backend_name(),
        (c.now() - s.started).as_millis(),
        s.threads,
        s.open.load(Ordering::Relaxed),
        s.total.load(Ordering::Relaxed),
        s.refused.load(Ordering::Relaxed),
        c.descriptors_in_use(),
        c.timers_in_use(),
        c.outstanding_work(),
        cfg!(feature = "stats"),
    )?;
    write!(DebugAsJson::new(w), "{:?}", c.stats())?;
    w.write_str("}\n")
}

/// Text into a fixed byte buffer; `fmt::Error` when it is full.
struct Cursor<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl<'a> Cursor<'a> {
    fn new(buf: &'a mut [u8]) -> Self {
        Cursor { buf, len: 0 }
    }

    fn put(&mut self, bytes: &[u8]) -> fmt::Result {
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
/// structs of integers (generic code knows only that they are `Debug`).
/// Anything else (strings, nesting) is refused with `fmt::Error`.
struct DebugAsJson<'w, 'a> {
    out: &'w mut Cursor<'a>,
    open: bool,
    in_name: bool,
}

impl<'w, 'a> DebugAsJson<'w, 'a> {
    fn new(out: &'w mut Cursor<'a>) -> Self {
        DebugAsJson {
            out,
            open: false,
            in_name: false,
        }
    }
}

impl fmt::Write for DebugAsJson<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.bytes() {
            if !self.open {
                // The struct's name, then its brace.
                if c == b'{' {
                    self.open = true;
                    self.out.put(b"{")?;
                }
                continue;
            }
            let name_char = c.is_ascii_alphanumeric() || c == b'_';
            if self.in_name && !name_char {
                self.in_name = false;
                self.out.put(b"\"")?;
            }
            match c {
                b'a'..=b'z' | b'A'..=b'Z' | b'_' if !self.in_name => {
                    self.in_name = true;
                    self.out.put(&[b'"', c])?;
                }
                _ if self.in_name => self.out.put(&[c])?,
                b'0'..=b'9' | b':' | b',' | b'}' => self.out.put(&[c])?,
                b' ' => {}
                _ => return Err(fmt::Error),
            }
        }
        Ok(())
    }
}

// ---- stopping on SIGTERM / SIGINT -------------------------------------------

/// The socket the signal handler sends from, and the port it sends to.
static SIGNAL_FD: AtomicI32 = AtomicI32::new(-1);
static SIGNAL_PORT: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(_: libc::c_int) {
    // Only async-signal-safe calls: one non-blocking sendto.
    let fd = SIGNAL_FD.load(Ordering::Relaxed);
    let addr = loopback_sockaddr(SIGNAL_PORT.load(Ordering::Relaxed) as u16);
    // SAFETY: a one-byte static buffer and a valid sockaddr_in on the stack.
    unsafe {
        libc::sendto(
            fd,
            b"!".as_ptr() as *const libc::c_void,
            1,
            libc::MSG_DONTWAIT,
            &addr as *const libc::sockaddr_in as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
    }
}

fn loopback_sockaddr(port: u16) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes([127, 0, 0, 1]),
        },
        sin_zero: [0; 8],
    }
}

/// A UDP self-pipe: SIGTERM/SIGINT send a datagram from a private socket
/// to one a task reads; the task stops the context.
fn stop_on_signals<B: Backend>(ctx: &'static IoContext<B>)
where
    Sched<B>: Sync,
{
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let wake = UdpSocket::bind(ctx, loopback).unwrap_or_else(|e| fail(&format!("udp: {e}")));
    let port = wake.local_addr().map(|a| a.port()).unwrap_or(0);
    // SAFETY: plain socket creation; the fd is kept for the process's life.
    let fd = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    };
    if fd < 0 {
        fail("signal socket");
    }
    let mut addr = loopback_sockaddr(0);
    let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: `addr` is a valid sockaddr_in, writable for `len` bytes.
    let bound = unsafe {
        let p = &mut addr as *mut libc::sockaddr_in as *mut libc::sockaddr;
        libc::bind(fd, p, len) == 0 && libc::getsockname(fd, p, &mut len) == 0
    };
    if !bound {
        fail("binding the signal socket");
    }
    SIGNAL_FD.store(fd, Ordering::Relaxed);
    SIGNAL_PORT.store(i32::from(port), Ordering::Relaxed);
    // SAFETY: installs a handler that only makes async-signal-safe calls.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGTERM, &sa, std::ptr::null_mut());
        libc::sigaction(libc::SIGINT, &sa, std::ptr::null_mut());
    }
    let sender = u16::from_be(addr.sin_port);
    if ctx
        .spawn(wait_for_signal(ctx, Owned::new(wake), sender))
        .is_err()
    {
        fail("no task slot for the signal waiter");
    }
}

async fn wait_for_signal<B: Backend>(
    ctx: &'static IoContext<B>, wake: Owned<UdpSocket<'static, B>>, sender: u16,
) {
    let mut buf = Vec::with_capacity(16);
    loop {
        buf.clear();
        let (r, b) = wake.recv_from(buf).await;
        buf = b;
        match r {
            // Any local process could send here; only our signal
            // handler's socket stops the server.
            Ok((_, from)) if from.ip().is_loopback() && from.port() == sender => {
                eprintln!("http_status: signal received, stopping");
                return ctx.stop();
            }
            Ok(_) => {}
            Err(Error::OperationAborted) => return,
            // A full pool, say: try again shortly rather than spin.
            Err(_) => {
                let _ = sleep(ctx, Duration::from_millis(50)).await;
            }
        }
    }
}

// ---- arguments ------------------------------------------------------------

struct Config {
    port: u16,
    bind: IpAddr,
    max_conns: usize,
    idle: Duration,
    threads: usize,
    backend: String,
}

impl Config {
    fn parse() -> Config {
        let mut cfg = Config {
            port: 8080,
            bind: IpAddr::from([127, 0, 0, 1]),
            max_conns: 1024,
            idle: Duration::from_secs(5),
            threads: 1,
            backend: "epoll".into(),
        };
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            let mut value = |name: &str| {
                args.next()
                    .unwrap_or_else(|| usage(&format!("{name} needs a value")))
            };
            match a.as_str() {
                "--bind" => cfg.bind = parse(&value("--bind"), "--bind"),
                "--max-conns" => cfg.max_conns = parse(&value("--max-conns"), "--max-conns"),
                "--idle-ms" => {
                    cfg.idle = Duration::from_millis(parse(&value("--idle-ms"), "--idle-ms"))
                }
                "--threads" => cfg.threads = parse(&value("--threads"), "--threads"),
                "--backend" => cfg.backend = value("--backend"),
                "-h" | "--help" => usage(""),
                p if !p.starts_with('-') => cfg.port = parse(p, "PORT"),
                other => usage(&format!("unknown option {other}")),
            }
        }
        if cfg.threads == 0 || cfg.max_conns == 0 || cfg.idle.is_zero() {
            usage("--threads, --max-conns and --idle-ms must be at least 1");
        }
        cfg
    }
}

fn parse<T: std::str::FromStr>(s: &str, what: &str) -> T {
    s.parse()
        .unwrap_or_else(|_| usage(&format!("bad {what}: {s}")))
}

fn usage(msg: &str) -> ! {
    if !msg.is_empty() {
        eprintln!("http_status: {msg}");
    }
    eprintln!(
        "usage: http_status [PORT] [--bind ADDR] [--max-conns N] [--idle-ms MS] [--threads N] \
         [--backend epoll|uring]"
    );
    exit(2)
}

fn fail(msg: &str) -> ! {
    eprintln!("http_status: {msg}");
    exit(1)
}
