//! The developer portal in a real browser: the real `appreg dev` binary on a free port (its
//! embedded storage in a fresh data directory), the real OpenID Connect provider of
//! `tests/oidc-provider` as the DCR provider, and `tests/portal/story.py` (Playwright for Python,
//! pinned in `tests/portal/requirements.txt`, installed once into a cached virtualenv) driving
//! Debian's `/usr/bin/chromium` headless. axe-core (pinned in `tests/portal/package.json`,
//! installed with `npm ci`) checks every page; a screenshot of each step is written under
//! `CARGO_TARGET_TMPDIR/portal/`.
//!
//! Nothing is skipped: a missing chromium, python3 (with venv and pip), Node.js or npm fails the
//! test with what to install. Playwright's own browser download is never used.

use appreg_test_support::oidc::{ensure_npm_package, Mode, OidcProvider};
use serde_json::json;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

mod oidc;
mod second_origin;

const EXE: &str = env!("CARGO_BIN_EXE_appreg");
const CHROMIUM: &str = "/usr/bin/chromium";

fn harness_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/portal")
        .canonicalize()
        .expect("tests/portal is part of the repository")
}

/// Debian's chromium, or a failure that says how to install it.
fn chromium() -> &'static str {
    assert!(
        Path::new(CHROMIUM).is_file(),
        "the portal's browser tests need Debian's chromium at {CHROMIUM}: apt-get install -y chromium"
    );
    CHROMIUM
}

/// axe-core's browser bundle, installed by `npm ci` in `tests/portal`.
fn axe() -> PathBuf {
    let dir = harness_dir();
    ensure_npm_package(&dir, "axe-core");
    let axe = dir.join("node_modules/axe-core/axe.min.js");
    assert!(axe.is_file(), "{} is missing after npm ci", axe.display());
    axe
}

/// A child process killed when dropped, so a failing test leaves no server behind.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `appreg dev` on a free port over a fresh data directory, with `env`; its base URL.
fn start_dev(data: &Path, env: &[(&str, &str)]) -> (Running, String) {
    let data = data.to_str().expect("a UTF-8 path");
    start_appreg(&["dev", "--listen", "127.0.0.1:0", "--data", data], env)
}

/// `appreg ARGS` with `env`, once it says where it listens; its base URL.
fn start_appreg(args: &[&str], env: &[(&str, &str)]) -> (Running, String) {
    let mut child = Command::new(EXE)
        .args(args)
        .env("RUST_LOG", "warn")
        .env("APPREG_LOG_FORMAT", "text")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("appreg starts");
    let stdout = child.stdout.take().unwrap();
    let running = Running(child);
    let mut lines = BufReader::new(stdout).lines();
    let url = loop {
        let line = lines.next().expect("appreg dev printed its URL").unwrap();
        if let Some(url) = line.strip_prefix("appreg listening on ") {
            break url.to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (running, url)
}

/// A fresh directory under `CARGO_TARGET_TMPDIR/portal/` (kept: the screenshots are there).
fn out_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("portal")
        .join(format!("{name}-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `tests/portal/story.py` with `settings`; its output is printed, a failure panics.
fn run_browser(mut settings: serde_json::Value, out: &Path) {
    settings["chromium"] = json!(chromium());
    settings["axe"] = json!(axe());
    settings["out"] = json!(out);
    let python = appreg_test_support::python::venv(
        &harness_dir().join("requirements.txt"),
        "playwright",
        "the portal's browser tests need python3 with venv and pip \
         (Debian: apt-get install python3 python3-venv python3-pip)",
    );
    let output = Command::new(python)
        .arg(harness_dir().join("story.py"))
        .arg(settings.to_string())
        // Never Playwright's own browser download, never the machine's browsers.
        .env("PLAYWRIGHT_BROWSERS_PATH", out.join("no-browsers"))
        .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
        .output()
        .expect("run story.py");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    println!("{text}");
    assert!(
        output.status.success(),
        "the browser run failed ({}); screenshots in {}:\n{text}",
        output.status,
        out.display()
    );
}

#[test]
fn the_seed_story_through_the_portal_in_chromium() {
    chromium();
    let provider = OidcProvider::start(Mode::fixed_token());
    let Mode::InitialAccessToken(initial_access_token) = provider.mode().clone() else {
        unreachable!("fixed-token mode")
    };
    let out = out_dir("story");
    let (_appreg, base) = start_dev(&out.join("data"), &[]);
    run_browser(
        json!({
            "scenario": "story",
            "base": base,
            "discovery": provider.discovery_url(),
            "initial_access_token": initial_access_token,
        }),
        &out,
    );
    let shots = std::fs::read_dir(&out)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "png"))
        })
        .count();
    assert!(
        shots >= 15,
        "a screenshot per step: {shots} in {}",
        out.display()
    );
}

#[test]
fn the_development_sign_in_validates_its_user() {
    let out = out_dir("dev-sign-in");
    let (_appreg, base) = start_dev(&out.join("data"), &[]);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = reqwest::Client::new();
        let refused = client
            .post(format!("{base}/portal/dev/sign-in"))
            .json(&json!({"user": "", "admin": false}))
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 422);
        let problem: serde_json::Value = refused.json().await.unwrap();
        assert_eq!(problem["code"], "validation.failed", "{problem}");
        assert_eq!(problem["errors"][0]["field"], "user", "{problem}");
        let signed = client
            .post(format!("{base}/portal/dev/sign-in"))
            .json(&json!({"user": "carol", "admin": true}))
            .send()
            .await
            .unwrap();
        assert_eq!(signed.status(), 200);
        assert_eq!(signed.headers()["cache-control"], "no-store");
        let token: serde_json::Value = signed.json().await.unwrap();
        let token = token["access_token"].as_str().unwrap();
        // The token is the api's: an administrator's list of archived applications answers.
        let archived = client
            .get(format!(
                "{base}/v1/environments/DEFAULT/applications?status=ARCHIVED"
            ))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(archived.status(), 200);
        let config: serde_json::Value = client
            .get(format!("{base}/portal/config.json"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(config["sign_in"], "development", "{config}");
    });
}
