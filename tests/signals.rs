//! `SignalSet` against real signals (`kill(getpid(), ...)`), on each
//! backend this build has. A binary without the test harness: the signals
//! must be blocked before any thread exists, or the kernel would run their
//! default action in a harness thread. Every wait is bounded by a
//! watchdog; no check is on time.

#[path = "util/blocked.rs"]
mod blocked;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pinion::backend::Backend;
use pinion::builder::Builder;
use pinion::context::IoContext;
use pinion::signal::{self, SignalSet};
use pinion::{Error, Owned};

const SIGS: [i32; 4] = [libc::SIGUSR1, libc::SIGUSR2, libc::SIGHUP, libc::SIGALRM];

fn raise(sig: i32) {
    // SAFETY: plain integers; the signal is blocked in every thread.
    assert_eq!(unsafe { libc::kill(libc::getpid(), sig) }, 0);
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

type Got = Arc<Mutex<Vec<Result<i32, Error>>>>;
/// A wait's handler that records what it got.
type Record = Box<dyn FnOnce(Result<i32, Error>) + Send>;
/// A test: one context of backend `B`.
type Test<B> = (&'static str, fn(&'static IoContext<B>));

fn recorder() -> (Got, impl Fn() -> Record) {
    let got: Got = Arc::default();
    let g = got.clone();
    (got, move || {
        let g = g.clone();
        Box::new(move |r| g.lock().unwrap().push(r))
    })
}

/// Runs `ctx` until `done`, bounded.
fn run_until<B: Backend>(ctx: &'static IoContext<B>, what: &str, done: impl Fn() -> bool) {
    let end = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        ctx.run_for(Duration::from_millis(10));
        ctx.restart();
    }
}

fn delivered_once_to_a_thread_blocked_in_run<B: Backend>(ctx: &'static IoContext<B>)
where
    IoContext<B>: Sync,
{
    let set = Owned::new(SignalSet::new(ctx).unwrap());
    set.add(libc::SIGUSR1).unwrap();
    let (got, h) = recorder();
    set.async_wait(h()).map_err(|r| r.error).unwrap();
    // A runner blocked in run(): the pending wait is its only work.
    let (tid_tx, tid) = std::sync::mpsc::channel();
    let runner = std::thread::spawn(move || {
        tid_tx.send(blocked::current_tid()).unwrap();
        ctx.run()
    });
    // Asleep in the backend's wait: the signal must wake it.
    blocked::wait_blocked(tid.recv().unwrap(), "the runner to block in run");
    raise(libc::SIGUSR1);
    runner.join().unwrap();
    assert_eq!(*got.lock().unwrap(), [Ok(libc::SIGUSR1)]);
    // Once only: a second wait finds nothing, and cancel aborts it.
    ctx.restart();
    set.async_wait(h()).map_err(|r| r.error).unwrap();
    ctx.poll();
    assert_eq!(got.lock().unwrap().len(), 1, "delivered once");
    set.cancel().unwrap();
    run_until(ctx, "the cancelled wait", || got.lock().unwrap().len() == 2);
    assert_eq!(got.lock().unwrap()[1], Err(Error::OperationAborted));
}

fn three_raised_before_any_wait_are_all_delivered<B: Backend>(ctx: &'static IoContext<B>) {
    let set = Owned::new(SignalSet::new(ctx).unwrap());
    for s in [libc::SIGUSR1, libc::SIGUSR2, libc::SIGHUP] {
        set.add(s).unwrap();
    }
    for s in [libc::SIGHUP, libc::SIGUSR2, libc::SIGUSR1] {
        raise(s);
    }
    let (got, h) = recorder();
    for i in 0..3 {
        set.async_wait(h()).map_err(|r| r.error).unwrap();
        run_until(ctx, "a counted signal", || {
            got.lock().unwrap().len() == i + 1
        });
    }
    let mut sigs: Vec<i32> = got.lock().unwrap().iter().map(|r| r.unwrap()).collect();
    sigs.sort();
    assert_eq!(sigs, [libc::SIGHUP, libc::SIGUSR1, libc::SIGUSR2]);
}

fn two_sets_both_get_one_signal<B: Backend>(ctx: &'static IoContext<B>) {
    let a = Owned::new(SignalSet::new(ctx).unwrap());
    let b = Owned::new(SignalSet::new(ctx).unwrap());
    a.add(libc::SIGUSR2).unwrap();
    b.add(libc::SIGUSR2).unwrap();
    b.add(libc::SIGALRM).unwrap();
    let (got, h) = recorder();
    a.async_wait(h()).map_err(|r| r.error).unwrap();
    b.async_wait(h()).map_err(|r| r.error).unwrap();
    ctx.poll();
    raise(libc::SIGUSR2);
    run_until(ctx, "both sets", || got.lock().unwrap().len() == 2);
    assert_eq!(*got.lock().unwrap(), [Ok(libc::SIGUSR2), Ok(libc::SIGUSR2)]);
    // Closing a set with a wait pending aborts it; the other keeps working.
    a.async_wait(h()).map_err(|r| r.error).unwrap();
    a.close().unwrap();
    run_until(ctx, "the closed set's wait", || {
        got.lock().unwrap().len() == 3
    });
    assert_eq!(got.lock().unwrap()[2], Err(Error::OperationAborted));
    assert_eq!(a.add(libc::SIGUSR1), Err(Error::BadDescriptor));
    b.async_wait(h()).map_err(|r| r.error).unwrap();
    raise(libc::SIGALRM);
    run_until(ctx, "the other set", || got.lock().unwrap().len() == 4);
    assert_eq!(got.lock().unwrap()[3], Ok(libc::SIGALRM));
}

fn bad_signals_are_clear_errors<B: Backend>(ctx: &'static IoContext<B>) {
    let set = Owned::new(SignalSet::new(ctx).unwrap());
    for bad in [0, -3, 65, libc::SIGKILL, libc::SIGSTOP] {
        assert_eq!(set.add(bad), Err(Error::InvalidSignal(bad)));
    }
    assert_eq!(
        set.add(libc::SIGWINCH),
        Err(Error::SignalNotBlocked(libc::SIGWINCH))
    );
    let text = Error::SignalNotBlocked(libc::SIGWINCH).to_string();
    assert!(text.contains("pinion::signal::block"), "{text}");
    assert!(Error::InvalidSignal(65).to_string().contains("65"));
}

/// `SignalSet::wait`, the future form: in `block_on` and in a task, a
/// signal counted before the wait and one raised during it, a second set
/// counting the same signal, a wait dropped unfinished losing nothing,
/// and `cancel` and `close` aborting a pending one.
fn the_wait_future<B: Backend>(ctx: &'static IoContext<B>)
where
    IoContext<B>: Sync,
{
    let set = Owned::new(SignalSet::new(ctx).unwrap());
    let other = Owned::new(SignalSet::new(ctx).unwrap());
    let (s, o) = (*set, *other);
    set.add(libc::SIGUSR1).unwrap();
    set.add(libc::SIGHUP).unwrap();
    other.add(libc::SIGUSR1).unwrap();
    raise(libc::SIGHUP);
    let got = ctx.block_on(async move { s.wait().await }).unwrap();
    assert_eq!(got, Ok(libc::SIGHUP), "counted before the wait");
    // A task waiting, then the signal.
    let h = ctx
        .spawn(async move { s.wait().await })
        .map_err(|r| r.error)
        .unwrap();
    ctx.restart();
    ctx.poll();
    raise(libc::SIGUSR1);
    assert_eq!(ctx.block_on(h).unwrap().unwrap(), Ok(libc::SIGUSR1));
    // The other set counted it too.
    let got = ctx.block_on(async move { o.wait().await }).unwrap();
    assert_eq!(got, Ok(libc::SIGUSR1));
    // Given up unfinished: the signal that comes after goes to the next.
    let h = ctx
        .spawn(async move { pinion::aio::timeout(ctx, Duration::from_millis(20), s.wait()).await })
        .map_err(|r| r.error)
        .unwrap();
    assert_eq!(ctx.block_on(h).unwrap().unwrap(), Err(Error::TimedOut));
    raise(libc::SIGUSR1);
    let h = ctx
        .spawn(async move { s.wait().await })
        .map_err(|r| r.error)
        .unwrap();
    assert_eq!(ctx.block_on(h).unwrap().unwrap(), Ok(libc::SIGUSR1));
    // Cancel, then close, of a pending wait.
    for end in [SignalSet::cancel, SignalSet::close] {
        let h = ctx
            .spawn(async move { s.wait().await })
            .map_err(|r| r.error)
            .unwrap();
        ctx.restart();
        ctx.poll();
        end(&s).unwrap();
        assert_eq!(
            ctx.block_on(h).unwrap().unwrap(),
            Err(Error::OperationAborted)
        );
    }
    assert_eq!(
        ctx.block_on(async move { s.wait().await }).unwrap(),
        Err(Error::BadDescriptor)
    );
    // The other set's SIGUSR1 stays counted; drained so the next test
    // starts clean.
    assert_eq!(
        ctx.block_on(async move { o.wait().await }).unwrap(),
        Ok(libc::SIGUSR1)
    );
}

fn run_all<B: Backend>(name: &str, build: impl Fn() -> Option<&'static IoContext<B>>)
where
    IoContext<B>: Sync,
{
    let tests: [Test<B>; 5] = [
        (
            "delivered_once_to_a_thread_blocked_in_run",
            delivered_once_to_a_thread_blocked_in_run::<B>,
        ),
        (
            "three_raised_before_any_wait_are_all_delivered",
            three_raised_before_any_wait_are_all_delivered::<B>,
        ),
        (
            "two_sets_both_get_one_signal",
            two_sets_both_get_one_signal::<B>,
        ),
        (
            "bad_signals_are_clear_errors",
            bad_signals_are_clear_errors::<B>,
        ),
        ("the_wait_future", the_wait_future::<B>),
    ];
    for (t, f) in tests {
        let Some(ctx) = build() else {
            eprintln!("SKIPPED {name}::{t}: the backend cannot be built here");
            continue;
        };
        let fds = open_fds();
        f(ctx);
        // Every set closed: the process signalfd and the duplicates are gone.
        assert_eq!(open_fds(), fds, "{name}::{t}: descriptors leaked");
        println!("test {name}::{t} ... ok");
    }
}

fn main() {
    signal::block(&SIGS).unwrap();
    // Watchdog (it inherits the mask, as every later thread does).
    std::thread::spawn(|| {
        std::thread::sleep(Duration::from_secs(120));
        eprintln!("signals: still running after 120 s, aborting");
        std::process::abort();
    });
    #[cfg(feature = "epoll")]
    run_all::<pinion::epoll::Backend>("epoll", || {
        Some(
            Builder::new()
                .ops(64)
                .descriptors(16)
                .timers(4)
                .tasks(4, 2048)
                .build_static()
                .unwrap(),
        )
    });
    #[cfg(feature = "uring")]
    run_all::<pinion::uring::Backend>("uring", || {
        Builder::new()
            .ops(64)
            .descriptors(16)
            .timers(4)
            .tasks(4, 2048)
            .build_static()
            .ok()
    });
}
