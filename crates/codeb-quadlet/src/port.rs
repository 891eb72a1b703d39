//! `PublishPort=` values, split into their parts for callers that need to reason about host
//! ports (conflict checks, proxies). The value handed to podman is always the original text.

/// One `PublishPort=` value: `[ip:][hostPort:]containerPort[/protocol]`, where the IP may be an
/// IPv6 address in brackets and ports may be ranges (`8000-8010`) or systemd variables
/// (`${PORT}`), which are kept as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortMapping {
    /// The value exactly as given (what `--publish` receives).
    pub raw: String,
    /// Host address to bind, without brackets; `None` when not given or empty.
    pub host_ip: Option<String>,
    /// Host port or range; `None` when podman picks one.
    pub host_port: Option<String>,
    /// Container port or range.
    pub container_port: String,
    /// `tcp`, `udp` or `sctp` when given.
    pub protocol: Option<String>,
}

impl PortMapping {
    /// Splits a `PublishPort=` value. The message of the error says what is wrong.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let value = raw.trim();
        let (spec, protocol) = match value.rsplit_once('/') {
            Some((spec, proto)) => {
                if !matches!(proto, "tcp" | "udp" | "sctp") {
                    return Err(format!(
                        "unknown protocol “{proto}”; use tcp, udp or sctp after the '/'"
                    ));
                }
                (spec, Some(proto.to_string()))
            }
            None => (value, None),
        };

        let (host_ip, ports) = if let Some(rest) = spec.strip_prefix('[') {
            let Some((ip, after)) = rest.split_once(']') else {
                return Err("the IPv6 address has no closing ']'".into());
            };
            let Some(ports) = after.strip_prefix(':') else {
                return Err("expected ':' after the bracketed IPv6 address".into());
            };
            (Some(ip), ports.split(':').collect::<Vec<_>>())
        } else {
            let parts: Vec<&str> = spec.split(':').collect();
            match parts.len() {
                1 | 2 => (None, parts),
                3 => (parts.first().copied(), parts[1..].to_vec()),
                _ => {
                    return Err(
                        "too many ':'; write IPv6 addresses in brackets, e.g. [::1]:8080:80".into(),
                    );
                }
            }
        };

        let (host_port, container_port) = match ports.as_slice() {
            [container] => (None, *container),
            [host, container] => (Some(*host), *container),
            _ => return Err("expected [ip:][hostPort:]containerPort".into()),
        };
        if container_port.is_empty() {
            return Err("the container port is missing".into());
        }
        let non_empty = |s: Option<&str>| s.filter(|s| !s.is_empty()).map(str::to_string);
        Ok(Self {
            raw: raw.to_string(),
            host_ip: non_empty(host_ip),
            host_port: non_empty(host_port),
            container_port: container_port.to_string(),
            protocol,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(raw: &str) -> (Option<String>, Option<String>, String, Option<String>) {
        let p = PortMapping::parse(raw).expect("valid port");
        (p.host_ip, p.host_port, p.container_port, p.protocol)
    }

    fn s(v: &str) -> Option<String> {
        Some(v.to_string())
    }

    #[test]
    fn forms() {
        assert_eq!(
            parts("127.0.0.1:4001:3000"),
            (s("127.0.0.1"), s("4001"), "3000".into(), None)
        );
        assert_eq!(parts("80:96"), (None, s("80"), "96".into(), None));
        assert_eq!(parts("97"), (None, None, "97".into(), None));
        assert_eq!(parts("::95"), (None, None, "95".into(), None));
        assert_eq!(
            parts("127.0.0.1::93/udp"),
            (s("127.0.0.1"), None, "93".into(), s("udp"))
        );
        assert_eq!(
            parts("[2001:db8::42]:1234:1234/tcp"),
            (s("2001:db8::42"), s("1234"), "1234".into(), s("tcp"))
        );
        assert_eq!(parts("[::1]::93"), (s("::1"), None, "93".into(), None));
        assert_eq!(
            parts("${PORT}:${PORT}"),
            (None, s("${PORT}"), "${PORT}".into(), None)
        );
    }

    #[test]
    fn errors() {
        assert!(PortMapping::parse("1:2:3:4").is_err());
        assert!(PortMapping::parse("80:").is_err());
        assert!(PortMapping::parse("80/icmp").is_err());
        assert!(PortMapping::parse("[::1:80").is_err());
    }
}
