//! Helpers shared by the HTTP/1 tests (`/metrics`, `/health`, … on the
//! metrics listener and on the client port).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// One raw HTTP/1.1 exchange on a fresh connection; returns (status code,
/// head, body). The body is read by its `Content-Length` (the client port
/// keeps HTTP/1.1 connections alive), or to the end when the server closes.
pub fn http(addr: SocketAddr, request: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    read_response(&mut s, request.starts_with("HEAD "))
}

/// Reads one response from `s`: (status code, head, body). The answer to
/// a HEAD request (`head_request`) announces a length it does not send.
pub fn read_response(s: &mut TcpStream, head_request: bool) -> (u16, String, String) {
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte).expect("read response") {
            0 => break,
            _ => raw.push(byte[0]),
        }
    }
    let head = String::from_utf8_lossy(&raw).trim_end().to_owned();
    let length = head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse::<usize>().ok())?
    });
    let body = match length {
        Some(_) if head_request => Vec::new(),
        Some(n) => {
            let mut body = vec![0; n];
            s.read_exact(&mut body).expect("read body");
            body
        }
        None => {
            let mut body = Vec::new();
            s.read_to_end(&mut body).expect("read body");
            body
        }
    };
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status code");
    (status, head, String::from_utf8_lossy(&body).into_owned())
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
