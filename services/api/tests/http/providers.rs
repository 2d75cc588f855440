//! `/client-registration-providers` against providers the test controls: loopback servers that
//! record every request (`appreg_test_support::recorder`). What an environment administrator may
//! point a provider at, and where its stored secrets may go (issue #20, items 1 and 5).

use crate::helpers::TestApp;
use crate::{on_both, on_both_with};
use appreg_test_support::recorder::{Recorder, Reply};
use serde_json::{json, Value};

const PATH: &str = "client-registration-providers";
const SECRET: &str = "stored-admin-secret-0123";
const IAT: &str = "stored-initial-access-token-0123";

fn client_credentials(name: &str, discovery: &str, client_id: &str) -> Value {
    json!({
        "name": name, "discovery_endpoint": discovery,
        "initial_access_token_type": "CLIENT_CREDENTIALS", "client_id": client_id, "scopes": ["dcr"],
        "default": true,
    })
}

fn fixed_token(name: &str, discovery: &str) -> Value {
    json!({"name": name, "discovery_endpoint": discovery, "initial_access_token_type": "INITIAL_ACCESS_TOKEN", "default": true})
}

fn with(mut body: Value, field: &str, value: impl Into<Value>) -> Value {
    body[field] = value.into();
    body
}

/// No request to `server` carried one of the stored secrets.
#[track_caller]
fn never_received_a_secret(server: &Recorder, what: &str) {
    for a in server.authorizations() {
        assert!(
            !a.contains(SECRET) && !a.contains(IAT),
            "{what}: the server received a stored secret: {a}"
        );
    }
}

/// Item 1: a PUT that points a provider elsewhere, or changes its token mode or client id, must
/// come with the secrets again: the stored ones never go to a server the administrator picked
/// after they were given.
async fn changing_where_the_secret_goes_needs_the_secret_again(app: TestApp) {
    let good = Recorder::idp(None, None).await;
    let evil = Recorder::idp(None, None).await;
    let env_admin = app.admin_of("env-admin", &["DEFAULT"]);

    let created = app
        .post(
            PATH,
            &env_admin,
            with(
                client_credentials("Corporate IdP", &good.discovery_url(), "dcr-admin"),
                "client_secret",
                SECRET,
            ),
        )
        .await;
    created.assert_status(201);
    let id = created.body["id"].as_str().unwrap().to_string();
    assert!(good.authorizations().iter().any(|a| a.contains(SECRET)));
    let count = app.event_count().await;

    // Another discovery endpoint, no secret: refused, and nothing reached the new server.
    app.put(
        &format!("{PATH}/{id}"),
        &env_admin,
        client_credentials("Corporate IdP", &evil.discovery_url(), "dcr-admin"),
    )
    .await
    .assert_invalid(&[("client_secret", "provider.secret.required")]);
    never_received_a_secret(&evil, "a new discovery endpoint without the secret");
    assert!(evil.requests().is_empty(), "{:?}", evil.requests());

    // Another client id, no secret: refused.
    app.put(
        &format!("{PATH}/{id}"),
        &env_admin,
        client_credentials("Corporate IdP", &good.discovery_url(), "someone-else"),
    )
    .await
    .assert_invalid(&[("client_secret", "provider.secret.required")]);
    // Another token mode, no token: refused.
    app.put(
        &format!("{PATH}/{id}"),
        &env_admin,
        fixed_token("Corporate IdP", &good.discovery_url()),
    )
    .await
    .assert_invalid(&[("initial_access_token", "provider.secret.required")]);
    app.assert_unchanged(count, "PUTs without the secret").await;

    // The same place, no secret: the stored one is kept.
    app.put(
        &format!("{PATH}/{id}"),
        &env_admin,
        client_credentials("Renamed IdP", &good.discovery_url(), "dcr-admin"),
    )
    .await
    .assert_status(200);
    // A new place with a new secret: fine, and only the new secret goes there.
    app.put(
        &format!("{PATH}/{id}"),
        &env_admin,
        with(
            client_credentials("Renamed IdP", &evil.discovery_url(), "dcr-admin"),
            "client_secret",
            "a-new-secret-for-the-new-place",
        ),
    )
    .await
    .assert_status(200);
    never_received_a_secret(&evil, "a new discovery endpoint with a new secret");

    // A fixed initial access token does not follow a new discovery endpoint either.
    let created = app
        .post(
            PATH,
            &env_admin,
            with(
                fixed_token("Fixed token IdP", &good.discovery_url()),
                "initial_access_token",
                IAT,
            ),
        )
        .await;
    created.assert_status(201);
    let fixed = created.body["id"].as_str().unwrap().to_string();
    let other = Recorder::idp(None, None).await;
    app.put(
        &format!("{PATH}/{fixed}"),
        &env_admin,
        fixed_token("Fixed token IdP", &other.discovery_url()),
    )
    .await
    .assert_invalid(&[("initial_access_token", "provider.secret.required")]);
    never_received_a_secret(&other, "a fixed token's new discovery endpoint");
    app.stop().await;
}

/// Item 1: the token, registration and renewal endpoints share the discovery document's origin,
/// unless an organisation administrator allows otherwise (`allow_cross_origin_endpoints`).
async fn endpoints_on_another_origin_need_an_organisation_administrator(app: TestApp) {
    let elsewhere = Recorder::idp(None, None).await;
    let tokens_elsewhere = Recorder::idp(Some(elsewhere.base()), None).await;
    let registrations_elsewhere = Recorder::idp(None, Some(elsewhere.base())).await;
    let good = Recorder::idp(None, None).await;
    let env_admin = app.admin_of("env-admin", &["DEFAULT"]);
    let org_admin = app.admin_of("org-admin", &["*"]);
    let count = app.event_count().await;

    let r = app
        .post(
            PATH,
            &env_admin,
            with(
                client_credentials("Split IdP", &tokens_elsewhere.discovery_url(), "dcr-admin"),
                "client_secret",
                SECRET,
            ),
        )
        .await;
    r.assert_invalid(&[("discovery_endpoint", "provider.endpoint.cross_origin")]);
    assert!(r.body["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("token_endpoint"));
    let r = app
        .post(
            PATH,
            &env_admin,
            with(
                fixed_token("Split IdP", &registrations_elsewhere.discovery_url()),
                "initial_access_token",
                IAT,
            ),
        )
        .await;
    r.assert_invalid(&[("discovery_endpoint", "provider.endpoint.cross_origin")]);
    // A renewal endpoint on another origin.
    let mut renew = with(
        fixed_token("Renewing IdP", &good.discovery_url()),
        "initial_access_token",
        IAT,
    );
    renew["renew_client_secret"] =
        json!({"enabled": true, "endpoint": format!("{}/{{client_id}}/renew", elsewhere.base())});
    app.post(PATH, &env_admin, renew.clone())
        .await
        .assert_invalid(&[(
            "renew_client_secret.endpoint",
            "provider.endpoint.cross_origin",
        )]);
    assert!(
        elsewhere.requests().is_empty(),
        "{:?}",
        elsewhere.requests()
    );

    // Only an organisation administrator may allow it.
    let allowed = with(
        with(
            client_credentials("Split IdP", &tokens_elsewhere.discovery_url(), "dcr-admin"),
            "client_secret",
            SECRET,
        ),
        "allow_cross_origin_endpoints",
        true,
    );
    app.post(PATH, &env_admin, allowed.clone())
        .await
        .assert_problem(403, "permission.organisation_admin_only");
    assert!(elsewhere.requests().is_empty());
    app.assert_unchanged(count, "refused providers").await;
    let r = app.post(PATH, &org_admin, allowed).await;
    r.assert_status(201);
    assert_eq!(r.body["allow_cross_origin_endpoints"], true);
    let id = r.body["id"].as_str().unwrap().to_string();
    assert!(elsewhere
        .authorizations()
        .iter()
        .any(|a| a.contains(SECRET)));
    // An environment administrator may keep the allowance where it was given…
    let kept = with(
        client_credentials(
            "Split IdP renamed",
            &tokens_elsewhere.discovery_url(),
            "dcr-admin",
        ),
        "allow_cross_origin_endpoints",
        true,
    );
    let r = app
        .put(&format!("{PATH}/{id}"), &env_admin, kept.clone())
        .await;
    r.assert_status(200);
    // …but not point its secret renewal (the applications' registration access tokens)
    // somewhere else under it.
    let mut renewal_moved = kept;
    renewal_moved["renew_client_secret"] = json!({"enabled": true, "endpoint": format!("{}/{{client_id}}/renew", registrations_elsewhere.base())});
    app.put(&format!("{PATH}/{id}"), &env_admin, renewal_moved)
        .await
        .assert_problem(403, "permission.organisation_admin_only");
    // …but not carry it to another discovery endpoint, nor give it.
    let moved = with(
        with(
            client_credentials(
                "Split IdP renamed",
                &registrations_elsewhere.discovery_url(),
                "dcr-admin",
            ),
            "client_secret",
            "another-secret-1234",
        ),
        "allow_cross_origin_endpoints",
        true,
    );
    app.put(&format!("{PATH}/{id}"), &env_admin, moved)
        .await
        .assert_problem(403, "permission.organisation_admin_only");
    let created = app
        .post(
            PATH,
            &env_admin,
            with(
                fixed_token("Plain IdP", &good.discovery_url()),
                "initial_access_token",
                IAT,
            ),
        )
        .await;
    created.assert_status(201);
    assert_eq!(created.body["allow_cross_origin_endpoints"], false);
    let plain = created.body["id"].as_str().unwrap().to_string();
    app.put(
        &format!("{PATH}/{plain}"),
        &env_admin,
        with(
            fixed_token("Plain IdP", &good.discovery_url()),
            "allow_cross_origin_endpoints",
            true,
        ),
    )
    .await
    .assert_problem(403, "permission.organisation_admin_only");
    app.stop().await;
}

/// Item 5: what a discovery endpoint that fails answers does not tell a refused port from an
/// open one, a timeout or garbage: one code, one message.
async fn failures_of_outbound_calls_look_alike(app: TestApp) {
    let env_admin = app.admin_of("env-admin", &["DEFAULT"]);
    // A port nobody listens on (bound, then released).
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let not_http = Recorder::start(|_, _| Reply::Raw(b"SSH-2.0-OpenSSH_9.2\r\n".to_vec())).await;
    let garbage = Recorder::start(|_, _| Reply::Json(200, json!(["not", "a", "document"]))).await;
    let missing = Recorder::start(|_, _| Reply::Json(404, json!({"error": "not_found"}))).await;
    let huge = Recorder::start(|_, _| Reply::Endless).await;
    let mut bodies = vec![];
    for port in [
        closed,
        not_http.port(),
        garbage.port(),
        missing.port(),
        huge.port(),
    ] {
        let r = app
            .post(
                PATH,
                &env_admin,
                with(
                    fixed_token(
                        "Probe",
                        &format!("http://127.0.0.1:{port}/.well-known/openid-configuration"),
                    ),
                    "initial_access_token",
                    IAT,
                ),
            )
            .await;
        r.assert_invalid(&[("discovery_endpoint", "provider.validation_failed")]);
        let mut body = r.body.clone();
        body.as_object_mut().unwrap().remove("instance");
        bodies.push(body);
    }
    for b in &bodies[1..] {
        assert_eq!(b, &bodies[0], "every failure answers alike");
    }
    // The endless answer was dropped at the cap, not read whole.
    assert!(
        huge.bytes_sent() < 64 * 1024 * 1024,
        "{}",
        huge.bytes_sent()
    );
    app.stop().await;
}

/// Item 5: with `outbound_allow_private = false`, a provider on a loopback (or other private)
/// address is refused, and never called.
async fn private_addresses_are_refused_when_configured(app: TestApp) {
    let env_admin = app.admin_of("env-admin", &["DEFAULT"]);
    let local = Recorder::idp(None, None).await;
    for discovery in [
        local.discovery_url(),
        format!(
            "http://localhost:{}/.well-known/openid-configuration",
            local.port()
        ),
    ] {
        let r = app
            .post(
                PATH,
                &env_admin,
                with(
                    fixed_token("Local IdP", &discovery),
                    "initial_access_token",
                    IAT,
                ),
            )
            .await;
        r.assert_invalid(&[("discovery_endpoint", "provider.endpoint.private_address")]);
    }
    assert!(local.requests().is_empty(), "{:?}", local.requests());
    app.stop().await;
}

on_both!(
    changing_where_the_secret_goes_needs_the_secret_again,
    endpoints_on_another_origin_need_an_organisation_administrator,
    failures_of_outbound_calls_look_alike,
);
fn no_private_destinations(c: &mut appreg_config::Config) {
    c.outbound_allow_private = false;
}

on_both_with!(no_private_destinations; private_addresses_are_refused_when_configured);
