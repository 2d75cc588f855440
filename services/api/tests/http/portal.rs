//! The developer portal as `appreg api` serves it (`portal_enabled`): its files with their
//! content types, a strict Content-Security-Policy and revalidation; its configuration; no
//! development sign-in (that is `appreg dev`'s alone, tested with the binary in
//! `services/appreg/tests/portal`); nothing at all when the portal is off.

use crate::helpers::*;

async fn raw(app: &TestApp, path: &str, etag: Option<&str>) -> reqwest::Response {
    let mut request = app.client.get(app.url(path));
    if let Some(tag) = etag {
        request = request.header("if-none-match", tag);
    }
    request.send().await.unwrap()
}

fn header(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .unwrap_or_else(|| panic!("{name} is missing"))
        .to_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn the_portal_is_served_with_its_content_types_and_a_strict_policy() {
    let app = spawn_with(Backend::Sqlite, |c| c.api.portal_enabled = Some(true)).await;
    for (path, content_type) in [
        ("/", "text/html; charset=utf-8"),
        ("/portal/app.js", "text/javascript; charset=utf-8"),
        ("/portal/application.js", "text/javascript; charset=utf-8"),
        ("/portal/style.css", "text/css; charset=utf-8"),
        ("/portal/favicon.svg", "image/svg+xml"),
    ] {
        let response = raw(&app, path, None).await;
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(header(&response, "content-type"), content_type, "{path}");
        let csp = header(&response, "content-security-policy");
        assert!(csp.contains("default-src 'none'"), "{csp}");
        assert!(csp.contains("script-src 'self';"), "{csp}");
        assert!(!csp.contains("unsafe"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert_eq!(header(&response, "x-content-type-options"), "nosniff");
        assert_eq!(header(&response, "cache-control"), "no-cache");
        // Revalidation: the same ETag answers 304 without a body.
        let tag = header(&response, "etag");
        let again = raw(&app, path, Some(&tag)).await;
        assert_eq!(again.status(), 304, "{path}");
        assert!(again.bytes().await.unwrap().is_empty());
    }
    let index = raw(&app, "/", None).await.text().await.unwrap();
    assert!(index.contains(r#"<script type="module" src="/portal/app.js">"#));
    assert!(!index.contains("<script>"), "no inline script");
    // Only the portal's own files.
    for path in [
        "/portal/nope.js",
        "/portal/../Cargo.toml",
        "/portal/dev/sign-in",
    ] {
        assert_eq!(raw(&app, path, None).await.status(), 404, "{path}");
    }
    // `appreg api` has no development sign-in, and says so in its configuration.
    let config: serde_json::Value = raw(&app, "/portal/config.json", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(config["sign_in"], "unavailable", "{config}");
    assert_eq!(config["environment"], "DEFAULT");
    app.send(
        app.client
            .post(app.url("/portal/dev/sign-in"))
            .json(&serde_json::json!({"user": "mallory", "admin": true})),
    )
    .await
    .assert_status(404);
}

#[tokio::test]
async fn production_sign_in_names_the_issuer_and_the_public_client() {
    let app = spawn_with(Backend::Sqlite, |c| {
        c.api.portal_enabled = Some(true);
        c.api.portal_oidc_client_id = Some("portal".into());
        c.auth.issuer = Some("https://idp.example.com/realms/x".into());
    })
    .await;
    let response = raw(&app, "/portal/config.json", None).await;
    assert_eq!(header(&response, "cache-control"), "no-store");
    let csp = header(&response, "content-security-policy");
    assert!(
        csp.contains("connect-src 'self' https://idp.example.com;"),
        "{csp}"
    );
    let config: serde_json::Value = response.json().await.unwrap();
    assert_eq!(config["sign_in"], "oidc", "{config}");
    assert_eq!(config["issuer"], "https://idp.example.com/realms/x");
    assert_eq!(config["client_id"], "portal");
    assert_eq!(config["scopes"], "openid profile email");
}

#[tokio::test]
async fn without_portal_enabled_nothing_is_served() {
    let app = spawn(Backend::Sqlite).await;
    for path in ["/", "/portal/app.js", "/portal/config.json"] {
        let response = raw(&app, path, None).await;
        assert_eq!(response.status(), 404, "{path}");
        assert!(response.headers().get("content-security-policy").is_none());
    }
}
