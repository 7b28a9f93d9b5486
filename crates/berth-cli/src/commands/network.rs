//! Network commands: network create, ls, inspect, rm, prune, connect, disconnect.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Args;
use gotmpl::Value;
use hyper::Method;
use serde::Deserialize;
use serde_json::{Map, json};

use super::{Ctx, confirm, de_null, docker_config_string, for_each_arg, parse_filters, print_out};
use crate::client::{enc, enc_path, is_not_found};
use crate::output::{short_id, write_list};
use crate::template::{label_func, label_header_func, map_of, s};

/// `berth network create`
#[derive(Args, Debug)]
pub struct NetworkCreateArgs {
    /// Enable manual container attachment
    #[arg(long)]
    attachable: bool,
    /// Driver to manage the Network
    #[arg(short = 'd', long, value_name = "string", default_value = "bridge")]
    driver: String,
    /// IPv4 or IPv6 Gateway for the master subnet
    #[arg(long, value_name = "strings")]
    gateway: Vec<String>,
    /// Restrict external access to the network
    #[arg(long)]
    internal: bool,
    /// Allocate container ip from a sub-range
    #[arg(long = "ip-range", value_name = "strings")]
    ip_range: Vec<String>,
    /// Set metadata on a network
    #[arg(long, value_name = "list")]
    label: Vec<String>,
    /// Set driver specific options
    #[arg(short = 'o', long, value_name = "map")]
    opt: Vec<String>,
    /// Subnet in CIDR format that represents a network segment
    #[arg(long, value_name = "strings")]
    subnet: Vec<String>,
    /// NETWORK
    #[arg(value_name = "NETWORK")]
    name: String,
}

/// `berth network ls`
#[derive(Args, Debug)]
pub struct NetworkLsArgs {
    /// Provide filter values (e.g. "driver=bridge")
    #[arg(short = 'f', long, value_name = "filter")]
    filter: Vec<String>,
    /// Format output using a custom template
    #[arg(long, value_name = "string")]
    format: Option<String>,
    /// Do not truncate the output
    #[arg(long = "no-trunc")]
    no_trunc: bool,
    /// Only display network IDs
    #[arg(short = 'q', long)]
    quiet: bool,
}

/// `berth network inspect`
#[derive(Args, Debug)]
pub struct NetworkInspectArgs {
    /// Format output using a custom template
    #[arg(short = 'f', long, value_name = "string")]
    format: Option<String>,
    /// Verbose output for diagnostics
    #[arg(short = 'v', long)]
    verbose: bool,
    /// NETWORK [NETWORK...]
    #[arg(value_name = "NETWORK", required = true)]
    networks: Vec<String>,
}

/// `berth network rm`
#[derive(Args, Debug)]
pub struct NetworkRmArgs {
    /// Do not error if the network does not exist
    #[arg(short = 'f', long)]
    force: bool,
    /// NETWORK [NETWORK...]
    #[arg(value_name = "NETWORK", required = true)]
    networks: Vec<String>,
}

/// `berth network prune`
#[derive(Args, Debug)]
pub struct NetworkPruneArgs {
    /// Provide filter values (e.g. "until=<timestamp>")
    #[arg(long, value_name = "filter")]
    filter: Vec<String>,
    /// Do not prompt for confirmation
    #[arg(short = 'f', long)]
    force: bool,
}

/// `berth network connect`
#[derive(Args, Debug)]
pub struct NetworkConnectArgs {
    /// Add network-scoped alias for the container
    #[arg(long, value_name = "strings")]
    alias: Vec<String>,
    /// IPv4 address (e.g., "172.30.100.104")
    #[arg(long, value_name = "string")]
    ip: Option<String>,
    /// IPv6 address (e.g., "2001:db8::33")
    #[arg(long, value_name = "string")]
    ip6: Option<String>,
    /// NETWORK
    #[arg(value_name = "NETWORK")]
    network: String,
    /// CONTAINER
    #[arg(value_name = "CONTAINER")]
    container: String,
}

/// `berth network disconnect`
#[derive(Args, Debug)]
pub struct NetworkDisconnectArgs {
    /// Force the container to disconnect from a network
    #[arg(short = 'f', long)]
    force: bool,
    /// NETWORK
    #[arg(value_name = "NETWORK")]
    network: String,
    /// CONTAINER
    #[arg(value_name = "CONTAINER")]
    container: String,
}

/// `KEY=VALUE` flags as a JSON object (a bare `KEY` maps to `""`, as docker's `ConvertKVStringsToMap`).
pub fn kv_map(pairs: &[String]) -> Map<String, serde_json::Value> {
    pairs
        .iter()
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p.as_str(), ""));
            (k.to_string(), json!(v))
        })
        .collect()
}

/// A parsed `addr/prefix`.
fn parse_cidr(text: &str) -> Result<(IpAddr, u32)> {
    let (addr, prefix) = text
        .split_once('/')
        .with_context(|| format!("invalid CIDR address: {text}"))?;
    let addr: IpAddr = addr
        .parse()
        .with_context(|| format!("invalid CIDR address: {text}"))?;
    let prefix: u32 = prefix
        .parse()
        .ok()
        .filter(|p| *p <= if addr.is_ipv4() { 32 } else { 128 })
        .with_context(|| format!("invalid CIDR address: {text}"))?;
    Ok((addr, prefix))
}

/// Whether `ip` lies inside the `subnet` CIDR.
fn subnet_contains(subnet: &str, ip: IpAddr) -> Result<bool> {
    let (net, prefix) = parse_cidr(subnet)?;
    let bits = |a: IpAddr| -> (u128, u32) {
        match a {
            IpAddr::V4(v) => (u128::from(u32::from(v)), 32),
            IpAddr::V6(v) => (u128::from(v), 128),
        }
    };
    let (n, width) = bits(net);
    let (i, iwidth) = bits(ip);
    if width != iwidth {
        return Ok(false);
    }
    let shift = width - prefix;
    Ok(shift >= width || (n >> shift) == (i >> shift))
}

/// docker's `createIPAMConfig`: each `--ip-range` and `--gateway` joins the `--subnet` that
/// contains it.
fn ipam_config(
    subnets: &[String],
    ranges: &[String],
    gateways: &[String],
) -> Result<Vec<serde_json::Value>> {
    let mut configs: Vec<Map<String, serde_json::Value>> = Vec::new();
    for sub in subnets {
        parse_cidr(sub)?;
        let mut m = Map::new();
        m.insert("Subnet".into(), json!(sub));
        configs.push(m);
    }
    for r in ranges {
        let (addr, _) = parse_cidr(r)?;
        let mut placed = false;
        for (sub, m) in subnets.iter().zip(configs.iter_mut()) {
            if subnet_contains(sub, addr)? {
                if m.contains_key("IPRange") {
                    bail!(
                        "cannot configure multiple ranges ({r}, {}) on the same subnet ({sub})",
                        m["IPRange"].as_str().unwrap_or_default()
                    );
                }
                m.insert("IPRange".into(), json!(r));
                placed = true;
            }
        }
        if !placed {
            bail!("no matching subnet for range {r}");
        }
    }
    for g in gateways {
        let addr: IpAddr = g
            .parse()
            .with_context(|| format!("invalid gateway address: {g}"))?;
        let mut placed = false;
        for (sub, m) in subnets.iter().zip(configs.iter_mut()) {
            if subnet_contains(sub, addr)? {
                if m.contains_key("Gateway") {
                    bail!(
                        "cannot configure multiple gateways ({g}, {}) for the same subnet ({sub})",
                        m["Gateway"].as_str().unwrap_or_default()
                    );
                }
                m.insert("Gateway".into(), json!(g));
                placed = true;
            }
        }
        if !placed {
            bail!("no matching subnet for gateway {g}");
        }
    }
    Ok(configs.into_iter().map(serde_json::Value::Object).collect())
}

/// The `POST /networks/create` body the docker CLI sends at API 1.44.
fn create_body(a: &NetworkCreateArgs) -> Result<serde_json::Value> {
    if a.subnet.is_empty() && (!a.ip_range.is_empty() || !a.gateway.is_empty()) {
        bail!("every ip-range or gateway must have a corresponding subnet");
    }
    Ok(json!({
        "Driver": a.driver,
        "Scope": "",
        "IPAM": {
            "Driver": "default",
            "Options": {},
            "Config": ipam_config(&a.subnet, &a.ip_range, &a.gateway)?,
        },
        "Internal": a.internal,
        "Attachable": a.attachable,
        "Ingress": false,
        "ConfigOnly": false,
        "ConfigFrom": null,
        "Options": kv_map(&a.opt),
        "Labels": kv_map(&a.label),
        "Name": a.name,
    }))
}

#[derive(Debug, Default, Deserialize)]
struct CreateReply {
    #[serde(rename = "Id", default, deserialize_with = "de_null")]
    id: String,
    #[serde(rename = "Warning", default, deserialize_with = "de_null")]
    warning: String,
}

/// `berth network create`: prints the new network's full id.
pub async fn create(ctx: &Ctx, a: NetworkCreateArgs) -> Result<()> {
    let body = create_body(&a).map_err(super::refused_create)?;
    let raw = ctx
        .client
        .post_json("/networks/create", &body)
        .await
        .map_err(super::refused_create)?;
    let reply: CreateReply =
        serde_json::from_slice(&raw).context("decoding the network create reply")?;
    if !reply.warning.is_empty() {
        eprintln!("{}", reply.warning);
    }
    print_out(format!("{}\n", reply.id).as_bytes())
}

/// A `GET /networks` entry, tolerant of missing and null fields.
#[derive(Debug, Default, Deserialize)]
pub struct NetworkSummary {
    #[serde(rename = "Id", default, deserialize_with = "de_null")]
    id: String,
    #[serde(rename = "Name", default, deserialize_with = "de_null")]
    name: String,
    #[serde(rename = "Driver", default, deserialize_with = "de_null")]
    driver: String,
    #[serde(rename = "Scope", default, deserialize_with = "de_null")]
    scope: String,
    #[serde(rename = "EnableIPv6", default, deserialize_with = "de_null")]
    ipv6: bool,
    #[serde(rename = "Internal", default, deserialize_with = "de_null")]
    internal: bool,
    #[serde(rename = "Created", default, deserialize_with = "de_null")]
    created: String,
    #[serde(rename = "Labels", default, deserialize_with = "de_null")]
    labels: BTreeMap<String, String>,
}

/// `k=v,k2=v2` as docker joins labels in list columns.
fn joined_labels(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn network_row(n: &NetworkSummary, trunc: bool) -> Value {
    map_of([
        ("ID", s(if trunc { short_id(&n.id) } else { &n.id })),
        ("Name", s(&n.name)),
        ("Driver", s(&n.driver)),
        ("Scope", s(&n.scope)),
        ("IPv6", s(n.ipv6.to_string())),
        ("Internal", s(n.internal.to_string())),
        ("Labels", s(joined_labels(&n.labels))),
        ("Label", label_func(Arc::new(n.labels.clone()))),
        ("CreatedAt", s(&n.created)),
    ])
}

fn networks_header() -> Value {
    map_of([
        ("ID", s("NETWORK ID")),
        ("Name", s("NAME")),
        ("Driver", s("DRIVER")),
        ("Scope", s("SCOPE")),
        ("IPv6", s("IPV6")),
        ("Internal", s("INTERNAL")),
        ("Labels", s("LABELS")),
        ("Label", label_header_func()),
        ("CreatedAt", s("CREATED AT")),
    ])
}

/// Renders `network ls` output for `format` (`table`, a template, or quiet).
fn render_networks(
    mut list: Vec<NetworkSummary>,
    format: &str,
    quiet: bool,
    trunc: bool,
) -> Result<Vec<u8>> {
    list.sort_by(|a, b| a.name.cmp(&b.name));
    let format = match format {
        "table" if quiet => "{{.ID}}",
        "table" => "table {{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.Scope}}",
        other => other,
    };
    let mut out = Vec::new();
    write_list(
        &mut out,
        format,
        &networks_header(),
        list.iter().map(|n| network_row(n, trunc)),
    )?;
    Ok(out)
}

/// `berth network ls`.
pub async fn ls(ctx: &Ctx, a: NetworkLsArgs) -> Result<()> {
    let filters = parse_filters(&a.filter)?;
    let path = if filters.is_empty() {
        "/networks".to_string()
    } else {
        format!("/networks?filters={}", enc(&filters.to_json()))
    };
    let list: Vec<NetworkSummary> = ctx.client.get_json(&path).await?;
    let source = match &a.format {
        Some(f) if !f.is_empty() => f.clone(),
        _ => match docker_config_string(ctx, "networksFormat") {
            Some(f) if !a.quiet => f,
            _ => "table".to_string(),
        },
    };
    let out = render_networks(list, &source, a.quiet, !a.no_trunc)?;
    print_out(&out)
}

/// `berth network inspect`.
pub async fn inspect(ctx: &Ctx, a: NetworkInspectArgs) -> Result<()> {
    let suffix = if a.verbose { "?verbose=true" } else { "" };
    super::inspect::inspect_refs(&a.networks, a.format.as_deref(), |name| {
        let path = format!("/networks/{}{suffix}", enc_path(&name));
        async move { ctx.client.call_bytes(Method::GET, &path).await }
    })
    .await
}

/// `berth network rm`: inspects, then deletes each network, printing its name.
pub async fn rm(ctx: &Ctx, a: NetworkRmArgs) -> Result<()> {
    let force = a.force;
    for_each_arg(&a.networks, |name| async move {
        let path = format!("/networks/{}", enc_path(&name));
        let step = async {
            ctx.client.call_bytes(Method::GET, &path).await?;
            ctx.client.call_bytes(Method::DELETE, &path).await?;
            Ok::<_, anyhow::Error>(())
        };
        match step.await {
            Ok(()) => Ok(Some(name)),
            Err(e) if force && is_not_found(&e) => Ok(None),
            Err(e) => Err(e),
        }
    })
    .await
}

#[derive(Debug, Default, Deserialize)]
struct NetworkPruneReply {
    #[serde(rename = "NetworksDeleted", default, deserialize_with = "de_null")]
    deleted: Vec<String>,
}

/// `berth network prune`.
pub async fn prune(ctx: &Ctx, a: NetworkPruneArgs) -> Result<()> {
    let filters = parse_filters(&a.filter)?;
    if !a.force
        && !confirm(
            "WARNING! This will remove all custom networks not used by at least one container.\nAre you sure you want to continue?",
        )
    {
        return Ok(());
    }
    let path = if filters.is_empty() {
        "/networks/prune".to_string()
    } else {
        format!("/networks/prune?filters={}", enc(&filters.to_json()))
    };
    let raw = ctx.client.call_bytes(Method::POST, &path).await?;
    let reply: NetworkPruneReply =
        serde_json::from_slice(&raw).context("decoding the network prune reply")?;
    if reply.deleted.is_empty() {
        return Ok(());
    }
    let mut out = "Deleted Networks:\n".to_string();
    for name in &reply.deleted {
        out.push_str(name);
        out.push('\n');
    }
    out.push('\n');
    print_out(out.as_bytes())
}

/// `berth network connect`.
pub async fn connect(ctx: &Ctx, a: NetworkConnectArgs) -> Result<()> {
    let mut ipam = Map::new();
    if let Some(ip) = &a.ip {
        ipam.insert("IPv4Address".into(), json!(ip));
    }
    if let Some(ip) = &a.ip6 {
        ipam.insert("IPv6Address".into(), json!(ip));
    }
    let aliases = if a.alias.is_empty() {
        serde_json::Value::Null
    } else {
        json!(a.alias)
    };
    let body = json!({
        "Container": a.container,
        "EndpointConfig": {
            "IPAMConfig": ipam,
            "Links": null,
            "Aliases": aliases,
            "DriverOpts": {},
        },
    });
    ctx.client
        .post_json(
            &format!("/networks/{}/connect", enc_path(&a.network)),
            &body,
        )
        .await?;
    Ok(())
}

/// `berth network disconnect`.
pub async fn disconnect(ctx: &Ctx, a: NetworkDisconnectArgs) -> Result<()> {
    let body = json!({"Container": a.container, "Force": a.force});
    ctx.client
        .post_json(
            &format!("/networks/{}/disconnect", enc_path(&a.network)),
            &body,
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::fake_daemon::{Script, run_cli as run};
    use super::*;

    #[test]
    fn ls_table_matches_docker() {
        let net = |id: &str, name: &str| NetworkSummary {
            id: id.into(),
            name: name.into(),
            driver: "bridge".into(),
            scope: "local".into(),
            ..Default::default()
        };
        let list = vec![
            net("778bd36dd458aaaaaaaaaaaaaaaa", "mynet"),
            net("17f29b073143bbbbbbbbbbbbbbbb", "bridge"),
        ];
        let out = render_networks(list, "table", false, true).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "NETWORK ID     NAME      DRIVER    SCOPE\n\
             17f29b073143   bridge    bridge    local\n\
             778bd36dd458   mynet     bridge    local\n"
        );
        let mut labelled = net("abc", "x");
        labelled.labels.insert("a".into(), "b".into());
        let out = render_networks(
            vec![labelled],
            "{{.Name}} {{.Labels}} {{.Label \"a\"}} {{.Internal}}",
            false,
            true,
        )
        .unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "x a=b b false\n");
        let out =
            render_networks(vec![net("778bd36dd458aaaa", "m")], "table", true, false).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "778bd36dd458aaaa\n");
    }

    #[test]
    fn ipam_pairs_gateways_with_their_subnets() {
        let cfg = ipam_config(
            &["10.5.0.0/16".into(), "10.6.0.0/16".into()],
            &["10.6.1.0/24".into()],
            &["10.5.0.254".into()],
        )
        .unwrap();
        assert_eq!(
            serde_json::Value::Array(cfg),
            json!([{"Subnet":"10.5.0.0/16","Gateway":"10.5.0.254"},{"Subnet":"10.6.0.0/16","IPRange":"10.6.1.0/24"}])
        );
        assert!(ipam_config(&["10.5.0.0/16".into()], &[], &["10.7.0.1".into()]).is_err());
        assert!(ipam_config(&["10.5.0.0/33".into()], &[], &[]).is_err());
    }

    #[tokio::test]
    async fn create_sends_the_docker_body_and_prints_the_id() {
        let script = Script::new(Vec::new(), 0);
        script.reply(
            "POST",
            "/networks/create",
            201,
            r#"{"Id":"0123abcd","Warning":""}"#,
        );
        run(
            &script,
            &[
                "berth",
                "network",
                "create",
                "--subnet",
                "10.5.0.0/16",
                "--gateway",
                "10.5.0.1",
                "--label",
                "a=b",
                "-o",
                "com.docker.network.bridge.name=br5",
                "--internal",
                "mynet",
            ],
        )
        .await
        .unwrap();
        let body: serde_json::Value =
            serde_json::from_str(&script.body("POST /v1.44/networks/create").unwrap()).unwrap();
        assert_eq!(
            body,
            json!({"Driver":"bridge","Scope":"","IPAM":{"Driver":"default","Options":{},"Config":[{"Subnet":"10.5.0.0/16","Gateway":"10.5.0.1"}]},
                   "Internal":true,"Attachable":false,"Ingress":false,"ConfigOnly":false,"ConfigFrom":null,
                   "Options":{"com.docker.network.bridge.name":"br5"},"Labels":{"a":"b"},"Name":"mynet"})
        );
    }

    #[tokio::test]
    async fn rm_inspects_then_deletes_and_force_ignores_missing() {
        let script = Script::new(Vec::new(), 0);
        script.reply(
            "GET",
            "/networks/mynet",
            200,
            r#"{"Name":"mynet","Id":"abc"}"#,
        );
        script.reply("DELETE", "/networks/mynet", 204, "");
        run(&script, &["berth", "network", "rm", "mynet"])
            .await
            .unwrap();
        assert_eq!(
            script.requests(),
            vec!["GET /v1.44/networks/mynet", "DELETE /v1.44/networks/mynet"]
        );
        let err = run(&script, &["berth", "network", "rm", "gone"])
            .await
            .unwrap_err();
        let status = err.downcast_ref::<super::super::StatusError>().unwrap();
        assert_eq!(status.code, 1);
        run(&script, &["berth", "network", "rm", "-f", "gone"])
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn connect_and_disconnect_bodies() {
        let script = Script::new(Vec::new(), 0);
        script.reply("POST", "/networks/mynet/connect", 200, "");
        script.reply("POST", "/networks/mynet/disconnect", 200, "");
        run(
            &script,
            &[
                "berth", "network", "connect", "--alias", "foo", "--ip", "10.5.0.9", "mynet", "web",
            ],
        )
        .await
        .unwrap();
        run(
            &script,
            &["berth", "network", "disconnect", "-f", "mynet", "web"],
        )
        .await
        .unwrap();
        let connect: serde_json::Value =
            serde_json::from_str(&script.body("POST /v1.44/networks/mynet/connect").unwrap())
                .unwrap();
        assert_eq!(connect["Container"], "web");
        assert_eq!(connect["EndpointConfig"]["Aliases"], json!(["foo"]));
        assert_eq!(
            connect["EndpointConfig"]["IPAMConfig"],
            json!({"IPv4Address":"10.5.0.9"})
        );
        let disconnect: serde_json::Value = serde_json::from_str(
            &script
                .body("POST /v1.44/networks/mynet/disconnect")
                .unwrap(),
        )
        .unwrap();
        assert_eq!(disconnect, json!({"Container":"web","Force":true}));
    }

    #[tokio::test]
    async fn ls_and_prune_requests() {
        let script = Script::new(Vec::new(), 0);
        script.reply("GET", "/networks", 200, "[]");
        script.reply(
            "POST",
            "/networks/prune",
            200,
            r#"{"NetworksDeleted":["n1"]}"#,
        );
        run(
            &script,
            &["berth", "network", "ls", "-f", "driver=bridge", "-q"],
        )
        .await
        .unwrap();
        run(
            &script,
            &["berth", "network", "prune", "-f", "--filter", "label=a"],
        )
        .await
        .unwrap();
        assert_eq!(
            script.requests(),
            vec![
                "GET /v1.44/networks?filters=%7B%22driver%22%3A%7B%22bridge%22%3Atrue%7D%7D",
                "POST /v1.44/networks/prune?filters=%7B%22label%22%3A%7B%22a%22%3Atrue%7D%7D",
            ]
        );
    }
}
