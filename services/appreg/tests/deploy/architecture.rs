//! README "Architecture": its block of crates and arrows is the workspace's normal dependencies
//! between appreg crates, as `cargo metadata` (the data behind `cargo tree -e normal`) gives
//! them, and no service depends on another service.

use super::*;
use std::collections::{BTreeMap, BTreeSet};

/// appreg crate → the appreg crates it depends on (normal dependencies), names without the
/// `appreg-` prefix (`appreg` itself stays `appreg`).
fn workspace_edges() -> (BTreeMap<String, BTreeSet<String>>, BTreeSet<String>) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = run(
        Command::new(cargo)
            .args([
                "metadata",
                "--format-version",
                "1",
                "--no-deps",
                "--offline",
            ])
            .current_dir(repo()),
        "cargo metadata",
        "cargo must be on the PATH",
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let short = |n: &str| n.strip_prefix("appreg-").unwrap_or(n).to_string();
    let mut edges = BTreeMap::new();
    let mut services = BTreeSet::new();
    for p in meta["packages"].as_array().unwrap() {
        let name = p["name"].as_str().unwrap();
        if p["manifest_path"].as_str().unwrap().contains("/services/") {
            services.insert(short(name));
        }
        let deps: BTreeSet<String> = p["dependencies"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["kind"].is_null())
            .filter_map(|d| d["name"].as_str())
            .filter(|d| d.starts_with("appreg"))
            .map(short)
            .collect();
        edges.insert(short(name), deps);
    }
    (edges, services)
}

/// The README's block, parsed: `a ──▶ b, c` lines, and `a, b: no appreg crate`.
fn readme_edges() -> BTreeMap<String, BTreeSet<String>> {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let start = readme
        .find("## Architecture")
        .expect("README has an Architecture section");
    let block = readme[start..]
        .split("```text\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("the Architecture section has a ```text block of crates");
    let mut edges = BTreeMap::new();
    for line in block.lines() {
        if let Some((from, to)) = line.split_once("──▶") {
            let deps = to.split(',').map(|d| d.trim().to_string()).collect();
            edges.insert(from.trim().to_string(), deps);
        } else if let Some(leaves) = line.strip_suffix(": no appreg crate") {
            for leaf in leaves.split(',') {
                edges.insert(leaf.trim().to_string(), BTreeSet::new());
            }
        }
    }
    edges
}

#[test]
fn the_readme_architecture_is_the_dependency_graph() {
    let (actual, services) = workspace_edges();
    assert!(actual.len() >= 10, "{actual:?}");
    assert_eq!(
        readme_edges(),
        actual,
        "README \"Architecture\" (left) differs from cargo metadata (right)"
    );
    for (from, deps) in &actual {
        assert!(
            !deps.contains("test-support"),
            "{from} depends on test-support: it is a dev-dependency only"
        );
        // The binary composes the services; the tests' support starts the real api.
        if from == "appreg" || from == "test-support" {
            continue;
        }
        for d in deps {
            assert!(
                !services.contains(d),
                "{from} depends on the service {d}: services depend on shared crates only"
            );
        }
    }
}
