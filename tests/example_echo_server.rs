//! `examples/echo_server` as a process, on the default backend: bulk
//! streams from several clients at once come back whole and in order with
//! each `--buf-size`, and a size it does not offer is refused with the
//! sizes named. Needs the example built (`cargo test` builds it).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Stdio};
use std::thread;
use std::time::Duration;

mod example_proc;

const LIMIT: Duration = Duration::from_secs(30);
/// Bytes each client streams through the server.
const STREAM: usize = 2 << 20;
const CLIENTS: usize = 4;

struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(args: &[&str]) -> Server {
    let mut child = example_proc::command("echo_server", "epoll", &[])
        .arg("0")
        .args(args)
        .stderr(Stdio::piped())
        .spawn()
        .expect("start echo_server");
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    // The first line is the listening line (or the error that ends it).
    err.read_line(&mut line)
        .expect("echo_server's first log line");
    let addr = line
        .split("listening on ")
        .nth(1)
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    // Keep draining its log so it never blocks on a full pipe.
    thread::spawn(move || for _ in err.lines().map_while(Result::ok) {});
    Server { child, addr }
}

/// Client `seed`'s byte stream.
fn pattern(seed: usize) -> Vec<u8> {
    (0..STREAM)
        .map(|i| (i * 31 + seed * 7 + i / 997) as u8)
        .collect()
}

/// Streams `pattern(seed)` through the server from one thread while
/// reading the echo on this one; returns what came back.
fn stream_through(addr: SocketAddr, seed: usize) -> Vec<u8> {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(LIMIT)).unwrap();
    s.set_write_timeout(Some(LIMIT)).unwrap();
    let mut w = s.try_clone().unwrap();
    let writer = thread::spawn(move || {
        for chunk in pattern(seed).chunks(16 * 1024) {
            w.write_all(chunk).expect("write to echo_server");
        }
    });
    let mut got = vec![0u8; STREAM];
    (&s).read_exact(&mut got).expect("the whole stream echoed");
    writer.join().unwrap();
    got
}

fn streams_come_back_whole(args: &[&str]) {
    let srv = start(args);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|seed| {
            let addr = srv.addr;
            thread::spawn(move || (seed, stream_through(addr, seed)))
        })
        .collect();
    for c in clients {
        let (seed, got) = c.join().unwrap();
        assert!(
            got == pattern(seed),
            "client {seed} ({args:?}): echo differs from what it sent"
        );
    }
}

#[test]
fn bulk_streams_come_back_whole_with_the_default_buffers() {
    streams_come_back_whole(&[]);
}

#[test]
fn bulk_streams_come_back_whole_with_each_buffer_size() {
    for size in ["4096", "16384", "262144"] {
        streams_come_back_whole(&["--buf-size", size, "--max-conns", "8"]);
    }
}

#[test]
fn a_buffer_size_it_does_not_offer_is_refused_with_the_sizes_named() {
    let out = example_proc::command("echo_server", "epoll", &[])
        .args(["0", "--buf-size", "1000"])
        .output()
        .expect("run echo_server");
    assert_eq!(out.status.code(), Some(2), "usage errors exit 2");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--buf-size 1000: not one of [4096, 16384, 65536, 262144]"),
        "{err}"
    );
}
