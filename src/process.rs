//! What a `#![no_std]` `#![no_main]` program on Linux needs from its
//! process, on libc alone and with no `unsafe` in the program: an entry
//! point ([`no_std_main!`](crate::no_std_main)) that hands over the command
//! line as [`Args`], standard error ([`Stderr`]), and the ways out
//! ([`exit`], [`abort`], and [`abort_on_panic`] for the
//! `#[panic_handler]` such a program must have).
//!
//! With std, `std::env::args`, `eprintln!` and `std::process` do the same;
//! this module exists for programs that leave std out to stay small
//! (`examples/nostd-echo`). The C runtime still starts the process
//! (glibc's or musl's `_start` calls `main`), so nothing here replaces
//! libc.
//!
//! ```
//! #![no_std]
//! #![no_main]
//! # extern crate std; // a doctest links std; a real no_std binary does not
//! use core::fmt::Write;
//! use pinion::process::{Args, Stderr};
//!
//! pinion::no_std_main!(start);
//!
//! fn start(args: Args) -> i32 {
//!     let name = args.get(1).and_then(|a| a.to_str().ok()).unwrap_or("world");
//!     let _ = writeln!(Stderr, "hello, {name}");
//!     0
//! }
//!
//! // A real no_std binary also needs this (std brings its own):
//! // #[panic_handler]
//! // fn panic(info: &core::panic::PanicInfo) -> ! {
//! //     pinion::process::abort_on_panic(info)
//! // }
//! ```

use core::ffi::{c_char, c_int, CStr};
use core::fmt;

/// The program's command line, as C's `main` received it: `argv[0]` (the
/// program's name as invoked) first. Each argument is a `&'static CStr`
/// (the kernel copies the arguments onto the stack before `main`, and they
/// stay there, unchanged, until the process exits).
#[derive(Clone, Copy)]
pub struct Args {
    argv: &'static [*const c_char],
}

impl Args {
    /// The arguments C's `main` was called with.
    ///
    /// # Safety
    ///
    /// `argv` points at `argc` pointers (`argc >= 0`), each to a
    /// NUL-terminated string, and neither the array nor the strings change
    /// or go away for the rest of the process. The C runtime's call of
    /// `main` guarantees this, which is what
    /// [`no_std_main!`](crate::no_std_main) relies on; no other caller
    /// should need this function.
    ///
    /// ```
    /// use core::ffi::{c_char, CStr};
    ///
    /// static NAME: &CStr = c"prog";
    /// static PORT: &CStr = c"7000";
    /// // Leaked: argv must outlive everything, as a process's does.
    /// let argv: &'static [*const c_char] =
    ///     Box::leak(Box::new([NAME.as_ptr(), PORT.as_ptr()]));
    /// // SAFETY: two pointers to 'static NUL-terminated strings, never changed.
    /// let args = unsafe { pinion::process::Args::from_main(2, argv.as_ptr()) };
    /// assert_eq!(args.len(), 2);
    /// assert_eq!(args.get(1), Some(c"7000"));
    /// assert_eq!(args.iter().map(|a| a.to_bytes().len()).sum::<usize>(), 8);
    /// ```
    pub unsafe fn from_main(argc: c_int, argv: *const *const c_char) -> Args {
        let argv = if argc <= 0 || argv.is_null() {
            &[][..]
        } else {
            // SAFETY: the caller promises `argc` valid pointers at `argv`,
            // alive and unchanged for the rest of the process.
            unsafe { core::slice::from_raw_parts(argv, argc as usize) }
        };
        Args { argv }
    }

    /// How many there are, the program's name included.
    pub fn len(&self) -> usize {
        self.argv.len()
    }

    /// `true` when even the program's name is missing (a process started
    /// with an empty `argv`, which Linux allows).
    pub fn is_empty(&self) -> bool {
        self.argv.is_empty()
    }

    /// Argument `i` (0: the program's name).
    pub fn get(&self, i: usize) -> Option<&'static CStr> {
        let p = *self.argv.get(i)?;
        if p.is_null() {
            return None;
        }
        // SAFETY: `from_main`'s contract: a NUL-terminated string that
        // lives, unchanged, as long as the process.
        Some(unsafe { CStr::from_ptr(p) })
    }

    /// Every argument, in order.
    pub fn iter(&self) -> impl Iterator<Item = &'static CStr> + '_ {
        (0..self.len()).filter_map(|i| self.get(i))
    }
}

impl fmt::Debug for Args {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Defines C's `main` for a `#![no_main]` program: the C runtime calls
/// it, it calls `$start(`[`Args`]`) -> i32`, and the number it returns is
/// the exit status.
///
/// The `main` it defines cannot be named from Rust (it sits in an
/// anonymous `const`), so only the C runtime can call it, with the
/// `argc`/`argv` that [`Args::from_main`] needs: the program itself
/// needs no `unsafe`. One per program; a program with std has its own
/// `main` and does not use this. See the [module docs](crate::process)
/// for a whole program.
#[macro_export]
macro_rules! no_std_main {
    ($start:path) => {
        const _: () = {
            #[unsafe(no_mangle)]
            extern "C" fn main(
                argc: ::core::ffi::c_int, argv: *const *const ::core::ffi::c_char,
            ) -> ::core::ffi::c_int {
                // SAFETY: this function has no Rust name, so only the C
                // runtime's start-up code calls it, with the process's own
                // argc and argv (C11 5.1.2.2.1), which live, unchanged, until
                // the process exits.
                let args = unsafe { $crate::process::Args::from_main(argc, argv) };
                let start: fn($crate::process::Args) -> i32 = $start;
                start(args)
            }
        };
    };
}

/// Standard error (descriptor 2), unbuffered: each `write_str` is one or
/// more `write(2)` calls. Errors are dropped after the first (a closed
/// stderr must not stop a server), so `write!` on it always succeeds.
///
/// ```
/// use core::fmt::Write;
/// let _ = writeln!(pinion::process::Stderr, "listening on {}", 7000);
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct Stderr;

impl fmt::Write for Stderr {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut rest = s.as_bytes();
        while !rest.is_empty() {
            match pinion_sys::fd::write(2, rest) {
                Ok(0) | Err(_) => break,
                Ok(n) => rest = &rest[n..],
            }
        }
        Ok(())
    }
}

/// Ends the process with `code` (C's `exit`: `atexit` handlers run, stdio
/// is flushed).
pub fn exit(code: i32) -> ! {
    // SAFETY: exit takes any status and does not return; nothing of ours
    // relies on destructors running (as with std::process::exit).
    unsafe { libc::exit(code) }
}

/// Ends the process at once with `SIGABRT` (C's `abort`): no handler, no
/// flush.
pub fn abort() -> ! {
    // SAFETY: abort takes nothing and does not return.
    unsafe { libc::abort() }
}

/// What a no_std program's `#[panic_handler]` calls: writes
/// `panicked at FILE:LINE:COL: MESSAGE` to standard error and aborts
/// (`panic = "abort"` is what a no_std binary builds with). Not
/// doctested: a doctest links std, which has its own panic handler.
///
/// ```text
/// #[panic_handler]
/// fn panic(info: &core::panic::PanicInfo) -> ! {
///     pinion::process::abort_on_panic(info)
/// }
/// ```
pub fn abort_on_panic(info: &core::panic::PanicInfo<'_>) -> ! {
    use fmt::Write;
    let mut err = Stderr;
    let _ = err.write_str("panicked");
    if let Some(l) = info.location() {
        // The file by write_str: as a `{}` argument it would link
        // `Formatter::pad`, a kilobyte of text.
        let _ = err.write_str(" at ");
        let _ = err.write_str(l.file());
        let _ = write!(err, ":{}:{}", l.line(), l.column());
    }
    let _ = writeln!(err, ": {}", info.message());
    abort()
}
