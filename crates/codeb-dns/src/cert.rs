//! The certificate a TLS listener serves for a name: a handshake with that name as SNI
//! (through reqwest, to a given address), then the leaf's expiry read with `x509-parser`.
//! Nothing is trusted or sent beyond the handshake and one `HEAD /`: the chain is not
//! verified here (this only reports what is served).

use std::net::SocketAddr;
use std::time::Duration;

/// The expiry (Unix milliseconds) of the certificate `addr` serves for `name`, after
/// checking that it names `name`.
pub async fn served_expiry(addr: &str, name: &str) -> Result<i64, String> {
    let sock: SocketAddr = match addr.parse() {
        Ok(s) => s,
        Err(_) => tokio_free_resolve(addr)?,
    };
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(5))
        .tls_danger_accept_invalid_certs(true)
        .tls_info(true)
        .resolve(name, sock)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
    let resp = client
        .head(format!("https://{name}:{}/", sock.port()))
        .send()
        .await
        .map_err(|e| {
            let mut s = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(x) = src {
                s.push_str(": ");
                s.push_str(&x.to_string());
                src = x.source();
            }
            format!("TLS handshake with {name} at {sock} failed ({s})")
        })?;
    let der = resp
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|t| t.peer_certificate())
        .ok_or_else(|| format!("{sock} served no certificate for {name}"))?
        .to_vec();
    expiry_of(&der, name)
}

fn tokio_free_resolve(addr: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    addr.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| format!("https_probe {addr:?} is not host:port"))
}

/// The expiry of a DER certificate that names `name` (a SAN DNS entry).
pub fn expiry_of(der: &[u8], name: &str) -> Result<i64, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("the served certificate is not readable X.509: {e}"))?;
    let names: Vec<String> = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|g| match g {
                    x509_parser::extensions::GeneralName::DNSName(d) => {
                        Some(d.to_ascii_lowercase())
                    }
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    if !names.iter().any(|n| n == name) {
        return Err(format!(
            "the served certificate is for {} and not for {name}",
            if names.is_empty() {
                "no DNS name".to_owned()
            } else {
                names.join(", ")
            }
        ));
    }
    Ok(cert.validity().not_after.timestamp() * 1000)
}
