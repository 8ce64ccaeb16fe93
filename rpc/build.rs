//! Records the git commit being built, for `spdk_get_version`'s `fields.commit`.

use std::process::Command;

fn main() {
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=BALLAST_GIT_COMMIT={commit}");
    // Rebuild when HEAD moves (a new commit or a checkout).
    for f in ["../.git/HEAD", "../.git/refs/heads"] {
        println!("cargo:rerun-if-changed={f}");
    }
}
