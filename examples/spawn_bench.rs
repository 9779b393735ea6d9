//! Task spawn-and-complete throughput, the workload of ../shared/bench's
//! `tokio-spawn --mode spawn`: K chains; each task spawns the next task of
//! its chain (a fresh task, not a loop) and completes, until M tasks have
//! run in all, on N threads.
//!
//! `spawn_bench [--threads N] [--chains K] [--handlers M]`
//! prints `bench=pinion-spawn threads=N chains=K handlers=M secs=S handlers_per_s=X`.
//!
//! Runs on the full `IoContext` of the default backend (its reactor is
//! idle), with task slots reserved at build: two per chain, since a task
//! spawns its successor before its own slot is free.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use pinion::{Builder, IoContext};

/// One chain's remaining count, on its own cache line.
#[repr(align(64))]
struct Chain {
    left: AtomicUsize,
}

fn step(ctx: &'static IoContext, chain: &'static Chain) {
    // One chain's tasks never overlap (each spawns the next), and the
    // scheduler's queue hand-off orders them: Relaxed is enough.
    let left = chain.left.load(Ordering::Relaxed) - 1;
    chain.left.store(left, Ordering::Relaxed);
    if left > 0 {
        // Detached: the handle is dropped, the slot returns when the task ends.
        if let Err(r) = ctx.spawn(async move { step(ctx, chain) }) {
            panic!(
                "spawn_bench: two slots per chain are always enough: {}",
                r.error
            );
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
    let ctx: &'static IoContext = Builder::new()
        .tasks(2 * chains as usize, 64)
        .concurrency_hint(threads)
        .build_static()
        .unwrap_or_else(|e| panic!("spawn_bench: building the context: {e}"));
    let states: &'static [Chain] = Box::leak(
        (0..chains)
            .map(|_| Chain {
                left: AtomicUsize::new(per as usize),
            })
            .collect(),
    );
    let t0 = Instant::now();
    for c in states {
        if let Err(r) = ctx.spawn(async move { step(ctx, c) }) {
            panic!("spawn_bench: pool sized for every chain: {}", r.error);
        }
    }
    std::thread::scope(|s| {
        for _ in 1..threads {
            s.spawn(|| ctx.run());
        }
        ctx.run();
    });
    let secs = t0.elapsed().as_secs_f64();
    let done = per * chains;
    assert_eq!(ctx.tasks_in_use().0, 0, "every task finished");
    println!(
        "bench=pinion-spawn threads={threads} chains={chains} handlers={done} secs={secs:.3} handlers_per_s={:.0}",
        done as f64 / secs
    );
}

fn usage(what: &str) -> ! {
    eprintln!("spawn_bench: {what}\nusage: spawn_bench [--threads N] [--chains K] [--handlers M]");
    std::process::exit(2)
}
