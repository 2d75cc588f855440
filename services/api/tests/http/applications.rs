use crate::helpers::TestApp;
use crate::on_both;
use serde_json::{json, Value};

async fn create_get_list_simple(app: TestApp) {
    let alice = app.token("alice", false);
    let r = app
        .post(
            "applications",
            &alice,
            json!({"name": "  Shop  ", "type": "simple", "client_id": "shop-1"}),
        )
        .await;
    r.assert_status(201);
    assert!(r.header("x-consistency-token").is_some());
    assert!(r.header("x-request-id").is_some());
    let id = r.body["id"].as_str().unwrap().to_string();
    assert_eq!(r.body["name"], "Shop");
    assert_eq!(r.body["status"], "ACTIVE");
    assert_eq!(r.body["role"], "PRIMARY_OWNER");
    assert_eq!(r.body["owner"]["id"], "alice");
    assert_eq!(r.body["client_id"], "shop-1");

    let got = app.get(&format!("applications/{id}"), &alice).await;
    got.assert_status(200);
    assert_eq!(got.body["name"], "Shop");
    assert_eq!(got.body["version"], 1);

    let list = app.get("applications", &alice).await;
    list.assert_status(200);
    assert_eq!(list.body["total"], 1);
    assert_eq!(list.body["items"][0]["id"], id.as_str());

    // Bob is not a member: 404, and his list is empty.
    let bob = app.token("bob", false);
    app.get(&format!("applications/{id}"), &bob)
        .await
        .assert_problem(404, "application.not_found");
    assert_eq!(app.get("applications", &bob).await.body["total"], 0);
    app.stop().await;
}

on_both!(create_get_list_simple);

/// The event types of an application's stream, in order.
async fn event_types(app: &TestApp, id: &str) -> Vec<String> {
    app.stream(&format!("application-{id}"))
        .await
        .into_iter()
        .map(|e| e.event_type)
        .collect()
}

async fn simple_create_with_and_without_client_id(app: TestApp) {
    let alice = app.token("alice", false);
    let before = app.event_count().await;
    let r = app
        .post(
            "applications",
            &alice,
            json!({"name": "Plain", "type": "simple", "description": "d"}),
        )
        .await;
    r.assert_status(201);
    assert_eq!(r.body["client_id"], Value::Null);
    assert_eq!(r.body["description"], "d");
    assert_eq!(r.body["type"], "simple");
    assert_eq!(
        r.body["registration"],
        Value::Null,
        "simple applications register no client"
    );
    assert_eq!(r.body["grant_types"], json!([]));
    assert_eq!(r.body["response_types"], json!([]));
    assert_eq!(r.body["redirect_uris"], json!([]));
    assert_eq!(r.body["version"], 1);
    assert_eq!(r.body["permissions"]["DEFINITION"], "CRUD");
    let id = r.body["id"].as_str().unwrap();
    let uuid = uuid::Uuid::parse_str(id).unwrap();
    assert_eq!(uuid.get_version_num(), 7, "ids are UUIDv7");
    assert_eq!(
        r.header("location").unwrap(),
        format!("/v1/environments/DEFAULT/applications/{id}")
    );
    for k in ["created_at", "updated_at"] {
        chrono::DateTime::parse_from_rfc3339(r.body[k].as_str().unwrap()).unwrap();
    }
    assert_eq!(event_types(&app, id).await, ["ApplicationCreated"]);

    let r = app
        .post(
            "applications",
            &alice,
            json!({"name": "With id", "type": "simple", "client_id": "my-client.1"}),
        )
        .await;
    r.assert_status(201);
    assert_eq!(r.body["client_id"], "my-client.1");
    app.assert_appended(before, 2, "two simple creates").await;
    app.stop().await;
}

async fn oauth_types_need_dcr(app: TestApp) {
    let alice = app.token("alice", false);
    let before = app.event_count().await;
    let bodies = [
        json!({"name": "b", "type": "browser", "redirect_uris": ["https://spa.example/cb"]}),
        json!({"name": "w", "type": "web", "redirect_uris": ["https://web.example/cb"]}),
        json!({"name": "n", "type": "native", "redirect_uris": ["com.example:/cb"]}),
        json!({"name": "s", "type": "backend_to_backend"}),
    ];
    for body in &bodies {
        let r = app.post("applications", &alice, body.clone()).await;
        r.assert_invalid(&[("type", "type.dcr_disabled")]);
        assert!(r.body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains(body["type"].as_str().unwrap()));
    }
    app.assert_unchanged(before, "OAuth creates while DCR is off")
        .await;

    app.enable_dcr().await;
    let before = app.event_count().await;
    let expected_grants = [
        json!(["authorization_code"]),
        json!(["authorization_code"]),
        json!(["authorization_code"]),
        json!(["client_credentials"]),
    ];
    let expected_responses = [json!(["code"]), json!(["code"]), json!(["code"]), json!([])];
    for (i, body) in bodies.iter().enumerate() {
        let r = app.post("applications", &alice, body.clone()).await;
        assert_eq!(r.status, 202, "{body}: {}", r.body);
        assert_eq!(r.body["status"], "ACTIVE");
        assert_eq!(r.body["type"], body["type"]);
        assert_eq!(r.body["registration"]["state"], "REGISTERING");
        assert_eq!(
            r.body["client_id"],
            Value::Null,
            "the provider issues the client_id later"
        );
        assert_eq!(
            r.body["grant_types"], expected_grants[i],
            "default grant types of {}",
            body["type"]
        );
        assert_eq!(r.body["response_types"], expected_responses[i]);
        assert_eq!(r.body["role"], "PRIMARY_OWNER");
        assert_eq!(r.body["version"], 2);
        assert!(r.header("x-consistency-token").is_some());
        let id = r.body["id"].as_str().unwrap();
        assert!(r.header("location").unwrap().ends_with(id));
        assert_eq!(
            event_types(&app, id).await,
            ["ApplicationCreated", "DcrRegistrationRequested"]
        );
        let got = app.get(&format!("applications/{id}"), &alice).await;
        got.assert_status(200);
        assert_eq!(got.body["registration"]["state"], "REGISTERING");
        let history = app.get(&format!("applications/{id}/history"), &alice).await;
        let types: Vec<&str> = history.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["ApplicationCreated", "DcrRegistrationRequested"]);
    }
    app.assert_appended(before, 8, "four OAuth creates").await;

    // Response types follow the grants: implicit adds token and id_token; grants are
    // deduplicated.
    let r = app
        .post(
            "applications",
            &alice,
            json!({"name": "imp", "type": "web", "redirect_uris": ["https://web.example/cb", "https://web.example/cb"],
                   "grant_types": ["implicit", "authorization_code", "refresh_token", "implicit"],
                   "client_uri": "https://web.example", "logo_uri": "https://web.example/logo.png"}),
        )
        .await;
    r.assert_status(202);
    assert_eq!(
        r.body["grant_types"],
        json!(["authorization_code", "implicit", "refresh_token"])
    );
    assert_eq!(
        r.body["response_types"],
        json!(["code", "token", "id_token"])
    );
    assert_eq!(r.body["redirect_uris"], json!(["https://web.example/cb"]));
    assert_eq!(r.body["client_uri"], "https://web.example");
    assert_eq!(r.body["logo_uri"], "https://web.example/logo.png");
    let r = app
        .post(
            "applications",
            &alice,
            json!({"name": "spa", "type": "browser", "redirect_uris": ["https://spa.example/cb"], "grant_types": ["implicit"]}),
        )
        .await;
    r.assert_status(202);
    assert_eq!(r.body["grant_types"], json!(["implicit"]));
    assert_eq!(r.body["response_types"], json!(["token", "id_token"]));
    let r = app
        .post(
            "applications",
            &alice,
            json!({"name": "nat", "type": "native", "redirect_uris": ["http://127.0.0.1:7000/cb"], "grant_types": ["authorization_code", "password"]}),
        )
        .await;
    r.assert_status(202);
    assert_eq!(
        r.body["grant_types"],
        json!(["authorization_code", "password"])
    );
    assert_eq!(r.body["response_types"], json!(["code"]));
    app.stop().await;
}

async fn settings_drive_the_types(app: TestApp) {
    let admin = app.token("root", true);
    let alice = app.token("alice", false);
    let types = |r: &crate::helpers::Resp| -> Vec<String> {
        r.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["type"].as_str().unwrap().to_string())
            .collect()
    };

    // DCR off: only simple can be created.
    let r = app.get("application-types", &alice).await;
    r.assert_status(200);
    assert_eq!(types(&r), ["simple"]);
    assert_eq!(r.body["items"][0]["requires_redirect_uris"], false);
    assert_eq!(r.body["items"][0]["allowed_grant_types"], json!([]));

    app.enable_dcr().await;
    let r = app.get("application-types", &alice).await;
    assert_eq!(
        types(&r),
        ["simple", "browser", "web", "native", "backend_to_backend"]
    );
    let by_type = |t: &str| {
        r.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["type"] == t)
            .unwrap()
            .clone()
    };
    let web = by_type("web");
    assert_eq!(
        web["allowed_grant_types"],
        json!(["authorization_code", "refresh_token", "implicit"])
    );
    assert_eq!(web["default_grant_types"], json!(["authorization_code"]));
    assert_eq!(web["mandatory_grant_types"], json!(["authorization_code"]));
    assert_eq!(web["requires_redirect_uris"], true);
    let browser = by_type("browser");
    assert_eq!(
        browser["allowed_grant_types"],
        json!(["authorization_code", "implicit"])
    );
    assert_eq!(browser["mandatory_grant_types"], json!([]));
    let native = by_type("native");
    assert_eq!(
        native["allowed_grant_types"],
        json!([
            "authorization_code",
            "refresh_token",
            "password",
            "implicit"
        ])
    );
    let b2b = by_type("backend_to_backend");
    assert_eq!(b2b["allowed_grant_types"], json!(["client_credentials"]));
    assert_eq!(b2b["default_grant_types"], json!(["client_credentials"]));
    assert_eq!(b2b["mandatory_grant_types"], json!(["client_credentials"]));
    assert_eq!(b2b["requires_redirect_uris"], false);

    // Disallow web and simple: gone from the list, refused on create with type.not_allowed.
    let body = json!({
        "allowed_types": {"simple": false, "browser": true, "web": false, "native": true, "backend_to_backend": true},
        "dcr_enabled": true
    });
    app.put("settings/client-registration", &admin, body)
        .await
        .assert_status(200);
    assert_eq!(
        types(&app.get("application-types", &alice).await),
        ["browser", "native", "backend_to_backend"]
    );
    let before = app.event_count().await;
    let r = app
        .post(
            "applications",
            &alice,
            json!({"name": "w", "type": "web", "redirect_uris": ["https://w.example/cb"]}),
        )
        .await;
    r.assert_invalid(&[("type", "type.not_allowed")]);
    let r = app
        .post(
            "applications",
            &alice,
            json!({"name": "s", "type": "simple"}),
        )
        .await;
    r.assert_invalid(&[("type", "type.not_allowed")]);
    // Admins are bound by the settings too.
    let r = app
        .post(
            "applications",
            &admin,
            json!({"name": "s", "type": "simple"}),
        )
        .await;
    r.assert_invalid(&[("type", "type.not_allowed")]);
    app.assert_unchanged(before, "creates of disallowed types")
        .await;
    app.post(
        "applications",
        &alice,
        json!({"name": "m2m", "type": "backend_to_backend"}),
    )
    .await
    .assert_status(202);

    // simple is honoured whether or not DCR is on: DCR off + simple allowed → simple only.
    let body = json!({
        "allowed_types": {"simple": true, "browser": true, "web": false, "native": true, "backend_to_backend": true},
        "dcr_enabled": false
    });
    app.put("settings/client-registration", &admin, body)
        .await
        .assert_status(200);
    assert_eq!(
        types(&app.get("application-types", &alice).await),
        ["simple"]
    );
    let r = app
        .post(
            "applications",
            &alice,
            json!({"name": "m2m", "type": "backend_to_backend"}),
        )
        .await;
    r.assert_invalid(&[("type", "type.dcr_disabled")]);
    // Existing applications of a type that is no longer allowed stay readable.
    let list = app.get("applications", &alice).await;
    assert_eq!(list.body["total"], 1);
    app.stop().await;
}

async fn update_definition(app: TestApp) {
    let alice = app.token("alice", false);
    let r = app
        .post(
            "applications",
            &alice,
            json!({"name": "Shop", "type": "simple", "description": "first", "client_id": "shop"}),
        )
        .await;
    r.assert_status(201);
    let id = r.body["id"].as_str().unwrap().to_string();
    let path = format!("applications/{id}");
    let created_at = r.body["created_at"].clone();
    let mut count = app.event_count().await;

    // Name only: the rest is unchanged.
    let r = app.put(&path, &alice, json!({"name": "  Shop 2 "})).await;
    r.assert_status(200);
    assert!(r.header("x-consistency-token").is_some());
    assert_eq!(r.body["name"], "Shop 2");
    assert_eq!(r.body["description"], "first");
    assert_eq!(r.body["client_id"], "shop");
    assert_eq!(r.body["version"], 2);
    assert_eq!(r.body["created_at"], created_at);
    count = app.assert_appended(count, 1, "rename").await;

    // Description and client_id together.
    let r = app
        .put(
            &path,
            &alice,
            json!({"description": "second", "client_id": "shop-2"}),
        )
        .await;
    r.assert_status(200);
    assert_eq!(r.body["name"], "Shop 2");
    assert_eq!(r.body["description"], "second");
    assert_eq!(r.body["client_id"], "shop-2");
    assert_eq!(r.body["version"], 3);
    count = app
        .assert_appended(count, 1, "description and client_id")
        .await;

    // null clears a nullable field.
    let r = app.put(&path, &alice, json!({"description": null})).await;
    r.assert_status(200);
    assert_eq!(r.body["description"], Value::Null);
    assert_eq!(r.body["client_id"], "shop-2");
    assert_eq!(r.body["version"], 4);
    count = app.assert_appended(count, 1, "clear description").await;

    // No-op updates: 200, same version, no event, no consistency token.
    for body in [
        json!({}),
        json!({"name": "Shop 2"}),
        json!({"client_id": "shop-2", "description": null}),
    ] {
        let r = app.put(&path, &alice, body.clone()).await;
        r.assert_status(200);
        assert_eq!(r.body["version"], 4, "{body}");
        assert!(
            r.header("x-consistency-token").is_none(),
            "{body}: nothing was written"
        );
        app.assert_unchanged(count, &format!("no-op update {body}"))
            .await;
    }

    // The update is what a later GET returns, and it is in the history with the changed fields.
    let got = app.get(&path, &alice).await;
    assert_eq!(got.body["name"], "Shop 2");
    assert_eq!(got.body["description"], Value::Null);
    assert_eq!(got.body["client_id"], "shop-2");
    assert_eq!(got.body["version"], 4);
    let history = app.get(&format!("{path}/history"), &alice).await;
    assert_eq!(history.body["items"][1]["data"]["changed"], json!(["name"]));
    assert_eq!(
        history.body["items"][2]["data"]["changed"],
        json!(["description", "client_id"])
    );

    // Clearing the client_id frees it for another application.
    app.put(&path, &alice, json!({"client_id": null}))
        .await
        .assert_status(200);
    app.create_simple(&alice, "Other", Some("shop-2")).await;
    app.stop().await;
}

async fn update_oauth_settings(app: TestApp) {
    app.enable_dcr().await;
    let alice = app.token("alice", false);
    let r = app
        .post(
            "applications",
            &alice,
            json!({"name": "Web", "type": "web", "redirect_uris": ["https://web.example/cb"]}),
        )
        .await;
    r.assert_status(202);
    let id = r.body["id"].as_str().unwrap().to_string();
    let path = format!("applications/{id}");
    let mut count = app.event_count().await;

    let r = app
        .put(&path, &alice, json!({"grant_types": ["refresh_token", "implicit", "authorization_code"], "redirect_uris": ["https://web.example/cb", "http://localhost:3000/cb"]}))
        .await;
    r.assert_status(200);
    assert_eq!(
        r.body["grant_types"],
        json!(["authorization_code", "implicit", "refresh_token"])
    );
    assert_eq!(
        r.body["response_types"],
        json!(["code", "token", "id_token"])
    );
    assert_eq!(
        r.body["redirect_uris"],
        json!(["https://web.example/cb", "http://localhost:3000/cb"])
    );
    assert_eq!(r.body["registration"]["state"], "REGISTERING");
    assert_eq!(r.body["type"], "web");
    count = app.assert_appended(count, 1, "OAuth settings update").await;

    // Grants only: the redirect URIs stay; dropping implicit drops its response types.
    let r = app
        .put(
            &path,
            &alice,
            json!({"grant_types": ["authorization_code"]}),
        )
        .await;
    r.assert_status(200);
    assert_eq!(r.body["response_types"], json!(["code"]));
    assert_eq!(
        r.body["redirect_uris"],
        json!(["https://web.example/cb", "http://localhost:3000/cb"])
    );
    count = app.assert_appended(count, 1, "grants update").await;

    // An empty grant list means the type's defaults.
    let r = app
        .put(
            &path,
            &alice,
            json!({"grant_types": [], "client_uri": "https://web.example"}),
        )
        .await;
    r.assert_status(200);
    assert_eq!(r.body["grant_types"], json!(["authorization_code"]));
    assert_eq!(r.body["client_uri"], "https://web.example");
    count = app.assert_appended(count, 1, "client_uri").await;
    let r = app.put(&path, &alice, json!({"client_uri": null})).await;
    assert_eq!(r.body["client_uri"], Value::Null);
    count = app.assert_appended(count, 1, "clear client_uri").await;

    // Revalidation: every rule of creation applies to the new settings.
    let r = app
        .put(
            &path,
            &alice,
            json!({"grant_types": ["implicit"], "redirect_uris": ["http://web.example/cb"]}),
        )
        .await;
    r.assert_invalid(&[
        ("redirect_uris[0]", "redirect_uri.insecure"),
        ("grant_types", "grant_type.mandatory_missing"),
    ]);
    app.assert_unchanged(count, "refused OAuth update").await;
    let got = app.get(&path, &alice).await;
    assert_eq!(got.body["grant_types"], json!(["authorization_code"]));
    app.stop().await;
}

/// An OAuth type needs a provider to register with (DESIGN §1): DCR on but no provider, or a
/// named provider that does not exist, is a 422 naming `provider_id`; nothing is recorded.
async fn oauth_types_need_a_provider(app: TestApp) {
    let admin = app.token("root", true);
    let alice = app.token("alice", false);
    app.put(
        "settings/client-registration",
        &admin,
        json!({"allowed_types": {"simple": true, "browser": true, "web": true, "native": true, "backend_to_backend": true}, "dcr_enabled": true}),
    )
    .await
    .assert_status(200);
    let before = app.event_count().await;
    let r = app
        .post(
            "applications",
            &alice,
            json!({"name": "Batch", "type": "backend_to_backend"}),
        )
        .await;
    r.assert_invalid(&[("provider_id", "provider.not_found")]);
    let provider = app.add_provider_fixture("DEFAULT").await;
    let r = app
        .post(
            "applications",
            &alice,
            json!({"name": "Batch", "type": "backend_to_backend", "provider_id": "nope"}),
        )
        .await;
    r.assert_invalid(&[("provider_id", "provider.not_found")]);
    app.assert_unchanged(before + 1, "refused creates").await;
    let r = app
        .post(
            "applications",
            &alice,
            json!({"name": "Batch", "type": "backend_to_backend", "provider_id": provider}),
        )
        .await;
    r.assert_status(202);
    app.post(
        "applications",
        &alice,
        json!({"name": "Batch 2", "type": "backend_to_backend"}),
    )
    .await
    .assert_status(202);
    app.stop().await;
}

on_both!(
    oauth_types_need_a_provider,
    simple_create_with_and_without_client_id,
    oauth_types_need_dcr,
    settings_drive_the_types,
    update_definition,
    update_oauth_settings,
);
