//! The gateway's paths, as etcd 3.5's `google.api.http` annotations declare
//! them (`rpc.proto`, `v3lock.proto`, `v3election.proto`): each POST path
//! names one gRPC method and the message types to transcode. The handler is
//! looked up by method name in the executor's [`crate::grpc::Router`] at
//! call time, so a service registered there later is served here as it is
//! over gRPC.

use bytes::Bytes;
use prost::Message;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::json::{requests, to_go_json};
use crate::grpc::{Code, Status};
use crate::proto::etcdserverpb as pb;
use crate::proto::{v3electionpb as election, v3lockpb as lock};

/// How many messages a call takes from one body and sends back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// One request, one response.
    Unary,
    /// One request, a stream of responses (Snapshot, Observe).
    ServerStream,
    /// Every request in the body, a stream of responses (LeaseKeepAlive):
    /// the call is half-closed after the last request, and ends when the
    /// server ends it.
    BidiStream,
    /// Like [`Shape::BidiStream`], but the call is not half-closed: etcd's
    /// Watch outlives its client's half-close (its gateway stream runs until
    /// the HTTP client goes), while basalt's gRPC Watch ends on it.
    Watch,
}

/// One gateway path.
#[derive(Clone, Copy)]
pub struct Route {
    /// `/v3/kv/range`.
    pub http_path: &'static str,
    /// `/etcdserverpb.KV/Range`.
    pub method: &'static str,
    pub shape: Shape,
    /// A JSON body → up to `max` request messages, protobuf-encoded.
    pub decode: fn(body: &[u8], max: usize) -> Result<Vec<Bytes>, Status>,
    /// One protobuf response message → its JSON.
    pub encode: fn(message: &[u8]) -> Result<Vec<u8>, Status>,
}

fn decode<Req>(body: &[u8], max: usize) -> Result<Vec<Bytes>, Status>
where
    Req: Message + DeserializeOwned + Default,
{
    Ok(requests::<Req>(body, max)?
        .iter()
        .map(|r| Bytes::from(r.encode_to_vec()))
        .collect())
}

fn encode<Resp>(message: &[u8]) -> Result<Vec<u8>, Status>
where
    Resp: Message + Serialize + Default,
{
    let resp = Resp::decode(message).map_err(|e| {
        Status::new(
            Code::Internal,
            format!("grpc: failed to unmarshal the received message: {e}"),
        )
    })?;
    to_go_json(&resp)
}

const fn route<Req, Resp>(http_path: &'static str, method: &'static str, shape: Shape) -> Route
where
    Req: Message + DeserializeOwned + Default,
    Resp: Message + Serialize + Default,
{
    Route {
        http_path,
        method,
        shape,
        decode: decode::<Req>,
        encode: encode::<Resp>,
    }
}

const fn unary<Req, Resp>(http_path: &'static str, method: &'static str) -> Route
where
    Req: Message + DeserializeOwned + Default,
    Resp: Message + Serialize + Default,
{
    route::<Req, Resp>(http_path, method, Shape::Unary)
}

/// Every path etcd 3.5 serves under `/v3/`. `/v3/maintenance/hash` is
/// declared for both Hash and HashKV; grpc-gateway serves the first, Hash.
pub static ROUTES: &[Route] = &[
    unary::<pb::RangeRequest, pb::RangeResponse>("/v3/kv/range", "/etcdserverpb.KV/Range"),
    unary::<pb::PutRequest, pb::PutResponse>("/v3/kv/put", "/etcdserverpb.KV/Put"),
    unary::<pb::DeleteRangeRequest, pb::DeleteRangeResponse>(
        "/v3/kv/deleterange",
        "/etcdserverpb.KV/DeleteRange",
    ),
    unary::<pb::TxnRequest, pb::TxnResponse>("/v3/kv/txn", "/etcdserverpb.KV/Txn"),
    unary::<pb::CompactionRequest, pb::CompactionResponse>(
        "/v3/kv/compaction",
        "/etcdserverpb.KV/Compact",
    ),
    route::<pb::WatchRequest, pb::WatchResponse>(
        "/v3/watch",
        "/etcdserverpb.Watch/Watch",
        Shape::Watch,
    ),
    unary::<pb::LeaseGrantRequest, pb::LeaseGrantResponse>(
        "/v3/lease/grant",
        "/etcdserverpb.Lease/LeaseGrant",
    ),
    unary::<pb::LeaseRevokeRequest, pb::LeaseRevokeResponse>(
        "/v3/lease/revoke",
        "/etcdserverpb.Lease/LeaseRevoke",
    ),
    unary::<pb::LeaseRevokeRequest, pb::LeaseRevokeResponse>(
        "/v3/kv/lease/revoke",
        "/etcdserverpb.Lease/LeaseRevoke",
    ),
    route::<pb::LeaseKeepAliveRequest, pb::LeaseKeepAliveResponse>(
        "/v3/lease/keepalive",
        "/etcdserverpb.Lease/LeaseKeepAlive",
        Shape::BidiStream,
    ),
    unary::<pb::LeaseTimeToLiveRequest, pb::LeaseTimeToLiveResponse>(
        "/v3/lease/timetolive",
        "/etcdserverpb.Lease/LeaseTimeToLive",
    ),
    unary::<pb::LeaseTimeToLiveRequest, pb::LeaseTimeToLiveResponse>(
        "/v3/kv/lease/timetolive",
        "/etcdserverpb.Lease/LeaseTimeToLive",
    ),
    unary::<pb::LeaseLeasesRequest, pb::LeaseLeasesResponse>(
        "/v3/lease/leases",
        "/etcdserverpb.Lease/LeaseLeases",
    ),
    unary::<pb::LeaseLeasesRequest, pb::LeaseLeasesResponse>(
        "/v3/kv/lease/leases",
        "/etcdserverpb.Lease/LeaseLeases",
    ),
    unary::<pb::MemberAddRequest, pb::MemberAddResponse>(
        "/v3/cluster/member/add",
        "/etcdserverpb.Cluster/MemberAdd",
    ),
    unary::<pb::MemberRemoveRequest, pb::MemberRemoveResponse>(
        "/v3/cluster/member/remove",
        "/etcdserverpb.Cluster/MemberRemove",
    ),
    unary::<pb::MemberUpdateRequest, pb::MemberUpdateResponse>(
        "/v3/cluster/member/update",
        "/etcdserverpb.Cluster/MemberUpdate",
    ),
    unary::<pb::MemberListRequest, pb::MemberListResponse>(
        "/v3/cluster/member/list",
        "/etcdserverpb.Cluster/MemberList",
    ),
    unary::<pb::MemberPromoteRequest, pb::MemberPromoteResponse>(
        "/v3/cluster/member/promote",
        "/etcdserverpb.Cluster/MemberPromote",
    ),
    unary::<pb::AlarmRequest, pb::AlarmResponse>(
        "/v3/maintenance/alarm",
        "/etcdserverpb.Maintenance/Alarm",
    ),
    unary::<pb::StatusRequest, pb::StatusResponse>(
        "/v3/maintenance/status",
        "/etcdserverpb.Maintenance/Status",
    ),
    unary::<pb::DefragmentRequest, pb::DefragmentResponse>(
        "/v3/maintenance/defragment",
        "/etcdserverpb.Maintenance/Defragment",
    ),
    unary::<pb::HashRequest, pb::HashResponse>(
        "/v3/maintenance/hash",
        "/etcdserverpb.Maintenance/Hash",
    ),
    route::<pb::SnapshotRequest, pb::SnapshotResponse>(
        "/v3/maintenance/snapshot",
        "/etcdserverpb.Maintenance/Snapshot",
        Shape::ServerStream,
    ),
    unary::<pb::MoveLeaderRequest, pb::MoveLeaderResponse>(
        "/v3/maintenance/transfer-leadership",
        "/etcdserverpb.Maintenance/MoveLeader",
    ),
    unary::<pb::DowngradeRequest, pb::DowngradeResponse>(
        "/v3/maintenance/downgrade",
        "/etcdserverpb.Maintenance/Downgrade",
    ),
    unary::<pb::AuthEnableRequest, pb::AuthEnableResponse>(
        "/v3/auth/enable",
        "/etcdserverpb.Auth/AuthEnable",
    ),
    unary::<pb::AuthDisableRequest, pb::AuthDisableResponse>(
        "/v3/auth/disable",
        "/etcdserverpb.Auth/AuthDisable",
    ),
    unary::<pb::AuthStatusRequest, pb::AuthStatusResponse>(
        "/v3/auth/status",
        "/etcdserverpb.Auth/AuthStatus",
    ),
    unary::<pb::AuthenticateRequest, pb::AuthenticateResponse>(
        "/v3/auth/authenticate",
        "/etcdserverpb.Auth/Authenticate",
    ),
    unary::<pb::AuthUserAddRequest, pb::AuthUserAddResponse>(
        "/v3/auth/user/add",
        "/etcdserverpb.Auth/UserAdd",
    ),
    unary::<pb::AuthUserGetRequest, pb::AuthUserGetResponse>(
        "/v3/auth/user/get",
        "/etcdserverpb.Auth/UserGet",
    ),
    unary::<pb::AuthUserListRequest, pb::AuthUserListResponse>(
        "/v3/auth/user/list",
        "/etcdserverpb.Auth/UserList",
    ),
    unary::<pb::AuthUserDeleteRequest, pb::AuthUserDeleteResponse>(
        "/v3/auth/user/delete",
        "/etcdserverpb.Auth/UserDelete",
    ),
    unary::<pb::AuthUserChangePasswordRequest, pb::AuthUserChangePasswordResponse>(
        "/v3/auth/user/changepw",
        "/etcdserverpb.Auth/UserChangePassword",
    ),
    unary::<pb::AuthUserGrantRoleRequest, pb::AuthUserGrantRoleResponse>(
        "/v3/auth/user/grant",
        "/etcdserverpb.Auth/UserGrantRole",
    ),
    unary::<pb::AuthUserRevokeRoleRequest, pb::AuthUserRevokeRoleResponse>(
        "/v3/auth/user/revoke",
        "/etcdserverpb.Auth/UserRevokeRole",
    ),
    unary::<pb::AuthRoleAddRequest, pb::AuthRoleAddResponse>(
        "/v3/auth/role/add",
        "/etcdserverpb.Auth/RoleAdd",
    ),
    unary::<pb::AuthRoleGetRequest, pb::AuthRoleGetResponse>(
        "/v3/auth/role/get",
        "/etcdserverpb.Auth/RoleGet",
    ),
    unary::<pb::AuthRoleListRequest, pb::AuthRoleListResponse>(
        "/v3/auth/role/list",
        "/etcdserverpb.Auth/RoleList",
    ),
    unary::<pb::AuthRoleDeleteRequest, pb::AuthRoleDeleteResponse>(
        "/v3/auth/role/delete",
        "/etcdserverpb.Auth/RoleDelete",
    ),
    unary::<pb::AuthRoleGrantPermissionRequest, pb::AuthRoleGrantPermissionResponse>(
        "/v3/auth/role/grant",
        "/etcdserverpb.Auth/RoleGrantPermission",
    ),
    unary::<pb::AuthRoleRevokePermissionRequest, pb::AuthRoleRevokePermissionResponse>(
        "/v3/auth/role/revoke",
        "/etcdserverpb.Auth/RoleRevokePermission",
    ),
    unary::<lock::LockRequest, lock::LockResponse>("/v3/lock/lock", "/v3lockpb.Lock/Lock"),
    unary::<lock::UnlockRequest, lock::UnlockResponse>("/v3/lock/unlock", "/v3lockpb.Lock/Unlock"),
    unary::<election::CampaignRequest, election::CampaignResponse>(
        "/v3/election/campaign",
        "/v3electionpb.Election/Campaign",
    ),
    unary::<election::ProclaimRequest, election::ProclaimResponse>(
        "/v3/election/proclaim",
        "/v3electionpb.Election/Proclaim",
    ),
    unary::<election::LeaderRequest, election::LeaderResponse>(
        "/v3/election/leader",
        "/v3electionpb.Election/Leader",
    ),
    route::<election::LeaderRequest, election::LeaderResponse>(
        "/v3/election/observe",
        "/v3electionpb.Election/Observe",
        Shape::ServerStream,
    ),
    unary::<election::ResignRequest, election::ResignResponse>(
        "/v3/election/resign",
        "/v3electionpb.Election/Resign",
    ),
];

/// The route for `path`, after etcd's rewrite of `/v3beta/` to `/v3/`
/// (which etcd 3.4 and 3.5 both still do).
pub fn find(path: &str) -> Option<&'static Route> {
    let path = match path.strip_prefix("/v3beta/") {
        Some(rest) => return ROUTES.iter().find(|r| r.http_path[4..] == *rest),
        None => path,
    };
    ROUTES.iter().find(|r| r.http_path == path)
}

/// Whether `path` is the gateway's to answer (etcd mounts it on `/v3/`,
/// so `/v3` redirects there; `/v3beta/` is rewritten to it first).
pub fn is_gateway_path(path: &str) -> bool {
    path == "/v3" || path.starts_with("/v3/") || path.starts_with("/v3beta/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_is_unique_and_every_method_is_a_grpc_path() {
        let mut paths: Vec<&str> = ROUTES.iter().map(|r| r.http_path).collect();
        paths.sort_unstable();
        paths.dedup();
        assert_eq!(paths.len(), ROUTES.len());
        for r in ROUTES {
            assert!(r.http_path.starts_with("/v3/"), "{}", r.http_path);
            let (service, method) = r.method[1..].rsplit_once('/').unwrap();
            assert!(service.contains('.') && !method.is_empty(), "{}", r.method);
        }
        assert_eq!(ROUTES.len(), 50);
    }

    #[test]
    fn v3beta_is_v3() {
        assert_eq!(
            find("/v3beta/kv/range").unwrap().method,
            "/etcdserverpb.KV/Range"
        );
        assert_eq!(
            find("/v3/kv/range").unwrap().method,
            "/etcdserverpb.KV/Range"
        );
        assert!(find("/v3alpha/kv/range").is_none());
        assert!(find("/v3/kv/nope").is_none());
        assert_eq!(
            find("/v3/maintenance/hash").unwrap().method,
            "/etcdserverpb.Maintenance/Hash"
        );
        assert!(
            is_gateway_path("/v3beta/x")
                && is_gateway_path("/v3")
                && !is_gateway_path("/v3beta")
                && !is_gateway_path("/metrics")
        );
    }
}
