//! Tells `thread.rs` whether an ARM Linux target can read TPIDRURO.
//!
//! The register exists from ARMv6K on; older cores (armv4t, armv5te, and
//! the ARMv6 baseline of `arm-unknown-linux-*`) fault on the read. Stable
//! rustc keeps ARM's architecture features (`v6k`, `v7`) out of `cfg`, so
//! this script looks at them where cargo passes them (nightly, or once
//! stable) and otherwise at the target name's architecture.

use std::env;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(pinion_arm_tpidruro)");
    println!("cargo::rerun-if-changed=build.rs");

    let var = |name: &str| env::var(name).unwrap_or_default();
    if var("CARGO_CFG_TARGET_ARCH") != "arm" || var("CARGO_CFG_TARGET_OS") != "linux" {
        return;
    }
    let features = var("CARGO_CFG_TARGET_FEATURE");
    let by_feature = features
        .split(',')
        .any(|f| matches!(f, "v6k" | "v7" | "v8"));
    let target = var("TARGET");
    let arch = target.split('-').next().unwrap_or("");
    let by_name = ["armv7", "thumbv7", "armv8", "thumbv8"]
        .iter()
        .any(|p| arch.starts_with(p));
    if by_feature || by_name {
        println!("cargo::rustc-cfg=pinion_arm_tpidruro");
    }
}
