//! The `nlp-serve` binary as a user runs it: failing fast without a hub,
//! downloading from a hub-shaped HTTP server into the cache, and starting
//! again from the cache with that server gone.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpResponse, HttpServer};

#[path = "api/helpers.rs"]
#[allow(dead_code)]
mod helpers;
use helpers::read_until;

const BINARY: &str = env!("CARGO_BIN_EXE_nlp-serve");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nlp-serve-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn command() -> Command {
    let mut command = Command::new(BINARY);
    command
        .env_remove("PROFILE")
        .env("NLP_SERVE__SERVER__HOST", "127.0.0.1")
        .env("NLP_SERVE__RUNTIME__TORCH_THREADS", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Waits for the child to exit, killing it after `limit` (then fails).
fn wait_exit(mut child: Child, limit: Duration) -> (i32, String) {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("child status") {
            let output = child.wait_with_output().expect("output");
            let stderr = String::from_utf8_lossy(&output.stderr).to_string();
            return (status.code().unwrap_or(-1), stderr);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().expect("output");
            panic!(
                "nlp-serve did not exit within {limit:?}:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        thread::sleep(Duration::from_millis(50));
    }
}

fn wait_ready(child: &mut Child, port: u16) {
    let client = reqwest::blocking::Client::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(response) = client.get(format!("http://127.0.0.1:{port}/ready")).send() {
            if response.status() == 200 {
                return;
            }
        }
        if let Some(status) = child.try_wait().expect("child status") {
            panic!("nlp-serve exited with {status} before becoming ready");
        }
        assert!(Instant::now() < deadline, "nlp-serve never became ready");
        thread::sleep(Duration::from_millis(100));
    }
}

fn stop(mut child: Child) -> String {
    let _ = child.kill();
    let output = child.wait_with_output().expect("output");
    String::from_utf8_lossy(&output.stderr).to_string()
}

#[test]
fn unreachable_hub_fails_fast_with_the_offline_hint() {
    // Port 9 on loopback refuses connections: the same path as no network.
    let child = command()
        .env("NLP_SERVE__HUB__ENDPOINT", "http://127.0.0.1:9")
        .env("NLP_SERVE__HUB__CACHE_DIR", temp_dir("offline"))
        .env("PORT", free_port().to_string())
        .spawn()
        .expect("nlp-serve starts");
    let (code, stderr) = wait_exit(child, Duration::from_secs(60));
    assert_ne!(code, 0);
    assert!(stderr.contains("cannot reach the model hub"), "{stderr}");
    assert!(stderr.contains("make run PROFILE=tiny"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn unknown_profile_is_a_clear_error() {
    let child = command()
        .arg("--profile")
        .arg("nope")
        .spawn()
        .expect("starts");
    let (code, stderr) = wait_exit(child, Duration::from_secs(30));
    assert_eq!(code, 2);
    assert!(stderr.contains("profile 'nope' not found"), "{stderr}");
}

/// Serves `models/tiny/<name>/<file>` as `/{org}/<name>/resolve/{revision}/<file>`.
fn start_hub(root: PathBuf) -> (String, actix_web::dev::ServerHandle) {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let root = web::Data::new(root);
            let server = HttpServer::new(move || {
                App::new().app_data(root.clone()).route(
                    "/{org}/{name}/resolve/{revision}/{file}",
                    web::get().to(
                        |root: web::Data<PathBuf>, path: web::Path<(String, String, String, String)>| async move {
                            let (_, name, _, file) = path.into_inner();
                            if name.contains("..") || file.contains("..") || file.starts_with('.') {
                                return HttpResponse::BadRequest().finish();
                            }
                            match std::fs::read(root.join(name).join(file)) {
                                Ok(bytes) => HttpResponse::Ok().body(bytes),
                                Err(_) => HttpResponse::NotFound().finish(),
                            }
                        },
                    ),
                )
            })
            .workers(1)
            .bind(("127.0.0.1", 0))
            .expect("hub binds");
            let address = format!("http://{}", server.addrs()[0]);
            let server = server.run();
            tx.send((address, server.handle())).expect("test waits");
            let _ = server.await;
        })
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("hub starts")
}

fn hub_command(endpoint: &str, cache: &Path, port: u16) -> Command {
    let mut command = command();
    command
        .env("NLP_SERVE__HUB__ENDPOINT", endpoint)
        .env("NLP_SERVE__HUB__CACHE_DIR", cache)
        .env("NLP_SERVE__COMPLETION__SOURCE", "tiny-org/gpt2")
        .env("NLP_SERVE__QA__SOURCE", "tiny-org/distilbert-qa")
        .env("NLP_SERVE__TRANSLATION__SOURCE", "tiny-org/marian-en-de")
        .env("NLP_SERVE__TRANSLATION__NUM_BEAMS", "1")
        .env("NLP_SERVE__TRANSLATION__MAX_OUTPUT_TOKENS", "16")
        .env("NLP_SERVE__COMPLETION__MAX_PROMPT_TOKENS", "128")
        .env("PORT", port.to_string());
    command
}

fn complete(port: u16) -> serde_json::Value {
    let response = reqwest::blocking::Client::new()
        .post(format!("http://127.0.0.1:{port}/complete"))
        .json(&serde_json::json!({"prompt": "Hello", "max_new_tokens": 4, "temperature": 0}))
        .send()
        .expect("answered");
    assert_eq!(response.status(), 200);
    response.json().expect("JSON")
}

#[test]
fn downloads_from_a_hub_then_restarts_from_the_cache_offline() {
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/tiny");
    let cache = temp_dir("hub-cache");
    let (endpoint, hub) = start_hub(models);

    let port = free_port();
    let mut first = hub_command(&endpoint, &cache, port)
        .spawn()
        .expect("starts");
    wait_ready(&mut first, port);
    let online = complete(port);
    stop(first);
    for file in ["config.json", "vocab.json", "merges.txt", "rust_model.ot"] {
        assert!(
            cache.join("tiny-org--gpt2/main").join(file).is_file(),
            "{file} cached"
        );
    }
    assert!(cache
        .join("tiny-org--marian-en-de/main/source.spm")
        .is_file());

    actix_web::rt::System::new().block_on(hub.stop(false));
    let port = free_port();
    let mut second = hub_command(&endpoint, &cache, port)
        .spawn()
        .expect("starts");
    wait_ready(&mut second, port);
    assert_eq!(
        complete(port)["completions"],
        online["completions"],
        "same model from the cache"
    );
    stop(second);
}

#[test]
fn sigterm_finishes_requests_in_flight_then_exits_zero() {
    let port = free_port();
    let mut child = command()
        .args(["--profile", "tiny"])
        .env("PORT", port.to_string())
        .env("NLP_SERVE__SERVER__SHUTDOWN_TIMEOUT_SECS", "30")
        .spawn()
        .expect("nlp-serve starts");
    wait_ready(&mut child, port);
    let client = reqwest::blocking::Client::new();
    const TOKENS: u64 = 240;
    // Six streaming requests, each seen producing tokens: they are in flight.
    let streams: Vec<_> = (0..6)
        .map(|i| {
            let mut response = client
                .post(format!("http://127.0.0.1:{port}/complete"))
                .json(&serde_json::json!({
                    "prompt": format!("Shutdown {i}"), "max_new_tokens": TOKENS,
                    "min_new_tokens": TOKENS, "temperature": 0.8, "stream": true,
                    "num_return_sequences": 2
                }))
                .send()
                .expect("answered");
            assert_eq!(response.status(), 200);
            let head = read_until(&mut response, "event: token");
            (response, head)
        })
        .collect();
    // SAFETY: kill() only sends a signal to the child we started.
    let sent = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(sent, 0, "SIGTERM sent");
    let bodies: Vec<String> = streams
        .into_iter()
        .map(|(mut response, head)| {
            // Read on: once read() has begun, text() would see an empty body.
            let mut rest = String::new();
            let _ = std::io::Read::read_to_string(&mut response, &mut rest);
            format!("{head}{rest}")
        })
        .collect();
    let (code, stderr) = wait_exit(child, Duration::from_secs(40));
    for body in bodies {
        let done = body
            .split("\n\n")
            .find(|block| block.starts_with("event: done"))
            .unwrap_or_else(|| panic!("no done event after SIGTERM:\n{body}\n{stderr}"));
        let data = done
            .lines()
            .find_map(|line| line.strip_prefix("data: "))
            .expect("done has data");
        let answer: serde_json::Value = serde_json::from_str(data).expect("JSON");
        assert_eq!(answer["usage"]["completion_tokens"], 2 * TOKENS, "{answer}");
    }
    assert_eq!(code, 0, "exit status after SIGTERM:\n{stderr}");
}

#[test]
fn models_fetch_fills_the_cache_and_exits() {
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/tiny");
    let cache = temp_dir("fetch-cache");
    let (endpoint, hub) = start_hub(models);
    let child = hub_command(&endpoint, &cache, free_port())
        .args(["models", "fetch"])
        .spawn()
        .expect("starts");
    let (code, stderr) = wait_exit(child, Duration::from_secs(60));
    assert_eq!(code, 0, "{stderr}");
    for (repo, file) in [
        ("tiny-org--gpt2", "rust_model.ot"),
        ("tiny-org--distilbert-qa", "vocab.txt"),
        ("tiny-org--marian-en-de", "source.spm"),
    ] {
        assert!(
            cache.join(repo).join("main").join(file).is_file(),
            "{repo}/{file}"
        );
    }
    actix_web::rt::System::new().block_on(hub.stop(false));
}

#[test]
fn api_keys_from_the_environment_work_and_are_never_logged() {
    let port = free_port();
    let mut child = command()
        .args(["--profile", "tiny"])
        .env("PORT", port.to_string())
        .env(
            "NLP_SERVE__AUTH__API_KEYS",
            "first-secret-key,second-secret-key",
        )
        .env("NLP_SERVE__LOGGING__LEVEL", "debug")
        .spawn()
        .expect("starts");
    wait_ready(&mut child, port);
    let client = reqwest::blocking::Client::new();
    let url = format!("http://127.0.0.1:{port}/translate");
    let status = |key: Option<&str>| {
        let mut request = client.post(&url).json(&serde_json::json!({"text": "Hi."}));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        request.send().expect("answered").status().as_u16()
    };
    assert_eq!(status(None), 401);
    assert_eq!(status(Some("third-secret-key")), 401);
    assert_eq!(status(Some("second-secret-key")), 200);
    assert_eq!(status(Some("first-secret-key")), 200);
    let _ = child.kill();
    let output = child.wait_with_output().expect("output");
    let logs = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(logs.contains("listening"), "the server logged: {logs}");
    assert!(!logs.contains("secret-key"), "a key appeared in the logs");
}

/// `OMP_WAIT_POLICY` as the running server process sees it.
fn wait_policy_of(child: &Child) -> Option<String> {
    let environ = std::fs::read(format!("/proc/{}/environ", child.id())).expect("environ");
    environ
        .split(|byte| *byte == 0)
        .filter_map(|entry| std::str::from_utf8(entry).ok())
        .find_map(|entry| entry.strip_prefix("OMP_WAIT_POLICY=").map(str::to_string))
}

#[test]
fn serves_with_passive_openmp_threads_unless_the_environment_chooses() {
    for (given, expected) in [(None, "PASSIVE"), (Some("ACTIVE"), "ACTIVE")] {
        let port = free_port();
        let mut command = command();
        command
            .args(["--profile", "tiny"])
            .env("PORT", port.to_string())
            .env_remove("OMP_WAIT_POLICY");
        if let Some(policy) = given {
            command.env("OMP_WAIT_POLICY", policy);
        }
        let mut child = command.spawn().expect("nlp-serve starts");
        // Ready on the tiny models: the restarted process kept its arguments.
        wait_ready(&mut child, port);
        let policy = wait_policy_of(&child);
        stop(child);
        assert_eq!(policy.as_deref(), Some(expected), "given {given:?}");
    }
}
