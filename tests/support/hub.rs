//! A local server that answers like the Hugging Face hub, for the clients
//! under test (nlp-serve and Python's huggingface_hub):
//! `HEAD`/`GET /{org}/{name}/resolve/{revision}/{file}` with `X-Repo-Commit`
//! and `ETag`; large files (`*.safetensors`, `*.ot`, `*.bin`) answered by a
//! 302 to a second server (another port: another host, like the hub's CDN)
//! with `X-Linked-Etag` and `X-Linked-Size`; 404 with
//! `X-Error-Code: EntryNotFound` (or `RevisionNotFound`); 401 for a private
//! repository without `Authorization: Bearer <token>`; and
//! `GET /api/models/{org}/{name}/revision/{revision}`, the file list
//! huggingface_hub's `snapshot_download` asks for. Every request is logged
//! with the Authorization header it carried.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};

/// A repository: its files are those of `dir`.
#[derive(Clone)]
pub struct Repo {
    pub dir: PathBuf,
    /// Readable only with `Authorization: Bearer <this>`.
    pub token: Option<String>,
}

/// One request either server saw.
#[derive(Debug, Clone)]
pub struct Seen {
    /// "hub" or "cdn".
    pub server: &'static str,
    pub method: String,
    pub path: String,
    pub authorization: Option<String>,
}

pub struct Hub {
    pub endpoint: String,
    pub log: Arc<Mutex<Vec<Seen>>>,
    handles: Vec<ServerHandle>,
}

impl Hub {
    pub fn requests(&self) -> Vec<Seen> {
        self.log.lock().expect("log").clone()
    }

    pub fn stop(&self) {
        for handle in &self.handles {
            actix_web::rt::System::new().block_on(handle.stop(false));
        }
    }
}

/// The commit every repository's `main` is at: fixed per repository.
pub fn commit_of(repo: &str) -> String {
    let mut hash: u64 = 0xcbf29ce484222325;
    for byte in repo.bytes() {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x100000001b3);
    }
    format!("{hash:016x}{hash:016x}{:08x}", hash >> 32)
}

/// An ETag for contents (stands in for the hub's git or LFS hashes).
fn etag_of(bytes: &[u8]) -> String {
    let mut hash: u64 = 0xcbf29ce484222325;
    for byte in bytes {
        hash = (hash ^ u64::from(*byte)).wrapping_mul(0x100000001b3);
    }
    format!("{hash:016x}{:08x}", bytes.len())
}

fn is_large(file: &str) -> bool {
    [".safetensors", ".ot", ".bin"]
        .iter()
        .any(|suffix| file.ends_with(suffix))
}

struct State {
    repos: HashMap<String, Repo>,
    cdn: String,
    log: Arc<Mutex<Vec<Seen>>>,
}

impl State {
    fn record(&self, server: &'static str, request: &HttpRequest) {
        let authorization = request
            .headers()
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .map(str::to_string);
        self.log.lock().expect("log").push(Seen {
            server,
            method: request.method().to_string(),
            path: request.uri().to_string(),
            authorization,
        });
    }

    /// The repository, if it exists and the request may read it.
    fn repo(&self, request: &HttpRequest, id: &str) -> Option<&Repo> {
        let repo = self.repos.get(id)?;
        if let Some(token) = &repo.token {
            let sent = request
                .headers()
                .get("authorization")
                .and_then(|value| value.to_str().ok());
            if sent != Some(format!("Bearer {token}").as_str()) {
                return None;
            }
        }
        Some(repo)
    }
}

/// The hub's answer for a private repository without the right token, the
/// same as for none at all (so as not to tell which).
fn refused() -> HttpResponse {
    HttpResponse::Unauthorized()
        .insert_header(("X-Error-Code", "RepoNotFound"))
        .insert_header(("X-Error-Message", "Repository not found"))
        .finish()
}

async fn resolve(
    state: web::Data<State>,
    request: HttpRequest,
    path: web::Path<(String, String, String, String)>,
) -> HttpResponse {
    state.record("hub", &request);
    let (org, name, revision, file) = path.into_inner();
    let id = format!("{org}/{name}");
    let Some(repo) = state.repo(&request, &id) else {
        return refused();
    };
    let commit = commit_of(&id);
    if revision != "main" && revision != commit {
        return HttpResponse::NotFound()
            .insert_header(("X-Error-Code", "RevisionNotFound"))
            .finish();
    }
    if file.contains("..") || file.starts_with('.') {
        return HttpResponse::BadRequest().finish();
    }
    let Ok(bytes) = std::fs::read(repo.dir.join(&file)) else {
        return HttpResponse::NotFound()
            .insert_header(("X-Error-Code", "EntryNotFound"))
            .insert_header(("X-Repo-Commit", commit))
            .finish();
    };
    let etag = etag_of(&bytes);
    if is_large(&file) {
        // The hub's own ETag is the pointer file's; the content's is linked.
        return HttpResponse::Found()
            .insert_header(("X-Repo-Commit", commit))
            .insert_header(("ETag", "\"pointer\""))
            .insert_header(("X-Linked-Etag", format!("\"{etag}\"")))
            .insert_header(("X-Linked-Size", bytes.len().to_string()))
            .insert_header((
                "Location",
                format!(
                    "{}/blobs/{org}/{name}/{file}?signature=for-this-file",
                    state.cdn
                ),
            ))
            .finish();
    }
    // For HEAD, actix sends the headers (Content-Length included), no body.
    HttpResponse::Ok()
        .insert_header(("X-Repo-Commit", commit))
        .insert_header(("ETag", format!("\"{etag}\"")))
        .body(bytes)
}

async fn api_model(
    state: web::Data<State>,
    request: HttpRequest,
    path: web::Path<(String, String, String)>,
) -> HttpResponse {
    state.record("hub", &request);
    let (org, name, _revision) = path.into_inner();
    let id = format!("{org}/{name}");
    let Some(repo) = state.repo(&request, &id) else {
        return refused();
    };
    let mut files: Vec<String> = std::fs::read_dir(&repo.dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|entry| entry.file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    let siblings: Vec<_> = files
        .iter()
        .map(|file| serde_json::json!({"rfilename": file}))
        .collect();
    HttpResponse::Ok().json(serde_json::json!({
        "id": id, "modelId": id, "sha": commit_of(&id), "private": repo.token.is_some(),
        "siblings": siblings
    }))
}

async fn cdn(
    state: web::Data<State>,
    request: HttpRequest,
    path: web::Path<(String, String, String)>,
) -> HttpResponse {
    state.record("cdn", &request);
    let (org, name, file) = path.into_inner();
    let Some(repo) = state.repos.get(&format!("{org}/{name}")) else {
        return HttpResponse::NotFound().finish();
    };
    if file.contains("..") || file.starts_with('.') {
        return HttpResponse::BadRequest().finish();
    }
    match std::fs::read(repo.dir.join(file)) {
        Ok(bytes) => HttpResponse::Ok().body(bytes),
        Err(_) => HttpResponse::NotFound().finish(),
    }
}

fn serve<F>(state: web::Data<State>, routes: F) -> (String, ServerHandle)
where
    F: Fn(&mut web::ServiceConfig) + Send + Clone + 'static,
{
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let server = HttpServer::new(move || {
                App::new().app_data(state.clone()).configure(routes.clone())
            })
            .workers(1)
            .bind(("127.0.0.1", 0))
            .expect("binds");
            let address = format!("http://{}", server.addrs()[0]);
            let server = server.run();
            tx.send((address, server.handle())).expect("test waits");
            let _ = server.await;
        })
    });
    rx.recv_timeout(Duration::from_secs(30)).expect("starts")
}

/// Starts the CDN, then the hub that redirects to it.
pub fn start(repos: HashMap<String, Repo>) -> Hub {
    let log = Arc::new(Mutex::new(Vec::new()));
    let cdn_state = web::Data::new(State {
        repos: repos.clone(),
        cdn: String::new(),
        log: log.clone(),
    });
    let (cdn_address, cdn_handle) = serve(cdn_state, |config| {
        config.route("/blobs/{org}/{name}/{file}", web::get().to(cdn));
    });
    let hub_state = web::Data::new(State {
        repos,
        cdn: cdn_address,
        log: log.clone(),
    });
    let (endpoint, hub_handle) = serve(hub_state, |config| {
        config
            .route(
                "/{org}/{name}/resolve/{revision}/{file:.*}",
                web::route()
                    .guard(
                        actix_web::guard::Any(actix_web::guard::Get()).or(actix_web::guard::Head()),
                    )
                    .to(resolve),
            )
            .route(
                "/api/models/{org}/{name}/revision/{revision}",
                web::get().to(api_model),
            );
    });
    Hub {
        endpoint,
        log,
        handles: vec![hub_handle, cdn_handle],
    }
}
