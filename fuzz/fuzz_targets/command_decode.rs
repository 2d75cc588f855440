//! The command decoder at the HTTP edge on arbitrary bodies: parsing a create or update request
//! and turning it into a domain command never panics, and a create the domain accepts yields
//! events that encode and decode to themselves.
#![no_main]

use appreg_api::applications::{CreateApplicationRequest, UpdateApplicationRequest};
use appreg_domain::{
    Actor, Application, ApplicationId, ClientRegistrationSettings, DomainEvent, EnvironmentId,
    Policy, UserId,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let mut settings = ClientRegistrationSettings::default();
    settings.dcr_enabled = input.first().is_some_and(|b| b & 1 == 1);
    let policy = Policy { settings, allow_http_redirect_uris: input.first().is_some_and(|b| b & 2 == 2) };
    if let Ok(request) = serde_json::from_slice::<CreateApplicationRequest>(input) {
        let owner = Actor { user: UserId::parse("fuzz").unwrap(), admin: false };
        let id = ApplicationId(uuid::Uuid::from_u128(1));
        if let Ok(command) = request.into_command(id, EnvironmentId::default_env(), &owner, &policy) {
            if let Ok(events) = Application::create(command, &policy) {
                for e in events {
                    let again = appreg_domain::ApplicationEvent::decode(e.event_type(), e.schema_version(), e.data())
                        .expect("a decided event decodes");
                    assert_eq!(again, e);
                }
            }
        }
    }
    if let Ok(request) = serde_json::from_slice::<UpdateApplicationRequest>(input) {
        let _ = request.into_command();
    }
});
