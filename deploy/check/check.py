#!/usr/bin/env python3
"""Static checks of appreg's deployment files (run by `cargo nextest run -p appreg --test deploy`).

    python3 deploy/check/check.py [--repo DIR]

1. Every Kubernetes manifest in deploy/k8s/ validates against the official Kubernetes JSON
   schemas of KUBERNETES_VERSION, strictly (an unknown field is an error), and
   deploy/compose.yaml against the Compose Specification schema.
2. Both name the same services (api, relay, projector, dcr-saga, lifecycle, notifier, migrate,
   nats-setup) with the same commands, ports, probe paths and APPREG_* settings; every APPREG_*
   name is a setting of the configuration (the keys of deploy/appreg.toml, which must document
   every setting of README.md's configuration table); every long-running service has probes,
   resources, a non-root read-only container and (compose) a healthcheck, a restart policy and
   depends_on conditions.
3. No secret value (the master key, a password, the Secret's values) is in a ConfigMap, in
   deploy/appreg.toml or in compose.yaml, and secret settings reach the containers only from the
   Secret (Kubernetes) or from ${...} interpolation of .env (Compose).
4. NATS authenticates: the compose NATS servers load deploy/nats/accounts.conf; the services
   that use NATS (relay, projector, nats-setup) each have their own credentials
   (APPREG_NATS_CREDENTIALS, the user of accounts.conf named after the service), and the others
   no NATS setting at all.

Prints one line per problem and exits 1 if there is any.
"""

import argparse
import importlib.resources
import json
import re
import sys
import tomllib
import urllib.parse
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml
from kubernetes_validate.utils import (
    InvalidSchemaError,
    SchemaNotFoundError,
    ValidationError,
    VersionNotSupportedError,
)

KUBERNETES_VERSION = "1.29.0"
NAMESPACE = "appreg"
SERVICES = {"api", "relay", "projector", "dcr-saga", "lifecycle", "notifier", "migrate", "nats-setup"}
ONE_SHOT = {"migrate", "nats-setup"}
# The services that connect to NATS, and their users in deploy/nats/accounts.conf.
NATS_USERS = {"relay": "appreg-relay", "projector": "appreg-projector", "notifier": "appreg-notifier", "nats-setup": "appreg-setup"}
LONG_RUNNING = SERVICES - ONE_SHOT
# Instances of each long-running service, in both deployments.
REPLICAS = 2
# Settings that are secrets: never in a file of the repository, only from a secret store.
SECRET_SETTINGS = {
    "APPREG_DATABASE_URL",
    "APPREG_NATS_URL",
    "APPREG_NATS_CREDENTIALS",
    "APPREG_SECRETS_MASTER_KEY",
    "APPREG_SECRETS_PREVIOUS_KEYS",
}
# The same, as keys of appreg.toml.
SECRET_KEYS = {"database_url", "nats_url", "nats_credentials", "secrets_master_key", "secrets_previous_keys"}
# A vault master key: "<key-id>:<base64 of 32 bytes>".
MASTER_KEY = re.compile(r"[A-Za-z0-9._-]+:[A-Za-z0-9+/]{43}=")
# A URL carrying a password: scheme://user:password@host (a ${...} password is an interpolation).
URL_PASSWORD = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]+:([^@/\s]+)@")

problems = []


def problem(where, message):
    problems.append(f"{where}: {message}")


def load_yaml_documents(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def command_service(args):
    """`["relay", "--metrics-listen", ...]` -> "relay"; `["nats", "setup", ...]` -> "nats-setup"."""
    words = []
    for a in args or []:
        if str(a).startswith("-"):
            break
        words.append(str(a))
    return "-".join(words)


def url_path_port(url):
    u = urllib.parse.urlsplit(url)
    return u.path, u.port


def listen_port(addr):
    return int(str(addr).rsplit(":", 1)[1])


# ---------------------------------------------------------------------------- configuration


def configuration_env_names(toml_path, readme_path):
    """The APPREG_* names of every setting of deploy/appreg.toml (set or commented out)."""
    text = toml_path.read_text(encoding="utf-8")
    keys = set()
    table = ""
    for line in text.splitlines():
        m = re.match(r"^\s*\[([a-z_.]+)\]\s*$", line)
        if m:
            table = m.group(1)
            continue
        m = re.match(r"^\s*#?\s*([a-z][a-z0-9_]*)\s*=\s*\S", line)
        if m:
            keys.add(f"{table}.{m.group(1)}" if table else m.group(1))
    names = {"APPREG_" + k.upper().replace(".", "__") for k in keys}
    # The configuration file's own variable (read by the CLI, not a setting).
    names.add("APPREG_CONFIG")
    if readme_path is not None and readme_path.exists():
        documented = set()
        in_table = False
        for line in readme_path.read_text(encoding="utf-8").splitlines():
            if line.startswith("| setting | env |"):
                in_table = True
                continue
            if in_table and not line.startswith("|"):
                break
            if in_table:
                first = line.split("|")[1]
                documented.update(re.findall(r"`([a-z_.]+)`", first))
        for setting in sorted(documented - keys):
            problem(str(toml_path), f"setting `{setting}` of README.md's configuration table is not documented here")
    return names


def check_toml_has_no_secret(where, text):
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        problem(where, f"not TOML: {e}")
        return
    for key in sorted(SECRET_KEYS & set(data)):
        value = data[key]
        if key == "nats_url" and not URL_PASSWORD.search(str(value)):
            continue  # a NATS URL without credentials is not a secret
        problem(where, f"`{key}` is a secret: give it as APPREG_{key.upper()} from a secret store")
    check_text_has_no_secret(where, text)


def check_text_has_no_secret(where, text, allow_interpolation=False):
    if MASTER_KEY.search(text):
        problem(where, "holds a master key (<key-id>:<base64 of 32 bytes>)")
    for m in URL_PASSWORD.finditer(text):
        if allow_interpolation and m.group(1).startswith("${"):
            continue
        problem(where, f"holds a URL with a password ({m.group(0)[:40]}…)")


# ------------------------------------------------------------------------------- kubernetes


def validate_kubernetes(k8s_dir):
    documents = []  # (file name, document)
    files = sorted(p for p in k8s_dir.glob("*.yaml") if p.name != "kustomization.yaml")
    if not files:
        problem(str(k8s_dir), "no manifests")
    for path in files:
        try:
            docs = load_yaml_documents(path)
        except yaml.YAMLError as e:
            problem(path.name, f"not YAML: {e}")
            continue
        for doc in docs:
            where = f"{path.name} {doc.get('kind', '?')}/{(doc.get('metadata') or {}).get('name', '?')}"
            try:
                kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
            except ValidationError as e:
                at = ".".join(str(p) for p in e.path) or "(root)"
                problem(where, f"invalid for Kubernetes {KUBERNETES_VERSION}: {at}: {e.message}")
            except (SchemaNotFoundError, InvalidSchemaError, VersionNotSupportedError) as e:
                problem(where, f"cannot validate: {e.message}")
            except Exception as e:  # a document without kind or apiVersion
                problem(where, f"cannot validate: {e!r}")
            documents.append((path.name, doc))
    kustomization = k8s_dir / "kustomization.yaml"
    if kustomization.exists():
        listed = set(yaml.safe_load(kustomization.read_text())["resources"])
        for missing in sorted({p.name for p in files} - listed):
            problem("kustomization.yaml", f"does not list {missing}")
        for extra in sorted(listed - {p.name for p in files}):
            problem("kustomization.yaml", f"lists {extra}, which does not exist")
    seen = set()
    for name, doc in documents:
        key = (doc.get("kind"), (doc.get("metadata") or {}).get("name"))
        if key in seen:
            problem(name, f"{key[0]}/{key[1]} is defined twice")
        seen.add(key)
        if doc.get("kind") != "Namespace" and (doc.get("metadata") or {}).get("namespace") != NAMESPACE:
            problem(name, f"{key[0]}/{key[1]} is not in namespace {NAMESPACE}")
    return documents


def kubernetes_services(documents, config_names):
    """{logical service: {args, env, ports, probe, replicas, config_path}} of the Deployments and Jobs."""
    by_kind = {}
    for name, doc in documents:
        by_kind.setdefault(doc.get("kind"), []).append((name, doc))
    secrets = {}
    for name, doc in by_kind.get("Secret", []):
        values = dict(doc.get("stringData") or {})
        values.update({k: "(base64)" for k in (doc.get("data") or {})})
        secrets[doc["metadata"]["name"]] = values
    configmaps = {doc["metadata"]["name"]: doc for _, doc in by_kind.get("ConfigMap", [])}

    # (c) no secret in a ConfigMap.
    secret_values = [v for s in secrets.values() for v in s.values() if len(v) >= 8 and v != "(base64)"]
    for cm_name, cm in configmaps.items():
        for key, value in (cm.get("data") or {}).items():
            where = f"ConfigMap/{cm_name} {key}"
            if key.upper() in SECRET_SETTINGS or "PASSWORD" in key.upper() or "MASTER_KEY" in key.upper():
                problem(where, "a secret setting belongs in a Secret, not a ConfigMap")
            if key.endswith(".toml"):
                check_toml_has_no_secret(where, value)
            else:
                check_text_has_no_secret(where, value)
            for v in secret_values:
                if v in value:
                    problem(where, "holds a value of the Secret")

    services = {}
    for kind in ("Deployment", "Job"):
        for file_name, doc in by_kind.get(kind, []):
            name = doc["metadata"]["name"]
            where = f"{file_name} {kind}/{name}"
            pod = doc["spec"]["template"]["spec"]
            containers = pod.get("containers") or []
            if len(containers) != 1:
                problem(where, "expected one container")
                continue
            c = containers[0]
            args = list(c.get("command") or [])[1:] + list(c.get("args") or []) if c.get("command") else list(c.get("args") or [])
            service = command_service(args)
            if service not in SERVICES:
                problem(where, f"runs `appreg {' '.join(args)}`, not one of {sorted(SERVICES)}")
                continue
            if name != f"appreg-{service}":
                problem(where, f"runs {service}: name it appreg-{service}")
            if service in services:
                problem(where, f"a second workload for {service}")
            if (kind == "Job") != (service in ONE_SHOT):
                problem(where, f"{service} should be a {'Job' if service in ONE_SHOT else 'Deployment'}")
            info = {"args": args, "env": set(), "ports": {}, "probe": None, "where": where}
            services[service] = info
            if kind == "Deployment":
                info["replicas"] = doc["spec"].get("replicas", 1)
                if info["replicas"] != REPLICAS:
                    problem(where, f"replicas {info['replicas']}, expected {REPLICAS}")
            # Settings: literal values, or secretKeyRef into a Secret that holds the key.
            env = {}
            for e in c.get("env") or []:
                env[e["name"]] = e
                info["env"].add(e["name"])
                ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                if e["name"] in SECRET_SETTINGS and not ref:
                    problem(where, f"{e['name']} is a secret: take it from a Secret (secretKeyRef)")
                if ref:
                    if ref.get("name") not in secrets:
                        problem(where, f"{e['name']} refers to Secret {ref.get('name')}, which is not defined")
                    elif ref.get("key") not in secrets[ref["name"]]:
                        problem(where, f"{e['name']} refers to key {ref.get('key')} missing in Secret {ref['name']}")
                if (e.get("valueFrom") or {}).get("configMapKeyRef") and e["name"] in SECRET_SETTINGS:
                    problem(where, f"{e['name']} must not come from a ConfigMap")
            for source in c.get("envFrom") or []:
                if "configMapRef" in source:
                    cm = configmaps.get(source["configMapRef"]["name"], {})
                    for key in (cm.get("data") or {}):
                        info["env"].add(key)
                if "secretRef" in source:
                    for key in secrets.get(source["secretRef"]["name"], {}):
                        info["env"].add(key)
            for n in sorted(info["env"]):
                if n.startswith("APPREG_") and n not in config_names:
                    problem(where, f"{n} is not a setting of the configuration (deploy/appreg.toml)")
            # The configuration file: APPREG_CONFIG names a file mounted from the ConfigMap.
            config_path = (env.get("APPREG_CONFIG") or {}).get("value")
            info["config_path"] = config_path
            if not config_path:
                problem(where, "APPREG_CONFIG is not set")
            else:
                volumes = {v["name"]: v for v in pod.get("volumes") or []}
                mounted = False
                for m in c.get("volumeMounts") or []:
                    v = volumes.get(m["name"], {})
                    cm = (v.get("configMap") or {}).get("name")
                    if cm and config_path.startswith(m["mountPath"].rstrip("/") + "/"):
                        rel = config_path[len(m["mountPath"].rstrip("/")) + 1:]
                        items = {i["path"]: i["key"] for i in v["configMap"].get("items") or []}
                        key = items.get(rel, rel)
                        if cm not in configmaps or key not in (configmaps[cm].get("data") or {}):
                            problem(where, f"APPREG_CONFIG {config_path}: ConfigMap {cm} has no key {key}")
                        mounted = True
                if not mounted:
                    problem(where, f"APPREG_CONFIG {config_path} is not mounted from a ConfigMap")
            # Security and resources, for every container.
            psc, csc = pod.get("securityContext") or {}, c.get("securityContext") or {}
            if not (csc.get("runAsNonRoot", psc.get("runAsNonRoot"))):
                problem(where, "runAsNonRoot is not set")
            if not csc.get("readOnlyRootFilesystem"):
                problem(where, "readOnlyRootFilesystem is not set")
            if csc.get("allowPrivilegeEscalation") is not False:
                problem(where, "allowPrivilegeEscalation is not false")
            info["run_as_user"] = csc.get("runAsUser", psc.get("runAsUser"))
            res = c.get("resources") or {}
            for part in ("requests", "limits"):
                for r in ("cpu", "memory"):
                    if r not in (res.get(part) or {}):
                        problem(where, f"resources.{part}.{r} is not set")
            ports = {p.get("name"): p["containerPort"] for p in c.get("ports") or []}
            info["ports"] = set(ports.values())
            if kind == "Deployment":
                for probe in ("readinessProbe", "livenessProbe"):
                    p = c.get(probe)
                    if not p or "httpGet" not in p:
                        problem(where, f"{probe} (httpGet) is missing")
                        continue
                    port = p["httpGet"]["port"]
                    port = ports.get(port) if isinstance(port, str) else port
                    if port not in info["ports"]:
                        problem(where, f"{probe} uses port {p['httpGet']['port']}, which the container does not declare")
                    if probe == "readinessProbe":
                        info["probe"] = (p["httpGet"]["path"], port)
                    elif p["httpGet"]["path"] != "/healthz":
                        problem(where, f"livenessProbe path {p['httpGet']['path']}, expected /healthz")
    # The api's Service.
    api_ports = services.get("api", {}).get("ports", set())
    service_ports = set()
    for file_name, doc in by_kind.get("Service", []):
        if doc["spec"].get("selector", {}).get("app.kubernetes.io/component") == "api":
            for p in doc["spec"].get("ports") or []:
                service_ports.add(p["port"])
                target = p.get("targetPort", p["port"])
                if isinstance(target, int) and target not in api_ports:
                    problem(file_name, f"Service port {p['port']} targets {target}, not a port of the api")
    if "api" in services and not service_ports:
        problem("k8s", "no Service selects the api")
    return services, secrets, configmaps


# ---------------------------------------------------------------------------------- compose


def compose_schema():
    ref = importlib.resources.files("check_jsonschema") / "builtin_schemas" / "vendor" / "compose-spec.json"
    return json.loads(ref.read_text(encoding="utf-8"))


def validate_compose(path):
    try:
        compose = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        problem(path.name, f"not YAML: {e}")
        return None
    validator = jsonschema.Draft202012Validator(compose_schema())
    for e in sorted(validator.iter_errors(compose), key=lambda e: list(map(str, e.path))):
        at = ".".join(str(p) for p in e.path) or "(root)"
        problem(path.name, f"invalid for the Compose Specification: {at}: {e.message}")
    return compose


def env_dict(environment):
    if isinstance(environment, list):
        out = {}
        for item in environment:
            k, _, v = str(item).partition("=")
            out[k] = v
        return out
    return {k: ("" if v is None else str(v)) for k, v in (environment or {}).items()}


def compose_services(compose, config_names):
    services = {}
    appreg_image = None
    raw = compose.get("services") or {}
    for name, svc in raw.items():
        image = str(svc.get("image", ""))
        if not ("appreg" in image or svc.get("build")):
            continue
        appreg_image = appreg_image or image
        where = f"compose.yaml services.{name}"
        if image != appreg_image:
            problem(where, f"image {image}: every appreg service runs the same image ({appreg_image})")
        args = svc.get("command") or []
        if isinstance(args, str):
            args = args.split()
        service = command_service(args)
        if service not in SERVICES:
            problem(where, f"runs `appreg {' '.join(map(str, args))}`, not one of {sorted(SERVICES)}")
            continue
        if not re.fullmatch(re.escape(service) + r"(-\d+)?", name):
            problem(where, f"runs {service}: name it {service} or {service}-<n>")
        env = env_dict(svc.get("environment"))
        info = services.setdefault(service, {"instances": [], "args": None, "env": None, "probe": None, "ports": set()})
        info["instances"].append(name)
        for key, expected in (("args", [str(a) for a in args]), ("env", set(env))):
            if info[key] is not None and info[key] != expected:
                problem(where, f"its {key} differ from those of {info['instances'][0]}")
            info[key] = expected
        for n in sorted(env):
            if n.startswith("APPREG_") and n not in config_names:
                problem(where, f"{n} is not a setting of the configuration (deploy/appreg.toml)")
            value = env[n]
            if n in SECRET_SETTINGS:
                if n.startswith("APPREG_SECRETS_") and not re.fullmatch(r"\$\{[A-Z0-9_]+(:?[?-][^}]*)?\}", value):
                    problem(where, f"{n} must come from .env (${{{n}:?…}}), not be written here")
                check_text_has_no_secret(f"{where} {n}", value, allow_interpolation=True)
        for n, value in env.items():
            if ("PASSWORD" in n or "SECRET" in n) and "${" not in value:
                problem(where, f"{n} must come from .env, not be written here")
        # The configuration file, mounted read-only at APPREG_CONFIG.
        config_path = env.get("APPREG_CONFIG")
        info["config_path"] = config_path
        mounts = [str(v).split(":") for v in svc.get("volumes") or [] if isinstance(v, str)]
        if not config_path:
            problem(where, "APPREG_CONFIG is not set")
        elif not any(len(m) >= 2 and m[1] == config_path and Path(m[0]).name == "appreg.toml" for m in mounts):
            problem(where, f"appreg.toml is not mounted at APPREG_CONFIG ({config_path})")
        if not svc.get("read_only"):
            problem(where, "read_only is not set (the Kubernetes containers have a read-only root fs)")
        restart = str(svc.get("restart", "no"))
        depends = svc.get("depends_on")
        if isinstance(depends, list) or not depends:
            problem(where, "depends_on with conditions is missing")
        else:
            for dep, cond in depends.items():
                condition = (cond or {}).get("condition")
                if not condition:
                    problem(where, f"depends_on.{dep} has no condition")
                dep_service = command_service((raw.get(dep) or {}).get("command") or [])
                if dep_service in ONE_SHOT and condition != "service_completed_successfully":
                    problem(where, f"depends_on.{dep}: wait for service_completed_successfully")
                if dep not in raw:
                    problem(where, f"depends_on.{dep}: no such service")
        if service in ONE_SHOT:
            if restart != "no":
                problem(where, f"a one-shot service: restart \"no\", not {restart}")
            continue
        if restart not in ("always", "unless-stopped") and not restart.startswith("on-failure"):
            problem(where, f"restart {restart}: a long-running service must be restarted")
        hc = svc.get("healthcheck") or {}
        test = [str(t) for t in hc.get("test") or []] if isinstance(hc.get("test"), list) else str(hc.get("test", "")).split()
        urls = [t for t in test if t.startswith("http")]
        if hc.get("disable") or not urls:
            problem(where, "no HTTP healthcheck")
        else:
            probe = url_path_port(urls[0])
            if info["probe"] not in (None, probe):
                problem(where, "its healthcheck differs from the other instances'")
            info["probe"] = probe
        for p in svc.get("ports") or []:
            target = str(p).rsplit(":", 1)[-1] if not isinstance(p, dict) else p.get("target")
            info["ports"].add(int(str(target).split("/")[0]))
    return services


# ------------------------------------------------------------------------------------- nats


def check_nats_authentication(deploy, compose, k8s, dc, secrets):
    accounts = (deploy / "nats" / "accounts.conf").read_text(encoding="utf-8")
    users = re.findall(r"(?m)^\s*user:\s*(\S+)", accounts)
    if sorted(users) != sorted(NATS_USERS.values()):
        problem("nats/accounts.conf", f"users {users}, expected {sorted(NATS_USERS.values())}")
    for password in re.findall(r"(?m)^\s*password:\s*(\S+)", accounts):
        if not password.startswith("$"):
            problem("nats/accounts.conf", "a password written in the file: read it from the environment ($VAR)")
    for name, found in (("Kubernetes", k8s), ("compose.yaml", dc)):
        for service, info in sorted(found.items()):
            nats_settings = {e for e in info["env"] if e.startswith("APPREG_NATS_")}
            if service in NATS_USERS:
                if "APPREG_NATS_CREDENTIALS" not in nats_settings:
                    problem(f"{name} {service}", "connects to NATS without APPREG_NATS_CREDENTIALS (its own user)")
            elif nats_settings:
                problem(f"{name} {service}", f"does not use NATS, yet gets {sorted(nats_settings)}")
    # Each service's credentials name its own user.
    for service, user in NATS_USERS.items():
        for name, doc in (compose.get("services") or {}).items():
            if command_service((doc or {}).get("command") or []) != service:
                continue
            value = str(env_dict(doc.get("environment")).get("APPREG_NATS_CREDENTIALS", ""))
            if not value.startswith(f"{user}:"):
                problem(f"compose.yaml services.{name}", f"APPREG_NATS_CREDENTIALS is not {user}'s")
    for values in secrets.values():
        for key, value in values.items():
            m = re.match(r"nats-(.+)-credentials$", key)
            if m and not str(value).startswith(f"appreg-{m.group(1)}:"):
                problem(f"Secret {key}", f"not the credentials of appreg-{m.group(1)}")
    for name, doc in (compose.get("services") or {}).items():
        if not str((doc or {}).get("image", "")).startswith("nats:"):
            continue
        command = [str(a) for a in doc.get("command") or []]
        mounts = [str(v).split(":") for v in doc.get("volumes") or []]
        if "--config" not in command:
            problem(f"compose.yaml services.{name}", "runs NATS without --config (the accounts of nats/accounts.conf)")
            continue
        target = command[command.index("--config") + 1] if command.index("--config") + 1 < len(command) else ""
        if not any(len(m) >= 2 and m[1] == target and m[0] == "./nats/accounts.conf" for m in mounts):
            problem(f"compose.yaml services.{name}", f"--config {target} is not ./nats/accounts.conf mounted")


# ------------------------------------------------------------------------------------ main


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[2])
    args = parser.parse_args()
    repo = args.repo
    deploy = repo / "deploy"
    toml_path = deploy / "appreg.toml"

    config_names = configuration_env_names(toml_path, repo / "README.md")
    toml_text = toml_path.read_text(encoding="utf-8")
    check_toml_has_no_secret("deploy/appreg.toml", toml_text)
    toml = tomllib.loads(toml_text)

    # 1. Schemas.
    documents = validate_kubernetes(deploy / "k8s")
    compose = validate_compose(deploy / "compose.yaml")
    check_text_has_no_secret("compose.yaml", (deploy / "compose.yaml").read_text(encoding="utf-8"), allow_interpolation=True)

    # 2. Each deployment on its own, then side by side.
    k8s, secrets, configmaps = kubernetes_services(documents, config_names)
    dc = compose_services(compose or {}, config_names)
    for cm_name, cm in configmaps.items():
        text = (cm.get("data") or {}).get("appreg.toml")
        if text is not None and tomllib.loads(text) != toml:
            problem(f"ConfigMap/{cm_name}", "its appreg.toml has other settings than deploy/appreg.toml (compose mounts that one)")
    for name, found in (("Kubernetes", k8s), ("compose.yaml", dc)):
        for missing in sorted(SERVICES - set(found)):
            problem(name, f"no {missing} service")
    api_port = listen_port(toml.get("listen", "127.0.0.1:8080"))
    for service in sorted(SERVICES & set(k8s) & set(dc)):
        k, d = k8s[service], dc[service]
        where = f"{service} (Kubernetes {k['where'].split()[-1]} vs compose {', '.join(d['instances'])})"
        if k["args"] != d["args"]:
            problem(where, f"commands differ: {k['args']} vs {d['args']}")
        if k["env"] != d["env"]:
            problem(where, f"APPREG_* settings differ: only in Kubernetes {sorted(k['env'] - d['env'])}, only in compose {sorted(d['env'] - k['env'])}")
        if k["config_path"] != d["config_path"]:
            problem(where, f"APPREG_CONFIG differs: {k['config_path']} vs {d['config_path']}")
        if service in LONG_RUNNING:
            if len(d["instances"]) != REPLICAS:
                problem(where, f"compose runs {len(d['instances'])} instances, expected {REPLICAS}")
            if k["probe"] != d["probe"]:
                problem(where, f"probes differ: Kubernetes readiness {k['probe']} vs compose healthcheck {d['probe']}")
            # The port the service listens on: the api's `listen`, the others' --metrics-listen.
            if service == "api":
                expected = api_port
                if d["ports"] and d["ports"] != {api_port}:
                    problem(where, f"compose publishes container ports {sorted(d['ports'])}, the api listens on {api_port}")
            else:
                flag = k["args"].index("--metrics-listen") if "--metrics-listen" in k["args"] else None
                expected = listen_port(k["args"][flag + 1]) if flag is not None else None
                if expected is None:
                    problem(where, "no --metrics-listen (its probes need /healthz and /readyz)")
            if expected is not None and k["ports"] != {expected}:
                problem(where, f"Kubernetes declares ports {sorted(k['ports'])}, the service listens on {expected}")
            if k["probe"] and k["probe"][1] != expected:
                problem(where, f"the probes use port {k['probe'][1]}, the service listens on {expected}")
            expected_path = "/readyz"
            if k["probe"] and k["probe"][0] != expected_path:
                problem(where, f"readiness path {k['probe'][0]}, expected {expected_path}")

    check_nats_authentication(deploy, compose or {}, k8s, dc, secrets)

    # The image: one multi-stage build of the appreg binary, running as the user Kubernetes expects.
    dockerfile = (deploy / "Dockerfile").read_text(encoding="utf-8")
    if len(re.findall(r"(?m)^FROM ", dockerfile)) < 2 or not re.search(r"cargo build --release[^\n]*-p appreg", dockerfile):
        problem("Dockerfile", "expected a multi-stage build running `cargo build --release ... -p appreg`")
    user = re.findall(r"(?m)^USER\s+(\d+)", dockerfile)
    uids = {s.get("run_as_user") for s in k8s.values()}
    if not user or uids != {int(user[-1])}:
        problem("Dockerfile", f"USER {user[-1] if user else '(none)'}, while Kubernetes runs as {sorted(map(str, uids))}")
    if re.search(r"(?m)^(ENV|ARG)\s+[^\n]*(SECRET|PASSWORD|DATABASE_URL)", dockerfile):
        problem("Dockerfile", "a secret setting in the image")

    counted = len(documents)
    if problems:
        for p in problems:
            print(f"FAIL {p}")
        print(f"{len(problems)} problem(s) in deploy/", file=sys.stderr)
        return 1
    print(f"ok: {counted} Kubernetes documents valid for {KUBERNETES_VERSION} (strict), compose.yaml valid for the Compose Specification")
    print(f"ok: {len(SERVICES)} services with the same commands, ports, probes and settings in both: {', '.join(sorted(SERVICES))}")
    print(f"ok: no secret in a ConfigMap, deploy/appreg.toml or compose.yaml; {len(secrets)} Secret(s) hold {sorted(k for s in secrets.values() for k in s)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
