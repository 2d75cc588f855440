//! Issue #16, acceptance: a consumer's story against the real oidc-provider started with its
//! idempotency support switched off (like most providers). A native application is registered
//! as a public client (auth method `none` at the provider, no secret); a PENDING subscription of
//! it is withdrawn (REJECTED, reason `withdrawn`; a REJECTED or CLOSED one stays 409); an OWNER
//! member transfers the ownership.

use super::*;
use appreg_test_support::oidc::Options;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumers_story_with_a_provider_that_ignores_idempotency_keys() {
    let oidc = OidcProvider::start_with(Mode::fixed_token(), Options { idempotency: false });
    let system = System::start().await;
    system.enable_dcr().await;
    system.add_provider(&oidc).await;
    let alice = system.token("alice", false);
    let owen = system.token("owen", false);
    let admin = system.token("root", true);

    // A native application: a public client at the provider.
    let id = system
        .create(
            &alice,
            json!({"name": "Mobile", "type": "native", "redirect_uris": ["com.example.app:/cb"]}),
        )
        .await;
    let app = system.settled(&alice, &id).await;
    assert_eq!(app["registration"]["state"], "REGISTERED", "{app}");
    let client_id = app["client_id"].as_str().unwrap().to_string();
    assert_eq!(oidc.clients().await, std::slice::from_ref(&client_id));
    let handle = RegistrationHandle {
        client_id: client_id.clone(),
        registration_client_uri: Some(format!("{}/{client_id}", oidc.registration_endpoint())),
        registration_access_token: system
            .vault
            .get(&format!("application/{id}"), "registration_access_token")
            .await
            .unwrap(),
    };
    let there = ProviderClient::new()
        .unwrap()
        .read(&oidc.settings(), &handle)
        .await
        .unwrap();
    assert_eq!(there.metadata["token_endpoint_auth_method"], "none");
    assert_eq!(there.metadata["application_type"], "native");
    let (status, credentials) = system
        .call(
            reqwest::Method::GET,
            &format!("applications/{id}/credentials"),
            &alice,
            None,
        )
        .await;
    assert_eq!(status, 200, "{credentials}");
    assert!(credentials["client_secret"].is_null(), "{credentials}");

    // A plan that needs an administrator's validation; the request is withdrawn.
    let (status, api) = system
        .call(
            reqwest::Method::POST,
            "apis",
            &admin,
            Some(json!({"name": "Weather"})),
        )
        .await;
    assert_eq!(status, 201, "{api}");
    let (status, plan) = system
        .call(
            reqwest::Method::POST,
            &format!("apis/{}/plans", api["id"].as_str().unwrap()),
            &admin,
            Some(json!({"name": "gold", "security": "OAUTH2", "validation": "MANUAL"})),
        )
        .await;
    assert_eq!(status, 201, "{plan}");
    let subscriptions = format!("applications/{id}/subscriptions");
    let subscribe = || {
        system.call(
            reqwest::Method::POST,
            &subscriptions,
            &alice,
            Some(json!({"plan_id": plan["id"]})),
        )
    };
    let (status, pending) = subscribe().await;
    assert_eq!(status, 201, "{pending}");
    assert_eq!(pending["status"], "PENDING");
    let sid = pending["id"].as_str().unwrap().to_string();
    let close = |token: &str| {
        let path = format!("subscriptions/{sid}/_close");
        let token = token.to_string();
        let system = &system;
        async move {
            system
                .call(reqwest::Method::POST, &path, &token, Some(json!({})))
                .await
        }
    };
    let (status, withdrawn) = close(&alice).await;
    assert_eq!(status, 200, "{withdrawn}");
    assert_eq!(withdrawn["status"], "REJECTED");
    assert_eq!(withdrawn["reason"], "withdrawn");
    let (status, again) = close(&alice).await;
    assert_eq!(status, 409, "{again}");
    assert_eq!(again["code"], "subscription.transition");
    // Accepted then closed: closing it again is still refused.
    let (status, second) = subscribe().await;
    assert_eq!(status, 201, "{second}");
    let sid2 = second["id"].as_str().unwrap().to_string();
    let (status, accepted) = system
        .call(
            reqwest::Method::POST,
            &format!("subscriptions/{sid2}/_accept"),
            &admin,
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 200, "{accepted}");
    for expected in [200, 409] {
        let (status, body) = system
            .call(
                reqwest::Method::POST,
                &format!("subscriptions/{sid2}/_close"),
                &alice,
                Some(json!({})),
            )
            .await;
        assert_eq!(status, expected, "{body}");
    }

    // An OWNER member transfers the ownership to himself.
    let (status, member) = system
        .call(
            reqwest::Method::POST,
            &format!("applications/{id}/members"),
            &alice,
            Some(json!({"user": "owen", "role": "OWNER"})),
        )
        .await;
    assert_eq!(status, 201, "{member}");
    let (status, transferred) = system
        .call(
            reqwest::Method::POST,
            &format!("applications/{id}/members/_transfer_ownership"),
            &owen,
            Some(json!({"user": "owen"})),
        )
        .await;
    assert_eq!(status, 200, "{transferred}");
    assert_eq!(transferred["owner"]["id"], "owen");
    assert_eq!(transferred["role"], "PRIMARY_OWNER");

    // Still one client at the provider, and no suspicion.
    assert_eq!(oidc.clients().await, [client_id]);
    system.stop().await;
}
