//! The HTTP client of the control plane: reqwest with connect and read timeouts and a user
//! agent, the bearer token, the API's error body mapped to `we`'s errors, and NDJSON streams.

use std::time::Duration;

use codeb_api::{ErrorBody, codes};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::config::ServerUrl;
use crate::exit::WeError;

pub const USER_AGENT: &str = concat!("we/", env!("CARGO_PKG_VERSION"));
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// No byte for this long on an open response: the connection is given up (a stream is then
/// reconnected). Streams the server keeps open send lines at least this often.
const READ_TIMEOUT: Duration = Duration::from_secs(90);
/// Whole-request limit of ordinary (non-streaming) requests.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// A response body larger than this is refused (a list of a few thousand rows is far less).
const MAX_BODY: usize = 32 * 1024 * 1024;
/// A single NDJSON line longer than this is refused.
const MAX_LINE: usize = 1024 * 1024;

pub struct Api {
    http: reqwest::Client,
    server: ServerUrl,
    token: codeb_api::Token,
}

/// A response's status with its decoded body.
pub struct Answer<T> {
    pub status: StatusCode,
    pub body: T,
}

impl Api {
    pub fn new(server: ServerUrl, token: codeb_api::Token) -> Result<Self, WeError> {
        let http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            // The token is for this server only: never follow a redirect elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| WeError::Io(format!("cannot set up the HTTP client: {e}")))?;
        Ok(Self {
            http,
            server,
            token,
        })
    }

    pub fn server(&self) -> &ServerUrl {
        &self.server
    }

    /// `path` is a full API path (`codeb_api::paths`).
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.as_str())
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.url(path))
            .bearer_auth(self.token.expose())
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, WeError> {
        let resp = req.send().await.map_err(|e| self.transport(&e))?;
        if resp.status().is_success() {
            Ok(resp)
        } else {
            Err(self.error_of(resp).await)
        }
    }

    fn transport(&self, e: &reqwest::Error) -> WeError {
        let mut reason = e.to_string();
        let mut src = std::error::Error::source(e);
        while let Some(s) = src {
            reason.push_str(": ");
            reason.push_str(&s.to_string());
            src = s.source();
        }
        if e.is_timeout() {
            reason = format!("timed out ({reason})");
        }
        WeError::Unreachable {
            server: self.server.to_string(),
            reason,
        }
    }

    async fn error_of(&self, resp: reqwest::Response) -> WeError {
        let status = resp.status();
        let text = read_limited(resp, 64 * 1024).await.unwrap_or_default();
        let (code, message) = match serde_json::from_slice::<ErrorBody>(&text) {
            Ok(b) => (b.error.code, b.error.message),
            Err(_) => (
                String::new(),
                format!(
                    "{status} from {} (not a codeb API answer: is this the control plane?)",
                    self.server
                ),
            ),
        };
        error_for(status, &code, message)
    }

    pub async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T, WeError> {
        let req = self
            .request(Method::GET, path)
            .query(query)
            .timeout(REQUEST_TIMEOUT);
        let resp = self.send(req).await?;
        self.decode(resp).await.map(|a| a.body)
    }

    /// A JSON request; the answer's status tells e.g. 200 (a plan) from 202 (a job).
    pub async fn send_json<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<Answer<T>, WeError> {
        let mut req = self.request(method, path).timeout(REQUEST_TIMEOUT);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = self.send(req).await?;
        self.decode(resp).await
    }

    /// A JSON request that may take up to `timeout` (host adds deploy every project there).
    pub async fn send_json_slow<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        timeout: Duration,
    ) -> Result<T, WeError> {
        let mut req = self.request(method, path).timeout(timeout);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = self.send(req).await?;
        self.decode(resp).await.map(|a| a.body)
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, WeError> {
        self.send_json(Method::POST, path, Some(body))
            .await
            .map(|a| a.body)
    }

    async fn decode<T: DeserializeOwned>(
        &self,
        resp: reqwest::Response,
    ) -> Result<Answer<T>, WeError> {
        let status = resp.status();
        let bytes = read_limited(resp, MAX_BODY)
            .await
            .map_err(|e| self.transport(&e))?;
        let body = serde_json::from_slice(&bytes).map_err(|e| {
            WeError::Server(format!(
                "{} answered {status} with a body this `we` cannot read ({e}); is `we` as new as the server?",
                self.server
            ))
        })?;
        Ok(Answer { status, body })
    }

    /// POSTs `body` and reads the NDJSON answer (no whole-request limit: the server sends a
    /// line at least every 20 s).
    pub async fn post_stream<B: Serialize>(&self, path: &str, body: &B) -> Result<Lines, WeError> {
        let req = self.request(Method::POST, path).json(body);
        let resp = self.send(req).await?;
        Ok(Lines {
            resp,
            buf: Vec::new(),
            done: false,
        })
    }

    /// Opens an NDJSON stream.
    pub async fn stream(&self, path: &str, query: &[(&str, String)]) -> Result<Lines, WeError> {
        let req = self.request(Method::GET, path).query(query);
        let resp = self.send(req).await?;
        Ok(Lines {
            resp,
            buf: Vec::new(),
            done: false,
        })
    }
}

async fn read_limited(mut resp: reqwest::Response, max: usize) -> Result<Vec<u8>, reqwest::Error> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        if out.len() + chunk.len() > max {
            break;
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// The error for a non-success answer (`code` from the API's error body, or empty).
pub fn error_for(status: StatusCode, code: &str, message: String) -> WeError {
    match status.as_u16() {
        401 if code == codes::TOKEN_EXPIRED => WeError::Unauthorized(format!(
            "the token has expired ({message}); ask an admin for a new one and run `we login`"
        )),
        401 => WeError::Unauthorized(format!(
            "the server does not accept this token ({message}); run `we login` with a valid token"
        )),
        403 => WeError::Forbidden(message),
        504 if code == codes::LOCK_TIMEOUT => WeError::Failed(message),
        400..=499 => WeError::Usage(message),
        _ => WeError::Server(format!("the server failed ({status}): {message}")),
    }
}

/// The lines of an NDJSON response, one decoded value each.
pub struct Lines {
    resp: reqwest::Response,
    buf: Vec<u8>,
    done: bool,
}

/// Why a stream stopped giving lines.
#[derive(Debug)]
pub enum StreamEnd {
    /// The server closed the response normally.
    Closed,
    /// The connection broke (or timed out): reconnect.
    Broken(String),
}

impl Lines {
    /// The next line as `T`; `Ok(None)` and the reason when the stream ended.
    pub async fn next<T: DeserializeOwned>(&mut self) -> Result<Result<T, StreamEnd>, WeError> {
        loop {
            if let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                let line = &line[..line.len() - 1];
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return serde_json::from_slice(line).map(Ok).map_err(|e| {
                    WeError::Server(format!(
                        "the server sent a stream line this `we` cannot read ({e})"
                    ))
                });
            }
            if self.done {
                return Ok(Err(StreamEnd::Closed));
            }
            match self.resp.chunk().await {
                Ok(Some(c)) => {
                    self.buf.extend_from_slice(&c);
                    if self.buf.len() > MAX_LINE {
                        return Err(WeError::Server(
                            "the server sent a stream line longer than 1 MiB".into(),
                        ));
                    }
                }
                Ok(None) => self.done = true,
                Err(e) => return Ok(Err(StreamEnd::Broken(e.to_string()))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_exit_codes() {
        use crate::exit::Exit;
        let e = |s: u16, code: &str| {
            error_for(StatusCode::from_u16(s).expect("status"), code, "m".into()).exit()
        };
        assert_eq!(e(401, codes::UNAUTHORIZED), Exit::NotLoggedIn);
        assert_eq!(e(401, codes::TOKEN_EXPIRED), Exit::NotLoggedIn);
        assert_eq!(e(403, codes::FORBIDDEN), Exit::Forbidden);
        assert_eq!(e(400, codes::INVALID_NAME), Exit::Usage);
        assert_eq!(e(404, codes::NOT_FOUND), Exit::Usage);
        assert_eq!(e(504, codes::LOCK_TIMEOUT), Exit::Wrong);
        assert_eq!(e(500, codes::INTERNAL), Exit::Usage);
        let expired = error_for(StatusCode::UNAUTHORIZED, codes::TOKEN_EXPIRED, "x".into());
        assert!(expired.to_string().contains("expired"), "{expired}");
    }
}
