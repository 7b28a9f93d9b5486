//! Builds through `POST /build` (the classic builder protocol the docker CLI, docker-py and
//! compose speak) and the real docker CLI: steps, the layer cache, multi-stage, failures.

use std::time::Duration;

use berth_e2e::fixtures::RawTar;
use berth_e2e::{OutputExt, TestDaemon};

use crate::util::{daemon_or_skip, daemon_with_busybox, lines};

/// What a build answered: the stream text, the image ID from `aux`, the error if any.
struct Built {
    text: String,
    id: Option<String>,
    error: Option<String>,
}

fn build(d: &TestDaemon, query: &str, context: &[u8]) -> Built {
    let res = d.api(
        "POST",
        &format!("/v1.41/build?version=1&{query}"),
        Some(("application/x-tar", context)),
    );
    assert_eq!(res.status, 200, "{}", String::from_utf8_lossy(&res.body));
    assert_eq!(res.header("content-type"), Some("application/json"));
    let mut built = Built {
        text: String::new(),
        id: None,
        error: None,
    };
    for line in res.body.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let m: serde_json::Value = serde_json::from_slice(line)
            .unwrap_or_else(|e| panic!("bad message {}: {e}", String::from_utf8_lossy(line)));
        if let Some(s) = m["stream"].as_str() {
            built.text.push_str(s);
        }
        if let Some(id) = m["aux"]["ID"].as_str() {
            built.id = Some(id.to_string());
        }
        if let Some(e) = m["errorDetail"]["message"].as_str() {
            built.error = Some(e.to_string());
        }
    }
    built
}

fn context(files: &[(&str, &str)]) -> Vec<u8> {
    let mut tar = RawTar::new();
    for (path, content) in files {
        tar.file(path, 0o644, content.as_bytes());
    }
    tar.finish()
}

fn ok(built: Built) -> (String, String) {
    assert!(
        built.error.is_none(),
        "build failed: {:?}\n{}",
        built.error,
        built.text
    );
    let id = built
        .id
        .unwrap_or_else(|| panic!("no aux ID:\n{}", built.text));
    (id, built.text)
}

/// `ps -a` rows: build step containers must not outlive their step.
fn containers(d: &TestDaemon) -> Vec<String> {
    lines(&d.berth(&["ps", "-aq"]).ok("ps -aq"))
}

const APP: &str = "FROM busybox
WORKDIR /app
COPY hello.txt ./
RUN echo built > /app/built.txt && cat /app/hello.txt
ENV GREETING=hi
LABEL purpose=test
EXPOSE 8080
USER 1000:1000
HEALTHCHECK --interval=5s CMD true
CMD [\"cat\", \"/app/built.txt\"]
";

#[test]
fn build_runs_steps_then_answers_from_the_cache() {
    let d = daemon_or_skip!(daemon_with_busybox());
    let files = [
        ("Dockerfile", APP),
        ("hello.txt", "hello from the context\n"),
    ];
    let (id, text) = ok(build(&d, "t=app:1", &context(&files)));
    assert!(text.contains("Step 1/10 : FROM busybox"), "{text}");
    assert!(text.contains("Step 4/10 : RUN echo built"), "{text}");
    assert!(text.contains(" ---> Running in "), "{text}");
    assert!(
        text.contains("hello from the context"),
        "the step's output is streamed:\n{text}"
    );
    assert!(
        text.contains(&format!("Successfully built {}", &id[7..19])),
        "{text}"
    );
    assert!(text.contains("Successfully tagged app:1"), "{text}");
    assert!(
        containers(&d).is_empty(),
        "step containers were left behind"
    );

    let out = d.berth(&["run", "--rm", "app:1"]).ok("run app:1");
    assert_eq!(out, "built");
    let image = d.inspect_image("app:1").expect("app:1 exists");
    let config = &image["Config"];
    assert!(
        config["Env"]
            .as_array()
            .unwrap()
            .contains(&"GREETING=hi".into()),
        "{config}"
    );
    assert_eq!(config["Labels"]["purpose"], "test");
    assert_eq!(config["WorkingDir"], "/app");
    assert_eq!(config["User"], "1000:1000");
    assert!(config["ExposedPorts"].get("8080/tcp").is_some(), "{config}");
    assert_eq!(
        config["Healthcheck"]["Test"],
        serde_json::json!(["CMD-SHELL", "true"])
    );
    assert_eq!(config["Healthcheck"]["Interval"], 5_000_000_000u64);
    let history = d.berth(&["history", "--no-trunc", "app:1"]).ok("history");
    assert!(history.contains("COPY hello.txt ./"), "{history}");
    assert!(history.contains("RUN /bin/sh -c echo built"), "{history}");

    // Same inputs: every step is cached, nothing runs.
    let (again, text) = ok(build(&d, "t=app:2", &context(&files)));
    assert_eq!(again, id, "a fully cached rebuild gives the same image");
    assert_eq!(text.matches(" ---> Using cache").count(), 2, "{text}");
    assert!(!text.contains("Running in"), "{text}");

    // A changed file invalidates its COPY and everything after it.
    let changed = [("Dockerfile", APP), ("hello.txt", "changed\n")];
    let (_, text) = ok(build(&d, "t=app:3", &context(&changed)));
    assert!(!text.contains("Using cache"), "{text}");
    assert!(text.contains("changed"), "{text}");

    // --no-cache runs again; the cache shows in system df and prune empties it.
    let (_, text) = ok(build(&d, "nocache=1", &context(&files)));
    assert!(!text.contains("Using cache"), "{text}");
    let df = d.api_get("/system/df").1;
    let df: serde_json::Value = serde_json::from_str(&df).unwrap();
    assert!(
        df["BuildCache"].as_array().is_some_and(|c| !c.is_empty()),
        "{df}"
    );
    let res = d.api("POST", "/build/prune?all=1", None);
    assert_eq!(res.status, 200);
    let pruned: serde_json::Value = serde_json::from_slice(&res.body).unwrap();
    assert!(
        !pruned["CachesDeleted"].as_array().unwrap().is_empty(),
        "{pruned}"
    );
    let (_, text) = ok(build(&d, "", &context(&files)));
    assert!(
        !text.contains("Using cache"),
        "pruned cache still answered:\n{text}"
    );
    // The images built before the prune still run.
    assert_eq!(d.berth(&["run", "--rm", "app:1"]).ok("run app:1"), "built");
}

#[test]
fn multi_stage_from_scratch_with_target_and_dockerignore() {
    let d = daemon_or_skip!(daemon_with_busybox());
    let dockerfile = "FROM busybox AS builder
RUN mkdir -p /out && echo compiled > /out/app && echo skipped > /out/other
FROM busybox AS unused
RUN exit 1
FROM scratch AS final
COPY --from=builder /out/app /app
COPY . /ctx/
FROM busybox AS test
COPY --from=final / /final/
RUN test \"$(cat /final/app)\" = compiled && ls -R /final/ctx
";
    let files = [
        ("Dockerfile", dockerfile),
        (".dockerignore", "secret.txt\n*.log\n!keep.log\n"),
        ("secret.txt", "do not copy"),
        ("a.log", "ignored"),
        ("keep.log", "kept"),
        ("main.go", "package main"),
    ];
    let built = build(&d, "t=multi:test&target=test", &context(&files));
    let (_, text) = ok(built);
    assert!(
        !text.contains("exit 1"),
        "the unused stage was built:\n{text}"
    );
    assert!(
        text.contains("keep.log") && text.contains("main.go"),
        "{text}"
    );
    assert!(
        !text.contains("secret.txt") && !text.contains("a.log"),
        "{text}"
    );

    // The scratch stage alone is an image with only what was copied.
    let (id, _) = ok(build(&d, "t=multi:final&target=final", &context(&files)));
    let image = d.inspect_image(&id).unwrap();
    assert_eq!(image["RootFS"]["Layers"].as_array().unwrap().len(), 2);
}

#[test]
fn a_failing_step_reports_its_code_and_tags_nothing() {
    let d = daemon_or_skip!(daemon_with_busybox());
    let dockerfile = "FROM busybox\nRUN echo before-failing\nRUN echo about to fail && exit 3\n";
    let built = build(&d, "t=broken:1", &context(&[("Dockerfile", dockerfile)]));
    let error = built.error.expect("the build fails");
    assert!(
        error.contains("returned a non-zero code: 3") && error.contains("line 3"),
        "{error}"
    );
    assert!(built.text.contains("about to fail"), "{}", built.text);
    assert!(built.id.is_none());
    assert!(d.inspect_image("broken:1").is_none());
    assert!(
        containers(&d).is_empty(),
        "the failed step's container was left behind"
    );
    // The step that succeeded is cached.
    let built = build(&d, "t=broken:1", &context(&[("Dockerfile", dockerfile)]));
    assert!(built.text.contains("Using cache"), "{}", built.text);
}

#[test]
fn bad_dockerfiles_stop_before_running_anything() {
    let d = daemon_or_skip!(daemon_with_busybox());
    let cases = [
        ("FROM busybox\nRUN echo hi\nFROBNICATE x\n", "line 3"),
        (
            "FROM busybox\nRUN echo started\nCOPY missing.txt /\n",
            "missing.txt",
        ),
        ("FROM busybox\nCOPY ../outside /\n", "outside"),
    ];
    for (dockerfile, expected) in cases {
        let built = build(&d, "", &context(&[("Dockerfile", dockerfile)]));
        let error = built.error.unwrap_or_else(|| panic!("{dockerfile} built"));
        assert!(error.contains(expected), "{dockerfile}: {error}");
        assert!(
            !built.text.contains("Running in"),
            "{dockerfile}: a step ran:\n{}",
            built.text
        );
    }
    let built = build(
        &d,
        "dockerfile=Nope",
        &context(&[("Dockerfile", "FROM busybox\n")]),
    );
    assert!(
        built
            .error
            .unwrap()
            .contains("Cannot locate specified Dockerfile: Nope")
    );
    assert!(containers(&d).is_empty());
}

#[test]
fn reproducible_builds_give_the_same_image_id() {
    let d = daemon_or_skip!(daemon_with_busybox());
    let dockerfile = "FROM busybox\nCOPY a.txt /a.txt\nRUN date > /stamp && echo x > /x\n";
    let files = [("Dockerfile", dockerfile), ("a.txt", "same")];
    let query = "nocache=1&buildargs=%7B%22SOURCE_DATE_EPOCH%22%3A%221700000000%22%7D";
    let (first, _) = ok(build(&d, query, &context(&files)));
    std::thread::sleep(Duration::from_millis(1100));
    let (second, _) = ok(build(&d, query, &context(&files)));
    // `date` differs between the runs, so the files differ: only COPY layers match.
    let a = d.inspect_image(&first).unwrap();
    let b = d.inspect_image(&second).unwrap();
    assert_eq!(
        a["RootFS"]["Layers"][1], b["RootFS"]["Layers"][1],
        "COPY layers differ"
    );
    assert_eq!(a["Created"], b["Created"]);

    let stable = "FROM busybox\nCOPY a.txt /a.txt\nRUN echo x > /x\n";
    let files = [("Dockerfile", stable), ("a.txt", "same")];
    let (first, _) = ok(build(&d, query, &context(&files)));
    std::thread::sleep(Duration::from_millis(1100));
    let (second, _) = ok(build(&d, query, &context(&files)));
    assert_eq!(first, second, "same inputs and epoch, different image ids");
}

#[test]
fn docker_cli_builds_through_berthd() {
    let d = daemon_or_skip!(daemon_with_busybox());
    let dir = d.scratch().join("docker-ctx");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM busybox\nARG WHO=nobody\nRUN echo \"hello $WHO\" > /greeting\nCMD [\"cat\", \"/greeting\"]\n",
    )
    .unwrap();
    let iid = d.scratch().join("iid");
    let dir_arg = dir.display().to_string();
    let iid_arg = iid.display().to_string();
    let args = [
        "build",
        "-t",
        "viadocker:1",
        "--build-arg",
        "WHO=docker",
        "--iidfile",
        &iid_arg,
        &dir_arg,
    ];
    let Some(out) = d.docker_with(&args, None, Duration::from_secs(120)) else {
        return;
    };
    let stdout = out.ok("docker build");
    assert!(
        stdout.contains("Successfully tagged viadocker:1"),
        "{stdout}"
    );
    let id = std::fs::read_to_string(&iid).expect("docker wrote the iidfile");
    assert!(id.starts_with("sha256:"), "{id}");
    let run = d
        .docker(&["run", "--rm", "viadocker:1"])
        .unwrap()
        .ok("docker run");
    assert_eq!(run, "hello docker");
    let quiet = d
        .docker_with(&["build", "-q", &dir_arg], None, Duration::from_secs(120))
        .unwrap()
        .ok("docker build -q");
    assert!(quiet.starts_with("sha256:"), "{quiet}");
}

/// The shapes of Dockerfile users write every day, on the local busybox image.
#[test]
fn typical_dockerfiles_build_and_run() {
    let d = daemon_or_skip!(daemon_with_busybox());

    // Node style: the dependency layer stays cached while the sources change.
    let node = "FROM busybox
WORKDIR /usr/src/app
COPY package.json ./
RUN echo \"installing $(cat package.json)\" && mkdir node_modules && cp package.json node_modules/.installed
COPY . .
CMD [\"sh\", \"-c\", \"cat node_modules/.installed index.js\"]
";
    let with_source = |source: &str| {
        context(&[
            ("Dockerfile", node),
            ("package.json", "{\"deps\":1}\n"),
            ("index.js", source),
        ])
    };
    ok(build(&d, "t=node:1", &with_source("console.log(1)\n")));
    let (_, text) = ok(build(&d, "t=node:2", &with_source("console.log(2)\n")));
    assert!(
        text.contains("Step 4/6 : RUN echo \"installing") && !text.contains("installing {"),
        "the install step ran again:\n{text}"
    );
    assert_eq!(
        d.berth(&["run", "--rm", "node:2"]).ok("run node:2"),
        "{\"deps\":1}\nconsole.log(2)"
    );

    // Go style: a static binary copied from a builder stage onto scratch.
    let go = "FROM busybox AS build
WORKDIR /src
RUN cp /bin/busybox /src/busybox
FROM scratch
COPY --from=build /src/busybox /busybox
ENTRYPOINT [\"/busybox\"]
CMD [\"echo\", \"static binary on scratch\"]
";
    ok(build(&d, "t=go:1", &context(&[("Dockerfile", go)])));
    assert_eq!(
        d.berth(&["run", "--rm", "go:1"]).ok("run go:1"),
        "static binary on scratch"
    );

    // Python style: a tree with symlinks built in one stage, copied whole into another.
    let python = "FROM busybox AS venv
RUN mkdir -p /opt/venv/bin /opt/venv/lib && echo 'print' > /opt/venv/lib/mod.py \\
 && ln -s /bin/sh /opt/venv/bin/python && ln -s ../lib/mod.py /opt/venv/bin/mod
FROM busybox
COPY --from=venv /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
CMD [\"sh\", \"-c\", \"readlink /opt/venv/bin/python; cat /opt/venv/bin/mod; echo $PATH\"]
";
    ok(build(&d, "t=py:1", &context(&[("Dockerfile", python)])));
    assert_eq!(
        d.berth(&["run", "--rm", "py:1"]).ok("run py:1"),
        "/bin/sh\nprint\n/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    );

    // Non-root USER with files chowned to it, and a HEALTHCHECK.
    let user = "FROM busybox
RUN echo 'app:x:1234:1234::/home/app:/bin/sh' >> /etc/passwd && echo 'app:x:1234:' >> /etc/group \\
 && mkdir -p /home/app && chown app:app /home/app
COPY --chown=app:app data.txt /home/app/
USER app
WORKDIR /home/app
HEALTHCHECK --interval=30s --timeout=3s --retries=2 CMD [\"test\", \"-f\", \"/home/app/data.txt\"]
CMD [\"sh\", \"-c\", \"id -u; stat -c %u:%g data.txt; touch mine && echo wrote\"]
";
    let (id, _) = ok(build(
        &d,
        "t=user:1",
        &context(&[("Dockerfile", user), ("data.txt", "x")]),
    ));
    assert_eq!(
        d.berth(&["run", "--rm", "user:1"]).ok("run user:1"),
        "1234\n1234:1234\nwrote"
    );
    let image = d.inspect_image(&id).unwrap();
    assert_eq!(image["Config"]["User"], "app");
    assert_eq!(
        image["Config"]["Healthcheck"]["Test"],
        serde_json::json!(["CMD", "test", "-f", "/home/app/data.txt"])
    );
    assert_eq!(image["Config"]["Healthcheck"]["Retries"], 2);
}

#[test]
fn a_client_that_goes_away_cancels_the_build() {
    use std::io::{Read, Write};
    let d = daemon_or_skip!(daemon_with_busybox());
    let tar = context(&[(
        "Dockerfile",
        "FROM busybox\nRUN echo started && sleep 300\n",
    )]);
    let mut conn = std::os::unix::net::UnixStream::connect(d.socket()).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    write!(
        conn,
        "POST /build?t=cancelled:1 HTTP/1.1\r\nHost: berth\r\nContent-Type: application/x-tar\r\nContent-Length: {}\r\n\r\n",
        tar.len()
    )
    .unwrap();
    conn.write_all(&tar).unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("started") {
        let n = conn.read(&mut buf).expect("the build streams its output");
        assert!(
            n > 0,
            "stream ended early: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    assert_eq!(containers(&d).len(), 1, "the step runs in a container");
    drop(conn);
    berth_e2e::wait_until(Duration::from_secs(30), "the step container to go", || {
        containers(&d).is_empty()
    });
    assert!(d.inspect_image("cancelled:1").is_none());
}

#[test]
fn run_mounts_cache_bind_and_tmpfs() {
    let d = daemon_or_skip!(daemon_with_busybox());
    let dockerfile = "FROM busybox
RUN --mount=type=cache,target=/cache,sharing=locked echo run >> /cache/runs && wc -l < /cache/runs > /runs-seen
RUN --mount=type=bind,source=input,target=/in cat /in/data.txt > /copied && ! touch /in/new 2>/dev/null
RUN --mount=type=tmpfs,target=/scratch echo temp > /scratch/t && test -f /scratch/t
CMD [\"sh\", \"-c\", \"cat /runs-seen /copied; ls /cache /in /scratch 2>&1 | grep -c 'No such file'\"]
";
    let files = [
        ("Dockerfile", dockerfile),
        ("input/data.txt", "from the context\n"),
    ];
    ok(build(&d, "t=mounts:1", &context(&files)));
    assert_eq!(
        d.berth(&["run", "--rm", "mounts:1"]).ok("run mounts:1"),
        "1\nfrom the context\n3",
        "mounted content must not land in the image"
    );
    // The cache directory outlives the build: a rebuild without the layer cache sees it.
    ok(build(&d, "t=mounts:2&nocache=1", &context(&files)));
    let out = d.berth(&["run", "--rm", "mounts:2"]).ok("run mounts:2");
    assert!(out.starts_with("2\n"), "{out}");
}

#[test]
fn berth_build_reads_a_local_context_in_place_with_secrets() {
    let d = daemon_or_skip!(daemon_with_busybox());
    let dir = d.scratch().join("local-ctx");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM busybox
COPY app.txt /app.txt
RUN --mount=type=secret,id=token cat /run/secrets/token > /seen
RUN --mount=type=bind,target=/ctx touch /ctx/written-by-build 2>/dev/null; echo done
CMD [\"cat\", \"/seen\", \"/app.txt\"]
",
    )
    .unwrap();
    std::fs::write(dir.join("app.txt"), "app\n").unwrap();
    let token = d.scratch().join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let secret = format!("id=token,src={}", token.display());
    let dir_arg = dir.display().to_string();
    let args = [
        "build",
        "--progress",
        "plain",
        "-t",
        "local:1",
        "--secret",
        &secret,
        &dir_arg,
    ];
    let out = d.berth(&args).ok("berth build");
    assert!(
        !out.contains("Sending build context"),
        "a local daemon reads the directory, nothing is sent:\n{out}"
    );
    assert!(out.contains("Successfully tagged local:1"), "{out}");
    assert!(
        !dir.join("written-by-build").exists(),
        "a build wrote into the client's context directory"
    );
    assert_eq!(
        d.berth(&["run", "--rm", "local:1"]).ok("run local:1"),
        "s3cret\napp"
    );
    let leaked = d.berth(&["run", "--rm", "local:1", "ls", "/run/secrets"]);
    assert!(
        String::from_utf8_lossy(&leaked.stdout).trim().is_empty(),
        "the secret is in the image"
    );
    let history = d.berth(&["history", "--no-trunc", "local:1"]).ok("history");
    assert!(!history.contains("s3cret"), "{history}");

    // -q prints only the ID; a cached rebuild keeps it.
    let first = d
        .berth(&["build", "-q", "--secret", &secret, &dir_arg])
        .ok("build -q");
    assert!(first.starts_with("sha256:"), "{first}");
    let again = d
        .berth(&["build", "-q", "--secret", &secret, &dir_arg])
        .ok("build -q again");
    assert_eq!(first, again);
}

/// Serves `body` to every GET on a loopback port, on a thread of its own.
fn serve_file(body: &'static [u8]) -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut request = [0u8; 4096];
            let _ = conn.read(&mut request);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(head.as_bytes());
            let _ = conn.write_all(body);
        }
    });
    port
}

#[test]
fn add_fetches_urls_and_checks_their_checksum() {
    let d = daemon_or_skip!(daemon_with_busybox());
    let body: &'static [u8] = b"downloaded content\n";
    let port = serve_file(body);
    let sum = berth_e2e::fixtures::sha256_hex(body);
    let dockerfile = format!(
        "FROM busybox\nADD --checksum=sha256:{sum} http://127.0.0.1:{port}/files/data.txt /srv/\nCMD [\"sh\", \"-c\", \"cat /srv/data.txt; stat -c %a /srv/data.txt\"]\n"
    );
    ok(build(
        &d,
        "t=added:1",
        &context(&[("Dockerfile", &dockerfile)]),
    ));
    assert_eq!(
        d.berth(&["run", "--rm", "added:1"]).ok("run added:1"),
        "downloaded content\n600"
    );
    let wrong = format!(
        "FROM busybox\nADD --checksum=sha256:{} http://127.0.0.1:{port}/files/data.txt /srv/\n",
        "0".repeat(64)
    );
    let built = build(&d, "", &context(&[("Dockerfile", &wrong)]));
    let error = built.error.expect("a wrong checksum fails the build");
    assert!(error.contains("checksum"), "{error}");
}

#[test]
fn copy_exclude_applies_to_context_and_stage_sources() {
    let d = daemon_or_skip!(daemon_with_busybox());
    let dockerfile = "FROM busybox AS build
RUN mkdir -p /out/sub && echo a > /out/a.txt && echo b > /out/b.log && echo c > /out/sub/c.log
FROM busybox
COPY --from=build --exclude=*.log --exclude=**/*.log /out/ /dst/
COPY --exclude=*.md . /ctx/
CMD [\"sh\", \"-c\", \"cd / && find dst ctx -type f | sort\"]
";
    let files = [
        ("Dockerfile", dockerfile),
        ("keep.txt", "k"),
        ("skip.md", "s"),
    ];
    ok(build(&d, "t=excl:1", &context(&files)));
    assert_eq!(
        d.berth(&["run", "--rm", "excl:1"]).ok("run excl:1"),
        "ctx/Dockerfile\nctx/keep.txt\ndst/a.txt"
    );
}

#[test]
fn onbuild_shell_and_config_instructions_land_as_docker_writes_them() {
    let d = daemon_or_skip!(daemon_with_busybox());
    let parent = "FROM busybox
ONBUILD RUN echo triggered > /onbuild.txt
ONBUILD COPY child.txt /
";
    ok(build(&d, "t=parent:1", &context(&[("Dockerfile", parent)])));
    let child = "FROM parent:1
SHELL [\"/bin/sh\", \"-ec\"]
RUN test -f /onbuild.txt && test -f /child.txt
STOPSIGNAL SIGINT
VOLUME /data
ENTRYPOINT echo from entrypoint
HEALTHCHECK NONE
";
    let (id, text) = ok(build(
        &d,
        "t=child:1",
        &context(&[("Dockerfile", child), ("child.txt", "c")]),
    ));
    assert!(
        text.contains(": RUN echo triggered > /onbuild.txt\n"),
        "the trigger runs as a step of the child:\n{text}"
    );
    let config = &d.inspect_image(&id).unwrap()["Config"];
    assert_eq!(config["StopSignal"], "SIGINT");
    assert!(config["Volumes"].get("/data").is_some(), "{config}");
    assert_eq!(
        config["Entrypoint"],
        serde_json::json!(["/bin/sh", "-ec", "echo from entrypoint"])
    );
    assert_eq!(
        config["Cmd"],
        serde_json::Value::Null,
        "ENTRYPOINT drops the inherited CMD"
    );
    assert_eq!(config["Shell"], serde_json::json!(["/bin/sh", "-ec"]));
    assert_eq!(config["Healthcheck"]["Test"], serde_json::json!(["NONE"]));
    assert!(
        config["OnBuild"].as_array().is_none_or(|a| a.is_empty()),
        "triggers are not inherited by the child: {config}"
    );
    assert_eq!(
        d.berth(&["run", "--rm", "child:1"]).ok("run child:1"),
        "from entrypoint"
    );
}
