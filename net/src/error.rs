//! The one error type of basalt-net, and the one place where every error a
//! client can see is mapped to the gRPC code and message etcd returns for
//! it (etcd's `api/v3rpc/rpctypes`), so clients react exactly as with etcd.

use basalt_engine::mvcc::MvccError;

use crate::grpc::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    // ---- client errors: etcd's texts, verbatim ----
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    #[error("etcdserver: key not found")]
    KeyNotFound,
    #[error("etcdserver: value is provided")]
    ValueProvided,
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    #[error("etcdserver: invalid sort option")]
    InvalidSortOption,
    /// Not an etcd error: etcd does not check the enums of a Compare.
    #[error("basalt: unknown compare result or target")]
    InvalidCompare,
    #[error("etcdserver: too many requests")]
    TooManyRequests,
    #[error("etcdserver: request is too large")]
    RequestTooLarge,
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted,
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRevision,
    #[error("etcdserver: mvcc: database space exceeded")]
    NoSpace,
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
    #[error("etcdserver: member not found")]
    MemberNotFound,
    #[error("etcdserver: member ID already exist")]
    MemberExists,
    #[error("etcdserver: Peer URLs already exists")]
    PeerUrlExists,
    #[error("etcdserver: re-configuration failed due to not enough started members")]
    NotEnoughStartedMembers,
    #[error("etcdserver: given member URLs are invalid")]
    MemberBadUrls,
    #[error("etcdserver: can only promote a learner member")]
    MemberNotLearner,
    #[error("etcdserver: can only promote a learner member which is in sync with leader")]
    LearnerNotReady,
    #[error("etcdserver: too many learner members in cluster")]
    TooManyLearners,
    #[error("etcdserver: unhealthy cluster")]
    Unhealthy,
    #[error("etcdserver: rpc not supported for learner")]
    NotSupportedForLearner,
    #[error("etcdserver: authentication is not enabled")]
    AuthNotEnabled,
    #[error("etcdserver: root user does not exist")]
    RootUserNotExist,
    #[error("etcdserver: root user does not have root role")]
    RootRoleNotExist,
    #[error("etcdserver: user name already exists")]
    UserAlreadyExist,
    #[error("etcdserver: user name is empty")]
    UserEmpty,
    #[error("etcdserver: user name not found")]
    UserNotFound,
    #[error("etcdserver: role name already exists")]
    RoleAlreadyExist,
    #[error("etcdserver: role name not found")]
    RoleNotFound,
    #[error("etcdserver: role name is empty")]
    RoleEmpty,
    #[error("etcdserver: authentication failed, invalid user ID or password")]
    AuthFailed,
    #[error("etcdserver: permission denied")]
    PermissionDenied,
    #[error("etcdserver: role is not granted to the user")]
    RoleNotGranted,
    #[error("etcdserver: permission is not granted to the role")]
    PermissionNotGranted,
    #[error("etcdserver: invalid auth token")]
    InvalidAuthToken,
    #[error("etcdserver: invalid auth management")]
    InvalidAuthMgmt,
    #[error("etcdserver: revision of auth store is old")]
    AuthOldRevision,
    #[error("etcdserver: server stopped")]
    Stopped,
    #[error("etcdserver: not capable")]
    NotCapable,
    #[error("etcdserver: corrupt cluster")]
    Corrupt,
    #[error("etcdserver: no leader")]
    NoLeader,
    #[error("etcdserver: request timed out")]
    Timeout,
    #[error("etcdserver: request timed out, possibly due to previous leader failure")]
    TimeoutLeaderFail,
    #[error("etcdserver: request timed out, possibly due to connection lost")]
    TimeoutConnectionLost,
    #[error("etcdserver: leader changed")]
    LeaderChanged,
    #[error("etcdserver: not leader")]
    NotLeader,
    #[error("etcdserver: bad leader transferee")]
    BadLeaderTransferee,
    #[error("etcdserver: request timed out, leader transfer took too long")]
    LeaderTransferTimeout,

    // ---- server-side failures ----
    #[error("storage: {0}")]
    Storage(MvccError),
    #[error("wal: {0}")]
    Wal(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A TLS file or setting that cannot be used (etcd's words).
    #[error("{0}")]
    Tls(String),
    /// A snapshot file that is not one basalt streamed, or is damaged.
    #[error("snapshot file: {0}")]
    SnapshotFile(String),
    /// An executor failed to start or stopped with an error.
    #[error("{0}")]
    Startup(String),
}

impl Error {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// The gRPC code etcd answers this error with.
    pub fn code(&self) -> Code {
        use Error::*;
        match self {
            EmptyKey | KeyNotFound | ValueProvided | LeaseProvided | TooManyOps | DuplicateKey
            | InvalidSortOption | InvalidCompare | RequestTooLarge | MemberBadUrls | UserEmpty
            | RoleEmpty | AuthFailed | InvalidAuthMgmt | AuthOldRevision => Code::InvalidArgument,
            PermissionDenied => Code::PermissionDenied,
            InvalidAuthToken => Code::Unauthenticated,
            RootUserNotExist | RootRoleNotExist | UserAlreadyExist | UserNotFound
            | RoleAlreadyExist | RoleNotFound | RoleNotGranted | PermissionNotGranted => {
                Code::FailedPrecondition
            }
            Compacted | FutureRevision | LeaseTtlTooLarge => Code::OutOfRange,
            NoSpace | TooManyRequests => Code::ResourceExhausted,
            LeaseNotFound | MemberNotFound => Code::NotFound,
            LeaseExists
            | AuthNotEnabled
            | MemberExists
            | PeerUrlExists
            | NotEnoughStartedMembers
            | MemberNotLearner
            | LearnerNotReady
            | TooManyLearners => Code::FailedPrecondition,
            Stopped
            | NotCapable
            | NoLeader
            | Timeout
            | TimeoutLeaderFail
            | TimeoutConnectionLost
            | LeaderChanged
            | LeaderTransferTimeout
            | Unhealthy
            | NotSupportedForLearner => Code::Unavailable,
            NotLeader | BadLeaderTransferee => Code::FailedPrecondition,
            Corrupt => Code::DataLoss,
            Storage(_) | Wal(_) | Io { .. } | Config(_) | Tls(_) | Startup(_) | SnapshotFile(_) => {
                Code::Internal
            }
        }
    }

    pub fn status(&self) -> Status {
        Status::new(self.code(), self.to_string())
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        e.status()
    }
}

impl From<MvccError> for Error {
    fn from(e: MvccError) -> Error {
        match e {
            MvccError::Compacted { .. } => Error::Compacted,
            MvccError::FutureRevision => Error::FutureRevision,
            MvccError::LeaseNotFound(_) => Error::LeaseNotFound,
            MvccError::LeaseExists(_) => Error::LeaseExists,
            MvccError::KeyNotFound => Error::KeyNotFound,
            other => Error::Storage(other),
        }
    }
}

impl From<MvccError> for Status {
    fn from(e: MvccError) -> Status {
        Error::from(e).status()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_client_errors_map_to_etcd_statuses() {
        let s: Status = MvccError::Compacted {
            requested: 1,
            compacted: 5,
        }
        .into();
        assert_eq!(s.code, Code::OutOfRange);
        assert_eq!(
            s.message,
            "etcdserver: mvcc: required revision has been compacted"
        );
        let s: Status = MvccError::LeaseNotFound(7).into();
        assert_eq!(
            (s.code, s.message.as_str()),
            (Code::NotFound, "etcdserver: requested lease not found")
        );
        let s: Status = MvccError::KeyNotFound.into();
        assert_eq!(
            (s.code, s.message.as_str()),
            (Code::InvalidArgument, "etcdserver: key not found")
        );
    }

    #[test]
    fn validation_errors_are_invalid_argument() {
        for e in [
            Error::EmptyKey,
            Error::TooManyOps,
            Error::DuplicateKey,
            Error::RequestTooLarge,
        ] {
            assert_eq!(e.code(), Code::InvalidArgument, "{e}");
        }
        assert_eq!(Error::NoSpace.code(), Code::ResourceExhausted);
    }
}
