//! The hub's HTTP interface for one file, as huggingface_hub uses it
//! (`get_hf_file_metadata`, `http_get`): a `HEAD` of
//! `{endpoint}/{repo}/resolve/{revision}/{file}` says which commit the
//! revision is at (`X-Repo-Commit`), the file's ETag (`X-Linked-Etag` for
//! large files, else `ETag`), and, for large files, redirects to where the
//! bytes are, usually another host (a CDN with a signed URL); a `GET` of that
//! place downloads them. The token goes to the hub only: never to another
//! host, which is given a signed URL instead.

use std::fs::File;
use std::path::Path;
use std::time::Duration;

use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::header::{HeaderMap, ACCEPT_ENCODING, LOCATION};
use reqwest::{redirect, StatusCode, Url};

use super::hub_config::{HubConfig, Token};

/// What the hub says about a file it has.
#[derive(Debug, Clone)]
pub struct FileMeta {
    pub commit: String,
    pub etag: String,
    /// Where to download it from (the resolve URL, or where it redirected).
    pub location: Url,
    pub size: Option<u64>,
}

/// The hub's answer to a `HEAD`.
#[derive(Debug)]
pub enum Head {
    Found(FileMeta),
    /// The revision exists but has no such file (`commit` when the hub said
    /// which commit it looked in).
    NotFound {
        commit: Option<String>,
    },
}

/// Why the hub gave no usable answer.
#[derive(Debug)]
pub enum ApiError {
    /// No connection or no answer in time.
    Unreachable(String),
    /// 401 or 403: a private or gated repository (or none at all: the hub
    /// answers 401 for a repository that does not exist, so as not to tell).
    Denied {
        status: StatusCode,
        with_token: bool,
        message: Option<String>,
    },
    RevisionNotFound,
    /// Another status, or an answer without the headers a hub sends.
    Other(String),
}

impl ApiError {
    /// Whether a cached copy may answer instead, as huggingface_hub decides:
    /// everything but "this revision does not exist".
    pub fn cache_may_answer(&self) -> bool {
        !matches!(self, ApiError::RevisionNotFound)
    }
}

pub struct HubApi {
    endpoint: String,
    token: Option<Token>,
    /// Follows no redirects: where a file redirects to is part of the answer.
    head: Client,
    /// Follows redirects; reqwest drops `Authorization` on a redirect to
    /// another host (`redirect::remove_sensitive_headers`).
    get: Client,
    timeout: Duration,
}

/// Relative redirects (a renamed repository) followed before giving up.
const MAX_RELATIVE_REDIRECTS: usize = 5;

impl HubApi {
    pub fn new(config: &HubConfig) -> Result<HubApi, String> {
        let user_agent = concat!("nlp-serve/", env!("CARGO_PKG_VERSION"));
        let head = Client::builder()
            .connect_timeout(config.timeout)
            .timeout(config.timeout)
            .redirect(redirect::Policy::none())
            .user_agent(user_agent)
            .build()
            .map_err(|error| error.to_string())?;
        // No overall timeout: a large file may take long; connecting may not.
        let get = Client::builder()
            .connect_timeout(config.timeout)
            .timeout(None)
            .redirect(redirect::Policy::limited(10))
            .user_agent(user_agent)
            .build()
            .map_err(|error| error.to_string())?;
        Ok(HubApi {
            endpoint: config.endpoint.clone(),
            token: config.token.clone(),
            head,
            get,
            timeout: config.timeout,
        })
    }

    /// `{endpoint}/{repo}/resolve/{revision}/{file}`, quoted as huggingface_hub's
    /// `hf_hub_url` quotes it (the revision whole, the file path by segment).
    pub fn resolve_url(&self, repo: &str, revision: &str, file: &str) -> Result<Url, ApiError> {
        let url = format!(
            "{}/{repo}/resolve/{}/{}",
            self.endpoint,
            quote(revision, false),
            quote(file, true)
        );
        Url::parse(&url).map_err(|error| ApiError::Other(format!("bad URL {url}: {error}")))
    }

    pub fn head(&self, repo: &str, revision: &str, file: &str) -> Result<Head, ApiError> {
        let mut url = self.resolve_url(repo, revision, file)?;
        for _ in 0..=MAX_RELATIVE_REDIRECTS {
            let request = self
                .authorized(self.head.head(url.clone()), &url)
                .header(ACCEPT_ENCODING, "identity");
            let response = request.send().map_err(|error| self.failure(&error))?;
            let status = response.status();
            let headers = response.headers();
            if status.is_redirection() {
                let location = header(headers, LOCATION.as_str())
                    .ok_or_else(|| ApiError::Other(format!("HTTP {status} without Location")))?;
                match Url::parse(&location) {
                    Ok(location) => return file_meta(headers, location).map(Head::Found),
                    // A relative Location: the repository moved on the hub itself.
                    Err(_) => {
                        url = url.join(&location).map_err(|error| {
                            ApiError::Other(format!("bad redirect {location}: {error}"))
                        })?;
                        continue;
                    }
                }
            }
            if status.is_success() {
                return file_meta(headers, url).map(Head::Found);
            }
            let error_code = header(headers, "x-error-code");
            return match (status, error_code.as_deref()) {
                (StatusCode::NOT_FOUND, Some("RevisionNotFound")) => {
                    Err(ApiError::RevisionNotFound)
                }
                (StatusCode::NOT_FOUND, Some("RepoNotFound"))
                | (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN, _) => Err(ApiError::Denied {
                    status,
                    with_token: self.token.is_some(),
                    message: header(headers, "x-error-message"),
                }),
                (StatusCode::NOT_FOUND, _) => Ok(Head::NotFound {
                    commit: header(headers, "x-repo-commit").filter(|commit| safe_name(commit)),
                }),
                _ => Err(ApiError::Other(format!("HTTP {status} from {url}"))),
            };
        }
        Err(ApiError::Other(format!("too many redirects from {url}")))
    }

    /// Downloads `file` into `to`, returning the bytes written.
    pub fn download(&self, file: &FileMeta, to: &Path) -> Result<u64, ApiError> {
        let request = self.authorized(self.get.get(file.location.clone()), &file.location);
        let mut response: Response = request.send().map_err(|error| self.failure(&error))?;
        if !response.status().is_success() {
            return Err(ApiError::Other(format!(
                "HTTP {} from {}",
                response.status(),
                without_query(&file.location)
            )));
        }
        let mut out = File::create(to)
            .map_err(|error| ApiError::Other(format!("cannot write {}: {error}", to.display())))?;
        let bytes = response
            .copy_to(&mut out)
            .map_err(|error| ApiError::Other(format!("download interrupted: {error}")))?;
        out.sync_all()
            .map_err(|error| ApiError::Other(format!("cannot write {}: {error}", to.display())))?;
        match file.size {
            Some(size) if size != bytes => Err(ApiError::Other(format!(
                "download interrupted: {bytes} of {size} bytes"
            ))),
            _ => Ok(bytes),
        }
    }

    /// Adds the token when `url` is on the hub's own host (and port), as
    /// huggingface_hub does: another host gets a signed URL and no token.
    fn authorized(&self, request: RequestBuilder, url: &Url) -> RequestBuilder {
        match &self.token {
            Some(token) if self.is_hub(url) => request.bearer_auth(token.secret()),
            _ => request,
        }
    }

    fn is_hub(&self, url: &Url) -> bool {
        Url::parse(&self.endpoint).is_ok_and(|hub| {
            hub.host_str() == url.host_str()
                && hub.port_or_known_default() == url.port_or_known_default()
        })
    }

    fn failure(&self, error: &reqwest::Error) -> ApiError {
        let cause = innermost_cause(error);
        if error.is_connect() || error.is_timeout() {
            let cause = if error.is_timeout() {
                format!("no answer within {:?}", self.timeout)
            } else {
                cause
            };
            ApiError::Unreachable(cause)
        } else {
            ApiError::Other(cause)
        }
    }
}

fn file_meta(headers: &HeaderMap, location: Url) -> Result<FileMeta, ApiError> {
    let commit = header(headers, "x-repo-commit")
        .filter(|commit| safe_name(commit))
        .ok_or_else(|| {
            ApiError::Other("the answer has no X-Repo-Commit: not a Hugging Face hub?".into())
        })?;
    let etag = header(headers, "x-linked-etag")
        .or_else(|| header(headers, "etag"))
        .map(|etag| normalize_etag(&etag))
        .filter(|etag| safe_name(etag))
        .ok_or_else(|| ApiError::Other("the answer has no usable ETag".into()))?;
    let size = header(headers, "x-linked-size")
        .or_else(|| header(headers, "content-length"))
        .and_then(|size| size.parse().ok());
    Ok(FileMeta {
        commit,
        etag,
        location,
        size,
    })
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name)?.to_str().ok().map(str::to_string)
}

/// huggingface_hub's `_normalize_etag`: `W/"x"` and `"x"` become `x`.
fn normalize_etag(etag: &str) -> String {
    etag.trim_start_matches(['W', '/'])
        .trim_matches('"')
        .to_string()
}

/// A commit or ETag becomes a file name in the cache: nothing that could
/// climb out of it.
fn safe_name(name: &str) -> bool {
    !name.is_empty() && !name.starts_with('.') && !name.contains(['/', '\\'])
}

/// Python's `urllib.parse.quote`: unreserved characters stay, `/` too when
/// `keep_slash`, everything else is percent-encoded.
fn quote(text: &str, keep_slash: bool) -> String {
    let mut quoted = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) || (keep_slash && byte == b'/') {
            quoted.push(byte as char);
        } else {
            quoted.push_str(&format!("%{byte:02X}"));
        }
    }
    quoted
}

/// A signed CDN URL's query is a credential of its own: not for logs.
pub fn without_query(url: &Url) -> String {
    let mut url = url.clone();
    url.set_query(None);
    url.to_string()
}

/// reqwest's top-level message is generic; the root cause says what failed.
fn innermost_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_etags_as_huggingface_hub_writes_them() {
        assert_eq!(quote("refs/pr/1", false), "refs%2Fpr%2F1");
        assert_eq!(
            quote("sub dir/model.safetensors", true),
            "sub%20dir/model.safetensors"
        );
        assert_eq!(normalize_etag("W/\"abc\""), "abc");
        assert_eq!(normalize_etag("\"abc\""), "abc");
        assert!(!safe_name("../x"));
        assert!(!safe_name("a/b"));
        assert!(safe_name("0123abc"));
    }
}
