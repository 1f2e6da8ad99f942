//! basalt-net: etcd v3 gRPC API over h2 on glommio.
