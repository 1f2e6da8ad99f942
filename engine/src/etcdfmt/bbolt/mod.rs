//! bbolt's file format: just enough of it to read what etcd writes and to
//! write files etcd's tools accept. Written from the format's description
//! (see `page`), not from bbolt's code.

pub mod page;
pub mod reader;
pub mod writer;

pub use page::PAGE_SIZE;
pub use reader::{bucket_of, Bucket, Db, Entry};
pub use writer::{plan, write, BucketSource, BucketSpec, Plan};
