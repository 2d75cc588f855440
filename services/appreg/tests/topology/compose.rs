//! `deploy/compose.yaml` as the topology test reads it: parsed (anchors and `<<` merges
//! resolved), its `${VAR}` interpolated from the test's `.env` values as `docker compose` does,
//! and each service reduced to what a process needs (command, environment, healthcheck,
//! dependencies, volumes, ports). A service of a kind the test cannot run without containers,
//! or a construct it does not understand, fails the test: the file and the test cannot drift
//! apart silently.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// How a service of the file is run on loopback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// `image: postgres:*`: a private PostgreSQL server with the file's settings.
    Postgres,
    /// `image: nats:*`: a `nats-server` process with the file's arguments.
    Nats,
    /// Built from `deploy/Dockerfile`: the `appreg` binary with the file's command.
    Appreg,
}

#[derive(Debug, Clone)]
pub struct Service {
    pub name: String,
    pub kind: Kind,
    pub command: Vec<String>,
    pub environment: BTreeMap<String, String>,
    /// The healthcheck's command (`CMD` form, without the `CMD`).
    pub healthcheck: Option<Vec<String>>,
    /// (service, condition).
    pub depends_on: Vec<(String, String)>,
    pub restart: String,
    /// (source, target in the container): a named volume or a bind mount (source resolved
    /// against `deploy/`).
    pub volumes: Vec<(Volume, String)>,
    /// Container ports published (`HOST:CONTAINER`).
    pub ports: Vec<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Volume {
    Named(String),
    Bind(PathBuf),
}

pub struct Compose {
    pub services: BTreeMap<String, Service>,
}

impl Compose {
    /// Reads `path`, interpolating `${…}` from `env` (the variables `deploy/.env` would hold).
    pub fn load(path: &Path, env: &BTreeMap<&str, String>) -> Compose {
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let mut yaml: serde_norway::Value = serde_norway::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()));
        // A merged mapping may itself merge another (`x-api` merges `x-appreg`): resolve until
        // no `<<` is left.
        for _ in 0..8 {
            yaml.apply_merge()
                .unwrap_or_else(|e| panic!("{}: merge keys: {e}", path.display()));
        }
        let mut doc = serde_json::to_value(&yaml).expect("YAML as JSON");
        assert!(
            !doc.to_string().contains("\"<<\""),
            "{}: merge keys nested deeper than the test resolves",
            path.display()
        );
        interpolate_all(&mut doc, env);
        let base = path.parent().expect("deploy/");
        let services = doc["services"]
            .as_object()
            .expect("compose.yaml has services")
            .iter()
            .map(|(name, s)| (name.clone(), service(name, s, base)))
            .collect();
        Compose { services }
    }

    /// The services in an order that starts every dependency first.
    pub fn start_order(&self) -> Vec<String> {
        let mut order = Vec::new();
        let mut done = BTreeSet::new();
        fn visit(
            c: &Compose,
            name: &str,
            seen: &mut Vec<String>,
            done: &mut BTreeSet<String>,
            order: &mut Vec<String>,
        ) {
            if done.contains(name) {
                return;
            }
            assert!(
                !seen.iter().any(|s| s == name),
                "compose.yaml: a dependency cycle through {name}"
            );
            seen.push(name.to_string());
            let service = c
                .services
                .get(name)
                .unwrap_or_else(|| panic!("compose.yaml: depends_on names no service {name}"));
            for (dep, _) in &service.depends_on {
                visit(c, dep, seen, done, order);
            }
            seen.pop();
            done.insert(name.to_string());
            order.push(name.to_string());
        }
        for name in self.services.keys() {
            visit(self, name, &mut Vec::new(), &mut done, &mut order);
        }
        order
    }
}

fn strings(v: &Value, what: &str) -> Vec<String> {
    match v {
        Value::Array(items) => items.iter().map(|i| scalar(i, what)).collect(),
        Value::Null => vec![],
        other => panic!("compose.yaml: {what} is not a list ({other}); the test reads lists only"),
    }
}

fn scalar(v: &Value, what: &str) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => panic!("compose.yaml: {what}: {other} is not a scalar"),
    }
}

fn service(name: &str, s: &Value, base: &Path) -> Service {
    let image = s["image"].as_str().unwrap_or_default();
    let kind = if image.starts_with("postgres:") {
        Kind::Postgres
    } else if image.starts_with("nats:") {
        Kind::Nats
    } else if s["build"]["dockerfile"].as_str() == Some("deploy/Dockerfile") {
        Kind::Appreg
    } else {
        panic!(
            "compose.yaml: service {name} (image {image:?}) is of a kind the topology test \
             cannot run without containers; teach services/appreg/tests/topology about it"
        )
    };
    let environment = match &s["environment"] {
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| (k.clone(), scalar(v, &format!("{name}.environment.{k}"))))
            .collect(),
        Value::Array(items) => items
            .iter()
            .map(|i| {
                let kv = scalar(i, &format!("{name}.environment"));
                let (k, v) = kv
                    .split_once('=')
                    .unwrap_or_else(|| panic!("{name}.environment: {kv} is not NAME=value"));
                (k.to_string(), v.to_string())
            })
            .collect(),
        Value::Null => BTreeMap::new(),
        other => panic!("compose.yaml: {name}.environment: {other}"),
    };
    let healthcheck = match &s["healthcheck"]["test"] {
        Value::Null => None,
        test => {
            let test = strings(test, &format!("{name}.healthcheck.test"));
            assert_eq!(
                test.first().map(String::as_str),
                Some("CMD"),
                "compose.yaml: {name}: the test reads CMD healthchecks only"
            );
            Some(test[1..].to_vec())
        }
    };
    let depends_on = match &s["depends_on"] {
        Value::Object(map) => map
            .iter()
            .map(|(dep, c)| {
                let condition = c["condition"].as_str().unwrap_or("service_started");
                (dep.clone(), condition.to_string())
            })
            .collect(),
        Value::Array(items) => items
            .iter()
            .map(|d| (scalar(d, "depends_on"), "service_started".to_string()))
            .collect(),
        Value::Null => vec![],
        other => panic!("compose.yaml: {name}.depends_on: {other}"),
    };
    let volumes = strings(&s["volumes"], &format!("{name}.volumes"))
        .into_iter()
        .map(|v| {
            let parts: Vec<&str> = v.split(':').collect();
            assert!(
                (2..=3).contains(&parts.len()),
                "compose.yaml: {name}: volume {v} is not SOURCE:TARGET[:MODE]"
            );
            let source = if parts[0].starts_with('.') || parts[0].starts_with('/') {
                Volume::Bind(base.join(parts[0]))
            } else {
                Volume::Named(parts[0].to_string())
            };
            (source, parts[1].to_string())
        })
        .collect();
    let ports = strings(&s["ports"], &format!("{name}.ports"))
        .into_iter()
        .map(|p| {
            let container = p.rsplit(':').next().unwrap_or_default();
            container
                .parse()
                .unwrap_or_else(|_| panic!("compose.yaml: {name}: port {p}"))
        })
        .collect();
    Service {
        name: name.to_string(),
        kind,
        command: strings(&s["command"], &format!("{name}.command")),
        environment,
        healthcheck,
        depends_on,
        restart: s["restart"].as_str().unwrap_or("no").to_string(),
        volumes,
        ports,
    }
}

fn interpolate_all(v: &mut Value, env: &BTreeMap<&str, String>) {
    match v {
        Value::String(s) => *s = interpolate(s, env),
        Value::Array(items) => items.iter_mut().for_each(|i| interpolate_all(i, env)),
        Value::Object(map) => map.values_mut().for_each(|i| interpolate_all(i, env)),
        _ => {}
    }
}

/// Compose's interpolation: `$$`, `$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR-default}`,
/// `${VAR:?error}`, `${VAR?error}` (an unset required variable fails, as `docker compose` does).
pub fn interpolate(s: &str, env: &BTreeMap<&str, String>) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(r) = after.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(r) = after.strip_prefix('{') {
            let end = r
                .find('}')
                .unwrap_or_else(|| panic!("compose.yaml: unclosed ${{ in {s}"));
            let expr = &r[..end];
            let name_end = expr
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(expr.len());
            let (name, op) = expr.split_at(name_end);
            let value = env.get(name).filter(|v| !v.is_empty());
            let set = env.contains_key(name);
            let resolved = match op {
                "" => value.cloned().unwrap_or_default(),
                _ if op.starts_with(":-") => {
                    value.cloned().unwrap_or_else(|| interpolate(&op[2..], env))
                }
                _ if op.starts_with('-') => match env.get(name) {
                    Some(v) => v.clone(),
                    None => interpolate(&op[1..], env),
                },
                _ if op.starts_with(":?") => value
                    .cloned()
                    .unwrap_or_else(|| panic!("compose.yaml needs {name}: {}", &op[2..])),
                _ if op.starts_with('?') => match (set, env.get(name)) {
                    (true, Some(v)) => v.clone(),
                    _ => panic!("compose.yaml needs {name}: {}", &op[1..]),
                },
                _ => panic!("compose.yaml: interpolation ${{{expr}}} is not understood"),
            };
            out.push_str(&resolved);
            rest = &r[end + 1..];
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            out.push_str(env.get(&after[..end]).map_or("", String::as_str));
            rest = &after[end..];
        }
    }
    out.push_str(rest);
    out
}

/// Rewrites every `HOST:PORT` of `s` for which `resolve(host, port)` names a loopback port
/// into `127.0.0.1:<that port>`, in one pass (a rewritten address is never rewritten again).
pub fn rewrite_addresses(s: &str, mut resolve: impl FnMut(&str, u16) -> Option<u16>) -> String {
    let is_host = |b: u8| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_';
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut copied = 0;
    let mut i = 0;
    while i < b.len() {
        if !is_host(b[i]) || (i > 0 && is_host(b[i - 1])) {
            i += 1;
            continue;
        }
        let mut j = i;
        while j < b.len() && is_host(b[j]) {
            j += 1;
        }
        if j < b.len() && b[j] == b':' {
            let mut k = j + 1;
            while k < b.len() && b[k].is_ascii_digit() {
                k += 1;
            }
            let bounded = k == b.len() || !b[k].is_ascii_alphanumeric();
            if k > j + 1 && bounded {
                if let Some(port) = s[j + 1..k]
                    .parse()
                    .ok()
                    .and_then(|port| resolve(&s[i..j], port))
                {
                    out.push_str(&s[copied..i]);
                    out.push_str(&format!("127.0.0.1:{port}"));
                    copied = k;
                    i = k;
                    continue;
                }
            }
        }
        i = j;
    }
    out.push_str(&s[copied..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolation_and_rewriting() {
        let env = BTreeMap::from([("PW", "s3cret".to_string()), ("EMPTY", String::new())]);
        assert_eq!(
            interpolate(
                "postgres://a:${PW:?set it}@db/x $$HOME ${NONE:-d} ${EMPTY-e}",
                &env
            ),
            "postgres://a:s3cret@db/x $HOME d "
        );
        let rewritten = rewrite_addresses(
            "nats://nats-1:4222,nats://nats-2:4222 nats://0.0.0.0:6222 u:4222@x nats-1:42220",
            |host, port| match (host, port) {
                ("nats-1", 4222) => Some(50001),
                ("nats-2", 4222) => Some(4222),
                ("0.0.0.0", 6222) => Some(50003),
                _ => None,
            },
        );
        assert_eq!(
            rewritten,
            "nats://127.0.0.1:50001,nats://127.0.0.1:4222 nats://127.0.0.1:50003 u:4222@x nats-1:42220"
        );
    }
}
