//! A TCP connect raced against a timer; the loser is cancelled.
//!
//! ```text
//! connect_timeout ADDR [--timeout-ms MS] [--backend epoll|uring]
//! ```
//! Prints `connected to ADDR` and exits 0; `ADDR: timed out after MS ms`
//! and exits 3 when the timer wins (a host that drops SYNs, a listener
//! whose backlog is full); the connect's own error (`connection refused`)
//! and exits 1. `MS` defaults to 2000.
//!
//! `aio::timeout` polls the connect and a timer together: when the timer
//! fires first the connect future is dropped, which cancels its operation
//! and closes its socket; when the connect wins, the timer's wait is
//! dropped and cancelled. Nothing is left pending either way, so the
//! context's `block_on` returns at once.

use std::net::SocketAddr;
use std::process::exit;
use std::time::Duration;

use pinion::aio::timeout;
use pinion::builder::Builder;
use pinion::context::IoContext;
use pinion::net::TcpStream;
use pinion::{Backend, Error};

fn main() {
    let mut args = std::env::args().skip(1);
    let default = if cfg!(feature = "epoll") {
        "epoll"
    } else {
        "uring"
    };
    let (mut addr, mut ms, mut backend) = (None, 2000u64, default.to_string());
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage("a value is missing"));
        match a.as_str() {
            "--timeout-ms" => ms = value().parse().unwrap_or_else(|_| usage("bad MS")),
            "--backend" => backend = value(),
            a if !a.starts_with('-') => {
                addr = Some(
                    a.parse::<SocketAddr>()
                        .unwrap_or_else(|_| usage("bad ADDR")),
                )
            }
            other => usage(&format!("unknown option {other}")),
        }
    }
    let addr = addr.unwrap_or_else(|| usage("ADDR is missing"));
    let code = match backend.as_str() {
        #[cfg(feature = "epoll")]
        "epoll" => race::<pinion::epoll::Backend>(addr, Duration::from_millis(ms)),
        #[cfg(feature = "uring")]
        "uring" => race::<pinion::uring::Backend>(addr, Duration::from_millis(ms)),
        other => usage(&format!("backend {other} is not built in")),
    };
    exit(code)
}

fn race<B: Backend>(addr: SocketAddr, limit: Duration) -> i32 {
    let ctx: &'static IoContext<B> = Builder::<B>::new()
        .ops(16)
        .descriptors(4)
        .timers(4)
        .build_static()
        .unwrap_or_else(|e| {
            eprintln!("connect_timeout: building the context: {e}");
            exit(2)
        });
    let outcome = ctx.block_on(async move {
        match timeout(ctx, limit, TcpStream::connect(ctx, addr)).await {
            Ok(Ok(stream)) => {
                let local = stream.local_addr();
                // `stream` closes when dropped here.
                Ok(local)
            }
            Ok(Err(e)) => Err(e),
            Err(e) => Err(e), // the timer won: Error::TimedOut
        }
    });
    match outcome {
        Ok(Ok(local)) => {
            let local = local.map(|a| a.to_string()).unwrap_or_default();
            println!("connected to {addr} from {local}");
            0
        }
        Ok(Err(Error::TimedOut)) => {
            eprintln!(
                "connect_timeout: {addr}: timed out after {} ms",
                limit.as_millis()
            );
            3
        }
        Ok(Err(e)) => {
            eprintln!("connect_timeout: {addr}: {e}");
            1
        }
        Err(e) => {
            eprintln!("connect_timeout: running the context: {e}");
            2
        }
    }
}

fn usage(msg: &str) -> ! {
    eprintln!("connect_timeout: {msg}");
    eprintln!("usage: connect_timeout ADDR [--timeout-ms MS] [--backend epoll|uring]");
    exit(2)
}
