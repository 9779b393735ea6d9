//! `examples/async_echo` as a process, on each backend, against std
//! clients: the behaviours the callback `echo_server` promises (half-close,
//! slow readers, resets, churn, `--max-conns`, EMFILE, SIGTERM). Needs the
//! example built: `cargo test` builds it (a `--test` filter does not).

#[path = "util/blocked.rs"]
mod blocked;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Child, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

mod example_proc;

const LIMIT: Duration = Duration::from_secs(20);

/// A running `async_echo`; killed on drop, whatever the test did.
struct Server {
    child: Child,
    addr: SocketAddr,
    log: Receiver<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the server (optionally under `prlimit`) and waits for its
/// "listening on" line.
fn start(backend: &str, args: &[&str], nofile: Option<u32>) -> Server {
    let limit = nofile.map(|n| format!("--nofile={n}:{n}"));
    let wrapper: Vec<&str> = match &limit {
        Some(l) => vec!["prlimit", l],
        None => vec![],
    };
    let mut cmd = example_proc::command("async_echo", "uring", &wrapper);
    let mut child = cmd
        .args(["0", "--backend", backend])
        .args(args)
        .stderr(Stdio::piped())
        .spawn()
        .expect("start async_echo (prlimit is in Debian's util-linux)");
    let (tx, log) = mpsc::channel();
    let err = child.stderr.take().unwrap();
    thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut s = Server {
        child,
        addr: "127.0.0.1:0".parse().unwrap(),
        log,
    };
    let line = s.wait_log("listening on");
    let addr = line.split("listening on ").nth(1).unwrap();
    s.addr = addr.split(' ').next().unwrap().parse().unwrap();
    s
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
        panic!("async_echo never logged {what:?}");
    }

    fn connect(&self) -> TcpStream {
        connect(self.addr)
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(LIMIT)).unwrap();
    s.set_write_timeout(Some(LIMIT)).unwrap();
    s
}

fn pattern(seed: usize, n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| (i * 31 + seed * 7 + i / 251) as u8)
        .collect()
}

/// Sends `msg`, half-closes, and reads everything back.
fn round_trip(addr: SocketAddr, msg: &[u8]) -> Vec<u8> {
    let mut c = connect(addr);
    let writer = {
        let mut w = c.try_clone().unwrap();
        let msg = msg.to_vec();
        thread::spawn(move || {
            w.write_all(&msg).unwrap();
            w.shutdown(Shutdown::Write).unwrap();
        })
    };
    let mut back = Vec::new();
    c.read_to_end(&mut back).expect("read the echo");
    writer.join().unwrap();
    back
}

fn backends() -> Vec<&'static str> {
    // The example is built with this test's features.
    let mut b = Vec::new();
    if cfg!(feature = "epoll") {
        b.push("epoll");
    }
    if cfg!(feature = "uring") {
        // Where io_uring cannot run (qemu-user answers ENOSYS, a sysctl or
        // seccomp EPERM), the example cannot serve on it: skip, loudly.
        match pinion_sys::uring::Ring::new(2, Default::default()) {
            Ok(_) => b.push("uring"),
            // On the process's stderr, past the harness's capture.
            Err(e) => drop(writeln!(
                std::io::stderr(),
                "SKIPPED {} on uring: io_uring_setup: {e} (an emulator, or io_uring disabled)",
                thread::current().name().unwrap_or("example_echo")
            )),
        }
    }
    b
}

#[test]
fn half_closed_clients_get_every_byte_back() {
    for b in backends() {
        let s = start(b, &[], None);
        let clients: Vec<_> = (0..4)
            .map(|i| {
                let msg = pattern(i, 200_000);
                let addr = s.addr;
                thread::spawn(move || {
                    assert!(
                        round_trip(addr, &msg) == msg,
                        "{b}: client {i} got other bytes"
                    );
                })
            })
            .collect();
        for c in clients {
            c.join().unwrap();
        }
    }
}

#[test]
fn a_slow_reader_gets_everything_once_it_reads() {
    for b in backends() {
        let s = start(b, &[], None);
        let mut c = s.connect();
        let msg = pattern(9, 4 << 20);
        let (tid_tx, tid) = std::sync::mpsc::channel();
        let writer = {
            let mut w = c.try_clone().unwrap();
            let msg = msg.clone();
            thread::spawn(move || {
                tid_tx.send(blocked::current_tid()).unwrap();
                w.write_all(&msg).unwrap();
                w.shutdown(Shutdown::Write).unwrap();
            })
        };
        // Not reading until the writer blocks: every buffer on the way is
        // full, so the server has stopped reading too (TCP back-pressure)
        // instead of buffering. (Or the writer finished: loopback buffers
        // took it all, and the check below still holds.)
        blocked::wait_blocked(tid.recv().unwrap(), "the writer to block on a full socket");
        let mut back = Vec::new();
        c.read_to_end(&mut back).unwrap();
        writer.join().unwrap();
        assert!(
            back == msg,
            "{b}: {} of {} bytes, or other bytes",
            back.len(),
            msg.len()
        );
    }
}

#[test]
fn resets_and_churn_leave_the_server_serving() {
    for b in backends() {
        let s = start(b, &[], None);
        for i in 0..50 {
            let c = s.connect();
            // SO_LINGER 0: close sends RST, mid-stream.
            (&c).write_all(&pattern(i, 10_000)).unwrap();
            let l = libc::linger {
                l_onoff: 1,
                l_linger: 0,
            };
            // SAFETY: a valid socket and a valid linger struct.
            let r = unsafe {
                libc::setsockopt(
                    std::os::fd::AsRawFd::as_raw_fd(&c),
                    libc::SOL_SOCKET,
                    libc::SO_LINGER,
                    &l as *const libc::linger as *const libc::c_void,
                    std::mem::size_of::<libc::linger>() as libc::socklen_t,
                )
            };
            assert_eq!(r, 0);
        }
        for i in 0..300 {
            let msg = pattern(i, 64);
            assert_eq!(round_trip(s.addr, &msg), msg, "{b}: churn round {i}");
        }
    }
}

#[test]
fn connections_beyond_max_conns_are_closed_and_room_comes_back() {
    for b in backends() {
        let s = start(b, &["--max-conns", "2"], None);
        let mut held: Vec<TcpStream> = (0..2).map(|_| s.connect()).collect();
        for c in &mut held {
            c.write_all(b"x").unwrap();
            let mut one = [0u8; 1];
            c.read_exact(&mut one).unwrap();
        }
        let mut extra = s.connect();
        let mut buf = [0u8; 1];
        assert_eq!(
            extra.read(&mut buf).unwrap_or(0),
            0,
            "{b}: the third is closed"
        );
        s.wait_log("refusing connections");
        held.pop();
        // The freed buffer and task slot serve a new client (bounded retry:
        // the server notices the close asynchronously).
        let end = Instant::now() + LIMIT;
        loop {
            let mut c = s.connect();
            let _ = c.write_all(b"back");
            let mut got = [0u8; 4];
            if c.read_exact(&mut got).is_ok() {
                assert_eq!(&got, b"back");
                break;
            }
            assert!(Instant::now() < end, "{b}: no room came back");
            thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn emfile_is_logged_and_the_server_recovers() {
    for b in backends() {
        // Few descriptors: the backlog fills past what accept can take.
        let s = start(b, &[], Some(24));
        let held: Vec<TcpStream> = (0..40).map(|_| s.connect()).collect();
        s.wait_log("too many open files");
        drop(held);
        let end = Instant::now() + LIMIT;
        loop {
            let mut c = s.connect();
            let _ = c.write_all(b"ok");
            let mut got = [0u8; 2];
            if c.read_exact(&mut got).is_ok() {
                assert_eq!(&got, b"ok");
                break;
            }
            assert!(Instant::now() < end, "{b}: never recovered from EMFILE");
            thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn sigterm_stops_it_with_status_zero() {
    for b in backends() {
        let mut s = start(b, &[], None);
        let _idle = s.connect();
        // SAFETY: signalling our own child.
        assert_eq!(unsafe { libc::kill(s.child.id() as i32, libc::SIGTERM) }, 0);
        let end = Instant::now() + LIMIT;
        let status = loop {
            if let Some(st) = s.child.try_wait().unwrap() {
                break st;
            }
            assert!(Instant::now() < end, "{b}: still running after SIGTERM");
            thread::sleep(Duration::from_millis(10));
        };
        assert!(status.success(), "{b}: {status}");
        s.wait_log("stopped after");
    }
}
