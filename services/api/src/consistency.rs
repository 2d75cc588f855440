//! Read-your-writes across the read models: a write answers the log position of its events
//! (`X-Consistency-Token`), and a read of the read models waits until they include it.

use crate::error::ApiError;
use crate::state::AppState;
use appreg_eventstore::{Appended, LogPosition};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::Response;

pub static CONSISTENCY_TOKEN: HeaderName = HeaderName::from_static("x-consistency-token");

pub(crate) fn with_token(mut response: Response, appended: Option<&Appended>) -> Response {
    if let Some(a) = appended {
        if let Ok(v) = HeaderValue::from_str(&a.position.to_string()) {
            response.headers_mut().insert(CONSISTENCY_TOKEN.clone(), v);
        }
    }
    response
}

/// Waits until the read model includes the caller's last write (`X-Consistency-Token`), or,
/// without a token, everything committed before the request and every write this process
/// acknowledged: a list never misses a write the caller has seen acknowledged (through another
/// api instance, send the token).
pub(crate) async fn fresh_read_model(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    let target = match headers.get(&CONSISTENCY_TOKEN) {
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.parse::<LogPosition>().ok())
            .ok_or_else(|| {
                ApiError::invalid(
                    "X-Consistency-Token",
                    "consistency_token.invalid",
                    "not a token this api issued",
                )
            })?,
        None => state.store().last_committed().await?,
    };
    if state.read().position() >= target
        || state
            .read()
            .wait_for(target, state.consistency_wait())
            .await
    {
        Ok(())
    } else {
        Err(ApiError::Unavailable(
            "the read models are behind; retry shortly".into(),
        ))
    }
}
