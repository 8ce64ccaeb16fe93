//! Records the git commit being built, for `spdk_get_version`'s `fields.commit`.

use std::path::PathBuf;
use std::process::Command;

/// `git ARGS`' trimmed output, if git ran and printed something.
fn git(args: &[&str]) -> Option<String> {
    Command::new("git")
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn main() {
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=BALLAST_GIT_COMMIT={commit}");
    // Rebuild when HEAD moves (a new commit or a checkout): HEAD, and the branch it names.
    // Git says where they are: in a linked worktree `.git` is a file, HEAD sits in the
    // worktree's git dir and the branches in the common one. Only paths that exist are
    // named: cargo reruns a script whose rerun-if-changed path is missing on every build
    // (and rebuilds this crate and everything above it).
    println!("cargo:rerun-if-changed=build.rs");
    let abs = |what: &str| git(&["rev-parse", "--path-format=absolute", what]).map(PathBuf::from);
    let mut watch = Vec::new();
    if let Some(dir) = abs("--git-dir") {
        watch.push(dir.join("HEAD"));
    }
    if let Some(common) = abs("--git-common-dir") {
        // the branch's own ref file; while it is only packed, the folder its file will be
        // made in (a commit on any branch then reruns this script too)
        match git(&["rev-parse", "--symbolic-full-name", "HEAD"]).map(|b| common.join(b)) {
            Some(f) if f.exists() => watch.push(f),
            _ => watch.push(common.join("refs/heads")),
        }
        watch.push(common.join("packed-refs"));
    }
    for f in watch.iter().filter(|f| f.exists()) {
        println!("cargo:rerun-if-changed={}", f.display());
    }
}
