//! Captures the git commit the `orderd` binary is built from, for `orderd_build_info{revision}`
//! (`ORDERD_GIT_REVISION` at compile time): `ORDERD_GIT_REVISION` from the environment when
//! set (a build from a source tarball), else `git rev-parse HEAD`, else `unknown` (no git, or
//! not a repository).
//!
//! Rebuilds: cargo reruns this script only when the environment variable changes or when the
//! commit may have moved: `HEAD` itself (a checkout), the ref `HEAD` points to (a commit on
//! the branch) and `packed-refs` (a `git gc` that packs that ref). Paths come from
//! `git rev-parse --git-path`, which knows worktrees (their `HEAD` is per worktree, their refs
//! are shared). Without git, nothing is watched but the variable, so nothing rebuilds. A ref
//! that exists only in `packed-refs` is not watched as a file (cargo reruns a script on every
//! build for a missing path): the first commit on such a branch shows once `HEAD` or
//! `packed-refs` changes, or after `touch gateway/build.rs`.

use std::path::PathBuf;
use std::process::Command;

const OVERRIDE: &str = "ORDERD_GIT_REVISION";

fn main() {
    println!("cargo:rerun-if-env-changed={OVERRIDE}");
    let revision = match std::env::var(OVERRIDE) {
        Ok(value) if !value.trim().is_empty() => value.trim().to_string(),
        _ => {
            watch_git();
            git(&["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".to_string())
        }
    };
    println!("cargo:rustc-env={OVERRIDE}={revision}");
}

/// Asks cargo to rerun this script when the checked-out commit may have changed.
fn watch_git() {
    let Some(head) = git_path("HEAD") else { return };
    println!("cargo:rerun-if-changed={}", head.display());
    if let Some(packed) = git_path("packed-refs") {
        // Watching a file that does not exist yet would rerun the script on every build.
        if packed.exists() {
            println!("cargo:rerun-if-changed={}", packed.display());
        }
    }
    // `HEAD` names a branch (`refs/heads/main`) unless it is detached (then HEAD itself holds
    // the commit and is already watched).
    if let Some(reference) = git(&["symbolic-ref", "-q", "HEAD"]) {
        if let Some(path) = git_path(&reference) {
            if path.exists() {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
    }
}

/// `git rev-parse --git-path <name>`, absolute.
fn git_path(name: &str) -> Option<PathBuf> {
    let path = PathBuf::from(git(&["rev-parse", "--git-path", name])?);
    if path.is_absolute() {
        Some(path)
    } else {
        Some(PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR")?).join(path))
    }
}

/// Runs git in the crate's directory; its trimmed output on success.
fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git")
        .args(args)
        .current_dir(std::env::var_os("CARGO_MANIFEST_DIR")?)
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8(output.stdout).ok()?.trim().to_string();
    (!text.is_empty()).then_some(text)
}
