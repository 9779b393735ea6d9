//! Committed and locked memory against the backend alias `b`: what
//! `Builder::commit_memory` makes resident, what `Builder::lock_memory`
//! locks (and the error past `RLIMIT_MEMLOCK`), and a resident set that
//! does not grow over 10,000 connection cycles. Run by `tests/memory.rs`,
//! one test at a time (they read and change process-wide state).

backend!(b);

#[path = "../suite/support.rs"]
mod support;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, MutexGuard};

use pinion::compose::async_write;
use pinion::memory::{MemPool, MemoryReport};
use pinion::{BuildError, Error};
use support::{listen, run_until};

use crate::util;

/// One test at a time, and allocations of 128 KiB and more always fresh
/// mappings, so that a pool never lands on memory an earlier test already
/// faulted in (glibc otherwise raises its mmap threshold after a free).
fn serial() -> MutexGuard<'static, ()> {
    let g = util::PROCESS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes the allocator's policy.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
    g
}

/// A `/proc/self/status` field in KiB (`VmRSS`, `VmLck`).
fn status_kib(field: &str) -> usize {
    let s = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = s
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Pools of every kind, a few MiB in all, buffers larger than a page.
fn big() -> b::Builder {
    b::Builder::new()
        .ops(8192)
        .descriptors(1024)
        .timers(256)
        .tasks(256, 2048)
        .read_buffers(128, 16384)
}

/// Bytes of the pools pinion commits (all but the kernel's rings).
fn committable(m: &MemoryReport) -> usize {
    m.total() - m.bytes(MemPool::Ring)
}

#[test]
fn commit_memory_makes_every_pool_resident_at_build() {
    let _serial = serial();
    let before = status_kib("VmRSS:");
    let lazy = big().build().expect("build");
    let lazy_kib = status_kib("VmRSS:") - before;
    let before = status_kib("VmRSS:");
    let ctx = big().commit_memory(true).build().expect("build, committed");
    let committed_kib = status_kib("VmRSS:") - before;
    let m = ctx.memory();
    eprintln!("{m}\nRSS after build: {lazy_kib} KiB as touched, {committed_kib} KiB committed");
    assert!(m.committed() && !m.locked());
    assert!(!lazy.memory().committed());
    // Every byte of every pool is resident; pages shared with other heap
    // data at the pools' edges may have been resident already.
    let slack_kib = 8 * 4 * 2;
    assert!(
        committed_kib * 1024 + slack_kib * 1024 >= committable(&m),
        "committed {committed_kib} KiB of {} bytes",
        committable(&m)
    );
    drop((lazy, ctx));
}

#[test]
fn the_report_counts_every_pool_and_a_connection() {
    let _serial = serial();
    let ctx = big().build().expect("build");
    let m = ctx.memory();
    assert_eq!(m.backend(), ctx.backend_name());
    assert_eq!(m.bytes(MemPool::Ops), 8192 * pinion::OP_SLOT_SIZE);
    assert_eq!(m.bytes(MemPool::ReadBuffers), 128 * 16384);
    assert_eq!(m.bytes(MemPool::TaskFutures), 256 * 2048);
    let desc = m.item_bytes(MemPool::Descriptors);
    assert!(desc > 0 && m.bytes(MemPool::Descriptors) == 1024 * desc);
    assert_eq!(m.per_idle_connection(), desc + pinion::OP_SLOT_SIZE);
    assert_eq!(
        m.per_active_connection(),
        m.per_idle_connection() + pinion::OP_SLOT_SIZE + 16384
    );
    let table = m.to_string();
    for line in [
        "operation slots",
        "descriptors",
        "read buffers",
        "total",
        "per idle",
    ] {
        assert!(table.contains(line), "{line} missing from\n{table}");
    }
}

/// Runs `f` with `CAP_IPC_LOCK` out of this thread's effective set (if it
/// had it), so that `RLIMIT_MEMLOCK` applies to it as to an unprivileged
/// process; restores it afterwards. Capabilities are per thread.
fn without_cap_ipc_lock<R>(f: impl FnOnce() -> R) -> R {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const V3: u32 = 0x2008_0522;
    const CAP_IPC_LOCK: u32 = 14;
    let mut h = Header {
        version: V3,
        pid: 0,
    };
    let mut d = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: capget writes one header and two data words, which `h` and
    // `d` are.
    let r = unsafe { libc::syscall(libc::SYS_capget, &mut h, d.as_mut_ptr()) };
    assert_eq!(r, 0, "capget");
    let saved = d;
    d[0].effective &= !(1 << CAP_IPC_LOCK);
    // SAFETY: capset reads the header and two data words; lowering the
    // effective set is always allowed.
    let r = unsafe { libc::syscall(libc::SYS_capset, &mut h, d.as_ptr()) };
    assert_eq!(r, 0, "capset (drop CAP_IPC_LOCK)");
    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    // SAFETY: as above; raising back to the permitted set is allowed.
    let r = unsafe { libc::syscall(libc::SYS_capset, &mut h, saved.as_ptr()) };
    assert_eq!(r, 0, "capset (restore)");
    out.unwrap_or_else(|p| std::panic::resume_unwind(p))
}

fn memlock_limit() -> libc::rlimit {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut r) }, 0);
    r
}

fn set_memlock_limit(r: libc::rlimit) {
    // SAFETY: setrlimit reads the struct it is given; lowering the soft
    // limit (or restoring it to at most the hard limit) is allowed.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &r) }, 0);
}

#[test]
fn lock_memory_past_rlimit_memlock_says_how_much_and_what_to_raise() {
    let _serial = serial();
    let saved = memlock_limit();
    let low = libc::rlimit {
        rlim_cur: 64 * 1024,
        rlim_max: saved.rlim_max,
    };
    set_memlock_limit(low);
    let got = without_cap_ipc_lock(|| big().lock_memory(true).build().map(|c| c.memory()));
    set_memlock_limit(saved);
    let err = got.expect_err("1 MiB of pools locked under a 64 KiB RLIMIT_MEMLOCK");
    let BuildError::MemoryLock { need, allowed } = err else {
        panic!("not a MemoryLock error: {err}");
    };
    assert_eq!(allowed, 64 * 1024);
    assert!(need >= 8192 * pinion::OP_SLOT_SIZE, "need {need}");
    let msg = err.to_string();
    eprintln!("{msg}");
    assert!(msg.contains(&format!(
        "need {need} bytes locked, RLIMIT_MEMLOCK allows 65536"
    )));
    assert!(
        msg.contains("ulimit -l") && msg.contains("LimitMEMLOCK=") && msg.contains("lock_memory")
    );
    assert_eq!(
        status_kib("VmLck:"),
        0,
        "a failed lock leaves nothing locked"
    );
}

#[test]
fn lock_memory_locks_the_pools_until_the_context_drops() {
    let _serial = serial();
    let small = || {
        b::Builder::new()
            .ops(1024)
            .descriptors(64)
            .timers(16)
            .read_buffers(16, 4096)
    };
    let before = status_kib("VmLck:");
    let ctx = match small().lock_memory(true).build() {
        Ok(ctx) => ctx,
        Err(e @ BuildError::MemoryLock { .. }) => {
            eprintln!("SKIPPED: this process may not lock 300 KiB: {e}");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let m = ctx.memory();
    assert!(m.locked() && m.committed());
    let locked = status_kib("VmLck:") - before;
    assert!(
        locked * 1024 >= committable(&m),
        "{locked} KiB locked for {} bytes of pools",
        committable(&m)
    );
    drop(ctx);
    assert_eq!(status_kib("VmLck:"), before, "dropping the context unlocks");
}

const WARM_UP: usize = 200;
const CYCLES: usize = 10_000;
/// What the std client side may add: its stack and the allocator's
/// bookkeeping for a `TcpStream` per cycle (freed each time, so it does
/// not accumulate), and the test harness's own output buffers. pinion's
/// side allocates nothing after build and its pools are all resident.
const SLACK_KIB: usize = 64;

/// Echoes through pooled reads until end of stream, then closes.
fn serve(s: b::TcpStream<'static>, closed: Arc<AtomicUsize>) {
    s.async_read_pooled(move |r| match r {
        Ok(buf) => {
            async_write(&s, buf, move |r, _buf| {
                r.expect("echo");
                serve(s, closed);
            })
            .map_err(|r| r.error)
            .expect("start write");
        }
        Err(e) => {
            assert!(matches!(e, Error::Eof | Error::ConnectionReset), "{e}");
            s.close().unwrap();
            closed.fetch_add(1, Ordering::SeqCst);
        }
    })
    .map_err(|r| r.error)
    .expect("start pooled read");
}

fn accept(l: b::TcpListener<'static>, closed: Arc<AtomicUsize>) {
    l.async_accept(move |r| {
        let (s, _) = r.expect("accept");
        serve(s, closed.clone());
        accept(l, closed);
    })
    .map_err(|r| r.error)
    .expect("start accept");
}

#[test]
fn rss_does_not_grow_over_ten_thousand_connection_cycles() {
    let _serial = serial();
    let ctx = support::Ctx::with(
        b::Builder::new()
            .ops(256)
            .descriptors(64)
            .timers(16)
            .read_buffers(64, 4096)
            .commit_memory(true),
    );
    let c = ctx.get();
    let (l, addr) = listen(c);
    let closed = Arc::new(AtomicUsize::new(0));
    accept(l, closed.clone());
    // Each cycle: connect, echo 32 bytes, half-close, wait for the
    // server's close, close. RSS is read after the warm-up and at the end.
    let client = std::thread::spawn(move || {
        let mut rss = [0; 2];
        for i in 0..WARM_UP + CYCLES {
            if i == WARM_UP {
                rss[0] = status_kib("VmRSS:");
            }
            let mut s = util::std_connect(addr);
            let msg = [i as u8; 32];
            s.write_all(&msg).unwrap();
            let mut back = [0u8; 32];
            s.read_exact(&mut back).unwrap();
            assert_eq!(back, msg);
            s.shutdown(Shutdown::Write).unwrap();
            assert_eq!(
                s.read(&mut back).unwrap(),
                0,
                "server closes after end of stream"
            );
        }
        rss[1] = status_kib("VmRSS:");
        rss
    });
    // Bounded in count (the cycles) and in time (run_until's watchdog,
    // which fails the test if no progress is made).
    let total = WARM_UP + CYCLES;
    let mut seen = 0;
    while seen < total && !client.is_finished() {
        let target = seen + 1;
        run_until(c, "a connection cycle", || {
            closed.load(Ordering::SeqCst) >= target || client.is_finished()
        });
        seen = closed.load(Ordering::SeqCst);
    }
    let [warm, end] = client.join().expect("client");
    assert_eq!(closed.load(Ordering::SeqCst), total);
    eprintln!(
        "{}: VmRSS {warm} KiB after {WARM_UP} cycles, {end} KiB after {CYCLES} more",
        c.backend_name()
    );
    assert!(
        end <= warm + SLACK_KIB,
        "RSS grew from {warm} KiB to {end} KiB over {CYCLES} connection cycles"
    );
    l.close().unwrap();
}
