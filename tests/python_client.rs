//! The Python `etcd3` client, driven as a user would, sees the same things
//! from basalt as from a real etcd.

mod support;

use std::path::PathBuf;
use std::process::Command;

use support::{Kind, Server};

/// The virtualenv with `etcd3` that scripts/install-test-deps.sh creates.
fn python() -> PathBuf {
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/py-etcd3/bin/python");
    assert!(
        venv.exists(),
        "{} is missing: run `bash scripts/install-test-deps.sh` first",
        venv.display()
    );
    venv
}

fn run_script(server: &Server) -> String {
    let port = server.endpoint.rsplit(':').next().expect("port");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/etcd3_client.py");
    let out = Command::new(python())
        .arg(script)
        .arg(port)
        // etcd3 0.12 ships old generated protobuf code that only the
        // pure-Python protobuf runtime still accepts.
        .env("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "{:?}: etcd3 script failed:\n{}\nserver log:\n{}",
        server.kind,
        String::from_utf8_lossy(&out.stderr),
        server.log()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn python_etcd3_client_sees_what_it_sees_on_etcd() {
    let etcd = Server::start(Kind::Etcd).await;
    let expected = run_script(&etcd);
    drop(etcd);
    let basalt = Server::start(Kind::Basalt).await;
    let got = run_script(&basalt);
    assert_eq!(got, expected, "python etcd3 transcript differs from etcd's");
}
