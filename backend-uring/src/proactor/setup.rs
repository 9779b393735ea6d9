//! Setting the proactor up: the ring (with the fallbacks older kernels
//! need), the probes, registered files, the interrupter, the read pool,
//! and a [`BuildError`] that says what to change when any of it fails.

use core::cell::UnsafeCell;
use core::sync::atomic::AtomicBool;

use pinion_core::backend::{BuildError, Config};
use pinion_core::slab::Slab;
use pinion_core::timer::TimerService;
use pinion_sync::{FutexMutex, RawMutex};
use pinion_sys::uring::abi::*;
use pinion_sys::uring::{Probe, Ring};
use pinion_sys::{event, Errno};

use super::stats::RingInfo;
use super::submit::SqState;
use super::{Proactor, RunnerState};
use crate::bufs::ReadBuffers;
use crate::desc::{MAX_DESCRIPTORS, NIL};
use crate::{Options, Parts};
use pinion_sync::Locked;

/// Reads `/proc/sys/kernel/io_uring_disabled` (0 when absent).
fn io_uring_disabled() -> u8 {
    std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Bytes the ring pins for `sq` and `cq` entries: SQE array, SQ and CQ
/// rings (ring headers are well under a page: one page each).
fn ring_bytes(sq: u32, cq: u32) -> usize {
    sq as usize * 64 + (4096 + sq as usize * 4) + (4096 + cq as usize * 16)
}

/// Why `io_uring_setup` failed, in words that say what to do.
fn setup_error(errno: Errno, opts: &Options) -> BuildError {
    match errno.0 {
        libc::ENOSYS | libc::EPERM => match io_uring_disabled() {
            0 if errno == Errno::NOSYS => BuildError::NotSupported,
            0 => BuildError::PermissionDenied,
            v => BuildError::Disabled(v as i32),
        },
        libc::ENOMEM => {
            let sq = opts.sq_entries.max(1).next_power_of_two();
            let cq = opts
                .cq_entries
                .unwrap_or(2 * sq)
                .max(sq)
                .next_power_of_two();
            let need = ring_bytes(sq, cq);
            let have = pinion_sys::mem::memlock_limit();
            if have < need {
                BuildError::Memlock { need, have }
            } else {
                BuildError::OutOfMemory
            }
        }
        _ => BuildError::Os {
            what: "io_uring_setup",
            error: errno.into(),
        },
    }
}

/// Under a fault schedule that draws `TinyRing` (`pinion_sys::fault`):
/// the options with the smallest ring, so that pushes meet a full SQ and
/// completions overflow the CQ.
#[cfg(feature = "fault-injection")]
fn tiny_ring(opts: &Options) -> Option<Options> {
    use pinion_sys::fault::{self, Fault, Site};
    (fault::fault(Site::UringSetup) == Some(Fault::TinyRing)).then(|| Options {
        sq_entries: 2,
        cq_entries: Some(4),
        ..opts.clone()
    })
}

impl Proactor {
    /// Sets up the ring, the interrupter, the descriptor table and the
    /// timers: every allocation and kernel object this backend makes, made
    /// here.
    pub(crate) fn new(cfg: &Config, opts: &Options, parts: Parts) -> Result<Self, BuildError> {
        #[cfg(feature = "fault-injection")]
        let tiny = tiny_ring(opts);
        #[cfg(feature = "fault-injection")]
        let opts = tiny.as_ref().unwrap_or(opts);
        if parts.descriptors.len() > MAX_DESCRIPTORS {
            return Err(BuildError::Invalid {
                knob: "descriptors",
                why: "at most 2147483646 on io_uring (registered-file indices are 31 bits)",
            });
        }
        let (count, size) = cfg.read_buffers;
        if count > 0 && size < crate::bufs::MIN_SIZE {
            return Err(BuildError::Invalid {
                knob: "read_buffers",
                why: "each buffer is at least 16 bytes (a free buffer holds its pool link)",
            });
        }
        let setup = |sqpoll: Option<u32>, submit_all: bool, coop: bool| {
            let mut p = Params::default();
            if let Some(cq) = opts.cq_entries {
                p.flags |= IORING_SETUP_CQSIZE;
                p.cq_entries = cq.max(opts.sq_entries);
            }
            if submit_all {
                p.flags |= IORING_SETUP_SUBMIT_ALL;
            }
            if let Some(idle) = sqpoll {
                p.flags |= IORING_SETUP_SQPOLL;
                p.sq_thread_idle = idle;
            } else if coop {
                p.flags |= IORING_SETUP_COOP_TASKRUN;
            }
            Ring::new(opts.sq_entries.max(1), p)
        };
        let coop = opts.coop_taskrun && opts.sqpoll_idle_ms.is_none();
        let (ring, coop) = match setup(opts.sqpoll_idle_ms, true, coop) {
            Ok(r) => (r, coop),
            Err(errno @ (Errno::NOSYS | Errno::PERM | Errno::NOMEM)) => {
                return Err(setup_error(errno, opts));
            }
            // Older kernels refuse SUBMIT_ALL (5.18), COOP_TASKRUN (5.19)
            // or unprivileged SQPOLL: fall back to the plain ring.
            Err(_) => (
                setup(None, false, false).map_err(|e| setup_error(e, opts))?,
                false,
            ),
        };
        let os = |what: &'static str| {
            move |e: Errno| BuildError::Os {
                what,
                error: e.into(),
            }
        };
        // A child made by `fork` gets no copy of the rings.
        ring.dontfork()
            .map_err(os("madvise (MADV_DONTFORK) of the rings"))?;
        let params = *ring.params();
        if !ring.has_feature(IORING_FEAT_EXT_ARG) {
            return Err(BuildError::KernelTooOld(
                "IORING_FEAT_EXT_ARG (Linux 5.11) for timed waits",
            ));
        }
        if !ring.has_feature(IORING_FEAT_NODROP) {
            return Err(BuildError::KernelTooOld(
                "IORING_FEAT_NODROP (Linux 5.5): completions could be lost",
            ));
        }
        // 2 KiB: boxed, once, at build.
        let mut probe = Box::new(Probe::EMPTY);
        ring.probe(&mut probe)
            .map_err(os("io_uring_register (probe)"))?;
        let supported = |code: u8| probe.is_supported(code) && !opts.assume_missing.contains(&code);
        for (code, what) in [
            (IORING_OP_RECV, "IORING_OP_RECV"),
            (IORING_OP_SEND, "IORING_OP_SEND"),
            (IORING_OP_ACCEPT, "IORING_OP_ACCEPT"),
            (IORING_OP_CONNECT, "IORING_OP_CONNECT"),
            (IORING_OP_SENDMSG, "IORING_OP_SENDMSG"),
            (IORING_OP_RECVMSG, "IORING_OP_RECVMSG"),
            (IORING_OP_READ, "IORING_OP_READ"),
            (IORING_OP_POLL_ADD, "IORING_OP_POLL_ADD"),
            (IORING_OP_ASYNC_CANCEL, "IORING_OP_ASYNC_CANCEL"),
        ] {
            if !supported(code) {
                return Err(BuildError::KernelTooOld(what));
            }
        }
        // Cancel by fd and cancel-any (5.19) arrived with IORING_OP_SOCKET,
        // and so did multishot accept: the opcode is their marker.
        if !supported(IORING_OP_SOCKET) {
            return Err(BuildError::KernelTooOld(
                "Linux 5.19 io_uring (cancel by fd, IORING_OP_SOCKET)",
            ));
        }
        let (sq_entries, cq_entries) = (params.sq_entries, params.cq_entries);
        // One registered-file slot per descriptor-table entry, all empty
        // (sparse, Linux 5.19). Any refusal (EINVAL/ENOSYS on kernels
        // without it, ENOMEM, EMFILE past RLIMIT_NOFILE) leaves plain fds.
        let descriptors = parts.descriptors.len();
        let registered_files = opts.registered_files
            && descriptors > 0
            && ring.register_files_sparse(descriptors as u32).is_ok();
        // SAFETY: the one call for this ring; `sq` and `cq` go into the
        // proactor that owns the ring, and are not used once it is dropped.
        let (sq, cq) = unsafe { ring.queues() };
        let efd = event::eventfd(false).map_err(|e| BuildError::Os {
            what: "eventfd (the interrupter)",
            error: e.into(),
        })?;
        // The read pool, ring registration probed here: a kernel that
        // refuses it gets the software pool (see `bufs`).
        let read_bufs = if count > 0 {
            let b = ReadBuffers::new(&ring, count, size, opts.buffer_ring).map_err(|error| {
                BuildError::Os {
                    what: "the read-buffer pool",
                    error,
                }
            })?;
            Some(b)
        } else {
            None
        };
        let info = RingInfo {
            sq_entries,
            cq_entries,
            pinned_bytes: ring_bytes(sq_entries, cq_entries)
                + read_bufs.as_ref().map_or(0, ReadBuffers::pinned_bytes),
            multishot_accept: opts.multishot_accept,
            sqpoll: params.flags & IORING_SETUP_SQPOLL != 0,
            registered_files,
            buffer_ring: read_bufs.as_ref().is_some_and(ReadBuffers::is_ring),
            coop_taskrun: coop,
            // At least one byte: an empty write never reaches the kernel.
            send_zc: opts
                .send_zc
                .filter(|_| supported(IORING_OP_SEND_ZC))
                .map(|min| min.max(1)),
        };
        let p = Proactor {
            ring,
            read_bufs,
            cq,
            sq_lock: FutexMutex::INIT,
            sq_state: UnsafeCell::new(SqState { no_cqe: 0, sq }),
            waiting: AtomicBool::new(false),
            runner: UnsafeCell::new(RunnerState {
                completed: 0,
                rearm_interrupter: false,
                deferred: false,
                shutting_down: false,
                #[cfg(feature = "fault-injection")]
                held: super::faults::Held::EMPTY,
            }),
            efd,
            efd_buf: Box::new(UnsafeCell::new(0)),
            timers: TimerService::new(parts.timers, parts.heap),
            blocked_until: UnsafeCell::new(0),
            descs: Slab::new(parts.descriptors),
            closing: Locked::new((NIL, NIL)),
            closes_pending: AtomicBool::new(false),
            zc_min: info.send_zc.unwrap_or(u32::MAX),
            info,
            #[cfg(feature = "stats")]
            stats: Default::default(),
            #[cfg(feature = "fault-injection")]
            cancelled: super::faults::Cancelled::new(),
        };
        p.arm_interrupter();
        Ok(p)
    }
}
