//! Starting an example as a child process from a test: where cargo put
//! it, and the emulator it needs on a cross target.
#![allow(dead_code)] // each example test uses a different subset

use std::path::{Path, PathBuf};
use std::process::Command;

pub mod server;

/// `target/<triple>/<profile>/examples/<name>`, next to this test binary's
/// `deps/`. Panics with the command that builds it when it is missing
/// (`cargo test` builds the examples; a `--test` filter does not).
pub fn path(name: &str, features: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let p = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("examples")
        .join(name);
    assert!(
        p.is_file(),
        "{} is missing: build the examples first: `cargo test` builds them \
         (or `cargo build --example {name} --features {features}`)",
        p.display()
    );
    p
}

/// A command that runs the example `name`, under `wrapper` (e.g.
/// `["prlimit", "--nofile=64:64"]`) when given. On a cross target the
/// example is a foreign binary: it runs under the emulator that
/// `ci/cross-env.sh` names in `PINION_TEST_RUNNER` (qemu with the target's
/// root), as cargo runs this test binary.
pub fn command(name: &str, features: &str, wrapper: &[&str]) -> Command {
    let runner = std::env::var("PINION_TEST_RUNNER").unwrap_or_default();
    let mut argv: Vec<String> = wrapper.iter().map(|s| s.to_string()).collect();
    argv.extend(runner.split_whitespace().map(str::to_string));
    argv.push(path(name, features).display().to_string());
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]);
    cmd
}

/// The backends the examples were built with (this test's features).
pub fn backends() -> Vec<&'static str> {
    let mut b = Vec::new();
    if cfg!(feature = "epoll") {
        b.push("epoll");
    }
    if cfg!(feature = "uring") {
        b.push("uring");
    }
    b
}
