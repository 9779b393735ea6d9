//! A ring: `io_uring_setup`, the mappings of its SQ ring, CQ ring and SQE
//! array, submission (`io_uring_enter`), registration
//! (`io_uring_register`) and the opcode probe.

use core::ffi::c_void;
use core::mem::size_of;
use core::ptr;
use core::sync::atomic::{fence, AtomicU32, Ordering};

use super::abi::*;
use super::call::{enter, register, setup};
use super::queue::{Cq, Sq};
use crate::{Errno, Fd};

/// One shared `mmap` of the ring file, unmapped on drop.
struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Mapping {
    /// Maps `len` bytes of the ring `fd` at `offset` (an `IORING_OFF_*`,
    /// typed as the target's `off_t`), populated now so the I/O path
    /// faults nothing in.
    fn new(fd: i32, offset: libc::off_t, len: usize) -> Result<Mapping, Errno> {
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
            return Err(Errno::last());
        }
        Ok(Mapping {
            ptr: ptr as *mut u8,
            len,
        })
    }

    /// # Safety
    /// `off + size_of::<T>()` lies within the mapping, suitably aligned.
    unsafe fn at<T>(&self, off: u32) -> *mut T {
        // SAFETY: per contract.
        unsafe { self.ptr.add(off as usize) as *mut T }
    }

    /// `MADV_DONTFORK`: a child made by `fork` gets no copy.
    fn dontfork(&self) -> Result<(), Errno> {
        // SAFETY: advice on our own mapping; no byte changes.
        syscall!(madvise(
            self.ptr as *mut c_void,
            self.len,
            libc::MADV_DONTFORK
        ))
        .map(drop)
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: our own mapping, unmapped once; the views into it (Sq,
        // Cq) are not used after the ring is dropped (Ring::queues).
        unsafe { libc::munmap(self.ptr as *mut c_void, self.len) };
    }
}

/// An io_uring instance: its descriptor, what setup answered, and its
/// mappings. [`Ring::queues`] gives the SQ and CQ views.
pub struct Ring {
    /// SQE array, SQ ring, CQ ring (`None` with `IORING_FEAT_SINGLE_MMAP`).
    maps: [Option<Mapping>; 3],
    fd: Fd,
    params: Params,
    khead: *const AtomicU32,
    ktail: *const AtomicU32,
    kflags: *const AtomicU32,
}

// SAFETY: the pointers are into the ring's own mappings, which live as
// long as it does; through them a `Ring` only loads atomics. The system
// calls may be made from any thread.
unsafe impl Send for Ring {}
// SAFETY: as above.
unsafe impl Sync for Ring {}

impl Ring {
    /// Sets up a ring for `entries` SQEs as `params` asks (flags,
    /// `cq_entries` with `IORING_SETUP_CQSIZE`, SQPOLL's idle time) and
    /// maps it, every page populated, the SQE array zeroed and the SQ
    /// index array the identity.
    pub fn new(entries: u32, mut params: Params) -> Result<Ring, Errno> {
        let fd = setup(entries, &mut params)?;
        let p = &params;
        let raw = fd.raw();
        let sq_len = p.sq_off.array as usize + p.sq_entries as usize * size_of::<u32>();
        let cq_len = p.cq_off.cqes as usize + p.cq_entries as usize * size_of::<Cqe>();
        let sqes = Mapping::new(
            raw,
            IORING_OFF_SQES,
            p.sq_entries as usize * size_of::<Sqe>(),
        )?;
        // Every slot starts clean for `Sq::push_lean`.
        // SAFETY: the SQE array, just mapped writable at this length; the
        // kernel reads no slot before a tail is published.
        unsafe { ptr::write_bytes(sqes.ptr, 0, sqes.len) };
        let (sq_map, cq_map) = if p.features & IORING_FEAT_SINGLE_MMAP != 0 {
            (
                Mapping::new(raw, IORING_OFF_SQ_RING, sq_len.max(cq_len))?,
                None,
            )
        } else {
            (
                Mapping::new(raw, IORING_OFF_SQ_RING, sq_len)?,
                Some(Mapping::new(raw, IORING_OFF_CQ_RING, cq_len)?),
            )
        };
        if p.flags & IORING_SETUP_NO_SQARRAY == 0 {
            // Slot i of the ring is SQE i, for good: pinion writes SQEs in
            // ring order.
            // SAFETY: the index array, `sq_entries` u32s inside the
            // mapping (sq_len), not read by the kernel before a tail moves.
            unsafe {
                let array = sq_map.at::<u32>(p.sq_off.array);
                for i in 0..p.sq_entries {
                    array.add(i as usize).write_volatile(i);
                }
            }
        }
        // SAFETY: the kernel's offsets, inside the SQ mapping.
        let (khead, ktail, kflags) = unsafe {
            (
                sq_map.at::<AtomicU32>(p.sq_off.head) as *const AtomicU32,
                sq_map.at::<AtomicU32>(p.sq_off.tail) as *const AtomicU32,
                sq_map.at::<AtomicU32>(p.sq_off.flags) as *const AtomicU32,
            )
        };
        Ok(Ring {
            maps: [Some(sqes), Some(sq_map), cq_map],
            fd,
            params,
            khead,
            ktail,
            kflags,
        })
    }

    /// The ring's descriptor.
    #[inline]
    pub fn fd(&self) -> i32 {
        self.fd.raw()
    }

    /// What `io_uring_setup` answered: sizes, flags, features, offsets.
    #[inline]
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// `true` if the kernel has every `IORING_FEAT_*` bit in `feature`.
    #[inline]
    pub fn has_feature(&self, feature: u32) -> bool {
        self.params.features & feature == feature
    }

    /// Keeps the ring's memory out of children made by `fork`
    /// (`MADV_DONTFORK`).
    pub fn dontfork(&self) -> Result<(), Errno> {
        self.maps.iter().flatten().try_for_each(Mapping::dontfork)
    }

    /// Bytes of the ring's mappings (what the kernel pins for it).
    pub fn mapped_bytes(&self) -> usize {
        self.maps.iter().flatten().map(|m| m.len).sum()
    }

    /// The SQ and CQ views.
    ///
    /// # Safety
    /// Called once per ring: the `Sq` must be the ring's only submitter.
    /// Neither view is used after the ring is dropped.
    pub unsafe fn queues(&self) -> (Sq, Cq) {
        let p = &self.params;
        let sq_map = self.maps[1].as_ref().expect("the SQ ring is mapped");
        let cq_map = self.maps[2].as_ref().unwrap_or(sq_map);
        let sqes = self.maps[0].as_ref().expect("the SQE array is mapped");
        // SAFETY: the kernel's offsets, within the lengths mapped (as
        // liburing computes them); the rest per contract.
        unsafe {
            let sq = Sq::from_raw(
                self.khead,
                self.ktail,
                self.kflags,
                sqes.ptr as *mut Sqe,
                *sq_map.at::<u32>(p.sq_off.ring_mask),
            );
            let cq = Cq::from_raw(
                cq_map.at::<AtomicU32>(p.cq_off.head),
                cq_map.at::<AtomicU32>(p.cq_off.tail),
                cq_map.at::<Cqe>(p.cq_off.cqes),
                *cq_map.at::<u32>(p.cq_off.ring_mask),
            );
            (sq, cq)
        }
    }

    /// Submits every published SQE and, if `want > 0`, waits until that
    /// many CQEs are there, at most `timeout` (relative) when one is
    /// given (`IORING_ENTER_EXT_ARG`, Linux 5.11). Returns the SQEs the
    /// kernel consumed. With SQPOLL, enters only to wake the kernel
    /// thread, to wait, or to flush an overflowed CQ.
    ///
    /// `ETIME`: the time-out passed; `EINTR`: a signal; `EBUSY`/`EAGAIN`:
    /// completions must be reaped first.
    pub fn submit(&self, want: u32, timeout: Option<&KernelTimespec>) -> Result<u32, Errno> {
        // SAFETY: the ring's words, in its SQ mapping.
        let (head, tail, sq_flags) = unsafe {
            (
                (*self.khead).load(Ordering::Acquire),
                (*self.ktail).load(Ordering::Acquire),
                (*self.kflags).load(Ordering::Acquire),
            )
        };
        let len = tail.wrapping_sub(head);
        let overflow = sq_flags & IORING_SQ_CQ_OVERFLOW != 0;
        let taskrun = sq_flags & IORING_SQ_TASKRUN != 0;
        let mut flags = 0;
        // Deferred task work, and the overflow list, are only run by an
        // enter carrying GETEVENTS.
        if want > 0 || self.params.flags & IORING_SETUP_IOPOLL != 0 || overflow || taskrun {
            flags |= IORING_ENTER_GETEVENTS;
        }
        if self.params.flags & IORING_SETUP_SQPOLL != 0 {
            // Orders our tail store before the wake-up flag's load, as the
            // kernel thread orders its flag store before its last look at
            // the tail (liburing's `sq_ring_needs_enter`).
            fence(Ordering::SeqCst);
            // SAFETY: as above.
            if unsafe { (*self.kflags).load(Ordering::Relaxed) } & IORING_SQ_NEED_WAKEUP != 0 {
                flags |= IORING_ENTER_SQ_WAKEUP;
            } else if want == 0 && !overflow && !taskrun {
                // The kernel thread is polling: it will see the tail.
                return Ok(len);
            }
        }
        match timeout {
            None => {
                // SAFETY: every published SQE was pushed under Sq::push's
                // contract (its pointers outlive its CQE); no argument.
                unsafe { enter(self.fd(), len, want, flags, ptr::null(), 0) }
            }
            Some(ts) => {
                let arg = GeteventsArg {
                    ts: ts as *const KernelTimespec as usize as u64,
                    ..GeteventsArg::default()
                };
                // SAFETY: as above; `arg` and the timespec it names live
                // across the call, which only reads them.
                unsafe {
                    enter(
                        self.fd(),
                        len,
                        want,
                        flags | IORING_ENTER_EXT_ARG,
                        &arg as *const GeteventsArg as *const c_void,
                        size_of::<GeteventsArg>(),
                    )
                }
            }
        }
    }

    /// Fills `probe` with the opcodes this kernel supports
    /// (`IORING_REGISTER_PROBE`, Linux 5.6).
    pub fn probe(&self, probe: &mut Probe) -> Result<(), Errno> {
        *probe = Probe::EMPTY;
        // SAFETY: a writable probe with room for `PROBE_OPS` ops.
        unsafe {
            register(
                self.fd(),
                IORING_REGISTER_PROBE,
                probe as *mut Probe as *const c_void,
                PROBE_OPS as u32,
            )
        }
        .map(drop)
    }

    /// Registers `nr` empty file slots (`IORING_REGISTER_FILES2`, sparse;
    /// Linux 5.19).
    pub fn register_files_sparse(&self, nr: u32) -> Result<(), Errno> {
        let arg = RsrcRegister {
            nr,
            flags: IORING_RSRC_REGISTER_SPARSE,
            ..RsrcRegister::default()
        };
        // SAFETY: a readable `io_uring_rsrc_register` of the size given;
        // a sparse table hands the kernel no memory.
        unsafe {
            register(
                self.fd(),
                IORING_REGISTER_FILES2,
                &arg as *const RsrcRegister as *const c_void,
                size_of::<RsrcRegister>() as u32,
            )
        }
        .map(drop)
    }

    /// Puts `fds` into the registered-file slots from `offset` on (`-1`
    /// empties a slot). Returns the slots updated.
    pub fn register_files_update(&self, offset: u32, fds: &[i32]) -> Result<u32, Errno> {
        let arg = FilesUpdate {
            offset,
            resv: 0,
            fds: fds.as_ptr() as usize as u64,
        };
        // SAFETY: a readable `io_uring_files_update` naming `fds.len()`
        // readable i32s; the kernel copies them during the call.
        unsafe {
            register(
                self.fd(),
                IORING_REGISTER_FILES_UPDATE,
                &arg as *const FilesUpdate as *const c_void,
                fds.len() as u32,
            )
        }
    }

    /// Registers a provided buffer ring of `entries` entries at `ring` as
    /// buffer group `bgid` (`IORING_REGISTER_PBUF_RING`, Linux 5.19).
    ///
    /// # Safety
    /// `ring` is page-aligned memory of `entries` [`BufRingEntry`]s
    /// (`entries` a power of two), and it, with every buffer later
    /// published in it, stays mapped until [`unregister_buf_ring`](Self::unregister_buf_ring)
    /// or the ring's end.
    pub unsafe fn register_buf_ring(
        &self, ring: *mut BufRingEntry, entries: u16, bgid: u16,
    ) -> Result<(), Errno> {
        let arg = BufReg {
            ring_addr: ring as usize as u64,
            ring_entries: entries as u32,
            bgid,
            ..BufReg::default()
        };
        // SAFETY: a readable `io_uring_buf_reg`; the memory it names per
        // this fn's contract.
        unsafe {
            register(
                self.fd(),
                IORING_REGISTER_PBUF_RING,
                &arg as *const BufReg as *const c_void,
                1,
            )
        }
        .map(drop)
    }

    /// Unregisters buffer group `bgid`'s ring: the kernel lets go of it.
    pub fn unregister_buf_ring(&self, bgid: u16) -> Result<(), Errno> {
        let arg = BufReg {
            bgid,
            ..BufReg::default()
        };
        // SAFETY: a readable `io_uring_buf_reg`; unregistering hands the
        // kernel nothing.
        unsafe {
            register(
                self.fd(),
                IORING_UNREGISTER_PBUF_RING,
                &arg as *const BufReg as *const c_void,
                1,
            )
        }
        .map(drop)
    }

    /// Registers `bufs` as the ring's fixed buffers
    /// (`IORING_REGISTER_BUFFERS`), for `READ_FIXED`/`WRITE_FIXED` and
    /// `SEND_ZC` with `IORING_RECVSEND_FIXED_BUF`.
    ///
    /// # Safety
    /// Every buffer stays mapped until [`unregister_buffers`](Self::unregister_buffers)
    /// or the ring's end (the kernel pins its pages).
    pub unsafe fn register_buffers(&self, bufs: &[libc::iovec]) -> Result<(), Errno> {
        // SAFETY: `bufs.len()` readable iovecs; their memory per contract.
        unsafe {
            register(
                self.fd(),
                IORING_REGISTER_BUFFERS,
                bufs.as_ptr() as *const c_void,
                bufs.len() as u32,
            )
        }
        .map(drop)
    }

    /// Unregisters the fixed buffers.
    pub fn unregister_buffers(&self) -> Result<(), Errno> {
        // SAFETY: no argument.
        unsafe { register(self.fd(), IORING_UNREGISTER_BUFFERS, ptr::null(), 0) }.map(drop)
    }
}

/// Opcodes a [`Probe`] has room for (every `u8`).
const PROBE_OPS: usize = 256;

/// `struct io_uring_probe` with room for every opcode: what
/// [`Ring::probe`] fills. 2 KiB; keep it off hot stacks.
#[repr(C)]
pub struct Probe {
    header: ProbeHeader,
    ops: [ProbeOp; PROBE_OPS],
}

const _: () = assert!(size_of::<Probe>() == 16 + 8 * PROBE_OPS);

impl Probe {
    /// A probe that says nothing is supported.
    pub const EMPTY: Probe = Probe {
        header: ProbeHeader {
            last_op: 0,
            ops_len: 0,
            resv: 0,
            resv2: [0; 3],
        },
        ops: [ProbeOp {
            op: 0,
            resv: 0,
            flags: 0,
            resv2: 0,
        }; PROBE_OPS],
    };

    /// `true` if the kernel said it supports `opcode`.
    pub fn is_supported(&self, opcode: u8) -> bool {
        opcode <= self.header.last_op
            && (opcode as usize) < self.header.ops_len as usize
            && self.ops[opcode as usize].flags & IO_URING_OP_SUPPORTED != 0
    }
}

impl Default for Probe {
    fn default() -> Self {
        Probe::EMPTY
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_probe_supports_nothing() {
        let p = Probe::EMPTY;
        assert!((0..=255).all(|op| !p.is_supported(op)));
    }

    #[test]
    fn a_probe_answers_from_the_ops_the_kernel_filled() {
        let mut p = Probe::EMPTY;
        p.header.last_op = 3;
        p.header.ops_len = 4;
        for op in 0..4 {
            p.ops[op as usize] = ProbeOp {
                op,
                flags: if op == 2 { 0 } else { IO_URING_OP_SUPPORTED },
                ..ProbeOp::default()
            };
        }
        assert!(p.is_supported(0) && p.is_supported(3));
        assert!(!p.is_supported(2), "listed without the supported flag");
        assert!(!p.is_supported(4), "past last_op");
    }
}
