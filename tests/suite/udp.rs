//! UDP datagrams on loopback.

use std::sync::{Arc, Mutex};

use pinion::Error;

use super::{b, run_until};
use crate::util::{self, FixedBuf};

#[test]
fn send_to_and_receive_from() {
    let ctx = ctx_or_skip!();
    let c = ctx.get();
    let a = b::UdpSocket::bind(c, util::any_port()).unwrap();
    let bsock = b::UdpSocket::bind(c, util::any_port()).unwrap();
    let (a_addr, b_addr) = (a.local_addr().unwrap(), bsock.local_addr().unwrap());
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    bsock
        .async_receive_from(FixedBuf::new(64), move |r, buf| {
            g.lock().unwrap().push((r, buf.bytes().to_vec()));
        })
        .map_err(|r| r.error)
        .unwrap();
    a.async_send_to(&b"datagram"[..], b_addr, |r, _| assert_eq!(r, Ok(8)))
        .map_err(|r| r.error)
        .unwrap();
    run_until(c, "datagram", || !got.lock().unwrap().is_empty());
    assert_eq!(
        got.lock().unwrap()[0],
        (Ok((8, a_addr)), b"datagram".to_vec())
    );

    // A pending receive is aborted by close, with its buffer.
    let g = got.clone();
    bsock
        .async_receive_from(FixedBuf::new(64), move |r, buf| {
            g.lock().unwrap().push((r, buf.bytes().to_vec()));
        })
        .map_err(|r| r.error)
        .unwrap();
    bsock.close().unwrap();
    run_until(c, "receive aborted", || got.lock().unwrap().len() == 2);
    assert_eq!(
        got.lock().unwrap()[1],
        (Err(Error::OperationAborted), Vec::new())
    );
    a.close().unwrap();
    assert_eq!(bsock.close(), Err(Error::BadDescriptor));
}
