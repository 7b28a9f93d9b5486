//! Container networking for berth.
//!
//! - [`netns`]: network namespaces pinned at caller-chosen paths (what OCI specs join).
//! - [`ipam`]: subnet choice (Docker's default pools, host routes avoided) and addresses.
//! - [`bridge`]: Linux bridges and veth pairs via rtnetlink ([`netlink`]).
//! - [`firewall`]: nftables masquerade, isolation and published-port DNAT in berth's table.
//! - [`ports`]: host port reservation for published ports.
//! - [`dns`]: the embedded per-network DNS server and its in-memory table.
//! - [`driver`]: all of the above per network and container, for the daemon.
//! - [`files`]: a container's `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf`.
//!
//! Architecture invariant: this crate knows containers only as plain data (id, names,
//! namespace path, addresses, ports); it never sees images, the store or Docker API types.

pub mod bridge;
pub mod dns;
pub mod driver;
pub mod files;
pub mod firewall;
pub mod ipam;
pub mod netlink;
pub mod netns;
pub mod ports;
