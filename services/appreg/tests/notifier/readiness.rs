//! The notifier and its NATS consumer: `/readyz` follows the connection (503 naming NATS while
//! the server is down, 200 again once it is back), and a silent stream (the relay stopped)
//! does not stop deliveries.

use super::{eventually, System};
use std::time::{Duration, Instant};

/// `/readyz`'s status and body, once it answers `want` (within 30 s).
async fn ready_until(url: &str, want: u16) -> String {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = client.get(url).send().await {
            let status = r.status().as_u16();
            let body = r.text().await.unwrap_or_default();
            if status == want {
                return body;
            }
        }
        assert!(Instant::now() < deadline, "{url} never answered {want}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_fails_while_nats_is_down() {
    let mut system = System::start().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let mut notifier = system.notifier_args(&["--metrics-listen", &listen], &[]);
    let url = format!("http://{listen}/readyz");
    ready_until(&url, 200).await;
    system.nats.kill();
    let body = ready_until(&url, 503).await;
    assert!(body.contains("NATS is not connected"), "{body}");
    system.nats.restart();
    ready_until(&url, 200).await;
    notifier.kill().unwrap();
    notifier.wait().unwrap();
    system.relay.cancel();
    system.api.shutdown.cancel();
}

/// With the relay stopped no message comes; the notifier handles the log itself after
/// `notifier.catch_up_after_ms` of silence, so the endpoint still gets the event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_down_the_notifier_handles_the_log_itself() {
    let system = System::start().await;
    let alice = system.token("alice", false);
    let (id, rx, _) = system.app_with_endpoint(&alice).await;
    let mut notifier = system.notifier_with(&[("APPREG_NOTIFIER__CATCH_UP_AFTER_MS", "1000")]);
    let renamed = |name: &'static str| {
        let rx = &rx;
        move || {
            let found = rx
                .records()
                .iter()
                .any(|r| r["type"] == "ApplicationUpdated" && r["data"]["name"] == name);
            async move { found }
        }
    };
    for (name, relay_up) in [("through the relay", true), ("relay down", false)] {
        if !relay_up {
            system.relay.cancel();
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        system.rename(&alice, &id, name).await;
        eventually(&format!("the endpoint gets {name:?}"), renamed(name)).await;
    }
    notifier.kill().unwrap();
    notifier.wait().unwrap();
    system.api.shutdown.cancel();
}
