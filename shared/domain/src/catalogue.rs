//! The catalogue: the APIs of an environment and their plans, the minimum the subscription
//! lifecycle needs (DESIGN §1). Administrators manage it; everyone reads it. One stream per
//! environment (`catalogue-<env>`) holds it all, so limits are decided on one aggregate.
//!
//! Plans are never deleted, only closed: subscriptions keep naming them.

use crate::error::{DomainError, FieldErrors};
use crate::{decode_tagged, tagged_data, DecodeError, DomainEvent};
use serde::{Deserialize, Serialize};

/// At most this many APIs per environment, and plans per API.
pub const MAX_APIS: usize = 500;
pub const MAX_PLANS: usize = 50;
pub const MAX_NAME: usize = 200;
pub const MAX_DESCRIPTION: usize = 4000;

/// The stream type of the catalogue streams.
pub const CATALOGUE_STREAM: &str = "catalogue";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PlanSecurity {
    Keyless,
    ApiKey,
    Jwt,
    Oauth2,
}

impl PlanSecurity {
    pub fn parse(s: &str) -> Result<Self, (&'static str, String)> {
        match s {
            "KEYLESS" => Ok(PlanSecurity::Keyless),
            "API_KEY" => Ok(PlanSecurity::ApiKey),
            "JWT" => Ok(PlanSecurity::Jwt),
            "OAUTH2" => Ok(PlanSecurity::Oauth2),
            other => Err((
                "plan.security.invalid",
                format!("unknown security {other:?}; one of KEYLESS, API_KEY, JWT, OAUTH2"),
            )),
        }
    }
    /// JWT and OAuth2 plans identify the application by its client_id.
    pub fn needs_client_id(&self) -> bool {
        matches!(self, PlanSecurity::Jwt | PlanSecurity::Oauth2)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PlanValidation {
    Auto,
    Manual,
}

impl PlanValidation {
    pub fn parse(s: &str) -> Result<Self, (&'static str, String)> {
        match s {
            "AUTO" => Ok(PlanValidation::Auto),
            "MANUAL" => Ok(PlanValidation::Manual),
            other => Err((
                "plan.validation.invalid",
                format!("unknown validation {other:?}; one of AUTO, MANUAL"),
            )),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PlanStatus {
    Published,
    Closed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub id: String,
    pub api_id: String,
    pub name: String,
    pub security: PlanSecurity,
    pub validation: PlanValidation,
    pub status: PlanStatus,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogueApi {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub plans: Vec<Plan>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiCreated {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanCreated {
    pub plan: Plan,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanClosed {
    pub api_id: String,
    pub plan_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum CatalogueEvent {
    ApiCreated(ApiCreated),
    PlanCreated(PlanCreated),
    PlanClosed(PlanClosed),
}

pub(crate) const EVENT_TYPES: &[&str] = &["ApiCreated", "PlanCreated", "PlanClosed"];

impl DomainEvent for CatalogueEvent {
    fn event_type(&self) -> &'static str {
        match self {
            CatalogueEvent::ApiCreated(_) => "ApiCreated",
            CatalogueEvent::PlanCreated(_) => "PlanCreated",
            CatalogueEvent::PlanClosed(_) => "PlanClosed",
        }
    }
    fn data(&self) -> serde_json::Value {
        tagged_data(self)
    }
    fn decode(
        event_type: &str,
        schema_version: i32,
        data: serde_json::Value,
    ) -> Result<Self, DecodeError> {
        decode_tagged(event_type, schema_version, EVENT_TYPES, data)
    }
}

/// What an administrator submits for a new plan (parsed at the edge).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanDefinition {
    pub name: String,
    pub security: PlanSecurity,
    pub validation: PlanValidation,
}

/// An environment's catalogue, folded from its stream.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalogue {
    pub apis: Vec<CatalogueApi>,
}

fn text(
    errors: &mut FieldErrors,
    field: &str,
    value: &str,
    min: usize,
    max: usize,
) -> Option<String> {
    let v = value.trim();
    let n = v.chars().count();
    if n < min || n > max || v.chars().any(char::is_control) {
        errors.add(
            field,
            "text.invalid",
            format!("{field} must be {min} to {max} characters, without control characters"),
        );
        return None;
    }
    Some(v.to_string())
}

impl Catalogue {
    pub fn stream_id(env: &str) -> String {
        format!("catalogue-{env}")
    }

    pub fn api(&self, id: &str) -> Option<&CatalogueApi> {
        self.apis.iter().find(|a| a.id == id)
    }

    /// A plan by id, whatever its API.
    pub fn plan(&self, id: &str) -> Option<&Plan> {
        self.apis.iter().flat_map(|a| &a.plans).find(|p| p.id == id)
    }

    /// Decide creating an API (its id generated by the caller).
    pub fn create_api(
        &self,
        id: String,
        name: &str,
        description: Option<&str>,
    ) -> Result<Vec<CatalogueEvent>, DomainError> {
        let mut errors = FieldErrors::new();
        let name = text(&mut errors, "name", name, 1, MAX_NAME);
        let description = description.and_then(|d| {
            text(&mut errors, "description", d, 0, MAX_DESCRIPTION).filter(|d| !d.is_empty())
        });
        errors.into_result()?;
        if self.apis.len() >= MAX_APIS {
            return Err(DomainError::CatalogueLimit);
        }
        Ok(vec![CatalogueEvent::ApiCreated(ApiCreated {
            id,
            name: name.unwrap_or_default(),
            description,
        })])
    }

    /// Decide adding a plan to an API.
    pub fn create_plan(
        &self,
        api_id: &str,
        id: String,
        plan: PlanDefinition,
    ) -> Result<Vec<CatalogueEvent>, DomainError> {
        let api = self.api(api_id).ok_or(DomainError::ApiNotFound)?;
        let mut errors = FieldErrors::new();
        let name = text(&mut errors, "name", &plan.name, 1, MAX_NAME);
        errors.into_result()?;
        if api.plans.len() >= MAX_PLANS {
            return Err(DomainError::CatalogueLimit);
        }
        Ok(vec![CatalogueEvent::PlanCreated(PlanCreated {
            plan: Plan {
                id,
                api_id: api.id.clone(),
                name: name.unwrap_or_default(),
                security: plan.security,
                validation: plan.validation,
                status: PlanStatus::Published,
            },
        })])
    }

    /// Decide closing a plan: new subscriptions to it are refused; existing ones stay. Closing a
    /// closed plan changes nothing.
    pub fn close_plan(
        &self,
        api_id: &str,
        plan_id: &str,
    ) -> Result<Vec<CatalogueEvent>, DomainError> {
        let api = self.api(api_id).ok_or(DomainError::ApiNotFound)?;
        let plan = api
            .plans
            .iter()
            .find(|p| p.id == plan_id)
            .ok_or(DomainError::PlanNotFound)?;
        if plan.status == PlanStatus::Closed {
            return Ok(vec![]);
        }
        Ok(vec![CatalogueEvent::PlanClosed(PlanClosed {
            api_id: api_id.to_string(),
            plan_id: plan_id.to_string(),
        })])
    }

    pub fn evolve(&mut self, event: &CatalogueEvent) {
        match event {
            CatalogueEvent::ApiCreated(e) => {
                if self.api(&e.id).is_none() {
                    self.apis.push(CatalogueApi {
                        id: e.id.clone(),
                        name: e.name.clone(),
                        description: e.description.clone(),
                        plans: vec![],
                    });
                }
            }
            CatalogueEvent::PlanCreated(e) => {
                if let Some(api) = self.apis.iter_mut().find(|a| a.id == e.plan.api_id) {
                    api.plans.push(e.plan.clone());
                }
            }
            CatalogueEvent::PlanClosed(e) => {
                if let Some(plan) = self
                    .apis
                    .iter_mut()
                    .filter(|a| a.id == e.api_id)
                    .flat_map(|a| a.plans.iter_mut())
                    .find(|p| p.id == e.plan_id)
                {
                    plan.status = PlanStatus::Closed;
                }
            }
        }
    }
}
