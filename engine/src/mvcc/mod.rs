//! etcd's MVCC key-value semantics on top of `engine::btree`.

mod error;
mod types;

pub use error::MvccError;
pub use types::*;
