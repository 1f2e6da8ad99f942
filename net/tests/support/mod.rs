//! Helpers shared by the HTTP/1 tests (`/metrics`, `/health`, … on the
//! metrics listener and on the client port).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// One raw HTTP/1.1 exchange on a fresh connection (the server answers with
/// `Connection: close`); returns (status code, head, body).
pub fn http(addr: SocketAddr, request: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("read response");
    let (head, body) = raw.split_once("\r\n\r\n").expect("response head");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status code");
    (status, head.to_owned(), body.to_owned())
}

/// A GET as curl sends it.
pub fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    http(
        addr,
        &format!(
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: curl/8\r\nAccept: */*\r\n\r\n"
        ),
    )
}
