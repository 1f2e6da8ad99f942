//! What clients did: one [`Operation`] per request, with when it was called,
//! when it returned, and how it ended.
//!
//! An operation ends in one of three ways ([`Outcome`]): with a response;
//! `Failed`, when the recorder knows it did not take effect (etcd refused it
//! before proposing it); or `Indeterminate`, when the client gave up (timeout,
//! connection lost) and it may have taken effect, once, at any time after
//! its call, or never. An indeterminate operation's return time is ignored:
//! for the checker it returns at +infinity.
//!
//! Every request names one key. Times are monotonic nanoseconds from one
//! clock shared by every client of the run.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::bytes::Bytes;
use crate::error::Error;
use crate::report::offset;

/// Who issued an operation; for reports only.
pub type ClientId = u64;

/// An operation's place in its [`History`]: `#N` is the N-th operation
/// (0-based), in a history file the N-th `op` record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OpId(pub usize);

impl fmt::Display for OpId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// One client request and how it ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    pub client: ClientId,
    /// When the client sent the request (monotonic nanoseconds).
    #[serde(rename = "call")]
    pub called_at: u64,
    /// When the client got the response or gave up; ignored unless the
    /// outcome is `Ok`.
    #[serde(rename = "return")]
    pub returned_at: u64,
    pub request: Request,
    pub outcome: Outcome,
}

/// A request on one key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    /// A linearizable Range of one key.
    Get {
        key: Bytes,
    },
    Put {
        key: Bytes,
        value: Bytes,
    },
    /// A DeleteRange of one key.
    Delete {
        key: Bytes,
    },
    /// A Txn: `if compare(key) then put(key, value) else get(key)`.
    CasPut {
        key: Bytes,
        compare: Compare,
        value: Bytes,
    },
}

/// The condition of a [`Request::CasPut`], with etcd's meaning for a key
/// that does not exist: its mod_revision is 0, and a value compare fails.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compare {
    /// `mod_revision(key) == expected`.
    ModRevision(i64),
    /// `value(key) == expected`.
    Value(Bytes),
}

/// How an operation ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok(Response),
    /// Definitely did not take effect.
    Failed,
    /// May have taken effect, at any time after its call, or never.
    Indeterminate,
}

/// The response to a request; its variant matches the request's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    Get(GetResponse),
    Put(PutResponse),
    Delete(DeleteResponse),
    CasPut(CasPutResponse),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetResponse {
    /// `None` when the key does not exist.
    pub value: Option<Bytes>,
    /// 0 when the key does not exist.
    pub mod_revision: i64,
    pub header_revision: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutResponse {
    /// The revision the put created: the key's new mod_revision.
    pub header_revision: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteResponse {
    pub deleted: i64,
    /// The revision the delete created, or when nothing was deleted the
    /// store's revision (etcd does not bump it).
    pub header_revision: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CasPutResponse {
    pub succeeded: bool,
    /// When succeeded, the revision the put created.
    pub header_revision: i64,
    /// When failed, what the else-branch get returned: `None` if the key
    /// does not exist.
    #[serde(default)]
    pub current: Option<Current>,
}

/// A key's value and mod_revision, as a failed [`Request::CasPut`] read it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Current {
    pub value: Bytes,
    pub mod_revision: i64,
}

/// Every operation of a run, in the order recorded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    pub ops: Vec<Operation>,
}

impl History {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, op: Operation) -> OpId {
        self.ops.push(op);
        OpId(self.ops.len() - 1)
    }

    pub fn op(&self, id: OpId) -> &Operation {
        &self.ops[id.0]
    }

    pub fn iter(&self) -> impl Iterator<Item = (OpId, &Operation)> {
        self.ops
            .iter()
            .enumerate()
            .map(|(index, op)| (OpId(index), op))
    }

    /// The earliest call: reports print times relative to it.
    pub fn origin(&self) -> u64 {
        self.ops.iter().map(|op| op.called_at).min().unwrap_or(0)
    }

    /// Refuses a history the recorder got wrong (a response that does not
    /// match its request, a return before the call), as opposed to one the
    /// server got wrong, which is for the checkers to judge.
    pub fn validate(&self) -> Result<(), Error> {
        for (id, op) in self.iter() {
            op.validate()
                .map_err(|reason| Error::InvalidOperation { op: id, reason })?;
        }
        Ok(())
    }

    /// One line per operation, times relative to [`History::origin`].
    pub fn describe(&self, id: OpId) -> String {
        self.op(id).describe(id, self.origin())
    }
}

impl From<Vec<Operation>> for History {
    fn from(ops: Vec<Operation>) -> Self {
        History { ops }
    }
}

impl Request {
    pub fn get(key: impl Into<Bytes>) -> Self {
        Request::Get { key: key.into() }
    }

    pub fn put(key: impl Into<Bytes>, value: impl Into<Bytes>) -> Self {
        Request::Put {
            key: key.into(),
            value: value.into(),
        }
    }

    pub fn delete(key: impl Into<Bytes>) -> Self {
        Request::Delete { key: key.into() }
    }

    /// etcd's compare-and-swap on mod_revision (0: "if the key is absent").
    pub fn cas_put(
        key: impl Into<Bytes>,
        expected_mod_revision: i64,
        value: impl Into<Bytes>,
    ) -> Self {
        Request::CasPut {
            key: key.into(),
            compare: Compare::ModRevision(expected_mod_revision),
            value: value.into(),
        }
    }

    pub fn key(&self) -> &Bytes {
        match self {
            Request::Get { key }
            | Request::Put { key, .. }
            | Request::Delete { key }
            | Request::CasPut { key, .. } => key,
        }
    }

    /// The value this request writes, if it writes one.
    pub fn written_value(&self) -> Option<&Bytes> {
        match self {
            Request::Put { value, .. } | Request::CasPut { value, .. } => Some(value),
            Request::Get { .. } | Request::Delete { .. } => None,
        }
    }
}

impl Response {
    pub fn get(value: Option<&str>, mod_revision: i64, header_revision: i64) -> Self {
        Response::Get(GetResponse {
            value: value.map(Bytes::from),
            mod_revision,
            header_revision,
        })
    }

    pub fn put(header_revision: i64) -> Self {
        Response::Put(PutResponse { header_revision })
    }

    pub fn delete(deleted: i64, header_revision: i64) -> Self {
        Response::Delete(DeleteResponse {
            deleted,
            header_revision,
        })
    }

    pub fn cas_succeeded(header_revision: i64) -> Self {
        Response::CasPut(CasPutResponse {
            succeeded: true,
            header_revision,
            current: None,
        })
    }

    /// A failed compare; `current` is the key's (value, mod_revision).
    pub fn cas_failed(header_revision: i64, current: Option<(&str, i64)>) -> Self {
        Response::CasPut(CasPutResponse {
            succeeded: false,
            header_revision,
            current: current.map(|(value, mod_revision)| Current {
                value: value.into(),
                mod_revision,
            }),
        })
    }

    pub fn header_revision(&self) -> i64 {
        match self {
            Response::Get(r) => r.header_revision,
            Response::Put(r) => r.header_revision,
            Response::Delete(r) => r.header_revision,
            Response::CasPut(r) => r.header_revision,
        }
    }

    /// Whether the operation created a revision (its header revision).
    pub fn wrote(&self) -> bool {
        match self {
            Response::Get(_) => false,
            Response::Put(_) => true,
            Response::Delete(r) => r.deleted > 0,
            Response::CasPut(r) => r.succeeded,
        }
    }
}

impl Operation {
    pub fn new(
        client: ClientId,
        called_at: u64,
        returned_at: u64,
        request: Request,
        outcome: Outcome,
    ) -> Self {
        Operation {
            client,
            called_at,
            returned_at,
            request,
            outcome,
        }
    }

    pub fn key(&self) -> &Bytes {
        self.request.key()
    }

    pub fn response(&self) -> Option<&Response> {
        match &self.outcome {
            Outcome::Ok(response) => Some(response),
            Outcome::Failed | Outcome::Indeterminate => None,
        }
    }

    /// The revision this operation is known to have created: an
    /// acknowledged put, successful compare-and-put, or delete of a key.
    pub fn written_revision(&self) -> Option<i64> {
        self.response()
            .filter(|r| r.wrote())
            .map(Response::header_revision)
    }

    fn validate(&self) -> Result<(), String> {
        let Outcome::Ok(response) = &self.outcome else {
            return Ok(());
        };
        if self.returned_at < self.called_at {
            return Err(format!(
                "returned at {} before its call at {}",
                self.returned_at, self.called_at
            ));
        }
        let matches = matches!(
            (&self.request, response),
            (Request::Get { .. }, Response::Get(_))
                | (Request::Put { .. }, Response::Put(_))
                | (Request::Delete { .. }, Response::Delete(_))
                | (Request::CasPut { .. }, Response::CasPut(_))
        );
        if !matches {
            return Err(format!(
                "response {response:?} does not answer request {:?}",
                self.request
            ));
        }
        if let Response::CasPut(r) = response {
            if r.succeeded && r.current.is_some() {
                return Err("a succeeded compare-and-put carries no current value".into());
            }
        }
        Ok(())
    }

    /// `#12 client 2 [+1.200ms, +1.900ms] put "k" = "v" → revision 40`,
    /// times relative to `origin`.
    pub fn describe(&self, id: OpId, origin: u64) -> String {
        let call = offset(self.called_at, origin);
        let span = match self.outcome {
            Outcome::Ok(_) => format!("[{call}, {}]", offset(self.returned_at, origin)),
            Outcome::Failed | Outcome::Indeterminate => format!("[{call}, ∞)"),
        };
        format!(
            "{id} client {} {span} {} → {}",
            self.client, self.request, self.outcome
        )
    }
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Request::Get { key } => write!(f, "get {key}"),
            Request::Put { key, value } => write!(f, "put {key} = {value}"),
            Request::Delete { key } => write!(f, "delete {key}"),
            Request::CasPut {
                key,
                compare,
                value,
            } => {
                write!(f, "if {compare} then put {key} = {value}")
            }
        }
    }
}

impl fmt::Display for Compare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Compare::ModRevision(expected) => write!(f, "mod_revision == {expected}"),
            Compare::Value(expected) => write!(f, "value == {expected}"),
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Ok(response) => write!(f, "{response}"),
            Outcome::Failed => f.write_str("failed (did not take effect)"),
            Outcome::Indeterminate => f.write_str("indeterminate"),
        }
    }
}

impl fmt::Display for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Response::Get(GetResponse {
                value: Some(value),
                mod_revision,
                header_revision,
            }) => {
                write!(
                    f,
                    "{value} @ mod_revision {mod_revision}, header {header_revision}"
                )
            }
            Response::Get(GetResponse {
                value: None,
                mod_revision,
                header_revision,
            }) => {
                write!(
                    f,
                    "absent (mod_revision {mod_revision}), header {header_revision}"
                )
            }
            Response::Put(r) => write!(f, "revision {}", r.header_revision),
            Response::Delete(r) => write!(f, "deleted {}, header {}", r.deleted, r.header_revision),
            Response::CasPut(CasPutResponse {
                succeeded: true,
                header_revision,
                ..
            }) => {
                write!(f, "succeeded, revision {header_revision}")
            }
            Response::CasPut(CasPutResponse {
                succeeded: false,
                header_revision,
                current,
            }) => match current {
                Some(current) => write!(
                    f,
                    "compare failed, current {} @ mod_revision {}, header {header_revision}",
                    current.value, current.mod_revision
                ),
                None => write!(f, "compare failed, key absent, header {header_revision}"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape_is_the_documented_one() {
        let op = Operation::new(
            3,
            100,
            250,
            Request::cas_put("k", 0, "v"),
            Outcome::Ok(Response::cas_failed(9, Some(("w", 4)))),
        );
        let json = serde_json::to_string(&op).unwrap();
        assert_eq!(
            json,
            r#"{"client":3,"call":100,"return":250,"request":{"cas_put":{"key":"k","compare":{"mod_revision":0},"value":"v"}},"outcome":{"ok":{"cas_put":{"succeeded":false,"header_revision":9,"current":{"value":"w","mod_revision":4}}}}}"#
        );
        assert_eq!(serde_json::from_str::<Operation>(&json).unwrap(), op);
        let lost = r#"{"client":1,"call":5,"return":9,"request":{"get":{"key":"k"}},"outcome":"indeterminate"}"#;
        assert_eq!(
            serde_json::from_str::<Operation>(lost).unwrap().outcome,
            Outcome::Indeterminate
        );
    }

    #[test]
    fn validate_refuses_what_the_recorder_got_wrong() {
        let wrong_kind = Operation::new(1, 0, 1, Request::get("k"), Outcome::Ok(Response::put(3)));
        let backwards = Operation::new(
            1,
            5,
            1,
            Request::put("k", "v"),
            Outcome::Ok(Response::put(3)),
        );
        for op in [wrong_kind, backwards] {
            assert!(History::from(vec![op]).validate().is_err());
        }
        let lost = Operation::new(1, 5, 1, Request::put("k", "v"), Outcome::Indeterminate);
        assert!(History::from(vec![lost]).validate().is_ok());
    }
}
