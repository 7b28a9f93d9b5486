//! Container networking for berth.
//!
//! For now this crate owns the per-container name-resolution files (`/etc/hosts`,
//! `/etc/hostname`, `/etc/resolv.conf`). Bridges, veths, IPAM, port publishing and the embedded
//! DNS server arrive with the networking issue and live here too.
//!
//! Architecture invariant: this crate knows containers only as (id, hostname, addresses); it
//! never sees images, the store or Docker API types.

pub mod files;
