//! Serial ports (Asio's `serial_port`): a tty opened in raw mode and set up
//! through termios, then read and written like any [`StreamDescriptor`]
//! (callbacks, the composed operations, futures) on either backend.
//!
//! Each setter is one `tcsetattr`; what the device refuses comes back as
//! its errno. A pseudo-terminal, for one, refuses parity and character
//! sizes other than 8 (`EINVAL`) on current kernels.

use core::ops::Deref;

use pinion_core::backend::Backend;
use pinion_core::{Errno, Error, Result};
use pinion_sys::Fd;

use crate::context::IoContext;
use crate::fd::StreamDescriptor;
use crate::owned::Close;

/// Bits per character.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CharSize {
    /// 5 bits.
    Five,
    /// 6 bits.
    Six,
    /// 7 bits.
    Seven,
    /// 8 bits (raw mode's default).
    Eight,
}

/// Parity bit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parity {
    /// None (raw mode's default).
    None,
    /// Odd.
    Odd,
    /// Even.
    Even,
}

/// Stop bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopBits {
    /// One (raw mode's default).
    One,
    /// Two.
    Two,
}

/// Flow control.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowControl {
    /// None (raw mode's default).
    None,
    /// XON/XOFF characters.
    Software,
    /// RTS/CTS lines.
    Hardware,
}

/// The rates termios can set, with their `B*` constants.
const RATES: [(u32, libc::speed_t); 24] = [
    (50, libc::B50),
    (75, libc::B75),
    (110, libc::B110),
    (134, libc::B134),
    (150, libc::B150),
    (200, libc::B200),
    (300, libc::B300),
    (600, libc::B600),
    (1200, libc::B1200),
    (1800, libc::B1800),
    (2400, libc::B2400),
    (4800, libc::B4800),
    (9600, libc::B9600),
    (19200, libc::B19200),
    (38400, libc::B38400),
    (57600, libc::B57600),
    (115200, libc::B115200),
    (230400, libc::B230400),
    (460800, libc::B460800),
    (500000, libc::B500000),
    (921600, libc::B921600),
    (1000000, libc::B1000000),
    (2000000, libc::B2000000),
    (4000000, libc::B4000000),
];

/// A serial port: a tty in raw mode, registered in a descriptor slot.
/// Derefs to its [`StreamDescriptor`] for reading and writing. `Copy`;
/// [`Owned`](crate::Owned) closes it on drop.
///
/// ```
/// # #[cfg(not(miri))] {
/// use pinion::serial::{SerialPort, StopBits};
/// let ctx: &'static pinion::IoContext = pinion::Builder::new().build_static().unwrap();
/// // A pseudo-terminal stands in for the UART here.
/// let (mut master, mut slave) = (0, 0);
/// let (name, attrs, size) = (std::ptr::null_mut(), std::ptr::null(), std::ptr::null());
/// // SAFETY: out-pointers to two ints; no name, termios or window size.
/// assert_eq!(unsafe { libc::openpty(&mut master, &mut slave, name, attrs, size) }, 0);
/// // SAFETY: the slave end is ours alone.
/// let port = SerialPort::from_fd(ctx, unsafe { pinion_sys::Fd::from_raw(slave) }).unwrap();
/// port.set_baud_rate(115_200).unwrap();
/// port.set_stop_bits(StopBits::Two).unwrap();
/// assert_eq!(port.baud_rate(), Ok(115_200));
/// assert_eq!(port.set_baud_rate(12_345), Err(pinion::Error::UnsupportedBaudRate(12_345)));
/// port.close().unwrap();
/// // SAFETY: the master end is ours.
/// unsafe { libc::close(master) };
/// # }
/// ```
pub struct SerialPort<'c, B: Backend> {
    desc: StreamDescriptor<'c, B>,
}

impl<B: Backend> Clone for SerialPort<'_, B> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<B: Backend> Copy for SerialPort<'_, B> {}

impl<'c, B: Backend> Deref for SerialPort<'c, B> {
    type Target = StreamDescriptor<'c, B>;
    fn deref(&self) -> &StreamDescriptor<'c, B> {
        &self.desc
    }
}

fn get_attrs(fd: i32) -> Result<libc::termios> {
    // SAFETY: termios is plain data; tcgetattr fills it or fails.
    let mut t = unsafe { core::mem::zeroed::<libc::termios>() };
    // SAFETY: `t` is writable and lives across the call.
    if unsafe { libc::tcgetattr(fd, &mut t) } != 0 {
        return Err(match Errno::last() {
            Errno::NOTTY => Error::NotATerminal,
            e => Error::Os(e),
        });
    }
    Ok(t)
}

fn set_attrs(fd: i32, t: &libc::termios) -> Result<()> {
    // SAFETY: `t` is an initialised termios.
    if unsafe { libc::tcsetattr(fd, libc::TCSANOW, t) } != 0 {
        return Err(Error::Os(Errno::last()));
    }
    Ok(())
}

impl<'c, B: Backend> SerialPort<'c, B> {
    /// Opens the tty at `path` (`/dev/ttyS0`, `/dev/ttyUSB0`...) and sets
    /// it raw (no echo, no line editing, 8N1, no flow control). An error
    /// names the cause (`Os(ENOENT)` for a missing path; `NotATerminal`
    /// for a file that is not a tty).
    #[cfg(feature = "std")]
    pub fn open(ctx: &'c IoContext<B>, path: &str) -> Result<Self> {
        let path = std::ffi::CString::new(path).map_err(|_| Error::Os(Errno::INVAL))?;
        let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_NONBLOCK | libc::O_CLOEXEC;
        // SAFETY: a NUL-terminated path; plain flags.
        let fd = unsafe { libc::open(path.as_ptr(), flags) };
        if fd < 0 {
            return Err(Error::Os(Errno::last()));
        }
        // SAFETY: just opened, ours alone.
        Self::from_fd(ctx, unsafe { Fd::from_raw(fd) })
    }

    /// A serial port from an open tty descriptor, set raw as
    /// [`open`](Self::open) does; `NotATerminal` (fd closed) otherwise.
    pub fn from_fd(ctx: &'c IoContext<B>, fd: Fd) -> Result<Self> {
        let mut t = get_attrs(fd.raw())?;
        // SAFETY: `t` is an initialised termios.
        unsafe { libc::cfmakeraw(&mut t) };
        // Reads return what is there; the descriptor is non-blocking and
        // waited on for readiness anyway.
        t.c_cc[libc::VMIN] = 1;
        t.c_cc[libc::VTIME] = 0;
        t.c_cflag |= libc::CREAD | libc::CLOCAL;
        set_attrs(fd.raw(), &t)?;
        Ok(SerialPort {
            desc: StreamDescriptor::from_fd(ctx, fd)?,
        })
    }

    /// Sets input and output speed; `UnsupportedBaudRate(rate)` for a rate
    /// termios has no constant for.
    pub fn set_baud_rate(&self, rate: u32) -> Result<()> {
        let Some(&(_, speed)) = RATES.iter().find(|(r, _)| *r == rate) else {
            return Err(Error::UnsupportedBaudRate(rate));
        };
        self.change(|t| {
            // SAFETY: `t` is an initialised termios; `speed` a B* constant.
            unsafe { libc::cfsetspeed(t, speed) };
        })
    }

    /// The output speed in force.
    pub fn baud_rate(&self) -> Result<u32> {
        let t = self.with_attrs(Ok)?;
        // SAFETY: `t` is an initialised termios.
        let speed = unsafe { libc::cfgetospeed(&t) };
        RATES
            .iter()
            .find(|(_, s)| *s == speed)
            .map(|(r, _)| *r)
            .ok_or(Error::Os(Errno::INVAL))
    }

    /// Bits per character.
    pub fn set_character_size(&self, size: CharSize) -> Result<()> {
        let bits = match size {
            CharSize::Five => libc::CS5,
            CharSize::Six => libc::CS6,
            CharSize::Seven => libc::CS7,
            CharSize::Eight => libc::CS8,
        };
        self.change(|t| t.c_cflag = (t.c_cflag & !libc::CSIZE) | bits)
    }

    /// Parity generation and checking.
    pub fn set_parity(&self, parity: Parity) -> Result<()> {
        self.change(|t| {
            t.c_cflag &= !(libc::PARENB | libc::PARODD);
            match parity {
                Parity::None => {}
                Parity::Odd => t.c_cflag |= libc::PARENB | libc::PARODD,
                Parity::Even => t.c_cflag |= libc::PARENB,
            }
        })
    }

    /// One or two stop bits.
    pub fn set_stop_bits(&self, stop: StopBits) -> Result<()> {
        self.change(|t| match stop {
            StopBits::One => t.c_cflag &= !libc::CSTOPB,
            StopBits::Two => t.c_cflag |= libc::CSTOPB,
        })
    }

    /// Flow control.
    pub fn set_flow_control(&self, flow: FlowControl) -> Result<()> {
        self.change(|t| {
            t.c_cflag &= !libc::CRTSCTS;
            t.c_iflag &= !(libc::IXON | libc::IXOFF | libc::IXANY);
            match flow {
                FlowControl::None => {}
                FlowControl::Software => t.c_iflag |= libc::IXON | libc::IXOFF,
                FlowControl::Hardware => t.c_cflag |= libc::CRTSCTS,
            }
        })
    }

    /// The port's termios settings now (for what the setters do not
    /// cover, or to check them).
    pub fn attributes(&self) -> Result<libc::termios> {
        self.with_attrs(Ok)
    }

    /// Closes the port (pending operations complete with
    /// `OperationAborted`).
    pub fn close(&self) -> Result<()> {
        self.desc.close()
    }

    fn with_attrs<T>(&self, f: impl FnOnce(libc::termios) -> Result<T>) -> Result<T> {
        // Under the descriptor's lock: a close on another thread cannot
        // free the fd (or let its number be reused) meanwhile.
        self.desc.with_fd(|fd| f(get_attrs(fd)?))
    }

    fn change(&self, f: impl FnOnce(&mut libc::termios)) -> Result<()> {
        self.desc.with_fd(|fd| {
            let mut t = get_attrs(fd)?;
            f(&mut t);
            set_attrs(fd, &t)
        })
    }
}

impl<B: Backend> Close for SerialPort<'_, B> {
    fn close(&self) -> Result<()> {
        SerialPort::close(self)
    }
}
