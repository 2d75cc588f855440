//! UpdateNotificationSettings: each member's hooks and the address they go to.

use crate::support::*;
use appreg_domain::subscription::{parse_email, MAX_EMAIL};
use appreg_domain::*;
use std::collections::BTreeSet;
use Hook::*;

fn settings(
    who: &str,
    list: &[Hook],
    email: Option<&str>,
) -> impl FnOnce(&Application) -> Result<Vec<ApplicationEvent>, DomainError> {
    let (who, list, email) = (user(who), hooks(list), email.map(sealed));
    move |a: &Application| a.update_notifications(who, list, email)
}

#[test]
fn a_member_chooses_hooks_and_an_address() {
    let then = given(app_with_client_id())
        .when_app(settings(
            "alice",
            &[SubscriptionClosed, SubscriptionAccepted],
            Some("alice@example.org"),
        ))
        .then([notifications_updated(
            "alice",
            &[SubscriptionAccepted, SubscriptionClosed],
            Some("alice@example.org"),
        )]);
    let n = &then.state().notifications[&alice()];
    assert_eq!(n.hooks, hooks(&[SubscriptionAccepted, SubscriptionClosed]));
    assert_eq!(n.email, sealed("alice@example.org"));
    assert_eq!(then.state().notifications.len(), 1);
    // Nothing to claim.
    assert_eq!(then.claims(), (vec![], vec![]));
}

#[test]
fn every_hook_can_be_chosen() {
    let then = given(app_with_client_id())
        .when_app(settings("alice", &Hook::ALL, Some("a@b.co")))
        .then_ok();
    assert_eq!(
        then.state().notifications[&alice()].hooks,
        Hook::ALL.into_iter().collect::<BTreeSet<_>>()
    );
}

#[test]
fn hooks_need_an_address() {
    given(app_with_client_id())
        .when_app(settings("alice", &[ApiKeyExpiring], None))
        .then_field_errors(&[("email", "notification.email.required")]);
}

/// The edge checks the address before it seals it (the domain sees only the sealed value).
#[test]
fn a_bad_address_is_refused() {
    let long = format!("{}@example.org", "a".repeat(MAX_EMAIL));
    for bad in [
        "",
        "   ",
        "alice",
        "alice@",
        "@example.org",
        "alice@example",
        "alice@.example.org",
        "alice@example.org.",
        "alice@@example.org",
        "alice@b@example.org",
        "al ice@example.org",
        "alice@exa mple.org",
        "alice\u{7}@example.org",
        "alice@example.org\u{a0}x",
        long.as_str(),
    ] {
        assert_eq!(
            parse_email(bad).map_err(|(code, _)| code),
            Err("notification.email.invalid"),
            "{bad:?}"
        );
    }
}

#[test]
fn ordinary_addresses_are_accepted() {
    let longest = format!(
        "{}@example.org",
        "a".repeat(MAX_EMAIL - "@example.org".len())
    );
    for good in [
        "a@b.co",
        "first.last+tag@sub.example.org",
        "ünïcødé@exämple.org",
        longest.as_str(),
    ] {
        assert_eq!(parse_email(good), Ok(good.to_string()));
        given(app_with_client_id())
            .when_app(settings("alice", &[SubscriptionPaused], Some(good)))
            .then([notifications_updated(
                "alice",
                &[SubscriptionPaused],
                Some(good),
            )]);
    }
}

#[test]
fn no_hooks_removes_the_setting() {
    let events = and(
        app_with_client_id(),
        [notifications_updated(
            "alice",
            &[SubscriptionClosed],
            Some("alice@example.org"),
        )],
    );
    // The address does not matter without hooks.
    for email in [None, Some("alice@example.org"), Some("not an address")] {
        let then = given(events.clone())
            .when_app(settings("alice", &[], email))
            .then([notifications_updated("alice", &[], None)]);
        assert!(then.state().notifications.is_empty());
    }
}

#[test]
fn no_hooks_and_no_setting_changes_nothing() {
    given(app_with_client_id())
        .when_app(settings("alice", &[], Some("alice@example.org")))
        .then_nothing();
}

#[test]
fn the_same_setting_again_changes_nothing() {
    let events = and(
        app_with_client_id(),
        [notifications_updated(
            "alice",
            &[SubscriptionClosed, ApiKeyExpiring],
            Some("alice@example.org"),
        )],
    );
    // Same hooks in another order, same address (the edge trimmed it, then sealed it the same).
    given(events.clone())
        .when_app(settings(
            "alice",
            &[ApiKeyExpiring, SubscriptionClosed],
            Some("alice@example.org"),
        ))
        .then_nothing();
    // Another hook, or another address, is a change.
    given(events.clone())
        .when_app(settings(
            "alice",
            &[SubscriptionClosed],
            Some("alice@example.org"),
        ))
        .then([notifications_updated(
            "alice",
            &[SubscriptionClosed],
            Some("alice@example.org"),
        )]);
    given(events)
        .when_app(settings(
            "alice",
            &[SubscriptionClosed, ApiKeyExpiring],
            Some("Alice@example.org"),
        ))
        .then([notifications_updated(
            "alice",
            &[SubscriptionClosed, ApiKeyExpiring],
            Some("Alice@example.org"),
        )]);
}

#[test]
fn members_have_a_setting_each() {
    let events = and(
        app_with_client_id(),
        [notifications_updated(
            "alice",
            &[SubscriptionClosed],
            Some("alice@example.org"),
        )],
    );
    let then = given(events.clone())
        .when_app(settings(
            "olivia",
            &[SubscriptionClosed],
            Some("o@example.org"),
        ))
        .then_ok();
    assert_eq!(then.state().notifications.len(), 2);
    // Removing one leaves the other.
    let then = given(and(events, then.events))
        .when_app(settings("alice", &[], None))
        .then_ok();
    let left: Vec<_> = then.state().notifications.keys().cloned().collect();
    assert_eq!(left, [user("olivia")]);
}

#[test]
fn an_archived_application_has_no_notification_settings_to_change() {
    for list in [&[SubscriptionClosed][..], &[]] {
        given(and(app_with_client_id(), [archived(Some(alice()))]))
            .when_app(settings("alice", list, Some("alice@example.org")))
            .then_error("application.archived");
    }
}

#[test]
fn notification_settings_deleted_clears_every_member() {
    let events = and(
        app_with_client_id(),
        [
            notifications_updated("alice", &[SubscriptionClosed], Some("a@example.org")),
            notifications_updated("olivia", &[ApiKeyExpiring], Some("o@example.org")),
            notifications_deleted(Some(4)),
        ],
    );
    assert!(given(events).state().notifications.is_empty());
}

#[test]
fn hooks_parse_from_their_names() {
    for h in Hook::ALL {
        assert_eq!(Hook::parse(h.as_str()), Ok(h));
        // The wire name is the parsed one.
        assert_eq!(serde_json::to_value(h).unwrap(), h.as_str());
    }
    for bad in [
        "",
        "subscription_accepted",
        "SUBSCRIPTION_CREATED",
        " API_KEY_EXPIRING",
    ] {
        let (code, message) = Hook::parse(bad).unwrap_err();
        assert_eq!(code, "notification.hook.invalid");
        assert!(message.contains("API_KEY_EXPIRING"), "{message}");
    }
}

#[test]
fn a_removed_member_is_notified_no_more() {
    let then = given(and(
        app_with_client_id(),
        [
            ApplicationEvent::MemberAdded(appreg_domain::application::MemberAdded {
                user: user("bob"),
                role: Role::Owner,
            }),
            notifications_updated("bob", &[SubscriptionClosed], Some("bob@example.org")),
            notifications_updated("alice", &[SubscriptionClosed], Some("alice@example.org")),
        ],
    ))
    .when_app(|a| a.remove_member(user("bob")))
    .then_ok();
    let left: Vec<&UserId> = then.state().notifications.keys().collect();
    assert_eq!(left, [&alice()]);
}

#[test]
fn each_hook_is_notified_for_its_event() {
    use appreg_domain::subscription::Hook;
    for (event, hook) in [
        ("SubscriptionAccepted", Hook::SubscriptionAccepted),
        ("SubscriptionRejected", Hook::SubscriptionRejected),
        ("SubscriptionClosed", Hook::SubscriptionClosed),
        ("SubscriptionPaused", Hook::SubscriptionPaused),
        ("SubscriptionResumed", Hook::SubscriptionResumed),
        ("ApiKeyRenewed", Hook::ApiKeyExpiring),
    ] {
        assert_eq!(Hook::for_event(event), Some(hook), "{event}");
    }
    for event in [
        "SubscriptionCreated",
        "SubscriptionReopened",
        "ApiKeyIssued",
        "ApiKeyRevoked",
        "MemberAdded",
    ] {
        assert_eq!(Hook::for_event(event), None, "{event}");
    }
}
