//! Stamps the git commit into the build for `tickcast_build_info` (the metrics endpoint):
//! `TICKCAST_GIT_COMMIT` from the environment if set (a build from a tarball or a
//! container image without `.git` can pass it), else `git rev-parse --short=12 HEAD`,
//! else `unknown`. A build never fails for want of git.

use std::path::Path;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8(output.stdout).ok()?.trim().to_owned();
    (!text.is_empty()).then_some(text)
}

fn main() {
    println!("cargo:rerun-if-env-changed=TICKCAST_GIT_COMMIT");
    let commit = std::env::var("TICKCAST_GIT_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| {
            // Rebuild when HEAD moves: HEAD itself (a checkout) and the branch it names
            // (a commit). Only files that exist: cargo reruns the script every build
            // for a missing one.
            let mut watched = vec![git(&["rev-parse", "--git-path", "HEAD"])];
            if let Some(branch) = git(&["rev-parse", "--symbolic-full-name", "HEAD"]) {
                watched.push(git(&["rev-parse", "--git-path", &branch]));
                watched.push(git(&["rev-parse", "--git-path", "packed-refs"]));
            }
            for path in watched.into_iter().flatten() {
                if Path::new(&path).exists() {
                    println!("cargo:rerun-if-changed={path}");
                }
            }
            git(&["rev-parse", "--short=12", "HEAD"])
        })
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=TICKCAST_GIT_COMMIT={commit}");
}
