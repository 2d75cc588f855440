//! `appreg api` with an external issuer refuses to start without an expected audience (the
//! configuration names what is missing), and starts with one.

use super::{temp_dir, Running, EXE};
use appreg_test_support::postgres::fresh_postgres_url;
use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn api(db_url: &str, audience: Option<&str>) -> Command {
    let mut cmd = Command::new(EXE);
    cmd.arg("api")
        .env("APPREG_DATABASE_URL", db_url)
        .env(
            "APPREG_SECRETS_MASTER_KEY",
            "test:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        )
        .env(
            "APPREG_AUTH__ISSUER",
            "https://idp.example.com/realms/portal",
        )
        .env("APPREG_AUTH__JWKS_URL", "http://127.0.0.1:9/certs")
        .env("APPREG_DATA_DIR", temp_dir("api-auth"))
        .env("APPREG_API__LISTEN", "127.0.0.1:0")
        .env("APPREG_LOG_FORMAT", "text")
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1")
        .env_remove("APPREG_AUTH__AUDIENCE")
        .env_remove("APPREG_AUTH__DEV")
        .env_remove("APPREG_CONFIG");
    if let Some(audience) = audience {
        cmd.env("APPREG_AUTH__AUDIENCE", audience);
    }
    cmd
}

#[tokio::test]
async fn an_api_with_an_external_issuer_needs_an_audience() {
    let db_url = fresh_postgres_url().await;
    let mut child = api(&db_url, None)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("appreg api started without auth.audience");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(!status.success());
    assert!(stderr.contains("auth.audience is required"), "{stderr}");

    // With the audience, it starts.
    let mut child = api(&db_url, Some("appreg"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _running = Running(Some(child));
    let line = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find(|l| l.starts_with("appreg listening on"));
    assert!(line.is_some(), "appreg api started with an audience");
}
