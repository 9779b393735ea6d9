//! The graceful stop every server example promises (`examples/shared/
//! stop.rs`), each server run as a child process: a client is mid-transfer
//! when SIGTERM arrives; the listener closes at once (the port can be
//! bound again while the server drains); the client finishes its transfer
//! and gets every byte back; the server exits 0 when the connection ends
//! (its 5 s grace time was not needed), and the port binds again after
//! the exit. Also `echo_server --unix`. Needs the examples built: `cargo
//! test` builds them (a `--test` filter does not).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Child, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

mod example_proc;

const LIMIT: Duration = Duration::from_secs(20);

/// A running example; killed on drop, whatever the test did.
struct Server {
    name: &'static str,
    child: Child,
    log: Receiver<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(name: &'static str, features: &str, args: &[&str]) -> (Server, String) {
    let mut child = example_proc::command(name, features, &[])
        .args(args)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {name}: {e}"));
    let (tx, log) = mpsc::channel();
    let err = child.stderr.take().unwrap();
    thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let s = Server { name, child, log };
    let line = s.wait_log("listening on ");
    let at = line.split("listening on ").nth(1).unwrap();
    let at = at.split([' ', ',']).next().unwrap().to_string();
    (s, at)
}

impl Server {
    /// The first log line containing `what` (bounded wait).
    fn wait_log(&self, what: &str) -> String {
        let end = Instant::now() + LIMIT;
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.log.recv_timeout(left) {
                Ok(l) if l.contains(what) => return l,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        panic!("{} never logged {what:?}", self.name);
    }

    fn sigterm(&self) {
        // SAFETY: signalling our own child.
        assert_eq!(
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) },
            0
        );
    }

    /// Waits (bounded) for the exit; asserts status 0.
    fn exits_zero(&mut self) {
        let end = Instant::now() + LIMIT;
        let status = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break st;
            }
            assert!(Instant::now() < end, "{}: still running", self.name);
            thread::sleep(Duration::from_millis(5));
        };
        assert!(status.success(), "{}: {status}", self.name);
    }
}

/// Binds a listener on `addr` as a restarted server would (`SO_REUSEADDR`,
/// which every example sets): fails while the old listener is open.
fn port_binds(addr: SocketAddr) {
    // SAFETY: plain socket calls on our own descriptor.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0);
        let one: libc::c_int = 1;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            (&one as *const libc::c_int).cast(),
            4,
        );
        let SocketAddr::V4(a) = addr else {
            panic!("IPv4 expected")
        };
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: a.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(a.ip().octets()),
            },
            sin_zero: [0; 8],
        };
        let r = libc::bind(fd, (&sin as *const libc::sockaddr_in).cast(), 16);
        let err = std::io::Error::last_os_error();
        let r = if r == 0 { libc::listen(fd, 1) } else { r };
        libc::close(fd);
        assert_eq!(r, 0, "port {} still taken: {err}", a.port());
    }
}

fn pattern(seed: usize, n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 13 + seed + i / 253) as u8).collect()
}

/// Writes `msg` and reads exactly as many bytes back.
fn exchange<S: Read + Write>(s: &mut S, msg: &[u8]) -> Vec<u8> {
    s.write_all(msg).unwrap();
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back).unwrap();
    back
}

/// The whole test for an echo-protocol server (`line` for line_server:
/// the data is lines).
fn stop_mid_transfer(name: &'static str, features: &str, args: &[&str], line: bool) {
    let (mut s, at) = start(name, features, args);
    let addr: SocketAddr = at.parse().unwrap();
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(LIMIT)).unwrap();
    let chunk = |seed| {
        // Whole lines of 100 bytes for line_server.
        let mut v = pattern(seed, 64_000);
        if line {
            for (i, b) in v.iter_mut().enumerate() {
                *b = if i % 100 == 99 { b'\n' } else { b'a' + *b % 26 };
            }
        }
        v
    };
    let first = chunk(1);
    assert!(exchange(&mut c, &first) == first, "{name}: first half");
    s.sigterm();
    s.wait_log("listener closed; 1 connection(s) to finish");
    // The listener is gone while the server still serves.
    port_binds(addr);
    // The transfer goes on to its end: every byte comes back.
    let second = chunk(2);
    let mut w = c.try_clone().unwrap();
    let writer = {
        let second = second.clone();
        thread::spawn(move || {
            w.write_all(&second).unwrap();
            w.shutdown(Shutdown::Write).unwrap();
        })
    };
    let mut back = Vec::new();
    c.read_to_end(&mut back).unwrap();
    writer.join().unwrap();
    assert!(back == second, "{name}: second half after the stop");
    s.exits_zero();
    s.wait_log("stopped");
    port_binds(addr);
}

#[test]
fn echo_server_stops_gracefully() {
    stop_mid_transfer("echo_server", "", &["0"], false);
}

#[test]
fn line_server_stops_gracefully() {
    stop_mid_transfer("line_server", "", &["0"], true);
}

#[test]
fn async_echo_stops_gracefully() {
    for b in example_proc::backends() {
        stop_mid_transfer("async_echo", "uring", &["0", "--backend", b], false);
    }
}

#[test]
fn http_status_stops_gracefully() {
    for b in example_proc::backends() {
        let (mut s, at) = start("http_status", "uring", &["0", "--backend", b]);
        let addr: SocketAddr = at.parse().unwrap();
        let mut c = TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(LIMIT)).unwrap();
        // A keep-alive request, answered; then the stop.
        c.write_all(b"GET /none HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            c.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        assert!(head.starts_with(b"HTTP/1.1 404"), "{b}");
        let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
        let len: usize = head
            .split("content-length:")
            .nth(1)
            .and_then(|v| v.split("\r\n").next())
            .map_or(0, |v| v.trim().parse().unwrap());
        let mut body = vec![0u8; len];
        c.read_exact(&mut body).unwrap();
        s.sigterm();
        s.wait_log("listener closed; 1 connection(s) to finish");
        port_binds(addr);
        // The open connection is still served, to its last response.
        c.write_all(b"GET /status HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut reply = String::new();
        c.read_to_string(&mut reply).unwrap();
        assert!(reply.starts_with("HTTP/1.1 200"), "{b}: {reply}");
        s.exits_zero();
        s.wait_log("stopped after");
        port_binds(addr);
    }
}

#[test]
fn echo_server_serves_a_unix_socket_and_removes_it_at_exit() {
    use std::os::unix::net::UnixStream;
    let path = std::env::temp_dir().join(format!("pinion-echo-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let p = path.to_str().unwrap();
    let (mut s, at) = start("echo_server", "", &["--unix", p]);
    assert_eq!(at, p);
    let mut c = UnixStream::connect(&path).unwrap();
    c.set_read_timeout(Some(LIMIT)).unwrap();
    let msg = pattern(5, 200_000);
    assert!(exchange(&mut c, &msg) == msg);
    s.sigterm();
    s.wait_log("listener closed");
    c.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    s.exits_zero();
    assert!(!path.exists(), "the socket file is removed at exit");

    // A path too long is refused with a message naming it.
    let long = format!("/tmp/{}", "x".repeat(200));
    let out = example_proc::command("echo_server", "", &[])
        .args(["--unix", &long])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&long) && err.contains("205 bytes"), "{err}");
}
