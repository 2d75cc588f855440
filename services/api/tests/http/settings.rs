//! `/settings/client-registration`: read by anyone, changed by administrators, an event only
//! when something changes.

use crate::helpers::TestApp;
use crate::on_both;
use serde_json::{json, Value};

const PATH: &str = "settings/client-registration";

fn settings(simple: bool, web: bool, dcr: bool) -> Value {
    json!({
        "allowed_types": {"simple": simple, "browser": true, "web": web, "native": true, "backend_to_backend": true},
        "dcr_enabled": dcr
    })
}

async fn read_and_change_settings(app: TestApp) {
    let alice = app.token("alice", false);
    let admin = app.token("root", true);

    // Defaults: every type allowed, DCR off; anyone may read them.
    let r = app.get(PATH, &alice).await;
    r.assert_status(200);
    assert_eq!(r.body, settings(true, true, false));
    assert_eq!(
        app.get(PATH, &admin).await.body,
        settings(true, true, false)
    );

    let mut count = app.event_count().await;
    // A non-admin may not change them.
    let r = app.put(PATH, &alice, settings(true, true, true)).await;
    r.assert_problem(403, "permission.admin_only");
    app.assert_unchanged(count, "PUT by a non-admin").await;

    // PUT of the current value: 200, no event, no consistency token.
    let r = app.put(PATH, &admin, settings(true, true, false)).await;
    r.assert_status(200);
    assert_eq!(r.body, settings(true, true, false));
    assert!(r.header("x-consistency-token").is_none());
    app.assert_unchanged(count, "PUT without change").await;

    // A change: one event, echoed, and what GET returns to everyone.
    let r = app.put(PATH, &admin, settings(true, false, true)).await;
    r.assert_status(200);
    assert_eq!(r.body, settings(true, false, true));
    assert!(r.header("x-consistency-token").is_some());
    count = app.assert_appended(count, 1, "settings change").await;
    assert_eq!(
        app.get(PATH, &alice).await.body,
        settings(true, false, true)
    );
    let events = app.stream("settings-DEFAULT").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event_type, "ClientRegistrationSettingsUpdated");
    assert_eq!(events[0].metadata["actor"], "root");
    // The same again: nothing new.
    app.put(PATH, &admin, settings(true, false, true))
        .await
        .assert_status(200);
    app.assert_unchanged(count, "repeated PUT").await;
    app.put(PATH, &admin, settings(false, false, true))
        .await
        .assert_status(200);
    app.assert_appended(count, 1, "second change").await;
    app.stop().await;
}

async fn malformed_settings(app: TestApp) {
    let admin = app.token("root", true);
    let count = app.event_count().await;

    app.post_raw(PATH, &admin, "application/json", b"{".to_vec())
        .await
        .assert_problem(405, "request.method_not_allowed");
    let raw = |ct: &str, body: &str| {
        app.send(
            app.client
                .put(app.url(PATH))
                .bearer_auth(&admin)
                .header("content-type", ct)
                .body(body.to_string()),
        )
    };
    raw("application/json", "{\"dcr_enabled\": true")
        .await
        .assert_problem(400, "request.malformed_json");
    raw("application/json", "")
        .await
        .assert_problem(400, "request.malformed_json");
    raw("text/plain", &settings(true, true, true).to_string())
        .await
        .assert_problem(415, "request.unsupported_media_type");

    // Wrong types name the field.
    let mut wrong = settings(true, true, true);
    wrong["dcr_enabled"] = json!("yes");
    app.put(PATH, &admin, wrong)
        .await
        .assert_invalid(&[("dcr_enabled", "type.invalid")]);
    let mut wrong = settings(true, true, true);
    wrong["allowed_types"]["web"] = json!(1);
    app.put(PATH, &admin, wrong)
        .await
        .assert_invalid(&[("allowed_types.web", "type.invalid")]);
    app.put(
        PATH,
        &admin,
        json!({"allowed_types": [], "dcr_enabled": true}),
    )
    .await
    .assert_invalid(&[("allowed_types", "type.invalid")]);
    // Missing and unknown fields are refused, and named.
    app.put(PATH, &admin, json!({"dcr_enabled": true}))
        .await
        .assert_invalid(&[("allowed_types", "field.required")]);
    let mut partial = settings(true, true, true);
    partial["allowed_types"]
        .as_object_mut()
        .unwrap()
        .remove("native");
    app.put(PATH, &admin, partial)
        .await
        .assert_invalid(&[("allowed_types.native", "field.required")]);
    let mut extra = settings(true, true, true);
    extra["allow_everything"] = json!(true);
    app.put(PATH, &admin, extra)
        .await
        .assert_invalid(&[("allow_everything", "field.unknown")]);
    let mut extra = settings(true, true, true);
    extra["allowed_types"]["spa"] = json!(true);
    app.put(PATH, &admin, extra)
        .await
        .assert_invalid(&[("allowed_types.spa", "field.unknown")]);
    let big = json!({"allowed_types": {}, "dcr_enabled": true, "pad": "x".repeat(70 * 1024)});
    app.put(PATH, &admin, big)
        .await
        .assert_problem(413, "request.too_large");

    app.assert_unchanged(count, "malformed settings").await;
    assert_eq!(
        app.get(PATH, &admin).await.body,
        settings(true, true, false)
    );
    app.stop().await;
}

on_both!(read_and_change_settings, malformed_settings);
