//! Starts the real server in-process on a free port with the tiny models, and
//! talks HTTP to it.

use std::sync::{mpsc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use nlp_serve::configuration::{Settings, SettingsSources};
use nlp_serve::startup::Application;
use serde_json::Value;

pub struct TestApp {
    pub address: String,
    pub client: reqwest::blocking::Client,
}

/// The tiny-profile settings, bound to loopback on a free port.
pub fn tiny_settings() -> Settings {
    let mut settings = Settings::load(&SettingsSources {
        profile: Some("tiny".into()),
        config_dir: Some(concat!(env!("CARGO_MANIFEST_DIR"), "/config").into()),
        file: None,
        use_environment: false,
    })
    .expect("tiny profile loads");
    settings.server.host = "127.0.0.1".into();
    settings.server.port = 0;
    settings.server.shutdown_timeout_secs = 1;
    settings.runtime.torch_threads = 1;
    settings.logging.level = "warn".into();
    settings.documents.database = fresh_database();
    settings
}

/// A document database of its own for each server a test starts.
pub fn fresh_database() -> std::path::PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let index = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let directory = std::env::temp_dir().join(format!(
        "nlp-serve-test-documents-{}-{index}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&directory);
    directory.join("documents.sqlite")
}

/// The server shared by the tests of this binary, with the tiny profile.
pub fn app() -> &'static TestApp {
    static APP: OnceLock<TestApp> = OnceLock::new();
    APP.get_or_init(|| {
        let app = spawn_app(tiny_settings());
        app.wait_ready();
        app
    })
}

/// Starts a server with `settings` on its own thread; does not wait for models.
pub fn spawn_app(settings: Settings) -> TestApp {
    // MKL's kernels as the server binary gets them (src/mkl.rs).
    nlp_serve::mkl::keep_linked();
    nlp_serve::telemetry::init(&settings.logging);
    let (port_tx, port_rx) = mpsc::channel();
    thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let application = Application::build(settings).expect("application builds");
            port_tx
                .send(application.port())
                .expect("test waits for the port");
            let _ = application.run_until_stopped().await;
        })
    });
    let port = port_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("server binds");
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        client: reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .expect("client builds"),
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// Polls /ready until it answers 200.
    pub fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(response) = self.client.get(self.url("/ready")).send() {
                if response.status() == 200 {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "server never became ready");
            thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = self
            .client
            .post(self.url(path))
            .json(body)
            .send()
            .expect("request is answered");
        read(response)
    }

    pub fn post_raw(&self, path: &str, body: impl Into<reqwest::blocking::Body>) -> (u16, Value) {
        let response = self
            .client
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .expect("request is answered");
        read(response)
    }

    /// POSTs to /complete and expects 200.
    pub fn complete(&self, body: &Value) -> Value {
        let (status, response) = self.post("/complete", body);
        assert_eq!(status, 200, "{response}");
        response
    }

    /// POSTs a streaming body to /complete; returns its events and headers.
    pub fn stream(&self, body: &Value) -> (Vec<SseEvent>, reqwest::header::HeaderMap) {
        let (text, headers) = self.stream_text("/complete", body);
        (parse_sse(&text), headers)
    }

    /// POSTs a streaming body to `path` and expects 200; returns the whole
    /// event-stream text and the headers.
    pub fn stream_text(&self, path: &str, body: &Value) -> (String, reqwest::header::HeaderMap) {
        let response = self
            .client
            .post(self.url(path))
            .json(body)
            .send()
            .expect("answered");
        assert_eq!(response.status(), 200);
        let headers = response.headers().clone();
        (response.text().expect("body"), headers)
    }

    /// The value of one metric series, 0 when absent.
    pub fn metric(&self, series: &str) -> f64 {
        let text = self.get("/metrics").text().expect("metrics");
        text.lines()
            .find_map(|line| line.strip_prefix(series))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(0.0)
    }

    pub fn get(&self, path: &str) -> reqwest::blocking::Response {
        self.client
            .get(self.url(path))
            .send()
            .expect("request is answered")
    }
}

pub fn read(response: reqwest::blocking::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().expect("body is readable");
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|_| panic!("body is JSON (status {status}): {text}"));
    (status, body)
}

/// Asserts the JSON error shape and returns the message.
pub fn assert_error(
    status: u16,
    body: &Value,
    expected_status: u16,
    expected_type: &str,
) -> String {
    assert_eq!(status, expected_status, "{body}");
    assert_eq!(body["type"], expected_type, "{body}");
    let message = body["error"].as_str().expect("error message is a string");
    assert!(!message.is_empty());
    message.to_string()
}

/// One Server-Sent Event: its name and its JSON data.
#[derive(Debug, Clone)]
pub struct SseEvent {
    pub name: String,
    pub data: Value,
}

/// Parses a whole `text/event-stream` body (comments are skipped).
pub fn parse_sse(body: &str) -> Vec<SseEvent> {
    body.split("\n\n")
        .filter_map(|block| {
            let mut name = String::from("message");
            let mut data = String::new();
            for line in block.lines() {
                if let Some(value) = line.strip_prefix("event:") {
                    name = value.trim().to_string();
                } else if let Some(value) = line.strip_prefix("data:") {
                    data.push_str(value.strip_prefix(' ').unwrap_or(value));
                }
            }
            if data.is_empty() {
                return None;
            }
            let data = serde_json::from_str(&data)
                .unwrap_or_else(|_| panic!("event data is JSON: {data}"));
            Some(SseEvent { name, data })
        })
        .collect()
}

/// The text of a completion answer's first completion.
pub fn first_text(response: &Value) -> String {
    response["completions"][0]["text"]
        .as_str()
        .expect("text")
        .to_string()
}

/// Starts a sampled streaming completion of exactly `tokens` tokens and
/// returns the open response, for tests that need a generation running.
pub fn long_stream(app: &TestApp, prompt: &str, tokens: usize) -> reqwest::blocking::Response {
    app.client
        .post(app.url("/complete"))
        .json(
            &serde_json::json!({"prompt": prompt, "max_new_tokens": tokens,
            "min_new_tokens": tokens, "temperature": 0.8, "stream": true}),
        )
        .send()
        .expect("answered")
}

/// Reads from `source` until `marker` appears; returns what was read. (A
/// reqwest response read this way must be read on with `Read` too: its
/// `text()` would then see an empty body.)
pub fn read_until(source: &mut impl std::io::Read, marker: &str) -> String {
    let mut seen = String::new();
    let mut buffer = [0u8; 4096];
    while !seen.contains(marker) {
        let read = source.read(&mut buffer).expect("stream readable");
        assert!(read > 0, "stream ended before {marker:?}: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buffer[..read]));
    }
    seen
}
