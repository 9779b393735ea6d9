//! Seeded fault injection at the kernel boundary (feature
//! `fault-injection`, for tests only; smoltcp's `phy/fault_injector.rs` is
//! the model).
//!
//! A backend asks this module, at each call it makes into the kernel
//! (a [`Site`]), whether that call should fail with an error the kernel
//! could really have returned there, or move fewer bytes than asked. The
//! answers follow a [`Schedule`] armed on the calling thread from a seed:
//! the n-th call at a site gets the same answer for the same seed whatever
//! else runs in the process, so a failing seed replays.
//!
//! Without the feature every function here is an empty `#[inline(always)]`
//! one ([`fail`] is `None`, [`stream`] returns the length asked): the hooks cost
//! nothing in a normal build.
//!
//! # The faults, and why the kernel can produce each
//!
//! Only what `man 2` lists for the call, in a form the backend cannot tell
//! from the real thing:
//!
//! | [`Fault`] | sites | the kernel's reason |
//! |---|---|---|
//! | `Intr` | recv, send, accept, epoll_wait, io_uring_enter | a signal arrived before anything was done (retried by the backend) |
//! | `Short` | recv, send (stream sockets) | a stream moves any count from 1 to the length; injected by asking for fewer bytes, so the rest stays in the socket as after a real partial transfer |
//! | `ConnReset` | recv, send | the peer sent RST |
//! | `Pipe` | send | the peer closed, or we shut down writing |
//! | `NoMem` | recv, send, accept, socket, epoll_ctl add | kernel memory exhausted (`ENOMEM`) |
//! | `NoBufs` | accept, socket | socket buffers exhausted (`ENOBUFS`) |
//! | `MFile` | accept, socket | the process's descriptor limit (`EMFILE`) |
//! | `NFile` | accept, socket | the system's descriptor limit (`ENFILE`) |
//! | `ConnAborted` | accept | the connection died in the backlog (retried by the backend) |
//! | `NoSpc` | epoll_ctl add | `max_user_watches` reached (`ENOSPC`) |
//! | `Busy`, `Again` | io_uring_enter | the CQ ring is full and overflowing (`EBUSY`), or the kernel could not allocate request memory (`EAGAIN`); nothing was submitted |
//! | `Canceled` | io_uring completion of an operation whose cancel was sent, and that failed | the cancel won: the operation did nothing either way, and its CQE carries `-ECANCELED` instead of its own error |
//! | `Late` | io_uring completion | the CQE is held back and reaped one to three passes later, after CQEs that came after it (the kernel's completion order is not submission order) |
//! | `TinyRing` | io_uring setup | the ring gets 2 SQ and 4 CQ entries, so pushes meet a full SQ (back-pressure) and completions overflow the CQ into the kernel's backlog (`IORING_FEAT_NODROP`) in any busy test |
//!
//! On io_uring the stream sites are consulted when a `recv`/`send` SQE is
//! prepared: a short length goes into the SQE (the kernel then moves at
//! most that many bytes), an error completes the operation without an
//! SQE, as the kernel's CQE would. `io_uring_enter` faults are injected
//! at its one seam ([`uring::enter`](crate::uring::enter)), before the
//! call; the completion faults where the CQE is reaped.
//!
//! A short transfer is injected only on stream descriptors
//! ([`stream_on`]): a datagram is sent and received whole or not at all.
//!
//! Not injected, on purpose: `EAGAIN` on an edge-triggered epoll socket.
//! The kernel returns it only when it will signal the next edge (the
//! socket was drained, the send buffer full); a made-up `EAGAIN` on a
//! socket with data waiting would leave the next read waiting for an edge
//! the kernel never sends, which no real kernel does.
//!
//! Faults are *transparent* (the backend absorbs them: `Intr`,
//! `ConnAborted`, `Short` under composed operations, `Late`, `TinyRing`,
//! and `Busy`/`Again` of `io_uring_enter`, after which the backend enters
//! again) or
//! *surfacing* (the program sees the error). A schedule caps how many
//! surfacing faults it injects ([`Schedule::surfacing_budget`]), so that
//! a test that fails under one can be checked to have failed with that
//! error and nothing else.
//!
//! ```
//! use pinion_sys::fault::{self, Site};
//!
//! // Disarmed (the default): nothing is injected.
//! assert_eq!(fault::fail(Site::StreamRecv), None);
//! assert_eq!(fault::stream(Site::StreamRecv, 100), Ok(100));
//! # #[cfg(feature = "fault-injection")] {
//! fault::arm(fault::Schedule::from_seed(7));
//! let n = (0..1000).filter(|_| fault::fail(Site::Accept).is_some()).count();
//! assert!(n > 0);
//! let log = fault::disarm();
//! assert!(log.injected() >= n as u64);
//! # }
//! ```

use crate::Errno;

/// A kernel call the backends make, as far as faults are concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Site {
    /// `recv` on a stream socket.
    StreamRecv,
    /// `send` on a stream socket.
    StreamSend,
    /// `accept4` on a listening socket.
    Accept,
    /// `socket(2)`.
    Socket,
    /// `epoll_ctl(EPOLL_CTL_ADD)` registering a socket.
    EpollCtlAdd,
    /// `epoll_wait`.
    EpollWait,
    /// `io_uring_enter` submitting.
    UringEnter,
    /// A CQE of an operation whose cancel was submitted.
    UringCancelled,
    /// Reaping a CQE.
    UringReap,
    /// Setting an io_uring ring up.
    UringSetup,
}

impl Site {
    const COUNT: usize = 10;

    /// The faults the kernel can produce at this call.
    pub const fn faults(self) -> &'static [Fault] {
        use Fault::*;
        match self {
            Site::StreamRecv => &[Intr, Short, ConnReset, NoMem],
            Site::StreamSend => &[Intr, Short, ConnReset, Pipe, NoMem],
            Site::Accept => &[Intr, ConnAborted, MFile, NFile, NoBufs, NoMem],
            Site::Socket => &[MFile, NFile, NoBufs, NoMem],
            Site::EpollCtlAdd => &[NoMem, NoSpc],
            Site::EpollWait => &[Intr],
            Site::UringEnter => &[Intr, Busy, Again],
            Site::UringCancelled => &[Canceled],
            Site::UringReap => &[Late],
            Site::UringSetup => &[TinyRing],
        }
    }
}

/// One kind of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Fault {
    /// `EINTR`.
    Intr,
    /// Fewer bytes than asked.
    Short,
    /// `ECONNRESET`.
    ConnReset,
    /// `EPIPE`.
    Pipe,
    /// `ENOMEM`.
    NoMem,
    /// `ENOBUFS`.
    NoBufs,
    /// `EMFILE`.
    MFile,
    /// `ENFILE`.
    NFile,
    /// `ECONNABORTED`.
    ConnAborted,
    /// `ENOSPC`.
    NoSpc,
    /// `EBUSY`.
    Busy,
    /// `EAGAIN`.
    Again,
    /// `-ECANCELED` in a CQE.
    Canceled,
    /// A CQE reaped on a later pass.
    Late,
    /// A ring with the fewest entries that work.
    TinyRing,
}

impl Fault {
    const COUNT: u32 = 15;

    /// The error number the call fails with (`None` for `Short`/`Late`).
    #[cfg(target_os = "linux")]
    pub const fn errno(self) -> Option<Errno> {
        Some(match self {
            Fault::Intr => Errno::INTR,
            Fault::ConnReset => Errno::CONNRESET,
            Fault::Pipe => Errno::PIPE,
            Fault::NoMem => Errno::NOMEM,
            Fault::NoBufs => Errno::NOBUFS,
            Fault::MFile => Errno::MFILE,
            Fault::NFile => Errno::NFILE,
            Fault::ConnAborted => Errno::CONNABORTED,
            Fault::NoSpc => Errno::NOSPC,
            Fault::Busy => Errno::BUSY,
            Fault::Again => Errno::AGAIN,
            Fault::Canceled => Errno::CANCELED,
            Fault::Short | Fault::Late | Fault::TinyRing => return None,
        })
    }

    /// `true` for faults the program sees (see the module docs).
    pub const fn surfaces(self) -> bool {
        !matches!(
            self,
            Fault::Intr
                | Fault::ConnAborted
                | Fault::Short
                | Fault::Late
                | Fault::TinyRing
                | Fault::Busy
                | Fault::Again
        )
    }
}

/// What a thread's schedule injects: drawn from a seed by
/// [`from_seed`](Self::from_seed), or set field by field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schedule {
    /// The seed every decision is drawn from.
    pub seed: u64,
    /// Chance that a call at a site faults, in 1/1024ths. [`ALWAYS`]
    /// (which [`from_seed`](Self::from_seed) never draws) makes every call
    /// at a site that can fail with one of `kinds` fail with one of them:
    /// a test's way to make, say, every `io_uring_enter` fail.
    pub rate: u32,
    /// The faults this schedule may inject, one bit per [`Fault`].
    pub kinds: u32,
    /// Surfacing faults injected at most (transparent ones are not
    /// counted).
    pub surfacing_budget: u32,
}

/// [`Schedule::rate`] for "every call".
pub const ALWAYS: u32 = 1024;

impl Schedule {
    /// A schedule drawn from `seed`: a fault rate from 1/8 to 3/4, every
    /// transparent fault kind and a random half of the surfacing ones, and
    /// on odd seeds at most one surfacing fault (even seeds inject only
    /// what the program cannot see, so every test must pass under them).
    pub fn from_seed(seed: u64) -> Schedule {
        let mut s = seed;
        let rate = 128 + (splitmix(&mut s) % 641) as u32;
        let all = (1u32 << Fault::COUNT) - 1;
        let transparent = [
            Fault::Intr,
            Fault::ConnAborted,
            Fault::Short,
            Fault::Late,
            Fault::TinyRing,
            Fault::Busy,
            Fault::Again,
        ]
        .iter()
        .fold(0, |m, f| m | 1 << *f as u32);
        let kinds = transparent | (splitmix(&mut s) as u32 & all);
        Schedule {
            seed,
            rate,
            kinds,
            surfacing_budget: (seed & 1) as u32,
        }
    }

    /// The same, injecting only the faults the program cannot see.
    pub fn transparent_only(mut self) -> Schedule {
        self.surfacing_budget = 0;
        self
    }
}

/// splitmix64 (Steele, Lea, Flood): one step of a tiny, good PRNG.
#[inline]
pub fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One injected fault, as the log keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Injected {
    /// Where.
    pub site: Site,
    /// The n-th call at that site on this thread (from 0).
    pub call: u64,
    /// What.
    pub fault: Fault,
}

/// What a thread's schedule did, from `disarm` or `log` (feature
/// `fault-injection`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Log {
    injected: u64,
    /// Calls seen per site.
    calls: [u64; Site::COUNT],
    /// Faults injected per site.
    at: [u64; Site::COUNT],
    /// The first surfacing faults injected.
    surfaced: [Option<Injected>; 4],
}

impl Log {
    /// Faults injected in all.
    pub fn injected(&self) -> u64 {
        self.injected
    }

    /// Calls seen at `site`.
    pub fn calls(&self, site: Site) -> u64 {
        self.calls[site as usize]
    }

    /// Faults injected at `site`.
    pub fn injected_at(&self, site: Site) -> u64 {
        self.at[site as usize]
    }

    /// The surfacing faults injected (at most four are kept).
    pub fn surfaced(&self) -> impl Iterator<Item = Injected> + '_ {
        self.surfaced.iter().flatten().copied()
    }
}

#[cfg(feature = "fault-injection")]
mod armed {
    use super::*;
    use std::cell::Cell;

    std::thread_local! {
        static STATE: Cell<Option<(Schedule, Log)>> = const { Cell::new(None) };
    }

    pub fn arm(s: Schedule) {
        STATE.with(|c| c.set(Some((s, Log::default()))));
    }

    pub fn disarm() -> Log {
        STATE.with(|c| c.take().map(|(_, l)| l).unwrap_or_default())
    }

    pub fn log() -> Option<Log> {
        STATE.with(|c| c.get().map(|(_, l)| l))
    }

    /// Every surfacing fault injected in the process, on any thread (the
    /// first few): a handler that fails on another thread than the one
    /// whose schedule injected the fault can be matched to it.
    static SURFACED: std::sync::Mutex<Vec<Injected>> = std::sync::Mutex::new(Vec::new());

    pub fn surfaced_in_process() -> Vec<Injected> {
        SURFACED.lock().map(|v| v.clone()).unwrap_or_default()
    }

    fn note_surfaced(i: Injected) {
        if let Ok(mut v) = SURFACED.lock() {
            if v.len() < 16 {
                v.push(i);
            }
        }
    }

    /// Draws the answer for the next call at `site`.
    pub fn draw(site: Site) -> Option<Fault> {
        draw_with_roll(site).map(|(f, _)| f)
    }

    /// `draw`, with spare random bits for the fault's details.
    pub fn draw_with_roll(site: Site) -> Option<(Fault, u64)> {
        STATE.with(|c| {
            let (s, mut log) = c.get()?;
            let n = log.calls[site as usize];
            log.calls[site as usize] = n + 1;
            // A function of (seed, site, n) only: other sites' calls do not
            // shift this one's answers.
            let mut st = s.seed ^ ((site as u64 + 1) << 56) ^ n.wrapping_mul(0x2545_F491_4F6C_DD1D);
            let roll = splitmix(&mut st);
            let mut out = None;
            if (roll & 1023) < s.rate as u64 {
                let allowed = site.faults();
                let mut f = allowed[((roll >> 10) % allowed.len() as u64) as usize];
                if s.rate >= ALWAYS {
                    // Every call: the first of the site's faults the
                    // schedule allows (no seed draws this rate, so seeded
                    // runs replay as before).
                    if let Some(&g) = allowed.iter().find(|g| s.kinds & (1 << **g as u32) != 0) {
                        f = g;
                    }
                }
                let used = log.surfaced.iter().flatten().count() as u32;
                if s.kinds & (1 << f as u32) != 0 && (!f.surfaces() || used < s.surfacing_budget) {
                    log.injected += 1;
                    log.at[site as usize] += 1;
                    if f.surfaces() {
                        let i = Injected {
                            site,
                            call: n,
                            fault: f,
                        };
                        if let Some(free) = log.surfaced.iter_mut().find(|e| e.is_none()) {
                            *free = Some(i);
                        }
                        note_surfaced(i);
                    }
                    out = Some((f, roll >> 20));
                }
            }
            c.set(Some((s, log)));
            out
        })
    }
}

/// Arms `schedule` on this thread (replacing any armed one). Calls made
/// on other threads are not affected.
#[cfg(feature = "fault-injection")]
pub fn arm(schedule: Schedule) {
    armed::arm(schedule)
}

/// Disarms this thread's schedule and returns what it did.
#[cfg(feature = "fault-injection")]
pub fn disarm() -> Log {
    armed::disarm()
}

/// What this thread's schedule did so far, if one is armed.
#[cfg(feature = "fault-injection")]
pub fn log() -> Option<Log> {
    armed::log()
}

/// Every surfacing fault injected in this process so far, on any thread
/// (the first 16).
#[cfg(feature = "fault-injection")]
pub fn surfaced_in_process() -> std::vec::Vec<Injected> {
    armed::surfaced_in_process()
}

/// The fault to inject at this call of `site`, if any (the hook the
/// backends call; always `None` without the feature).
#[inline(always)]
pub fn fault(site: Site) -> Option<Fault> {
    #[cfg(feature = "fault-injection")]
    {
        armed::draw(site)
    }
    #[cfg(not(feature = "fault-injection"))]
    {
        let _ = site;
        None
    }
}

/// The error this call of `site` fails with instead of being made, if
/// the schedule says so (a fault without an errno is no error here).
#[cfg(target_os = "linux")]
#[inline(always)]
pub fn fail(site: Site) -> Option<Errno> {
    #[cfg(feature = "fault-injection")]
    {
        fault(site).and_then(Fault::errno)
    }
    #[cfg(not(feature = "fault-injection"))]
    {
        let _ = site;
        None
    }
}

/// What a stream `recv`/`send` of `len` bytes at `site` does instead:
/// `Ok(len)` (no fault), `Ok(fewer)` (a short transfer: pass that length
/// to the call), or `Err(errno)` (fail without making the call).
#[cfg(target_os = "linux")]
#[inline(always)]
pub fn stream(site: Site, len: usize) -> Result<usize, Errno> {
    #[cfg(feature = "fault-injection")]
    {
        match armed::draw_with_roll(site) {
            Some((Fault::Short, roll)) if len > 1 => Ok(1 + (roll as usize % (len - 1))),
            Some((f, _)) => f.errno().map_or(Ok(len), Err),
            None => Ok(len),
        }
    }
    #[cfg(not(feature = "fault-injection"))]
    {
        let _ = site;
        Ok(len)
    }
}

/// [`stream`] for a call on descriptor `fd`: a short transfer only if
/// `fd` is a stream (a datagram or seqpacket socket moves whole messages;
/// pipes and ttys are streams). The type is asked of the kernel only
/// when a short transfer was drawn.
#[cfg(target_os = "linux")]
#[inline(always)]
pub fn stream_on(site: Site, fd: i32, len: usize) -> Result<usize, Errno> {
    match stream(site, len) {
        Ok(n) if n < len && !is_stream(fd) => Ok(len),
        r => r,
    }
}

/// `false` for a socket whose type is not `SOCK_STREAM`.
#[cfg(target_os = "linux")]
#[cold]
fn is_stream(fd: i32) -> bool {
    let mut ty: libc::c_int = 0;
    let mut len = core::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `ty` and `len` are writable and sized for SO_TYPE's int.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            (&mut ty as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    // ENOTSOCK: a pipe, tty or other byte stream.
    r != 0 || ty == libc::SOCK_STREAM
}

#[cfg(all(test, feature = "fault-injection"))]
mod tests {
    use super::*;

    fn answers(seed: u64, site: Site, n: usize) -> std::vec::Vec<Option<Fault>> {
        arm(Schedule::from_seed(seed));
        let v = (0..n).map(|_| fault(site)).collect();
        disarm();
        v
    }

    #[test]
    fn a_seed_replays_the_same_answers() {
        for seed in [1, 2, 0xdead_beef] {
            assert_eq!(
                answers(seed, Site::StreamRecv, 200),
                answers(seed, Site::StreamRecv, 200)
            );
        }
        assert_ne!(
            answers(1, Site::StreamSend, 200),
            answers(3, Site::StreamSend, 200)
        );
    }

    #[test]
    fn calls_at_other_sites_do_not_shift_a_sites_answers() {
        let alone = answers(5, Site::Accept, 100);
        arm(Schedule::from_seed(5));
        let mixed: std::vec::Vec<_> = (0..100)
            .map(|_| {
                fault(Site::StreamRecv);
                fault(Site::EpollWait);
                fault(Site::Accept)
            })
            .collect();
        disarm();
        assert_eq!(alone, mixed);
    }

    #[test]
    fn only_the_sites_faults_and_at_most_the_budget_of_surfacing_ones() {
        // Fewer under miri, which runs this hundreds of times slower.
        let seeds = if cfg!(miri) { 4 } else { 64 };
        for seed in 0..seeds {
            arm(Schedule::from_seed(seed));
            for site in [
                Site::StreamRecv,
                Site::StreamSend,
                Site::Accept,
                Site::Socket,
            ] {
                for _ in 0..200 {
                    if let Some(f) = fault(site) {
                        assert!(site.faults().contains(&f), "{f:?} at {site:?}");
                    }
                }
            }
            let log = disarm();
            assert!(log.surfaced().count() as u64 <= seed & 1, "seed {seed}");
        }
    }

    #[test]
    fn short_transfers_move_at_least_one_byte_and_fewer_than_asked() {
        let mut s = Schedule::from_seed(9);
        s.rate = 1024;
        s.kinds = 1 << Fault::Short as u32;
        arm(s);
        for len in [2usize, 3, 100, 65536] {
            for _ in 0..50 {
                let n = stream(Site::StreamRecv, len).expect("no error kinds");
                assert!((1..=len).contains(&n));
            }
        }
        assert_eq!(
            stream(Site::StreamRecv, 1),
            Ok(1),
            "one byte cannot be shorter"
        );
        assert!(disarm().injected() > 0);
        assert_eq!(fail(Site::Accept), None, "disarmed");
    }

    #[test]
    #[cfg_attr(miri, ignore = "no sockets under miri")]
    fn datagrams_are_never_cut_short() {
        let mut s = Schedule::from_seed(3);
        s.rate = 1024;
        s.kinds = 1 << Fault::Short as u32;
        // SAFETY: plain descriptor calls; both are closed below.
        let (udp, mut pipe) = unsafe { (libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0), [0; 2]) };
        // SAFETY: `pipe` has room for two descriptors.
        assert_eq!(unsafe { libc::pipe(pipe.as_mut_ptr()) }, 0);
        assert!(udp >= 0);
        arm(s);
        // One draw in five picks `Short` among the send site's faults.
        for _ in 0..100 {
            assert_eq!(stream_on(Site::StreamSend, udp, 100), Ok(100));
        }
        let short = (0..100).filter(|_| stream_on(Site::StreamSend, pipe[1], 100) != Ok(100));
        assert!(short.count() > 0, "a pipe is a stream");
        disarm();
        // SAFETY: ours, closed once.
        unsafe {
            libc::close(udp);
            libc::close(pipe[0]);
            libc::close(pipe[1]);
        }
    }
}
