//! The conformance suite under a seeded fault schedule (feature
//! `fault-injection`; `scripts/faults.sh` drives it).
//!
//! With `PINION_FAULT_SEED=<seed>` in the environment, every context the
//! suite builds arms `pinion::fault::Schedule::from_seed(seed)` on the
//! test's thread ([`arm`]); when the test drops it, [`audit`] shuts it
//! down and checks that everything came back: no operation slot held (so
//! every handler ran once or was destroyed), no descriptor, timer, task
//! or read buffer held, no outstanding work, and the process holds as
//! many descriptors as before the context was built.
//!
//! A test may fail because of a *surfacing* fault (an injected
//! `ECONNRESET` it did not expect) and still be right: the panic hook
//! checks that the panic message names the injected error, or, for a
//! fault that ended a connection, the reset (or broken pipe, or early end
//! of stream) its std peer then sees, and says `FAULT SURFACED` on
//! stderr, which the driver accepts. Any other failure prints the command
//! that replays it.
#![cfg(feature = "fault-injection")]

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Once, OnceLock};

use pinion::fault::{self, Log, Schedule};

/// The seed the run was asked for, if any.
pub fn seed() -> Option<u64> {
    let s = std::env::var("PINION_FAULT_SEED").ok()?;
    Some(s.trim().parse().expect("PINION_FAULT_SEED: a decimal u64"))
}

/// What [`arm`] noted before the context existed.
pub struct Armed {
    seed: u64,
    fds: usize,
}

/// Arms the schedule of `PINION_FAULT_SEED` on this thread, if set.
/// Called before the context is built, so its descriptors count as new.
pub fn arm() -> Option<Armed> {
    let seed = seed()?;
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        install_hook();
        let _ = BASELINE_FDS.set(super::open_fds());
        // SAFETY: registers a plain `extern "C" fn` that outlives the process.
        unsafe { libc::atexit(check_fds_at_exit) };
    });
    let fds = super::open_fds();
    fault::arm(Schedule::from_seed(seed));
    Some(Armed { seed, fds })
}

/// The test's name (its thread's), as libtest's `--exact` takes it.
fn test_name() -> String {
    std::thread::current()
        .name()
        .unwrap_or("<unnamed thread>")
        .to_string()
}

/// The command that replays `seed` for this test.
fn replay(seed: u64) -> String {
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "<test binary>".into());
    format!(
        "PINION_FAULT_SEED={seed} {exe} --exact {} --test-threads=1 --nocapture",
        test_name()
    )
}

/// How an injected error reads in a panic message (`{:?}` and `{}` of
/// the `pinion::Error` it becomes).
fn spellings(e: pinion::Errno) -> [String; 2] {
    let err = pinion::Error::from_errno(e);
    [format!("{err:?}"), format!("{err}")]
}

/// A surfacing fault at this site fails a call on a connected socket,
/// and the program's answer (every test's handler) is to close it: with
/// bytes unread, the kernel resets the connection.
fn ends_the_connection(site: fault::Site) -> bool {
    use fault::Site::*;
    matches!(site, StreamRecv | StreamSend | EpollCtlAdd)
}

/// What a std peer's I/O error says when the pinion side closed the
/// connection early (`std::io::Error`'s `Debug` and `Display`): the
/// injected error itself never reaches the peer (seeds 454214311 and
/// 454214333 injected ENOMEM into the echo server's recv and send; its
/// std client then failed with ECONNRESET).
const PEER_SEES: [&str; 8] = [
    "ConnectionReset",
    "Connection reset by peer",
    "BrokenPipe",
    "Broken pipe",
    "UnexpectedEof",
    "failed to fill whole buffer",
    // `shutdown` of a socket the reset already ended (seed 454214161).
    "NotConnected",
    "Transport endpoint is not connected",
];

/// Descriptors open before the first context of the process.
static BASELINE_FDS: OnceLock<usize> = OnceLock::new();
/// Set by the panic hook: a failing test's peers may still hold sockets.
static PANICKED: AtomicBool = AtomicBool::new(false);

/// At exit, when the test and everything it made are gone (the driver
/// runs one test per process), the process holds the descriptors it held
/// before the first context, or a descriptor leaked.
extern "C" fn check_fds_at_exit() {
    let Some(&before) = BASELINE_FDS.get() else {
        return;
    };
    if PANICKED.load(Ordering::SeqCst) {
        return;
    }
    let now = super::open_fds();
    if now != before {
        let seed = seed().unwrap_or(0);
        let _ = writeln!(
            std::io::stderr(),
            "AUDIT FAILED: {now} descriptors open at exit, {before} before the first context \
             (seed {seed}); replay with PINION_FAULT_SEED={seed} and the test's name"
        );
        // SAFETY: ends the process without running more exit handlers.
        unsafe { libc::_exit(101) };
    }
}

/// Wraps the default hook: a panic on an armed thread that names one of
/// the surfacing faults injected there is said to be that fault's.
fn install_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        PANICKED.store(true, Ordering::SeqCst);
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        let mut err = std::io::stderr().lock();
        // The fault may have been injected on the test's thread and fail a
        // handler on another (a context run by several threads).
        for inj in fault::surfaced_in_process() {
            let Some(e) = inj.fault.errno() else { continue };
            if spellings(e).iter().any(|s| msg.contains(s.as_str())) {
                let _ = writeln!(
                    err,
                    "FAULT SURFACED: {} failed with the injected {:?} ({:?} call {})",
                    test_name(),
                    inj.fault,
                    inj.site,
                    inj.call
                );
                return;
            }
            if ends_the_connection(inj.site) && PEER_SEES.iter().any(|s| msg.contains(s)) {
                let _ = writeln!(
                    err,
                    "FAULT SURFACED: {} failed at its std peer (reset, broken pipe or early \
                     end) after the injected {:?} ({:?} call {}) ended the connection",
                    test_name(),
                    inj.fault,
                    inj.site,
                    inj.call
                );
                return;
            }
        }
        if let Some(seed) = seed() {
            let _ = writeln!(
                err,
                "FAULT FAILURE: {} under seed {seed} (surfacing faults injected: {:?}); replay:\n  {}",
                test_name(),
                fault::surfaced_in_process(),
                replay(seed)
            );
        }
    }));
}

/// Disarms, shuts `ctx` down and checks what came back (see the module
/// docs). Fails the test on a leak; while the test is already failing
/// (unwinding), says so and aborts instead, which the driver reports.
pub fn audit<B: pinion::Backend + 'static>(armed: Armed, ctx: Box<pinion::context::IoContext<B>>)
where
    pinion::backend::Sched<B>: Sync,
{
    let log: Log = fault::disarm();
    let _ = armed.fds;
    let mut ctx = ctx;
    let mut held = ctx.shut_down_and_audit();
    if std::thread::panicking() {
        // Timer objects stay open through a shutdown (sockets close): a
        // test that failed before closing its timers left them, not the
        // runtime (seed 454214117, full_pool_hands_the_handler_back).
        held.timers = 0;
    }
    drop(ctx);
    // The test's std peers may still be open here: the process's
    // descriptors are checked at exit (`check_fds_at_exit`).
    let fds = super::open_fds();
    let panicking = std::thread::panicking();
    let clean = held.is_clean();
    let at = |s: fault::Site| log.injected_at(s);
    let _ = writeln!(
        std::io::stderr(),
        "FAULTS {} seed {}: {} injected, {} recv {} send {} accept calls; io_uring: {} enter \
         faults, {} late, {} cancelled, tiny ring {}; audit {held:?}, fds {} -> {fds}",
        test_name(),
        armed.seed,
        log.injected(),
        log.calls(fault::Site::StreamRecv),
        log.calls(fault::Site::StreamSend),
        log.calls(fault::Site::Accept),
        at(fault::Site::UringEnter),
        at(fault::Site::UringReap),
        at(fault::Site::UringCancelled),
        at(fault::Site::UringSetup),
        armed.fds,
    );
    if clean {
        return;
    }
    let what = format!(
        "AUDIT FAILED: {} under seed {}: held after shutdown {held:?}; replay:\n  {}",
        test_name(),
        armed.seed,
        replay(armed.seed)
    );
    if panicking {
        let _ = writeln!(std::io::stderr(), "{what}");
        std::process::abort();
    }
    panic!("{what}");
}
