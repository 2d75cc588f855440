//! Health, metrics, the OpenAPI document, and the answers for unknown routes and methods.

use crate::helpers::TestApp;
use crate::on_both;
use reqwest::Method;
use serde_json::json;

async fn health_and_metrics(app: TestApp) {
    // No token needed.
    let r = app.send(app.client.get(app.url("/healthz"))).await;
    r.assert_status(200);
    let r = app.send(app.client.get(app.url("/readyz"))).await;
    r.assert_status(200);

    let alice = app.token("alice", false);
    app.create_simple(&alice, "metered", None).await;
    app.get("applications", &alice).await.assert_status(200);
    let response = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let text = response.text().await.unwrap();
    assert!(text.contains("appreg_http_requests_total"), "{text}");
    let create_line = text
        .lines()
        .find(|l| {
            l.starts_with("appreg_http_requests_total")
                && l.contains(r#"method="POST""#)
                && l.contains(r#"route="/v1/environments/{env}/applications""#)
                && l.contains(r#"status="201""#)
        })
        .unwrap_or_else(|| panic!("the create is counted by route and status:\n{text}"));
    let n: f64 = create_line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(n >= 1.0, "{create_line}");
    assert!(
        text.contains("appreg_http_request_duration_seconds"),
        "{text}"
    );
    assert!(text.contains("appreg_commands_total"), "{text}");
    app.stop().await;
}

async fn openapi_document(app: TestApp) {
    let r = app.send(app.client.get(app.url("/openapi.json"))).await;
    r.assert_status(200);
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("application/json"));
    let doc = &r.body;
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "OpenAPI 3.1: {}",
        doc["openapi"]
    );
    assert!(doc["info"]["title"].is_string());
    let env = "/v1/environments/{env}";
    let expected: Vec<(String, &[&str])> = vec![
        (
            format!("{env}/settings/client-registration"),
            &["get", "put"],
        ),
        (format!("{env}/application-types"), &["get"]),
        (format!("{env}/applications"), &["get", "post"]),
        (
            format!("{env}/applications/{{id}}"),
            &["get", "put", "delete"],
        ),
        (format!("{env}/applications/{{id}}/_restore"), &["post"]),
        (format!("{env}/applications/{{id}}/history"), &["get"]),
        ("/healthz".into(), &["get"]),
        ("/readyz".into(), &["get"]),
        ("/metrics".into(), &["get"]),
    ];
    let paths = doc["paths"].as_object().expect("paths");
    for (path, methods) in &expected {
        let item = paths.get(path).unwrap_or_else(|| {
            panic!(
                "{path} is documented; paths: {:?}",
                paths.keys().collect::<Vec<_>>()
            )
        });
        for m in *methods {
            assert!(item.get(*m).is_some(), "{m} {path} is documented");
            assert!(
                item[*m]["responses"].is_object(),
                "{m} {path} has responses"
            );
        }
    }
    // The bodies and the problem document are described.
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    for s in [
        "ApplicationView",
        "CreateApplicationRequest",
        "UpdateApplicationRequest",
        "Problem",
        "ClientRegistrationSettingsDoc",
    ] {
        assert!(schemas.contains_key(s), "schema {s}");
    }
    let create = &paths[&format!("{env}/applications")]["post"];
    for status in ["201", "202", "400", "409", "413", "422"] {
        assert!(
            create["responses"].get(status).is_some(),
            "create documents {status}"
        );
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    app.stop().await;
}

async fn unknown_routes_and_methods(app: TestApp) {
    let alice = app.token("alice", false);
    for path in [
        "/nope",
        "/v1",
        "/v1/environments/DEFAULT/nope",
        "/v1/environments/DEFAULT/applications/x/y/z",
    ] {
        let r = app
            .send(app.client.get(app.url(path)).bearer_auth(&alice))
            .await;
        assert_eq!(r.status, 404, "{path}: {}", r.body);
        r.assert_problem(404, "route.not_found");
    }
    let id = app.create_simple(&alice, "x", None).await;
    let count = app.event_count().await;
    for (method, path) in [
        (Method::DELETE, "applications".to_string()),
        (Method::PATCH, format!("applications/{id}")),
        (Method::POST, format!("applications/{id}")),
        (Method::GET, format!("applications/{id}/_restore")),
        (Method::POST, format!("applications/{id}/history")),
        (Method::DELETE, "settings/client-registration".into()),
        (Method::POST, "application-types".into()),
        (Method::POST, "/healthz".into()),
        (Method::PUT, "/openapi.json".into()),
    ] {
        let r = app
            .send(
                app.request(method.clone(), &path, Some(&alice))
                    .json(&json!({"name": "y"})),
            )
            .await;
        assert_eq!(r.status, 405, "{method} {path}: {}", r.body);
        r.assert_problem(405, "request.method_not_allowed");
        assert!(
            r.header("allow").is_some(),
            "{method} {path}: 405 says what is allowed"
        );
    }
    app.assert_unchanged(count, "unknown methods").await;
    app.stop().await;
}

on_both!(
    health_and_metrics,
    openapi_document,
    unknown_routes_and_methods
);
