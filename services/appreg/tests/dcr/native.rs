//! Issue #16, item 2: native applications are public clients (RFC 8252 §8.4). One registered
//! as a confidential client before that (simulated here as the earlier saga did it: a client
//! with `client_secret_basic` at the real provider, its secret in the vault,
//! `DcrClientRegistered` with the secret's fingerprint) is moved by the saga, at its start, with
//! an RFC 7592 update: the provider then holds it with `token_endpoint_auth_method: none`, the
//! secret is gone from the vault and from the credentials, and the history says so. A restart
//! does not do it again.

use super::*;
use appreg_dcr_client::provider::{ClientMetadata, TokenEndpointAuthMethod};
use appreg_dcr_client::vault::secret_owner;
use appreg_domain::dcr::IssuedClient;
use appreg_domain::{ApplicationId, ApplicationType, ClientId, RedirectUri};
use secrecy::ExposeSecret;

async fn history(system: &System, token: &str, id: &str) -> Vec<Value> {
    let (status, page) = system
        .call(
            reqwest::Method::GET,
            &format!("applications/{id}/history?limit=100"),
            token,
            None,
        )
        .await;
    assert_eq!(status, 200, "{page}");
    page["items"].as_array().unwrap().clone()
}

fn of_type<'a>(history: &'a [Value], event_type: &str) -> Vec<&'a Value> {
    history.iter().filter(|e| e["type"] == event_type).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confidential_native_client_is_moved_to_a_public_one() {
    let oidc = OidcProvider::start(Mode::fixed_token());
    let mut system = System::start_without_saga().await;
    system.enable_dcr().await;
    let (provider_id, _) = system.add_provider(&oidc).await;
    let alice = system.token("alice", false);
    let redirect = "com.example.app:/cb";
    let id = system
        .create(
            &alice,
            json!({"name": "Mobile", "type": "native", "redirect_uris": [redirect]}),
        )
        .await;
    let app_id = ApplicationId(id.parse().unwrap());

    // What the saga did before native applications were public clients.
    let mut legacy = ClientMetadata::for_application(
        ApplicationType::Native,
        &[],
        &[RedirectUri::parse(redirect).unwrap()],
        "Mobile",
        None,
        None,
        None,
    )
    .unwrap();
    legacy.token_endpoint_auth_method = TokenEndpointAuthMethod::ClientSecretBasic;
    let client = ProviderClient::new()
        .unwrap()
        .register(&oidc.settings(), &legacy)
        .await
        .unwrap();
    let secret = client.client_secret.clone().expect("a confidential client");
    let owner = secret_owner(app_id);
    let fingerprint = system
        .vault
        .put(&owner, "client_secret", &secret)
        .await
        .unwrap();
    system
        .vault
        .put(
            &owner,
            "registration_access_token",
            client.registration_access_token.as_ref().unwrap(),
        )
        .await
        .unwrap();
    let Database::Postgres(pool) = &system.db else {
        unreachable!()
    };
    sqlx::query(
        "INSERT INTO dcr_requests (request_key, application_id, provider_id, client_id, \
         registration_client_uri, secret_fingerprint, state, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, 'OBTAINED', $7)",
    )
    .bind(format!("{id}:2"))
    .bind(&id)
    .bind(&provider_id)
    .bind(&client.client_id)
    .bind(&client.registration_client_uri)
    .bind(&fingerprint)
    .bind(chrono::Utc::now().to_rfc3339())
    .execute(pool)
    .await
    .unwrap();
    let store = system.db.event_store().await.unwrap();
    let commands = appreg_commands::Commands::new(store, system.config.commands.clone());
    let (app, _) = appreg_dcr_saga::apps::load(&commands, app_id)
        .await
        .unwrap();
    let request_version = app.unwrap().registration.unwrap().request_version;
    let issued = IssuedClient {
        provider_id: provider_id.clone(),
        client_id: ClientId::parse(&client.client_id).unwrap(),
        client_secret_fingerprint: Some(fingerprint.clone()),
        client_secret_expires_at: None,
    };
    let meta = json!({"environment": "DEFAULT", "actor": "dcr-saga", "correlation_id": "legacy", "causation_id": "legacy", "at": chrono::Utc::now()});
    appreg_dcr_saga::apps::execute(&commands, app_id, &meta, |app| {
        app.register_dcr_client(request_version, issued.clone())
    })
    .await
    .unwrap();
    let (status, credentials) = system
        .call(
            reqwest::Method::GET,
            &format!("applications/{id}/credentials"),
            &alice,
            None,
        )
        .await;
    assert_eq!(status, 200, "{credentials}");
    assert_eq!(
        credentials["client_secret"],
        secret.expose_secret(),
        "the legacy client is confidential"
    );

    // The saga starts: the client is moved.
    system.start_saga().await;
    let app = operation_settled(&system, &alice, &id).await;
    assert_eq!(app["registration"]["operation"]["state"], "DONE", "{app}");
    assert_eq!(app["registration"]["state"], "REGISTERED", "{app}");
    assert_eq!(
        app["client_id"],
        client.client_id.as_str(),
        "the same client"
    );
    assert!(
        app["registration"]["client_secret_fingerprint"].is_null(),
        "{app}"
    );

    // At the provider (RFC 7592 read with the rotated token the saga kept): public.
    let handle = RegistrationHandle {
        client_id: client.client_id.clone(),
        registration_client_uri: client.registration_client_uri.clone(),
        registration_access_token: system
            .vault
            .get(&owner, "registration_access_token")
            .await
            .unwrap(),
    };
    let there = ProviderClient::new()
        .unwrap()
        .read(&oidc.settings(), &handle)
        .await
        .unwrap();
    assert_eq!(there.metadata["token_endpoint_auth_method"], "none");
    assert_eq!(there.strings("redirect_uris"), [redirect]);
    assert_eq!(
        oidc.clients().await,
        std::slice::from_ref(&client.client_id)
    );

    // No secret in the vault nor in the credentials.
    assert!(system
        .vault
        .get(&owner, "client_secret")
        .await
        .unwrap()
        .is_none());
    let (status, credentials) = system
        .call(
            reqwest::Method::GET,
            &format!("applications/{id}/credentials"),
            &alice,
            None,
        )
        .await;
    assert_eq!(status, 200, "{credentials}");
    assert_eq!(credentials["client_id"], client.client_id.as_str());
    assert!(credentials["client_secret"].is_null(), "{credentials}");

    // The history says what happened.
    let events = history(&system, &alice, &id).await;
    let requested = of_type(&events, "DcrClientUpdateRequested");
    assert_eq!(requested.len(), 1, "{events:#?}");
    assert_eq!(
        requested[0]["data"]["changed"],
        json!(["token_endpoint_auth_method"])
    );
    assert_eq!(requested[0]["actor"], "dcr-saga");
    let updated = of_type(&events, "DcrClientUpdated");
    assert_eq!(updated.len(), 1, "{events:#?}");
    assert_eq!(updated[0]["data"]["client_secret_removed"], true);

    // Once per database: a restarted saga does not ask again.
    system.kill_saga().await;
    system.start_saga().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let events = history(&system, &alice, &id).await;
    assert_eq!(of_type(&events, "DcrClientUpdateRequested").len(), 1);
    assert_events_match_schemas(&system.db).await;
    system.stop().await;
}
