//! The read model under bursts: batches larger than one set-based statement's chunk are
//! projected whole, with every membership row.

use crate::helpers::TestApp;
use crate::on_both;
use serde_json::json;

async fn a_burst_of_creates_is_projected_whole(app: TestApp) {
    let alice = app.token("alice", false);
    let admin = app.token("root", true);
    for round in 0..9 {
        let creates = (0..50).map(|i| {
            app.post(
                "applications",
                &alice,
                json!({"name": format!("burst {round}-{i}"), "type": "simple", "client_id": format!("c-{round}-{i}")}),
            )
        });
        for r in futures::future::join_all(creates).await {
            r.assert_status(201);
        }
    }
    let all = app.get("applications?size=100&page=5", &admin).await;
    all.assert_status(200);
    assert_eq!(all.body["total"], 450);
    assert_eq!(all.body["items"].as_array().unwrap().len(), 50);
    let mine = app.get("applications?size=100", &alice).await;
    assert_eq!(
        mine.body["total"], 450,
        "every application has its member row"
    );
    for item in mine.body["items"].as_array().unwrap() {
        assert_eq!(item["role"], "PRIMARY_OWNER");
        assert_eq!(item["owner"]["id"], "alice");
    }
    app.stop().await;
}

on_both!(a_burst_of_creates_is_projected_whole);
