//! Prints what a context reserves (`IoContext::memory`) for the pool sizes
//! given, on each enabled backend: bytes per pool, in total, and per idle
//! and active connection. `scripts/footprint.sh` runs it with the sizes
//! `echo_server` and `nostd-echo` build with.
//!
//! ```text
//! memory_report [--ops N] [--descriptors N] [--timers N]
//!               [--read-buffers COUNT SIZE] [--tasks COUNT BYTES] [--commit]
//! ```
//! Defaults: `Builder::new()`'s.

use std::process::exit;

macro_rules! report {
    ($backend:ident, $args:expr) => {{
        let a = $args;
        let mut b = pinion::$backend::Builder::new();
        if let Some(n) = a.ops {
            b = b.ops(n);
        }
        if let Some(n) = a.descriptors {
            b = b.descriptors(n);
        }
        if let Some(n) = a.timers {
            b = b.timers(n);
        }
        if let Some((c, s)) = a.read_buffers {
            b = b.read_buffers(c, s);
        }
        if let Some((c, s)) = a.tasks {
            b = b.tasks(c, s);
        }
        match b.commit_memory(a.commit).build() {
            Ok(ctx) => println!("{}", ctx.memory()),
            // A kernel or sandbox without io_uring: said, not fatal.
            Err(e) => println!("{}: not built here: {e}", stringify!($backend)),
        }
    }};
}

#[derive(Default)]
struct Args {
    ops: Option<usize>,
    descriptors: Option<usize>,
    timers: Option<usize>,
    read_buffers: Option<(usize, usize)>,
    tasks: Option<(usize, usize)>,
    commit: bool,
}

fn main() {
    let args = parse();
    #[cfg(feature = "epoll")]
    report!(epoll, &args);
    #[cfg(feature = "uring")]
    report!(uring, &args);
}

fn parse() -> Args {
    let mut a = Args::default();
    let mut it = std::env::args().skip(1);
    let num = |it: &mut dyn Iterator<Item = String>, what: &str| -> usize {
        it.next()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| usage(&format!("{what} needs a number")))
    };
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--ops" => a.ops = Some(num(&mut it, "--ops")),
            "--descriptors" => a.descriptors = Some(num(&mut it, "--descriptors")),
            "--timers" => a.timers = Some(num(&mut it, "--timers")),
            "--read-buffers" => {
                a.read_buffers = Some((
                    num(&mut it, "--read-buffers"),
                    num(&mut it, "--read-buffers"),
                ))
            }
            "--tasks" => a.tasks = Some((num(&mut it, "--tasks"), num(&mut it, "--tasks"))),
            "--commit" => a.commit = true,
            other => usage(&format!("unknown argument {other}")),
        }
    }
    a
}

fn usage(msg: &str) -> ! {
    eprintln!("memory_report: {msg}");
    eprintln!(
        "usage: memory_report [--ops N] [--descriptors N] [--timers N] \
         [--read-buffers COUNT SIZE] [--tasks COUNT BYTES] [--commit]"
    );
    exit(2)
}
