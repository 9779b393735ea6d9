//! MQTT telemetry publisher: sends `--count` QoS 1 messages to a broker
//! with the `rust-mqtt` crate (MQTT v5) running on pinion's
//! `embedded-io-async` TCP streams, and exits 0 once the broker has
//! acknowledged (PUBACK) every one of them.
//!
//! ```text
//! mqtt_telemetry [--broker HOST:PORT] [--topic T] [--count N] [--client-id ID]
//!                [--username U] [--password P] [--interval-ms MS]
//!                [--timeout-ms MS] [--backend epoll|uring]
//! ```
//! Defaults: broker 127.0.0.1:1883, topic `pinion/telemetry`, 10 messages,
//! client id `pinion-telemetry-PID` (`--client-id ""` lets the broker
//! assign one), no interval, a 5000 ms timeout, the epoll backend (`uring`
//! needs the `uring` feature).
//!
//! Each payload is one line of text starting with its sequence number,
//! `seq=17 count=200 backend=epoll ops_in_use=3/32 descriptors=2
//! inflight=5 t_us=1234`, so a subscriber can check order and completeness.
//!
//! Publishing is pipelined: up to 16 PUBLISHes are in flight (fewer if the
//! broker's receive maximum is lower), each PUBACK makes room for the next.
//! With `--interval-ms` the window is 1: publish, wait for its PUBACK,
//! sleep. Exits non-zero with a message naming the broker and the cause
//! when the TCP connect fails or times out, when no CONNACK comes within
//! the timeout, when the broker refuses the connection (its reason code
//! and reason string), when a PUBACK does not come within the timeout or
//! is a rejection, or on SIGTERM/SIGINT (how many messages were
//! acknowledged by then).
//!
//! mosquitto leaves Nagle's algorithm on by default: in a burst, its
//! PUBACKs after the first can wait ~40 ms for our delayed ACK
//! (`set_tcp_nodelay true` in its config removes the wait).
//!
//! Memory is fixed at start-up: rust-mqtt stores the variable-length
//! fields of what it receives (reason strings, assigned client id) in an
//! arena of 4 KiB on the stack, the stream is wrapped in fixed read and
//! write buffers, and each payload is formatted into one reused array.
//! Nothing is allocated per message.

#[path = "shared/stop.rs"]
mod stop;

use std::cell::Cell;
use std::io::Write as _;
use std::net::{SocketAddr, ToSocketAddrs};
use std::pin::pin;
use std::process::exit;
use std::time::Duration;

use embedded_io_async::{ErrorKind, ErrorType, Read, Write};
use futures_util::future::{select, Either};
use pinion::aio::{sleep, timeout};
use pinion::builder::Builder;
use pinion::context::IoContext;
use pinion::net::TcpStream;
use pinion::{Backend, Error};
use rust_mqtt::buffer::BufferProvider;
use rust_mqtt::client::event::Event;
use rust_mqtt::client::options::{
    ConnectOptions, DisconnectOptions, PublicationOptions, TopicReference,
};
use rust_mqtt::client::{Client, MqttError};
use rust_mqtt::types::{MqttBinary, MqttString, ReasonCode, TopicName};
use rust_mqtt::Bytes;

/// Bytes rust-mqtt may keep of what the broker sends. A publisher only
/// receives CONNACK and PUBACKs, and PUBACKs carry no strings since we do
/// not request problem information: this fills at connect time, if ever.
const ARENA: usize = 4096;
/// Most PUBLISHes in flight (rust-mqtt's `SEND_MAXIMUM`).
const WINDOW: usize = 16;
const PAYLOAD: usize = 192;
/// rust-mqtt writes each field of a packet separately and reads headers a
/// byte at a time: these buffers make that one `send` per packet and one
/// `recv` per batch of PUBACKs.
const READ_BUF: usize = 512;
const WRITE_BUF: usize = 1024;
/// User properties rust-mqtt keeps per received packet (1 or more is its
/// advice, so it can detect a broker sending them where it must not).
const USER_PROPERTIES: usize = 1;

fn main() {
    stop::block_stop_signals("mqtt_telemetry");
    let cfg = Config::parse();
    match cfg.backend.as_str() {
        #[cfg(feature = "epoll")]
        "epoll" => run::<pinion::epoll::Backend>(&cfg),
        #[cfg(feature = "uring")]
        "uring" => run::<pinion::uring::Backend>(&cfg),
        // Reached only for a backend this build lacks.
        #[allow(unreachable_patterns)]
        "epoll" | "uring" => usage(&format!(
            "this build has no {} backend (build with --features {})",
            cfg.backend, cfg.backend
        )),
        other => usage(&format!("unknown backend {other} (epoll or uring)")),
    }
}

fn run<B: Backend + 'static>(cfg: &Config) -> ! {
    let ctx: &'static IoContext<B> = Builder::<B>::new()
        .ops(32)
        .descriptors(8)
        .timers(8)
        .build_static()
        .unwrap_or_else(|e| fail(&format!("building the context: {e}")));
    let progress = Progress::default();
    let mut arena_mem = [0u8; ARENA];
    let mut arena = Arena::new(&mut arena_mem);
    let work = pin!(session(ctx, cfg, &mut arena, &progress));
    // SIGTERM/SIGINT through the servers' shared SignalSet helper.
    let signal = pin!(stop::stop_signal(ctx, "mqtt_telemetry"));
    let outcome = ctx
        .block_on(select(work, signal))
        .unwrap_or_else(|e| fail(&format!("running the context: {e}")));
    match outcome {
        Either::Left((Ok(report), _)) => {
            eprintln!("mqtt_telemetry: {report}");
            exit(0)
        }
        Either::Left((Err(msg), _)) => fail(&msg),
        // The session future is dropped here: its stream closes.
        Either::Right(((), _)) => fail(&format!(
            "interrupted by a signal: {} of {} messages published, {} acknowledged",
            progress.published.get(),
            cfg.count,
            progress.acked.get()
        )),
    }
}

/// What the session has done so far, readable if it is interrupted.
#[derive(Default)]
struct Progress {
    published: Cell<u64>,
    acked: Cell<u64>,
}

/// Connects, publishes `cfg.count` messages, waits for every PUBACK,
/// disconnects. `Ok` is the summary line, `Err` what went wrong.
async fn session<B: Backend>(
    ctx: &'static IoContext<B>, cfg: &Config, arena: &mut Arena<'_>, progress: &Progress,
) -> Result<String, String> {
    let broker = cfg.broker;
    let topic = TopicName::new(mqtt_string(&cfg.topic, "--topic")).ok_or_else(|| {
        format!(
            "bad --topic {:?}: a topic name has no wildcards + or #",
            cfg.topic
        )
    })?;
    let wait = Duration::from_millis(cfg.timeout_ms);
    let t0 = ctx.now();
    let stream = match timeout(ctx, wait, TcpStream::connect(ctx, broker)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(format!("cannot reach the broker at {broker}: {e}")),
        Err(_) => {
            return Err(format!(
                "cannot reach the broker at {broker}: no TCP connection within {} ms",
                cfg.timeout_ms
            ))
        }
    };
    // Small packets, each flushed on purpose: no Nagle delay.
    let _ = stream.set_nodelay(true);
    // `stream` (an `Owned`) closes the socket when this function returns.
    let mut client: Client<'_, '_, _, _, 0, 1, WINDOW, 0, USER_PROPERTIES, 0, 0> =
        Client::new(arena);

    let mut options = ConnectOptions::new().clean_start();
    if let Some(u) = &cfg.username {
        options = options.user_name(mqtt_string(u, "--username"));
    }
    if let Some(p) = &cfg.password {
        let p = MqttBinary::try_from(p.as_str())
            .map_err(|_| "--password is longer than 65535 bytes".to_string())?;
        options = options.password(p);
    }
    let id = (!cfg.client_id.is_empty()).then(|| mqtt_string(&cfg.client_id, "--client-id"));
    let connect = client.connect(Buffered::new(*stream), &options, id);
    match timeout(ctx, wait, connect).await {
        Ok(Ok(_)) => {}
        Ok(Err(MqttError::Disconnect {
            reason,
            reason_string,
            ..
        })) => {
            return Err(format!(
                "the broker at {broker} refused the connection: {}",
                why(reason, reason_string.as_ref())
            ))
        }
        Ok(Err(e)) => {
            return Err(format!(
                "MQTT handshake with {broker} failed: {}",
                describe(&e)
            ))
        }
        Err(_) => {
            return Err(format!(
                "the broker at {broker} sent no CONNACK within {} ms (is it an MQTT broker?)",
                cfg.timeout_ms
            ))
        }
    }
    let window = if cfg.interval_ms > 0 {
        1
    } else {
        WINDOW.min(client.server_config().receive_maximum.get().into())
    };
    eprintln!(
        "mqtt_telemetry: connected to {broker} ({}, window {window}); publishing {} messages to {}",
        ctx.backend_name(),
        cfg.count,
        cfg.topic
    );

    let publication = PublicationOptions::new(TopicReference::Name(topic)).at_least_once();
    let mut payload = [0u8; PAYLOAD];
    let (mut published, mut acked) = (0u64, 0u64);
    while acked < cfg.count {
        while published < cfg.count && published - acked < window as u64 {
            let len = telemetry(&mut payload, ctx, cfg.count, published, acked, t0);
            let sent = client
                .publish(&publication, Bytes::Borrowed(&payload[..len]))
                .await;
            if let Err(e) = sent {
                return Err(format!(
                    "publishing seq={published} to {broker} failed: {}",
                    describe(&e)
                ));
            }
            published += 1;
            progress.published.set(published);
        }
        match timeout(ctx, wait, client.poll()).await {
            Ok(Ok(Event::PublishAcknowledged(_))) => {
                acked += 1;
                progress.acked.set(acked);
                if cfg.interval_ms > 0 && acked < cfg.count {
                    let _ = sleep(ctx, Duration::from_millis(cfg.interval_ms)).await;
                }
            }
            Ok(Ok(Event::PublishRejected(r))) => {
                return Err(format!(
                    "the broker at {broker} rejected a message (packet id {}): {}",
                    r.packet_identifier,
                    why(r.reason_code, r.reason_string.as_ref())
                ))
            }
            // Nothing else is expected of a broker we only publish to.
            Ok(Ok(_)) => {}
            Ok(Err(MqttError::Disconnect {
                reason,
                reason_string,
                ..
            })) => {
                return Err(format!(
                    "the broker at {broker} disconnected after {acked} acknowledged: {}",
                    why(reason, reason_string.as_ref())
                ))
            }
            Ok(Err(e)) => {
                return Err(format!(
                    "waiting for PUBACKs from {broker} after {acked} acknowledged: {}",
                    describe(&e)
                ))
            }
            Err(_) => {
                return Err(format!(
                    "no PUBACK from {broker} within {} ms ({acked} of {} acknowledged)",
                    cfg.timeout_ms, cfg.count
                ))
            }
        }
    }
    let elapsed = ctx.now() - t0;
    if let Err(e) = client.disconnect(&DisconnectOptions::new()).await {
        eprintln!("mqtt_telemetry: DISCONNECT not sent: {}", describe(&e));
    }
    let arena_used = client.buffer().used;
    drop(stream);
    Ok(format!(
        "{acked} of {} messages acknowledged by {broker} in {} ms ({arena_used} of {ARENA} arena bytes used)",
        cfg.count,
        elapsed.as_millis()
    ))
}

/// Formats message `seq`'s payload into `buf`; returns its length.
fn telemetry<B: Backend>(
    buf: &mut [u8; PAYLOAD], ctx: &IoContext<B>, count: u64, seq: u64, acked: u64,
    t0: pinion::Instant,
) -> usize {
    let (ops, ops_cap) = ctx.ops_in_use();
    let mut w: &mut [u8] = buf;
    // The fields are bounded: this always fits.
    let _ = write!(
        w,
        "seq={seq} count={count} backend={} ops_in_use={ops}/{ops_cap} descriptors={} inflight={} t_us={}",
        ctx.backend_name(),
        ctx.descriptors_in_use(),
        seq - acked,
        (ctx.now() - t0).as_micros()
    );
    PAYLOAD - w.len()
}

fn mqtt_string<'s>(s: &'s str, what: &str) -> MqttString<'s> {
    MqttString::try_from(s).unwrap_or_else(|_| usage(&format!("{what} is not a valid MQTT string")))
}

/// A reason code by name and number, with the broker's reason string.
fn why(code: ReasonCode, text: Option<&MqttString<'_>>) -> String {
    let text = text.map(|s| format!(": \"{}\"", s.as_str()));
    format!(
        "{code:?} (reason code 0x{:02x}){}",
        code.value(),
        text.unwrap_or_default()
    )
}

fn describe<const N: usize>(e: &MqttError<'_, N>) -> String {
    match e {
        // rust-mqtt's name for an end of stream in mid-session.
        MqttError::Network(ErrorKind::NotConnected) => "the broker closed the connection".into(),
        MqttError::Network(kind) => format!("network error ({kind:?})"),
        MqttError::Server => "the broker broke the MQTT v5 protocol".into(),
        MqttError::Alloc => format!("the broker sent more than the {ARENA}-byte arena holds"),
        MqttError::Disconnect { reason, .. } => format!("disconnected: {reason:?}"),
        other => format!("{other:?}"),
    }
}

// ---- rust-mqtt's buffer provider ---------------------------------------------

/// Hands out successive pieces of one fixed slice, never reused: rust-mqtt
/// keeps received strings for as long as the client lives, and reusing
/// them safely would take `unsafe` (its `bump` feature's `reset`).
struct Arena<'m> {
    rest: &'m mut [u8],
    used: usize,
}

impl<'m> Arena<'m> {
    fn new(mem: &'m mut [u8]) -> Self {
        Arena { rest: mem, used: 0 }
    }
}

/// rust-mqtt only reports that a provision failed (`MqttError::Alloc`).
#[derive(Debug)]
struct ArenaFull;

impl<'c, 'm: 'c> BufferProvider<'c> for Arena<'m> {
    type Buffer = &'c mut [u8];
    type ProvisionError = ArenaFull;

    fn provide_buffer(&mut self, len: usize) -> Result<&'c mut [u8], ArenaFull> {
        if len > self.rest.len() {
            return Err(ArenaFull);
        }
        let (piece, rest) = std::mem::take(&mut self.rest).split_at_mut(len);
        self.rest = rest;
        self.used += len;
        Ok(piece)
    }
}

// ---- buffered transport ------------------------------------------------------

/// A stream with fixed read and write buffers. Writes collect until
/// `flush` (rust-mqtt flushes after every packet); reads take what the
/// socket has, up to `READ_BUF`. Cancel-safe like the stream itself:
/// the indices move only when bytes have moved.
struct Buffered<S> {
    inner: S,
    rbuf: [u8; READ_BUF],
    rpos: usize,
    rend: usize,
    wbuf: [u8; WRITE_BUF],
    wsent: usize,
    wlen: usize,
}

impl<S> Buffered<S> {
    fn new(inner: S) -> Self {
        Buffered {
            inner,
            rbuf: [0; READ_BUF],
            rpos: 0,
            rend: 0,
            wbuf: [0; WRITE_BUF],
            wsent: 0,
            wlen: 0,
        }
    }
}

impl<S: ErrorType> ErrorType for Buffered<S> {
    type Error = S::Error;
}

impl<S: Read> Read for Buffered<S> {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, S::Error> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.rpos == self.rend {
            let n = self.inner.read(&mut self.rbuf).await?;
            (self.rpos, self.rend) = (0, n);
            if n == 0 {
                return Ok(0);
            }
        }
        let n = buf.len().min(self.rend - self.rpos);
        buf[..n].copy_from_slice(&self.rbuf[self.rpos..self.rpos + n]);
        self.rpos += n;
        Ok(n)
    }
}

impl<S: Write<Error = Error>> Write for Buffered<S> {
    async fn write(&mut self, buf: &[u8]) -> Result<usize, Error> {
        if self.wlen == WRITE_BUF {
            self.flush().await?;
        }
        let n = buf.len().min(WRITE_BUF - self.wlen);
        self.wbuf[self.wlen..self.wlen + n].copy_from_slice(&buf[..n]);
        self.wlen += n;
        Ok(n)
    }

    async fn flush(&mut self) -> Result<(), Error> {
        while self.wsent < self.wlen {
            match self.inner.write(&self.wbuf[self.wsent..self.wlen]).await? {
                0 => return Err(Error::BrokenPipe),
                n => self.wsent += n,
            }
        }
        (self.wsent, self.wlen) = (0, 0);
        self.inner.flush().await
    }
}

// ---- arguments ------------------------------------------------------------

struct Config {
    broker: SocketAddr,
    topic: String,
    count: u64,
    client_id: String,
    username: Option<String>,
    password: Option<String>,
    interval_ms: u64,
    timeout_ms: u64,
    backend: String,
}

impl Config {
    fn parse() -> Config {
        let mut broker = "127.0.0.1:1883".to_string();
        let mut cfg = Config {
            broker: SocketAddr::from(([127, 0, 0, 1], 1883)),
            topic: "pinion/telemetry".into(),
            count: 10,
            client_id: format!("pinion-telemetry-{}", std::process::id()),
            username: None,
            password: None,
            interval_ms: 0,
            timeout_ms: 5000,
            backend: "epoll".into(),
        };
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            let mut value = || {
                args.next()
                    .unwrap_or_else(|| usage(&format!("{a} needs a value")))
            };
            match a.as_str() {
                "--broker" => broker = value(),
                "--topic" => cfg.topic = value(),
                "--count" => cfg.count = parse(&value(), "--count"),
                "--client-id" => cfg.client_id = value(),
                "--username" => cfg.username = Some(value()),
                "--password" => cfg.password = Some(value()),
                "--interval-ms" => cfg.interval_ms = parse(&value(), "--interval-ms"),
                "--timeout-ms" => cfg.timeout_ms = parse(&value(), "--timeout-ms"),
                "--backend" => cfg.backend = value(),
                "-h" | "--help" => usage(""),
                other => usage(&format!("unknown option {other}")),
            }
        }
        // Resolved once, before the context exists (a blocking lookup).
        cfg.broker = match broker.to_socket_addrs().map(|mut a| a.next()) {
            Ok(Some(a)) => a,
            Ok(None) => usage(&format!("bad --broker {broker}: no address")),
            Err(e) => usage(&format!("bad --broker {broker} (expected HOST:PORT): {e}")),
        };
        if cfg.timeout_ms == 0 {
            usage("--timeout-ms must be at least 1");
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
        eprintln!("mqtt_telemetry: {msg}");
    }
    eprintln!(
        "usage: mqtt_telemetry [--broker HOST:PORT] [--topic T] [--count N] [--client-id ID]\n\
         \x20                     [--username U] [--password P] [--interval-ms MS]\n\
         \x20                     [--timeout-ms MS] [--backend epoll|uring]"
    );
    exit(2)
}

fn fail(msg: &str) -> ! {
    eprintln!("mqtt_telemetry: {msg}");
    exit(1)
}
