//! A server example running as a child process: its stderr read line by
//! line on a thread (waits for a line are bounded), the address it logs
//! as "listening on ADDR", killed on drop; and the echo behaviours every
//! echo server example promises, checked against it with std clients.

#[path = "../util/blocked.rs"]
mod blocked;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

/// The bound on every wait.
pub const LIMIT: Duration = Duration::from_secs(20);

/// A running server example; killed on drop, whatever the test did.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    pub log: Receiver<String>,
    name: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts `cmd` with its stderr piped here and waits for its
    /// "listening on ADDR" line.
    pub fn start(name: &str, mut cmd: Command) -> Server {
        let mut child = cmd
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {name} (prlimit is in Debian's util-linux): {e}"));
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
            name: name.to_string(),
        };
        let line = s.wait_log("listening on");
        let addr = line.split("listening on ").nth(1).unwrap();
        s.addr = addr.split([' ', ',']).next().unwrap().parse().unwrap();
        s
    }

    /// The first log line containing `what` (bounded wait).
    pub fn wait_log(&self, what: &str) -> String {
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

    /// Lines logged so far (without waiting).
    pub fn drain_log(&self) -> Vec<String> {
        self.log.try_iter().collect()
    }

    pub fn connect(&self) -> TcpStream {
        connect(self.addr)
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn sigterm(&mut self) -> ExitStatus {
        // SAFETY: signalling our own child.
        assert_eq!(
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) },
            0
        );
        let end = Instant::now() + LIMIT;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(
                Instant::now() < end,
                "{} still running after SIGTERM",
                self.name
            );
            thread::sleep(Duration::from_millis(10));
        }
    }
}

pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(LIMIT)).unwrap();
    s.set_write_timeout(Some(LIMIT)).unwrap();
    s
}

pub fn pattern(seed: usize, n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| (i * 31 + seed * 7 + i / 251) as u8)
        .collect()
}

/// Sends `msg`, half-closes, and reads everything back.
pub fn round_trip(addr: SocketAddr, msg: &[u8]) -> Vec<u8> {
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

// ---- the echo behaviours ------------------------------------------------------

/// Four clients send 200,000 bytes each and half-close: each gets every
/// byte back, in order.
pub fn half_closed_clients_get_every_byte_back(s: &Server) {
    let clients: Vec<_> = (0..4)
        .map(|i| {
            let msg = pattern(i, 200_000);
            let (addr, name) = (s.addr, s.name.clone());
            thread::spawn(move || {
                assert!(
                    round_trip(addr, &msg) == msg,
                    "{name}: client {i} got other bytes"
                );
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
}

/// A client sends 4 MiB and reads nothing until its writer blocks: every
/// buffer on the way is full, so the server has stopped reading too (TCP
/// back-pressure) instead of buffering (or the writer finished: loopback
/// buffers took it all, and the check still holds). Then everything comes
/// back, in order.
pub fn a_slow_reader_gets_everything_once_it_reads(s: &Server) {
    let mut c = s.connect();
    let msg = pattern(9, 4 << 20);
    let (tid_tx, tid) = mpsc::channel();
    let writer = {
        let mut w = c.try_clone().unwrap();
        let msg = msg.clone();
        thread::spawn(move || {
            tid_tx.send(blocked::current_tid()).unwrap();
            w.write_all(&msg).unwrap();
            w.shutdown(Shutdown::Write).unwrap();
        })
    };
    blocked::wait_blocked(tid.recv().unwrap(), "the writer to block on a full socket");
    let mut back = Vec::new();
    c.read_to_end(&mut back).unwrap();
    writer.join().unwrap();
    assert!(
        back == msg,
        "{}: {} of {} bytes, or other bytes",
        s.name,
        back.len(),
        msg.len()
    );
}

/// 50 clients reset their connection mid-stream (SO_LINGER 0), then 300
/// connections each echo a message: the server serves on.
pub fn resets_and_churn_leave_the_server_serving(s: &Server) {
    for i in 0..50 {
        let c = s.connect();
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
        assert_eq!(round_trip(s.addr, &msg), msg, "{}: churn round {i}", s.name);
    }
}

/// For a server started with few descriptors: 40 clients fill its backlog
/// past what accept can take; EMFILE is logged; once they leave, it
/// serves again. Returns how many more accept failures it logged during
/// 300 ms of the storm, after the first.
pub fn emfile_is_logged_and_the_server_recovers(s: &Server) -> usize {
    let held: Vec<TcpStream> = (0..40).map(|_| s.connect()).collect();
    s.wait_log("too many open files");
    thread::sleep(Duration::from_millis(300));
    let more = s
        .drain_log()
        .iter()
        .filter(|l| l.contains("accept failed"))
        .count();
    drop(held);
    let end = Instant::now() + LIMIT;
    loop {
        let mut c = s.connect();
        let _ = c.write_all(b"ok");
        let mut got = [0u8; 2];
        if c.read_exact(&mut got).is_ok() {
            assert_eq!(&got, b"ok");
            return more;
        }
        assert!(
            Instant::now() < end,
            "{}: never recovered from EMFILE",
            s.name
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// SIGTERM with a connection open: exit status 0, "stopped after" logged.
pub fn sigterm_stops_it_with_status_zero(s: &mut Server) {
    let _idle = s.connect();
    let status = s.sigterm();
    assert!(status.success(), "{}: {status}", s.name);
    s.wait_log("stopped after");
}
