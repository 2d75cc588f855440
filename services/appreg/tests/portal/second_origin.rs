//! A page on a second origin (a tiny static server on another port, allowed through
//! `cors_allowed_origins`) that calls the api with `fetch` and follows its events with
//! `EventSource` and a ticket; the same page on a third origin, not allowed, is blocked by the
//! browser and changes nothing.

use super::*;
use std::io::{Read, Write};
use std::net::TcpListener;

fn dev_token(data: &Path, sub: &str) -> String {
    let out = Command::new(EXE)
        .args(["token", "--sub", sub, "--data"])
        .arg(data)
        .output()
        .unwrap();
    assert!(out.status.success(), "appreg token");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn a_page_on_another_origin_uses_fetch_and_event_source_with_a_ticket() {
    chromium();
    let out = out_dir("second-origin");
    let data = out.join("data");
    std::fs::create_dir_all(&data).unwrap();
    // The api's port is known once it runs, and the token is signed with its data directory's
    // key: the pages' servers start first, their configuration filled in through a shared cell.
    let token = dev_token(&data, "dora");
    let api = std::sync::Arc::new(std::sync::OnceLock::<String>::new());
    let allowed = lazy_server(api.clone(), &token);
    let disallowed = lazy_server(api.clone(), &token);
    let (_appreg, base) = start_dev(&data, &[("APPREG_API__CORS_ALLOWED_ORIGINS", &allowed)]);
    api.set(base.clone()).unwrap();
    run_browser(
        json!({
            "scenario": "second_origin",
            "base": base,
            "page": format!("{allowed}/"),
            "blocked_page": format!("{disallowed}/"),
        }),
        &out,
    );
    // Only the allowed origin's application exists.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let list: serde_json::Value = runtime.block_on(async {
        reqwest::Client::new()
            .get(format!(
                "{base}/v1/environments/DEFAULT/applications?size=100"
            ))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    let names: Vec<_> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["name"].as_str())
        .filter(|n| *n == "From another origin")
        .collect();
    assert_eq!(names.len(), 1, "{list}");
}

/// A static server whose `/config.json` names the api once it is known.
fn lazy_server(api: std::sync::Arc<std::sync::OnceLock<String>>, token: &str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let (dir, token) = (harness_dir().join("second-origin"), token.to_string());
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut buffer = [0_u8; 4096];
            let n = stream.read(&mut buffer).unwrap_or(0);
            let request = String::from_utf8_lossy(&buffer[..n]);
            let path = request.split_whitespace().nth(1).unwrap_or("/").to_string();
            let (status, content_type, body) = match path.as_str() {
                "/" => (
                    "200 OK",
                    "text/html",
                    std::fs::read(dir.join("index.html")).unwrap(),
                ),
                "/page.js" => (
                    "200 OK",
                    "text/javascript",
                    std::fs::read(dir.join("page.js")).unwrap(),
                ),
                "/config.json" => (
                    "200 OK",
                    "application/json",
                    json!({"api": api.get().cloned().unwrap_or_default(), "token": token})
                        .to_string()
                        .into_bytes(),
                ),
                _ => ("404 Not Found", "text/plain", b"not found".to_vec()),
            };
            let head = format!(
                "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\ncache-control: no-store\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body);
        }
    });
    origin
}
