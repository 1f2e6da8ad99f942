//! The two protobuf messages etcd stores in its database, by hand: the
//! engine does not depend on prost, and a decoder that knows exactly these
//! fields can reject what a newer etcd adds instead of dropping it.
//!
//! Encoding follows Go's gogoproto marshaller for proto3, byte for byte
//! (fields in number order, zero values and empty bytes left out), since
//! etcd's hashes cover these bytes.
//!
//! ```text
//! mvccpb.KeyValue: 1 key bytes | 2 create_revision | 3 mod_revision
//!                  | 4 version | 5 value bytes | 6 lease          (int64s)
//! leasepb.Lease:   1 ID | 2 TTL | 3 RemainingTTL                  (int64s)
//! ```

/// `mvccpb.KeyValue`, borrowing its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeyValue<'a> {
    pub key: &'a [u8],
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
    pub value: &'a [u8],
    pub lease: i64,
}

/// `leasepb.Lease`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Lease {
    pub id: i64,
    pub ttl: i64,
    pub remaining_ttl: i64,
}

const VARINT: u64 = 0;
const BYTES: u64 = 2;

fn put_varint(mut n: u64, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn put_int(field: u64, n: i64, out: &mut Vec<u8>) {
    if n != 0 {
        put_varint(field << 3 | VARINT, out);
        put_varint(n as u64, out);
    }
}

fn put_bytes(field: u64, b: &[u8], out: &mut Vec<u8>) {
    if !b.is_empty() {
        put_varint(field << 3 | BYTES, out);
        put_varint(b.len() as u64, out);
        out.extend_from_slice(b);
    }
}

impl KeyValue<'_> {
    pub fn encode(&self, out: &mut Vec<u8>) {
        put_bytes(1, self.key, out);
        put_int(2, self.create_revision, out);
        put_int(3, self.mod_revision, out);
        put_int(4, self.version, out);
        put_bytes(5, self.value, out);
        put_int(6, self.lease, out);
    }

    /// Decodes; the reason otherwise (unknown fields are refused).
    pub fn decode(bytes: &[u8]) -> Result<KeyValue<'_>, String> {
        let mut kv = KeyValue::default();
        let mut r = Fields { bytes, at: 0 };
        while let Some((field, value)) = r.next()? {
            match (field, value) {
                (1, Value::Bytes(b)) => kv.key = b,
                (2, Value::Int(n)) => kv.create_revision = n,
                (3, Value::Int(n)) => kv.mod_revision = n,
                (4, Value::Int(n)) => kv.version = n,
                (5, Value::Bytes(b)) => kv.value = b,
                (6, Value::Int(n)) => kv.lease = n,
                (f, _) => return Err(unknown("mvccpb.KeyValue", f)),
            }
        }
        Ok(kv)
    }
}

impl Lease {
    pub fn encode(&self, out: &mut Vec<u8>) {
        put_int(1, self.id, out);
        put_int(2, self.ttl, out);
        put_int(3, self.remaining_ttl, out);
    }

    pub fn decode(bytes: &[u8]) -> Result<Lease, String> {
        let mut lease = Lease::default();
        let mut r = Fields { bytes, at: 0 };
        while let Some((field, value)) = r.next()? {
            match (field, value) {
                (1, Value::Int(n)) => lease.id = n,
                (2, Value::Int(n)) => lease.ttl = n,
                (3, Value::Int(n)) => lease.remaining_ttl = n,
                (f, _) => return Err(unknown("leasepb.Lease", f)),
            }
        }
        Ok(lease)
    }
}

fn unknown(message: &str, field: u64) -> String {
    format!("{message} field {field} is unknown here (a newer etcd, or damage)")
}

enum Value<'a> {
    Int(i64),
    Bytes(&'a [u8]),
}

struct Fields<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Fields<'a> {
    fn varint(&mut self) -> Result<u64, String> {
        let mut n = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self
                .bytes
                .get(self.at)
                .ok_or_else(|| format!("varint runs past the end at byte {}", self.at))?;
            self.at += 1;
            n |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(n);
            }
        }
        Err(format!("varint longer than 10 bytes at byte {}", self.at))
    }

    fn next(&mut self) -> Result<Option<(u64, Value<'a>)>, String> {
        if self.at == self.bytes.len() {
            return Ok(None);
        }
        let tag = self.varint()?;
        let (field, wire) = (tag >> 3, tag & 7);
        let value = match wire {
            VARINT => Value::Int(self.varint()? as i64),
            BYTES => {
                let len = self.varint()?;
                let end = usize::try_from(len)
                    .ok()
                    .and_then(|l| self.at.checked_add(l))
                    .filter(|&e| e <= self.bytes.len())
                    .ok_or_else(|| format!("field {field} of {len} bytes runs past the end"))?;
                let b = &self.bytes[self.at..end];
                self.at = end;
                Value::Bytes(b)
            }
            other => return Err(format!("field {field} has wire type {other}, not 0 or 2")),
        };
        Ok(Some((field, value)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_value_matches_what_etcd_stored() {
        // Bytes from a real etcd 3.4 database: key c, revision 4, lease.
        let stored = b"\n\x01c\x10\x04\x18\x04 \x01*\x0130\x87\xc4\xc2\xf5\xd4\xc7\xe8\x869";
        let kv = KeyValue::decode(stored).unwrap();
        assert_eq!((kv.key, kv.value), (&b"c"[..], &b"3"[..]));
        assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (4, 4, 1));
        let mut out = Vec::new();
        kv.encode(&mut out);
        assert_eq!(out, stored);
        // A tombstone's value holds the key only.
        let tomb = KeyValue::decode(b"\n\x01b").unwrap();
        assert_eq!(
            tomb,
            KeyValue {
                key: b"b",
                ..Default::default()
            }
        );
    }

    #[test]
    fn lease_round_trips_and_negative_ints_survive() {
        let l = Lease {
            id: 0x39_0da2_3d4e_b0a2,
            ttl: 300,
            remaining_ttl: -1,
        };
        let mut out = Vec::new();
        l.encode(&mut out);
        assert_eq!(Lease::decode(&out), Ok(l));
    }

    #[test]
    fn unknown_fields_and_damage_are_refused() {
        assert!(KeyValue::decode(b"\x38\x01")
            .unwrap_err()
            .contains("field 7"));
        assert!(KeyValue::decode(b"\n\x05ab").is_err());
        assert!(KeyValue::decode(b"\x10").is_err());
        assert!(KeyValue::decode(b"\x0b").is_err());
        assert!(Lease::decode(b"\x0a\x00").is_err());
    }
}
