//! The event decoders (with their upcasters) on arbitrary stored payloads: they never panic, and
//! whatever they accept encodes back to a payload they decode to the same event.
#![no_main]

use appreg_domain::catalogue::CatalogueEvent;
use appreg_domain::provider::ProviderEvent;
use appreg_domain::{ApplicationEvent, DomainEvent};
use libfuzzer_sys::fuzz_target;

/// Every type name the decoders know, and a few they do not.
const TYPES: &[&str] = &[
    "ApplicationCreated", "DcrRegistrationRequested", "ApplicationUpdated", "ApplicationArchived",
    "ApplicationRestored", "MemberAdded", "MemberRoleChanged", "MemberRemoved",
    "PrimaryOwnershipTransferred", "DcrClientRegistered", "DcrRegistrationFailed",
    "OrphanClientDetected", "DcrAttemptOutcomeUnknown", "DcrAttemptSuspicionsCleared",
    "DcrClientUpdateRequested", "DcrClientUpdated", "DcrClientUpdateFailed",
    "ClientSecretRenewalRequested", "ClientSecretRenewed", "ClientSecretRenewalFailed",
    "DcrClientDeleted", "SubscriptionCreated", "SubscriptionAccepted", "SubscriptionRejected",
    "SubscriptionPaused", "SubscriptionResumed", "SubscriptionClosed", "SubscriptionReopened",
    "ApiKeyIssued", "ApiKeyRenewed", "ApiKeyRevoked", "NotificationSettingsUpdated",
    "NotificationSettingsDeleted", "ApiCreated", "PlanCreated", "PlanClosed", "ProviderCreated",
    "ProviderUpdated", "ProviderDeleted", "Unknown", "",
];

fn round_trip<E: DomainEvent + PartialEq + std::fmt::Debug>(t: &str, v: i32, data: &serde_json::Value) {
    if let Ok(event) = E::decode(t, v, data.clone()) {
        let again = E::decode(event.event_type(), event.schema_version(), event.data())
            .expect("an accepted event's own encoding decodes");
        assert_eq!(again, event);
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&head, rest)) = input.split_first() else { return };
    let event_type = TYPES[head as usize % TYPES.len()];
    let version = i32::from(head >> 6); // 0..=3
    let Ok(data) = serde_json::from_slice::<serde_json::Value>(rest) else { return };
    round_trip::<ApplicationEvent>(event_type, version, &data);
    round_trip::<CatalogueEvent>(event_type, version, &data);
    round_trip::<ProviderEvent>(event_type, version, &data);
});
