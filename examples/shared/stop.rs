//! Shared by the server examples: stopping on SIGTERM and SIGINT through a
//! `SignalSet`, the same way on either backend, with no signal handler.

use pinion::backend::Backend;
use pinion::context::IoContext;
use pinion::signal::{self, SignalSet};

/// Blocks SIGTERM and SIGINT in this thread. Call it first thing in
/// `main`: threads spawned later inherit the mask, so the kernel queues
/// the signals for the set instead of terminating the process.
pub fn block_stop_signals(name: &str) {
    if let Err(e) = signal::block(&[libc::SIGTERM, libc::SIGINT]) {
        eprintln!("{name}: blocking SIGTERM/SIGINT: {e}");
        std::process::exit(1);
    }
}

/// Runs `on_stop` once, from `ctx`'s `run()`, when SIGTERM or SIGINT
/// arrives (logged). The pending wait counts as work, as the server's
/// own accept does.
pub fn on_stop_signal<B: Backend>(
    ctx: &'static IoContext<B>, name: &'static str, on_stop: impl FnOnce() + Send + 'static,
) {
    let set = SignalSet::new(ctx)
        .and_then(|s| s.add(libc::SIGTERM).and(s.add(libc::SIGINT)).map(|()| s))
        .unwrap_or_else(|e| {
            eprintln!("{name}: cannot wait for SIGTERM/SIGINT: {e}");
            std::process::exit(1)
        });
    let waiting = set.async_wait(move |r| {
        if let Ok(sig) = r {
            eprintln!("{name}: signal {sig} received, stopping");
            on_stop();
        }
    });
    if let Err(r) = waiting {
        eprintln!("{name}: cannot wait for SIGTERM/SIGINT: {}", r.error);
        std::process::exit(1);
    }
}
