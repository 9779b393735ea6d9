//! The [`syscall!`](crate::syscall!) and
//! [`syscall_retry!`](crate::syscall_retry!) macros and
//! [`retry_eintr`]: the one place where `-1` becomes an [`Errno`].

use crate::Errno;

/// Calls `libc::$fn(args...)` in an `unsafe` block and turns `-1` into
/// `Err(Errno::last())`: the result is `Result<R, Errno>` where `R` is the
/// function's return type (`c_int`, `ssize_t`...). Like mio's `syscall!`.
///
/// The caller writes a `// SAFETY:` comment right above the macro saying
/// why the arguments are valid for that call: the macro's own `unsafe`
/// block stands for the call only. The arguments are evaluated before it,
/// outside `unsafe` (an argument that needs `unsafe` says so itself), and
/// their temporaries live until the call has returned. At most six
/// arguments, as for any Linux system call.
///
/// ```
/// use pinion_sys::{syscall, Errno};
///
/// // SAFETY: getpid takes nothing and cannot fail.
/// let pid = syscall!(getpid()).unwrap();
/// assert!(pid > 0);
/// // SAFETY: F_GETFD on any number touches no memory.
/// assert_eq!(syscall!(fcntl(-1, libc::F_GETFD)), Err(Errno::BADF));
/// ```
///
/// Calls that may fail with `EINTR` and are safe to repeat want
/// [`syscall_retry!`](crate::syscall_retry!).
#[cfg(target_os = "linux")]
#[macro_export]
macro_rules! syscall {
    ($fn:ident ( $($arg:expr),* $(,)? )) => {
        $crate::__syscall!(@bind $fn [] [__a0 __a1 __a2 __a3 __a4 __a5] $($arg,)*)
    };
}

/// [`syscall!`](crate::syscall!) repeated while it fails with `EINTR`
/// (see [`retry_eintr`]); the same `// SAFETY:` rule. Not for calls whose
/// `EINTR` does not mean "nothing happened": `connect` and `close`.
///
/// ```
/// use pinion_sys::syscall_retry;
///
/// let mut fds = [0i32; 2];
/// // SAFETY: `fds` is room for the two descriptors pipe2 writes.
/// syscall_retry!(pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC)).unwrap();
/// let byte = 7u8;
/// // SAFETY: `byte` is one readable byte.
/// let n = syscall_retry!(write(fds[1], &byte as *const u8 as *const libc::c_void, 1));
/// assert_eq!(n, Ok(1));
/// # for fd in fds { unsafe { libc::close(fd) }; }
/// ```
#[cfg(target_os = "linux")]
#[macro_export]
macro_rules! syscall_retry {
    ($fn:ident ( $($arg:expr),* $(,)? )) => {
        $crate::retry_eintr(|| $crate::syscall!($fn($($arg),*)))
    };
}

/// The body of [`syscall!`](crate::syscall!): pairs each argument with a
/// name from the pool, then binds them all in one `match` so that the
/// arguments are evaluated outside `unsafe` while their temporaries still
/// outlive the call (a `let` per argument would drop them early).
#[cfg(target_os = "linux")]
#[doc(hidden)]
#[macro_export]
macro_rules! __syscall {
    (@bind $fn:ident [$($name:ident = $val:expr,)*] [$next:ident $($spare:ident)*]
        $arg:expr, $($rest:expr,)*) => {
        $crate::__syscall!(@bind $fn [$($name = $val,)* $next = $arg,] [$($spare)*] $($rest,)*)
    };
    (@bind $fn:ident [$($name:ident = $val:expr,)*] [$($spare:ident)*]) => {
        match ($($val,)*) {
            ($($name,)*) => {
                // SAFETY: the call site's `// SAFETY:` comment says why
                // these arguments are valid for this system call.
                let res = unsafe { $crate::__libc::$fn($($name),*) };
                if res == -1 {
                    Err($crate::Errno::last())
                } else {
                    Ok(res)
                }
            }
        }
    };
}

/// Calls `f` until it returns anything but `Err(Errno::INTR)`.
///
/// A signal that interrupts a blocking call before it did anything makes
/// it fail with `EINTR`; repeating it is then the same as not having been
/// interrupted.
///
/// ```
/// use pinion_sys::{retry_eintr, Errno};
///
/// let mut tries = 0;
/// let r = retry_eintr(|| {
///     tries += 1;
///     if tries < 3 { Err(Errno::INTR) } else { Ok(tries) }
/// });
/// assert_eq!(r, Ok(3));
/// ```
#[cfg(target_os = "linux")]
#[inline]
pub fn retry_eintr<T>(mut f: impl FnMut() -> Result<T, Errno>) -> Result<T, Errno> {
    loop {
        match f() {
            Err(Errno::INTR) => continue,
            r => return r,
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use crate::Errno;

    #[test]
    fn retry_eintr_stops_at_success_and_other_errors() {
        let mut n = 0;
        assert_eq!(
            super::retry_eintr(|| {
                n += 1;
                if n < 4 {
                    Err(Errno::INTR)
                } else {
                    Ok(n)
                }
            }),
            Ok(4)
        );
        let mut calls = 0;
        let r: Result<(), Errno> = super::retry_eintr(|| {
            calls += 1;
            Err(Errno::AGAIN)
        });
        assert_eq!((r, calls), (Err(Errno::AGAIN), 1));
    }

    #[test]
    #[cfg_attr(miri, ignore)] // system calls
    fn syscall_success_and_error_paths() {
        // SAFETY: getpid takes nothing.
        let pid = syscall!(getpid()).unwrap();
        assert!(pid > 0);
        // SAFETY: F_GETFD on an invalid number touches no memory.
        assert_eq!(syscall!(fcntl(-1, libc::F_GETFD)), Err(Errno::BADF));
        assert_eq!(Errno::last(), Errno::BADF);
        // ssize_t results come back as they are.
        let byte = 0u8;
        // SAFETY: `byte` is one readable byte; the descriptor is invalid.
        let r: Result<isize, Errno> =
            syscall!(write(-1, &byte as *const u8 as *const libc::c_void, 1));
        assert_eq!(r, Err(Errno::BADF));
    }

    /// One byte that overwrites itself when dropped.
    struct Scrub(u8);

    impl Scrub {
        fn ptr(&self) -> *const libc::c_void {
            &self.0 as *const u8 as *const libc::c_void
        }
    }

    impl Drop for Scrub {
        fn drop(&mut self) {
            self.0 = 0xFF;
            std::hint::black_box(&self.0);
        }
    }

    #[test]
    #[cfg_attr(miri, ignore)] // system calls
    fn syscall_keeps_argument_temporaries_alive_across_the_call() {
        let mut fds = [0i32; 2];
        // SAFETY: `fds` is room for the two descriptors pipe2 writes.
        syscall!(pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC)).unwrap();
        // `Scrub(7)` is a temporary of the argument expression; dropped
        // before the call, write would send its scrubbed 0xFF.
        // SAFETY: the pointer is to one readable byte that outlives the call.
        let n = syscall_retry!(write(fds[1], Scrub(7).ptr(), 1,));
        assert_eq!(n, Ok(1));
        // SAFETY: as above; a second call for plain `syscall!`.
        let n = syscall!(write(fds[1], Scrub(8).ptr(), 1));
        assert_eq!(n, Ok(1));
        let mut got = [0u8; 2];
        // SAFETY: `got` is 2 writable bytes.
        let n = syscall_retry!(read(fds[0], got.as_mut_ptr().cast(), 2));
        assert_eq!((n, got), (Ok(2), [7, 8]));
        for fd in fds {
            // SAFETY: both descriptors are ours and unused from here on.
            syscall!(close(fd)).unwrap();
        }
    }
}
