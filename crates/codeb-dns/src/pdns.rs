//! A client of PowerDNS Authoritative's HTTP API (`/api/v1/servers/<id>/zones/...`), the
//! parts `we domain` uses: read a zone's rrsets, replace or delete one rrset (`PATCH` with
//! `changetype: REPLACE` / `DELETE`, idempotent), list zones. Names are sent in canonical
//! form (trailing dot); the key goes in `X-API-Key` and never into an error or a log.

use std::time::Duration;

use codeb_secret::Secret;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The API of one PowerDNS server.
#[derive(Clone)]
pub struct Pdns {
    base: String,
    server_id: String,
    key: Secret,
    client: reqwest::Client,
}

/// What went wrong, with the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PdnsError {
    #[error(
        "PowerDNS API at {url} is not reachable ({reason}); start PowerDNS (systemctl start pdns) or fix pdns_url in the daemon's [domains] config"
    )]
    Unreachable { url: String, reason: String },
    #[error(
        "PowerDNS at {url} refused the API key (401); make the daemon's pdns_key_file hold the api-key of pdns.conf"
    )]
    Unauthorized { url: String },
    #[error(
        "zone {zone} does not exist in PowerDNS at {url}; create it (pdnsutil create-zone {zone}) or remove it from the daemon's [domains] zones"
    )]
    NoZone { url: String, zone: String },
    #[error(
        "PowerDNS at {url} rejected {what} ({status}): {message} (see what the zone holds: pdnsutil list-zone; remove a conflicting record such as a CNAME, or pick another name)"
    )]
    Rejected {
        url: String,
        what: String,
        status: u16,
        message: String,
    },
}

/// One rrset as PowerDNS returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RrSet {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub ttl: u32,
    #[serde(default)]
    pub records: Vec<Record>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub content: String,
    #[serde(default)]
    pub disabled: bool,
}

#[derive(Debug, Deserialize)]
struct Zone {
    #[serde(default)]
    rrsets: Vec<RrSet>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZoneSummary {
    pub name: String,
    #[serde(default)]
    pub serial: u64,
}

fn canonical(name: &str) -> String {
    if name.ends_with('.') {
        name.to_owned()
    } else {
        format!("{name}.")
    }
}

impl Pdns {
    /// `base` is the webserver's URL (`http://127.0.0.1:8081`), `server_id` usually
    /// `localhost`.
    pub fn new(base: &str, server_id: &str, key: Secret) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(15))
            .user_agent(concat!("codeb/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            server_id: server_id.to_owned(),
            key,
            client,
        })
    }

    pub fn url(&self) -> &str {
        &self.base
    }

    fn zone_url(&self, zone: &str) -> String {
        format!(
            "{}/api/v1/servers/{}/zones/{}",
            self.base,
            self.server_id,
            canonical(zone)
        )
    }

    async fn send(
        &self,
        req: reqwest::RequestBuilder,
        what: &str,
        zone: Option<&str>,
    ) -> Result<(u16, String), PdnsError> {
        let resp = req
            .header("X-API-Key", self.key.expose())
            .send()
            .await
            .map_err(|e| {
                let mut reason = e.to_string();
                let mut src = std::error::Error::source(&e);
                while let Some(s) = src {
                    reason.push_str(": ");
                    reason.push_str(&s.to_string());
                    src = s.source();
                }
                PdnsError::Unreachable {
                    url: self.base.clone(),
                    reason,
                }
            })?;
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        if (200..300).contains(&status) {
            return Ok((status, text));
        }
        let message = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
            .unwrap_or_else(|| text.trim().chars().take(300).collect());
        if status == 401 {
            return Err(PdnsError::Unauthorized {
                url: self.base.clone(),
            });
        }
        if let Some(z) = zone
            && (status == 404 || (status == 422 && message.contains("Could not find domain")))
        {
            return Err(PdnsError::NoZone {
                url: self.base.clone(),
                zone: canonical(z),
            });
        }
        Err(PdnsError::Rejected {
            url: self.base.clone(),
            what: what.to_owned(),
            status,
            message,
        })
    }

    /// The zones the server holds.
    pub async fn zones(&self) -> Result<Vec<ZoneSummary>, PdnsError> {
        let url = format!("{}/api/v1/servers/{}/zones", self.base, self.server_id);
        let (_, text) = self
            .send(self.client.get(url), "listing zones", None)
            .await?;
        serde_json::from_str(&text).map_err(|e| PdnsError::Rejected {
            url: self.base.clone(),
            what: "listing zones".into(),
            status: 200,
            message: format!("unreadable answer: {e}"),
        })
    }

    /// Every rrset of `zone`.
    pub async fn rrsets(&self, zone: &str) -> Result<Vec<RrSet>, PdnsError> {
        let (_, text) = self
            .send(
                self.client.get(self.zone_url(zone)),
                &format!("reading zone {}", canonical(zone)),
                Some(zone),
            )
            .await?;
        let z: Zone = serde_json::from_str(&text).map_err(|e| PdnsError::Rejected {
            url: self.base.clone(),
            what: format!("reading zone {}", canonical(zone)),
            status: 200,
            message: format!("unreadable answer: {e}"),
        })?;
        Ok(z.rrsets)
    }

    /// The enabled contents of `name`'s rrset of `kind` in `zone` (empty when there is none).
    pub async fn rrset(
        &self,
        zone: &str,
        name: &str,
        kind: &str,
    ) -> Result<Vec<String>, PdnsError> {
        let want = canonical(name);
        let mut out: Vec<String> = self
            .rrsets(zone)
            .await?
            .into_iter()
            .filter(|r| r.kind == kind && r.name.eq_ignore_ascii_case(&want))
            .flat_map(|r| r.records)
            .filter(|r| !r.disabled)
            .map(|r| r.content)
            .collect();
        out.sort();
        Ok(out)
    }

    /// Replaces `name`'s rrset of `kind` with `contents` (`changetype: REPLACE`); an empty
    /// list deletes it (`changetype: DELETE`). Both are idempotent.
    pub async fn replace(
        &self,
        zone: &str,
        name: &str,
        kind: &str,
        ttl: u32,
        contents: &[String],
    ) -> Result<(), PdnsError> {
        let rrset = if contents.is_empty() {
            json!({ "name": canonical(name), "type": kind, "changetype": "DELETE" })
        } else {
            json!({
                "name": canonical(name),
                "type": kind,
                "ttl": ttl,
                "changetype": "REPLACE",
                "records": contents.iter().map(|c| json!({ "content": c, "disabled": false })).collect::<Vec<_>>(),
            })
        };
        let verb = if contents.is_empty() {
            "deleting"
        } else {
            "writing"
        };
        self.send(
            self.client
                .patch(self.zone_url(zone))
                .json(&json!({ "rrsets": [rrset] })),
            &format!("{verb} the {kind} record of {}", canonical(name)),
            Some(zone),
        )
        .await
        .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn errors_never_carry_the_key() {
        let p = Pdns::new(
            "http://127.0.0.1:1",
            "localhost",
            Secret::new("very-secret-key"),
        )
        .expect("client");
        let e = p.zones().await.expect_err("nothing listens on port 1");
        assert!(matches!(e, PdnsError::Unreachable { .. }), "{e}");
        assert!(!e.to_string().contains("very-secret-key"));
        assert!(e.to_string().contains("pdns_url"), "{e}");
    }
}
