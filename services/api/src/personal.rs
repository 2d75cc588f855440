//! Personal data at the edge (DESIGN.md "Personal data"): the api seals the names and e-mail
//! addresses it puts in events with their subject's data key (the vault), and opens them only in
//! what it answers to readers allowed to see them (`history`, `/events`, `/audit`, `/users`,
//! members, owners). The log, the read model's rows and NATS keep the sealed text; once a user is
//! erased nothing opens it, and readers see the subject id and `erased: true`.
//!
//! Fields, by the subject whose key seals them:
//! - `UserFirstSeen.name`, `.email` and the `actor_name` of every event's metadata (field `name`
//!   and `email` of the user, resp. the actor);
//! - `NotificationSettingsUpdated.email` (field `email` of the member).

use crate::error::ApiError;
use crate::state::AppState;
use appreg_domain::environment::clip_profile;
use appreg_domain::personal::{is_sealed, payload_fields, METADATA_FIELDS};
use appreg_domain::{Personal, UserId};
use appreg_eventstore::StoredEvent;
use appreg_secrets::PersonalError;
use serde_json::Value;

/// The field names values are sealed under (part of the sealed data: never change them).
pub use appreg_domain::personal::{FIELD_EMAIL as EMAIL, FIELD_NAME as NAME};

fn vault_err(e: PersonalError) -> ApiError {
    ApiError::internal(e)
}

/// `value` (clipped to 200 characters, as profiles are kept) sealed for `user`'s `field`.
pub async fn seal(
    state: &AppState,
    user: &UserId,
    field: &str,
    value: &str,
) -> Result<Personal, ApiError> {
    let sealed = state
        .personal()
        .seal(user.as_str(), field, &clip_profile(value))
        .await
        .map_err(vault_err)?;
    Personal::sealed(sealed).ok_or_else(|| ApiError::internal("the vault sealed a malformed value"))
}

/// [`seal`] of an optional value.
pub async fn seal_opt(
    state: &AppState,
    user: &UserId,
    field: &str,
    value: Option<&str>,
) -> Result<Option<Personal>, ApiError> {
    match value {
        Some(v) => Ok(Some(seal(state, user, field, v).await?)),
        None => Ok(None),
    }
}

/// A stored personal value opened: `Ok(Some)` the plaintext, `Ok(None)` none stored,
/// `Err(Erased)` unreadable since the subject's erasure.
#[derive(Debug, PartialEq, Eq)]
pub struct Erased;

/// Opens a stored value of `user`'s `field`: sealed text is opened, an unmigrated event's
/// plaintext is returned as it is.
pub async fn open(
    state: &AppState,
    user: &str,
    field: &str,
    stored: Option<&str>,
) -> Result<Result<Option<String>, Erased>, ApiError> {
    let Some(text) = stored else {
        return Ok(Ok(None));
    };
    if !is_sealed(text) {
        return Ok(Ok(Some(text.to_string())));
    }
    match state.personal().open(user, field, text).await {
        Ok(Some(plain)) => Ok(Ok(Some(plain))),
        Ok(None) => Ok(Err(Erased)),
        // Sealed under a key destroyed since (a new one was made after an erasure).
        Err(PersonalError::Tampered | PersonalError::Malformed)
            if state
                .personal()
                .erased_at(user)
                .await
                .map_err(vault_err)?
                .is_some() =>
        {
            Ok(Err(Erased))
        }
        Err(e) => {
            tracing::warn!(error = %e, "a sealed personal value does not open");
            Ok(Err(Erased))
        }
    }
}

/// A user's profile in an environment (name, e-mail) as the read model keeps it, opened.
pub async fn profile(
    state: &AppState,
    env: &str,
    user: &str,
) -> Result<(Option<String>, Option<String>), ApiError> {
    let Some((name, email)) = state.read().user_profile(env, user).await? else {
        return Ok((None, None));
    };
    let name = open(state, user, NAME, name.as_deref())
        .await?
        .unwrap_or(None);
    let email = open(state, user, EMAIL, email.as_deref())
        .await?
        .unwrap_or(None);
    Ok((name, email))
}

/// Opens, in place, the personal fields of the object `data` sealed for `user`; an unreadable
/// one becomes null and the object gets `erased: true`.
async fn open_fields(
    state: &AppState,
    user: &str,
    data: &mut Value,
    fields: &[(&str, &str)],
) -> Result<(), ApiError> {
    let mut erased = false;
    for (key, field) in fields {
        let Some(slot) = data.get_mut(*key) else {
            continue;
        };
        // A string as stored, or an upcast unmigrated plaintext (`{"plain": …}`).
        let stored = slot
            .as_str()
            .or_else(|| slot.get("plain").and_then(Value::as_str))
            .map(str::to_string);
        match open(state, user, field, stored.as_deref()).await? {
            Ok(Some(plain)) => *slot = Value::String(plain),
            Ok(None) => {}
            Err(Erased) => {
                *slot = Value::Null;
                erased = true;
            }
        }
    }
    if erased {
        if let Some(map) = data.as_object_mut() {
            map.insert("erased".into(), Value::Bool(true));
        }
    }
    Ok(())
}

/// An event as a reader allowed to see it gets it: its personal fields (payload and the
/// metadata's `actor_name`) opened, or null with `erased: true` once their subject is erased.
pub async fn reveal(state: &AppState, e: &StoredEvent) -> Result<StoredEvent, ApiError> {
    let mut e = e.clone();
    if let Some(actor) = e
        .metadata
        .get("actor")
        .and_then(Value::as_str)
        .map(str::to_string)
    {
        open_fields(state, &actor, &mut e.metadata, METADATA_FIELDS).await?;
    }
    reveal_payload(state, &e.event_type, &mut e.data).await?;
    Ok(e)
}

/// Opens the personal fields of an event's payload (see [`reveal`]).
pub async fn reveal_payload(
    state: &AppState,
    event_type: &str,
    data: &mut Value,
) -> Result<(), ApiError> {
    let Some(subject) = data.get("user").and_then(Value::as_str).map(str::to_string) else {
        return Ok(());
    };
    if event_type == "UserErased" {
        if let Some(map) = data.as_object_mut() {
            map.insert("erased".into(), Value::Bool(true));
        }
        return Ok(());
    }
    open_fields(state, &subject, data, payload_fields(event_type)).await
}

/// [`reveal`] of each event.
pub async fn reveal_all(
    state: &AppState,
    events: &[StoredEvent],
) -> Result<Vec<StoredEvent>, ApiError> {
    let mut out = Vec::with_capacity(events.len());
    for e in events {
        out.push(reveal(state, e).await?);
    }
    Ok(out)
}
