//! Helpers shared by every test binary, independent of the backend:
//! owned test buffers, std peers on loopback, fd counting, rlimits, a
//! counting global allocator, socket introspection.
#![allow(dead_code)] // each binary uses a different subset

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream as StdStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pinion::{IoBuf, IoBufMut};

mod blocked;
#[cfg(feature = "fault-injection")]
pub mod faults;
#[allow(unused_imports)] // each binary uses a different subset
pub use blocked::{current_tid, wait_blocked};

/// Bound on every blocking wait of a test (a watchdog, not an assertion).
pub const WATCHDOG: Duration = Duration::from_secs(20);
/// The same, in nanoseconds, for `run_for`.
pub const WATCHDOG_NS: u64 = 20_000_000_000;

/// Loopback, port chosen by the kernel.
/// Serialises tests that touch process-wide state (fd limit, fd count)
/// across every backend instance in one test binary.
#[allow(dead_code)] // used by some test binaries only
pub static PROCESS_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// A fixed-capacity heap buffer: exactly `cap` bytes of room (a `Vec`'s
/// capacity may be rounded up), stable when moved. Counts its drops in
/// `drops` when given one.
pub struct FixedBuf {
    data: Box<[u8]>,
    len: usize,
    pub tag: u32,
    drops: Option<Arc<AtomicUsize>>,
}

impl FixedBuf {
    pub fn new(cap: usize) -> Self {
        FixedBuf {
            data: vec![0u8; cap].into_boxed_slice(),
            len: 0,
            tag: 0,
            drops: None,
        }
    }
    pub fn from_bytes(b: &[u8]) -> Self {
        let mut f = FixedBuf::new(b.len());
        f.data.copy_from_slice(b);
        f.len = b.len();
        f
    }
    pub fn tagged(mut self, tag: u32) -> Self {
        self.tag = tag;
        self
    }
    pub fn counting(mut self, drops: &Arc<AtomicUsize>) -> Self {
        self.drops = Some(drops.clone());
        self
    }
    pub fn bytes(&self) -> &[u8] {
        &self.data[..self.len]
    }
    pub fn capacity(&self) -> usize {
        self.data.len()
    }
}

impl Drop for FixedBuf {
    fn drop(&mut self) {
        if let Some(d) = &self.drops {
            d.fetch_add(1, Ordering::SeqCst);
        }
    }
}

// SAFETY: the boxed slice's heap block does not move when the FixedBuf
// moves; `len <= data.len()`.
unsafe impl IoBuf for FixedBuf {
    fn read_ptr(&self) -> *const u8 {
        self.data.as_ptr()
    }
    fn bytes_len(&self) -> usize {
        self.len
    }
}

// SAFETY: as above; the room is `data[len..]`.
unsafe impl IoBufMut for FixedBuf {
    fn write_ptr(&mut self) -> *mut u8 {
        // SAFETY: len <= data.len(): in bounds or one past the end.
        unsafe { self.data.as_mut_ptr().add(self.len) }
    }
    fn spare(&self) -> usize {
        self.data.len() - self.len
    }
    unsafe fn advance(&mut self, n: usize) {
        assert!(n <= self.spare());
        self.len += n;
    }
    fn clear(&mut self) {
        self.len = 0;
    }
}

/// A deterministic byte pattern: byte `i` of stream `seed`.
pub fn pattern(seed: u32, i: usize) -> u8 {
    let x = (i as u32)
        .wrapping_mul(2_654_435_761)
        .wrapping_add(seed.wrapping_mul(40503));
    (x >> 13) as u8
}

/// `n` pattern bytes.
pub fn pattern_vec(seed: u32, n: usize) -> Vec<u8> {
    (0..n).map(|i| pattern(seed, i)).collect()
}

/// A blocking std client with time-outs (so a broken test fails instead
/// of hanging).
pub fn std_connect(addr: SocketAddr) -> StdStream {
    let s = StdStream::connect(addr).expect("std client connect");
    s.set_read_timeout(Some(WATCHDOG)).unwrap();
    s.set_write_timeout(Some(WATCHDOG)).unwrap();
    s
}

/// Reads exactly `n` bytes or panics (time-out, EOF).
pub fn std_read_exact(s: &mut StdStream, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    s.read_exact(&mut v).expect("std read_exact");
    v
}

/// Writes everything or panics.
pub fn std_write_all(s: &mut StdStream, b: &[u8]) {
    s.write_all(b).expect("std write_all");
}

/// Sets an int socket option on a raw fd.
pub fn set_sockopt(fd: i32, level: i32, name: i32, value: i32) {
    // SAFETY: `value` lives across the call; its size is passed.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            &value as *const i32 as *const libc::c_void,
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0, "setsockopt");
}

/// Makes `close(fd)` send a RST (SO_LINGER with zero time-out).
pub fn set_linger_zero(fd: i32) {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: `l` lives across the call; its size is passed.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &l as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0, "SO_LINGER");
}

/// Bytes waiting in `fd`'s receive queue (FIONREAD).
pub fn bytes_readable(fd: i32) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int to `n`.
    let r = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) };
    assert_eq!(r, 0, "FIONREAD");
    n as usize
}

/// Sent bytes not yet acknowledged by the peer (TCP_INFO.tcpi_unacked).
pub fn unacked(fd: i32) -> u32 {
    // SAFETY: tcp_info is plain integers; zero is valid.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` is writable for `len` bytes.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            &mut info as *mut libc::tcp_info as *mut libc::c_void,
            &mut len,
        )
    };
    assert_eq!(r, 0, "TCP_INFO");
    info.tcpi_unacked
}

/// Fills `fd`'s send path (non-blocking sends) until the kernel takes no
/// more and nothing sent is waiting for an ACK, so that the next write on
/// it stays pending for as long as the peer does not read. Bounded.
pub fn fill_send_path(fd: i32) {
    let chunk = [0x5au8; 65536];
    for _ in 0..2000 {
        loop {
            // SAFETY: `chunk` is readable for its length.
            let n = unsafe {
                libc::send(
                    fd,
                    chunk.as_ptr() as *const libc::c_void,
                    chunk.len(),
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
            if n < 0 {
                assert_eq!(
                    std::io::Error::last_os_error().raw_os_error(),
                    Some(libc::EAGAIN),
                    "filling the send buffer"
                );
                break;
            }
        }
        // A late ACK would free room again; once nothing is unacknowledged
        // (zero window: the rest waits unsent) the send path stays full.
        if unacked(fd) == 0 {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("send path never settled");
}

/// Open file descriptors of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count() - 1 // read_dir's own
}

/// The soft RLIMIT_NOFILE.
pub fn nofile_limit() -> (libc::rlim_t, libc::rlim_t) {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `r` is writable.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) }, 0);
    (r.rlim_cur, r.rlim_max)
}

/// Sets the soft RLIMIT_NOFILE.
pub fn set_nofile_limit(soft: libc::rlim_t) {
    let (_, hard) = nofile_limit();
    let r = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: `r` is a valid rlimit.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) }, 0);
}

/// The lowest descriptor number free right now.
pub fn lowest_free_fd() -> i32 {
    // SAFETY: F_DUPFD of stdin returns a new fd or -1; closed at once.
    let fd = unsafe { libc::fcntl(0, libc::F_DUPFD_CLOEXEC, 0) };
    assert!(fd >= 0);
    // SAFETY: our own fresh duplicate.
    unsafe { libc::close(fd) };
    fd
}

/// Counts SIGPIPEs delivered to the process (installed once).
pub static SIGPIPES: AtomicUsize = AtomicUsize::new(0);

extern "C" fn on_sigpipe(_: libc::c_int) {
    SIGPIPES.fetch_add(1, Ordering::SeqCst);
}

/// Replaces Rust's SIG_IGN for SIGPIPE with a counter, so a test can see
/// that no SIGPIPE was raised.
pub fn count_sigpipes() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: installs an async-signal-safe handler (one atomic add).
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_sigpipe as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            assert_eq!(libc::sigaction(libc::SIGPIPE, &sa, std::ptr::null_mut()), 0);
        }
    });
}

/// A global allocator that counts allocations while armed, on the threads
/// that joined the count: the test's own threads run the context, and the
/// test harness's main thread (printing another test's result) must not
/// count.
pub struct CountingAlloc;

/// Thread ids (`pinion::sync::current_thread_id`, which reads a register
/// and so never allocates) of the threads that count; 0: a free place.
static COUNTED: [AtomicUsize; 4] = [const { AtomicUsize::new(0) }; 4];
static ARMED: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

#[inline]
fn counting_here() -> bool {
    if !ARMED.load(Ordering::Relaxed) {
        return false;
    }
    let me = pinion::sync::current_thread_id();
    COUNTED.iter().any(|t| t.load(Ordering::Relaxed) == me)
}

// SAFETY: forwards to the system allocator; counting has no effect on it.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if counting_here() {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarded contract.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded contract.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        if counting_here() {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarded contract.
        unsafe { System.realloc(ptr, layout, new) }
    }
}

/// Makes the calling thread's allocations count once the counter is armed
/// (for contexts that several threads run); until the next disarm.
pub fn count_allocs_on_this_thread() {
    let me = pinion::sync::current_thread_id();
    assert_ne!(me, 0, "no thread id on this target: cannot scope the count");
    if COUNTED.iter().any(|t| t.load(Ordering::SeqCst) == me) {
        return;
    }
    let placed = COUNTED.iter().any(|t| {
        t.compare_exchange(0, me, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    });
    assert!(placed, "at most {} threads can be counted", COUNTED.len());
}

/// Starts counting allocations made by the calling thread (and by those
/// that called [`count_allocs_on_this_thread`]).
pub fn arm_alloc_counter() {
    count_allocs_on_this_thread();
    ALLOCS.store(0, Ordering::SeqCst);
    ARMED.store(true, Ordering::SeqCst);
}

/// Stops counting; returns how many allocations happened while armed.
pub fn disarm_alloc_counter() -> usize {
    ARMED.store(false, Ordering::SeqCst);
    for t in &COUNTED {
        t.store(0, Ordering::SeqCst);
    }
    ALLOCS.load(Ordering::SeqCst)
}
