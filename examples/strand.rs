//! The strand demo from Asio's internals walkthrough, in pinion:
//! five threads run one context, ten handlers posted through one strand
//! print 0..9, one per line, in order.
//!
//! ```c++
//! boost::asio::io_context ctx;
//! std::thread workers[5];            // each runs ctx.run()
//! boost::asio::io_context::strand strand(ctx);
//! for (int i = 0; i < 10; i++)
//!     strand.post([i] { std::cout << i << std::endl; });
//! ```
//!
//! The strand is itself an operation: the first post locks it and queues
//! it on the context; later posts wait inside it. Whichever worker takes
//! the strand runs its ready handlers, then moves the waiting ones to
//! ready and re-queues the strand, so the ten handlers never overlap and
//! keep their order, whatever thread each one lands on.
//!
//! Unlike the C++ original (whose work guard is commented out, so a worker
//! may find no work and return before anything is posted), the workers
//! here start under a work guard, dropped once everything is posted.
//!
//! `cargo run --example strand` prints exactly `0\n1\n...\n9\n`.

use std::process::exit;
use std::thread;

use pinion::{Builder, Strand};

fn main() {
    // The context's operation slots are reserved here, once; posting and
    // running allocate nothing afterwards.
    let ctx = Builder::new()
        .ops(64)
        .concurrency_hint(5)
        .build()
        .unwrap_or_else(|e| fail(&format!("building the context: {e}")));
    let strand = Strand::new(&ctx)
        .unwrap_or_else(|e| fail(&format!("a fresh pool has a slot for the strand: {e}")));

    thread::scope(|s| {
        // Keeps the workers' `run` from returning before the posts below.
        let guard = ctx.work_guard();
        for _ in 0..5 {
            s.spawn(|| ctx.run());
        }
        for i in 0..10 {
            if let Err(r) = strand.post(move || println!("{i}")) {
                fail(&format!("64 slots are enough for 10 handlers: {r}"));
            }
        }
        // Now `run` returns in every worker once the ten have run.
        drop(guard);
    });
}

fn fail(msg: &str) -> ! {
    eprintln!("strand: {msg}");
    exit(1)
}
