//! `SerialPort` on a pseudo-terminal (`openpty`): settings read back with
//! `tcgetattr`, bytes both ways, a 1 MiB round trip at a set rate, a line
//! protocol over `read_until`, and
//! the errors for a missing path, a file that is not a tty and an
//! unsupported rate.

use std::io::{Read, Write};
use std::os::fd::FromRawFd;
use std::sync::{Arc, Mutex};

use pinion::compose::{async_read, async_read_until, async_write, Completion};
use pinion::serial::{FlowControl, Parity, SerialPort, StopBits};
use pinion::{Errno, Error, Owned};

use super::{b, run_until};
use crate::util::{self, FixedBuf};

type Port = SerialPort<'static, b::Backend>;

/// A pty: the master as a std file (the "device" end), the slave as a port.
fn pty(c: &'static b::IoContext) -> (std::fs::File, Owned<Port>) {
    let (mut master, mut slave) = (0, 0);
    let (name, attrs, size) = (std::ptr::null_mut(), std::ptr::null(), std::ptr::null());
    // SAFETY: out-pointers to two ints; no name, termios or window size.
    assert_eq!(
        unsafe { libc::openpty(&mut master, &mut slave, name, attrs, size) },
        0
    );
    // SAFETY: both ends were just made, ours alone.
    let (m, s) = unsafe {
        (
            std::fs::File::from_raw_fd(master),
            pinion_sys::Fd::from_raw(slave),
        )
    };
    (m, Owned::new(Port::from_fd(c, s).unwrap()))
}

#[test]
fn settings_are_read_back() {
    let ctx = ctx_or_skip!();
    let c = ctx.get();
    let (_m, port) = pty(c);
    let t = port.attributes().unwrap();
    assert_eq!(t.c_lflag & (libc::ICANON | libc::ECHO), 0, "raw mode");
    port.set_baud_rate(9600).unwrap();
    assert_eq!(port.baud_rate(), Ok(9600));
    port.set_baud_rate(115_200).unwrap();
    assert_eq!(port.baud_rate(), Ok(115_200));
    assert_eq!(
        port.set_baud_rate(12_345),
        Err(Error::UnsupportedBaudRate(12_345))
    );
    port.set_stop_bits(StopBits::Two).unwrap();
    assert_ne!(port.attributes().unwrap().c_cflag & libc::CSTOPB, 0);
    port.set_stop_bits(StopBits::One).unwrap();
    assert_eq!(port.attributes().unwrap().c_cflag & libc::CSTOPB, 0);
    port.set_flow_control(FlowControl::Hardware).unwrap();
    assert_ne!(port.attributes().unwrap().c_cflag & libc::CRTSCTS, 0);
    port.set_flow_control(FlowControl::Software).unwrap();
    let t = port.attributes().unwrap();
    assert_eq!(
        (t.c_iflag & libc::IXON != 0, t.c_cflag & libc::CRTSCTS),
        (true, 0)
    );
    port.set_flow_control(FlowControl::None).unwrap();
    assert_eq!(
        port.attributes().unwrap().c_iflag & (libc::IXON | libc::IXOFF),
        0
    );
    // A pty refuses parity on current kernels; a UART would take it.
    match port.set_parity(Parity::Even) {
        Ok(()) => assert_ne!(port.attributes().unwrap().c_cflag & libc::PARENB, 0),
        Err(e) => assert_eq!(e, Error::Os(Errno::INVAL)),
    }
    port.close().unwrap();
    assert_eq!(port.baud_rate(), Err(Error::BadDescriptor));
}

#[test]
fn bytes_both_ways_and_a_line_protocol() {
    let ctx = ctx_or_skip!();
    let c = ctx.get();
    let (mut m, port) = pty(c);
    port.set_baud_rate(115_200).unwrap();
    // Device to port: 256 KiB through the pty's small buffer.
    let msg = util::pattern_vec(5, 256 * 1024);
    let mut w = m.try_clone().unwrap();
    let to_send = msg.clone();
    let writer = std::thread::spawn(move || w.write_all(&to_send).unwrap());
    let got = Arc::new(Mutex::new(None));
    let g = got.clone();
    async_read(
        &**port,
        FixedBuf::new(msg.len()),
        Completion::TransferAll,
        move |n, buf| {
            *g.lock().unwrap() = Some((n, buf.bytes().to_vec()));
        },
    )
    .map_err(|r| r.error)
    .unwrap();
    run_until(c, "256 KiB from the device", || {
        got.lock().unwrap().is_some()
    });
    writer.join().unwrap();
    let (n, bytes) = got.lock().unwrap().take().unwrap();
    assert_eq!(n, Ok(msg.len()));
    assert!(bytes == msg, "in order, unchanged (raw mode)");
    // Port to device.
    let back = util::pattern_vec(6, 64 * 1024);
    let mut r = m.try_clone().unwrap();
    let len = back.len();
    let reader = std::thread::spawn(move || {
        let mut v = vec![0; len];
        r.read_exact(&mut v).unwrap();
        v
    });
    let wrote = Arc::new(Mutex::new(None));
    let wr = wrote.clone();
    async_write(&**port, back.clone(), move |n, _| {
        *wr.lock().unwrap() = Some(n)
    })
    .map_err(|r| r.error)
    .unwrap();
    run_until(c, "64 KiB to the device", || {
        wrote.lock().unwrap().is_some()
    });
    assert_eq!(wrote.lock().unwrap().take(), Some(Ok(len)));
    assert!(reader.join().unwrap() == back);
    // A line protocol: the first line, the rest kept for the next read.
    m.write_all(b"AT+OK\r\nREADY\r\n").unwrap();
    let line = Arc::new(Mutex::new(None));
    let l = line.clone();
    async_read_until(&**port, FixedBuf::new(64), b"\r\n", move |n, buf| {
        *l.lock().unwrap() = Some((n, buf.bytes().to_vec()));
    })
    .map_err(|r| r.error)
    .unwrap();
    run_until(c, "a line", || line.lock().unwrap().is_some());
    let (n, bytes) = line.lock().unwrap().take().unwrap();
    assert_eq!(n, Ok(7));
    assert!(bytes.starts_with(b"AT+OK\r\n"));
}

/// 1 MiB round trip at a set rate: the port writes it while the device
/// end echoes every byte back, and the port reads it all, both directions
/// in flight at once through the pty's small buffers.
#[test]
fn a_mebibyte_round_trip_at_a_set_baud_rate() {
    const N: usize = 1 << 20;
    let ctx = ctx_or_skip!();
    let c = ctx.get();
    let (m, port) = pty(c);
    port.set_baud_rate(230_400).unwrap();
    assert_eq!(port.baud_rate(), Ok(230_400));
    let (mut r, mut w) = (m.try_clone().unwrap(), m);
    let device = std::thread::spawn(move || {
        let mut buf = vec![0u8; 4096];
        let mut left = N;
        while left > 0 {
            let n = r.read(&mut buf[..left.min(4096)]).expect("device read");
            assert!(n > 0, "the port end closed early");
            w.write_all(&buf[..n]).expect("device echo");
            left -= n;
        }
        // Kept open until the port has read everything: a hang-up would
        // flush what is still queued for it.
        (r, w)
    });
    let msg = util::pattern_vec(9, N);
    let got = Arc::new(Mutex::new(None));
    let g = got.clone();
    async_read(
        &**port,
        FixedBuf::new(N),
        Completion::TransferAll,
        move |n, buf| {
            *g.lock().unwrap() = Some((n, buf.bytes().to_vec()));
        },
    )
    .map_err(|r| r.error)
    .unwrap();
    let wrote = Arc::new(Mutex::new(None));
    let wr = wrote.clone();
    async_write(&**port, msg.clone(), move |n, _| {
        *wr.lock().unwrap() = Some(n)
    })
    .map_err(|r| r.error)
    .unwrap();
    run_until(c, "1 MiB out and back", || got.lock().unwrap().is_some());
    drop(device.join().unwrap());
    assert_eq!(wrote.lock().unwrap().take(), Some(Ok(N)));
    let (n, bytes) = got.lock().unwrap().take().unwrap();
    assert_eq!(n, Ok(N));
    assert!(bytes == msg, "every byte back, in order (raw mode)");
}

#[test]
fn a_missing_path_a_file_and_a_rate_are_clear_errors() {
    let ctx = ctx_or_skip!();
    let c = ctx.get();
    assert_eq!(
        Port::open(c, "/dev/no-such-tty").map(drop),
        Err(Error::Os(Errno::NOENT))
    );
    assert_eq!(
        Port::open(c, "/dev/null").map(drop),
        Err(Error::NotATerminal)
    );
    let e = Error::NotATerminal.to_string();
    assert!(e.contains("tty"), "{e}");
    assert!(Error::UnsupportedBaudRate(12_345)
        .to_string()
        .contains("12345"));
    assert_eq!(c.descriptors_in_use(), 0, "nothing registered on error");
}
