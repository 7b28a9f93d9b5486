//! `system df` (summary, `-v` tables, `--format`) printed by berth and by the real docker
//! CLI against the same daemon, the images' `SharedSize`, `type=` on `GET /system/df`, and
//! `volume prune` for clients older than API 1.42.

use berth_e2e::{OutputExt, TestDaemon};

use crate::util::{build_via_api, daemon_or_skip, daemon_with_busybox};

/// Two images on busybox's layer, a running container using a volume with data, a stopped
/// container with a written file, an unused anonymous volume, and build cache entries that
/// no image ends on.
fn populate(d: &TestDaemon) {
    build_via_api(
        d,
        "dfa:1",
        "FROM busybox\nRUN echo one > /one\nRUN head -c 3000 /dev/zero > /a\n",
    );
    build_via_api(
        d,
        "dfb:1",
        "FROM busybox\nRUN echo two > /two\nRUN head -c 7000 /dev/zero > /b\n",
    );
    d.berth(&[
        "run",
        "-d",
        "--name",
        "dfweb",
        "-v",
        "dfdata:/data",
        "dfa:1",
        "sleep",
        "1000",
    ])
    .ok("run dfweb");
    d.berth(&[
        "exec",
        "dfweb",
        "sh",
        "-c",
        "head -c 5000 /dev/zero > /data/blob",
    ])
    .ok("write into the volume");
    d.berth(&[
        "run",
        "--name",
        "dfstopped",
        "dfb:1",
        "sh",
        "-c",
        "head -c 2000 /dev/zero > /written",
    ])
    .ok("run dfstopped");
    d.berth(&["volume", "create"]).ok("volume create");
}

/// A table's lines as cells (columns are at least three spaces apart), with the cells that
/// depend on the clock (`… ago`, `Up …`) masked.
fn masked_cells(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .map(|line| {
            line.split("   ")
                .map(str::trim)
                .filter(|cell| !cell.is_empty())
                .map(|cell| {
                    if cell.ends_with(" ago") || cell.starts_with("Up ") {
                        "<time>".to_string()
                    } else {
                        cell.to_string()
                    }
                })
                .collect()
        })
        .collect()
}

/// Drops the clock-dependent fields of `-v --format json` output.
fn without_times(mut value: serde_json::Value) -> serde_json::Value {
    for (kind, keys) in [
        ("Images", &["CreatedSince"][..]),
        ("Containers", &["RunningFor", "Status"][..]),
        ("BuildCache", &["CreatedSince", "LastUsedSince"][..]),
    ] {
        for row in value[kind].as_array_mut().into_iter().flatten() {
            if let Some(fields) = row.as_object_mut() {
                for key in keys {
                    fields.remove(*key);
                }
            }
        }
    }
    value
}

#[test]
fn system_df_matches_docker_cli() {
    let d = daemon_or_skip!(daemon_with_busybox());
    populate(&d);
    let Some(docker) = d.docker(&["system", "df"]) else {
        return;
    };
    let ours = d.berth(&["system", "df"]);
    assert_eq!(ours.ok("berth system df"), docker.ok("docker system df"));
    let summary = ours.stdout_text();
    assert!(
        summary.contains("\nImages          3         2"),
        "{summary}"
    );
    assert!(
        summary.contains("\nContainers      2         1"),
        "{summary}"
    );
    assert!(
        summary.contains("\nLocal Volumes   2         1"),
        "{summary}"
    );

    for format in ["json", "{{.Type}}: {{.Size}} {{.Reclaimable}}", "raw"] {
        let want = d
            .docker(&["system", "df", "--format", format])
            .unwrap()
            .ok(&format!("docker system df --format {format}"));
        let got = d
            .berth(&["system", "df", "--format", format])
            .ok(&format!("berth system df --format {format}"));
        assert_eq!(got, want, "--format {format}");
    }

    let docker = d.docker(&["system", "df", "-v"]).unwrap();
    let ours = d.berth(&["system", "df", "-v"]);
    let (want, got) = (
        docker.ok("docker system df -v"),
        ours.ok("berth system df -v"),
    );
    assert_eq!(
        masked_cells(&got),
        masked_cells(&want),
        "\n{got}\n---\n{want}"
    );
    for section in [
        "Images space usage:\n\nREPOSITORY",
        "\nContainers space usage:\n\nCONTAINER ID",
        "\nLocal Volumes space usage:\n\nVOLUME NAME",
        "\nBuild cache usage: ",
    ] {
        assert!(got.contains(section), "{section:?} in\n{got}");
    }
    // Both images built on busybox share its layer.
    let shared_rows = got
        .lines()
        .filter(|l| l.starts_with("dfa ") || l.starts_with("dfb "))
        .count();
    assert_eq!(shared_rows, 2, "{got}");

    let docker = d
        .docker(&["system", "df", "-v", "--format", "json"])
        .unwrap();
    let ours = d.berth(&["system", "df", "-v", "--format", "json"]);
    let (want, got) = (docker.stdout_text(), ours.stdout_text());
    let parse = |text: &str| -> serde_json::Value {
        serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
    };
    assert_eq!(without_times(parse(&got)), without_times(parse(&want)));
    // One object in docker's field order, ending as docker's does.
    assert!(got.starts_with("{\"Images\":["), "{got}");
    assert_eq!(got.ends_with('\n'), want.ends_with('\n'), "{got:?}");
    // Rows are marshalled by Go's json.Marshal, which escapes HTML characters.
    assert!(got.contains(r"/dev/zero \u003e /written"), "{got}");

    let format = "{{range .Images}}{{.Repository}}:{{.Tag}} {{.Size}} {{.SharedSize}} {{.UniqueSize}} {{.Containers}}\n{{end}}{{range .Volumes}}{{.Name}} {{.Links}} {{.Size}}\n{{end}}";
    let want = d
        .docker(&["system", "df", "-v", "--format", format])
        .unwrap()
        .stdout_text();
    let got = d
        .berth(&["system", "df", "-v", "--format", format])
        .stdout_text();
    assert_eq!(got, want);
}

#[test]
fn system_df_shared_sizes_and_types() {
    let d = daemon_or_skip!(daemon_with_busybox());
    populate(&d);
    let r = d.api("GET", "/system/df", None);
    assert_eq!(r.status, 200, "{}", r.text());
    let df = r.json();
    let images = df["Images"].as_array().expect("images");
    let busybox = d.inspect_image("busybox").expect("busybox")["Size"]
        .as_i64()
        .unwrap();
    let by_tag = |tag: &str| {
        images
            .iter()
            .find(|i| i["RepoTags"][0] == tag)
            .unwrap_or_else(|| panic!("{tag} in {df}"))
    };
    for tag in ["dfa:1", "dfb:1", "busybox:latest"] {
        let image = by_tag(tag);
        assert!(image["SharedSize"].as_i64().unwrap() > 0, "{image}");
        // Only busybox's layers are shared: each built image's own layers are unique.
        assert_eq!(image["SharedSize"].as_i64(), Some(busybox), "{image}");
    }
    assert_eq!(by_tag("dfa:1")["Containers"], 1, "{df}");
    assert_eq!(by_tag("dfb:1")["Containers"], 1, "{df}");
    assert_eq!(by_tag("busybox:latest")["Containers"], 0, "{df}");
    // Every distinct layer once: busybox's, then each image's own.
    let own: i64 = ["dfa:1", "dfb:1"]
        .iter()
        .map(|t| by_tag(t)["Size"].as_i64().unwrap() - busybox)
        .sum();
    assert_eq!(df["LayersSize"].as_i64(), Some(busybox + own), "{df}");

    // `type=` returns only the kinds asked for.
    let only = |query: &str| {
        let r = d.api("GET", &format!("/system/df?{query}"), None);
        assert_eq!(r.status, 200, "{query}: {}", r.text());
        r.json()
    };
    let images_only = only("type=image");
    assert_eq!(images_only["Images"], df["Images"]);
    assert_eq!(images_only["LayersSize"], df["LayersSize"]);
    for kind in ["Containers", "Volumes", "BuildCache"] {
        assert!(images_only[kind].is_null(), "{kind}: {images_only}");
    }
    let two = only("type=volume&type=build-cache");
    assert!(
        two["Images"].is_null() && two["Containers"].is_null(),
        "{two}"
    );
    assert_eq!(two["LayersSize"], 0, "{two}");
    assert_eq!(two["Volumes"].as_array().map(Vec::len), Some(2), "{two}");
    assert!(!two["BuildCache"].as_array().unwrap().is_empty(), "{two}");
    let containers = only("type=container")["Containers"].clone();
    assert_eq!(containers.as_array().map(Vec::len), Some(2), "{containers}");
    let r = d.api("GET", "/system/df?type=images", None);
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["message"], "unknown object type: images");
    // Before API 1.42 there was no `type`: everything comes back.
    let old = only_versioned(&d, "/v1.41/system/df?type=image");
    for kind in ["Images", "Containers", "Volumes", "BuildCache"] {
        assert!(old[kind].is_array(), "{kind}: {old}");
    }
    assert!(old["Images"][0]["VirtualSize"].is_i64(), "{old}");
}

fn only_versioned(d: &TestDaemon, path: &str) -> serde_json::Value {
    let r = d.api("GET", path, None);
    assert_eq!(r.status, 200, "{path}: {}", r.text());
    r.json()
}

#[test]
fn volume_prune_below_api_1_42_takes_named_volumes() {
    let d = daemon_or_skip!(daemon_with_busybox());
    d.berth(&["volume", "create", "dfnamed"])
        .ok("volume create dfnamed");
    // A container's anonymous volume outlives it without `rm -v`.
    d.berth(&["run", "--name", "dfanon", "-v", "/data", "busybox", "true"])
        .ok("run with an anonymous volume");
    d.berth(&["rm", "dfanon"]).ok("rm dfanon");
    let anonymous = d.berth(&["volume", "ls", "-q"]).ok("volume ls");
    let anonymous: Vec<&str> = anonymous.lines().filter(|v| *v != "dfnamed").collect();
    assert_eq!(anonymous.len(), 1, "{anonymous:?}");
    let r = d.api("POST", "/v1.44/volumes/prune", None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["VolumesDeleted"], serde_json::json!(anonymous));
    let r = d.api("POST", "/v1.41/volumes/prune", None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["VolumesDeleted"], serde_json::json!(["dfnamed"]));
    // An explicit `all=true` from an old client is the same request, not two values.
    d.berth(&["volume", "create", "dfnamed2"])
        .ok("volume create dfnamed2");
    let r = d.api(
        "POST",
        "/v1.41/volumes/prune?filters=%7B%22all%22%3A%7B%22true%22%3Atrue%7D%7D",
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["VolumesDeleted"], serde_json::json!(["dfnamed2"]));
}
