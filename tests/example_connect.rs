//! `examples/connect_timeout` as a process, on each backend: a listener
//! whose backlog is full drops the SYN, so the timer wins and the connect
//! is cancelled (exit 3); a live listener wins the race (exit 0); a closed
//! port is refused (exit 1). Loopback only. Needs the example built:
//! `cargo test` builds it (a `--test` filter does not).

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

mod example_proc;

/// A listener with a backlog of 0 that nobody accepts from: once one
/// connection is queued, the kernel drops further SYNs (a black hole on
/// loopback). Returns the socket (closed on drop) and its address.
fn black_hole() -> (std::os::fd::OwnedFd, SocketAddr, Vec<TcpStream>) {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket calls on our own descriptor.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0);
    // SAFETY: just made, ours alone.
    let owned = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes([127, 0, 0, 1]),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: `sin` is a valid sockaddr_in of the size passed.
    assert_eq!(
        unsafe { libc::bind(fd, (&sin as *const libc::sockaddr_in).cast(), 16) },
        0
    );
    // SAFETY: plain integers.
    assert_eq!(unsafe { libc::listen(fd, 0) }, 0);
    let mut out: libc::sockaddr_in = sin;
    let mut len = 16u32;
    // SAFETY: `out` is writable for `len` bytes.
    unsafe { libc::getsockname(fd, (&mut out as *mut libc::sockaddr_in).cast(), &mut len) };
    let addr = SocketAddr::from(([127, 0, 0, 1], u16::from_be(out.sin_port)));
    // Fill the queue until a connect no longer gets through (bounded).
    let mut queued = Vec::new();
    for _ in 0..8 {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(s) => queued.push(s),
            Err(_) => return (owned, addr, queued),
        }
    }
    panic!("the backlog never filled: connects still succeed");
}

fn run(addr: SocketAddr, backend: &str, ms: &str) -> (Option<i32>, String) {
    let out = example_proc::command("connect_timeout", "uring", &[])
        .args([&addr.to_string(), "--timeout-ms", ms, "--backend", backend])
        .output()
        .expect("run connect_timeout");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code(), text)
}

#[test]
fn the_timer_wins_against_a_black_hole_and_the_connect_wins_against_a_listener() {
    let (_hole, hole_addr, _queued) = black_hole();
    let live = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let live_addr = live.local_addr().unwrap();
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    for b in example_proc::backends() {
        let (code, text) = run(hole_addr, b, "200");
        if text.contains("unavailable") || text.contains("building the context") {
            eprintln!("SKIPPED connect_timeout on {b}: {text}");
            continue;
        }
        assert_eq!(code, Some(3), "{b}: {text}");
        assert!(text.contains("timed out after 200 ms"), "{b}: {text}");
        let (code, text) = run(live_addr, b, "5000");
        assert_eq!(code, Some(0), "{b}: {text}");
        assert!(
            text.contains(&format!("connected to {live_addr}")),
            "{b}: {text}"
        );
        let (code, text) = run(closed, b, "5000");
        assert_eq!(code, Some(1), "{b}: {text}");
        assert!(text.contains("refused"), "{b}: {text}");
    }
}
