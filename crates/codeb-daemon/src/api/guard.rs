//! The bounds on an API request's body, applied before a handler (and before the request
//! takes one of the API's concurrency slots): a `Content-Length` over [`MAX_BODY`] is 413 at
//! once, without reading; a body is read whole, at most [`MAX_BODY`] of it, within
//! [`BODY_TIMEOUT`] (else 413 or 408). Without this a client announcing a huge body, or
//! sending one byte at a time, would hold a connection and a handler until it gave up.

use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use codeb_api::codes;
use http_body_util::BodyExt;

use super::ApiError;

/// The largest request body the API reads (no request of the contract comes near it).
pub const MAX_BODY: usize = 1 << 20;
/// How long a request body may take to arrive.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        codes::TOO_LARGE,
        format!("the request body is over {MAX_BODY} bytes; no API request is that large"),
    )
}

/// `req` with its body read into memory, or the error answer.
pub async fn buffered(req: Request, timeout: Duration) -> Result<Request, ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(too_large());
    }
    let (parts, body) = req.into_parts();
    let limited = http_body_util::Limited::new(body, MAX_BODY);
    match tokio::time::timeout(timeout, limited.collect()).await {
        Ok(Ok(c)) => Ok(Request::from_parts(parts, Body::from(c.to_bytes()))),
        Ok(Err(e))
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(too_large())
        }
        Ok(Err(e)) => Err(ApiError::bad(format!("cannot read the request body: {e}"))),
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            codes::BAD_REQUEST,
            format!(
                "the request body did not arrive within {}; send it whole",
                humantime::format_duration(timeout)
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Bytes;

    #[tokio::test]
    async fn an_announced_huge_body_is_refused_without_reading() {
        let (_tx, body) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
        let stream =
            futures_util::stream::unfold(
                body,
                |mut rx| async move { rx.recv().await.map(|i| (i, rx)) },
            );
        let req = Request::builder()
            .method("POST")
            .header(header::CONTENT_LENGTH, "500000000")
            .body(Body::from_stream(stream))
            .expect("request");
        // The body never arrives; the answer does not wait for it.
        let e = buffered(req, Duration::from_secs(3600))
            .await
            .expect_err("refused");
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[tokio::test]
    async fn a_slow_body_times_out_and_a_whole_one_passes() {
        let (_tx, body) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
        let stream =
            futures_util::stream::unfold(
                body,
                |mut rx| async move { rx.recv().await.map(|i| (i, rx)) },
            );
        let req = Request::builder()
            .method("POST")
            .header(header::CONTENT_LENGTH, "10")
            .body(Body::from_stream(stream))
            .expect("request");
        let e = buffered(req, Duration::from_millis(50))
            .await
            .expect_err("timed out");
        assert_eq!(e.status, StatusCode::REQUEST_TIMEOUT);
        let req = Request::builder()
            .method("POST")
            .body(Body::from("{}"))
            .expect("request");
        let ok = buffered(req, Duration::from_secs(1)).await.expect("read");
        let b = ok.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(&b[..], b"{}");
    }

    #[tokio::test]
    async fn an_unannounced_oversized_body_is_refused() {
        let req = Request::builder()
            .method("POST")
            .body(Body::from(vec![b'x'; MAX_BODY + 1]))
            .expect("request");
        let e = buffered(req, Duration::from_secs(5))
            .await
            .expect_err("refused");
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE);
    }
}
