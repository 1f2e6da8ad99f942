//! Traffic profiles: `kubernetes` (what kube-apiserver sends) and
//! `list-storm` (many concurrent full LISTs).

pub mod kubernetes;
pub mod list_storm;
pub mod listing;
