//! JSON as etcd's gateway reads and writes it (grpc-gateway's `JSONPb`
//! with `OrigName`, on Go's `encoding/json`).
//!
//! Writing: the serde impls of [`crate::proto`] (pbjson) already give
//! proto field names, 64-bit integers as strings, bytes as base64 and no
//! zero-valued fields; what is left is Go's string escaping (`<`, `>`, `&`,
//! U+2028 and U+2029 as `\u` escapes) and compact output.
//!
//! Reading: Go decodes the first JSON value of the body and ignores what
//! follows it; an empty body or `null` is the empty request. Errors carry
//! Go's wording where a client could see it often (a cut-short body is
//! `unexpected EOF`).

use std::io;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::grpc::{Code, Status};

/// serde_json's compact output with Go's extra escapes, so a member named
/// `a<b` reads `a\u003cb` as etcd writes it.
struct GoFormatter;

impl serde_json::ser::Formatter for GoFormatter {
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            let escape = match c {
                '<' => "\\u003c",
                '>' => "\\u003e",
                '&' => "\\u0026",
                '\u{2028}' => "\\u2028",
                '\u{2029}' => "\\u2029",
                _ => continue,
            };
            writer.write_all(&fragment.as_bytes()[start..i])?;
            writer.write_all(escape.as_bytes())?;
            start = i + c.len_utf8();
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }
}

/// `value` as Go's `encoding/json` writes it.
pub fn to_go_json<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, Status> {
    let mut out = Vec::with_capacity(128);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, GoFormatter);
    value.serialize(&mut ser).map_err(|e| {
        Status::new(
            Code::Internal,
            format!("basalt: cannot write the response as JSON: {e}"),
        )
    })?;
    Ok(out)
}

/// Up to `max` requests, one after another in `body` (a streaming call's
/// body: `{"ID":1}{"ID":1}` is two keep-alives). Stops quietly at the
/// first error after at least one request, as Go's decoder loop does when
/// its stream ends.
pub fn requests<T: DeserializeOwned + Default>(body: &[u8], max: usize) -> Result<Vec<T>, Status> {
    let mut out = Vec::new();
    let mut values = serde_json::Deserializer::from_slice(body).into_iter::<serde_json::Value>();
    while out.len() < max {
        let value = match values.next() {
            None => break,
            Some(Ok(v)) => v,
            Some(Err(_)) if !out.is_empty() => break,
            Some(Err(e)) => return Err(invalid_json(&e, body)),
        };
        if value.is_null() {
            out.push(T::default());
            continue;
        }
        if !value.is_object() {
            return Err(Status::new(
                Code::InvalidArgument,
                format!(
                    "json: cannot unmarshal {} into Go value of type map[string]json.RawMessage",
                    go_kind(&value)
                ),
            ));
        }
        out.push(serde_json::from_value(value).map_err(|e| invalid_field(&e))?);
    }
    Ok(out)
}

/// An enum given a name it does not have, as etcd 3.5's decoder says it:
/// `unknown value "\"BOGUS\"" for enum etcdserverpb.RangeRequest.SortOrder`.
/// The decoder names the value and the names it expected; the enum whose
/// names those are is found in the descriptors the protos were built into.
fn unknown_enum_value(text: &str) -> Option<String> {
    let rest = text.strip_prefix("unknown variant ")?;
    let mut quoted = rest.split('`').skip(1).step_by(2);
    let value = quoted.next()?;
    let expected: Vec<&str> = quoted.collect();
    let name = enum_names()
        .iter()
        .find(|(_, values)| *values == expected)
        .map(|(name, _)| name.as_str())?;
    let raw = format!("{value:?}");
    Some(format!("unknown value {raw:?} for enum {name}"))
}

/// Every enum of the protos: (full name, its value names in order).
fn enum_names() -> &'static [(String, Vec<String>)] {
    use prost::Message;
    static NAMES: std::sync::OnceLock<Vec<(String, Vec<String>)>> = std::sync::OnceLock::new();
    NAMES.get_or_init(|| {
        let bytes = include_bytes!(concat!(env!("OUT_DIR"), "/descriptors.bin"));
        let Ok(set) = prost_types::FileDescriptorSet::decode(&bytes[..]) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for file in &set.file {
            let package = file.package();
            for e in &file.enum_type {
                out.push(enum_entry(package, e));
            }
            for m in &file.message_type {
                collect_enums(&format!("{package}.{}", m.name()), m, &mut out);
            }
        }
        out
    })
}

fn collect_enums(
    scope: &str,
    m: &prost_types::DescriptorProto,
    out: &mut Vec<(String, Vec<String>)>,
) {
    for e in &m.enum_type {
        out.push(enum_entry(scope, e));
    }
    for nested in &m.nested_type {
        collect_enums(&format!("{scope}.{}", nested.name()), nested, out);
    }
}

fn enum_entry(scope: &str, e: &prost_types::EnumDescriptorProto) -> (String, Vec<String>) {
    (
        format!("{scope}.{}", e.name()),
        e.value.iter().map(|v| v.name().to_owned()).collect(),
    )
}

/// How Go names a JSON value's kind in its unmarshal errors.
fn go_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "bool",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

/// A body that is not JSON: Go's `unexpected EOF` when it is cut short,
/// otherwise its "invalid character" message for the offending byte.
fn invalid_json(e: &serde_json::Error, body: &[u8]) -> Status {
    let message = if e.is_eof() {
        "unexpected EOF".to_owned()
    } else {
        match offending_byte(e, body) {
            Some(b) => format!(
                "invalid character {} looking for beginning of value",
                go_quote_char(b)
            ),
            None => e.to_string(),
        }
    };
    Status::new(Code::InvalidArgument, message)
}

/// The byte serde_json stopped at (it reports 1-based line and column).
fn offending_byte(e: &serde_json::Error, body: &[u8]) -> Option<u8> {
    let line = body.split(|b| *b == b'\n').nth(e.line().checked_sub(1)?)?;
    line.get(e.column().checked_sub(1)?).copied()
}

/// Go's `quoteChar`: `'x'`, with `'\''` and `'"'` spelled as Go does.
fn go_quote_char(b: u8) -> String {
    match b {
        b'\'' => "'\\''".to_owned(),
        b'"' => "'\"'".to_owned(),
        b if b.is_ascii_graphic() || b == b' ' => format!("'{}'", b as char),
        b => format!("'\\x{b:02x}'"),
    }
}

/// A JSON object whose fields do not fit the request type, in Go's words
/// where the decoder's error says enough to find them (bytes fields; other
/// type errors keep the decoder's own message).
fn invalid_field(e: &serde_json::Error) -> Status {
    let text = e.to_string();
    Status::new(Code::InvalidArgument, go_field_error(&text).unwrap_or(text))
}

fn go_field_error(text: &str) -> Option<String> {
    if let Some(m) = unknown_enum_value(text) {
        return Some(m);
    }
    // The base64 decoder: "Invalid symbol 33, offset 0."
    if text.starts_with("Invalid symbol ") || text.starts_with("Invalid last symbol ") {
        let offset = text.rsplit("offset ").next()?.trim_end_matches('.');
        let offset: usize = offset.parse().ok()?;
        return Some(format!("illegal base64 data at input byte {offset}"));
    }
    // A bytes field given another JSON type: "invalid type: integer `1`,
    // expected a base64 string".
    let unexpected = text
        .strip_prefix("invalid type: ")?
        .strip_suffix(", expected a base64 string")?;
    let kind = match unexpected.split(' ').next()? {
        "integer" | "floating" => "number",
        "boolean" => "bool",
        "map" => "object",
        "sequence" => "array",
        _ => return None,
    };
    Some(format!(
        "json: cannot unmarshal {kind} into Go value of type []uint8"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::etcdserverpb::{
        LeaseGrantRequest, RangeRequest, ResponseHeader, StatusResponse,
    };
    use crate::proto::mvccpb::KeyValue;

    /// The first request in `body`, as grpc-gateway decodes a unary call's
    /// body: an empty body or `null` is the empty request, and whatever
    /// follows the first value is ignored.
    pub fn first_request<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, Status> {
        Ok(requests::<T>(body, 1)?.pop().unwrap_or_default())
    }

    #[test]
    fn writes_proto_names_strings_for_64_bit_and_base64_bytes() {
        let kv = KeyValue {
            key: b"foo".to_vec(),
            create_revision: 2,
            mod_revision: 3,
            version: 2,
            value: b"bar".to_vec(),
            lease: 0,
        };
        assert_eq!(
            String::from_utf8(to_go_json(&kv).unwrap()).unwrap(),
            r#"{"key":"Zm9v","create_revision":"2","mod_revision":"3","version":"2","value":"YmFy"}"#
        );
        let status = StatusResponse {
            header: Some(ResponseHeader {
                cluster_id: 15118495548433857066,
                ..Default::default()
            }),
            version: "3.5.17".into(),
            db_size: 20480,
            ..Default::default()
        };
        assert_eq!(
            String::from_utf8(to_go_json(&status).unwrap()).unwrap(),
            r#"{"header":{"cluster_id":"15118495548433857066"},"version":"3.5.17","dbSize":"20480"}"#
        );
    }

    #[test]
    fn escapes_as_go_does() {
        let s = "a<b>&c\u{2028}d\"é";
        assert_eq!(
            String::from_utf8(to_go_json(s).unwrap()).unwrap(),
            r#""a\u003cb\u003e\u0026c\u2028d\"é""#
        );
    }

    #[test]
    fn reads_both_name_styles_and_numbers_as_strings() {
        let r: RangeRequest =
            first_request(br#"{"key":"Zm9v","keysOnly":true,"limit":"5","range_end":"Zm9w"}"#)
                .unwrap();
        assert_eq!(r.key, b"foo");
        assert!(r.keys_only);
        assert_eq!(r.limit, 5);
        assert_eq!(r.range_end, b"fop");
        let g: LeaseGrantRequest = first_request(br#"{"TTL":"60","ID":1234}"#).unwrap();
        assert_eq!((g.ttl, g.id), (60, 1234));
        // Unknown fields are ignored, as Go's decoder does.
        let r: RangeRequest = first_request(br#"{"key":"Zm9v","bogus":{"x":1}}"#).unwrap();
        assert_eq!(r.key, b"foo");
        let r: RangeRequest = first_request(br#"{"sort_order":"DESCEND","sortTarget":2}"#).unwrap();
        assert_eq!((r.sort_order, r.sort_target), (2, 2));
    }

    #[test]
    fn empty_null_and_trailing_bytes_read_as_go_does() {
        assert_eq!(
            first_request::<RangeRequest>(b"").unwrap(),
            RangeRequest::default()
        );
        assert_eq!(
            first_request::<RangeRequest>(b" null ").unwrap(),
            RangeRequest::default()
        );
        let r: RangeRequest = first_request(br#"{"key":"Zm9v"}x"#).unwrap();
        assert_eq!(r.key, b"foo");
        let two: Vec<LeaseGrantRequest> = requests(br#"{"ID":1}{"ID":2} "#, 10).unwrap();
        assert_eq!(two.len(), 2);
    }

    #[test]
    fn bad_bodies_get_go_messages() {
        let e = first_request::<RangeRequest>(br#"{"key":"#).unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (Code::InvalidArgument, "unexpected EOF")
        );
        let e = first_request::<RangeRequest>(b"[]").unwrap_err();
        assert_eq!(
            e.message,
            "json: cannot unmarshal array into Go value of type map[string]json.RawMessage"
        );
        let e = first_request::<RangeRequest>(b"xyz").unwrap_err();
        assert_eq!(
            e.message,
            "invalid character 'x' looking for beginning of value"
        );
        let e = first_request::<RangeRequest>(br#"{"key":123}"#).unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (
                Code::InvalidArgument,
                "json: cannot unmarshal number into Go value of type []uint8"
            )
        );
        let e = first_request::<RangeRequest>(br#"{"key":["a"]}"#).unwrap_err();
        assert_eq!(
            e.message,
            "json: cannot unmarshal array into Go value of type []uint8"
        );
        let e = first_request::<RangeRequest>(br#"{"key":"Zm!v"}"#).unwrap_err();
        assert_eq!(e.message, "illegal base64 data at input byte 2");
        let e = first_request::<RangeRequest>(br#"{"sort_order":"BOGUS"}"#).unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (
                Code::InvalidArgument,
                r#"unknown value "\"BOGUS\"" for enum etcdserverpb.RangeRequest.SortOrder"#
            )
        );
    }
}
