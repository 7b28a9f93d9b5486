//! The real docker CLI (the compatibility oracle) against berthd via DOCKER_HOST.
//! Every test here is skipped, loudly, when `docker` is not on PATH.

use std::process::{Command, Output};
use std::time::Duration;

use berth_e2e::fixtures::{self, RawTar};
use berth_e2e::process::run_with_timeout;
use berth_e2e::{OutputExt, TestDaemon, docker_available};

use crate::util::{daemon_or_skip, daemon_with_busybox, is_id, lines};

/// Runs docker against the daemon; the caller has already checked that docker exists.
fn docker(d: &TestDaemon, args: &[&str]) -> Output {
    d.docker(args).expect("docker_available() was checked")
}

fn tar_listing(path: &std::path::Path) -> Vec<String> {
    let mut cmd = Command::new("tar");
    cmd.arg("-tf").arg(path);
    run_with_timeout(cmd, None, Duration::from_secs(60))
        .ok("tar -t")
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn docker_cli_system_and_images() {
    if !docker_available() {
        return;
    }
    let d = daemon_or_skip!(daemon_with_busybox());
    let id = d.busybox_image();
    let short = &id["sha256:".len().."sha256:".len() + 12];

    let out = docker(&d, &["version"]).ok("docker version");
    assert!(out.contains("Server"), "{out}");
    docker(&d, &["info"]).ok("docker info");

    let out = docker(&d, &["images"]).ok("docker images");
    assert!(
        out.lines()
            .any(|l| l.starts_with("busybox") && l.contains("latest") && l.contains(short)),
        "{out}"
    );
    assert_eq!(
        docker(&d, &["inspect", "--format", "{{.Id}}", "busybox"]).ok("docker inspect image"),
        id
    );
    assert_eq!(
        docker(&d, &["history", "-q", "busybox"])
            .ok("docker history -q")
            .lines()
            .next(),
        Some(short)
    );
    let out = docker(&d, &["history", "busybox"]).ok("docker history");
    assert!(
        out.lines()
            .next()
            .unwrap_or_default()
            .contains("CREATED BY"),
        "{out}"
    );

    docker(&d, &["tag", "busybox", "dtag:1"]).ok("docker tag");
    let tags = docker(&d, &["images", "--format", "{{.Repository}}:{{.Tag}}"])
        .ok("docker images --format");
    assert!(lines(&tags).contains(&"dtag:1".to_string()), "{tags}");
    let out = docker(&d, &["rmi", "dtag:1"]).ok("docker rmi tag");
    assert!(
        out.contains("Untagged: dtag:1") && !out.contains("Deleted"),
        "{out}"
    );

    let saved = d.scratch().join("docker-save.tar");
    docker(&d, &["save", "-o", saved.to_str().unwrap(), "busybox"]).ok("docker save");
    assert!(
        tar_listing(&saved).iter().any(|e| e == "manifest.json"),
        "docker save output has manifest.json"
    );

    // An archive written by `berth save` loads through docker.
    let berth_saved = d.scratch().join("berth-save.tar");
    d.berth(&["save", "-o", berth_saved.to_str().unwrap(), "busybox"])
        .ok("berth save");
    let out = docker(&d, &["rmi", "busybox"]).ok("docker rmi");
    assert!(out.contains("Deleted"), "{out}");
    let out = docker(&d, &["load", "-i", berth_saved.to_str().unwrap()]).ok("docker load");
    assert!(out.contains("Loaded image: busybox:latest"), "{out}");
    assert_eq!(
        docker(&d, &["inspect", "--format", "{{.Id}}", "busybox"]).ok("inspect after load"),
        id
    );

    let rootfs = fixtures::busybox_rootfs_tar();
    let imported = docker(
        &d,
        &[
            "import",
            "-c",
            r#"CMD ["echo","dimp"]"#,
            rootfs.to_str().unwrap(),
            "dimp:1",
        ],
    )
    .ok("docker import");
    assert!(is_id(&imported), "docker import prints the id: {imported}");
    assert_eq!(
        docker(&d, &["run", "--rm", "dimp:1"]).ok("run imported image"),
        "dimp"
    );

    let mut tiny = RawTar::new();
    tiny.file("dangling.txt", 0o644, b"dangling\n");
    let tiny_path = d.scratch().join("tiny.tar");
    std::fs::write(&tiny_path, tiny.finish()).unwrap();
    let dangling =
        docker(&d, &["import", tiny_path.to_str().unwrap()]).ok("docker import without name");
    let listed = docker(
        &d,
        &["images", "--filter", "dangling=true", "-q", "--no-trunc"],
    )
    .ok("dangling images");
    assert_eq!(listed, dangling);
    let out = docker(&d, &["image", "prune", "-f"]).ok("docker image prune");
    assert!(out.contains(&dangling), "{out}");
    assert_eq!(
        docker(&d, &["images", "--filter", "dangling=true", "-q"]).ok("dangling after prune"),
        ""
    );
    assert!(
        docker(&d, &["images", "-q"]).ok("images").contains(short),
        "prune keeps tagged images"
    );
}

#[test]
fn docker_cli_containers() {
    if !docker_available() {
        return;
    }
    let d = daemon_or_skip!(daemon_with_busybox());

    let out = docker(&d, &["run", "--rm", "busybox", "echo", "hi"]);
    out.expect_code(0, "docker run echo");
    assert_eq!(out.stdout_text(), "hi\n");
    docker(&d, &["run", "--rm", "busybox", "sh", "-c", "exit 5"])
        .expect_code(5, "docker run exit 5");
    let out = docker(
        &d,
        &[
            "run",
            "--rm",
            "busybox",
            "sh",
            "-c",
            "echo out; echo err >&2",
        ],
    );
    assert_eq!(out.stdout_text(), "out\n");
    assert!(out.stderr_text().contains("err"), "{}", out.stderr_text());
    let out = docker(&d, &["run", "--rm", "busybox", "nosuchcmd"]);
    out.expect_code(127, "docker run missing command");
    assert!(
        out.stderr_text().contains("executable file not found"),
        "{}",
        out.stderr_text()
    );
    let out = docker(&d, &["run", "--rm", "nosuchimage-e2e"]);
    out.expect_code(125, "docker run unknown image");
    assert!(
        out.stderr_text()
            .contains("Unable to find image 'nosuchimage-e2e:latest' locally"),
        "{}",
        out.stderr_text()
    );

    let id = docker(
        &d,
        &["run", "-d", "--name", "dweb", "busybox", "sleep", "1000"],
    )
    .ok("docker run -d");
    assert!(is_id(&id), "{id}");
    let out = docker(&d, &["run", "-d", "--name", "dweb", "busybox", "true"]);
    out.expect_code(125, "docker name conflict");
    assert!(
        out.stderr_text().contains("Conflict"),
        "{}",
        out.stderr_text()
    );
    let ps = docker(&d, &["ps"]).ok("docker ps");
    assert!(
        ps.lines()
            .any(|l| l.starts_with(&id[..12]) && l.contains("Up") && l.contains("dweb")),
        "{ps}"
    );
    assert_eq!(
        docker(&d, &["inspect", "--format", "{{.State.Status}}", "dweb"]).ok("inspect"),
        "running"
    );

    assert_eq!(
        docker(&d, &["stop", "-t", "1", "dweb"]).ok("docker stop"),
        "dweb"
    );
    assert_eq!(
        docker(&d, &["inspect", "--format", "{{.State.Status}}", "dweb"]).ok("inspect"),
        "exited"
    );
    docker(&d, &["start", "dweb"]).ok("docker start");
    assert_eq!(docker(&d, &["kill", "dweb"]).ok("docker kill"), "dweb");
    assert_eq!(
        docker(&d, &["wait", "dweb"]).ok("docker wait after kill"),
        "137"
    );
    docker(&d, &["rename", "dweb", "dweb2"]).ok("docker rename");
    assert_eq!(
        docker(&d, &["inspect", "--format", "{{.Name}}", "dweb2"]).ok("inspect renamed"),
        "/dweb2"
    );

    docker(
        &d,
        &[
            "run",
            "-d",
            "--name",
            "dtalk",
            "busybox",
            "sh",
            "-c",
            "for i in 1 2 3; do echo line$i; usleep 300000; done",
        ],
    )
    .ok("docker run talker");
    let out = d
        .docker_with(&["logs", "-f", "dtalk"], None, Duration::from_secs(30))
        .unwrap();
    out.expect_code(0, "docker logs -f");
    assert_eq!(out.stdout_text(), "line1\nline2\nline3\n");
    assert_eq!(
        docker(&d, &["logs", "--tail", "1", "dtalk"]).ok("docker logs --tail"),
        "line3"
    );

    docker(
        &d,
        &[
            "run",
            "-d",
            "--name",
            "dwait",
            "busybox",
            "sh",
            "-c",
            "sleep 1; exit 4",
        ],
    )
    .ok("run dwait");
    assert_eq!(
        d.docker_with(&["wait", "dwait"], None, Duration::from_secs(30))
            .unwrap()
            .ok("docker wait"),
        "4"
    );

    docker(
        &d,
        &[
            "run", "-d", "--name", "drunning", "busybox", "sleep", "1000",
        ],
    )
    .ok("run drunning");
    docker(
        &d,
        &["run", "-d", "--name", "dgone", "busybox", "sleep", "1000"],
    )
    .ok("run dgone");
    assert_eq!(
        docker(&d, &["rm", "-f", "dgone"]).ok("docker rm -f"),
        "dgone"
    );
    docker(&d, &["container", "prune", "-f"]).ok("docker container prune");
    let names = docker(&d, &["ps", "-a", "--format", "{{.Names}}"]).ok("docker ps -a");
    assert_eq!(
        lines(&names),
        ["drunning"],
        "prune keeps only running containers"
    );
}

#[test]
fn docker_cli_events_replay() {
    if !docker_available() {
        return;
    }
    let d = daemon_or_skip!(daemon_with_busybox());
    docker(&d, &["run", "--name", "ev", "busybox", "true"]).ok("docker run ev");
    let id = docker(&d, &["inspect", "--format", "{{.Id}}", "ev"]).ok("inspect ev");
    // The CLI turns `--until 0s` into whole seconds (now, truncated): let the second of the
    // container's last event pass so the replay includes it.
    std::thread::sleep(Duration::from_millis(1100));

    // With --until the command replays the stored events and exits instead of streaming.
    let out = d
        .docker_with(
            &["events", "--since", "1m", "--until", "0s"],
            None,
            Duration::from_secs(30),
        )
        .unwrap()
        .ok("docker events --since --until");
    let position = |action: &str| {
        out.lines()
            .position(|l| l.contains(&format!("container {action} {id}")))
            .unwrap_or_else(|| panic!("no `container {action}` event for {id}:\n{out}"))
    };
    let (create, start, die) = (position("create"), position("start"), position("die"));
    assert!(create < start && start < die, "events are in order:\n{out}");
    assert!(
        out.contains("name=ev"),
        "events carry the container name: {out}"
    );

    let out = d
        .docker_with(
            &[
                "events",
                "--since",
                "1m",
                "--until",
                "0s",
                "--filter",
                "event=die",
                "--format",
                "{{json .}}",
            ],
            None,
            Duration::from_secs(30),
        )
        .unwrap()
        .ok("docker events --filter --format");
    let events: Vec<serde_json::Value> = lines(&out)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(events.len(), 1, "{out}");
    assert_eq!(events[0]["Type"], "container");
    assert_eq!(events[0]["Action"], "die");
    assert_eq!(events[0]["Actor"]["ID"].as_str(), Some(id.as_str()));
    assert_eq!(events[0]["Actor"]["Attributes"]["exitCode"], "0");
}
