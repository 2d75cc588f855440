//! The response bodies of the application endpoints: pages, credentials, history pages and
//! the application types.

use crate::dto::{ApplicationView, HistoryEntry};
use appreg_domain::{Actor, Application, ApplicationType, GrantType, Operation, Permission};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

/// A page of a list.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApplicationPage {
    pub items: Vec<ApplicationView>,
    pub page: i64,
    pub size: i64,
    pub total: i64,
}

/// `GET /applications/{id}/credentials`.
#[derive(Serialize, ToSchema)]
pub struct CredentialsView {
    pub client_id: Option<String>,
    /// Absent for public clients (browser applications).
    pub client_secret: Option<String>,
    pub client_secret_expires_at: Option<DateTime<Utc>>,
}

/// A page of an application's history, oldest first: the events after `after_version` the
/// caller may read.
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryPage {
    /// The page's events the caller's role may read (fewer than `limit` when some were not).
    pub items: Vec<HistoryEntry>,
    /// The last version this page examined: pass it as `after_version` for the next page. Null
    /// when nothing follows. Always present.
    #[schema(required = true)]
    pub next_after_version: Option<i64>,
}

/// `GET /applications/{id}`: the application; at a past point (`as_of`, `version`) also its
/// members and subscriptions then (each only for a caller whose role may read them now).
#[derive(Debug, Serialize, ToSchema)]
pub struct ApplicationAtView {
    #[serde(flatten)]
    pub application: ApplicationView,
    /// At a past point: the members then (MEMBER[R]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub members: Option<Vec<PastMember>>,
    /// At a past point: the subscriptions then, open and ended (SUBSCRIPTION[R]); never key
    /// values.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscriptions: Option<Vec<PastSubscription>>,
}

/// A member at a past point.
#[derive(Debug, Serialize, ToSchema)]
pub struct PastMember {
    pub user: String,
    /// PRIMARY_OWNER, OWNER or USER.
    pub role: String,
}

/// A subscription at a past point.
#[derive(Debug, Serialize, ToSchema)]
pub struct PastSubscription {
    pub id: String,
    pub api_id: String,
    pub plan_id: String,
    /// PENDING, ACCEPTED, REJECTED, PAUSED or CLOSED.
    pub status: String,
    pub reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl ApplicationAtView {
    /// `app` as of a past point, with what `current` (its state now) lets `caller` read.
    pub fn past(
        application: ApplicationView,
        app: &Application,
        current: &Application,
        caller: &Actor,
    ) -> Self {
        let may = |p| current.authorize(caller, p, Operation::Read).is_ok();
        ApplicationAtView {
            application,
            members: may(Permission::Member).then(|| {
                app.members
                    .iter()
                    .map(|(user, role)| PastMember {
                        user: user.to_string(),
                        role: role.as_str().to_string(),
                    })
                    .collect()
            }),
            subscriptions: may(Permission::Subscription).then(|| {
                app.subscriptions
                    .iter()
                    .map(|s| PastSubscription {
                        id: s.id.clone(),
                        api_id: s.api_id.clone(),
                        plan_id: s.plan_id.clone(),
                        status: s.status.as_str().to_string(),
                        reason: s.reason.clone(),
                        created_at: s.created_at,
                        updated_at: s.updated_at,
                    })
                    .collect()
            }),
        }
    }
}

/// `GET /application-types`: one enabled type.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApplicationTypeView {
    #[serde(rename = "type")]
    pub app_type: String,
    pub allowed_grant_types: Vec<String>,
    pub default_grant_types: Vec<String>,
    pub mandatory_grant_types: Vec<String>,
    pub requires_redirect_uris: bool,
}

impl ApplicationTypeView {
    pub fn new(t: ApplicationType) -> Self {
        let names = |g: &[GrantType]| g.iter().map(|g| g.as_str().to_string()).collect();
        ApplicationTypeView {
            app_type: t.as_str().to_string(),
            allowed_grant_types: names(t.allowed_grant_types()),
            default_grant_types: names(t.default_grant_types()),
            mandatory_grant_types: names(t.mandatory_grant_types()),
            requires_redirect_uris: t.requires_redirect_uris(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ApplicationTypeList {
    pub items: Vec<ApplicationTypeView>,
}
