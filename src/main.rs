//! The `basalt` server binary: parses etcd's flags and runs the server.
fn main() {}
