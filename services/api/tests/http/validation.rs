//! Bad input gets a clear error and changes nothing: every case answers the documented 4xx with
//! a stable code (and, for 422, exactly the invalid fields), and appends no event.

use crate::helpers::TestApp;
use crate::on_both;
use serde_json::{json, Value};

/// Posts `body` to create an application and checks a 422 listing exactly `expected`
/// (field, code) pairs, with no event appended.
async fn rejected(app: &TestApp, token: &str, what: &str, body: Value, expected: &[(&str, &str)]) {
    let before = app.event_count().await;
    let r = app.post("applications", token, body).await;
    assert_eq!(r.status, 422, "{what}: {}", r.body);
    r.assert_invalid(expected);
    assert!(
        r.header("x-consistency-token").is_none(),
        "{what}: a refused write has no consistency token"
    );
    app.assert_unchanged(before, what).await;
}

fn web(extra: Value) -> Value {
    let mut body =
        json!({"name": "Web", "type": "web", "redirect_uris": ["https://app.example.com/cb"]});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

async fn malformed_and_mistyped_bodies(app: TestApp) {
    let alice = app.token("alice", false);
    let before = app.event_count().await;

    // Syntax errors: 400 request.malformed_json.
    for (what, raw) in [
        ("truncated", &br#"{"name": "x", "type": "simple""#[..]),
        ("not JSON", b"name=x&type=simple"),
        ("unquoted keys", b"{name: \"x\"}"),
        ("empty body", b""),
        ("trailing garbage", br#"{"name": "x", "type": "simple"} {}"#),
        (
            "invalid UTF-8",
            b"{\"name\": \"\xff\xfe\", \"type\": \"simple\"}",
        ),
    ] {
        let r = app
            .post_raw("applications", &alice, "application/json", raw.to_vec())
            .await;
        assert_eq!(r.status, 400, "{what}: {}", r.body);
        r.assert_problem(400, "request.malformed_json");
        assert!(
            !r.detail().is_empty(),
            "{what}: the detail says what is wrong"
        );
    }

    // Wrong JSON types: 422 naming the field.
    for (what, body, field) in [
        (
            "name is a number",
            json!({"name": 5, "type": "simple"}),
            "name",
        ),
        ("type is a bool", json!({"name": "x", "type": true}), "type"),
        (
            "grant_types is a string",
            json!({"name": "x", "type": "web", "grant_types": "implicit"}),
            "grant_types",
        ),
        (
            "a redirect URI is a number",
            json!({"name": "x", "type": "web", "redirect_uris": ["https://a.example/cb", 7]}),
            "redirect_uris[1]",
        ),
        (
            "client_id is an object",
            json!({"name": "x", "type": "simple", "client_id": {"v": 1}}),
            "client_id",
        ),
        (
            "the body is an array",
            json!([{"name": "x", "type": "simple"}]),
            "body",
        ),
        ("the body is null", Value::Null, "body"),
        ("the body is a string", json!("simple"), "body"),
    ] {
        let r = app.post("applications", &alice, body).await;
        assert_eq!(r.status, 422, "{what}: {}", r.body);
        r.assert_invalid(&[(field, "type.invalid")]);
    }

    // A body must be an object: serde alone would read a struct from an array, positionally.
    let r = app
        .post(
            "applications",
            &alice,
            json!(["positional", null, null, "simple"]),
        )
        .await;
    r.assert_invalid(&[("body", "type.invalid")]);
    // An unknown field is refused, and named.
    let r = app
        .post(
            "applications",
            &alice,
            json!({"name": "x", "type": "simple", "colour": "red"}),
        )
        .await;
    r.assert_invalid(&[("colour", "field.unknown")]);
    assert!(
        r.body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("colour"),
        "{}",
        r.body
    );
    // So is a missing mandatory field.
    let r = app
        .post("applications", &alice, json!({"type": "simple"}))
        .await;
    r.assert_invalid(&[("name", "name.required")]);
    let r = app.post("applications", &alice, json!({"name": "x"})).await;
    r.assert_invalid(&[("type", "type.required")]);
    let r = app
        .post(
            "applications",
            &alice,
            json!({"name": null, "type": "simple"}),
        )
        .await;
    r.assert_invalid(&[("name", "name.required")]);

    app.assert_unchanged(before, "malformed bodies").await;
    app.stop().await;
}

async fn body_size_and_content_type(app: TestApp) {
    let alice = app.token("alice", false);
    let before = app.event_count().await;

    // Over 64 KiB: 413, even when the JSON is otherwise valid.
    let big = json!({"name": "x", "type": "simple", "description": "d".repeat(70 * 1024)});
    let r = app.post("applications", &alice, big).await;
    r.assert_problem(413, "request.too_large");
    assert!(
        r.detail().contains("65536"),
        "the detail names the limit: {}",
        r.body
    );
    let big = vec![b' '; 64 * 1024 + 1];
    app.post_raw("applications", &alice, "application/json", big)
        .await
        .assert_problem(413, "request.too_large");
    // A body just under the limit is read (and validated on its merits).
    let base = json!({"name": "x", "type": "simple", "description": ""}).to_string();
    let pad = 64 * 1024 - base.len() - 100;
    let under = json!({"name": "x", "type": "simple", "description": "d".repeat(pad)}).to_string();
    let r = app
        .post_raw(
            "applications",
            &alice,
            "application/json",
            under.into_bytes(),
        )
        .await;
    r.assert_invalid(&[("description", "text.too_long")]);

    // Not JSON: 415.
    let body = json!({"name": "x", "type": "simple"})
        .to_string()
        .into_bytes();
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/xml",
        "multipart/form-data",
    ] {
        let r = app.post_raw("applications", &alice, ct, body.clone()).await;
        assert_eq!(r.status, 415, "{ct}: {}", r.body);
        r.assert_problem(415, "request.unsupported_media_type");
    }
    let r = app
        .send(
            app.client
                .post(app.url("applications"))
                .bearer_auth(&alice)
                .body(body.clone()),
        )
        .await;
    r.assert_problem(415, "request.unsupported_media_type");
    // A JSON media type with parameters is JSON.
    let r = app
        .post_raw(
            "applications",
            &alice,
            "application/json; charset=utf-8",
            body,
        )
        .await;
    r.assert_status(201);

    app.assert_appended(before, 1, "only the JSON create").await;
    app.stop().await;
}

async fn unknown_type_and_grants(app: TestApp) {
    app.enable_dcr().await;
    let alice = app.token("alice", false);

    rejected(
        &app,
        &alice,
        "unknown type",
        json!({"name": "x", "type": "spa"}),
        &[("type", "type.unknown")],
    )
    .await;
    rejected(
        &app,
        &alice,
        "type in upper case",
        json!({"name": "x", "type": "SIMPLE"}),
        &[("type", "type.unknown")],
    )
    .await;
    rejected(
        &app,
        &alice,
        "unknown grant type",
        web(json!({"grant_types": ["authorization_code", "device_code"]})),
        &[("grant_types[1]", "grant_type.unknown")],
    )
    .await;
    rejected(
        &app,
        &alice,
        "grant type not allowed for web",
        web(json!({"grant_types": ["authorization_code", "client_credentials"]})),
        &[("grant_types", "grant_type.not_allowed")],
    )
    .await;
    rejected(
        &app,
        &alice,
        "password is for native only",
        json!({"name": "x", "type": "browser", "redirect_uris": ["https://a.example/cb"], "grant_types": ["password"]}),
        &[("grant_types", "grant_type.not_allowed")],
    )
    .await;
    rejected(
        &app,
        &alice,
        "web without authorization_code",
        web(json!({"grant_types": ["implicit"]})),
        &[("grant_types", "grant_type.mandatory_missing")],
    )
    .await;
    rejected(
        &app,
        &alice,
        "native without authorization_code",
        json!({"name": "x", "type": "native", "redirect_uris": ["com.example.app:/cb"], "grant_types": ["refresh_token"]}),
        &[("grant_types", "grant_type.mandatory_missing")],
    )
    .await;
    rejected(
        &app,
        &alice,
        "backend_to_backend with authorization_code only",
        json!({"name": "x", "type": "backend_to_backend", "grant_types": ["authorization_code"]}),
        &[
            ("grant_types", "grant_type.not_allowed"),
            ("grant_types", "grant_type.mandatory_missing"),
        ],
    )
    .await;
    rejected(
        &app,
        &alice,
        "grant types on a simple application",
        json!({"name": "x", "type": "simple", "grant_types": ["client_credentials"]}),
        &[("grant_types", "grant_types.not_applicable")],
    )
    .await;
    rejected(
        &app,
        &alice,
        "a client_id on an OAuth application",
        json!({"name": "x", "type": "backend_to_backend", "client_id": "mine"}),
        &[("client_id", "client_id.not_applicable")],
    )
    .await;
    app.stop().await;
}

async fn redirect_uris(app: TestApp) {
    app.enable_dcr().await;
    let alice = app.token("alice", false);

    for t in ["browser", "web", "native"] {
        rejected(
            &app,
            &alice,
            &format!("{t} without redirect_uris"),
            json!({"name": "x", "type": t}),
            &[("redirect_uris", "redirect_uris.required")],
        )
        .await;
        rejected(
            &app,
            &alice,
            &format!("{t} with an empty redirect_uris"),
            json!({"name": "x", "type": t, "redirect_uris": []}),
            &[("redirect_uris", "redirect_uris.required")],
        )
        .await;
        rejected(
            &app,
            &alice,
            &format!("{t} with a relative redirect URI"),
            json!({"name": "x", "type": t, "redirect_uris": ["/callback"]}),
            &[("redirect_uris[0]", "redirect_uri.not_absolute")],
        )
        .await;
    }
    rejected(
        &app,
        &alice,
        "http on a non-loopback host",
        web(json!({"redirect_uris": ["https://ok.example/cb", "http://app.example.com/cb"]})),
        &[("redirect_uris[1]", "redirect_uri.insecure")],
    )
    .await;
    rejected(
        &app,
        &alice,
        "a redirect URI with a fragment",
        web(json!({"redirect_uris": ["https://app.example.com/cb#x"]})),
        &[("redirect_uris[0]", "redirect_uri.fragment")],
    )
    .await;
    rejected(
        &app,
        &alice,
        "a javascript: redirect URI",
        json!({"name": "x", "type": "native", "redirect_uris": ["javascript:alert(1)"]}),
        &[("redirect_uris[0]", "redirect_uri.scheme")],
    )
    .await;
    rejected(
        &app,
        &alice,
        "a custom scheme outside native",
        web(json!({"redirect_uris": ["com.example.app:/cb"]})),
        &[("redirect_uris[0]", "redirect_uri.scheme")],
    )
    .await;
    rejected(
        &app,
        &alice,
        "an http URL without authority",
        web(json!({"redirect_uris": ["https:/cb"]})),
        &[("redirect_uris[0]", "redirect_uri.no_host")],
    )
    .await;
    rejected(
        &app,
        &alice,
        "redirect URIs on backend_to_backend",
        json!({"name": "x", "type": "backend_to_backend", "redirect_uris": ["https://a.example/cb"]}),
        &[("redirect_uris", "redirect_uris.not_applicable")],
    )
    .await;
    rejected(
        &app,
        &alice,
        "redirect URIs on a simple application",
        json!({"name": "x", "type": "simple", "redirect_uris": ["https://a.example/cb"]}),
        &[("redirect_uris", "redirect_uris.not_applicable")],
    )
    .await;

    // Loopback http is fine (RFC 8252), as are native private-use schemes.
    let before = app.event_count().await;
    for uri in [
        "http://localhost:8080/cb",
        "http://127.0.0.1/cb",
        "http://[::1]:3000/cb",
    ] {
        let r = app
            .post("applications", &alice, web(json!({"redirect_uris": [uri]})))
            .await;
        assert_eq!(r.status, 202, "{uri}: {}", r.body);
        assert_eq!(r.body["redirect_uris"], json!([uri]));
    }
    let r = app
        .post(
            "applications",
            &alice,
            json!({"name": "n", "type": "native", "redirect_uris": ["com.example.app:/oauth"]}),
        )
        .await;
    r.assert_status(202);
    app.assert_appended(before, 8, "four OAuth creates, two events each")
        .await;
    app.stop().await;
}

async fn client_id_and_name(app: TestApp) {
    let alice = app.token("alice", false);
    let simple = |client_id: &str| json!({"name": "x", "type": "simple", "client_id": client_id});
    let named = |name: &str| json!({"name": name, "type": "simple"});

    rejected(
        &app,
        &alice,
        "empty client_id",
        simple(""),
        &[("client_id", "client_id.empty")],
    )
    .await;
    rejected(
        &app,
        &alice,
        "256-character client_id",
        simple(&"c".repeat(256)),
        &[("client_id", "client_id.too_long")],
    )
    .await;
    rejected(
        &app,
        &alice,
        "client_id with a space",
        simple("my client"),
        &[("client_id", "client_id.invalid")],
    )
    .await;
    rejected(
        &app,
        &alice,
        "client_id with a tab",
        simple("my\tclient"),
        &[("client_id", "client_id.invalid")],
    )
    .await;
    rejected(
        &app,
        &alice,
        "client_id with a control char",
        simple("my\u{7}client"),
        &[("client_id", "client_id.invalid")],
    )
    .await;
    rejected(
        &app,
        &alice,
        "client_id with NUL",
        simple("my\u{0}client"),
        &[("client_id", "client_id.invalid")],
    )
    .await;
    rejected(
        &app,
        &alice,
        "client_id with a non-breaking space",
        simple("my\u{a0}client"),
        &[("client_id", "client_id.invalid")],
    )
    .await;

    rejected(
        &app,
        &alice,
        "empty name",
        named(""),
        &[("name", "name.empty")],
    )
    .await;
    rejected(
        &app,
        &alice,
        "whitespace-only name",
        named(" \t\n "),
        &[("name", "name.empty")],
    )
    .await;
    rejected(
        &app,
        &alice,
        "201-character name",
        named(&"n".repeat(201)),
        &[("name", "name.too_long")],
    )
    .await;
    rejected(
        &app,
        &alice,
        "201 characters of multi-byte text",
        named(&"é".repeat(201)),
        &[("name", "name.too_long")],
    )
    .await;
    rejected(
        &app,
        &alice,
        "a name with a control char",
        named("a\u{1b}b"),
        &[("name", "name.invalid")],
    )
    .await;

    // The limits are inclusive: 255-character client_id, 200-character name (after trimming).
    let before = app.event_count().await;
    let r = app
        .post("applications", &alice, simple(&"c".repeat(255)))
        .await;
    r.assert_status(201);
    assert_eq!(r.body["client_id"].as_str().unwrap().len(), 255);
    let long = format!("  {}  ", "é".repeat(200));
    let r = app.post("applications", &alice, named(&long)).await;
    r.assert_status(201);
    assert_eq!(r.body["name"].as_str().unwrap().chars().count(), 200);
    app.assert_appended(before, 2, "the two valid creates")
        .await;
    app.stop().await;
}

async fn every_invalid_field_at_once(app: TestApp) {
    let alice = app.token("alice", false);
    rejected(
        &app,
        &alice,
        "empty object",
        json!({}),
        &[("name", "name.required"), ("type", "type.required")],
    )
    .await;
    rejected(
        &app,
        &alice,
        "simple with four bad fields",
        json!({
            "name": "   ",
            "type": "simple",
            "client_id": "has space",
            "description": "d".repeat(4001),
            "logo_uri": "not a url",
        }),
        &[
            ("name", "name.empty"),
            ("description", "text.too_long"),
            ("client_id", "client_id.invalid"),
            ("logo_uri", "url.invalid"),
        ],
    )
    .await;
    // With DCR off, the type's problem is reported along with the others.
    rejected(
        &app,
        &alice,
        "web, DCR off, bad name and redirect URI",
        json!({"name": "", "type": "web", "redirect_uris": ["http://app.example.com/cb"], "grant_types": ["implicit"]}),
        &[
            ("name", "name.empty"),
            ("redirect_uris[0]", "redirect_uri.insecure"),
            ("grant_types", "grant_type.mandatory_missing"),
            ("type", "type.dcr_disabled"),
        ],
    )
    .await;
    app.enable_dcr().await;
    rejected(
        &app,
        &alice,
        "web with a bad name, no redirect URI, and a bad grant",
        json!({"name": "n".repeat(300), "type": "web", "grant_types": ["password"]}),
        &[
            ("name", "name.too_long"),
            ("redirect_uris", "redirect_uris.required"),
            ("grant_types", "grant_type.not_allowed"),
            ("grant_types", "grant_type.mandatory_missing"),
        ],
    )
    .await;
    rejected(
        &app,
        &alice,
        "several unparseable list items",
        json!({"name": "ok", "type": "web", "redirect_uris": ["/a", "https://ok.example/cb", "b"], "grant_types": ["x", "authorization_code", "y"]}),
        &[
            ("redirect_uris[0]", "redirect_uri.not_absolute"),
            ("redirect_uris[2]", "redirect_uri.not_absolute"),
            ("grant_types[0]", "grant_type.unknown"),
            ("grant_types[2]", "grant_type.unknown"),
        ],
    )
    .await;
    app.stop().await;
}

async fn update_bad_input(app: TestApp) {
    app.enable_dcr().await;
    let alice = app.token("alice", false);
    let id = app.create_simple(&alice, "Shop", Some("shop")).await;
    let r = app.post("applications", &alice, web(json!({}))).await;
    r.assert_status(202);
    let web_id = r.body["id"].as_str().unwrap().to_string();
    let before = app.event_count().await;
    let path = format!("applications/{id}");
    let web_path = format!("applications/{web_id}");
    let (p, w) = (path.as_str(), web_path.as_str());

    type Case<'a> = (&'a str, &'a str, Value, Vec<(&'a str, &'a str)>);
    let cases: Vec<Case> = vec![
        (
            "empty name",
            p,
            json!({"name": ""}),
            vec![("name", "name.empty")],
        ),
        (
            "null name (the name is not nullable)",
            p,
            json!({"name": null}),
            vec![("name", "name.required")],
        ),
        (
            "long name",
            p,
            json!({"name": "n".repeat(201)}),
            vec![("name", "name.too_long")],
        ),
        (
            "empty client_id",
            p,
            json!({"client_id": ""}),
            vec![("client_id", "client_id.empty")],
        ),
        (
            "client_id with space",
            p,
            json!({"client_id": "a b"}),
            vec![("client_id", "client_id.invalid")],
        ),
        (
            "name is a number",
            p,
            json!({"name": 1}),
            vec![("name", "type.invalid")],
        ),
        (
            "grant types on simple",
            p,
            json!({"grant_types": ["implicit"]}),
            vec![("grant_types", "grant_types.not_applicable")],
        ),
        (
            "web without authorization_code",
            w,
            json!({"grant_types": ["implicit"]}),
            vec![("grant_types", "grant_type.mandatory_missing")],
        ),
        (
            "web, unknown grant",
            w,
            json!({"grant_types": ["nope"]}),
            vec![("grant_types[0]", "grant_type.unknown")],
        ),
        (
            "web, no redirect URI",
            w,
            json!({"redirect_uris": []}),
            vec![("redirect_uris", "redirect_uris.required")],
        ),
        (
            "web, relative redirect URI",
            w,
            json!({"redirect_uris": ["cb"]}),
            vec![("redirect_uris[0]", "redirect_uri.not_absolute")],
        ),
        (
            "web, http redirect URI",
            w,
            json!({"redirect_uris": ["http://app.example.com/cb"]}),
            vec![("redirect_uris[0]", "redirect_uri.insecure")],
        ),
        (
            "web, own client_id",
            w,
            json!({"client_id": "mine"}),
            vec![("client_id", "client_id.not_applicable")],
        ),
    ];
    for (what, path, body, expected) in cases {
        let r = app.put(path, &alice, body).await;
        assert_eq!(r.status, 422, "{what}: {}", r.body);
        r.assert_invalid(&expected);
    }
    // The type is immutable: not a field of an update.
    let r = app.put(&path, &alice, json!({"type": "web"})).await;
    r.assert_invalid(&[("type", "field.unknown")]);
    // Malformed, wrong media type, too large.
    app.send(
        app.client
            .put(app.url(&path))
            .bearer_auth(&alice)
            .header("content-type", "application/json")
            .body("{"),
    )
    .await
    .assert_problem(400, "request.malformed_json");
    app.send(
        app.client
            .put(app.url(&path))
            .bearer_auth(&alice)
            .header("content-type", "text/plain")
            .body("{}"),
    )
    .await
    .assert_problem(415, "request.unsupported_media_type");
    app.put(&path, &alice, json!({"description": "d".repeat(65 * 1024)}))
        .await
        .assert_problem(413, "request.too_large");

    app.assert_unchanged(before, "bad updates").await;
    let got = app.get(&path, &alice).await;
    assert_eq!(got.body["version"], 1);
    assert_eq!(got.body["name"], "Shop");
    assert_eq!(got.body["client_id"], "shop");
    app.stop().await;
}

on_both!(
    malformed_and_mistyped_bodies,
    body_size_and_content_type,
    unknown_type_and_grants,
    redirect_uris,
    client_id_and_name,
    every_invalid_field_at_once,
    update_bad_input,
);
