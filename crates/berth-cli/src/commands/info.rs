//! `version` and `info`: client and daemon versions, and the system-wide information page.

use std::collections::BTreeMap;

use anyhow::Result;
use clap::Args;
use gotmpl::Value;
use hyper::Method;
use serde::Deserialize;

use super::{Ctx, StatusError, de_null, print_out};
use crate::client::API_PREFIX;
use crate::output::bytes_size;
use crate::template::{self, from_json, map_of, s};

/// `berth version`
#[derive(Args, Debug)]
pub struct VersionArgs {
    /// Format output using a custom template
    #[arg(short = 'f', long, value_name = "string")]
    format: Option<String>,
}

/// `berth info`
#[derive(Args, Debug)]
pub struct InfoArgs {
    /// Format output using a custom template
    #[arg(short = 'f', long, value_name = "string")]
    format: Option<String>,
}

const VERSION_TEMPLATE: &str = "{{with .Client -}}
Client:
 Version:\t{{.Version}}
 API version:\t{{.ApiVersion}}
 Git commit:\t{{.GitCommit}}
 OS/Arch:\t{{.Os}}/{{.Arch}}
 Context:\t{{.Context}}
{{- end}}

{{- if .Server}}{{with .Server}}

Server:{{if .Platform.Name}} {{.Platform.Name}}{{end}}
 {{- range $component := .Components}}
 {{$component.Name}}:
  {{- if eq $component.Name \"Engine\" }}
  Version:\t{{.Version}}
  API version:\t{{index .Details \"ApiVersion\"}} (minimum version {{index .Details \"MinAPIVersion\"}})
  Go version:\t{{index .Details \"GoVersion\"}}
  Git commit:\t{{index .Details \"GitCommit\"}}
  Built:\t{{index .Details \"BuildTime\"}}
  OS/Arch:\t{{index .Details \"Os\"}}/{{index .Details \"Arch\"}}
  Experimental:\t{{index .Details \"Experimental\"}}
  {{- else }}
  Version:\t{{$component.Version}}
  {{- range $key := detailKeys $component}}
  {{$key}}:\t{{index $component.Details $key}}
   {{- end}}
  {{- end}}
 {{- end}}
 {{- end}}{{- end}}";

fn client_version() -> Value {
    map_of([
        ("Version", s(env!("CARGO_PKG_VERSION"))),
        ("ApiVersion", s(&API_PREFIX[2..])),
        ("DefaultAPIVersion", s(&API_PREFIX[2..])),
        (
            "GitCommit",
            s(option_env!("BERTH_GIT_SHA").unwrap_or("unknown")),
        ),
        ("Os", s(std::env::consts::OS)),
        ("Arch", s(go_arch())),
        ("Context", s("default")),
    ])
}

fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    }
}

/// Adds the `Engine` component when the daemon did not list one (as the docker CLI does).
fn with_engine_component(mut server: serde_json::Value) -> serde_json::Value {
    let has_engine = server["Components"]
        .as_array()
        .is_some_and(|c| c.iter().any(|x| x["Name"] == "Engine"));
    if !has_engine {
        let str_of = |k: &str| server[k].as_str().unwrap_or("").to_string();
        let engine = serde_json::json!({
            "Name": "Engine",
            "Version": str_of("Version"),
            "Details": {
                "ApiVersion": str_of("ApiVersion"),
                "MinAPIVersion": str_of("MinAPIVersion"),
                "GitCommit": str_of("GitCommit"),
                "GoVersion": str_of("GoVersion"),
                "Os": str_of("Os"),
                "Arch": str_of("Arch"),
                "BuildTime": str_of("BuildTime"),
                "Experimental": server["Experimental"].as_bool().unwrap_or(false).to_string(),
            }
        });
        match server["Components"].as_array_mut() {
            Some(list) => list.push(engine),
            None => server["Components"] = serde_json::json!([engine]),
        }
    }
    if server.get("Platform").is_none_or(|p| !p.is_object()) {
        server["Platform"] = serde_json::json!({"Name": ""});
    }
    server
}

/// `berth version`.
pub async fn version(ctx: &Ctx, a: VersionArgs) -> Result<()> {
    let format = match a.format.as_deref() {
        None | Some("") => VERSION_TEMPLATE,
        Some("json") => "{{json .}}",
        Some(f) => f,
    };
    let tmpl = gotmpl::Template::new("version")
        .func("detailKeys", |args| {
            let keys: Vec<Value> = match args.first().and_then(|c| c.field("Details")) {
                Some(Value::Map(m)) => m.keys().map(|k| Value::String(k.clone())).collect(),
                _ => Vec::new(),
            };
            Ok(Value::List(keys.into()))
        })
        .func("json", |args| {
            let mut out = String::new();
            template::to_json(args.first().unwrap_or(&Value::Nil), &mut out);
            Ok(Value::String(out.into()))
        })
        .parse(format)
        .map_err(|e| {
            anyhow::Error::new(StatusError {
                code: 64,
                message: Some(format!("template parsing error: {e}")),
            })
        })?;
    let server = ctx.client.get_json::<serde_json::Value>("/version").await;
    let data = map_of([
        ("Client", client_version()),
        (
            "Server",
            match &server {
                Ok(v) => from_json(&with_engine_component(v.clone())),
                Err(_) => Value::Nil,
            },
        ),
    ]);
    let text = tmpl
        .execute_to_string(&data)
        .map_err(|e| anyhow::anyhow!("template: {e}"))?;
    let mut out = Vec::new();
    crate::output::write_table(&mut out, &[text], 20, 1)?;
    print_out(&out)?;
    server.map(|_| ())
}

#[derive(Deserialize, Default)]
struct Info {
    #[serde(rename = "Containers", default, deserialize_with = "de_null")]
    containers: i64,
    #[serde(rename = "ContainersRunning", default, deserialize_with = "de_null")]
    running: i64,
    #[serde(rename = "ContainersPaused", default, deserialize_with = "de_null")]
    paused: i64,
    #[serde(rename = "ContainersStopped", default, deserialize_with = "de_null")]
    stopped: i64,
    #[serde(rename = "Images", default, deserialize_with = "de_null")]
    images: i64,
    #[serde(rename = "ServerVersion", default, deserialize_with = "de_null")]
    server_version: String,
    #[serde(rename = "Driver", default, deserialize_with = "de_null")]
    driver: String,
    #[serde(rename = "DriverStatus", default, deserialize_with = "de_null")]
    driver_status: Vec<Vec<String>>,
    #[serde(rename = "LoggingDriver", default, deserialize_with = "de_null")]
    logging_driver: String,
    #[serde(rename = "CgroupDriver", default, deserialize_with = "de_null")]
    cgroup_driver: String,
    #[serde(rename = "CgroupVersion", default, deserialize_with = "de_null")]
    cgroup_version: String,
    #[serde(rename = "Plugins", default, deserialize_with = "de_null")]
    plugins: InfoPlugins,
    #[serde(rename = "Swarm", default, deserialize_with = "de_null")]
    swarm: InfoSwarm,
    #[serde(rename = "Runtimes", default, deserialize_with = "de_null")]
    runtimes: BTreeMap<String, serde_json::Value>,
    #[serde(rename = "DefaultRuntime", default, deserialize_with = "de_null")]
    default_runtime: String,
    #[serde(rename = "InitBinary", default, deserialize_with = "de_null")]
    init_binary: String,
    #[serde(rename = "ContainerdCommit", default, deserialize_with = "de_null")]
    containerd_commit: Commit,
    #[serde(rename = "RuncCommit", default, deserialize_with = "de_null")]
    runc_commit: Commit,
    #[serde(rename = "InitCommit", default, deserialize_with = "de_null")]
    init_commit: Commit,
    #[serde(rename = "SecurityOptions", default, deserialize_with = "de_null")]
    security_options: Vec<String>,
    #[serde(rename = "KernelVersion", default, deserialize_with = "de_null")]
    kernel_version: String,
    #[serde(rename = "OperatingSystem", default, deserialize_with = "de_null")]
    operating_system: String,
    #[serde(rename = "OSType", default, deserialize_with = "de_null")]
    os_type: String,
    #[serde(rename = "Architecture", default, deserialize_with = "de_null")]
    architecture: String,
    #[serde(rename = "NCPU", default, deserialize_with = "de_null")]
    ncpu: i64,
    #[serde(rename = "MemTotal", default, deserialize_with = "de_null")]
    mem_total: i64,
    #[serde(rename = "Name", default, deserialize_with = "de_null")]
    name: String,
    #[serde(rename = "ID", default, deserialize_with = "de_null")]
    id: String,
    #[serde(rename = "DockerRootDir", default, deserialize_with = "de_null")]
    root_dir: String,
    #[serde(rename = "Debug", default, deserialize_with = "de_null")]
    debug: bool,
    #[serde(rename = "HttpProxy", default, deserialize_with = "de_null")]
    http_proxy: String,
    #[serde(rename = "HttpsProxy", default, deserialize_with = "de_null")]
    https_proxy: String,
    #[serde(rename = "NoProxy", default, deserialize_with = "de_null")]
    no_proxy: String,
    #[serde(rename = "Labels", default, deserialize_with = "de_null")]
    labels: Vec<String>,
    #[serde(rename = "ExperimentalBuild", default, deserialize_with = "de_null")]
    experimental: bool,
    #[serde(rename = "LiveRestoreEnabled", default, deserialize_with = "de_null")]
    live_restore: bool,
    #[serde(rename = "Warnings", default, deserialize_with = "de_null")]
    warnings: Vec<String>,
}

#[derive(Deserialize, Default)]
struct InfoPlugins {
    #[serde(rename = "Volume", default, deserialize_with = "de_null")]
    volume: Vec<String>,
    #[serde(rename = "Network", default, deserialize_with = "de_null")]
    network: Vec<String>,
    #[serde(rename = "Authorization", default, deserialize_with = "de_null")]
    authorization: Vec<String>,
    #[serde(rename = "Log", default, deserialize_with = "de_null")]
    log: Vec<String>,
}

#[derive(Deserialize, Default)]
struct InfoSwarm {
    #[serde(rename = "LocalNodeState", default, deserialize_with = "de_null")]
    local_node_state: String,
}

#[derive(Deserialize, Default)]
struct Commit {
    #[serde(rename = "ID", default, deserialize_with = "de_null")]
    id: String,
}

fn render_info(i: &Info, debug: bool) -> (String, String) {
    let mut o = String::new();
    let mut e = String::new();
    let nonempty = |o: &mut String, label: &str, v: &str| {
        if !v.is_empty() {
            o.push_str(&format!("{label} {v}\n"));
        }
    };
    o.push_str("Client:\n");
    o.push_str(&format!(" Version:    {}\n", env!("CARGO_PKG_VERSION")));
    o.push_str(" Context:    default\n");
    o.push_str(&format!(" Debug Mode: {debug}\n\n"));
    o.push_str("Server:\n");
    o.push_str(&format!(
        " Containers: {}\n  Running: {}\n  Paused: {}\n  Stopped: {}\n",
        i.containers, i.running, i.paused, i.stopped
    ));
    o.push_str(&format!(" Images: {}\n", i.images));
    nonempty(&mut o, " Server Version:", &i.server_version);
    nonempty(&mut o, " Storage Driver:", &i.driver);
    for pair in &i.driver_status {
        if let [k, v, ..] = pair.as_slice() {
            o.push_str(&format!("  {k}: {v}\n"));
        }
    }
    nonempty(&mut o, " Logging Driver:", &i.logging_driver);
    nonempty(&mut o, " Cgroup Driver:", &i.cgroup_driver);
    nonempty(&mut o, " Cgroup Version:", &i.cgroup_version);
    o.push_str(" Plugins:\n");
    o.push_str(&format!(
        "  Volume: {}\n  Network: {}\n",
        i.plugins.volume.join(" "),
        i.plugins.network.join(" ")
    ));
    if !i.plugins.authorization.is_empty() {
        o.push_str(&format!(
            "  Authorization: {}\n",
            i.plugins.authorization.join(" ")
        ));
    }
    o.push_str(&format!("  Log: {}\n", i.plugins.log.join(" ")));
    o.push_str(&format!(" Swarm: {}\n", i.swarm.local_node_state));
    if !i.runtimes.is_empty() {
        let names: Vec<&str> = i.runtimes.keys().map(String::as_str).collect();
        o.push_str(&format!(
            " Runtimes: {}\n Default Runtime: {}\n",
            names.join(" "),
            i.default_runtime
        ));
    }
    if i.os_type == "linux" {
        o.push_str(&format!(" Init Binary: {}\n", i.init_binary));
        o.push_str(&format!(
            " containerd version: {}\n",
            i.containerd_commit.id
        ));
        o.push_str(&format!(" runc version: {}\n", i.runc_commit.id));
        o.push_str(&format!(" init version: {}\n", i.init_commit.id));
        if !i.security_options.is_empty() {
            o.push_str(" Security Options:\n");
            for opt in &i.security_options {
                let mut name = opt.as_str();
                let mut profile = None;
                if opt.contains('=') {
                    for kv in opt.split(',') {
                        match kv.split_once('=') {
                            Some(("name", v)) => name = v,
                            Some(("profile", v)) => profile = Some(v),
                            _ => {}
                        }
                    }
                }
                o.push_str(&format!("  {name}\n"));
                if let Some(p) = profile {
                    o.push_str(&format!("   Profile: {p}\n"));
                }
            }
        }
    }
    nonempty(&mut o, " Kernel Version:", &i.kernel_version);
    nonempty(&mut o, " Operating System:", &i.operating_system);
    nonempty(&mut o, " OSType:", &i.os_type);
    nonempty(&mut o, " Architecture:", &i.architecture);
    o.push_str(&format!(" CPUs: {}\n", i.ncpu));
    o.push_str(&format!(
        " Total Memory: {}\n",
        bytes_size(i.mem_total as f64)
    ));
    nonempty(&mut o, " Name:", &i.name);
    nonempty(&mut o, " ID:", &i.id);
    o.push_str(&format!(" Docker Root Dir: {}\n", i.root_dir));
    o.push_str(&format!(" Debug Mode: {}\n", i.debug));
    nonempty(&mut o, " HTTP Proxy:", &i.http_proxy);
    nonempty(&mut o, " HTTPS Proxy:", &i.https_proxy);
    nonempty(&mut o, " No Proxy:", &i.no_proxy);
    if !i.labels.is_empty() {
        o.push_str(" Labels:\n");
        for l in &i.labels {
            o.push_str(&format!("  {l}\n"));
        }
    }
    o.push_str(&format!(" Experimental: {}\n", i.experimental));
    o.push_str(&format!(" Live Restore Enabled: {}\n\n", i.live_restore));
    for w in &i.warnings {
        e.push_str(w);
        e.push('\n');
    }
    (o, e)
}

/// `berth info`.
pub async fn info(ctx: &Ctx, a: InfoArgs) -> Result<()> {
    let raw = ctx.client.call_bytes(Method::GET, "/info").await;
    if let Some(format) = a.format.as_deref().filter(|f| !f.is_empty()) {
        let format = if format == "json" {
            "{{json .}}"
        } else {
            format
        };
        let mut data: serde_json::Value = match &raw {
            Ok(b) => serde_json::from_slice(b)?,
            Err(_) => serde_json::json!({}),
        };
        data["ClientInfo"] = serde_json::json!({"Debug": ctx.debug, "Version": env!("CARGO_PKG_VERSION"), "Context": "default", "Plugins": []});
        data["ClientErrors"] = serde_json::json!(null);
        if let Err(e) = &raw {
            data["ServerErrors"] = serde_json::json!([format!("{e:#}")]);
        }
        let compiled = template::compile(format, false).map_err(|e| {
            anyhow::Error::new(StatusError {
                code: 64,
                message: Some(format!("{e:#}")),
            })
        })?;
        let text = compiled.render(&from_json(&data))?;
        print_out(format!("{text}\n").as_bytes())?;
        return raw.map(|_| ());
    }
    match raw {
        Ok(b) => {
            let info: Info = serde_json::from_slice(&b)?;
            let (out, err) = render_info(&info, ctx.debug);
            print_out(out.as_bytes())?;
            eprint!("{err}");
            Ok(())
        }
        Err(e) => {
            let (out, _) = render_info(&Info::default(), ctx.debug);
            let client_part = out.split("Server:\n").next().unwrap_or("");
            print_out(format!("{client_part}Server:\n").as_bytes())?;
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_renders_security_options_and_warnings() {
        let i: Info = serde_json::from_value(serde_json::json!({
            "Containers": 2, "ContainersRunning": 1, "ContainersStopped": 1, "Images": 3,
            "OSType": "linux", "SecurityOptions": ["name=seccomp,profile=builtin"], "MemTotal": 1_073_741_824,
            "Swarm": {"LocalNodeState": "inactive"}, "Warnings": ["WARNING: x"]
        }))
        .unwrap();
        let (out, err) = render_info(&i, false);
        assert!(
            out.contains(" Containers: 2\n  Running: 1\n  Paused: 0\n  Stopped: 1\n Images: 3\n")
        );
        assert!(out.contains(" Security Options:\n  seccomp\n   Profile: builtin\n"));
        assert!(out.contains(" Total Memory: 1GiB\n"));
        assert!(out.contains(" Swarm: inactive\n"));
        assert_eq!(err, "WARNING: x\n");
    }

    #[test]
    fn engine_component_is_synthesised() {
        let v = with_engine_component(
            serde_json::json!({"Version": "0.1.0", "ApiVersion": "1.44", "MinAPIVersion": "1.24"}),
        );
        assert_eq!(v["Components"][0]["Name"], "Engine");
        assert_eq!(v["Components"][0]["Details"]["ApiVersion"], "1.44");
    }
}
