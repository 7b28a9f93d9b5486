//! End-to-end tests: each test starts its own `berthd` (see `berth_e2e::TestDaemon`) and drives
//! it the way users do, with Docker's behaviour as the reference.

mod bad_input;
mod build;
mod cli_containers;
mod cli_images;
mod cli_run;
mod debian;
mod docker_cli;
mod exec;
mod exec_stress;
mod faults;
mod lifecycle_policies;
mod metrics;
mod network;
mod network_more;
mod operate;
mod operate_more;
mod registry;
mod system_df;
mod util;
mod volumes;
mod xattrs;
