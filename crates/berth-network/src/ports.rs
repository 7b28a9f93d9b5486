//! Host port reservation for published ports.
//!
//! Before a port is published, berth binds it (without listening) on the requested host
//! address and keeps the socket for as long as the container runs, as conmon does for podman:
//! a port another program uses fails right away with an error naming it, and no other program
//! can take it while the container holds it. The DNAT rules ([`crate::firewall`]) rewrite the
//! packets before they would ever reach this socket, and since it never listens, nothing is
//! ever queued on it.
//!
//! Random ports (`-p 80`) come from the kernel's ephemeral range by binding port 0.

use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;

use crate::firewall::Protocol;

/// Errors reserving a host port.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    /// The port is bound by another program (or another container).
    #[error("host port {port}/{protocol} on {ip} is already in use")]
    InUse {
        /// The host address.
        ip: Ipv4Addr,
        /// The port.
        port: u16,
        /// The protocol.
        protocol: Protocol,
    },
    /// Every port of a requested range is in use.
    #[error("no free host port in range {start}-{end}/{protocol} on {ip}")]
    RangeExhausted {
        /// The host address.
        ip: Ipv4Addr,
        /// First port of the range.
        start: u16,
        /// Last port of the range.
        end: u16,
        /// The protocol.
        protocol: Protocol,
    },
    /// The host address is not an address of this host.
    #[error("cannot publish on {ip}: not an address of this host")]
    NotLocal {
        /// The address.
        ip: Ipv4Addr,
    },
    /// A port or range that does not parse or is empty.
    #[error(
        "invalid host port {0:?}: use a port (8080), a range (8000-8010) or nothing for a random one"
    )]
    BadSpec(String),
    /// Any other socket failure.
    #[error("cannot reserve host port {port}/{protocol} on {ip}: {source}")]
    Socket {
        /// The host address.
        ip: Ipv4Addr,
        /// The port.
        port: u16,
        /// The protocol.
        protocol: Protocol,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// Which host ports a binding may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostPorts {
    /// Any free port the kernel picks.
    Random,
    /// Exactly this port.
    Fixed(u16),
    /// The first free port of an inclusive range.
    Range(u16, u16),
}

/// Parses Docker's `HostPort` text: empty or `0` for random, `8080`, or `8000-8010`.
pub fn parse_host_ports(text: &str) -> Result<HostPorts, PortError> {
    let bad = || PortError::BadSpec(text.to_string());
    let text = text.trim();
    if text.is_empty() {
        return Ok(HostPorts::Random);
    }
    let port = |s: &str| s.trim().parse::<u16>().map_err(|_| bad());
    match text.split_once('-') {
        None => match port(text)? {
            0 => Ok(HostPorts::Random),
            p => Ok(HostPorts::Fixed(p)),
        },
        Some((start, end)) => {
            let (start, end) = (port(start)?, port(end)?);
            if start == 0 || start > end {
                return Err(bad());
            }
            Ok(if start == end {
                HostPorts::Fixed(start)
            } else {
                HostPorts::Range(start, end)
            })
        }
    }
}

/// A bound host port, held until dropped.
#[derive(Debug)]
pub struct PortReservation {
    ip: Ipv4Addr,
    port: u16,
    protocol: Protocol,
    socket: OwnedFd,
}

impl PortReservation {
    /// The host address (`0.0.0.0` for all).
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// The port actually reserved.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The protocol.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Hands the socket over (e.g. to a per-container shim that holds it instead).
    pub fn into_fd(self) -> OwnedFd {
        self.socket
    }
}

impl AsFd for PortReservation {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

impl AsRawFd for PortReservation {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

/// Binds a host port for `protocol` on `ip` (`None`: all addresses).
pub fn reserve(
    protocol: Protocol,
    ip: Option<Ipv4Addr>,
    ports: HostPorts,
) -> Result<PortReservation, PortError> {
    let ip = ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
    match ports {
        HostPorts::Random => bind_port(protocol, ip, 0),
        HostPorts::Fixed(port) => bind_port(protocol, ip, port),
        HostPorts::Range(start, end) => {
            for port in start..=end {
                match bind_port(protocol, ip, port) {
                    Err(PortError::InUse { .. }) => continue,
                    other => return other,
                }
            }
            Err(PortError::RangeExhausted {
                ip,
                start,
                end,
                protocol,
            })
        }
    }
}

fn bind_port(protocol: Protocol, ip: Ipv4Addr, port: u16) -> Result<PortReservation, PortError> {
    let fail = |errno: Errno| match errno {
        Errno::EADDRINUSE => PortError::InUse { ip, port, protocol },
        Errno::EADDRNOTAVAIL => PortError::NotLocal { ip },
        e => PortError::Socket {
            ip,
            port,
            protocol,
            source: e.into(),
        },
    };
    let kind = match protocol {
        Protocol::Tcp => libc::SOCK_STREAM,
        Protocol::Udp => libc::SOCK_DGRAM,
    };
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_INET, kind | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(fail(Errno::last()));
    }
    // SAFETY: `fd` is a new descriptor nobody else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: `addr` is a valid sockaddr_in and `len` its size; the socket is open.
    if unsafe { libc::bind(socket.as_raw_fd(), (&raw const addr).cast(), len) } != 0 {
        return Err(fail(Errno::last()));
    }
    // SAFETY: getsockname writes at most `len` bytes into `addr`, a sockaddr_in (the socket's
    // family), and updates `len`.
    if unsafe { libc::getsockname(socket.as_raw_fd(), (&raw mut addr).cast(), &mut len) } != 0 {
        return Err(fail(Errno::last()));
    }
    Ok(PortReservation {
        ip,
        port: u16::from_be(addr.sin_port),
        protocol,
        socket,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOOPBACK: Option<Ipv4Addr> = Some(Ipv4Addr::LOCALHOST);

    #[test]
    fn host_port_specs_parse() {
        assert_eq!(parse_host_ports("").unwrap(), HostPorts::Random);
        assert_eq!(parse_host_ports("0").unwrap(), HostPorts::Random);
        assert_eq!(parse_host_ports("8080").unwrap(), HostPorts::Fixed(8080));
        assert_eq!(
            parse_host_ports("8000-8010").unwrap(),
            HostPorts::Range(8000, 8010)
        );
        assert_eq!(
            parse_host_ports("8000-8000").unwrap(),
            HostPorts::Fixed(8000)
        );
        for bad in ["x", "70000", "8010-8000", "0-5", "-5", "1-2-3"] {
            let err = parse_host_ports(bad).unwrap_err();
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn a_random_port_is_held_until_dropped() {
        for protocol in [Protocol::Tcp, Protocol::Udp] {
            let held = reserve(protocol, LOOPBACK, HostPorts::Random).unwrap();
            assert_ne!(held.port(), 0);
            assert_eq!(held.protocol(), protocol);
            let err = reserve(protocol, LOOPBACK, HostPorts::Fixed(held.port())).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "host port {}/{protocol} on 127.0.0.1 is already in use",
                    held.port()
                )
            );
            // Binding all addresses clashes with a loopback binding too.
            assert!(matches!(
                reserve(protocol, None, HostPorts::Fixed(held.port())),
                Err(PortError::InUse { .. })
            ));
            let port = held.port();
            drop(held);
            reserve(protocol, LOOPBACK, HostPorts::Fixed(port)).unwrap();
        }
    }

    #[test]
    fn a_port_used_by_another_program_is_reported() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let err = reserve(Protocol::Tcp, None, HostPorts::Fixed(port)).unwrap_err();
        assert!(
            matches!(err, PortError::InUse { port: p, .. } if p == port),
            "{err}"
        );
        // UDP on the same number is a different port.
        drop(reserve(Protocol::Udp, LOOPBACK, HostPorts::Fixed(port)));
    }

    #[test]
    fn ranges_take_the_first_free_port() {
        let first = reserve(Protocol::Tcp, LOOPBACK, HostPorts::Random).unwrap();
        let p = first.port();
        if p == u16::MAX {
            return; // no room for a range after it
        }
        let next = reserve(Protocol::Tcp, LOOPBACK, HostPorts::Range(p, p + 1));
        match next {
            Ok(r) => assert_eq!(r.port(), p + 1),
            // p+1 may be taken by something else on a busy machine; then the range is full.
            Err(e) => assert!(
                matches!(e, PortError::RangeExhausted { start, .. } if start == p),
                "{e}"
            ),
        }
        let err = reserve(Protocol::Tcp, LOOPBACK, HostPorts::Range(p, p)).unwrap_err();
        assert!(matches!(err, PortError::RangeExhausted { .. }), "{err}");
    }

    #[test]
    fn a_foreign_address_is_refused() {
        // 203.0.113.0/24 is TEST-NET-3; binding only checks local addresses, nothing is sent.
        let err = reserve(
            Protocol::Tcp,
            Some(Ipv4Addr::new(203, 0, 113, 200)),
            HostPorts::Random,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot publish on 203.0.113.200: not an address of this host"
        );
    }
}
