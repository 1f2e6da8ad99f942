//! gRPC message framing: each message is a 1-byte compressed flag, a 4-byte
//! big-endian length and the protobuf bytes ("Length-Prefixed-Message").

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::status::{Code, Status};

/// Size of the length prefix in front of every message.
pub const PREFIX_LEN: usize = 5;

/// Frames `msg` as one gRPC message: prefix and body in one buffer.
pub fn encode_message<M: prost::Message>(msg: &M) -> Bytes {
    let len = msg.encoded_len();
    let mut buf = BytesMut::with_capacity(PREFIX_LEN + len);
    buf.put_u8(0);
    // A message over 4 GiB cannot be framed; prost itself cannot build one
    // that large from our responses, and the limit check happens upstream.
    buf.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
    // Encoding into a buffer of exactly `encoded_len` capacity cannot fail.
    let _ = msg.encode(&mut buf);
    buf.freeze()
}

/// Reassembles messages from HTTP/2 DATA chunks, which may split or join
/// messages anywhere.
pub struct Deframer {
    buf: BytesMut,
    max_message_len: usize,
}

impl Deframer {
    pub fn new(max_message_len: usize) -> Deframer {
        Deframer {
            buf: BytesMut::new(),
            max_message_len,
        }
    }

    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// Bytes buffered that do not yet form a whole message.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// The next whole message, if buffered. Errors (with grpc-go's codes and
    /// texts, which clients match on) as soon as the prefix is known to be
    /// bad, so an oversized message is never buffered.
    pub fn next_message(&mut self) -> Result<Option<Bytes>, Status> {
        if self.buf.len() < PREFIX_LEN {
            return Ok(None);
        }
        match self.buf[0] {
            0 => {}
            // We announce no grpc-accept-encoding and accept no grpc-encoding,
            // so a compressed message can only come with identity encoding.
            1 => {
                return Err(Status::new(
                    Code::Internal,
                    "grpc: compressed flag set with identity or empty encoding",
                ))
            }
            other => {
                return Err(Status::new(
                    Code::Internal,
                    format!("grpc: received unexpected payload format {other}"),
                ))
            }
        }
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if len > self.max_message_len {
            return Err(Status::new(
                Code::ResourceExhausted,
                format!(
                    "grpc: received message larger than max ({len} vs. {})",
                    self.max_message_len
                ),
            ));
        }
        if self.buf.len() < PREFIX_LEN + len {
            self.buf.reserve(PREFIX_LEN + len - self.buf.len());
            return Ok(None);
        }
        self.buf.advance(PREFIX_LEN);
        Ok(Some(self.buf.split_to(len).freeze()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::etcdserverpb::PutRequest;

    fn put(key: &str) -> PutRequest {
        PutRequest {
            key: key.into(),
            value: b"v".to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn round_trips_messages_split_at_every_byte() {
        let mut wire = encode_message(&put("a")).to_vec();
        wire.extend_from_slice(&encode_message(&put("bb")));
        let mut d = Deframer::new(1024);
        let mut got = Vec::new();
        for b in &wire {
            d.push(std::slice::from_ref(b));
            while let Some(m) = d.next_message().unwrap() {
                got.push(<PutRequest as prost::Message>::decode(m).unwrap());
            }
        }
        assert_eq!(got, vec![put("a"), put("bb")]);
        assert_eq!(d.pending(), 0);
    }

    #[test]
    fn empty_message_is_valid() {
        let mut d = Deframer::new(16);
        d.push(&[0, 0, 0, 0, 0]);
        assert_eq!(d.next_message().unwrap(), Some(Bytes::new()));
    }

    #[test]
    fn rejects_oversized_before_buffering_it() {
        let mut d = Deframer::new(10);
        d.push(&[0, 0, 0, 0, 11]);
        let err = d.next_message().unwrap_err();
        assert_eq!(err.code, Code::ResourceExhausted);
        assert_eq!(
            err.message,
            "grpc: received message larger than max (11 vs. 10)"
        );
    }

    #[test]
    fn rejects_compressed_and_unknown_flags() {
        let mut d = Deframer::new(10);
        d.push(&[1, 0, 0, 0, 0]);
        assert_eq!(d.next_message().unwrap_err().code, Code::Internal);
        let mut d = Deframer::new(10);
        d.push(&[7, 0, 0, 0, 0]);
        assert_eq!(
            d.next_message().unwrap_err().message,
            "grpc: received unexpected payload format 7"
        );
    }
}
