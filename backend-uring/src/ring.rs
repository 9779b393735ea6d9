//! pinion's own view of the io_uring SQ and CQ rings.
//!
//! The io-uring crate sets the ring up, submits and registers; this module
//! maps the same ring memory a second time (the kernel allows any number
//! of mappings of one ring) and reads and writes the rings directly. That
//! spares every push building a `SubmissionQueue` (two loads through
//! pointers, a tail store on drop) and every SQE a copy through the
//! crate's `Entry`: the hot operations write their SQE in place, only
//! the fields `RECV`/`SEND` use (the rest are kept zero in every slot, see
//! [`Sq::push_lean`]), and the tail is kept in [`Sq`] instead of being
//! read back from the shared page.
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
// The ring file's mmap offsets, typed as the target's `off_t`: 32 bits
// on i686 and armv7 (glibc's `mmap` without `_FILE_OFFSET_BITS=64`, and
// what libc's `mmap` binds), so each must fit in an `i32` there. They do
// (the largest is 2^28; one that did not would fail to compile, as
// `overflowing_literals` denies it). io_uring's other mmap
// offset, `IORING_OFF_PBUF_RING` (2^31), is never mapped here: the
// provided-buffer ring is our own memory (`bufs.rs`).
const IORING_OFF_SQ_RING: libc::off_t = 0;
const IORING_OFF_CQ_RING: libc::off_t = 0x800_0000;
const IORING_OFF_SQES: libc::off_t = 0x1000_0000;

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

// Every struct pinion hands the kernel through the io-uring crate has the
// kernel's size on this target. The crate's bindings are generated on
// x86_64; on a 32-bit target (built with `--cfg io_uring_skip_arch_check`,
// see the README) they are right because io_uring's UAPI uses fixed-width
// fields without implicit padding, so 4-byte `u64` alignment (i686)
// changes no offset. These asserts stop the build where that would fail.
const _: () = assert!(size_of::<io_uring::cqueue::Entry>() == 16);
const _: () = assert!(size_of::<io_uring::types::Timespec>() == 16);
const _: () = assert!(size_of::<io_uring::types::SubmitArgs<'static, 'static>>() == 24);
const _: () = assert!(size_of::<io_uring::types::BufRingEntry>() == 16);

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

    /// `true` if the fields that no hot operation (`RECV`, `SEND`) uses
    /// are zero: `off`, `addr3` and `pad`. Such an SQE may be pushed with
    /// [`Sq::push_lean`], which does not write them.
    #[inline(always)]
    pub(crate) fn is_lean(&self) -> bool {
        self.off | self.addr3 | self.pad == 0
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
    fn new(fd: i32, offset: libc::off_t, len: usize) -> std::io::Result<Mapping> {
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
    /// Positions (counted like `tail`) from `dirty.0` to `dirty.1`
    /// inclusive may hold a full push whose [`Sqe::is_lean`] fields are
    /// not zero; `dirty.0 > dirty.1` when none does. See [`push_lean`].
    ///
    /// [`push_lean`]: Self::push_lean
    dirty: (u64, u64),
}

/// `Sq::dirty` when no slot is dirty.
const CLEAN: (u64, u64) = (1, 0);

impl Sq {
    /// `true` if the SQ has no room by the last head read.
    #[inline(always)]
    pub(crate) fn looks_full(&self) -> bool {
        self.tail as u32 == self.limit
    }

    /// Makes the SQ look full until the next [`sync_head`](Self::sync_head),
    /// so that the next push takes its slow path.
    #[inline]
    pub(crate) fn look_full(&mut self) {
        self.limit = self.tail as u32;
    }

    /// Re-reads the kernel's head; `true` if there is room now.
    #[inline]
    pub(crate) fn sync_head(&mut self) -> bool {
        // SAFETY: `khead` points into the live SQ ring mapping.
        let head = unsafe { (*self.khead).load(Ordering::Acquire) };
        if self.dirty.0 <= self.dirty.1 {
            self.clean_consumed(head);
        }
        self.limit = head.wrapping_add(self.entries);
        !self.looks_full()
    }

    /// Zeroes the lean fields of the dirty slots the kernel has consumed
    /// (positions before `head`), before `limit` lets the tail reach them
    /// again.
    #[cold]
    #[inline(never)]
    fn clean_consumed(&mut self, head: u32) {
        // `head` as a position: the tail is at most `entries` ahead.
        let head = self.tail - (self.tail as u32).wrapping_sub(head) as u64;
        let (from, to) = self.dirty;
        for pos in from..(to + 1).min(head) {
            // The kernel has consumed position `pos` (before its head) and
            // the tail has not come round to the slot again (it is less
            // than `entries` past `pos`): nobody reads or writes it now.
            // SAFETY: a masked index into the live SQE array, unused (above).
            unsafe {
                let e = self.sqes.add((pos as u32 & self.mask) as usize);
                (*e).off = 0;
                (*e).addr3 = 0;
                (*e).pad = 0;
            }
        }
        self.dirty = if to < head {
            CLEAN
        } else {
            (head.max(from), to)
        };
    }

    /// Writes all of `sqe` at the tail and publishes it.
    ///
    /// # Safety
    /// There is room (`!looks_full()`); the SQE's pointers obey the
    /// proactor's buffer-lifetime rule.
    #[inline(always)]
    pub(crate) unsafe fn push(&mut self, sqe: &Sqe) {
        let tail = self.tail;
        if !sqe.is_lean() {
            // The slot must be cleaned before a lean push comes round.
            if self.dirty.0 > self.dirty.1 {
                self.dirty.0 = tail;
            }
            self.dirty.1 = tail;
        }
        // SAFETY: `tail & mask` indexes the SQE array; the slot is free
        // because the ring is not full (per contract), so the kernel does
        // not read it until the tail store below publishes it.
        unsafe {
            ptr::write(self.sqes.add((tail as u32 & self.mask) as usize), *sqe);
            self.publish(tail + 1);
        }
    }

    /// [`push`](Self::push) for a lean SQE, writing only the fields that
    /// are not always zero in one: every slot's lean fields are zero by
    /// the time a push reaches it (zeroed at mapping; a full push that
    /// sets them marks its slot dirty, and the slot is cleaned once the
    /// kernel has consumed it, before the tail can come round to it).
    ///
    /// # Safety
    /// As for `push`, and `sqe.is_lean()`.
    #[inline(always)]
    pub(crate) unsafe fn push_lean(&mut self, sqe: &Sqe) {
        debug_assert!(sqe.is_lean());
        let tail = self.tail;
        // SAFETY: as in `push`; the fields not written here are zero in
        // the slot (this fn's docs), as they are in `sqe` (per contract).
        unsafe {
            let e = self.sqes.add((tail as u32 & self.mask) as usize);
            (*e).opcode = sqe.opcode;
            (*e).flags = sqe.flags;
            (*e).ioprio = sqe.ioprio;
            (*e).fd = sqe.fd;
            (*e).addr = sqe.addr;
            (*e).len = sqe.len;
            (*e).op_flags = sqe.op_flags;
            (*e).user_data = sqe.user_data;
            (*e).buf_index = sqe.buf_index;
            (*e).personality = sqe.personality;
            (*e).splice_fd_in = sqe.splice_fd_in;
            self.publish(tail + 1);
        }
    }

    /// Moves the tail on to `tail`, for the kernel to see.
    ///
    /// # Safety
    /// Every entry before `tail` has been written.
    #[inline(always)]
    unsafe fn publish(&mut self, tail: u64) {
        self.tail = tail;
        // SAFETY: `ktail` points into the live SQ ring mapping.
        unsafe { (*self.ktail).store(tail as u32, Ordering::Release) };
    }

    /// SQEs published that the kernel has not consumed yet.
    #[inline]
    pub(crate) fn pending(&self) -> bool {
        // SAFETY: `khead` points into the live SQ ring mapping.
        self.tail as u32 != unsafe { (*self.khead).load(Ordering::Acquire) }
    }

    /// The position the next push takes, counted like [`pushed`](Self::pushed)
    /// plus a fixed start: after a push, the position just past it.
    #[inline]
    pub(crate) fn tail_pos(&self) -> u64 {
        self.tail
    }

    /// The kernel's head as a position comparable with [`tail_pos`](Self::tail_pos):
    /// every SQE before it has been consumed, i.e. issued (the kernel
    /// moves its head only after submitting the SQEs it took, SQPOLL's
    /// thread too).
    #[inline]
    pub(crate) fn head_pos(&self) -> u64 {
        // SAFETY: `khead` points into the live SQ ring mapping.
        let head = unsafe { (*self.khead).load(Ordering::Acquire) };
        // The tail is never more than `entries` ahead of the head.
        self.tail - (self.tail as u32).wrapping_sub(head) as u64
    }

    /// `true` once the kernel has consumed every SQE before position `pos`.
    #[inline]
    pub(crate) fn consumed_before(&self, pos: u64) -> bool {
        self.head_pos() >= pos
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
    /// after they are dropped. Called before any SQE is queued on `ring`
    /// (it zeroes the SQE array).
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
        // Every slot starts clean for `Sq::push_lean`.
        // SAFETY: the SQE array, just mapped writable at this length; no
        // SQE has been queued yet (per this fn's contract).
        unsafe { ptr::write_bytes(sqes.ptr, 0, sqes.len) };
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
                dirty: CLEAN,
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
    #[cfg_attr(miri, ignore)] // a real ring
    fn lean_pushes_find_a_full_pushs_slot_clean_again() {
        let ring = IoUring::new(4).expect("an io_uring");
        let (_rings, mut sq) = Rings::map(&ring).expect("mapped");
        assert_eq!(sq.entries, 4);
        let lean = |ud| {
            let mut e = Sqe::new(opcode::Nop::CODE, 0, false);
            e.user_data = ud;
            e
        };
        // A full push that sets the lean fields, then lean ones to fill
        // the ring.
        let mut full = lean(1);
        full.off = 7;
        full.addr3 = 8;
        full.pad = 9;
        assert!(!full.is_lean() && lean(2).is_lean());
        // SAFETY: room in the ring; NOPs carry no pointer.
        unsafe { sq.push(&full) };
        for ud in 2..=4 {
            assert!(!sq.looks_full());
            // SAFETY: as above.
            unsafe { sq.push_lean(&lean(ud)) };
        }
        assert!(sq.looks_full());
        ring.submitter().submit().expect("submitted");
        assert!(sq.sync_head(), "the kernel consumed the ring");
        // The next lean push lands in the full push's slot, which must
        // read as if written whole.
        // SAFETY: as above.
        unsafe { sq.push_lean(&lean(5)) };
        // SAFETY: slot 0 of the SQE array, not yet submitted.
        let slot = unsafe { *sq.sqes };
        assert_eq!(bytes(&slot), bytes(&lean(5)));
        assert_eq!(sq.dirty, CLEAN);
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
