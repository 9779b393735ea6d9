//! `examples/nostd-echo` (the `#![no_std]` `#![no_main]` echo server, its
//! own crate) as a process, against std clients: the behaviours the
//! callback `echo_server` promises (half-close, slow readers, resets,
//! churn, EMFILE logged and survived, SIGTERM).
//!
//! The binary: `$PINION_NOSTD_ECHO` if set (a cross build, run under
//! `$PINION_TEST_RUNNER`), otherwise this test builds it once with
//! `cargo build --release` in its folder. Its features are its own, so
//! this runs in one of the feature sets `./test.sh` tests: epoll without
//! uring.
#![cfg(all(feature = "epoll", not(feature = "uring")))]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

mod example_proc;

use example_proc::server::{self, Server};

/// The server binary, built at most once per test run; `None` (said
/// loudly by the caller) on an emulated target without
/// `$PINION_NOSTD_ECHO`: cargo builds for the host, which the emulator
/// cannot run.
fn binary() -> Option<&'static Path> {
    static BIN: OnceLock<Option<PathBuf>> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("PINION_NOSTD_ECHO").filter(|p| !p.is_empty()) {
            return Some(PathBuf::from(p));
        }
        if !runner().is_empty() {
            return None;
        }
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/nostd-echo");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        // Its own workspace and target dir; the host target even when this
        // test was built for another one (i686 runs here natively).
        let status = Command::new(cargo)
            .args(["build", "--release", "--quiet"])
            .current_dir(&dir)
            .env_remove("CARGO_BUILD_TARGET")
            .env_remove("CARGO_TARGET_DIR")
            .status()
            .expect("run cargo to build examples/nostd-echo");
        assert!(status.success(), "building examples/nostd-echo failed");
        Some(dir.join("target/release/nostd-echo"))
    })
    .as_deref()
}

/// The emulator a cross target's binaries run under (`ci/cross-env.sh`).
fn runner() -> String {
    std::env::var("PINION_TEST_RUNNER").unwrap_or_default()
}

/// Starts the server on a free port (under `prlimit` when `nofile` is
/// given) and waits for its "listening on" line; `None`, said loudly,
/// when there is no binary for this target.
fn start(test: &str, nofile: Option<u32>) -> Option<Server> {
    let Some(bin) = binary() else {
        // Past the harness's capture, so that the skip shows.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED {test}: nostd-echo is built for the host; on an emulated \
             target set PINION_NOSTD_ECHO to a build for it"
        );
        return None;
    };
    let mut argv: Vec<String> = Vec::new();
    if let Some(n) = nofile {
        argv.extend(["prlimit".into(), format!("--nofile={n}:{n}")]);
    }
    argv.extend(runner().split_whitespace().map(str::to_string));
    argv.push(bin.display().to_string());
    argv.push("0".into());
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]);
    Some(Server::start("nostd-echo", cmd))
}

#[test]
fn half_closed_clients_get_every_byte_back() {
    if let Some(s) = start("half_closed_clients_get_every_byte_back", None) {
        server::half_closed_clients_get_every_byte_back(&s);
    }
}

#[test]
fn a_slow_reader_gets_everything_once_it_reads() {
    if let Some(s) = start("a_slow_reader_gets_everything_once_it_reads", None) {
        server::a_slow_reader_gets_everything_once_it_reads(&s);
    }
}

#[test]
fn resets_and_churn_leave_the_server_serving() {
    if let Some(s) = start("resets_and_churn_leave_the_server_serving", None) {
        server::resets_and_churn_leave_the_server_serving(&s);
    }
}

#[test]
fn emfile_is_logged_once_and_the_server_recovers() {
    // Few descriptors: the backlog fills past what accept can take.
    if let Some(s) = start("emfile_is_logged_once_and_the_server_recovers", Some(24)) {
        // Without the back-off and the log once per run of failures, the
        // storm logs a line every retry (20 in the 300 ms).
        let more = server::emfile_is_logged_and_the_server_recovers(&s);
        assert!(more <= 1, "{more} more accept failures logged");
    }
}

#[test]
fn sigterm_stops_it_with_status_zero() {
    if let Some(mut s) = start("sigterm_stops_it_with_status_zero", None) {
        server::sigterm_stops_it_with_status_zero(&mut s);
    }
}
