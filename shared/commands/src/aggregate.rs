//! What the command path needs to know of an aggregate: how to decode and fold its events, which
//! uniqueness claims a change of state takes or gives up, and the shape of its snapshots.

use appreg_domain::application::{claim_changes, Application, ApplicationEvent};
use appreg_domain::catalogue::{Catalogue, CatalogueEvent};
use appreg_domain::provider::{ProviderEvent, ProviderRegistry};
use appreg_domain::webhook::{WebhookEvent, WebhookRegistry};
use appreg_domain::{
    ClientRegistrationSettings, DecodeError, DomainEvent, SettingsEvent, UniqueClaim,
};
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// An aggregate's state, folded from its stream. `Default` is the state of an empty stream.
pub trait Aggregate:
    Clone + Default + Serialize + DeserializeOwned + Send + Sync + 'static
{
    type Event: DomainEvent + Send + Sync;

    /// The stream type its streams are stored under.
    const STREAM_TYPE: &'static str;

    /// The shape of the serialized state. Bump it whenever the state's fields change: a snapshot
    /// written under another number is ignored (the stream is folded instead, and a new snapshot
    /// written). `tests/snapshot_shape.rs` pins the shape of each aggregate to this number.
    const SNAPSHOT_SCHEMA: i32;

    /// Folds one event; `version` is the event's stream version, `at` its time.
    fn apply(&mut self, event: &Self::Event, at: DateTime<Utc>, version: i64);

    /// The claims to take and to give up when the state changes from `self` to `after`.
    fn claim_changes(&self, _after: &Self) -> (Vec<UniqueClaim>, Vec<UniqueClaim>) {
        (Vec::new(), Vec::new())
    }

    /// Decodes a stored event (upcasting older schema versions).
    fn decode(
        event_type: &str,
        schema_version: i32,
        data: serde_json::Value,
    ) -> Result<Self::Event, DecodeError> {
        Self::Event::decode(event_type, schema_version, data)
    }
}

/// An application's state: `None` until its stream has its `ApplicationCreated`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct ApplicationState(pub Option<Application>);

impl Aggregate for ApplicationState {
    type Event = ApplicationEvent;
    const STREAM_TYPE: &'static str = "application";
    /// 2: the state gained `suspected_orphans`.
    const SNAPSHOT_SCHEMA: i32 = 2;

    fn apply(&mut self, event: &ApplicationEvent, at: DateTime<Utc>, version: i64) {
        self.0 = Application::evolve(self.0.take(), event, at, version);
    }

    fn claim_changes(&self, after: &Self) -> (Vec<UniqueClaim>, Vec<UniqueClaim>) {
        claim_changes(self.0.as_ref(), after.0.as_ref())
    }
}

impl Aggregate for ClientRegistrationSettings {
    type Event = SettingsEvent;
    const STREAM_TYPE: &'static str = "settings";
    const SNAPSHOT_SCHEMA: i32 = 1;

    fn apply(&mut self, event: &SettingsEvent, _: DateTime<Utc>, _: i64) {
        self.evolve(event);
    }
}

impl Aggregate for Catalogue {
    type Event = CatalogueEvent;
    const STREAM_TYPE: &'static str = appreg_domain::catalogue::CATALOGUE_STREAM;
    const SNAPSHOT_SCHEMA: i32 = 1;

    fn apply(&mut self, event: &CatalogueEvent, _: DateTime<Utc>, _: i64) {
        self.evolve(event);
    }
}

impl Aggregate for ProviderRegistry {
    type Event = ProviderEvent;
    const STREAM_TYPE: &'static str = "providers";
    const SNAPSHOT_SCHEMA: i32 = 1;

    fn apply(&mut self, event: &ProviderEvent, _: DateTime<Utc>, _: i64) {
        self.evolve(event);
    }
}

impl Aggregate for WebhookRegistry {
    type Event = WebhookEvent;
    const STREAM_TYPE: &'static str = appreg_domain::webhook::WEBHOOK_STREAM;
    const SNAPSHOT_SCHEMA: i32 = 1;

    fn apply(&mut self, event: &WebhookEvent, at: DateTime<Utc>, _: i64) {
        self.evolve_at(event, at);
    }
}
