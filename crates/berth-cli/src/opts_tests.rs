//! Flag → create-request conversion tests (compared against what docker CLI 28 sends).

use super::*;
use crate::optparse::{parse_nano_cpus, parse_ram};
use clap::Parser;
use serde_json::{Value, json};

#[derive(Parser, Debug)]
#[command(disable_help_flag = true)]
struct Probe {
    #[command(flatten)]
    opts: ContainerOpts,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    args: Vec<String>,
}

fn body(args: &[&str]) -> Value {
    let mut argv = vec!["run"];
    argv.extend_from_slice(args);
    let p = Probe::try_parse_from(argv).unwrap();
    let b = build(&p.opts, &p.args[0], &p.args[1..], (0, 0)).unwrap();
    serde_json::to_value(b).unwrap()
}

fn err(args: &[&str]) -> String {
    let mut argv = vec!["run"];
    argv.extend_from_slice(args);
    match Probe::try_parse_from(argv) {
        Err(e) => e.to_string(),
        Ok(p) => build(&p.opts, &p.args[0], &p.args[1..], (0, 0))
            .unwrap_err()
            .to_string(),
    }
}

#[test]
fn defaults_match_docker_shape() {
    let b = body(&["alpine", "echo", "hi"]);
    assert_eq!(b["Image"], "alpine");
    assert_eq!(b["Cmd"], json!(["echo", "hi"]));
    assert_eq!(b["AttachStdout"], true);
    assert_eq!(b["AttachStderr"], true);
    assert_eq!(b["AttachStdin"], false);
    assert_eq!(b["OpenStdin"], false);
    assert_eq!(b["Entrypoint"], Value::Null);
    let hc = &b["HostConfig"];
    assert_eq!(hc["NetworkMode"], "default");
    assert_eq!(
        hc["RestartPolicy"],
        json!({"Name": "no", "MaximumRetryCount": 0})
    );
    assert_eq!(hc["LogConfig"], json!({"Type": "", "Config": {}}));
    assert_eq!(hc["ConsoleSize"], json!([0, 0]));
    assert_eq!(hc["Dns"], json!([]));
    assert!(b["NetworkingConfig"]["EndpointsConfig"]["default"].is_object());
}

#[test]
fn resources_convert() {
    let b = body(&[
        "--cpus",
        "1.5",
        "-m",
        "512m",
        "--memory-swap",
        "-1",
        "--pids-limit",
        "100",
        "-c",
        "512",
        "--cpuset-cpus",
        "0-1",
        "--memory-reservation",
        "1g",
        "busybox",
    ]);
    let hc = &b["HostConfig"];
    assert_eq!(hc["NanoCpus"], 1_500_000_000i64);
    assert_eq!(hc["Memory"], 536_870_912i64);
    assert_eq!(hc["MemorySwap"], -1);
    assert_eq!(hc["MemoryReservation"], 1_073_741_824i64);
    assert_eq!(hc["PidsLimit"], 100);
    assert_eq!(hc["CpuShares"], 512);
    assert_eq!(hc["CpusetCpus"], "0-1");
    assert!(err(&["--cpus", "0.0000000001", "x"]).contains("too precise"));
    assert!(err(&["-m", "12q", "x"]).contains("invalid suffix"));
}

#[test]
fn ulimits_parse() {
    let b = body(&["--ulimit", "nofile=1024:2048", "--ulimit", "nproc=64", "x"]);
    assert_eq!(
        b["HostConfig"]["Ulimits"],
        json!([{"Name": "nofile", "Soft": 1024, "Hard": 2048}, {"Name": "nproc", "Soft": 64, "Hard": 64}])
    );
    assert!(
        err(&["--ulimit", "nofile=10:5", "x"]).contains("soft limit must be less than or equal")
    );
    assert!(err(&["--ulimit", "bogus=1", "x"]).contains("invalid ulimit type"));
}

#[test]
fn env_and_env_file() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("env");
    std::fs::write(
        &f,
        "# comment\n\nFROM_FILE=1\n  SPACED=two words\nBERTH_TEST_UNSET_VAR\nBERTH_TEST_SET_VAR\n",
    )
    .unwrap();
    // SAFETY: tests in this module do not read this variable concurrently.
    unsafe { std::env::set_var("BERTH_TEST_SET_VAR", "fromenv") };
    let b = body(&[
        "--env-file",
        f.to_str().unwrap(),
        "-e",
        "A=1",
        "-e",
        "BERTH_TEST_SET_VAR",
        "-e",
        "EMPTY=",
        "x",
    ]);
    assert_eq!(
        b["Env"],
        json!([
            "FROM_FILE=1",
            "SPACED=two words",
            "BERTH_TEST_SET_VAR=fromenv",
            "A=1",
            "BERTH_TEST_SET_VAR=fromenv",
            "EMPTY="
        ])
    );
    assert!(err(&["-e", "=x", "x"]).contains("invalid environment variable"));
}

#[test]
fn entrypoint_empty_resets() {
    let b = body(&["--entrypoint", "", "x"]);
    assert_eq!(b["Entrypoint"], json!([""]));
    let b = body(&["--entrypoint", "/bin/sh", "x", "-c", "true"]);
    assert_eq!(b["Entrypoint"], json!(["/bin/sh"]));
    assert_eq!(b["Cmd"], json!(["-c", "true"]));
}

#[test]
fn ports_parse_like_nat() {
    let b = body(&[
        "-p",
        "8080:80",
        "-p",
        "127.0.0.1:9000-9001:9000-9001/udp",
        "-p",
        "53",
        "--expose",
        "7000-7001",
        "x",
    ]);
    let pb = &b["HostConfig"]["PortBindings"];
    assert_eq!(pb["80/tcp"], json!([{"HostIp": "", "HostPort": "8080"}]));
    assert_eq!(
        pb["9000/udp"],
        json!([{"HostIp": "127.0.0.1", "HostPort": "9000"}])
    );
    assert_eq!(
        pb["9001/udp"],
        json!([{"HostIp": "127.0.0.1", "HostPort": "9001"}])
    );
    assert_eq!(pb["53/tcp"], json!([{"HostIp": "", "HostPort": ""}]));
    let exposed = b["ExposedPorts"].as_object().unwrap();
    for p in [
        "80/tcp", "9000/udp", "9001/udp", "53/tcp", "7000/tcp", "7001/tcp",
    ] {
        assert_eq!(exposed[p], json!({}), "{p}");
    }
    let b = body(&["-p", "published=8443,target=443", "-p", "[::1]:81:80", "x"]);
    assert_eq!(
        b["HostConfig"]["PortBindings"]["443/tcp"],
        json!([{"HostIp": "", "HostPort": "8443"}])
    );
    assert_eq!(
        b["HostConfig"]["PortBindings"]["80/tcp"],
        json!([{"HostIp": "::1", "HostPort": "81"}])
    );
    assert!(err(&["-p", "8080:80/xyz", "x"]).contains("invalid proto"));
    assert!(err(&["-p", "1-3:4-5", "x"]).contains("invalid ranges"));
}

#[test]
fn tmpfs_volumes_mounts() {
    let b = body(&[
        "--tmpfs",
        "/run:rw,size=64m",
        "--tmpfs",
        "/tmp",
        "-v",
        "/data",
        "-v",
        "/src:/dst:ro",
        "-v",
        "named:/vol",
        "--mount",
        "type=bind,source=/a,target=/b,readonly",
        "--mount",
        "type=tmpfs,target=/t,tmpfs-size=1m,tmpfs-mode=1777",
        "x",
    ]);
    assert_eq!(
        b["HostConfig"]["Tmpfs"],
        json!({"/run": "rw,size=64m", "/tmp": ""})
    );
    assert_eq!(
        b["HostConfig"]["Binds"],
        json!(["/src:/dst:ro", "named:/vol"])
    );
    assert_eq!(b["Volumes"], json!({"/data": {}}));
    let m = &b["HostConfig"]["Mounts"];
    assert_eq!(
        m[0],
        json!({"Type": "bind", "Source": "/a", "Target": "/b", "ReadOnly": true})
    );
    assert_eq!(
        m[1]["TmpfsOptions"],
        json!({"SizeBytes": 1_048_576, "Mode": 1023})
    );
    assert!(err(&["--mount", "type=bind,source=/a", "x"]).contains("target is required"));
}

#[test]
fn restart_policies() {
    let b = body(&["--restart", "on-failure:3", "x"]);
    assert_eq!(
        b["HostConfig"]["RestartPolicy"],
        json!({"Name": "on-failure", "MaximumRetryCount": 3})
    );
    let b = body(&["--restart", "always", "x"]);
    assert_eq!(b["HostConfig"]["RestartPolicy"]["Name"], "always");
    assert!(err(&["--restart", "sometimes", "x"]).contains("unknown policy"));
    assert!(err(&["--restart", "on-failure:x", "x"]).contains("must be an integer"));
    assert!(
        err(&["--rm", "--restart", "always", "x"])
            .contains("cannot specify both --restart and --rm")
    );
}

#[test]
fn interactive_tty_and_misc_flags() {
    let b = body(&[
        "-it",
        "--rm",
        "--name",
        "n",
        "-w",
        "/w",
        "-u",
        "1:2",
        "-h",
        "host",
        "-l",
        "a=b",
        "--stop-signal",
        "SIGINT",
        "--stop-timeout",
        "5",
        "--init",
        "--read-only",
        "--privileged",
        "--cap-add",
        "NET_ADMIN",
        "--security-opt",
        "no-new-privileges",
        "--log-opt",
        "max-size=1m",
        "--network",
        "none",
        "x",
        "sh",
    ]);
    assert_eq!(b["Tty"], true);
    assert_eq!(b["OpenStdin"], true);
    assert_eq!(b["StdinOnce"], true);
    assert_eq!(b["AttachStdin"], true);
    assert_eq!(b["WorkingDir"], "/w");
    assert_eq!(b["User"], "1:2");
    assert_eq!(b["Hostname"], "host");
    assert_eq!(b["Labels"], json!({"a": "b"}));
    assert_eq!(b["StopSignal"], "SIGINT");
    assert_eq!(b["StopTimeout"], 5);
    let hc = &b["HostConfig"];
    assert_eq!(hc["AutoRemove"], true);
    assert_eq!(hc["Init"], true);
    assert_eq!(hc["ReadonlyRootfs"], true);
    assert_eq!(hc["Privileged"], true);
    assert_eq!(hc["CapAdd"], json!(["NET_ADMIN"]));
    assert_eq!(hc["SecurityOpt"], json!(["no-new-privileges"]));
    assert_eq!(hc["LogConfig"]["Config"], json!({"max-size": "1m"}));
    assert_eq!(hc["NetworkMode"], "none");
    assert!(b["NetworkingConfig"]["EndpointsConfig"]["none"].is_object());
    let b = body(&["--rm=false", "--sig-proxy=false", "x"]);
    assert_eq!(b["HostConfig"]["AutoRemove"], false);
}

#[test]
fn healthcheck_flags() {
    let b = body(&[
        "--health-cmd",
        "true",
        "--health-interval",
        "1s",
        "--health-retries",
        "3",
        "x",
    ]);
    assert_eq!(
        b["Healthcheck"],
        json!({"Test": ["CMD-SHELL", "true"], "Interval": 1_000_000_000i64, "Timeout": 0, "Retries": 3, "StartPeriod": 0, "StartInterval": 0})
    );
    let b = body(&["--no-healthcheck", "x"]);
    assert_eq!(b["Healthcheck"], json!({"Test": ["NONE"]}));
    assert!(err(&["--no-healthcheck", "--health-cmd", "x", "x"]).contains("conflicts"));
}

#[test]
fn trailing_args_are_not_flags() {
    let b = body(&["alpine", "ls", "-la", "--rm"]);
    assert_eq!(b["Cmd"], json!(["ls", "-la", "--rm"]));
    assert_eq!(b["HostConfig"]["AutoRemove"], false);
}

#[test]
fn ram_and_cpu_parsers() {
    assert_eq!(parse_ram("512m"), Ok(536_870_912));
    assert_eq!(parse_ram("1.5GB"), Ok(1_610_612_736));
    assert_eq!(parse_ram("100"), Ok(100));
    assert_eq!(parse_ram("10KiB"), Ok(10_240));
    assert!(parse_ram("m").is_err());
    assert_eq!(parse_nano_cpus("2"), Ok(2_000_000_000));
    assert_eq!(parse_nano_cpus(".5"), Ok(500_000_000));
    assert!(parse_nano_cpus("abc").is_err());
}
