//! Build facts for `basalt --version`: the git commit and the compiler.
//! `BASALT_GIT_SHA` set in the environment wins (builds from a tarball);
//! without git or a repository the SHA is reported as "not set".

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=BASALT_GIT_SHA");
    let sha = std::env::var("BASALT_GIT_SHA")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| git(&["rev-parse", "--short", "HEAD"]));
    if let Some(sha) = sha {
        println!("cargo:rustc-env=BASALT_GIT_SHA={sha}");
    }
    // Rebuild when HEAD moves (a worktree's HEAD and the branch it names).
    if let Some(p) = git(&["rev-parse", "--git-path", "HEAD"]) {
        println!("cargo:rerun-if-changed={p}");
    }
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        if let Some(p) = git(&["rev-parse", "--git-path", &branch]) {
            println!("cargo:rerun-if-changed={p}");
        }
    }
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    if let Some(version) = run(&rustc, &["--version"]) {
        println!("cargo:rustc-env=BASALT_RUSTC_VERSION={version}");
    }
}

fn git(args: &[&str]) -> Option<String> {
    run("git", args)
}

fn run(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!text.is_empty()).then_some(text)
}
