//! Handler throughput, the workload of ../shared/bench's `asio-post`:
//! K chains of handlers, each re-posting itself until M handlers have run
//! in all, on N threads.
//!
//! `post_bench --threads N --chains K --handlers M`
//! prints `bench=pinion-post threads=N handlers=M secs=S handlers_per_s=X`.
//!
//! Runs pinion's scheduler with no backend task (`NoTask`), as Asio's
//! `io_context` runs without a reactor until an I/O object needs one, so
//! the figure is the handler queue's alone.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use pinion::backend::{NoTask, OpSlot, Scheduler, SlotStorage};
use pinion::sync::FutexKit;

type Ctx = Scheduler<NoTask, FutexKit>;

#[repr(align(64))]
struct Chain {
    left: AtomicUsize,
}

fn step(ctx: &'static Ctx, chain: &'static Chain) {
    // Relaxed is enough: one chain's handlers never overlap (each posts
    // the next), and the scheduler's queue hand-off orders them.
    let left = chain.left.load(Ordering::Relaxed) - 1;
    chain.left.store(left, Ordering::Relaxed);
    if left > 0 {
        if let Err(r) = ctx.post(move || step(ctx, chain)) {
            panic!("post_bench: one slot per chain is always free: {r}");
        }
    }
}

fn main() {
    let (mut threads, mut chains, mut handlers) = (1usize, 64u64, 20_000_000u64);
    let args: Vec<String> = std::env::args().skip(1).collect();
    for kv in args.chunks(2) {
        let v = kv.get(1).map(String::as_str).unwrap_or("");
        let n: u64 = v.parse().unwrap_or_else(|_| usage(&kv[0]));
        match kv[0].as_str() {
            "--threads" => threads = n as usize,
            "--chains" => chains = n,
            "--handlers" => handlers = n,
            other => usage(other),
        }
    }
    if threads == 0 || chains == 0 || handlers < chains {
        usage("bad arguments");
    }
    let per = handlers / chains;
    let ctx: &'static Ctx = Box::leak(Box::new(Scheduler::new(
        NoTask,
        SlotStorage::boxed_with(chains as usize + 64, || OpSlot::EMPTY),
        threads,
    )));
    let states: &'static [Chain] = Box::leak(
        (0..chains)
            .map(|_| Chain {
                left: AtomicUsize::new(per as usize),
            })
            .collect(),
    );
    for c in states {
        if let Err(r) = ctx.post(move || step(ctx, c)) {
            panic!("post_bench: pool sized for every chain: {r}");
        }
    }
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for _ in 1..threads {
            s.spawn(|| ctx.run());
        }
        ctx.run();
    });
    let secs = t0.elapsed().as_secs_f64();
    let done = per * chains;
    println!(
        "bench=pinion-post threads={threads} chains={chains} handlers={done} secs={secs:.3} handlers_per_s={:.0}",
        done as f64 / secs
    );
}

fn usage(what: &str) -> ! {
    eprintln!("post_bench: {what}\nusage: post_bench [--threads N] [--chains K] [--handlers M]");
    std::process::exit(2)
}
