//! Who may read which application event: the one rule of `GET /events` and of an
//! application's history, kept in the domain ([`appreg_domain::permissions::may_read_app_event`])
//! so that the notifier applies it to an application's webhooks too.

pub use appreg_domain::permissions::may_read_app_event;
