//! The document store as a user runs it, with the real binary: documents
//! survive a restart, and a database locked by another process answers 503
//! (never a panic or a hang) while reads go on.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const BINARY: &str = env!("CARGO_BIN_EXE_nlp-serve");

struct Server {
    child: Child,
    port: u16,
    client: reqwest::blocking::Client,
}

impl Server {
    fn start(database: &Path) -> Server {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|address| address.port())
            .expect("a free port");
        let child = Command::new(BINARY)
            .args(["--profile", "tiny"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("PORT", port.to_string())
            .env("NLP_SERVE__SERVER__HOST", "127.0.0.1")
            .env("NLP_SERVE__RUNTIME__TORCH_THREADS", "1")
            .env("NLP_SERVE__COMPLETION__ENABLED", "false")
            .env("NLP_SERVE__TRANSLATION__ENABLED", "false")
            .env("NLP_SERVE__DOCUMENTS__DATABASE", database)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nlp-serve starts");
        let server = Server {
            child,
            port,
            client: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        while server
            .client
            .get(server.url("/ready"))
            .send()
            .map_or(true, |response| response.status() != 200)
        {
            assert!(Instant::now() < deadline, "nlp-serve never became ready");
            thread::sleep(Duration::from_millis(100));
        }
        server
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = self
            .client
            .post(self.url(path))
            .json(body)
            .send()
            .expect("answered");
        let status = response.status().as_u16();
        (status, response.json().expect("JSON body"))
    }

    fn get(&self, path: &str) -> (u16, Value) {
        let response = self.client.get(self.url(path)).send().expect("answered");
        let status = response.status().as_u16();
        (status, response.json().expect("JSON body"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn database(name: &str) -> std::path::PathBuf {
    let directory =
        std::env::temp_dir().join(format!("nlp-serve-store-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&directory);
    directory.join("nested").join("documents.sqlite")
}

const TEXT: &str = "Albatrosses glide over the Southern Ocean for days without flapping.";

#[test]
fn documents_survive_a_restart() {
    let path = database("restart");
    let question =
        json!({"question": "Where do albatrosses glide?", "documents": "all", "passages": 1});
    let (id, first) = {
        let server = Server::start(&path);
        let (status, stored) = server.post("/documents", &json!({"title": "Birds", "text": TEXT}));
        assert_eq!(status, 201, "{stored}");
        let (status, answer) = server.post("/qa", &question);
        assert_eq!(status, 200, "{answer}");
        (stored["id"].as_str().expect("id").to_string(), answer)
    };
    assert!(
        path.is_file(),
        "the database and its directory were created"
    );
    let server = Server::start(&path);
    let (status, document) = server.get(&format!("/documents/{id}"));
    assert_eq!(status, 200, "{document}");
    assert_eq!(document["text"], TEXT);
    let (_, list) = server.get("/documents");
    assert_eq!(
        list["documents"].as_array().expect("list").len(),
        2,
        "{list}"
    );
    let (status, again) = server.post("/qa", &question);
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["passages"], first["passages"]);
    assert_eq!(again["passages"][0]["document"], id.as_str());
    assert_eq!(again["answers"], first["answers"]);
}

#[test]
fn a_database_locked_by_another_process_answers_503_and_reads_go_on() {
    let path = database("locked");
    let server = Server::start(&path);
    let other = rusqlite::Connection::open(&path).expect("second connection");
    other.execute_batch("BEGIN EXCLUSIVE").expect("lock taken");
    let started = Instant::now();
    let (status, body) = server.post("/documents", &json!({"title": "Birds", "text": TEXT}));
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["type"], "store_unavailable", "{body}");
    assert!(started.elapsed() < Duration::from_secs(10), "no hang");
    let (status, list) = server.get("/documents");
    assert_eq!(status, 200, "WAL readers are not blocked: {list}");
    let (status, answer) = server.post(
        "/qa",
        &json!({"question": "Who introduced support vector machines?"}),
    );
    assert_eq!(status, 200, "{answer}");
    other.execute_batch("ROLLBACK").expect("lock released");
    let (status, body) = server.post("/documents", &json!({"title": "Birds", "text": TEXT}));
    assert_eq!(status, 201, "{body}");
}
