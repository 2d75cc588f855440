//! The published JSON Schemas of `proto-schemas/`, and the check that every stored event matches
//! its schema (data and metadata).

use appreg_eventstore::Database;
use serde_json::Value;
use std::collections::HashMap;
use std::path::PathBuf;

/// `proto-schemas/` of the repository.
pub fn schema_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto-schemas")
}

/// The validator of `proto-schemas/{relative}` (draft 2020-12, formats checked).
pub fn validator(relative: &str) -> jsonschema::Validator {
    let path = schema_root().join(relative);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("no schema {}: {e}", path.display()));
    let schema: Value = serde_json::from_str(&text).unwrap();
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap_or_else(|e| panic!("{relative}: {e}"))
}

/// The errors of `value` against `validator`, one string each (empty: valid).
pub fn errors(validator: &jsonschema::Validator, value: &Value) -> Vec<String> {
    validator
        .iter_errors(value)
        .map(|e| e.to_string())
        .collect()
}

/// Asserts that every event stored in `db` matches the published schema of its type and
/// version, and its metadata the metadata schema; returns how many events were checked.
pub async fn assert_events_match_schemas(db: &Database) -> usize {
    const ROWS: &str =
        "SELECT event_type, schema_version, data, metadata FROM events ORDER BY position";
    let rows: Vec<(String, i32, String, String)> = match db {
        Database::Postgres(pool) => sqlx::query_as(
            "SELECT event_type, schema_version, data::text, metadata::text FROM events ORDER BY position",
        )
        .fetch_all(pool)
        .await
        .unwrap(),
        Database::Sqlite(pool) => sqlx::query_as(ROWS).fetch_all(pool).await.unwrap(),
    };
    let metadata = validator("metadata/v1.json");
    let mut validators: HashMap<(String, i32), jsonschema::Validator> = HashMap::new();
    for (event_type, version, data, meta) in &rows {
        let data: Value = serde_json::from_str(data).unwrap();
        let meta: Value = serde_json::from_str(meta).unwrap();
        let v = validators
            .entry((event_type.clone(), *version))
            .or_insert_with(|| validator(&format!("events/{event_type}/v{version}.json")));
        let problems = errors(v, &data);
        assert!(
            problems.is_empty(),
            "{event_type} v{version} does not match its schema: {problems:?}\n{data}"
        );
        let problems = errors(&metadata, &meta);
        assert!(
            problems.is_empty(),
            "metadata of {event_type} does not match its schema: {problems:?}\n{meta}"
        );
    }
    rows.len()
}
