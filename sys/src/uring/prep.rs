//! Building SQEs: [`Target`] (how an SQE names its file) and one
//! constructor per request pinion makes, as liburing's `io_uring_prep_*`
//! fill them. Every field a constructor does not name is zero, so the
//! result of the `RECV`/`SEND` ones is lean ([`Sqe::is_lean`]).
//!
//! ```
//! use pinion_sys::uring::{abi, Sqe, Target};
//!
//! let mut buf = [0u8; 64];
//! let e = Sqe::recv(Target::Fixed(5), buf.as_mut_ptr(), 64).user_data(0x40);
//! assert_eq!((e.opcode, e.flags, e.fd), (abi::IORING_OP_RECV, abi::IOSQE_FIXED_FILE, 5));
//! assert!(e.is_lean());
//! ```

use super::abi::*;

/// How an SQE names a file: a descriptor, or an index into the ring's
/// registered files (`IOSQE_FIXED_FILE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// A file descriptor.
    Fd(i32),
    /// A registered-file index.
    Fixed(u32),
}

impl Target {
    /// The SQE's `fd` field and whether it is a registered-file index.
    #[inline(always)]
    pub fn raw(self) -> (i32, bool) {
        match self {
            Target::Fd(fd) => (fd, false),
            Target::Fixed(i) => (i as i32, true),
        }
    }
}

impl Sqe {
    /// An SQE for `opcode` on `target`, every other field zero.
    #[inline(always)]
    pub fn new(opcode: u8, target: Target) -> Sqe {
        let (fd, fixed) = target.raw();
        Sqe {
            opcode,
            flags: if fixed { IOSQE_FIXED_FILE } else { 0 },
            fd,
            ..Sqe::default()
        }
    }

    /// An SQE for `opcode` that names no file (`fd` -1).
    #[inline]
    fn fileless(opcode: u8) -> Sqe {
        Sqe {
            opcode,
            fd: -1,
            ..Sqe::default()
        }
    }

    /// Sets `user_data`.
    #[inline(always)]
    pub fn user_data(mut self, user_data: u64) -> Sqe {
        self.user_data = user_data;
        self
    }

    /// Adds `IOSQE_*` flags.
    #[inline]
    pub fn with_flags(mut self, flags: u8) -> Sqe {
        self.flags |= flags;
        self
    }

    /// `IORING_OP_NOP`.
    #[inline]
    pub fn nop() -> Sqe {
        Sqe::new(IORING_OP_NOP, Target::Fd(-1))
    }

    /// `IORING_OP_RECV` of up to `len` bytes into `buf`.
    #[inline(always)]
    pub fn recv(target: Target, buf: *mut u8, len: u32) -> Sqe {
        let mut e = Sqe::new(IORING_OP_RECV, target);
        e.addr = buf as usize as u64;
        e.len = len;
        e
    }

    /// `IORING_OP_RECV` into a buffer the kernel selects from group
    /// `bgid` (`IOSQE_BUFFER_SELECT`), at most `len` bytes.
    #[inline]
    pub fn recv_select(target: Target, bgid: u16, len: u32) -> Sqe {
        let mut e = Sqe::new(IORING_OP_RECV, target);
        e.flags |= IOSQE_BUFFER_SELECT;
        e.buf_index = bgid;
        e.len = len;
        e
    }

    /// `IORING_OP_SEND` of `len` bytes from `buf`, with `send(2)`'s
    /// `msg_flags`.
    #[inline(always)]
    pub fn send(target: Target, buf: *const u8, len: u32, msg_flags: u32) -> Sqe {
        let mut e = Sqe::new(IORING_OP_SEND, target);
        e.addr = buf as usize as u64;
        e.len = len;
        e.op_flags = msg_flags;
        e
    }

    /// `IORING_OP_SEND_ZC` (Linux 6.0) of `len` bytes from `buf`, with
    /// `send(2)`'s `msg_flags`: the kernel sends from `buf` itself instead
    /// of a copy. Two CQEs: the result, with `IORING_CQE_F_MORE` when a
    /// notification follows, then that notification
    /// (`IORING_CQE_F_NOTIF`) once the kernel no longer reads `buf`.
    #[inline]
    pub fn send_zc(target: Target, buf: *const u8, len: u32, msg_flags: u32) -> Sqe {
        let mut e = Sqe::new(IORING_OP_SEND_ZC, target);
        e.addr = buf as usize as u64;
        e.len = len;
        e.op_flags = msg_flags;
        e
    }

    /// `IORING_OP_READ` of up to `len` bytes into `buf` at `offset` (0
    /// for a stream; `u64::MAX` for the file position).
    #[inline]
    pub fn read(target: Target, buf: *mut u8, len: u32, offset: u64) -> Sqe {
        let mut e = Sqe::new(IORING_OP_READ, target);
        e.addr = buf as usize as u64;
        e.len = len;
        e.off = offset;
        e
    }

    /// `IORING_OP_CONNECT` to the `addrlen`-byte address at `addr`.
    #[inline]
    pub fn connect(target: Target, addr: *const libc::sockaddr, addrlen: libc::socklen_t) -> Sqe {
        let mut e = Sqe::new(IORING_OP_CONNECT, target);
        e.addr = addr as usize as u64;
        e.off = addrlen as u64;
        e
    }

    /// `IORING_OP_ACCEPT` (`accept4(2)` with `flags`), writing the peer's
    /// address to `addr` and its length to `addrlen`.
    #[inline]
    pub fn accept(
        target: Target, addr: *mut libc::sockaddr, addrlen: *mut libc::socklen_t, flags: i32,
    ) -> Sqe {
        let mut e = Sqe::new(IORING_OP_ACCEPT, target);
        e.addr = addr as usize as u64;
        e.off = addrlen as usize as u64;
        e.op_flags = flags as u32;
        e
    }

    /// A multishot `IORING_OP_ACCEPT` (a CQE per connection, no address).
    #[inline]
    pub fn accept_multishot(target: Target, flags: i32) -> Sqe {
        let mut e = Sqe::new(IORING_OP_ACCEPT, target);
        e.ioprio = IORING_ACCEPT_MULTISHOT;
        e.op_flags = flags as u32;
        e
    }

    /// `IORING_OP_POLL_ADD` for the `poll(2)` events `events` (one shot).
    #[inline]
    pub fn poll_add(target: Target, events: u32) -> Sqe {
        let mut e = Sqe::new(IORING_OP_POLL_ADD, target);
        // The kernel reads `poll32_events` with its 16-bit halves swapped
        // on big-endian CPUs (`swahw32`), for the layout of the older
        // 16-bit `poll_events` field.
        e.op_flags = if cfg!(target_endian = "big") {
            events.rotate_left(16)
        } else {
            events
        };
        e
    }

    /// `IORING_OP_SENDMSG` of `msg` with `msg_flags`.
    #[inline]
    pub fn sendmsg(target: Target, msg: *const libc::msghdr, msg_flags: u32) -> Sqe {
        let mut e = Sqe::new(IORING_OP_SENDMSG, target);
        e.addr = msg as usize as u64;
        e.len = 1;
        e.op_flags = msg_flags;
        e
    }

    /// `IORING_OP_RECVMSG` into `msg` with `msg_flags`.
    #[inline]
    pub fn recvmsg(target: Target, msg: *mut libc::msghdr, msg_flags: u32) -> Sqe {
        let mut e = Sqe::new(IORING_OP_RECVMSG, target);
        e.addr = msg as usize as u64;
        e.len = 1;
        e.op_flags = msg_flags;
        e
    }

    /// `IORING_OP_ASYNC_CANCEL` of the first request whose `user_data` is
    /// `target`.
    #[inline]
    pub fn cancel_user_data(target: u64) -> Sqe {
        let mut e = Sqe::fileless(IORING_OP_ASYNC_CANCEL);
        e.addr = target;
        e
    }

    /// `IORING_OP_ASYNC_CANCEL` of every request on the file `target`
    /// names (`IORING_ASYNC_CANCEL_FD | _ALL`, with `_FD_FIXED` for a
    /// registered file: the kernel matches requests by file, however they
    /// named it). Linux 5.19.
    #[inline]
    pub fn cancel_fd_all(target: Target) -> Sqe {
        let (fd, fixed) = target.raw();
        let mut e = Sqe::fileless(IORING_OP_ASYNC_CANCEL);
        e.fd = fd;
        e.op_flags = IORING_ASYNC_CANCEL_FD | IORING_ASYNC_CANCEL_ALL;
        if fixed {
            e.op_flags |= IORING_ASYNC_CANCEL_FD_FIXED;
        }
        e
    }

    /// `IORING_OP_ASYNC_CANCEL` of every request in the ring
    /// (`IORING_ASYNC_CANCEL_ANY`). Linux 5.19.
    #[inline]
    pub fn cancel_any() -> Sqe {
        let mut e = Sqe::fileless(IORING_OP_ASYNC_CANCEL);
        e.op_flags = IORING_ASYNC_CANCEL_ANY;
        e
    }
}

/// The id of the buffer a CQE's request used (`IORING_CQE_F_BUFFER`), if
/// it used one.
#[inline]
pub fn cqe_buffer(flags: u32) -> Option<u16> {
    (flags & IORING_CQE_F_BUFFER != 0).then_some((flags >> IORING_CQE_BUFFER_SHIFT) as u16)
}

/// `true` if a zero-copy send's CQE is its notification
/// (`IORING_CQE_F_NOTIF`): the kernel no longer reads the buffer.
#[inline]
pub fn cqe_notif(flags: u32) -> bool {
    flags & IORING_CQE_F_NOTIF != 0
}

/// `true` if a multishot request posts more CQEs after this one
/// (`IORING_CQE_F_MORE`).
#[inline]
pub fn cqe_more(flags: u32) -> bool {
    flags & IORING_CQE_F_MORE != 0
}
