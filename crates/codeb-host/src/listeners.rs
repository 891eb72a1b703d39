//! Which TCP ports are listening on this host, and which process holds each, read from the
//! kernel's tables: the sock_diag netlink interface asked for LISTEN sockets only (what `ss`
//! uses; the kernel filters, so thousands of connections in TIME_WAIT cost nothing), with
//! `/proc/net/tcp{,6}` as the fallback, and `/proc/<pid>/fd` for holders. No `ss`, no `lsof`.

use codeb_core::manifest::{Assignment, PortUse};
use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::path::Path;

const TCP_LISTEN: &str = "0A";

/// A process holding a listening socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    pub comm: String,
    /// For a container's `conmon` (podman's monitor, which holds published ports): the name
    /// of the container.
    pub container: Option<String>,
}

impl Holder {
    pub fn describe(&self) -> String {
        match &self.container {
            Some(c) => format!("container `{c}` ({} pid {})", self.comm, self.pid),
            None => format!("`{}` pid {}", self.comm, self.pid),
        }
    }
}

/// A snapshot of the host's listening TCP ports.
#[derive(Debug, Clone, Default)]
pub struct HostPorts {
    /// Port -> socket inodes listening on it (IPv4 and IPv6, any address).
    listening: HashMap<u16, Vec<u64>>,
    proc_root: std::path::PathBuf,
}

impl HostPorts {
    /// Reads the current network namespace's listening sockets.
    pub fn read() -> io::Result<Self> {
        match netlink_listeners() {
            Ok(found) => {
                let mut listening: HashMap<u16, Vec<u64>> = HashMap::new();
                for (port, inode) in found {
                    listening.entry(port).or_default().push(inode);
                }
                Ok(Self {
                    listening,
                    proc_root: Path::new("/proc").to_owned(),
                })
            }
            Err(_) => Self::read_from(Path::new("/proc")),
        }
    }

    pub fn read_from(proc_root: &Path) -> io::Result<Self> {
        let mut listening: HashMap<u16, Vec<u64>> = HashMap::new();
        let mut found_any = false;
        for table in ["net/tcp", "net/tcp6"] {
            match fs::read_to_string(proc_root.join(table)) {
                Ok(text) => {
                    found_any = true;
                    for (port, inode) in parse_table(&text) {
                        listening.entry(port).or_default().push(inode);
                    }
                }
                // tcp6 is absent when IPv6 is disabled.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        if !found_any {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "no TCP listener table under {}; pass --no-host-check to skip the host check",
                    proc_root.display()
                ),
            ));
        }
        Ok(Self {
            listening,
            proc_root: proc_root.to_owned(),
        })
    }

    pub fn is_listening(&self, port: u16) -> bool {
        self.listening.contains_key(&port)
    }

    pub fn ports(&self) -> HashSet<u16> {
        self.listening.keys().copied().collect()
    }

    /// The process holding a listener on `port`, when this user may see it.
    pub fn holder(&self, port: u16) -> Option<Holder> {
        let inodes = self.listening.get(&port)?;
        let wanted: HashSet<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
        for entry in fs::read_dir(&self.proc_root).ok()?.flatten() {
            let name = entry.file_name();
            let Some(pid) = name.to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(fds) = fs::read_dir(entry.path().join("fd")) else {
                continue;
            };
            let holds = fds.flatten().any(|fd| {
                fs::read_link(fd.path())
                    .is_ok_and(|t| t.to_str().is_some_and(|t| wanted.contains(t)))
            });
            if holds {
                let comm = fs::read_to_string(entry.path().join("comm"))
                    .map(|c| c.trim().to_owned())
                    .unwrap_or_default();
                // conmon holds a running container's published ports; `podman run` itself
                // holds them while it sets the container up.
                let container = if comm == "conmon" || comm == "podman" {
                    fs::read(entry.path().join("cmdline"))
                        .ok()
                        .and_then(|c| container_name(&c, comm == "conmon"))
                } else {
                    None
                };
                return Some(Holder {
                    pid,
                    comm,
                    container,
                });
            }
        }
        None
    }

    /// What the host says about an assignment's port: free, its own deployment (a container
    /// of the same target, or the Caddy front that serves it), or busy with something else.
    pub fn use_of(&self, a: &Assignment) -> PortUse {
        if !self.is_listening(a.port) {
            return PortUse::Free;
        }
        let holder = self.holder(a.port);
        let own = holder.as_ref().is_some_and(|h| {
            h.comm == "caddy"
                || a.owner
                    .target()
                    .is_some_and(|t| h.container.as_deref().is_some_and(|c| t.owns_container(c)))
        });
        if own {
            PortUse::Own
        } else {
            PortUse::Busy(match holder {
                Some(h) => h.describe(),
                None => "by a process this user cannot see; run as root to name it".into(),
            })
        }
    }
}

/// `(port, inode)` of every TCP LISTEN socket (IPv4 and IPv6), asked of the kernel through
/// NETLINK_SOCK_DIAG with a state filter.
fn netlink_listeners() -> io::Result<Vec<(u16, u64)>> {
    use netlink_packet_core::{
        NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
    };
    use netlink_packet_sock_diag::{
        SockDiagMessage,
        constants::{AF_INET, AF_INET6, IPPROTO_TCP},
        inet::{ExtensionFlags, InetRequest, SocketId, StateFlags},
    };
    use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_SOCK_DIAG};

    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("sock_diag: {what}"));
    let mut out = Vec::new();
    for (family, id) in [
        (AF_INET, SocketId::new_v4()),
        (AF_INET6, SocketId::new_v6()),
    ] {
        let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        let mut packet = NetlinkMessage::new(
            header,
            SockDiagMessage::InetRequest(InetRequest {
                family,
                protocol: IPPROTO_TCP,
                extensions: ExtensionFlags::empty(),
                states: StateFlags::LISTEN,
                socket_id: id,
            })
            .into(),
        );
        packet.finalize();
        let mut buf = vec![0; packet.buffer_len()];
        packet.serialize(&mut buf[..]);
        socket.send(&buf[..], 0)?;
        let mut rx = vec![0u8; 65536];
        'recv: loop {
            let size = socket.recv(&mut &mut rx[..], 0)?;
            if size == 0 {
                break;
            }
            let mut offset = 0;
            while offset < size {
                let msg = <NetlinkMessage<SockDiagMessage>>::deserialize(&rx[offset..size])
                    .map_err(|e| bad(&e.to_string()))?;
                let len = msg.header.length as usize;
                match msg.payload {
                    NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) => {
                        out.push((r.header.socket_id.source_port, u64::from(r.header.inode)));
                    }
                    NetlinkPayload::Done(_) => break 'recv,
                    NetlinkPayload::Error(e) => return Err(bad(&format!("{e:?}"))),
                    _ => {}
                }
                if len == 0 {
                    break;
                }
                offset += len;
            }
        }
    }
    Ok(out)
}

/// `(port, inode)` of every LISTEN socket in a `/proc/net/tcp{,6}` table.
fn parse_table(text: &str) -> impl Iterator<Item = (u16, u64)> + '_ {
    text.lines().skip(1).filter_map(|line| {
        let mut cols = line.split_whitespace();
        let local = cols.nth(1)?;
        let state = cols.nth(1)?;
        if state != TCP_LISTEN {
            return None;
        }
        let port = u16::from_str_radix(local.rsplit(':').next()?, 16).ok()?;
        // After `st`: tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
        let inode = cols.nth(5)?.parse::<u64>().ok()?;
        Some((port, inode))
    })
}

/// The container name from conmon's (`-n NAME`, `--name NAME`) or podman's (`--name NAME`,
/// `--name=NAME`) command line.
fn container_name(cmdline: &[u8], conmon: bool) -> Option<String> {
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    args.iter().enumerate().find_map(|(i, a)| {
        let next = || {
            args.get(i + 1)
                .and_then(|v| String::from_utf8(v.to_vec()).ok())
        };
        match *a {
            b"--name" => next(),
            b"-n" if conmon => next(),
            _ => a
                .strip_prefix(b"--name=")
                .and_then(|v| String::from_utf8(v.to_vec()).ok()),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    const SAMPLE: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:0FA1 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 100 0 0 10 0
   1: 0100007F:0FA2 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 12346 1 0000000000000000 100 0 0 10 0
";

    #[test]
    fn parses_only_listeners() {
        let got: Vec<_> = parse_table(SAMPLE).collect();
        assert_eq!(got, vec![(4001, 12345)]);
    }

    #[test]
    fn conmon_name() {
        let cmd =
            b"/usr/bin/conmon\0--api-version\x001\0-c\0abc\0-n\0myapp-production-blue\0-r\0runc\0";
        assert_eq!(
            container_name(cmd, true).as_deref(),
            Some("myapp-production-blue")
        );
        let run = b"podman\0run\0-d\0--replace\0--name\0app-pr-7-blue\0--publish\x00127.0.0.1:15000:3000\0img\0";
        assert_eq!(container_name(run, false).as_deref(), Some("app-pr-7-blue"));
        assert_eq!(
            container_name(b"podman\0run\0--name=x-blue\0img\0", false).as_deref(),
            Some("x-blue")
        );
        assert_eq!(container_name(b"podman\0run\0-n\0x\0", false), None);
    }

    #[test]
    fn netlink_and_proc_agree() {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let nl: HashSet<u16> = netlink_listeners()
            .expect("sock_diag works here")
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        let proc = HostPorts::read_from(Path::new("/proc"))
            .expect("proc")
            .ports();
        assert!(
            nl.contains(&port) && proc.contains(&port),
            "both sources see the listener"
        );
        drop(l);
        let nl: HashSet<u16> = netlink_listeners()
            .expect("sock_diag")
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        assert!(!nl.contains(&port), "a closed listener is gone");
    }

    #[test]
    fn sees_a_real_listener_and_its_holder() {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let host = HostPorts::read().expect("read /proc");
        assert!(host.is_listening(port));
        let h = host.holder(port).expect("our own process is visible");
        assert_eq!(h.pid, std::process::id());
        drop(l);
        let host = HostPorts::read().expect("read /proc");
        assert!(!host.is_listening(port));
    }
}
