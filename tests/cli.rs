//! The `nlp-serve` binary as a user runs it: failing fast without a hub;
//! downloading from a server that answers like the Hugging Face hub
//! (tests/support/hub.rs: redirects to another host, private repositories,
//! missing files) into the cache huggingface_hub uses, and starting again
//! from it with that server gone or HF_HUB_OFFLINE set; sharing that cache
//! with Python's huggingface_hub both ways.

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

#[path = "api/helpers.rs"]
#[allow(dead_code)]
mod helpers;
use helpers::read_until;

#[path = "support/hub.rs"]
mod hub;

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
        // The developer's own hub settings must not leak into the tests.
        .env_remove("HF_ENDPOINT")
        .env_remove("HF_HOME")
        .env_remove("HF_HUB_CACHE")
        .env_remove("HF_TOKEN")
        .env_remove("HF_TOKEN_PATH")
        .env_remove("HUGGING_FACE_HUB_TOKEN")
        .env_remove("HF_HUB_OFFLINE")
        .env_remove("TRANSFORMERS_OFFLINE")
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

const PRIVATE_TOKEN: &str = "hf_private_secret_token";

fn manifest_path(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn repo(dir: PathBuf) -> hub::Repo {
    hub::Repo { dir, token: None }
}

/// The tiny models as public repositories `tiny-org/<name>`, transformers'
/// own gpt2 save as `tiny-org/gpt2-safetensors` (model.safetensors only) and
/// the tiny gpt2 as the private `private-org/gpt2`.
fn repos() -> HashMap<String, hub::Repo> {
    let mut repos = HashMap::new();
    for name in ["gpt2", "distilbert-qa", "marian-en-de"] {
        repos.insert(
            format!("tiny-org/{name}"),
            repo(manifest_path("models/tiny").join(name)),
        );
    }
    repos.insert(
        "tiny-org/gpt2-safetensors".into(),
        repo(manifest_path("build/oracle/gpt2")),
    );
    repos.insert(
        "private-org/gpt2".into(),
        hub::Repo {
            dir: manifest_path("models/tiny/gpt2"),
            token: Some(PRIVATE_TOKEN.into()),
        },
    );
    repos
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

/// Completion from `source` only; the hub and cache come from the
/// environment (HF_ENDPOINT, HF_HUB_CACHE) as users set them.
fn completion_command(source: &str, port: u16) -> Command {
    let mut command = command();
    command
        .env("NLP_SERVE__COMPLETION__SOURCE", source)
        .env("NLP_SERVE__QA__ENABLED", "false")
        .env("NLP_SERVE__TRANSLATION__ENABLED", "false")
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

/// Serves `source` (completion only) until ready, and returns its answer.
fn serve_completion(source: &str, environment: &[(&str, &str)]) -> serde_json::Value {
    let port = free_port();
    let mut child = completion_command(source, port)
        .envs(environment.iter().copied())
        .spawn()
        .expect("starts");
    wait_ready(&mut child, port);
    let answer = complete(port);
    stop(child);
    answer
}

/// The snapshot directory of `repo` at its `main` commit, after checking
/// `refs/main` names that commit, as huggingface_hub writes it.
fn snapshot(cache: &Path, repo: &str) -> PathBuf {
    let folder = cache.join(format!("models--{}", repo.replace('/', "--")));
    let commit = hub::commit_of(repo);
    assert_eq!(
        std::fs::read_to_string(folder.join("refs/main")).expect("refs/main"),
        commit
    );
    folder.join("snapshots").join(commit)
}

#[test]
fn downloads_from_a_hub_then_restarts_from_the_cache_offline() {
    let cache = temp_dir("hub-cache");
    let hub = hub::start(repos());

    let port = free_port();
    let mut first = hub_command(&hub.endpoint, &cache, port)
        .spawn()
        .expect("starts");
    wait_ready(&mut first, port);
    let online = complete(port);
    stop(first);
    let gpt2 = snapshot(&cache, "tiny-org/gpt2");
    for file in ["config.json", "vocab.json", "merges.txt", "rust_model.ot"] {
        let link = std::fs::read_link(gpt2.join(file)).expect("a symlink");
        assert!(link.starts_with("../../blobs"), "{file} -> {link:?}");
        assert!(gpt2.join(file).is_file(), "{file} cached");
    }
    assert!(snapshot(&cache, "tiny-org/marian-en-de")
        .join("source.spm")
        .is_file());
    // Weights came through the redirect to the other host.
    let requests = hub.requests();
    assert!(requests
        .iter()
        .any(|seen| seen.server == "cdn"
            && seen.path.starts_with("/blobs/tiny-org/gpt2/rust_model.ot")));

    hub.stop();
    let port = free_port();
    let mut second = hub_command(&hub.endpoint, &cache, port)
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
fn models_fetch_fills_the_cache_and_exits_and_offline_needs_no_hub() {
    let cache = temp_dir("fetch-cache");
    let hub = hub::start(repos());
    let child = hub_command(&hub.endpoint, &cache, free_port())
        .args(["models", "fetch"])
        .spawn()
        .expect("starts");
    let (code, stderr) = wait_exit(child, Duration::from_secs(60));
    assert_eq!(code, 0, "{stderr}");
    for (repo, file) in [
        ("tiny-org/gpt2", "rust_model.ot"),
        ("tiny-org/distilbert-qa", "vocab.txt"),
        ("tiny-org/marian-en-de", "source.spm"),
    ] {
        assert!(snapshot(&cache, repo).join(file).is_file(), "{repo}/{file}");
    }
    // Online again: one HEAD per file says the commit is unchanged; nothing
    // is downloaded again.
    let before = hub.requests().len();
    let (code, stderr) = fetch(&hub.endpoint, &cache, "tiny-org/gpt2", &[]);
    assert_eq!(code, 0, "{stderr}");
    let again = &hub.requests()[before..];
    assert_eq!(again.len(), 4, "{again:?}");
    assert!(again.iter().all(|seen| seen.method == "HEAD"), "{again:?}");
    // A revision that is a commit hash, once cached, needs no request at all.
    let before = hub.requests().len();
    let commit = hub::commit_of("tiny-org/gpt2");
    let revision = [("NLP_SERVE__COMPLETION__REVISION", commit.as_str())];
    let (code, stderr) = fetch(&hub.endpoint, &cache, "tiny-org/gpt2", &revision);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        hub.requests().len(),
        before,
        "a cached commit asked the hub"
    );
    // HF_HUB_OFFLINE: everything from the cache, not one request.
    let asked = hub.requests().len();
    let child = hub_command(&hub.endpoint, &cache, free_port())
        .args(["models", "fetch"])
        .env("HF_HUB_OFFLINE", "1")
        .spawn()
        .expect("starts");
    let (code, stderr) = wait_exit(child, Duration::from_secs(60));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(hub.requests().len(), asked, "offline asked the hub");
    // Offline with an empty cache: a clear error naming the cache.
    let empty = temp_dir("fetch-empty");
    let child = hub_command(&hub.endpoint, &empty, free_port())
        .args(["models", "fetch"])
        .env("HF_HUB_OFFLINE", "1")
        .spawn()
        .expect("starts");
    let (code, stderr) = wait_exit(child, Duration::from_secs(60));
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("config.json of tiny-org/gpt2@main not in the hub cache"),
        "{stderr}"
    );
    assert!(stderr.contains("HF_HUB_OFFLINE"), "{stderr}");
    assert_eq!(hub.requests().len(), asked, "offline asked the hub");
    hub.stop();
}

/// `models fetch` of completion from `source` only, with `environment`.
fn fetch(
    endpoint: &str,
    cache: &Path,
    source: &str,
    environment: &[(&str, &str)],
) -> (i32, String) {
    let child = completion_command(source, free_port())
        .args(["models", "fetch"])
        .env("HF_ENDPOINT", endpoint)
        .env("HF_HUB_CACHE", cache)
        .envs(environment.iter().copied())
        .spawn()
        .expect("starts");
    wait_exit(child, Duration::from_secs(60))
}

#[test]
fn a_private_repository_needs_hf_token_which_never_reaches_another_host() {
    let cache = temp_dir("private-cache");
    let hub = hub::start(repos());
    let (code, stderr) = fetch(&hub.endpoint, &cache, "private-org/gpt2", &[]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(
            "the model hub refused access to 'private-org/gpt2': HTTP 401 Unauthorized: \
             it is private or gated, or does not exist; set HF_TOKEN"
        ),
        "{stderr}"
    );
    let (code, stderr) = fetch(
        &hub.endpoint,
        &cache,
        "private-org/gpt2",
        &[
            ("HF_TOKEN", "hf_wrong"),
            ("NLP_SERVE__LOGGING__LEVEL", "debug"),
        ],
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("the token in HF_TOKEN cannot read it"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("hf_wrong"),
        "the token was logged: {stderr}"
    );

    let before = hub.requests().len();
    let (code, stderr) = fetch(
        &hub.endpoint,
        &cache,
        "private-org/gpt2",
        &[
            ("HF_TOKEN", PRIVATE_TOKEN),
            ("NLP_SERVE__LOGGING__LEVEL", "debug"),
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        !stderr.contains(PRIVATE_TOKEN),
        "the token was logged: {stderr}"
    );
    assert!(snapshot(&cache, "private-org/gpt2")
        .join("rust_model.ot")
        .is_file());
    let requests = &hub.requests()[before..];
    let bearer = format!("Bearer {PRIVATE_TOKEN}");
    let (to_hub, to_cdn): (Vec<_>, Vec<_>) = requests.iter().partition(|seen| seen.server == "hub");
    let heads = to_hub.iter().filter(|seen| seen.method == "HEAD").count();
    assert_eq!(heads, 4, "one HEAD per file: {requests:?}");
    assert_eq!(to_hub.len(), 7, "and a GET per small file: {requests:?}");
    assert!(to_hub
        .iter()
        .all(|seen| seen.authorization.as_deref() == Some(bearer.as_str())));
    assert_eq!(to_cdn.len(), 1, "the weights, redirected: {requests:?}");
    assert_eq!(to_cdn[0].authorization, None, "the token went to the CDN");
    hub.stop();
}

#[test]
fn a_missing_file_or_revision_is_a_clear_error() {
    let no_weights = temp_dir("no-weights-repo");
    for file in ["config.json", "vocab.json", "merges.txt"] {
        std::fs::copy(
            manifest_path("models/tiny/gpt2").join(file),
            no_weights.join(file),
        )
        .expect("copy");
    }
    let mut repos = repos();
    repos.insert("tiny-org/no-weights".into(), repo(no_weights));
    let hub = hub::start(repos);
    let cache = temp_dir("missing-cache");
    let (code, stderr) = fetch(&hub.endpoint, &cache, "tiny-org/no-weights", &[]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(
            "rust_model.ot or model.safetensors or model.safetensors.index.json \
             or pytorch_model.bin not found in tiny-org/no-weights@main on the model hub"
        ),
        "{stderr}"
    );
    let (code, stderr) = fetch(
        &hub.endpoint,
        &cache,
        "tiny-org/gpt2",
        &[("NLP_SERVE__COMPLETION__REVISION", "v9")],
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("revision 'v9' not found"), "{stderr}");
    hub.stop();
}

/// build/oracle/gpt2 re-saved as two shards and an index.
fn sharded_gpt2() -> PathBuf {
    let source = manifest_path("build/oracle/gpt2");
    let dir = temp_dir("sharded-repo");
    for file in ["config.json", "vocab.json", "merges.txt"] {
        std::fs::copy(source.join(file), dir.join(file)).expect("copy");
    }
    let tensors = tch::Tensor::read_safetensors(source.join("model.safetensors"))
        .expect("oracle gpt2 safetensors (make oracle-fixtures)");
    let half = tensors.len() / 2;
    let mut weight_map = serde_json::Map::new();
    for (shard, part) in [&tensors[..half], &tensors[half..]].iter().enumerate() {
        let file = format!("model-0000{}-of-00002.safetensors", shard + 1);
        tch::Tensor::write_safetensors(part, dir.join(&file)).expect("write shard");
        for (name, _) in part.iter() {
            weight_map.insert(name.clone(), serde_json::json!(file));
        }
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).expect("index");
    dir
}

#[test]
fn safetensors_only_and_sharded_repositories_download_and_serve() {
    let mut repos = repos();
    repos.insert("tiny-org/gpt2-sharded".into(), repo(sharded_gpt2()));
    let hub = hub::start(repos);
    let cache = temp_dir("shards-cache");
    let cache_text = cache.display().to_string();
    let environment = [
        ("HF_ENDPOINT", hub.endpoint.as_str()),
        ("HF_HUB_CACHE", cache_text.as_str()),
    ];
    let whole = serve_completion("tiny-org/gpt2-safetensors", &environment);
    let snapshot_dir = snapshot(&cache, "tiny-org/gpt2-safetensors");
    assert!(snapshot_dir.join("model.safetensors").is_file());
    // The hub said there is no rust_model.ot: remembered as huggingface_hub does.
    let commit = hub::commit_of("tiny-org/gpt2-safetensors");
    assert!(cache
        .join("models--tiny-org--gpt2-safetensors/.no_exist")
        .join(commit)
        .join("rust_model.ot")
        .is_file());

    let sharded = serve_completion("tiny-org/gpt2-sharded", &environment);
    let snapshot_dir = snapshot(&cache, "tiny-org/gpt2-sharded");
    for file in [
        "model.safetensors.index.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ] {
        assert!(snapshot_dir.join(file).is_file(), "{file}");
    }
    assert_eq!(sharded["completions"], whole["completions"]);
    assert_eq!(whole["model"], "tiny-org/gpt2-safetensors", "{whole}");
    hub.stop();
}

/// The bench venv's Python with huggingface_hub, or None (with a message).
fn python() -> Option<PathBuf> {
    let python = manifest_path("bench/.venv/bin/python");
    if python.is_file() {
        Some(python)
    } else {
        eprintln!(
            "skipped: no {} (make bench-venv builds it)",
            python.display()
        );
        None
    }
}

fn run_python(python: &Path, script: &str, environment: &[(&str, &str)]) -> String {
    let output = Command::new(python)
        .args(["-c", script])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", std::env::temp_dir())
        .env("HF_HUB_DISABLE_TELEMETRY", "1")
        .envs(environment.iter().copied())
        .output()
        .expect("python runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "python failed:\n{stderr}");
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

#[test]
fn a_cache_huggingface_hub_filled_is_served_offline_and_it_reads_ours() {
    let Some(python) = python() else { return };
    let hub = hub::start(repos());

    // Python downloads; nlp-serve serves it offline, asking nothing.
    let theirs = temp_dir("python-cache");
    let theirs_text = theirs.display().to_string();
    run_python(
        &python,
        "from huggingface_hub import snapshot_download; \
         print(snapshot_download('tiny-org/gpt2-safetensors'))",
        &[
            ("HF_ENDPOINT", &hub.endpoint),
            ("HF_HUB_CACHE", &theirs_text),
        ],
    );
    let asked = hub.requests().len();
    let answer = serve_completion(
        "tiny-org/gpt2-safetensors",
        &[("HF_HUB_CACHE", &theirs_text), ("HF_HUB_OFFLINE", "1")],
    );
    assert_eq!(hub.requests().len(), asked, "offline asked the hub");
    assert_eq!(answer["model"], "tiny-org/gpt2-safetensors");

    // nlp-serve downloads; huggingface_hub finds every file offline.
    let ours = temp_dir("our-cache");
    let (code, stderr) = fetch(&hub.endpoint, &ours, "tiny-org/gpt2", &[]);
    assert_eq!(code, 0, "{stderr}");
    let ours_text = ours.display().to_string();
    let found = run_python(
        &python,
        "from huggingface_hub import hf_hub_download, snapshot_download, scan_cache_dir\n\
         for name in ['config.json', 'vocab.json', 'merges.txt', 'rust_model.ot']:\n\
         \x20   print(hf_hub_download('tiny-org/gpt2', name))\n\
         print(snapshot_download('tiny-org/gpt2'))\n\
         info = scan_cache_dir()\n\
         assert not info.warnings, info.warnings\n\
         print(sorted(f.file_name for r in info.repos for rev in r.revisions for f in rev.files))",
        &[("HF_HUB_CACHE", &ours_text), ("HF_HUB_OFFLINE", "1")],
    );
    let snapshot_dir = snapshot(&ours, "tiny-org/gpt2");
    let lines: Vec<&str> = found.lines().collect();
    for (line, name) in
        lines
            .iter()
            .zip(["config.json", "vocab.json", "merges.txt", "rust_model.ot"])
    {
        assert_eq!(Path::new(line), snapshot_dir.join(name), "{found}");
    }
    assert_eq!(Path::new(lines[4]), snapshot_dir, "{found}");
    assert_eq!(
        lines[5], "['config.json', 'merges.txt', 'rust_model.ot', 'vocab.json']",
        "{found}"
    );
    hub.stop();
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

/// libtorch's MKL asks the dynamic linker for its vendor test; the binary's
/// own definition (src/mkl.rs) is found first only if the binary exports it.
/// The dynamic linker's log of a served fp32 completion shows the binding.
#[test]
fn libtorchs_mkl_calls_the_binarys_answer_to_its_vendor_test() {
    let output = Command::new("nm")
        .args(["--dynamic", "--defined-only", BINARY])
        .output()
        .expect("nm (binutils) runs");
    assert!(output.status.success(), "nm failed: {output:?}");
    let symbols = String::from_utf8_lossy(&output.stdout);
    assert!(
        symbols
            .lines()
            .any(|line| line.ends_with(" T mkl_serv_intel_cpu_true")),
        "mkl_serv_intel_cpu_true is not in the dynamic symbol table"
    );

    let dir = temp_dir("mkl-bindings");
    let log = dir.join("ld");
    let model = manifest_path("models/tiny/gpt2");
    let log_path = log.to_string_lossy().into_owned();
    serve_completion(
        &model.to_string_lossy(),
        &[("LD_DEBUG", "bindings"), ("LD_DEBUG_OUTPUT", &log_path)],
    );
    let mut bindings = String::new();
    for entry in std::fs::read_dir(&dir).expect("the log folder") {
        let path = entry.expect("an entry").path();
        bindings += &std::fs::read_to_string(path).unwrap_or_default();
    }
    let _ = std::fs::remove_dir_all(&dir);
    let binary_name = Path::new(BINARY)
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    assert!(
        bindings.lines().any(|line| line.contains("libtorch_cpu.so")
            && line.contains(&format!(
                "{binary_name} [0]: normal symbol `mkl_serv_intel_cpu_true'"
            ))),
        "libtorch's MKL did not bind mkl_serv_intel_cpu_true to the binary"
    );
}
