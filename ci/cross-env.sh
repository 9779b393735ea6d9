# shellcheck shell=bash
# Cross-testing environment for the appliance CPUs. Source it:
#
#     source ci/cross-env.sh
#     cross_install                      # once per machine, as root
#     cross_test armv7-unknown-linux-gnueabihf -p pinion-sync
#
# It only exports variables and defines functions; sourcing it changes
# nothing on the machine. See ci/README.md.

# The targets users ship on, as rustc names them.
CROSS_TARGETS=(
    i686-unknown-linux-gnu
    armv7-unknown-linux-gnueabihf
    aarch64-unknown-linux-gnu
    riscv64gc-unknown-linux-gnu
    armv5te-unknown-linux-gnueabi
)

# Each target's Debian name: the prefix of its cross tools and of its root
# under /usr (the -L of qemu), and the arch suffix of its -cross packages.
declare -gA CROSS_PREFIX=(
    [i686-unknown-linux-gnu]=i686-linux-gnu
    [armv7-unknown-linux-gnueabihf]=arm-linux-gnueabihf
    [aarch64-unknown-linux-gnu]=aarch64-linux-gnu
    [riscv64gc-unknown-linux-gnu]=riscv64-linux-gnu
    [armv5te-unknown-linux-gnueabi]=arm-linux-gnueabi
)
declare -gA CROSS_DEB_ARCH=(
    [i686-unknown-linux-gnu]=i386
    [armv7-unknown-linux-gnueabihf]=armhf
    [aarch64-unknown-linux-gnu]=arm64
    [riscv64gc-unknown-linux-gnu]=riscv64
    [armv5te-unknown-linux-gnueabi]=armel
)

# The linker is clang, called as <prefix>-clang so that it targets <prefix>
# (clang reads its target from its name; rustc passes it no --target), over
# Debian's cross glibc, libgcc and binutils. Not Debian's gcc-<prefix>
# cross compilers: each of them conflicts with gcc-multilib, which other
# jobs on the same machine install, and apt removes whichever came first.
CROSS_LINKER_DIR=/usr/local/bin

export CARGO_TARGET_I686_UNKNOWN_LINUX_GNU_LINKER=i686-linux-gnu-clang
export CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_LINKER=arm-linux-gnueabihf-clang
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-clang
export CARGO_TARGET_RISCV64GC_UNKNOWN_LINUX_GNU_LINKER=riscv64-linux-gnu-clang
export CARGO_TARGET_ARMV5TE_UNKNOWN_LINUX_GNUEABI_LINKER=arm-linux-gnueabi-clang

# No RUSTFLAGS: the io_uring backend builds on every target as it is
# (pinion_sys::uring is pinion's own ABI layer, with libc's per-target
# system call numbers), so the epoll and uring builds share artifacts.

# Runners. i686 runs natively on an x86-64 kernel (libc6-i386 brings the
# loader and glibc, lib32gcc-s1 libgcc_s). The others run under qemu-user
# with the cross glibc as their root (-L). armv5te is pinned to an
# ARM926EJ-S (ARMv5TEJ), so an ARMv6+ instruction in the code under test
# (TPIDRURO, ldrex/strex) faults instead of passing; armv7 to a Cortex-A7,
# so no ARMv8-only one slips through.
export CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_RUNNER="qemu-arm -cpu cortex-a7 -L /usr/arm-linux-gnueabihf"
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"
export CARGO_TARGET_RISCV64GC_UNKNOWN_LINUX_GNU_RUNNER="qemu-riscv64 -L /usr/riscv64-linux-gnu"
export CARGO_TARGET_ARMV5TE_UNKNOWN_LINUX_GNUEABI_RUNNER="qemu-arm -cpu arm926 -L /usr/arm-linux-gnueabi"

# The Debian packages: qemu-user, clang, and per target its binutils (the
# linker clang drives), glibc and libgcc (crt files, libgcc_s) built for it.
cross_deb_packages() {
    local gcc_major t a
    # libgcc-N-dev-*-cross follows the distribution's gcc (12 on bookworm).
    gcc_major=$(gcc -dumpversion 2>/dev/null | cut -d. -f1)
    echo qemu-user clang libc6-i386 lib32gcc-s1
    for t in "${CROSS_TARGETS[@]}"; do
        a=${CROSS_DEB_ARCH[$t]}
        echo "binutils-${CROSS_PREFIX[$t]} libc6-dev-$a-cross libgcc-${gcc_major:-12}-dev-$a-cross"
    done
}

# Whether the default toolchain has a prebuilt standard library for $1.
cross_has_std() {
    rustup target list --installed 2>/dev/null | grep -qx "$1"
}

# Installs the Debian packages, the <prefix>-clang links and the rustup
# targets; safe to run again.
# A target whose prebuilt std cannot be had (seen for armv5te: the download
# answers 404) is built from source instead: nightly plus rust-src, used by
# cross_test through -Zbuild-std.
cross_install() {
    local missing=() pkg target clang
    command -v gcc >/dev/null || missing+=(gcc)
    for pkg in $(cross_deb_packages); do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" ||
            missing+=("$pkg")
    done
    if ((${#missing[@]})); then
        apt-get update
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
        # gcc may have come only now: the libgcc names depend on it.
        missing=()
        for pkg in $(cross_deb_packages); do
            dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" ||
                missing+=("$pkg")
        done
        ((${#missing[@]} == 0)) ||
            DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
    fi
    clang=$(command -v clang)
    for target in "${CROSS_TARGETS[@]}"; do
        ln -sf "$clang" "$CROSS_LINKER_DIR/${CROSS_PREFIX[$target]}-clang"
    done
    for target in "${CROSS_TARGETS[@]}"; do
        cross_has_std "$target" && continue
        if ! RUST_BACKTRACE=0 rustup target add "$target"; then
            echo "cross_install: no prebuilt std for $target; it will use nightly -Zbuild-std" >&2
            rustup toolchain list | grep -q '^nightly' ||
                rustup toolchain install nightly --profile minimal
            rustup component add rust-src --toolchain nightly
        fi
    done
}

# cross_test TARGET [cargo test arguments...]: runs `cargo test` for TARGET,
# from source-built std (nightly -Zbuild-std) when no prebuilt one exists.
# A test that re-runs its own binary finds the emulator in
# PINION_TEST_RUNNER (empty for i686, which runs natively).
cross_test() {
    local target=$1 runner_var
    shift
    runner_var=CARGO_TARGET_$(echo "$target" | tr 'a-z-' 'A-Z_')_RUNNER
    export PINION_TEST_RUNNER="${!runner_var:-}"
    if cross_has_std "$target"; then
        cargo test --target "$target" "$@"
    else
        cargo +nightly test -Zbuild-std --target "$target" "$@"
    fi
}
