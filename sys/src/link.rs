//! The native libraries a `#![no_std]` program needs and nothing else
//! links: named here, so that such a program builds with a plain
//! `cargo build` and no stubs of its own.
//!
//! **musl**: the `libc` crate names libc itself only when std is built
//! with it (its `rustc-dep-of-std` feature), so without std nothing links
//! it; here it is, statically in a static build (Rust's musl targets bring
//! their own `libc.a`).
//!
//! **32-bit ARM, glibc**: Rust's prebuilt `core` and `compiler_builtins` for these targets are
//! compiled with `panic=unwind`, and the targets emit unwind tables for
//! every function. So the program's code refers to the ARM EHABI
//! personality routines `__aeabi_unwind_cpp_pr0`/`pr1`, and
//! `compiler_builtins`' 64-bit division (`__aeabi_uldivmod`, used for any
//! `u64` division, `Duration` arithmetic and number formatting among them)
//! to `rust_eh_personality`, which only std defines. With std, its
//! `unwind` crate links `libgcc_s`, and std defines the personality
//! routine; without std, nothing does and the link fails.
//!
//! - `libgcc_s` (shared; `libgcc_eh` in a static build) has the EHABI
//!   routines, at no cost in text: with `panic = "abort"` nothing unwinds
//!   and they are never called. Every glibc system ships it (glibc's own
//!   thread cancellation loads it).
//! - `libgcc` (static), which rustc puts on the link line before
//!   `compiler_builtins`, supplies `__aeabi_uldivmod` and its kin, so the
//!   `compiler_builtins` versions, whose unwind entries name
//!   `rust_eh_personality`, are not linked at all.

#[cfg(all(target_arch = "arm", target_env = "gnu"))]
#[link(name = "gcc", kind = "static", modifiers = "-bundle")]
#[cfg_attr(not(target_feature = "crt-static"), link(name = "gcc_s"))]
#[cfg_attr(
    target_feature = "crt-static",
    link(name = "gcc_eh", kind = "static", modifiers = "-bundle")
)]
extern "C" {}

#[cfg(target_env = "musl")]
#[cfg_attr(
    target_feature = "crt-static",
    link(name = "c", kind = "static", modifiers = "-bundle")
)]
#[cfg_attr(not(target_feature = "crt-static"), link(name = "c"))]
extern "C" {}
