//! Turns a transport error (reqwest's, or any `std::error::Error` chain)
//! into exactly one [`Failure`].
//!
//! Classification walks the whole `source()` chain, checking typed
//! `std::io::Error` kinds first and falling back to the messages of the
//! resolver, hyper and rustls, which are not reachable as public types.

use std::error::Error;
use std::io;
use std::time::Duration;

use reqwest::Url;

use crate::Failure;

/// Facts the caller may already know about the error (e.g. from
/// `reqwest::Error::is_timeout` / `is_dns`), which take precedence over
/// chain inspection.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Hints {
    pub timeout: bool,
    pub dns: bool,
}

impl Hints {
    pub(crate) fn from_reqwest(err: &reqwest::Error) -> Self {
        Self {
            timeout: err.is_timeout(),
            dns: err.is_dns(),
        }
    }
}

/// Classifies `err` (observed while probing `url` with `timeout` in force).
pub(crate) fn classify(
    err: &(dyn Error + 'static),
    hints: Hints,
    url: &Url,
    timeout: Duration,
) -> Failure {
    let chain = chain(err);
    let io_kinds: Vec<io::ErrorKind> = chain
        .iter()
        .filter_map(|e| e.downcast_ref::<io::Error>().map(io::Error::kind))
        .collect();
    let messages: Vec<String> = chain.iter().map(|e| e.to_string()).collect();
    let lower: Vec<String> = messages.iter().map(|m| m.to_lowercase()).collect();
    let any_msg = |needles: &[&str]| {
        lower
            .iter()
            .any(|m| needles.iter().any(|needle| m.contains(needle)))
    };

    if hints.timeout
        || io_kinds.contains(&io::ErrorKind::TimedOut)
        || any_msg(&["timed out", "deadline has elapsed"])
    {
        return Failure::Timeout { after: timeout };
    }

    if io_kinds.contains(&io::ErrorKind::ConnectionRefused) || any_msg(&["connection refused"]) {
        return Failure::ConnectionRefused {
            addr: host_port(url),
        };
    }

    if hints.dns
        || any_msg(&[
            "dns error",
            "error resolving dns",
            "failed to lookup address",
            "name or service not known",
            "no such host",
            "nodename nor servname",
            "temporary failure in name resolution",
            "no record found",
        ])
    {
        return Failure::Dns {
            host: url.host_str().unwrap_or_default().to_owned(),
            detail: innermost(&messages),
        };
    }

    if any_msg(&[
        "certificate",
        "tls",
        "ssl",
        "handshake",
        "corrupt message",
        "peer is incompatible",
        "peer misbehaved",
        "received fatal alert",
    ]) {
        return Failure::Tls {
            detail: join(&messages),
        };
    }

    Failure::Transport {
        detail: join(&messages),
    }
}

fn chain<'a>(err: &'a (dyn Error + 'static)) -> Vec<&'a (dyn Error + 'static)> {
    let mut out = Vec::new();
    let mut next = Some(err);
    // Bounded: a cyclic or absurdly deep chain must not hang a probe.
    while let Some(e) = next {
        if out.len() >= 32 {
            break;
        }
        out.push(e);
        next = e.source();
    }
    out
}

/// `host:port` of `url` (port defaulted from the scheme).
pub(crate) fn host_port(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port_or_known_default() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    }
}

/// The most specific message: the last one in the chain.
fn innermost(messages: &[String]) -> String {
    messages.last().cloned().unwrap_or_default()
}

/// Joins the chain's messages with `: `, dropping reqwest's generic
/// top-level wrapper (which repeats the URL) when there is anything below it,
/// and dropping repeats.
fn join(messages: &[String]) -> String {
    let skip = usize::from(
        messages.len() > 1
            && messages.first().is_some_and(|m| {
                m.starts_with("error sending request") || m.starts_with("error decoding")
            }),
    );
    let rest = &messages[skip..];
    let mut parts: Vec<&str> = Vec::new();
    for (i, m) in rest.iter().enumerate() {
        let m = m.trim();
        // hyper-util's "client error (Connect)" only says which layer failed.
        let generic = m.starts_with("client error (") && i + 1 < rest.len();
        if !generic && !m.is_empty() && !parts.iter().any(|p| p.contains(m)) {
            parts.push(m);
        }
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use std::fmt;

    use super::*;

    /// A message with an optional source, to build chains like hyper's.
    #[derive(Debug)]
    struct Layer {
        msg: &'static str,
        source: Option<Box<dyn Error + Send + Sync + 'static>>,
    }

    impl fmt::Display for Layer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.msg)
        }
    }

    impl Error for Layer {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.source.as_deref().map(|e| e as &(dyn Error + 'static))
        }
    }

    fn layers(msgs: &[&'static str], root: Box<dyn Error + Send + Sync>) -> Layer {
        let mut err = root;
        for msg in msgs.iter().rev() {
            err = Box::new(Layer {
                msg,
                source: Some(err),
            });
        }
        match err.downcast::<Layer>() {
            Ok(layer) => *layer,
            Err(other) => Layer {
                msg: "wrapper",
                source: Some(other),
            },
        }
    }

    fn url() -> Url {
        Url::parse("http://app.example:3000/api/health").expect("static URL")
    }

    const T: Duration = Duration::from_millis(1500);

    #[test]
    fn refused_by_io_kind_deep_in_chain() {
        let e = layers(
            &[
                "error sending request for url (…)",
                "client error (Connect)",
                "tcp connect error",
            ],
            Box::new(io::Error::from(io::ErrorKind::ConnectionRefused)),
        );
        let f = classify(&e, Hints::default(), &url(), T);
        assert_eq!(
            f,
            Failure::ConnectionRefused {
                addr: "app.example:3000".into()
            }
        );
        assert!(f.to_string().contains("connection refused"), "{f}");
        assert!(f.to_string().contains("app.example:3000"), "{f}");
    }

    #[test]
    fn dns_by_message_or_hint() {
        let e = layers(
            &[
                "error sending request",
                "client error (Connect)",
                "dns error",
            ],
            Box::new(io::Error::other(
                "failed to lookup address information: Name or service not known",
            )),
        );
        let f = classify(&e, Hints::default(), &url(), T);
        assert!(
            matches!(&f, Failure::Dns { host, .. } if host == "app.example"),
            "{f:?}"
        );
        assert!(f.to_string().contains("Name or service not known"), "{f}");

        let e = layers(&["opaque"], Box::new(io::Error::other("??")));
        let hints = Hints {
            dns: true,
            ..Hints::default()
        };
        assert!(matches!(
            classify(&e, hints, &url(), T),
            Failure::Dns { .. }
        ));
    }

    #[test]
    fn timeout_by_hint_kind_or_message() {
        let e = layers(&["x"], Box::new(io::Error::from(io::ErrorKind::TimedOut)));
        assert_eq!(
            classify(&e, Hints::default(), &url(), T),
            Failure::Timeout { after: T }
        );
        let e = layers(&["x"], Box::new(io::Error::other("operation timed out")));
        assert_eq!(
            classify(&e, Hints::default(), &url(), T),
            Failure::Timeout { after: T }
        );
        let e = layers(&["x"], Box::new(io::Error::other("y")));
        let hints = Hints {
            timeout: true,
            ..Hints::default()
        };
        assert_eq!(
            classify(&e, hints, &url(), T),
            Failure::Timeout { after: T }
        );
    }

    #[test]
    fn tls_by_message() {
        let e = layers(
            &[
                "error sending request for url (https://x/)",
                "client error (Connect)",
            ],
            Box::new(io::Error::new(
                io::ErrorKind::InvalidData,
                "invalid peer certificate: UnknownIssuer",
            )),
        );
        let f = classify(&e, Hints::default(), &url(), T);
        assert_eq!(
            f,
            Failure::Tls {
                detail: "invalid peer certificate: UnknownIssuer".into()
            }
        );
    }

    #[test]
    fn anything_else_is_transport_with_the_chain() {
        let e = layers(
            &[
                "error sending request for url (http://x/)",
                "connection error",
            ],
            Box::new(io::Error::from(io::ErrorKind::ConnectionReset)),
        );
        let f = classify(&e, Hints::default(), &url(), T);
        let Failure::Transport { detail } = &f else {
            panic!("expected transport, got {f:?}");
        };
        assert!(detail.starts_with("connection error: "), "{detail}");
        assert!(!detail.contains("http://x/"), "{detail}");
    }
}
