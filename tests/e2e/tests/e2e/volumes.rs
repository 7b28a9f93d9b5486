//! Volumes and mounts: named and anonymous volumes, binds, `--mount`, copy-up, `rm -v`,
//! refusals, and the same through the real docker CLI.

use std::path::PathBuf;

use berth_e2e::{OutputExt, TestDaemon, docker_available};

use crate::util::{daemon_or_skip, daemon_with_busybox, lines};

/// `POST /volumes/create` with a JSON body; returns the status and the parsed body.
fn create_volume(d: &TestDaemon, body: &str) -> (u16, serde_json::Value) {
    let r = d.api(
        "POST",
        "/volumes/create",
        Some(("application/json", body.as_bytes())),
    );
    let status = r.status;
    (status, serde_json::from_str(&r.text()).unwrap_or_default())
}

/// Names of the volumes `GET /volumes` lists.
fn volume_names(d: &TestDaemon) -> Vec<String> {
    let (status, body) = d.api_get("/volumes");
    assert_eq!(status, 200, "list volumes: {body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let mut names: Vec<String> = v["Volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["Name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

/// The host directory of a volume, from its inspect.
fn mountpoint(d: &TestDaemon, name: &str) -> PathBuf {
    let (status, body) = d.api_get(&format!("/volumes/{name}"));
    assert_eq!(status, 200, "inspect volume {name}: {body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    PathBuf::from(v["Mountpoint"].as_str().unwrap())
}

#[test]
fn volume_data_outlives_containers_and_restarts() {
    let d = daemon_or_skip!(daemon_with_busybox());
    let (status, v) = create_volume(&d, r#"{"Name":"shared","Labels":{"team":"a"}}"#);
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["Scope"], "local");
    assert_eq!(v["Driver"], "local");
    assert_eq!(v["Labels"]["team"], "a");
    // RFC 3339: 2026-01-02T03:04:05Z
    let created = v["CreatedAt"].as_str().unwrap();
    assert!(
        created.len() == 20 && created.as_bytes()[10] == b'T' && created.ends_with('Z'),
        "{v}"
    );
    let data = mountpoint(&d, "shared");
    assert!(data.starts_with(d.root()) && data.ends_with("volumes/shared/_data"));

    d.berth(&[
        "run",
        "--name",
        "writer",
        "-v",
        "shared:/data",
        "busybox",
        "sh",
        "-c",
        "echo hello > /data/f",
    ])
    .ok("run writer");
    let mounts = d.inspect_container("writer")["Mounts"].clone();
    assert_eq!(mounts[0]["Type"], "volume", "{mounts}");
    assert_eq!(mounts[0]["Name"], "shared", "{mounts}");
    assert_eq!(mounts[0]["Destination"], "/data", "{mounts}");
    assert_eq!(mounts[0]["RW"], true, "{mounts}");
    assert_eq!(mounts[0]["Mode"], "z", "{mounts}");
    assert_eq!(mounts[0]["Source"], data.display().to_string(), "{mounts}");
    d.berth(&["rm", "writer"]).ok("rm writer");

    let read = d
        .berth(&[
            "run",
            "--rm",
            "-v",
            "shared:/data:ro",
            "busybox",
            "cat",
            "/data/f",
        ])
        .ok("read back");
    assert_eq!(read, "hello");
    d.berth(&[
        "run",
        "--rm",
        "-v",
        "shared:/data:ro",
        "busybox",
        "sh",
        "-c",
        "echo x > /data/g",
    ])
    .expect_failure("a write to a read-only volume");
    assert!(!data.join("g").exists());

    d.restart();
    assert_eq!(volume_names(&d), vec!["shared".to_string()]);
    let read = d
        .berth(&[
            "run",
            "--rm",
            "-v",
            "shared:/data",
            "busybox",
            "cat",
            "/data/f",
        ])
        .ok("read after restart");
    assert_eq!(read, "hello");
}

#[test]
fn an_empty_volume_gets_the_image_content_once() {
    let d = daemon_or_skip!(daemon_with_busybox());
    d.berth(&["run", "--rm", "-v", "etc-copy:/etc", "busybox", "true"])
        .ok("first mount copies /etc");
    let passwd = d
        .berth(&[
            "run",
            "--rm",
            "-v",
            "etc-copy:/data",
            "busybox",
            "cat",
            "/data/passwd",
        ])
        .ok("read the copy elsewhere");
    assert!(passwd.contains("root:"), "{passwd}");
    let data = mountpoint(&d, "etc-copy");
    let image_passwd = std::fs::metadata(data.join("passwd")).unwrap();
    assert!(image_passwd.is_file());

    d.berth(&["run", "--rm", "-v", "homes:/home", "busybox", "true"])
        .ok("copy of /home");
    assert!(mountpoint(&d, "homes").join("bbuser").is_dir());
    d.berth(&["run", "--rm", "-v", "nocp:/home:nocopy", "busybox", "true"])
        .ok("nocopy mount");
    let empty = std::fs::read_dir(mountpoint(&d, "nocp")).unwrap().count();
    assert_eq!(empty, 0, "nocopy must leave the volume empty");
}

#[test]
fn binds_honour_ro_and_create_missing_sources() {
    let d = daemon_or_skip!(daemon_with_busybox());
    let host = d.scratch().join("bind-src");
    let missing = d.scratch().join("made-by-v");
    std::fs::create_dir_all(&host).unwrap();
    let ro = format!("{}:/host:ro", host.display());
    d.berth(&[
        "run",
        "--rm",
        "-v",
        &ro,
        "busybox",
        "sh",
        "-c",
        "echo x > /host/f",
    ])
    .expect_failure("a write to a read-only bind");
    assert!(!host.join("f").exists());

    let rw = format!("{}:/host", host.display());
    d.berth(&[
        "run",
        "--rm",
        "-v",
        &rw,
        "busybox",
        "sh",
        "-c",
        "echo x > /host/f",
    ])
    .ok("a write to a bind");
    assert_eq!(std::fs::read_to_string(host.join("f")).unwrap(), "x\n");

    let created = format!("{}:/made", missing.display());
    d.berth(&["run", "--rm", "-v", &created, "busybox", "true"])
        .ok("-v creates a missing host path");
    assert!(missing.is_dir());
    let file = d.scratch().join("single-file");
    std::fs::write(&file, "one file").unwrap();
    let single = format!("{}:/etc/motd:ro", file.display());
    let read = d
        .berth(&["run", "--rm", "-v", &single, "busybox", "cat", "/etc/motd"])
        .ok("a bind of one file");
    assert_eq!(read, "one file");

    // --mount type=bind refuses a missing source instead.
    let gone = format!(
        "type=bind,source={},target=/x",
        d.scratch().join("absent").display()
    );
    let out = d.berth(&["run", "--rm", "--mount", &gone, "busybox", "true"]);
    out.expect_failure("--mount of a missing source");
    assert!(
        out.stderr_text()
            .contains("bind source path does not exist"),
        "{}",
        out.stderr_text()
    );
    // A deeper mount lands on top of a shallower one whatever the order given.
    let inner = d.scratch().join("inner");
    std::fs::create_dir_all(&inner).unwrap();
    std::fs::write(inner.join("marker"), "inner").unwrap();
    let listing = d
        .berth(&[
            "run",
            "--rm",
            "-v",
            &format!("{}:/top/inner:ro", inner.display()),
            "-v",
            &format!("{}:/top", host.display()),
            "busybox",
            "cat",
            "/top/inner/marker",
        ])
        .ok("nested binds");
    assert_eq!(listing, "inner");
}

#[test]
fn volumes_in_use_stay_and_rm_v_removes_anonymous_ones() {
    let d = daemon_or_skip!(daemon_with_busybox());
    d.berth(&[
        "create",
        "--name",
        "user",
        "-v",
        "named:/data",
        "-v",
        "/anon",
        "busybox",
        "true",
    ])
    .ok("create with a named and an anonymous volume");
    let id = d.inspect_container("user")["Id"]
        .as_str()
        .unwrap()
        .to_string();
    let names = volume_names(&d);
    assert_eq!(names.len(), 2, "{names:?}");
    let anonymous: Vec<&String> = names.iter().filter(|n| *n != "named").collect();
    assert_eq!(anonymous[0].len(), 64, "{names:?}");

    let r = d.api("DELETE", "/volumes/named", None);
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(
        r.text().contains("volume is in use") && r.text().contains(&id),
        "{}",
        r.text()
    );
    // Prune leaves volumes that are in use.
    let r = d.api("POST", "/volumes/prune", None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(volume_names(&d).len(), 2);

    d.berth(&["rm", "-v", "user"]).ok("rm -v");
    assert_eq!(volume_names(&d), vec!["named".to_string()]);
    assert!(!d.root().join("volumes").join(anonymous[0]).exists());

    d.berth(&["run", "--rm", "-v", "/scratch", "busybox", "true"])
        .ok("--rm with an anonymous volume");
    assert_eq!(volume_names(&d), vec!["named".to_string()]);

    // Without -v the anonymous volume stays until a prune; named volumes need all=true.
    d.berth(&["run", "--name", "left", "-v", "/left", "busybox", "true"])
        .ok("run leaving an anonymous volume");
    d.berth(&["rm", "left"]).ok("rm without -v");
    assert_eq!(volume_names(&d).len(), 2);
    let r = d.api("POST", "/volumes/prune", None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(volume_names(&d), vec!["named".to_string()]);
    let r = d.api(
        "POST",
        "/volumes/prune?filters=%7B%22all%22%3A%5B%22true%22%5D%7D",
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("named"), "{}", r.text());
    assert!(volume_names(&d).is_empty());
}

#[test]
fn bad_volume_input_is_refused_cleanly() {
    let d = daemon_or_skip!(daemon_with_busybox());
    let (status, body) = create_volume(&d, r#"{"Name":"a/b"}"#);
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("invalid characters for a local volume name"),
        "{body}"
    );
    let (status, body) = create_volume(&d, r#"{"Name":"x","Driver":"nfs-magic"}"#);
    assert_eq!(status, 404, "{body}");
    let (status, body) = create_volume(&d, r#"{"Name":"x","DriverOpts":{"colour":"red"}}"#);
    assert_eq!(status, 400, "{body}");

    let out = d.berth(&[
        "create",
        "--name",
        "c1",
        "--mount",
        "type=bind,source=relative/dir,target=/x",
        "busybox",
        "true",
    ]);
    out.expect_failure("a relative bind source");
    assert!(
        out.stderr_text().contains("must be absolute"),
        "{}",
        out.stderr_text()
    );
    // A good volume before a bad one: the good one must not be left behind.
    let out = d.berth(&[
        "create",
        "--name",
        "c2",
        "-v",
        "fine:/a",
        "-v",
        "bad/name:/b",
        "busybox",
        "true",
    ]);
    out.expect_failure("a volume name with a slash");
    let out = d.berth(&[
        "create", "--name", "c3", "-v", "fine:/a", "-v", "other:/a", "busybox", "true",
    ]);
    out.expect_failure("a duplicate mount point");
    assert!(
        out.stderr_text().contains("Duplicate mount point"),
        "{}",
        out.stderr_text()
    );
    assert!(d.container_ids().is_empty());
    assert!(volume_names(&d).is_empty(), "{:?}", volume_names(&d));
}

#[test]
fn device_backed_volumes_mount_at_first_use() {
    let d = daemon_or_skip!(daemon_with_busybox());
    let (status, v) = create_volume(
        &d,
        r#"{"Name":"fast","DriverOpts":{"type":"tmpfs","device":"tmpfs","o":"size=4m"}}"#,
    );
    assert_eq!(status, 201, "{v}");
    let df = d
        .berth(&[
            "run",
            "--rm",
            "-v",
            "fast:/fast",
            "busybox",
            "df",
            "-k",
            "/fast",
        ])
        .ok("df in a tmpfs volume");
    assert!(df.contains("4096"), "{df}");
    let data = mountpoint(&d, "fast");
    let mounted = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .contains(&format!(" {} ", data.display()));
    assert!(
        !mounted,
        "the tmpfs must be unmounted once no container runs"
    );
    let r = d.api("DELETE", "/volumes/fast", None);
    assert_eq!(r.status, 204, "{}", r.text());
}

#[test]
fn docker_cli_volumes() {
    if !docker_available() {
        return;
    }
    let d = daemon_or_skip!(daemon_with_busybox());
    let docker = |args: &[&str]| d.docker(args).expect("docker_available() was checked");

    assert_eq!(
        docker(&["volume", "create", "--label", "env=test", "dvol"]).ok("volume create"),
        "dvol"
    );
    let ls = docker(&["volume", "ls", "--format", "{{.Driver}} {{.Name}}"]).ok("volume ls");
    assert_eq!(lines(&ls), vec!["local dvol".to_string()]);
    let filtered = docker(&["volume", "ls", "-q", "--filter", "label=env=prod"]).ok("ls filter");
    assert!(filtered.is_empty(), "{filtered}");
    let dangling = docker(&["volume", "ls", "-q", "--filter", "dangling=true"]).ok("dangling");
    assert_eq!(dangling, "dvol");
    let inspect = docker(&[
        "volume",
        "inspect",
        "--format",
        "{{.Scope}} {{.Mountpoint}}",
        "dvol",
    ])
    .ok("volume inspect");
    assert!(
        inspect.starts_with("local ") && inspect.ends_with("/volumes/dvol/_data"),
        "{inspect}"
    );

    docker(&[
        "run",
        "--name",
        "dw",
        "-v",
        "dvol:/data",
        "busybox",
        "sh",
        "-c",
        "echo hi > /data/f",
    ])
    .ok("docker run -v");
    let read = docker(&[
        "run",
        "--rm",
        "--mount",
        "type=volume,source=dvol,target=/d,readonly",
        "busybox",
        "cat",
        "/d/f",
    ])
    .ok("docker run --mount");
    assert_eq!(read, "hi");
    let out = docker(&["volume", "rm", "dvol"]);
    out.expect_failure("removing a volume in use");
    assert!(
        out.stderr_text().contains("volume is in use"),
        "{}",
        out.stderr_text()
    );

    let from = docker(&[
        "run",
        "--rm",
        "--volumes-from",
        "dw:ro",
        "busybox",
        "cat",
        "/data/f",
    ])
    .ok("--volumes-from");
    assert_eq!(from, "hi");
    let ps = docker(&["ps", "-a", "--format", "{{.Mounts}}"]).ok("ps mounts");
    assert!(ps.contains("dvol"), "{ps}");
    let by_volume = docker(&[
        "ps",
        "-a",
        "--format",
        "{{.Names}}",
        "--filter",
        "volume=dvol",
    ])
    .ok("ps --filter volume=");
    assert_eq!(by_volume, "dw");
    let by_other = docker(&["ps", "-a", "-q", "--filter", "volume=nothing-here"])
        .ok("ps --filter volume= without a match");
    assert!(by_other.is_empty(), "{by_other}");
    let df = docker(&["system", "df", "-v"]).ok("system df -v");
    assert!(df.contains("dvol"), "{df}");

    docker(&["rm", "dw"]).ok("rm dw");
    assert_eq!(docker(&["volume", "rm", "dvol"]).ok("volume rm"), "dvol");
    docker(&["volume", "create", "keep"]).ok("volume create keep");
    let pruned = docker(&["volume", "prune", "-f"]).ok("volume prune");
    assert!(!pruned.contains("keep"), "{pruned}");
    let pruned = docker(&["volume", "prune", "-f", "--all"]).ok("volume prune --all");
    assert!(pruned.contains("keep"), "{pruned}");
    let left = docker(&["volume", "ls", "-q"]).ok("volume ls after prune");
    assert!(left.is_empty(), "{left}");

    // `--until 0s` is whole seconds: let the last event's second pass.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let events = d
        .docker_with(
            &[
                "events",
                "--since",
                "1m",
                "--until",
                "0s",
                "--filter",
                "type=volume",
            ],
            None,
            std::time::Duration::from_secs(30),
        )
        .unwrap()
        .ok("docker events --filter type=volume");
    for action in ["create", "mount", "unmount", "destroy"] {
        assert!(
            events.contains(&format!("volume {action} dvol")),
            "no `volume {action}` event:\n{events}"
        );
    }
}

#[test]
fn image_volumes_become_anonymous_volumes() {
    let d = daemon_or_skip!(TestDaemon::start());
    let tar = std::fs::read(berth_e2e::fixtures::busybox_rootfs_tar()).unwrap();
    let r = d.api(
        "POST",
        "/images/create?fromSrc=-&repo=withvol&tag=latest&changes=VOLUME%20%2Fhome",
        Some(("application/x-tar", &tar)),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let home = d
        .berth(&["run", "--name", "iv", "withvol", "ls", "/home"])
        .ok("run an image with a VOLUME");
    assert_eq!(
        home, "bbuser",
        "the image's content is copied into the volume"
    );
    let mounts = d.inspect_container("iv")["Mounts"].clone();
    assert_eq!(mounts[0]["Destination"], "/home", "{mounts}");
    assert_eq!(mounts[0]["Name"].as_str().unwrap().len(), 64, "{mounts}");
    assert_eq!(volume_names(&d).len(), 1);
    d.berth(&["rm", "-v", "iv"]).ok("rm -v");
    assert!(volume_names(&d).is_empty());

    // An explicit mount at the VOLUME's path replaces the anonymous volume.
    d.berth(&["run", "--rm", "-v", "named:/home", "withvol", "true"])
        .ok("run with a named volume over the VOLUME");
    assert_eq!(volume_names(&d), vec!["named".to_string()]);

    // --volumes-from inherits the mounts, read-only when asked.
    d.berth(&[
        "create",
        "--name",
        "src",
        "-v",
        "named:/data",
        "withvol",
        "true",
    ])
    .ok("create the source");
    d.berth(&[
        "run",
        "--rm",
        "--volumes-from",
        "src:ro",
        "withvol",
        "sh",
        "-c",
        "echo x > /data/f",
    ])
    .expect_failure("a write through a read-only --volumes-from");
    d.berth(&[
        "run",
        "--rm",
        "--volumes-from",
        "src",
        "withvol",
        "sh",
        "-c",
        "echo x > /data/f",
    ])
    .ok("a write through --volumes-from");
    assert!(mountpoint(&d, "named").join("f").is_file());
}

/// `GET /system/df`'s volumes by name: (size, reference count).
fn df_volumes(d: &TestDaemon) -> std::collections::BTreeMap<String, (i64, i64)> {
    let (status, body) = d.api_get("/system/df");
    assert_eq!(status, 200, "system df: {body}");
    let df: serde_json::Value = serde_json::from_str(&body).unwrap();
    df["Volumes"]
        .as_array()
        .unwrap_or_else(|| panic!("no Volumes in {df}"))
        .iter()
        .map(|v| {
            let usage = &v["UsageData"];
            (
                v["Name"].as_str().unwrap().to_string(),
                (
                    usage["Size"].as_i64().unwrap(),
                    usage["RefCount"].as_i64().unwrap(),
                ),
            )
        })
        .collect()
}

#[test]
fn volume_sizes_and_links_in_system_df_match_docker() {
    let d = daemon_or_skip!(daemon_with_busybox());
    // 100 KiB, a hard link to it (counted once) and a symlink (counted by its length).
    d.berth(&[
        "run",
        "--name",
        "dfw",
        "-v",
        "dfdata:/data",
        "-v",
        "/anon",
        "busybox",
        "sh",
        "-c",
        "dd if=/dev/zero of=/data/f bs=1024 count=100 2>/dev/null && ln /data/f /data/g \
         && ln -s f /data/s && mkdir /data/d && printf abc > /data/d/t && printf xyz > /anon/x",
    ])
    .ok("write into the volumes");
    d.berth(&[
        "create",
        "--name",
        "dfr",
        "-v",
        "dfdata:/data",
        "busybox",
        "true",
    ])
    .ok("a second (never started) user");
    d.berth(&["volume", "create", "dfidle"])
        .ok("an unused volume");
    let (status, v) = create_volume(
        &d,
        r#"{"Name":"dftmp","DriverOpts":{"type":"tmpfs","device":"tmpfs"}}"#,
    );
    assert_eq!(status, 201, "{v}");
    let anon = d.inspect_container("dfw")["Mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["Destination"] == "/anon")
        .and_then(|m| m["Name"].as_str())
        .unwrap()
        .to_string();

    // As moby's: every container naming the volume counts, running or not; a volume with
    // driver options is no local disk and is left out.
    let df = df_volumes(&d);
    let data_size = 102_400 + "f".len() as i64 + 3;
    assert_eq!(df.get("dfdata"), Some(&(data_size, 2)), "{df:?}");
    assert_eq!(df.get(&anon), Some(&(3, 1)), "{df:?}");
    assert_eq!(df.get("dfidle"), Some(&(0, 0)), "{df:?}");
    assert!(!df.contains_key("dftmp"), "{df:?}");
    assert_eq!(df.len(), 3, "{df:?}");

    if docker_available() {
        let verbose = d
            .docker(&["system", "df", "-v"])
            .unwrap()
            .ok("docker system df -v");
        let table: Vec<Vec<String>> = verbose
            .split("Local Volumes space usage:")
            .nth(1)
            .unwrap_or_else(|| panic!("no volume table:\n{verbose}"))
            .trim_start()
            .lines()
            .take_while(|l| !l.trim().is_empty())
            .map(|l| l.split_whitespace().map(str::to_string).collect())
            .collect();
        assert_eq!(table[0], ["VOLUME", "NAME", "LINKS", "SIZE"], "{verbose}");
        let row = |name: &str| {
            table
                .iter()
                .find(|r| r[0] == name)
                .unwrap_or_else(|| panic!("{name} not listed:\n{verbose}"))[1..]
                .to_vec()
        };
        assert_eq!(row("dfdata"), ["2", "102.4kB"], "{verbose}");
        assert_eq!(row(&anon), ["1", "3B"], "{verbose}");
        assert_eq!(row("dfidle"), ["0", "0B"], "{verbose}");
        assert!(!verbose.contains("dftmp"), "{verbose}");
        let summary = d.docker(&["system", "df"]).unwrap().ok("docker system df");
        let volumes = summary
            .lines()
            .find(|l| l.starts_with("Local Volumes"))
            .unwrap_or_else(|| panic!("no volume line:\n{summary}"));
        assert_eq!(
            volumes.split_whitespace().collect::<Vec<_>>(),
            ["Local", "Volumes", "3", "2", "102.4kB", "0B", "(0%)"],
            "{summary}"
        );
    }
    d.berth(&["rm", "-v", "dfw", "dfr"]).ok("rm");
    let df = df_volumes(&d);
    assert_eq!(df.get("dfdata"), Some(&(data_size, 0)), "{df:?}");
    assert!(
        !df.contains_key(&anon),
        "rm -v took the anonymous volume: {df:?}"
    );
}

#[test]
fn volume_prune_takes_anonymous_ones_unless_all_and_honours_labels() {
    let d = daemon_or_skip!(daemon_with_busybox());
    let prune = |query: &str| {
        let r = d.api("POST", &format!("/volumes/prune{query}"), None);
        (r.status, r.json())
    };
    let filters = |json: &str| {
        let mut encoded = String::new();
        for b in json.bytes() {
            if b.is_ascii_alphanumeric() {
                encoded.push(b as char);
            } else {
                encoded.push_str(&format!("%{b:02X}"));
            }
        }
        format!("?filters={encoded}")
    };
    // An anonymous volume left by a container removed without -v, named ones with and
    // without labels, one in use and one backed by a tmpfs.
    d.berth(&[
        "run",
        "--name",
        "pleft",
        "-v",
        "/left",
        "busybox",
        "sh",
        "-c",
        "printf 12345 > /left/f",
    ])
    .ok("leave an anonymous volume");
    let anon = d.inspect_container("pleft")["Mounts"][0]["Name"]
        .as_str()
        .unwrap()
        .to_string();
    d.berth(&["rm", "pleft"]).ok("rm without -v");
    for (name, labels) in [
        ("pa", r#"{"team":"a"}"#),
        ("pb", r#"{"team":"b"}"#),
        ("pplain", "{}"),
    ] {
        let (status, v) = create_volume(&d, &format!(r#"{{"Name":"{name}","Labels":{labels}}}"#));
        assert_eq!(status, 201, "{v}");
    }
    let (status, v) = create_volume(
        &d,
        r#"{"Name":"ptmp","DriverOpts":{"type":"tmpfs","device":"tmpfs"}}"#,
    );
    assert_eq!(status, 201, "{v}");
    d.berth(&[
        "create",
        "--name",
        "puser",
        "-v",
        "pused:/data",
        "busybox",
        "true",
    ])
    .ok("a volume in use");

    // Refusals, before anything goes.
    let (status, body) = prune(&filters(r#"{"all":["maybe"]}"#));
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("invalid filter 'all'"),
        "{body}"
    );
    let (status, body) = prune(&filters(r#"{"all":["true","false"]}"#));
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("only one value is expected"),
        "{body}"
    );
    let (status, body) = prune(&filters(r#"{"dangling":["true"]}"#));
    assert_eq!(status, 400, "{body}");

    // By default: anonymous volumes only, with their size.
    let (status, body) = prune("");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["VolumesDeleted"], serde_json::json!([anon]), "{body}");
    assert_eq!(body["SpaceReclaimed"], 5, "{body}");
    let mut left = volume_names(&d);
    left.sort();
    assert_eq!(left, ["pa", "pb", "pplain", "ptmp", "pused"]);

    // `all` with `label!`: every unused named volume without the label.
    let (status, body) = prune(&filters(r#"{"all":["1"],"label!":["team=a"]}"#));
    assert_eq!(status, 200, "{body}");
    let mut deleted: Vec<String> = serde_json::from_value(body["VolumesDeleted"].clone()).unwrap();
    deleted.sort();
    assert_eq!(deleted, ["pb", "pplain"], "{body}");
    // `label` narrows to the labelled ones; without `all` named volumes stay.
    let (status, body) = prune(&filters(r#"{"label":["team=a"]}"#));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["VolumesDeleted"], serde_json::json!([]), "{body}");
    let (status, body) = prune(&filters(r#"{"all":["true"],"label":["team=a"]}"#));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["VolumesDeleted"], serde_json::json!(["pa"]), "{body}");
    // What is in use or has driver options is never pruned.
    let (status, body) = prune(&filters(r#"{"all":["true"]}"#));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["VolumesDeleted"], serde_json::json!([]), "{body}");
    assert_eq!(volume_names(&d), ["ptmp", "pused"]);

    if docker_available() {
        let docker = |args: &[&str]| d.docker(args).expect("docker_available() was checked");
        docker(&["rm", "puser"]).ok("rm puser");
        docker(&["volume", "create", "--label", "keep=1", "pkeep"]).ok("volume create");
        docker(&["run", "--rm", "-v", "/gone", "busybox", "true"]).ok("run --rm");
        docker(&["run", "--name", "pd", "-v", "/kept", "busybox", "true"]).ok("run");
        docker(&["rm", "pd"]).ok("rm pd");
        let out = docker(&["volume", "prune", "-f"]).ok("docker volume prune");
        assert!(out.contains("Deleted Volumes:"), "{out}");
        assert!(!out.contains("pused") && !out.contains("pkeep"), "{out}");
        let out = docker(&["volume", "prune", "-af", "--filter", "label!=keep"])
            .ok("docker volume prune -a --filter label!=");
        assert!(out.contains("pused") && !out.contains("pkeep"), "{out}");
        let out = docker(&["volume", "prune", "-f", "--filter", "all=true"])
            .ok("docker volume prune --filter all=true");
        assert!(out.contains("pkeep"), "{out}");
        assert_eq!(volume_names(&d), ["ptmp"]);
    } else {
        d.berth(&["rm", "puser"]).ok("rm puser");
    }

    // Each prune is an event with what it reclaimed.
    let (status, events) = d.api_get(&format!(
        "/events?since=0&until={}&filters={}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 1,
        "%7B%22type%22%3A%5B%22volume%22%5D%7D"
    ));
    assert_eq!(status, 200, "{events}");
    assert!(
        events.contains(r#""Action":"prune""#) && events.contains(r#""reclaimed":"5""#),
        "{events}"
    );
}

/// As with moby 23+, `volume create` without a name makes an anonymous volume, which a plain
/// `volume prune` removes; a container that mounted it by name does not take it along on
/// `rm -v`, while a container's own anonymous volume goes with it.
#[test]
fn unnamed_volume_create_is_anonymous_but_kept_by_rm_v_when_mounted_by_name() {
    let d = daemon_or_skip!(daemon_with_busybox());
    let id = d
        .berth(&["volume", "create"])
        .ok("volume create without a name");
    let labels = d
        .berth(&["volume", "inspect", "-f", "{{json .Labels}}", &id])
        .ok("volume inspect");
    assert!(labels.contains("com.docker.volume.anonymous"), "{labels}");
    let mounted = format!("{id}:/data");
    d.berth(&[
        "run", "-d", "--name", "byname", "-v", &mounted, "-v", "/own", "busybox", "sleep", "60",
    ])
    .ok("run with the volume by name and an anonymous one");
    let own = d.inspect_container("byname")["Mounts"]
        .as_array()
        .expect("Mounts")
        .iter()
        .find(|m| m["Destination"] == "/own")
        .and_then(|m| m["Name"].as_str())
        .expect("the /own volume")
        .to_string();
    d.berth(&["rm", "-f", "-v", "byname"]).ok("rm -f -v");
    let names = volume_names(&d);
    assert!(
        names.contains(&id),
        "rm -v removed the volume mounted by name: {names:?}"
    );
    assert!(
        !names.contains(&own),
        "rm -v kept the container's own anonymous volume: {names:?}"
    );
    d.berth(&["volume", "prune", "-f"]).ok("volume prune");
    let names = volume_names(&d);
    assert!(
        !names.contains(&id),
        "prune kept the unused anonymous volume: {names:?}"
    );
    if docker_available() {
        let id = d
            .docker(&["volume", "create"])
            .expect("docker")
            .ok("docker volume create");
        d.docker(&["volume", "prune", "-f"])
            .expect("docker")
            .ok("docker volume prune");
        assert!(
            !volume_names(&d).contains(&id),
            "docker volume prune kept {id}"
        );
    }
}
