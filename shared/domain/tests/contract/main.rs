//! The public event contract of `proto-schemas/` (DESIGN §2 "NATS JetStream", API.md "NATS"):
//!
//! - every event the domain's own `decide` functions emit validates against the JSON Schema of
//!   its type and schema version, and the envelope and metadata a relay would publish validate
//!   against theirs ([`corpus`], [`validate`]);
//! - published schema files never change: `proto-schemas/published.lock` holds their SHA-256
//!   ([`lock`]);
//! - every schema version `decode` accepts has a schema file, and versions it does not know are
//!   refused ([`versions`]).

mod corpus;
mod lock;
mod validate;
mod versions;

use std::path::{Path, PathBuf};

/// `proto-schemas/` at the root of the workspace.
pub fn schema_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto-schemas")
}

/// Reads and parses one schema file (path relative to [`schema_root`]).
pub fn load_schema(relative: &str) -> serde_json::Value {
    let path = schema_root().join(relative);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{relative} is not JSON: {e}"))
}

/// A validator for one schema file, formats checked (`date-time`, `uuid`).
pub fn validator(relative: &str) -> jsonschema::Validator {
    let schema = load_schema(relative);
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap_or_else(|e| panic!("{relative} is not a usable schema: {e}"))
}

/// Every error of `instance` against `validator`, one per line; empty when valid.
pub fn errors(validator: &jsonschema::Validator, instance: &serde_json::Value) -> String {
    validator
        .iter_errors(instance)
        .map(|e| format!("  at {:?}: {e}", e.instance_path().as_str()))
        .collect::<Vec<_>>()
        .join("\n")
}
