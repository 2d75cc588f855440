//! Python tools the tests drive (the Standard Webhooks receiver, the SMTP server, Playwright):
//! a virtualenv per pinned `requirements.txt`, made once per version of that file.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Runs `command`, failing the test (never skipping it) with `what` and its output unless it
/// succeeds.
fn run_or_panic(command: &mut Command, what: &str) {
    let output = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot start {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The interpreter of a virtualenv with `requirements` installed, named `appreg-<name>-<hash of
/// the file>` in the temporary directory: built in a directory of its own and renamed into place
/// when complete, so concurrent tests never see half an install. `needs` tells what the test
/// needs when `python3 -m venv` fails.
pub fn venv(requirements: &Path, name: &str, needs: &str) -> PathBuf {
    let pinned = std::fs::read(requirements)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", requirements.display()));
    let digest = ring::digest::digest(&ring::digest::SHA256, &pinned);
    let hash: String = digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let venv = std::env::temp_dir().join(format!("appreg-{name}-{hash}"));
    let python = venv.join("bin").join("python");
    let complete = |dir: &Path| dir.join(".appreg-complete").exists();
    if complete(&venv) {
        return python;
    }
    let building = std::env::temp_dir().join(format!(
        "appreg-{name}-{hash}.building-{}-{}",
        std::process::id(),
        uuid::Uuid::now_v7().simple()
    ));
    run_or_panic(
        Command::new("python3").arg("-m").arg("venv").arg(&building),
        needs,
    );
    run_or_panic(
        Command::new(building.join("bin").join("python"))
            .args(["-m", "pip", "install", "--disable-pip-version-check"])
            .args(["--no-input", "--quiet", "-r"])
            .arg(requirements),
        &format!("pip install -r {}", requirements.display()),
    );
    std::fs::write(building.join(".appreg-complete"), b"").unwrap();
    if let Err(e) = std::fs::rename(&building, &venv) {
        // Another test made it meanwhile: that one is used.
        let _ = std::fs::remove_dir_all(&building);
        assert!(
            complete(&venv),
            "cannot move the virtualenv into {}: {e}",
            venv.display()
        );
    }
    python
}
