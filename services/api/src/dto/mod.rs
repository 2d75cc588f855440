//! The JSON bodies of the HTTP contract (API.md), and their conversion into domain commands at
//! the edge: every invalid field is reported at once.
//!
//! Layout: `requests` the request bodies and their conversion, `views` the response bodies.

use appreg_domain::application::{check_oauth_settings, MAX_DESCRIPTION, MAX_DOMAIN};
use appreg_domain::permissions::grants;
use appreg_domain::{
    Actor, Application, ApplicationId, ApplicationName, ApplicationType, BoundedText, ClientId,
    CreateApplication, EnvironmentId, FieldErrors, GrantType, HttpUrl, Patch, Permission, Policy,
    RedirectUri, UpdateApplication,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;
use uuid::Uuid;

mod requests;
mod views;

pub use requests::*;
pub use views::*;
