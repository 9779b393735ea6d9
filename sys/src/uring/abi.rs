//! The kernel's io_uring ABI (`include/uapi/linux/io_uring.h`): the
//! structs pinion shares with the kernel, the opcode numbers and the
//! flags it (and the features planned on it) uses.
//!
//! Every struct here has the kernel's size and field offsets on every
//! target, asserted at compile time below: io_uring's UAPI uses
//! fixed-width fields laid out without implicit padding, so the layout is
//! the same on 32-bit targets, where a `u64` may be only 4-byte aligned
//! (i686), as on 64-bit ones. Names follow the kernel's, in Rust case.

use core::mem::{offset_of, size_of};

// ---- opcodes (`enum io_uring_op`) -----------------------------------------

/// `IORING_OP_NOP`.
pub const IORING_OP_NOP: u8 = 0;
/// `IORING_OP_READV`: `readv(2)`.
pub const IORING_OP_READV: u8 = 1;
/// `IORING_OP_WRITEV`: `writev(2)`.
pub const IORING_OP_WRITEV: u8 = 2;
/// `IORING_OP_READ_FIXED`: a read into a registered buffer.
pub const IORING_OP_READ_FIXED: u8 = 4;
/// `IORING_OP_WRITE_FIXED`: a write from a registered buffer.
pub const IORING_OP_WRITE_FIXED: u8 = 5;
/// `IORING_OP_POLL_ADD`: wait for poll events (one shot, or multishot
/// with [`IORING_POLL_ADD_MULTI`]).
pub const IORING_OP_POLL_ADD: u8 = 6;
/// `IORING_OP_POLL_REMOVE`.
pub const IORING_OP_POLL_REMOVE: u8 = 7;
/// `IORING_OP_SENDMSG`: `sendmsg(2)`.
pub const IORING_OP_SENDMSG: u8 = 9;
/// `IORING_OP_RECVMSG`: `recvmsg(2)`.
pub const IORING_OP_RECVMSG: u8 = 10;
/// `IORING_OP_TIMEOUT`.
pub const IORING_OP_TIMEOUT: u8 = 11;
/// `IORING_OP_ACCEPT`: `accept4(2)` (multishot with
/// [`IORING_ACCEPT_MULTISHOT`] in `ioprio`).
pub const IORING_OP_ACCEPT: u8 = 13;
/// `IORING_OP_ASYNC_CANCEL`: cancel by `user_data`, or by the criteria in
/// `cancel_flags` (`IORING_ASYNC_CANCEL_*`).
pub const IORING_OP_ASYNC_CANCEL: u8 = 14;
/// `IORING_OP_LINK_TIMEOUT`.
pub const IORING_OP_LINK_TIMEOUT: u8 = 15;
/// `IORING_OP_CONNECT`: `connect(2)`.
pub const IORING_OP_CONNECT: u8 = 16;
/// `IORING_OP_CLOSE`.
pub const IORING_OP_CLOSE: u8 = 19;
/// `IORING_OP_READ`: `read(2)`/`pread(2)`.
pub const IORING_OP_READ: u8 = 22;
/// `IORING_OP_WRITE`: `write(2)`/`pwrite(2)`.
pub const IORING_OP_WRITE: u8 = 23;
/// `IORING_OP_SEND`: `send(2)`.
pub const IORING_OP_SEND: u8 = 26;
/// `IORING_OP_RECV`: `recv(2)` (multishot with [`IORING_RECV_MULTISHOT`]).
pub const IORING_OP_RECV: u8 = 27;
/// `IORING_OP_SHUTDOWN`: `shutdown(2)`.
pub const IORING_OP_SHUTDOWN: u8 = 34;
/// `IORING_OP_MSG_RING`: post a CQE to another ring.
pub const IORING_OP_MSG_RING: u8 = 40;
/// `IORING_OP_SOCKET` (Linux 5.19; pinion's marker for that kernel).
pub const IORING_OP_SOCKET: u8 = 45;
/// `IORING_OP_SEND_ZC`: zero-copy send (Linux 6.0).
pub const IORING_OP_SEND_ZC: u8 = 47;
/// `IORING_OP_SENDMSG_ZC`: zero-copy `sendmsg` (Linux 6.1).
pub const IORING_OP_SENDMSG_ZC: u8 = 48;
/// `IORING_OP_READ_MULTISHOT` (Linux 6.7).
pub const IORING_OP_READ_MULTISHOT: u8 = 49;

// ---- SQE flags (`sqe->flags`) ---------------------------------------------

/// `IOSQE_FIXED_FILE`: `fd` is an index into the registered files.
pub const IOSQE_FIXED_FILE: u8 = 1 << 0;
/// `IOSQE_IO_DRAIN`.
pub const IOSQE_IO_DRAIN: u8 = 1 << 1;
/// `IOSQE_IO_LINK`: the next SQE starts when this one completes.
pub const IOSQE_IO_LINK: u8 = 1 << 2;
/// `IOSQE_IO_HARDLINK`.
pub const IOSQE_IO_HARDLINK: u8 = 1 << 3;
/// `IOSQE_ASYNC`: always issue from a worker.
pub const IOSQE_ASYNC: u8 = 1 << 4;
/// `IOSQE_BUFFER_SELECT`: the kernel picks the buffer from the group in
/// `buf_index`.
pub const IOSQE_BUFFER_SELECT: u8 = 1 << 5;
/// `IOSQE_CQE_SKIP_SUCCESS`: post no CQE unless the request fails.
pub const IOSQE_CQE_SKIP_SUCCESS: u8 = 1 << 6;

// ---- per-opcode flags -----------------------------------------------------

/// `IORING_POLL_ADD_MULTI` (in `len` of `POLL_ADD`): multishot poll.
pub const IORING_POLL_ADD_MULTI: u32 = 1;
/// `IORING_ASYNC_CANCEL_ALL`: cancel every match, not just the first.
pub const IORING_ASYNC_CANCEL_ALL: u32 = 1 << 0;
/// `IORING_ASYNC_CANCEL_FD`: match by file (`fd`), not `user_data`.
pub const IORING_ASYNC_CANCEL_FD: u32 = 1 << 1;
/// `IORING_ASYNC_CANCEL_ANY`: match every request.
pub const IORING_ASYNC_CANCEL_ANY: u32 = 1 << 2;
/// `IORING_ASYNC_CANCEL_FD_FIXED`: `fd` is a registered-file index.
pub const IORING_ASYNC_CANCEL_FD_FIXED: u32 = 1 << 3;
/// `IORING_RECVSEND_POLL_FIRST` (in `ioprio` of send/recv): wait for
/// readiness before the first attempt.
pub const IORING_RECVSEND_POLL_FIRST: u16 = 1 << 0;
/// `IORING_RECV_MULTISHOT` (in `ioprio` of `RECV`): one SQE, a CQE per
/// receive, each into a selected buffer.
pub const IORING_RECV_MULTISHOT: u16 = 1 << 1;
/// `IORING_RECVSEND_FIXED_BUF` (in `ioprio` of `SEND_ZC`): `buf_index`
/// names a registered buffer.
pub const IORING_RECVSEND_FIXED_BUF: u16 = 1 << 2;
/// `IORING_SEND_ZC_REPORT_USAGE` (in `ioprio` of `SEND_ZC`).
pub const IORING_SEND_ZC_REPORT_USAGE: u16 = 1 << 3;
/// `IORING_ACCEPT_MULTISHOT` (in `ioprio` of `ACCEPT`).
pub const IORING_ACCEPT_MULTISHOT: u16 = 1 << 0;

// ---- CQE flags (`cqe->flags`) ---------------------------------------------

/// `IORING_CQE_F_BUFFER`: the upper 16 bits name the selected buffer.
pub const IORING_CQE_F_BUFFER: u32 = 1 << 0;
/// `IORING_CQE_F_MORE`: a multishot request posts more CQEs.
pub const IORING_CQE_F_MORE: u32 = 1 << 1;
/// `IORING_CQE_F_SOCK_NONEMPTY`: more data waits in the socket.
pub const IORING_CQE_F_SOCK_NONEMPTY: u32 = 1 << 2;
/// `IORING_CQE_F_NOTIF`: a zero-copy send's notification CQE.
pub const IORING_CQE_F_NOTIF: u32 = 1 << 3;
/// `IORING_CQE_BUFFER_SHIFT`: where the buffer id sits in the flags.
pub const IORING_CQE_BUFFER_SHIFT: u32 = 16;

// ---- setup (`io_uring_params.flags`) --------------------------------------

/// `IORING_SETUP_IOPOLL`.
pub const IORING_SETUP_IOPOLL: u32 = 1 << 0;
/// `IORING_SETUP_SQPOLL`: a kernel thread polls the SQ.
pub const IORING_SETUP_SQPOLL: u32 = 1 << 1;
/// `IORING_SETUP_SQ_AFF`.
pub const IORING_SETUP_SQ_AFF: u32 = 1 << 2;
/// `IORING_SETUP_CQSIZE`: `cq_entries` is the CQ's size.
pub const IORING_SETUP_CQSIZE: u32 = 1 << 3;
/// `IORING_SETUP_CLAMP`.
pub const IORING_SETUP_CLAMP: u32 = 1 << 4;
/// `IORING_SETUP_SUBMIT_ALL`: keep submitting past a failed SQE (5.18).
pub const IORING_SETUP_SUBMIT_ALL: u32 = 1 << 7;
/// `IORING_SETUP_COOP_TASKRUN` (5.19).
pub const IORING_SETUP_COOP_TASKRUN: u32 = 1 << 8;
/// `IORING_SETUP_TASKRUN_FLAG` (5.19).
pub const IORING_SETUP_TASKRUN_FLAG: u32 = 1 << 9;
/// `IORING_SETUP_SQE128`.
pub const IORING_SETUP_SQE128: u32 = 1 << 10;
/// `IORING_SETUP_CQE32`.
pub const IORING_SETUP_CQE32: u32 = 1 << 11;
/// `IORING_SETUP_SINGLE_ISSUER` (6.0).
pub const IORING_SETUP_SINGLE_ISSUER: u32 = 1 << 12;
/// `IORING_SETUP_DEFER_TASKRUN` (6.1; needs `SINGLE_ISSUER`).
pub const IORING_SETUP_DEFER_TASKRUN: u32 = 1 << 13;
/// `IORING_SETUP_NO_SQARRAY` (6.6).
pub const IORING_SETUP_NO_SQARRAY: u32 = 1 << 16;

// ---- features (`io_uring_params.features`) --------------------------------

/// `IORING_FEAT_SINGLE_MMAP`: SQ and CQ rings share one mapping (5.4).
pub const IORING_FEAT_SINGLE_MMAP: u32 = 1 << 0;
/// `IORING_FEAT_NODROP`: CQEs are never dropped (5.5).
pub const IORING_FEAT_NODROP: u32 = 1 << 1;
/// `IORING_FEAT_SUBMIT_STABLE`.
pub const IORING_FEAT_SUBMIT_STABLE: u32 = 1 << 2;
/// `IORING_FEAT_FAST_POLL`.
pub const IORING_FEAT_FAST_POLL: u32 = 1 << 5;
/// `IORING_FEAT_EXT_ARG`: `io_uring_enter` takes an
/// [`GeteventsArg`] (5.11).
pub const IORING_FEAT_EXT_ARG: u32 = 1 << 8;
/// `IORING_FEAT_NATIVE_WORKERS`.
pub const IORING_FEAT_NATIVE_WORKERS: u32 = 1 << 9;
/// `IORING_FEAT_CQE_SKIP`: `IOSQE_CQE_SKIP_SUCCESS` works (5.17).
pub const IORING_FEAT_CQE_SKIP: u32 = 1 << 11;
/// `IORING_FEAT_REG_REG_RING`.
pub const IORING_FEAT_REG_REG_RING: u32 = 1 << 13;
/// `IORING_FEAT_RECVSEND_BUNDLE` (6.10).
pub const IORING_FEAT_RECVSEND_BUNDLE: u32 = 1 << 14;

// ---- io_uring_enter flags and SQ ring flags -------------------------------

/// `IORING_ENTER_GETEVENTS`: wait for `min_complete` CQEs.
pub const IORING_ENTER_GETEVENTS: u32 = 1 << 0;
/// `IORING_ENTER_SQ_WAKEUP`: wake the SQPOLL thread.
pub const IORING_ENTER_SQ_WAKEUP: u32 = 1 << 1;
/// `IORING_ENTER_SQ_WAIT`.
pub const IORING_ENTER_SQ_WAIT: u32 = 1 << 2;
/// `IORING_ENTER_EXT_ARG`: `arg` is a [`GeteventsArg`].
pub const IORING_ENTER_EXT_ARG: u32 = 1 << 3;
/// `IORING_SQ_NEED_WAKEUP` (SQ ring flags): the SQPOLL thread sleeps.
pub const IORING_SQ_NEED_WAKEUP: u32 = 1 << 0;
/// `IORING_SQ_CQ_OVERFLOW` (SQ ring flags): CQEs wait in the overflow list.
pub const IORING_SQ_CQ_OVERFLOW: u32 = 1 << 1;
/// `IORING_SQ_TASKRUN` (SQ ring flags): task work waits for an enter.
pub const IORING_SQ_TASKRUN: u32 = 1 << 2;

// ---- mmap offsets ---------------------------------------------------------

// Typed as the target's `off_t`: 32 bits on i686 and armv7 glibc (what
// libc's `mmap` binds there), so each must fit an `i32`; they do (the
// largest is 2^28, and one that did not would fail to compile:
// `overflowing_literals` denies it). `IORING_OFF_PBUF_RING` (2^31) is not
// offered: pinion's provided-buffer rings are its own memory.
/// `IORING_OFF_SQ_RING`: mmap offset of the SQ ring.
pub const IORING_OFF_SQ_RING: libc::off_t = 0;
/// `IORING_OFF_CQ_RING`: mmap offset of the CQ ring.
pub const IORING_OFF_CQ_RING: libc::off_t = 0x800_0000;
/// `IORING_OFF_SQES`: mmap offset of the SQE array.
pub const IORING_OFF_SQES: libc::off_t = 0x1000_0000;

// ---- io_uring_register opcodes --------------------------------------------

/// `IORING_REGISTER_BUFFERS`: `arg` is an `iovec` array.
pub const IORING_REGISTER_BUFFERS: u32 = 0;
/// `IORING_UNREGISTER_BUFFERS`.
pub const IORING_UNREGISTER_BUFFERS: u32 = 1;
/// `IORING_REGISTER_FILES`: `arg` is an `i32` array.
pub const IORING_REGISTER_FILES: u32 = 2;
/// `IORING_UNREGISTER_FILES`.
pub const IORING_UNREGISTER_FILES: u32 = 3;
/// `IORING_REGISTER_EVENTFD`.
pub const IORING_REGISTER_EVENTFD: u32 = 4;
/// `IORING_REGISTER_FILES_UPDATE`: `arg` is a [`FilesUpdate`].
pub const IORING_REGISTER_FILES_UPDATE: u32 = 6;
/// `IORING_REGISTER_PROBE`: `arg` is a [`Probe`](super::Probe).
pub const IORING_REGISTER_PROBE: u32 = 8;
/// `IORING_REGISTER_FILES2`: `arg` is an [`RsrcRegister`].
pub const IORING_REGISTER_FILES2: u32 = 13;
/// `IORING_REGISTER_BUFFERS2`: `arg` is an [`RsrcRegister`].
pub const IORING_REGISTER_BUFFERS2: u32 = 15;
/// `IORING_REGISTER_PBUF_RING`: `arg` is a [`BufReg`] (5.19).
pub const IORING_REGISTER_PBUF_RING: u32 = 22;
/// `IORING_UNREGISTER_PBUF_RING`: `arg` is a [`BufReg`].
pub const IORING_UNREGISTER_PBUF_RING: u32 = 23;
/// `IORING_RSRC_REGISTER_SPARSE` ([`RsrcRegister::flags`]): empty slots.
pub const IORING_RSRC_REGISTER_SPARSE: u32 = 1;

/// `IO_URING_OP_SUPPORTED` ([`ProbeOp::flags`]).
pub const IO_URING_OP_SUPPORTED: u16 = 1;

// ---- structs --------------------------------------------------------------

/// `struct io_uring_sqe`, 64 bytes. The kernel's unions appear as the
/// member the opcodes pinion uses read; the others are named in the
/// field docs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sqe {
    /// `IORING_OP_*`.
    pub opcode: u8,
    /// `IOSQE_*`.
    pub flags: u8,
    /// `ioprio`; for send/recv and accept, their `IORING_*` flags.
    pub ioprio: u16,
    /// The file: an fd, or a registered-file index with
    /// [`IOSQE_FIXED_FILE`].
    pub fd: i32,
    /// `off` / `addr2` (accept's `addrlen` pointer, connect's length).
    pub off: u64,
    /// `addr`: the buffer, `msghdr`, address, or a cancel's `user_data`.
    pub addr: u64,
    /// `len`: bytes, iovecs, or a poll's `IORING_POLL_*` flags.
    pub len: u32,
    /// The opcode's flags: `msg_flags`, `rw_flags`, `accept_flags`,
    /// `cancel_flags`, `poll32_events`...
    pub op_flags: u32,
    /// Handed back in the CQE.
    pub user_data: u64,
    /// `buf_index` (a registered buffer) or `buf_group` (buffer select).
    pub buf_index: u16,
    /// `personality`.
    pub personality: u16,
    /// `splice_fd_in` / `file_index` / `zcrx_ifq_idx`...
    pub splice_fd_in: i32,
    /// `addr3`.
    pub addr3: u64,
    /// `__pad2[0]`.
    pub pad: u64,
}

/// `struct io_uring_cqe` (without the `CQE32` extension).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cqe {
    /// The SQE's `user_data`.
    pub user_data: u64,
    /// The result: a count, or a negated errno.
    pub res: i32,
    /// `IORING_CQE_F_*`.
    pub flags: u32,
}

/// `struct io_sqring_offsets`: where each SQ ring field sits in its
/// mapping.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SqOffsets {
    /// The kernel's head.
    pub head: u32,
    /// Our tail.
    pub tail: u32,
    /// Entries minus one.
    pub ring_mask: u32,
    /// Entries.
    pub ring_entries: u32,
    /// `IORING_SQ_*`.
    pub flags: u32,
    /// SQEs the kernel dropped as invalid.
    pub dropped: u32,
    /// The index array (ring slot to SQE).
    pub array: u32,
    /// Reserved.
    pub resv1: u32,
    /// `IORING_SETUP_NO_MMAP` only.
    pub user_addr: u64,
}

/// `struct io_cqring_offsets`: where each CQ ring field sits.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CqOffsets {
    /// Our head.
    pub head: u32,
    /// The kernel's tail.
    pub tail: u32,
    /// Entries minus one.
    pub ring_mask: u32,
    /// Entries.
    pub ring_entries: u32,
    /// CQEs lost to overflow (never, with `IORING_FEAT_NODROP`).
    pub overflow: u32,
    /// The CQE array.
    pub cqes: u32,
    /// `IORING_CQ_*`.
    pub flags: u32,
    /// Reserved.
    pub resv1: u32,
    /// `IORING_SETUP_NO_MMAP` only.
    pub user_addr: u64,
}

/// `struct io_uring_params`: what `io_uring_setup` is asked for, and what
/// it answers (sizes, features, offsets).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Params {
    /// SQ entries (out).
    pub sq_entries: u32,
    /// CQ entries (in with [`IORING_SETUP_CQSIZE`], out).
    pub cq_entries: u32,
    /// `IORING_SETUP_*` (in).
    pub flags: u32,
    /// SQPOLL thread's CPU with `IORING_SETUP_SQ_AFF`.
    pub sq_thread_cpu: u32,
    /// SQPOLL thread's idle time in ms.
    pub sq_thread_idle: u32,
    /// `IORING_FEAT_*` (out).
    pub features: u32,
    /// `IORING_SETUP_ATTACH_WQ`'s ring.
    pub wq_fd: u32,
    /// Reserved.
    pub resv: [u32; 3],
    /// SQ ring offsets (out).
    pub sq_off: SqOffsets,
    /// CQ ring offsets (out).
    pub cq_off: CqOffsets,
}

/// `struct __kernel_timespec`: 64-bit seconds on every target.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelTimespec {
    /// Seconds.
    pub tv_sec: i64,
    /// Nanoseconds.
    pub tv_nsec: i64,
}

/// `struct io_uring_getevents_arg`: `io_uring_enter`'s argument with
/// [`IORING_ENTER_EXT_ARG`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GeteventsArg {
    /// A `sigset_t` pointer, or 0.
    pub sigmask: u64,
    /// Its size.
    pub sigmask_sz: u32,
    /// `min_wait_usec` (6.12; `pad` before).
    pub min_wait_usec: u32,
    /// A [`KernelTimespec`] pointer: the wait's relative time-out, or 0.
    pub ts: u64,
}

/// `struct io_uring_buf`: one entry of a provided buffer ring. In the
/// ring's first entry the last field is the ring's tail (`struct
/// io_uring_buf_ring`), so entries are written field by field, never
/// whole.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BufRingEntry {
    /// The buffer.
    pub addr: u64,
    /// Its length.
    pub len: u32,
    /// Its id, handed back in the CQE's flags.
    pub bid: u16,
    /// Reserved; the ring's tail in entry 0.
    pub resv: u16,
}

/// `struct io_uring_buf_reg`: [`IORING_REGISTER_PBUF_RING`]'s argument.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BufReg {
    /// The ring's memory (page-aligned).
    pub ring_addr: u64,
    /// Its entries (a power of two, at most 32768).
    pub ring_entries: u32,
    /// The buffer group id.
    pub bgid: u16,
    /// `IOU_PBUF_RING_*`.
    pub flags: u16,
    /// Reserved.
    pub resv: [u64; 3],
}

/// `struct io_uring_rsrc_register`: [`IORING_REGISTER_FILES2`] and
/// [`IORING_REGISTER_BUFFERS2`]'s argument.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RsrcRegister {
    /// Slots.
    pub nr: u32,
    /// [`IORING_RSRC_REGISTER_SPARSE`].
    pub flags: u32,
    /// Reserved.
    pub resv2: u64,
    /// The fds / iovecs (0 when sparse).
    pub data: u64,
    /// Their tags (0: none).
    pub tags: u64,
}

/// `struct io_uring_files_update`: [`IORING_REGISTER_FILES_UPDATE`]'s
/// argument.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FilesUpdate {
    /// The first slot updated.
    pub offset: u32,
    /// Reserved.
    pub resv: u32,
    /// An `i32` array: an fd per slot, `-1` to empty it.
    pub fds: u64,
}

/// `struct io_uring_probe_op`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProbeOp {
    /// The opcode.
    pub op: u8,
    /// Reserved.
    pub resv: u8,
    /// [`IO_URING_OP_SUPPORTED`].
    pub flags: u16,
    /// Reserved.
    pub resv2: u32,
}

/// `struct io_uring_probe` without its flexible `ops` array.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProbeHeader {
    /// The last opcode the kernel knows.
    pub last_op: u8,
    /// Entries of `ops` it filled.
    pub ops_len: u8,
    /// Reserved.
    pub resv: u16,
    /// Reserved.
    pub resv2: [u32; 3],
}

// The layouts, checked against the kernel's on every target the crate is
// built for (offsets from the UAPI header; `pahole` agrees).
macro_rules! layout {
    ($t:ty, $size:expr, $($field:ident @ $off:expr),* $(,)?) => {
        const _: () = assert!(size_of::<$t>() == $size);
        $(const _: () = assert!(offset_of!($t, $field) == $off);)*
    };
}
layout!(Sqe, 64, opcode @ 0, flags @ 1, ioprio @ 2, fd @ 4, off @ 8, addr @ 16,
    len @ 24, op_flags @ 28, user_data @ 32, buf_index @ 40, personality @ 42,
    splice_fd_in @ 44, addr3 @ 48, pad @ 56);
layout!(Cqe, 16, user_data @ 0, res @ 8, flags @ 12);
layout!(SqOffsets, 40, head @ 0, tail @ 4, ring_mask @ 8, ring_entries @ 12,
    flags @ 16, dropped @ 20, array @ 24, resv1 @ 28, user_addr @ 32);
layout!(CqOffsets, 40, head @ 0, tail @ 4, ring_mask @ 8, ring_entries @ 12,
    overflow @ 16, cqes @ 20, flags @ 24, resv1 @ 28, user_addr @ 32);
layout!(Params, 120, sq_entries @ 0, cq_entries @ 4, flags @ 8, sq_thread_cpu @ 12,
    sq_thread_idle @ 16, features @ 20, wq_fd @ 24, resv @ 28, sq_off @ 40, cq_off @ 80);
layout!(KernelTimespec, 16, tv_sec @ 0, tv_nsec @ 8);
layout!(GeteventsArg, 24, sigmask @ 0, sigmask_sz @ 8, min_wait_usec @ 12, ts @ 16);
layout!(BufRingEntry, 16, addr @ 0, len @ 8, bid @ 12, resv @ 14);
layout!(BufReg, 40, ring_addr @ 0, ring_entries @ 8, bgid @ 12, flags @ 14, resv @ 16);
layout!(RsrcRegister, 32, nr @ 0, flags @ 4, resv2 @ 8, data @ 16, tags @ 24);
layout!(FilesUpdate, 16, offset @ 0, resv @ 4, fds @ 8);
layout!(ProbeOp, 8, op @ 0, resv @ 1, flags @ 2, resv2 @ 4);
layout!(ProbeHeader, 16, last_op @ 0, ops_len @ 1, resv @ 2, resv2 @ 4);
