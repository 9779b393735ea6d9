//! `examples/mqtt_telemetry` against a real broker, on each backend:
//! every message reaches a `mosquitto_sub` subscriber, in order; an
//! unreachable, silent or refusing broker makes the example fail with a
//! message that says where and why.
//!
//! Needs `mosquitto` and `mosquitto_sub` (Debian packages `mosquitto` and
//! `mosquitto-clients`): without them these tests fail, they do not skip.
//! The example must be built first (`cargo test` does that;
//! `cargo build --example mqtt_telemetry --features embedded-io` too).
//! Every broker and subscriber is a child process killed on every path,
//! listening on 127.0.0.1 only, on a port found free just before.

// The example needs `embedded-io`; without it there is nothing to test.
#![cfg(feature = "embedded-io")]

use std::io::{BufRead, BufReader, Read};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

mod example_proc;

const COUNT: u32 = 200;

macro_rules! on_backend {
    ($m:ident, $name:literal) => {
        mod $m {
            #[test]
            fn every_message_arrives_in_order() {
                super::every_message_arrives_in_order($name);
            }
            #[test]
            fn an_unreachable_broker_is_a_clear_error() {
                super::an_unreachable_broker_is_a_clear_error($name);
            }
            #[test]
            fn a_silent_broker_times_out() {
                super::a_silent_broker_times_out($name);
            }
            #[test]
            fn a_refusing_broker_is_a_clear_error() {
                super::a_refusing_broker_is_a_clear_error($name);
            }
        }
    };
}

on_backend!(epoll, "epoll");
#[cfg(feature = "uring")]
on_backend!(uring, "uring");

fn every_message_arrives_in_order(backend: &str) {
    let broker = Broker::start(true);
    let topic = format!("pinion/test/{backend}/{}", std::process::id());
    let sub = Subscriber::start(broker.port, &topic, COUNT);
    let out = run_example(&[
        "--broker",
        &broker.addr(),
        "--topic",
        &topic,
        "--count",
        &COUNT.to_string(),
        "--backend",
        backend,
        "--client-id",
        &format!("pinion-test-{backend}"),
    ]);
    assert!(
        out.status.success(),
        "mqtt_telemetry failed ({}); stderr:\n{}",
        out.status,
        out.stderr
    );
    assert!(
        out.stderr
            .contains(&format!("{COUNT} of {COUNT} messages acknowledged")),
        "no summary in stderr:\n{}",
        out.stderr
    );
    let payloads = sub.messages(&topic, Duration::from_secs(20));
    let seqs: Vec<u32> = payloads.iter().map(|p| seq_of(p)).collect();
    let want: Vec<u32> = (0..COUNT).collect();
    assert_eq!(
        seqs, want,
        "the subscriber got these sequence numbers; example stderr:\n{}",
        out.stderr
    );
    let name = if backend == "uring" {
        "io_uring"
    } else {
        "epoll"
    };
    for p in &payloads {
        assert!(
            p.contains(&format!(" count={COUNT} backend={name} ops_in_use=")),
            "unexpected payload {p:?}"
        );
    }
}

fn an_unreachable_broker_is_a_clear_error(backend: &str) {
    let addr = free_addr(); // nothing listens there now
    let out = run_example(&["--broker", &addr.to_string(), "--backend", backend]);
    assert!(!out.status.success(), "succeeded against {addr}?");
    assert_eq!(out.status.code(), Some(1), "stderr:\n{}", out.stderr);
    assert!(
        out.stderr.contains(&format!(
            "cannot reach the broker at {addr}: connection refused"
        )),
        "stderr does not name the address and the error:\n{}",
        out.stderr
    );
}

/// A listener that completes TCP handshakes (the kernel does, from the
/// backlog) but never speaks MQTT: the CONNACK wait times out.
fn a_silent_broker_times_out(backend: &str) {
    let silent = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let addr = silent.local_addr().unwrap();
    let t0 = Instant::now();
    let out = run_example(&[
        "--broker",
        &addr.to_string(),
        "--backend",
        backend,
        "--timeout-ms",
        "300",
    ]);
    assert_eq!(out.status.code(), Some(1), "stderr:\n{}", out.stderr);
    assert!(
        out.stderr.contains(&format!(
            "the broker at {addr} sent no CONNACK within 300 ms"
        )),
        "stderr:\n{}",
        out.stderr
    );
    assert!(t0.elapsed() >= Duration::from_millis(300));
    drop(silent);
}

/// mosquitto with `allow_anonymous false` (and no password file) refuses
/// every CONNECT with a CONNACK reason code.
fn a_refusing_broker_is_a_clear_error(backend: &str) {
    let broker = Broker::start(false);
    let out = run_example(&["--broker", &broker.addr(), "--backend", backend]);
    assert_eq!(out.status.code(), Some(1), "stderr:\n{}", out.stderr);
    let said = format!("the broker at {} refused the connection: ", broker.addr());
    assert!(out.stderr.contains(&said), "stderr:\n{}", out.stderr);
    // mosquitto 2.0 says "not authorized"; an older one might say
    // "bad user name or password". Either way: a name and its code.
    assert!(
        out.stderr.contains("NotAuthorized (reason code 0x87)")
            || out
                .stderr
                .contains("BadUserNameOrPassword (reason code 0x86)"),
        "stderr does not give the reason:\n{}",
        out.stderr
    );
}

/// `seq=N ...` → N.
fn seq_of(payload: &str) -> u32 {
    payload
        .strip_prefix("seq=")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("payload without a sequence number: {payload:?}"))
}

// ---- processes ----------------------------------------------------------------

/// A child process, killed and reaped when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An external program, from PATH or the sbin directories (mosquitto
/// lives in /usr/sbin, which a user's PATH may lack).
fn program(name: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from));
    for dir in dirs {
        let p = dir.join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!("`{name}` not found: install the Debian package `{package}` (CI does)");
}

struct Output {
    status: ExitStatus,
    stderr: String,
}

/// Runs the example to its end (killed after 60 s: a test failure).
fn run_example(args: &[&str]) -> Output {
    let child = example_proc::command("mqtt_telemetry", "embedded-io", &[])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning mqtt_telemetry");
    let mut child = Killed(child);
    let stderr = drain(child.0.stderr.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > deadline {
            break None;
        }
        thread::sleep(Duration::from_millis(10));
    };
    drop(child); // kills it if still running, so stderr ends
    let stderr = stderr.join().unwrap();
    match status {
        Some(status) => Output { status, stderr },
        None => panic!("mqtt_telemetry {args:?} still running after 60 s; stderr:\n{stderr}"),
    }
}

fn drain(mut r: impl Read + Send + 'static) -> JoinHandle<String> {
    thread::spawn(move || {
        let mut s = String::new();
        let _ = r.read_to_string(&mut s);
        s
    })
}

/// An address on 127.0.0.1 nothing listens on (it did a moment ago).
fn free_addr() -> SocketAddr {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
}

// ---- broker and subscriber -------------------------------------------------------

/// A mosquitto on 127.0.0.1 with a config in its own temporary directory.
struct Broker {
    port: u16,
    _child: Killed,
    dir: PathBuf,
}

impl Broker {
    fn start(allow_anonymous: bool) -> Broker {
        static N: AtomicUsize = AtomicUsize::new(0);
        let mosquitto = program("mosquitto", "mosquitto");
        let dir = std::env::temp_dir().join(format!(
            "pinion-mqtt-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        // The free port may be taken again before mosquitto binds it: a
        // few attempts, each on a new port.
        let mut last_log = String::new();
        for _ in 0..5 {
            let port = free_addr().port();
            let conf = dir.join("mosquitto.conf");
            std::fs::write(
                &conf,
                format!(
                    "listener {port} 127.0.0.1\nallow_anonymous {allow_anonymous}\n\
                     persistence false\nlog_dest stderr\n"
                ),
            )
            .unwrap();
            let log = std::fs::File::create(dir.join("mosquitto.log")).unwrap();
            let child = Command::new(&mosquitto)
                .arg("-c")
                .arg(&conf)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("spawning mosquitto");
            let mut child = Killed(child);
            if wait_for_port(&mut child, port) {
                return Broker {
                    port,
                    _child: child,
                    dir,
                };
            }
            drop(child);
            last_log = std::fs::read_to_string(dir.join("mosquitto.log")).unwrap_or_default();
        }
        let _ = std::fs::remove_dir_all(&dir);
        panic!("mosquitto did not start listening; its log:\n{last_log}");
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Until `port` accepts a connection (true), mosquitto exits, or 10 s pass.
fn wait_for_port(child: &mut Killed, port: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if matches!(child.0.try_wait(), Ok(Some(_))) {
            return false;
        }
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        thread::sleep(Duration::from_millis(20));
    }
    false
}

/// `mosquitto_sub -d -v`, subscribed (its SUBACK seen) when `start`
/// returns. Its stdout lines come through a channel.
struct Subscriber {
    lines: Receiver<String>,
    child: Killed,
    seen: Vec<String>,
}

impl Subscriber {
    fn start(port: u16, topic: &str, count: u32) -> Subscriber {
        let bin = program("mosquitto_sub", "mosquitto-clients");
        // Piped, its stdout would be block-buffered: the SUBACK line would
        // come only at exit. stdbuf makes it line-buffered.
        let child = Command::new(program("stdbuf", "coreutils"))
            .arg("-oL")
            .arg(bin)
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-t", topic])
            .args(["-q", "1", "-C", &count.to_string(), "-v", "-d"])
            // Its own bound: it exits by itself even if the test hangs.
            .args(["-W", "60", "-i", &format!("pinion-test-sub-{port}")])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning mosquitto_sub");
        let mut child = Killed(child);
        let (tx, lines) = mpsc::channel();
        let stdout = child.0.stdout.take().unwrap();
        let stderr = child.0.stderr.take().unwrap();
        for stream in [Box::new(stdout) as Box<dyn Read + Send>, Box::new(stderr)] {
            let tx = tx.clone();
            thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        let mut sub = Subscriber {
            lines,
            child,
            seen: Vec::new(),
        };
        // The subscription is live once the broker's SUBACK has come
        // back (`-d` prints it); messages published before would be lost.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match sub.next_line(deadline) {
                Some(l) if l.contains("received SUBACK") => return sub,
                Some(_) => {}
                None => panic!(
                    "mosquitto_sub saw no SUBACK within 10 s; it printed:\n{}",
                    sub.seen.join("\n")
                ),
            }
        }
    }

    fn next_line(&mut self, deadline: Instant) -> Option<String> {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.lines.recv_timeout(left) {
            Ok(l) => {
                self.seen.push(l.clone());
                Some(l)
            }
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => None,
        }
    }

    /// The payloads received on `topic`, in order, once mosquitto_sub has
    /// exited by itself after its `-C` count (or `limit` passed: then
    /// whatever it printed, for the assertion to show).
    fn messages(mut self, topic: &str, limit: Duration) -> Vec<String> {
        let deadline = Instant::now() + limit;
        while self.next_line(deadline).is_some() {}
        // Its output has ended; it is exiting or gone.
        let mut exited = None;
        for _ in 0..500 {
            exited = self.child.0.try_wait().ok().flatten();
            if exited.is_some() {
                break;
            }
            thread::sleep(Duration::from_millis(10));
        }
        assert!(
            exited.is_some_and(|s| s.success()),
            "mosquitto_sub did not exit cleanly after {COUNT} messages ({exited:?}); \
             its last lines:\n{}",
            self.seen[self.seen.len().saturating_sub(10)..].join("\n")
        );
        let prefix = format!("{topic} ");
        self.seen
            .iter()
            .filter_map(|l| l.strip_prefix(&prefix))
            .map(str::to_owned)
            .collect()
    }
}
