//! pinion's own view of the io_uring SQ and CQ rings.
//!
//! The io-uring crate sets the ring up, submits and registers; this module
//! maps the same ring memory a second time (the kernel allows any number
//! of mappings of one ring) and reads and writes the rings directly. That
//! spares every push building a `SubmissionQueue` (two loads through
//! pointers, a tail store on drop) and every SQE a copy through the
//! crate's `Entry`: the hot operations write their SQE in place, eight
//! words, and the tail is kept in [`Sq`] instead of being read back from
//! the shared page.
//!
//! Nothing here is synchronised: [`Sq`] is used under the proactor's
//! `sq_lock`, [`Cq`] only by the thread running the task.

use core::mem::size_of;
use core::ptr;
use core::sync::atomic::{AtomicU32, Ordering};

use io_uring::{squeue, IoUring};

/// `IOSQE_FIXED_FILE`: the SQE's `fd` is a registered-file index.
pub(crate) const IOSQE_FIXED_FILE: u8 = 1;
/// `IORING_SQ_CQ_OVERFLOW` in the SQ ring's flags.
const IORING_SQ_CQ_OVERFLOW: u32 = 2;
const IORING_OFF_SQ_RING: i64 = 0;
const IORING_OFF_CQ_RING: i64 = 0x800_0000;
const IORING_OFF_SQES: i64 = 0x1000_0000;

/// The kernel's `struct io_sqring_offsets`.
#[allow(dead_code)]
#[repr(C)]
#[derive(Clone, Copy)]
struct SqOffsets {
    head: u32,
    tail: u32,
    ring_mask: u32,
    ring_entries: u32,
    flags: u32,
    dropped: u32,
    array: u32,
    resv1: u32,
    user_addr: u64,
}

/// The kernel's `struct io_cqring_offsets`.
#[allow(dead_code)]
#[repr(C)]
#[derive(Clone, Copy)]
struct CqOffsets {
    head: u32,
    tail: u32,
    ring_mask: u32,
    ring_entries: u32,
    overflow: u32,
    cqes: u32,
    flags: u32,
    resv1: u32,
    user_addr: u64,
}

/// The kernel's `struct io_uring_params`, which io-uring's `Parameters`
/// wraps transparently (its documented layout).
#[allow(dead_code)]
#[repr(C)]
#[derive(Clone, Copy)]
struct Params {
    sq_entries: u32,
    cq_entries: u32,
    flags: u32,
    sq_thread_cpu: u32,
    sq_thread_idle: u32,
    features: u32,
    wq_fd: u32,
    resv: [u32; 3],
    sq_off: SqOffsets,
    cq_off: CqOffsets,
}

const _: () = assert!(size_of::<Params>() == 120);
const _: () = assert!(size_of::<io_uring::Parameters>() == size_of::<Params>());

/// One SQE as the kernel reads it (`struct io_uring_sqe`, 64 bytes; the
/// unions appear as the member every opcode pinion uses reads).
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct Sqe {
    pub(crate) opcode: u8,
    pub(crate) flags: u8,
    pub(crate) ioprio: u16,
    pub(crate) fd: i32,
    pub(crate) off: u64,
    pub(crate) addr: u64,
    pub(crate) len: u32,
    /// `msg_flags`, `rw_flags`, `cancel_flags`...: the opcode's flags.
    pub(crate) op_flags: u32,
    pub(crate) user_data: u64,
    pub(crate) buf_index: u16,
    pub(crate) personality: u16,
    pub(crate) splice_fd_in: i32,
    pub(crate) addr3: u64,
    pub(crate) pad: u64,
}

const _: () = assert!(size_of::<Sqe>() == 64);
const _: () = assert!(size_of::<squeue::Entry>() == 64);

impl Sqe {
    /// An SQE for `opcode` on `fd` (a registered-file index if `fixed`),
    /// every other field zero.
    #[inline(always)]
    pub(crate) fn new(opcode: u8, fd: i32, fixed: bool) -> Sqe {
        Sqe {
            opcode,
            flags: if fixed { IOSQE_FIXED_FILE } else { 0 },
            ioprio: 0,
            fd,
            off: 0,
            addr: 0,
            len: 0,
            op_flags: 0,
            user_data: 0,
            buf_index: 0,
            personality: 0,
            splice_fd_in: 0,
            addr3: 0,
            pad: 0,
        }
    }

    /// An SQE built by io-uring's opcode builders (cold paths).
    #[inline]
    pub(crate) fn from_entry(e: squeue::Entry) -> Sqe {
        // `squeue::Entry` is `#[repr(C)]` around the kernel's
        // `io_uring_sqe`, which `Sqe` mirrors field for field (same size,
        // checked by transmute); the builders start from an all-zero SQE.
        // SAFETY: every byte is initialised; any bit pattern is an Sqe.
        unsafe { core::mem::transmute::<squeue::Entry, Sqe>(e) }
    }
}

/// One CQE (`struct io_uring_cqe` without the CQE32 extension).
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct Cqe {
    pub(crate) user_data: u64,
    pub(crate) res: i32,
    pub(crate) flags: u32,
}

/// One `mmap` of the ring file, unmapped on drop.
struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Mapping {
    fn new(fd: i32, offset: i64, len: usize) -> std::io::Result<Mapping> {
        // SAFETY: a fresh shared mapping of the ring fd; no existing
        // memory is touched.
        let ptr = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd,
                offset,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Mapping {
            ptr: ptr as *mut u8,
            len,
        })
    }

    /// # Safety
    /// `off + size_of::<T>()` lies within the mapping.
    unsafe fn at<T>(&self, off: u32) -> *mut T {
        // SAFETY: per contract.
        unsafe { self.ptr.add(off as usize) as *mut T }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: our own mapping, unmapped once; nothing points into it
        // once its owner (`Rings`) is dropped.
        unsafe { libc::munmap(self.ptr as *mut libc::c_void, self.len) };
    }
}

/// The submission ring: where the next SQE goes and when it is full.
pub(crate) struct Sq {
    khead: *const AtomicU32,
    ktail: *const AtomicU32,
    kflags: *const AtomicU32,
    sqes: *mut Sqe,
    mask: u32,
    entries: u32,
    /// Our tail, the only writer's copy (published after every push),
    /// counting every push since the ring was mapped: the ring's tail is
    /// its low 32 bits.
    tail: u64,
    /// `tail` when the ring was mapped.
    start: u64,
    /// The kernel's head as last read plus `entries`: the ring is full
    /// when the tail's low 32 bits reach it (the tail is never more than
    /// `entries` ahead of the head), one compare per push. Re-read only
    /// when the ring looks full.
    limit: u32,
}

impl Sq {
    /// `true` if the SQ has no room by the last head read.
    #[inline(always)]
    pub(crate) fn looks_full(&self) -> bool {
        self.tail as u32 == self.limit
    }

    /// Re-reads the kernel's head; `true` if there is room now.
    #[inline]
    pub(crate) fn sync_head(&mut self) -> bool {
        // SAFETY: `khead` points into the live SQ ring mapping.
        let head = unsafe { (*self.khead).load(Ordering::Acquire) };
        self.limit = head.wrapping_add(self.entries);
        !self.looks_full()
    }

    /// Writes `sqe` at the tail and publishes it.
    ///
    /// # Safety
    /// There is room (`!looks_full()`); the SQE's pointers obey the
    /// proactor's buffer-lifetime rule.
    #[inline(always)]
    pub(crate) unsafe fn push(&mut self, sqe: &Sqe) {
        // SAFETY: `tail & mask` indexes the SQE array; the slot is free
        // because the ring is not full (per contract), so the kernel does
        // not read it until the tail store below publishes it.
        unsafe {
            let tail = self.tail;
            ptr::write(self.sqes.add((tail as u32 & self.mask) as usize), *sqe);
            let tail = tail + 1;
            self.tail = tail;
            (*self.ktail).store(tail as u32, Ordering::Release);
        }
    }

    /// SQEs published that the kernel has not consumed yet.
    #[inline]
    pub(crate) fn pending(&self) -> bool {
        // SAFETY: `khead` points into the live SQ ring mapping.
        self.tail as u32 != unsafe { (*self.khead).load(Ordering::Acquire) }
    }

    /// SQEs pushed since the ring was mapped.
    #[inline]
    pub(crate) fn pushed(&self) -> u64 {
        self.tail - self.start
    }

    /// The CQ overflowed into the kernel's backlog.
    #[inline]
    pub(crate) fn cq_overflow(&self) -> bool {
        // SAFETY: `kflags` points into the live SQ ring mapping.
        unsafe { (*self.kflags).load(Ordering::Acquire) & IORING_SQ_CQ_OVERFLOW != 0 }
    }
}

/// The completion ring, read by the task's thread only.
pub(crate) struct Cq {
    khead: *const AtomicU32,
    ktail: *const AtomicU32,
    cqes: *const Cqe,
    mask: u32,
}

impl Cq {
    /// Our head: the next CQE to read.
    ///
    /// # Safety
    /// Only one thread reaps at a time (it alone writes the head).
    #[inline(always)]
    pub(crate) unsafe fn head(&self) -> u32 {
        // SAFETY: `khead` points into the live CQ ring mapping.
        unsafe { (*self.khead).load(Ordering::Relaxed) }
    }

    /// The kernel's tail: CQEs before it are published.
    #[inline(always)]
    pub(crate) fn tail(&self) -> u32 {
        // SAFETY: `ktail` points into the live CQ ring mapping; Acquire
        // orders the entries' contents before our reads of them.
        unsafe { (*self.ktail).load(Ordering::Acquire) }
    }

    /// The CQE array and its index mask, to be copied into locals: a
    /// reaping loop that read them through `self` would reload them
    /// after every store to an operation.
    #[inline(always)]
    pub(crate) fn entries(&self) -> CqEntries {
        CqEntries {
            cqes: self.cqes,
            mask: self.mask,
        }
    }

    /// Hands the entries before `head` back to the kernel.
    ///
    /// # Safety
    /// As for [`head`](Self::head); every entry before `head` was read.
    #[inline(always)]
    pub(crate) unsafe fn set_head(&self, head: u32) {
        // SAFETY: `khead` points into the live CQ ring mapping.
        unsafe { (*self.khead).store(head, Ordering::Release) }
    }
}

/// [`Cq::entries`].
#[derive(Clone, Copy)]
pub(crate) struct CqEntries {
    cqes: *const Cqe,
    mask: u32,
}

impl CqEntries {
    /// The entries from position `head` on, up to `tail` or the end of the
    /// array, whichever comes first, as (first, count): a stretch the
    /// reaper walks by pointer, without masking each position.
    ///
    /// # Safety
    /// `head != tail` and both are positions of the `Cq` these came from
    /// with `head <= tail` in ring order; the entries are read before its
    /// head moves past them.
    #[inline(always)]
    pub(crate) unsafe fn run(self, head: u32, tail: u32) -> (*const Cqe, u32) {
        let i = head & self.mask;
        let n = tail.wrapping_sub(head).min(self.mask - i + 1);
        // SAFETY: `i` indexes the CQE array (masked).
        (unsafe { self.cqes.add(i as usize) }, n)
    }
}

/// Our mappings of one ring, and the CQ view into them (the SQ view
/// lives in the proactor's locked SQ state).
pub(crate) struct Rings {
    pub(crate) cq: Cq,
    _maps: [Option<Mapping>; 3],
}

// SAFETY: the views are raw pointers into shared mappings owned here;
// the proactor synchronises every use (see the module docs).
unsafe impl Send for Rings {}
// SAFETY: as above.
unsafe impl Sync for Rings {}
// SAFETY: as above; an `Sq` is only used under the proactor's sq_lock.
unsafe impl Send for Sq {}

impl Rings {
    /// Maps `ring`'s SQ ring, CQ ring and SQE array once more. The `Sq`
    /// points into the returned `Rings`' mappings: it must not be used
    /// after they are dropped.
    pub(crate) fn map(ring: &IoUring) -> std::io::Result<(Rings, Sq)> {
        use std::os::unix::io::AsRawFd;
        // SAFETY: `Parameters` is `#[repr(transparent)]` over the
        // kernel's `io_uring_params` (documented), which `Params` mirrors
        // (same size, asserted above).
        let p: Params = unsafe { *(ring.params() as *const io_uring::Parameters as *const Params) };
        let fd = ring.as_raw_fd();
        let sq_len = p.sq_off.array as usize + p.sq_entries as usize * size_of::<u32>();
        let cq_len = p.cq_off.cqes as usize + p.cq_entries as usize * size_of::<Cqe>();
        let sqes = Mapping::new(
            fd,
            IORING_OFF_SQES,
            p.sq_entries as usize * size_of::<Sqe>(),
        )?;
        let (sq_map, cq_map) = if ring.params().is_feature_single_mmap() {
            (
                Mapping::new(fd, IORING_OFF_SQ_RING, sq_len.max(cq_len))?,
                None,
            )
        } else {
            (
                Mapping::new(fd, IORING_OFF_SQ_RING, sq_len)?,
                Some(Mapping::new(fd, IORING_OFF_CQ_RING, cq_len)?),
            )
        };
        let cq_ref = cq_map.as_ref().unwrap_or(&sq_map);
        // SAFETY: the offsets are the kernel's, within the lengths mapped
        // (computed as io-uring and liburing do).
        let (sq, cq) = unsafe {
            let ktail = sq_map.at::<AtomicU32>(p.sq_off.tail);
            let khead = sq_map.at::<AtomicU32>(p.sq_off.head);
            let tail = (*ktail).load(Ordering::Acquire) as u64;
            let sq = Sq {
                khead,
                ktail,
                kflags: sq_map.at::<AtomicU32>(p.sq_off.flags),
                sqes: sqes.ptr as *mut Sqe,
                mask: *sq_map.at::<u32>(p.sq_off.ring_mask),
                entries: *sq_map.at::<u32>(p.sq_off.ring_entries),
                tail,
                start: tail,
                limit: (*khead)
                    .load(Ordering::Acquire)
                    .wrapping_add(*sq_map.at::<u32>(p.sq_off.ring_entries)),
            };
            let cq = Cq {
                khead: cq_ref.at::<AtomicU32>(p.cq_off.head),
                ktail: cq_ref.at::<AtomicU32>(p.cq_off.tail),
                cqes: cq_ref.at::<Cqe>(p.cq_off.cqes),
                mask: *cq_ref.at::<u32>(p.cq_off.ring_mask),
            };
            (sq, cq)
        };
        Ok((
            Rings {
                cq,
                _maps: [Some(sqes), Some(sq_map), cq_map],
            },
            sq,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use io_uring::{opcode, types};

    fn bytes(s: &Sqe) -> [u8; 64] {
        // SAFETY: `Sqe` is 64 bytes of integers with no padding.
        unsafe { core::mem::transmute::<Sqe, [u8; 64]>(*s) }
    }

    #[test]
    fn hand_built_sqes_match_io_urings_builders() {
        let buf = 0x1000usize as *mut u8;
        let mut recv = Sqe::new(opcode::Recv::CODE, 5, true);
        recv.addr = buf as u64;
        recv.len = 64;
        recv.user_data = 0x40;
        let e = opcode::Recv::new(types::Fixed(5), buf, 64)
            .build()
            .user_data(0x40);
        assert_eq!(bytes(&recv), bytes(&Sqe::from_entry(e)));

        let mut send = Sqe::new(opcode::Send::CODE, 7, false);
        send.op_flags = libc::MSG_NOSIGNAL as u32;
        send.addr = buf as u64;
        send.len = 100;
        send.user_data = 0x80;
        let e = opcode::Send::new(types::Fd(7), buf, 100)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(0x80);
        assert_eq!(bytes(&send), bytes(&Sqe::from_entry(e)));
    }
}
