//! `basalt-check <file>` re-checks a saved run: exit 0 when it passes, 1
//! when a guarantee is broken, 3 when the file cannot be read.

mod support;

use std::path::PathBuf;
use std::process::Command;

use basalt_check::{History, Recording};
use support::*;

fn saved(name: &str, recording: &Recording) -> PathBuf {
    let path =
        std::env::temp_dir().join(format!("basalt-check-{}-{name}.jsonl", std::process::id()));
    recording.save(&path).expect("saved");
    path
}

fn run(path: &PathBuf) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_basalt-check"))
        .arg(path)
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.code().expect("exited"), text)
}

#[test]
fn a_passing_run_exits_zero() {
    let simulated = simulate(&Config {
        seed: 3,
        ops: 300,
        keys: 3,
        watchers: 2,
        ..Config::default()
    });
    let recording = Recording {
        history: simulated.history,
        watchers: simulated.watchers,
    };
    let path = saved("pass", &recording);
    let (code, text) = run(&path);
    std::fs::remove_file(&path).ok();
    assert_eq!(code, 0, "{text}");
    assert!(text.starts_with("OK"), "{text}");
}

#[test]
fn a_stale_read_exits_one_and_names_the_operations() {
    let history = History::from(vec![
        put(1, 0, 10, "k", "a", 2),
        put(1, 20, 30, "k", "b", 3),
        get(2, 40, 50, "k", Some("a"), 2, 3),
    ]);
    let path = saved(
        "stale",
        &Recording {
            history,
            watchers: vec![],
        },
    );
    let (code, text) = run(&path);
    std::fs::remove_file(&path).ok();
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("NotLinearizable") && text.contains("#2 client 2"),
        "{text}"
    );
}

#[test]
fn an_unreadable_file_exits_three_with_the_line() {
    let path = std::env::temp_dir().join(format!("basalt-check-{}-bad.jsonl", std::process::id()));
    std::fs::write(&path, "{\"op\":{\"client\":1}}\n").unwrap();
    let (code, text) = run(&path);
    std::fs::remove_file(&path).ok();
    assert_eq!(code, 3, "{text}");
    assert!(text.contains(":1:"), "{text}");
}
