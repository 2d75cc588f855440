//! Python tools the tests drive (the Standard Webhooks receiver, the SMTP server, Playwright):
//! a virtualenv per pinned `requirements.txt`, made once per version of that file.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Runs `command`, failing the test (never skipping it) with `what` and its output unless it
/// succeeds; returns what it printed.
fn run_or_panic(command: &mut Command, what: &str) -> Vec<u8> {
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
    let mut printed = output.stdout;
    printed.extend(output.stderr);
    printed
}

/// The interpreter of a virtualenv with `requirements` installed, made by `python3`
/// ([`venv_with`] for another interpreter or child environment).
pub fn venv(requirements: &Path, name: &str, needs: &str) -> PathBuf {
    venv_with(requirements, name, needs, OsStr::new("python3"), &|_| {})
}

/// The interpreter of a virtualenv with `requirements` installed by `interpreter`, named
/// `appreg-<name>-<hash of the file and the interpreter's version>` in the temporary directory:
/// built in a directory of its own and renamed into place when complete, so concurrent tests
/// never see half an install. `child` prepares each command it runs (its environment: a
/// proxy for pip, say). `needs` tells what the test needs when the interpreter or `venv` fails.
pub fn venv_with(
    requirements: &Path,
    name: &str,
    needs: &str,
    interpreter: &OsStr,
    child: &dyn Fn(&mut Command),
) -> PathBuf {
    let command = |program: &OsStr| {
        let mut command = Command::new(program);
        child(&mut command);
        command
    };
    let mut key = std::fs::read(requirements)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", requirements.display()));
    key.extend(run_or_panic(command(interpreter).arg("--version"), needs));
    let digest = ring::digest::digest(&ring::digest::SHA256, &key);
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
    eprintln!(
        "building the virtualenv {} (pip install -r {})",
        venv.display(),
        requirements.display()
    );
    run_or_panic(
        command(interpreter).arg("-m").arg("venv").arg(&building),
        needs,
    );
    run_or_panic(
        command(building.join("bin").join("python").as_os_str())
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
