//! Published schemas are immutable. `proto-schemas/published.lock` lists the SHA-256 of every
//! published schema file (`<sha256>  <path>`, as `sha256sum` writes it); this test fails when a
//! listed file changed or vanished, and when a schema file is not listed.
//!
//! `UPDATE_SCHEMA_LOCK=1` appends the unlisted files to the lock. It never changes or removes a
//! line: a changed schema must be reverted and its change published as a new version instead.

use crate::schema_root;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

const LOCK: &str = "published.lock";
const HOW_TO_ADD: &str = "when the schema is final, add it to the lock with\n    \
     UPDATE_SCHEMA_LOCK=1 cargo nextest run -p appreg-domain --test contract\n\
     (that only appends lines; it never changes a published one) and commit the lock with the schema";

/// Every schema file: the `.json` files in the subdirectories of `proto-schemas/` (paths relative
/// to it, `/`-separated, sorted). Files at the top (`openapi.json`, `asyncapi.yaml`) are
/// documents that evolve, not published schemas.
pub fn schema_files() -> Vec<String> {
    fn walk(dir: &Path, prefix: &str, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            let relative = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}/{name}")
            };
            if entry.file_type().unwrap().is_dir() {
                walk(&entry.path(), &relative, out);
            } else if !prefix.is_empty() && name.ends_with(".json") {
                out.push(relative);
            }
        }
    }
    let mut out = Vec::new();
    walk(&schema_root(), "", &mut out);
    out.sort();
    out
}

fn sha256(relative: &str) -> String {
    let bytes = std::fs::read(schema_root().join(relative)).unwrap();
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The lock's entries, path → digest, checking its format.
fn read_lock() -> (String, BTreeMap<String, String>) {
    let text = std::fs::read_to_string(schema_root().join(LOCK)).unwrap_or_default();
    let mut entries = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let (digest, path) = line
            .split_once("  ")
            .unwrap_or_else(|| panic!("{LOCK}:{}: expected `<sha256>  <path>`", n + 1));
        assert!(
            digest.len() == 64
                && digest
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
            "{LOCK}:{}: not a lower-case SHA-256: {digest:?}",
            n + 1
        );
        let previous = entries.insert(path.to_string(), digest.to_string());
        assert!(
            previous.is_none(),
            "{LOCK}:{}: {path} is listed twice",
            n + 1
        );
    }
    (text, entries)
}

#[test]
fn published_schemas_never_change_and_every_schema_is_published() {
    let (text, lock) = read_lock();
    let files = schema_files();

    let mut broken = Vec::new();
    for (path, digest) in &lock {
        if !files.contains(path) {
            broken.push(format!(
                "{path} was published and is gone: every schema version that may be stored must keep its file"
            ));
            continue;
        }
        let now = sha256(path);
        if &now != digest {
            broken.push(format!(
                "{path} changed after it was published (lock {digest}, now {now}): published schemas \
                 are immutable; revert it and publish the change as the next version (vN+1.json, \
                 with an upcaster in the decoder; see proto-schemas/README.md)"
            ));
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));

    let unlisted: Vec<&String> = files.iter().filter(|f| !lock.contains_key(*f)).collect();
    if unlisted.is_empty() {
        return;
    }
    if std::env::var("UPDATE_SCHEMA_LOCK").as_deref() == Ok("1") {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(schema_root().join(LOCK))
            .unwrap();
        if !text.is_empty() && !text.ends_with('\n') {
            writeln!(file).unwrap();
        }
        for path in unlisted {
            writeln!(file, "{}  {path}", sha256(path)).unwrap();
            eprintln!("{LOCK}: added {path}");
        }
        return;
    }
    panic!(
        "schema files not in proto-schemas/{LOCK}:\n  {}\n{HOW_TO_ADD}",
        unlisted
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n  ")
    );
}

/// Schema files are `events/<EventType>/v<N>.json`, `envelope/v<N>.json` and
/// `metadata/v<N>.json`, numbered from 1 without gaps.
#[test]
fn schema_files_are_versioned_without_gaps() {
    let mut versions: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for path in schema_files() {
        let (dir, file) = path.rsplit_once('/').unwrap();
        let shape_ok = match dir.split('/').collect::<Vec<_>>()[..] {
            ["envelope"] | ["metadata"] => true,
            ["events", event_type] => {
                event_type
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_uppercase())
                    && event_type.chars().all(|c| c.is_ascii_alphanumeric())
            }
            _ => false,
        };
        assert!(shape_ok, "unexpected schema file {path}");
        let n: u32 = file
            .strip_prefix('v')
            .and_then(|f| f.strip_suffix(".json"))
            .and_then(|n| n.parse().ok())
            .filter(|n| *n >= 1)
            .unwrap_or_else(|| panic!("{path}: schema files are named v<N>.json, N >= 1"));
        versions.entry(dir.to_string()).or_default().push(n);
    }
    for (dir, mut ns) in versions {
        ns.sort();
        let expected: Vec<u32> = (1..=ns.len() as u32).collect();
        assert_eq!(
            ns, expected,
            "{dir}: versions must be 1, 2, ... without gaps"
        );
    }
}
