//! `examples/async_echo` as a process, on each backend, against std
//! clients: the behaviours the callback `echo_server` promises (half-close,
//! slow readers, resets, churn, `--max-conns`, EMFILE, SIGTERM). Needs the
//! example built: `cargo test` builds it (a `--test` filter does not).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

mod example_proc;

use example_proc::backends;
use example_proc::server::{self, Server, LIMIT};

/// Starts the server (optionally under `prlimit`) and waits for its
/// "listening on" line.
fn start(backend: &str, args: &[&str], nofile: Option<u32>) -> Server {
    let limit = nofile.map(|n| format!("--nofile={n}:{n}"));
    let wrapper: Vec<&str> = match &limit {
        Some(l) => vec!["prlimit", l],
        None => vec![],
    };
    let mut cmd = example_proc::command("async_echo", "uring", &wrapper);
    cmd.args(["0", "--backend", backend]).args(args);
    Server::start(&format!("async_echo on {backend}"), cmd)
}

#[test]
fn half_closed_clients_get_every_byte_back() {
    for b in backends() {
        server::half_closed_clients_get_every_byte_back(&start(b, &[], None));
    }
}

#[test]
fn a_slow_reader_gets_everything_once_it_reads() {
    for b in backends() {
        server::a_slow_reader_gets_everything_once_it_reads(&start(b, &[], None));
    }
}

#[test]
fn resets_and_churn_leave_the_server_serving() {
    for b in backends() {
        server::resets_and_churn_leave_the_server_serving(&start(b, &[], None));
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
        server::emfile_is_logged_and_the_server_recovers(&start(b, &[], Some(24)));
    }
}

#[test]
fn sigterm_stops_it_with_status_zero() {
    for b in backends() {
        server::sigterm_stops_it_with_status_zero(&mut start(b, &[], None));
    }
}
