//! `examples/nostd-echo` (the `#![no_std]` `#![no_main]` echo server, its
//! own crate) as a process, against std clients: the behaviours the
//! callback `echo_server` promises (half-close, slow readers, resets,
//! churn, EMFILE logged and survived, SIGTERM).
//!
//! The binary: `$PINION_NOSTD_ECHO` if set (a cross build, run under
//! `$PINION_TEST_RUNNER`), otherwise this test builds it once with
//! `cargo build --release` in its folder. Its features are its own, so
//! this runs in one of the feature sets `./test.sh` tests: epoll without
//! uring.
#![cfg(all(feature = "epoll", not(feature = "uring")))]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(20);

/// The server binary, built at most once per test run; `None` (said
/// loudly by the caller) on an emulated target without
/// `$PINION_NOSTD_ECHO`: cargo builds for the host, which the emulator
/// cannot run.
fn binary() -> Option<&'static Path> {
    static BIN: OnceLock<Option<PathBuf>> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("PINION_NOSTD_ECHO").filter(|p| !p.is_empty()) {
            return Some(PathBuf::from(p));
        }
        if !runner().is_empty() {
            return None;
        }
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/nostd-echo");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        // Its own workspace and target dir; the host target even when this
        // test was built for another one (i686 runs here natively).
        let status = Command::new(cargo)
            .args(["build", "--release", "--quiet"])
            .current_dir(&dir)
            .env_remove("CARGO_BUILD_TARGET")
            .env_remove("CARGO_TARGET_DIR")
            .status()
            .expect("run cargo to build examples/nostd-echo");
        assert!(status.success(), "building examples/nostd-echo failed");
        Some(dir.join("target/release/nostd-echo"))
    })
    .as_deref()
}

/// The emulator a cross target's binaries run under (`ci/cross-env.sh`).
fn runner() -> String {
    std::env::var("PINION_TEST_RUNNER").unwrap_or_default()
}

/// A running `nostd-echo`; killed on drop, whatever the test did.
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

/// Starts the server on a free port (under `prlimit` when `nofile` is
/// given) and waits for its "listening on" line; `None`, said loudly,
/// when there is no binary for this target.
fn start(test: &str, nofile: Option<u32>) -> Option<Server> {
    let Some(bin) = binary() else {
        // Past the harness's capture, so that the skip shows.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED {test}: nostd-echo is built for the host; on an emulated \
             target set PINION_NOSTD_ECHO to a build for it"
        );
        return None;
    };
    let mut argv: Vec<String> = Vec::new();
    if let Some(n) = nofile {
        argv.extend(["prlimit".into(), format!("--nofile={n}:{n}")]);
    }
    argv.extend(runner().split_whitespace().map(str::to_string));
    argv.push(bin.display().to_string());
    argv.push("0".into());
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .stderr(Stdio::piped())
        .spawn()
        .expect("start nostd-echo (prlimit is in Debian's util-linux)");
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
    Some(s)
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
        panic!("nostd-echo never logged {what:?}");
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

#[test]
fn half_closed_clients_get_every_byte_back() {
    let Some(s) = start("half_closed_clients_get_every_byte_back", None) else {
        return;
    };
    let clients: Vec<_> = (0..4)
        .map(|i| {
            let msg = pattern(i, 200_000);
            let addr = s.addr;
            thread::spawn(move || {
                assert!(round_trip(addr, &msg) == msg, "client {i} got other bytes");
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
}

#[test]
fn a_slow_reader_gets_everything_once_it_reads() {
    let Some(s) = start("a_slow_reader_gets_everything_once_it_reads", None) else {
        return;
    };
    let mut c = s.connect();
    let msg = pattern(9, 4 << 20);
    let writer = {
        let mut w = c.try_clone().unwrap();
        let msg = msg.clone();
        thread::spawn(move || {
            w.write_all(&msg).unwrap();
            w.shutdown(Shutdown::Write).unwrap();
        })
    };
    // Not reading for a while: the server stops reading too (TCP
    // back-pressure) instead of buffering.
    thread::sleep(Duration::from_millis(300));
    let mut back = Vec::new();
    c.read_to_end(&mut back).unwrap();
    writer.join().unwrap();
    assert!(
        back == msg,
        "{} of {} bytes, or other bytes",
        back.len(),
        msg.len()
    );
}

#[test]
fn resets_and_churn_leave_the_server_serving() {
    let Some(s) = start("resets_and_churn_leave_the_server_serving", None) else {
        return;
    };
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
        assert_eq!(round_trip(s.addr, &msg), msg, "churn round {i}");
    }
}

#[test]
fn emfile_is_logged_a_few_times_and_the_server_recovers() {
    // Few descriptors: the backlog fills past what accept can take.
    let test = "emfile_is_logged_a_few_times_and_the_server_recovers";
    let Some(s) = start(test, Some(24)) else {
        return;
    };
    let held: Vec<TcpStream> = (0..40).map(|_| s.connect()).collect();
    s.wait_log("too many open files");
    // Let the failures go on for a while: without the back-off (and the
    // log once per run of failures) this logs thousands of lines.
    thread::sleep(Duration::from_millis(300));
    let failures = s
        .log
        .try_iter()
        .filter(|l| l.contains("accept failed"))
        .count();
    assert!(failures <= 1, "{failures} more accept failures logged");
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
        assert!(Instant::now() < end, "never recovered from EMFILE");
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigterm_stops_it_with_status_zero() {
    let Some(mut s) = start("sigterm_stops_it_with_status_zero", None) else {
        return;
    };
    let _idle = s.connect();
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(s.child.id() as i32, libc::SIGTERM) }, 0);
    let end = Instant::now() + LIMIT;
    let status = loop {
        if let Some(st) = s.child.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < end, "still running after SIGTERM");
        thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "{status}");
    s.wait_log("stopped after");
}
