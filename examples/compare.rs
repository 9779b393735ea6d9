//! The backend comparison: the same echo workload on each enabled backend,
//! in one run, one table.
//!
//! For each backend the program re-runs itself as a child process (so peak
//! RSS and allocation counts belong to that backend alone). The child runs
//! a pinion echo server on one thread (pinned to CPU 0) and an in-process
//! load generator on another (pinned to CPU 1): `--conns` blocking
//! connections, each sending `--size` bytes and waiting for the echo, all
//! connections pipelined in rounds, every echoed byte checked.
//!
//! Columns: messages per second, round-trip p50/p99, server syscalls per
//! message (from the backend's `stats` counters), heap allocations in the
//! whole process during the measured window, and peak RSS. After the
//! table, each backend's memory report (`IoContext::memory`): what its
//! context reserved per pool, and per idle and active connection.
//!
//! `compare [--conns 64] [--size 64] [--secs 3] [--backends epoll,uring]`

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream as StdStream};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Counts every allocation in the process.
struct Counting;
static ALLOCS: AtomicUsize = AtomicUsize::new(0);
// SAFETY: forwards to the system allocator; only adds a counter.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(p, l, n) }
    }
}
#[global_allocator]
static GLOBAL: Counting = Counting;

/// `unwrap`/`expect` that print the error's message (`Display`).
trait OrDie<T> {
    fn or_die(self, what: &str) -> T;
}

impl<T, E: std::fmt::Display> OrDie<T> for Result<T, E> {
    fn or_die(self, what: &str) -> T {
        self.unwrap_or_else(|e| panic!("compare: {what}: {e}"))
    }
}

#[derive(Clone)]
struct Opts {
    conns: usize,
    size: usize,
    secs: f64,
    backends: Vec<String>,
    child: Option<String>,
}

fn parse() -> Opts {
    let mut o = Opts {
        conns: 64,
        size: 64,
        secs: 3.0,
        backends: enabled().iter().map(|s| s.to_string()).collect(),
        child: None,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let v = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--conns" => o.conns = v.parse().unwrap_or_else(|_| usage()),
            "--size" => o.size = v.parse().unwrap_or_else(|_| usage()),
            "--secs" => o.secs = v.parse().unwrap_or_else(|_| usage()),
            "--backends" => o.backends = v.split(',').map(str::to_string).collect(),
            "--child" => o.child = Some(v),
            _ => usage(),
        }
        i += 2;
    }
    if o.conns == 0 || o.size == 0 || o.size > 16384 || o.secs.is_nan() || o.secs <= 0.0 {
        usage()
    }
    o
}

fn usage() -> ! {
    eprintln!(
        "usage: compare [--conns N] [--size BYTES<=16384] [--secs S] [--backends epoll,uring]"
    );
    std::process::exit(2)
}

fn enabled() -> Vec<&'static str> {
    [
        cfg!(feature = "epoll").then_some("epoll"),
        cfg!(feature = "uring").then_some("uring"),
    ]
    .into_iter()
    .flatten()
    .collect()
}

fn main() {
    let o = parse();
    if let Some(b) = o.child.clone() {
        child(&b, &o);
        return;
    }
    let exe = std::env::current_exe().or_die("own path");
    println!(
        "pinion backend comparison: echo ping-pong, {} connections x {} bytes, {} s per backend, server on cpu 0, load on cpu 1\n",
        o.conns, o.size, o.secs
    );
    println!("| backend | msgs/s | p50 us | p99 us | syscalls/msg | heap allocs | peak RSS KiB |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let mut failed = false;
    let mut rows: Vec<(String, Vec<f64>)> = Vec::new();
    let mut reports = String::new();
    for b in &o.backends {
        let out = Command::new(&exe)
            .args(["--child", b])
            .args(["--conns", &o.conns.to_string()])
            .args(["--size", &o.size.to_string()])
            .args(["--secs", &o.secs.to_string()])
            .output()
            .or_die("run child");
        let text = String::from_utf8_lossy(&out.stdout);
        if let Some((_, report)) = text.split_once(REPORT_MARK) {
            reports.push('\n');
            reports.push_str(report.trim_end());
            reports.push('\n');
        }
        match text.lines().find(|l| l.starts_with('|')) {
            Some(row) if out.status.success() => {
                println!("{row}");
                let cells: Vec<f64> = row
                    .split('|')
                    .skip(2)
                    .map(|c| c.trim().parse().unwrap_or(f64::NAN))
                    .collect();
                rows.push((b.to_string(), cells));
            }
            _ => {
                failed = true;
                println!(
                    "| {b} | failed: {} |",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
        }
    }
    if enabled().is_empty() {
        eprintln!("no backend enabled");
    }
    legend();
    print!("{reports}");
    conclude(&rows);
    if failed {
        std::process::exit(1);
    }
}

/// Separates a child's table row from its memory report.
const REPORT_MARK: &str = "-- memory --\n";

/// What the columns mean.
fn legend() {
    println!();
    println!("msgs/s        echoed messages per second, all connections together");
    println!("p50/p99 us    round-trip latency percentiles; each is the upper edge of a");
    println!("              histogram bucket (log-linear, within 6%), not an exact sample");
    if cfg!(feature = "stats") {
        println!("syscalls/msg  the backend's own system calls per echoed message (its counters)");
    } else {
        println!("syscalls/msg  n/a: build with --features stats to count them");
    }
    println!("heap allocs   allocations in the whole process during the measured window");
    println!("              (0: nothing on any I/O path touched the heap after build)");
    println!("peak RSS      the backend's child process at its largest");
}

/// One line saying what the table shows.
fn conclude(rows: &[(String, Vec<f64>)]) {
    let get = |name: &str| rows.iter().find(|(b, _)| b == name).map(|(_, c)| c.clone());
    let allocs_zero = rows.iter().all(|(_, c)| c.get(4) == Some(&0.0));
    let alloc_note = if allocs_zero {
        "; neither backend allocated after build"
    } else {
        "; see heap allocs: something allocated after build"
    };
    match (get("epoll"), get("uring")) {
        (Some(e), Some(u)) if e.len() >= 4 && u.len() >= 4 => {
            let tput = u[0] / e[0].max(1.0);
            let sys = if cfg!(feature = "stats") && u[3] > 0.0 {
                format!(", {:.0}x fewer syscalls per message", e[3] / u[3])
            } else {
                String::new()
            };
            println!(
                "\nConclusion: io_uring moved {:.2}x epoll's messages per second here{sys}{alloc_note} \
                 (wall-clock figures on a shared machine wander 5-20% between runs).",
                tput
            );
        }
        (Some(_), None) | (None, Some(_)) => println!(
            "\nConclusion: one backend measured{alloc_note}; build with --features uring,stats \
             to compare epoll and io_uring side by side."
        ),
        _ => println!("\nConclusion: no backend finished; see the rows above."),
    }
}

/// Log-linear latency histogram: 16 linear steps per power of two
/// (within ~6%), fixed size so the load generator allocates nothing.
struct Histo {
    counts: [u64; 64 * 16],
    n: u64,
}

impl Histo {
    fn add(&mut self, ns: u64) {
        let ns = ns.max(1);
        let p = 63 - ns.leading_zeros() as usize;
        let sub = if p >= 4 {
            ((ns >> (p - 4)) & 15) as usize
        } else {
            (ns as usize) & 15
        };
        self.counts[p * 16 + sub] += 1;
        self.n += 1;
    }
    fn quantile(&self, q: f64) -> f64 {
        let want = ((self.n as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= want {
                let (p, sub) = (i / 16, (i % 16) as u64);
                let ns = if p >= 4 { (16 + sub) << (p - 4) } else { sub };
                return ns as f64 / 1000.0;
            }
        }
        0.0
    }
}

fn pin(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET writes inside it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        // Best effort: a machine with one CPU still runs the comparison.
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn peak_rss_kib() -> i64 {
    // SAFETY: getrusage fills the struct it is given.
    unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        // A `c_long`: 32 bits on i686 and armv7, the same type on x86-64.
        #[allow(clippy::useless_conversion)]
        i64::from(ru.ru_maxrss)
    }
}

struct Load {
    msgs: u64,
    histo: Box<Histo>,
    allocs: u64,
    secs: f64,
}

/// Pipelined ping-pong over blocking sockets: every connection sends,
/// then every connection reads its echo and checks it. `window` brackets
/// the measured part so the server's counters can be read at its edges.
fn load(addr: SocketAddr, o: &Opts, mut window: impl FnMut(bool)) -> Load {
    pin(1);
    let mut conns: Vec<StdStream> = (0..o.conns)
        .map(|_| {
            let s = StdStream::connect(addr).or_die("connect to the echo server");
            s.set_nodelay(true).or_die("TCP_NODELAY");
            s.set_read_timeout(Some(Duration::from_secs(10)))
                .or_die("read timeout");
            s
        })
        .collect();
    let mut histo = Box::new(Histo {
        counts: [0; 64 * 16],
        n: 0,
    });
    let mut out = vec![0u8; o.size];
    let mut back = vec![0u8; o.size];
    let mut sent_at = vec![Instant::now(); o.conns];
    let mut seq = 0u8;
    let mut round = |conns: &mut Vec<StdStream>, histo: Option<&mut Histo>| {
        seq = seq.wrapping_add(1);
        for (i, c) in conns.iter_mut().enumerate() {
            out.fill(seq ^ i as u8);
            sent_at[i] = Instant::now();
            c.write_all(&out).or_die("write to the echo server");
        }
        let mut h = histo;
        for (i, c) in conns.iter_mut().enumerate() {
            c.read_exact(&mut back).or_die("read the echo");
            if let Some(h) = h.as_deref_mut() {
                h.add(sent_at[i].elapsed().as_nanos() as u64);
            }
            assert!(back.iter().all(|&b| b == seq ^ i as u8), "echo mismatch");
        }
    };
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_millis(300) {
        round(&mut conns, None);
    }
    window(true);
    let a0 = ALLOCS.load(Ordering::Relaxed);
    let t0 = Instant::now();
    let mut rounds = 0u64;
    let limit = Duration::from_secs_f64(o.secs);
    while t0.elapsed() < limit {
        round(&mut conns, Some(&mut histo));
        rounds += 1;
    }
    let secs = t0.elapsed().as_secs_f64();
    let allocs = ALLOCS.load(Ordering::Relaxed) - a0;
    window(false);
    Load {
        msgs: rounds * o.conns as u64,
        histo,
        allocs: allocs as u64,
        secs,
    }
}

/// One backend's echo server and the load, as a child process.
macro_rules! run_backend {
    ($b:ident, $o:expr) => {{
        use pinion::$b as b;
        let o: &Opts = $o;
        let ctx: &'static b::IoContext = b::Builder::new()
            .ops(4 * o.conns + 64)
            .descriptors(o.conns + 16)
            .concurrency_hint(1)
            .build_static()
            .or_die("build the context");
        let listener =
            b::TcpListener::bind(ctx, SocketAddr::from(([127, 0, 0, 1], 0))).or_die("bind");
        let addr = listener.local_addr().or_die("local address");

        fn echo(s: b::TcpStream<'static>, buf: Vec<u8>) {
            let r = s.async_read_some(buf, move |r, buf| match r {
                Ok(_) => {
                    let w = pinion::compose::async_write(&s, buf, move |r, mut buf| {
                        buf.clear();
                        if r.is_ok() {
                            echo(s, buf)
                        } else {
                            let _ = s.close();
                        }
                    });
                    if w.is_err() {
                        let _ = s.close();
                    }
                }
                Err(_) => {
                    let _ = s.close();
                }
            });
            if r.is_err() {
                let _ = s.close();
            }
        }
        fn accept(l: b::TcpListener<'static>) {
            let _ = l.async_accept(move |r| {
                if let Ok((s, _)) = r {
                    let _ = s.set_nodelay(true);
                    // Allocated at accept time, before the measured window.
                    echo(s, Vec::with_capacity(16384));
                }
                accept(l);
            });
        }
        accept(listener);

        std::thread::scope(|sc| {
            // The pending accept keeps `run` going until `stop`.
            let server = sc.spawn(|| {
                pin(0);
                ctx.run();
            });
            let mut s0 = ctx.stats();
            let mut s1 = s0;
            let l = load(addr, o, |start| {
                if start {
                    s0 = ctx.stats();
                } else {
                    s1 = ctx.stats();
                }
            });
            ctx.stop();
            if server.join().is_err() {
                panic!("compare: the server thread panicked");
            }
            let syscalls = s1.syscalls() - s0.syscalls();
            let memory = ctx.memory().to_string();
            // Nothing of this backend's run stays open during the next.
            ctx.shutdown().or_die("shut the context down");
            (l, syscalls, memory)
        })
    }};
}

fn child(backend: &str, o: &Opts) {
    let (l, syscalls, memory): (Load, u64, String) = match backend {
        #[cfg(feature = "epoll")]
        "epoll" => run_backend!(epoll, o),
        #[cfg(feature = "uring")]
        "uring" => run_backend!(uring, o),
        other => {
            eprintln!(
                "backend {other} is not enabled in this build (enabled: {})",
                enabled().join(",")
            );
            std::process::exit(2)
        }
    };
    // Without the counters there is nothing to divide: say so in the cell.
    let per_msg = if cfg!(feature = "stats") {
        format!("{:.3}", syscalls as f64 / l.msgs.max(1) as f64)
    } else {
        "n/a".to_string()
    };
    println!(
        "| {backend} | {:.0} | {:.1} | {:.1} | {per_msg} | {} | {} |",
        l.msgs as f64 / l.secs,
        l.histo.quantile(0.50),
        l.histo.quantile(0.99),
        l.allocs,
        peak_rss_kib()
    );
    print!("{REPORT_MARK}{memory}");
}
