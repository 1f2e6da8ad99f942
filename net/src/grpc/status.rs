//! gRPC status codes and the `grpc-status` / `grpc-message` trailers.

use http::{HeaderMap, HeaderValue};
use percent_encoding::{percent_encode, AsciiSet, CONTROLS};

/// The canonical gRPC status codes (grpc/doc/statuscodes.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Code {
    Ok = 0,
    Cancelled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
}

impl Code {
    /// Every code, in numeric order (`ALL[c as usize] == c`).
    pub const ALL: [Code; 17] = [
        Code::Ok,
        Code::Cancelled,
        Code::Unknown,
        Code::InvalidArgument,
        Code::DeadlineExceeded,
        Code::NotFound,
        Code::AlreadyExists,
        Code::PermissionDenied,
        Code::ResourceExhausted,
        Code::FailedPrecondition,
        Code::Aborted,
        Code::OutOfRange,
        Code::Unimplemented,
        Code::Internal,
        Code::Unavailable,
        Code::DataLoss,
        Code::Unauthenticated,
    ];

    /// grpc-go's `codes.Code.String()`, which go-grpc-prometheus puts in
    /// the `grpc_code` label (note grpc-go's spelling "Canceled").
    pub fn grpc_go_name(self) -> &'static str {
        match self {
            Code::Ok => "OK",
            Code::Cancelled => "Canceled",
            Code::Unknown => "Unknown",
            Code::InvalidArgument => "InvalidArgument",
            Code::DeadlineExceeded => "DeadlineExceeded",
            Code::NotFound => "NotFound",
            Code::AlreadyExists => "AlreadyExists",
            Code::PermissionDenied => "PermissionDenied",
            Code::ResourceExhausted => "ResourceExhausted",
            Code::FailedPrecondition => "FailedPrecondition",
            Code::Aborted => "Aborted",
            Code::OutOfRange => "OutOfRange",
            Code::Unimplemented => "Unimplemented",
            Code::Internal => "Internal",
            Code::Unavailable => "Unavailable",
            Code::DataLoss => "DataLoss",
            Code::Unauthenticated => "Unauthenticated",
        }
    }
}

/// The outcome of one RPC as the client sees it: a code and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub code: Code,
    pub message: String,
}

/// The gRPC spec percent-encodes everything outside printable ASCII in
/// `grpc-message`, and `%` itself.
const GRPC_MESSAGE: &AsciiSet = &CONTROLS.add(b'%').add(0x7f);

impl Status {
    pub fn new(code: Code, message: impl Into<String>) -> Status {
        Status {
            code,
            message: message.into(),
        }
    }

    pub fn ok() -> Status {
        Status::new(Code::Ok, "")
    }

    /// Writes `grpc-status` (and `grpc-message` when there is one) into
    /// `headers`, used both for trailers and for trailers-only responses.
    pub fn write_to(&self, headers: &mut HeaderMap) {
        headers.insert("grpc-status", HeaderValue::from(self.code as u8 as u16));
        if !self.message.is_empty() {
            let encoded = percent_encode(self.message.as_bytes(), GRPC_MESSAGE).to_string();
            // Percent-encoding leaves only visible ASCII and space, which is
            // always a valid header value; fall back to nothing rather than
            // panic if that ever stopped being true.
            if let Ok(v) = HeaderValue::from_str(&encoded) {
                headers.insert("grpc-message", v);
            }
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.code, self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_is_percent_encoded() {
        let mut h = HeaderMap::new();
        Status::new(Code::InvalidArgument, "50% done\nnext ✓").write_to(&mut h);
        assert_eq!(h["grpc-status"], "3");
        assert_eq!(h["grpc-message"], "50%25 done%0Anext %E2%9C%93");
    }

    #[test]
    fn all_codes_are_in_numeric_order() {
        for (i, c) in Code::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
        }
        assert_eq!(Code::Cancelled.grpc_go_name(), "Canceled");
    }

    #[test]
    fn ok_status_has_no_message_header() {
        let mut h = HeaderMap::new();
        Status::ok().write_to(&mut h);
        assert_eq!(h["grpc-status"], "0");
        assert!(h.get("grpc-message").is_none());
    }
}
