//! A real OpenID Connect provider for tests: the npm `oidc-provider` harness in
//! `tests/oidc-provider` (see its README), started on a free loopback port per
//! [`OidcProvider`] and killed when it is dropped.
//!
//! Needs Node.js and, the first time, npm: `npm ci` runs in `tests/oidc-provider` when
//! `node_modules/oidc-provider` is missing, serialised between concurrent test processes by a
//! lock file. A missing `node`/`npm` is a panic, never a skipped test.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use secrecy::SecretString;
use serde::Deserialize;
use serde_json::{json, Value};

use appreg_dcr_client::provider::{
    InitialAccessTokenMode, ProviderError, ProviderSettings, RenewMethod, RenewSettings,
};

/// How long the server may take to print its ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a process waits for another one's `npm ci`.
const NPM_LOCK_TIMEOUT: Duration = Duration::from_secs(600);
/// A lock older than this is stale whatever its owner.
const NPM_LOCK_STALE: Duration = Duration::from_secs(900);

/// How the provider accepts registrations.
#[derive(Debug, Clone)]
pub enum Mode {
    /// Registration requires `Authorization: Bearer <this>`.
    InitialAccessToken(String),
    /// A static admin client whose `client_credentials` tokens with scope `dcr` are initial
    /// access tokens.
    ClientCredentials {
        admin_client_id: String,
        admin_client_secret: String,
    },
}

impl Mode {
    /// Fixed-token mode with a random token.
    pub fn fixed_token() -> Self {
        Mode::InitialAccessToken(format!("iat-{}", random_suffix()))
    }

    /// Client-credentials mode with a random admin client.
    pub fn client_credentials() -> Self {
        Mode::ClientCredentials {
            admin_client_id: format!("dcr-admin-{}", random_suffix()),
            admin_client_secret: format!("dcr-admin-secret-{}", random_suffix()),
        }
    }
}

fn random_suffix() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.write_u32(std::process::id());
    format!("{:016x}", h.finish())
}

/// A fault for the next `POST /reg` requests (FIFO, one per request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// That status with a JSON error body; the provider is not called.
    Status(u16),
    /// Wait, then proceed.
    Delay(Duration),
    /// The socket is destroyed without an answer.
    Reset,
    /// The client is created, the answer replaced by a 500.
    CreatedThen500,
    /// The client is created, the answer held back this long (a caller that dies meanwhile
    /// never learns the client).
    CreatedThenDelay(Duration),
}

impl Fault {
    fn to_json(self) -> Value {
        match self {
            Fault::Status(s) => json!({"kind": "status", "status": s}),
            Fault::Delay(d) => json!({"kind": "delay", "ms": d.as_millis() as u64}),
            Fault::Reset => json!({"kind": "reset"}),
            Fault::CreatedThen500 => json!({"kind": "created_then_500"}),
            Fault::CreatedThenDelay(d) => {
                json!({"kind": "created_then_delay", "ms": d.as_millis() as u64})
            }
        }
    }
}

/// A running `tests/oidc-provider/server.mjs`; killed on drop.
pub struct OidcProvider {
    child: Child,
    issuer: String,
    port: u16,
    mode: Mode,
    http: reqwest::Client,
}

impl std::fmt::Debug for OidcProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcProvider")
            .field("issuer", &self.issuer)
            .field("pid", &self.child.id())
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct Ready {
    issuer: String,
    port: u16,
}

/// `tests/oidc-provider` of this repository.
pub fn harness_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/oidc-provider");
    let dir = dir.canonicalize().unwrap_or_else(|e| {
        panic!(
            "the oidc-provider test harness is missing at {}: {e}",
            dir.display()
        )
    });
    assert!(
        dir.join("server.mjs").is_file(),
        "{} has no server.mjs",
        dir.display()
    );
    dir
}

fn require_tool(tool: &str, why: &str) {
    match Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("`{tool} --version` failed ({s}); {tool} is required {why}"),
        Err(e) if e.kind() == ErrorKind::NotFound => panic!(
            "{tool} was not found on PATH; {tool} (Node.js >= 18) is required {why} — install Node.js, these tests are never skipped"
        ),
        Err(e) => panic!("cannot run {tool}: {e}; {tool} is required {why}"),
    }
}

/// Runs `npm ci` in `dir` unless `node_modules/oidc-provider` is there ([`ensure_npm_package`]).
pub fn ensure_node_modules(dir: &Path) {
    ensure_npm_package(dir, "oidc-provider");
}

/// Runs `npm ci` in `dir` (a harness with its package-lock.json) unless
/// `node_modules/<package>` is there. Concurrent test processes are serialised by a lock file
/// created with `create_new` (in the temp dir, named after `dir`); a lock whose owner process is
/// gone, or older than 15 minutes, is stale.
pub fn ensure_npm_package(dir: &Path, package: &str) {
    let installed = dir.join("node_modules").join(package).join("package.json");
    let lock = std::env::temp_dir().join(format!(
        "appreg-oidc-provider-npm-ci-{}.lock",
        dir.to_string_lossy()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect::<String>()
    ));
    let deadline = Instant::now() + NPM_LOCK_TIMEOUT;
    loop {
        // The lock first: while another process's `npm ci` runs, package.json may exist in a
        // half-installed tree.
        if !lock.exists() && installed.is_file() {
            return;
        }
        match OpenOptions::new().write(true).create_new(true).open(&lock) {
            Ok(mut f) => {
                let _ = writeln!(f, "{}", std::process::id());
                let _guard = LockGuard(lock.clone());
                if !installed.is_file() {
                    run_npm_ci(dir);
                }
                return;
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                if lock_is_stale(&lock) {
                    eprintln!("removing the stale lock {}", lock.display());
                    let _ = std::fs::remove_file(&lock);
                    continue;
                }
                assert!(
                    Instant::now() < deadline,
                    "waited {NPM_LOCK_TIMEOUT:?} for another process's `npm ci` (lock {})",
                    lock.display()
                );
                std::thread::sleep(Duration::from_millis(250));
            }
            Err(e) => panic!("cannot create the lock file {}: {e}", lock.display()),
        }
    }
}

struct LockGuard(PathBuf);

impl Drop for LockGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn lock_is_stale(lock: &Path) -> bool {
    let age = std::fs::metadata(lock)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .unwrap_or_default();
    if age > NPM_LOCK_STALE {
        return true;
    }
    let text = std::fs::read_to_string(lock).unwrap_or_default();
    match text.trim().parse::<u32>() {
        // Linux: the owner is gone.
        Ok(pid) => Path::new("/proc").is_dir() && !Path::new(&format!("/proc/{pid}")).exists(),
        // Created but not written yet, unless for long.
        Err(_) => age > Duration::from_secs(30),
    }
}

fn run_npm_ci(dir: &Path) {
    require_tool("npm", "to install the test harness's npm packages (npm ci)");
    eprintln!("running `npm ci` in {}", dir.display());
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(dir)
        .stdin(Stdio::null())
        // npm's progress on stderr, so stdout stays clean for the test harness
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .status()
        .unwrap_or_else(|e| panic!("cannot run npm ci in {}: {e}", dir.display()));
    assert!(
        status.success(),
        "`npm ci` in {} failed ({status})",
        dir.display()
    );
}

/// How the provider behaves beyond its [`Mode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Whether it honours `Idempotency-Key` on registrations (the default). Off
    /// (`IDEMPOTENCY=off`): the header is ignored and every registration gets a random
    /// client_id, like most providers.
    pub idempotency: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options { idempotency: true }
    }
}

impl OidcProvider {
    /// Starts a provider on a free loopback port; panics (with the reason) when it cannot.
    pub fn start(mode: Mode) -> Self {
        Self::start_with(mode, Options::default())
    }

    /// [`OidcProvider::start`] with [`Options`].
    pub fn start_with(mode: Mode, options: Options) -> Self {
        Self::start_with_env(mode, options, &[])
    }

    /// [`OidcProvider::start_with`], the server given more environment variables (see
    /// `tests/oidc-provider/README.md`: `PORTAL_AUDIENCE`).
    pub fn start_with_env(mode: Mode, options: Options, env: &[(&str, &str)]) -> Self {
        let dir = harness_dir();
        require_tool("node", "to run the oidc-provider test harness");
        ensure_node_modules(&dir);

        let mut cmd = Command::new("node");
        cmd.arg("server.mjs")
            .current_dir(&dir)
            .env("PORT", "0")
            .env_remove("INITIAL_ACCESS_TOKEN")
            .env_remove("ADMIN_CLIENT_ID")
            .env_remove("ADMIN_CLIENT_SECRET")
            .env_remove("PORTAL_AUDIENCE")
            .envs(env.iter().copied())
            .env(
                "IDEMPOTENCY",
                if options.idempotency { "on" } else { "off" },
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            // The provider's notices and errors go to the test's stderr (shown on failure).
            .stderr(Stdio::inherit());
        match &mode {
            Mode::InitialAccessToken(t) => {
                cmd.env("INITIAL_ACCESS_TOKEN", t);
            }
            Mode::ClientCredentials {
                admin_client_id,
                admin_client_secret,
            } => {
                cmd.env("ADMIN_CLIENT_ID", admin_client_id)
                    .env("ADMIN_CLIENT_SECRET", admin_client_secret);
            }
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `node server.mjs` in {}: {e}", dir.display()));

        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            // Keep draining (the server prints nothing more; EOF when it exits).
            for _ in lines {}
        });
        let line = match rx.recv_timeout(READY_TIMEOUT) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the oidc-provider did not print its ready line within {READY_TIMEOUT:?} (its stderr is above)");
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
                panic!(
                    "the oidc-provider exited before it was ready ({status}; its stderr is above)"
                );
            }
        };
        let ready: Ready = match serde_json::from_str(&line) {
            Ok(r) => r,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the oidc-provider's ready line {line:?} is not {{\"issuer\",\"port\"}}: {e}"
                );
            }
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("reqwest client");
        OidcProvider {
            child,
            issuer: ready.issuer,
            port: ready.port,
            mode,
            http,
        }
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn mode(&self) -> &Mode {
        &self.mode
    }

    pub fn discovery_url(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.issuer)
    }

    /// The URL of the provider's registration endpoint.
    pub fn registration_endpoint(&self) -> String {
        format!("{}/reg", self.issuer)
    }

    /// Provider settings matching this provider: its discovery URL, its mode (scope `dcr` in
    /// client-credentials mode), and secret renewal at
    /// `{registration_endpoint}/{client_id}/renew_secret` with POST.
    pub fn settings(&self) -> ProviderSettings {
        let initial_access_token = match &self.mode {
            Mode::InitialAccessToken(t) => InitialAccessTokenMode::InitialAccessToken {
                token: SecretString::from(t.clone()),
            },
            Mode::ClientCredentials {
                admin_client_id,
                admin_client_secret,
            } => InitialAccessTokenMode::ClientCredentials {
                client_id: admin_client_id.clone(),
                client_secret: SecretString::from(admin_client_secret.clone()),
                scopes: vec!["dcr".into()],
            },
        };
        ProviderSettings {
            discovery_endpoint: self.discovery_url(),
            initial_access_token,
            software_id: None,
            renew_client_secret: RenewSettings {
                enabled: true,
                endpoint_template: "{registration_endpoint}/{client_id}/renew_secret".into(),
                method: RenewMethod::Post,
            },
            allow_cross_origin_endpoints: false,
        }
    }

    /// Queues faults for the next registration requests.
    pub async fn faults(&self, faults: &[Fault]) {
        let body = Value::Array(faults.iter().map(|f| f.to_json()).collect());
        let resp = self
            .http
            .post(format!("{}/_faults", self.issuer))
            .json(&body)
            .send()
            .await
            .expect("POST /_faults");
        assert_eq!(resp.status(), 200, "POST /_faults refused {body}");
    }

    pub async fn clear_faults(&self) {
        let resp = self
            .http
            .delete(format!("{}/_faults", self.issuer))
            .send()
            .await
            .expect("DELETE /_faults");
        assert_eq!(resp.status(), 200, "DELETE /_faults");
    }

    /// The dynamically registered clients that exist now.
    pub async fn clients(&self) -> Vec<String> {
        #[derive(Deserialize)]
        struct Clients {
            clients: Vec<String>,
        }
        let resp = self
            .http
            .get(format!("{}/_clients", self.issuer))
            .send()
            .await
            .expect("GET /_clients");
        assert_eq!(resp.status(), 200, "GET /_clients");
        resp.json::<Clients>()
            .await
            .expect("/_clients body")
            .clients
    }

    /// A `client_credentials` grant at the token endpoint with `client_secret_basic`: the
    /// access token, or the provider's error (`invalid_client` for a wrong secret,
    /// `unauthorized_client` for a client without that grant, …).
    pub async fn token(
        &self,
        client_id: &str,
        client_secret: &str,
        scope: Option<&str>,
    ) -> Result<String, ProviderError> {
        let mut form = vec![("grant_type", "client_credentials")];
        if let Some(s) = scope {
            form.push(("scope", s));
        }
        let resp = self
            .http
            .post(format!("{}/token", self.issuer))
            .basic_auth(enc(client_id), Some(enc(client_secret)))
            .form(&form)
            .send()
            .await
            .map_err(|e| ProviderError::Transient(e.to_string()))?;
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if status == 200 {
            return body["access_token"]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| ProviderError::Invalid(format!("no access_token in {body}")));
        }
        Err(ProviderError::Rejected {
            status,
            error: body["error"].as_str().unwrap_or("http_error").to_string(),
            error_description: body["error_description"].as_str().map(str::to_string),
        })
    }
}

fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
