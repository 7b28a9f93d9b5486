//! The nftables backend: renders a [`RuleSet`] as nft's JSON and applies it with
//! `nft -j -f -` in one transaction.
//!
//! Debian's `nft` binary (package `nftables`) is driven directly rather than through a crate:
//! the JSON schema is nft's stable interface, `serde_json` is already a dependency, and
//! rustables-style netlink bindings need libclang at build time.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;

use serde_json::{Value, json};

use super::{Firewall, FirewallError, NetworkRules, PortForward, RuleSet};

/// nftables in berth's own `inet` table (`berth` for the daemon; tests use their own names so
/// they never touch it).
#[derive(Debug)]
pub struct NftFirewall {
    table: String,
    program: PathBuf,
    rules: Mutex<RuleSet>,
}

impl NftFirewall {
    /// The daemon's table name.
    pub const DEFAULT_TABLE: &'static str = "berth";

    /// A firewall managing `table inet <table>` with the `nft` found on `PATH`. Nothing is
    /// applied until the first change (or [`Self::sync`]).
    pub fn new(table: impl Into<String>) -> Self {
        Self {
            table: table.into(),
            program: PathBuf::from("nft"),
            rules: Mutex::default(),
        }
    }

    /// Uses another `nft` binary.
    pub fn with_program(mut self, program: impl Into<PathBuf>) -> Self {
        self.program = program.into();
        self
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Applies the current rule set as it is: at daemon start, after re-adding the networks
    /// that still exist, this replaces (or, if empty, removes) whatever an earlier run left.
    pub fn sync(&self) -> Result<(), FirewallError> {
        let rules = self.lock();
        self.apply(&rules, true)
    }

    /// The table as `nft -j list table` prints it, or `None` if it does not exist.
    pub fn list(&self) -> Result<Option<Value>, FirewallError> {
        let output = Command::new(&self.program)
            .args(["-j", "list", "table", "inet", &self.table])
            .stdin(Stdio::null())
            .output()
            .map_err(|source| FirewallError::Spawn {
                program: self.program.display().to_string(),
                source,
            })?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            if stderr.contains("No such file or directory") {
                return Ok(None);
            }
            return Err(FirewallError::Nft {
                table: self.table.clone(),
                stderr: stderr.trim().to_string(),
            });
        }
        serde_json::from_slice(&output.stdout)
            .map(Some)
            .map_err(|e| FirewallError::Listing {
                table: self.table.clone(),
                reason: e.to_string(),
            })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RuleSet> {
        self.rules.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies the edited rule set, keeping it only if nft accepted it.
    fn change<T>(
        &self,
        edit: impl FnOnce(&mut RuleSet) -> Result<T, FirewallError>,
    ) -> Result<T, FirewallError> {
        let mut rules = self.lock();
        let mut next = rules.clone();
        let out = edit(&mut next)?;
        if next != *rules {
            self.apply(&next, false)?;
            *rules = next;
        }
        Ok(out)
    }

    fn apply(&self, rules: &RuleSet, fresh: bool) -> Result<(), FirewallError> {
        let batch = render(&self.table, rules, fresh).to_string();
        let spawn_err = |source| FirewallError::Spawn {
            program: self.program.display().to_string(),
            source,
        };
        let mut child = Command::new(&self.program)
            .args(["-j", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn_err)?;
        let written = child
            .stdin
            .take()
            .expect("stdin is piped")
            .write_all(batch.as_bytes());
        let output = child.wait_with_output().map_err(spawn_err)?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
            return Err(FirewallError::Nft {
                table: self.table.clone(),
                stderr,
            });
        }
        written.map_err(spawn_err)?;
        tracing::debug!(table = %self.table, networks = rules.networks().count(), ports = rules.ports().count(), "applied nftables rules");
        Ok(())
    }
}

impl Firewall for NftFirewall {
    fn add_network(&self, network: &NetworkRules) -> Result<(), FirewallError> {
        self.change(|r| r.add_network(network))
    }

    fn remove_network(&self, bridge: &str) -> Result<(), FirewallError> {
        self.change(|r| Ok(r.remove_network(bridge))).map(drop)
    }

    fn publish(&self, owner: &str, ports: &[PortForward]) -> Result<(), FirewallError> {
        self.change(|r| r.publish(owner, ports))
    }

    fn unpublish(&self, owner: &str) -> Result<(), FirewallError> {
        self.change(|r| Ok(r.unpublish(owner))).map(drop)
    }

    fn rules(&self) -> RuleSet {
        self.lock().clone()
    }
}

/// A `match` expression.
fn cmp(op: &str, left: Value, right: Value) -> Value {
    json!({ "match": { "op": op, "left": left, "right": right } })
}

fn meta(key: &str) -> Value {
    json!({ "meta": { "key": key } })
}

fn payload(protocol: &str, field: &str) -> Value {
    json!({ "payload": { "protocol": protocol, "field": field } })
}

fn prefix(net: &ipnet::Ipv4Net) -> Value {
    json!({ "prefix": { "addr": net.network().to_string(), "len": net.prefix_len() } })
}

fn ct_dnat() -> Value {
    cmp("in", json!({ "ct": { "key": "status" } }), json!("dnat"))
}

/// The whole transaction for `rules`. An empty rule set creates-then-deletes the table (so
/// deleting never fails). Otherwise the table is flushed (every rule goes) and refilled; its
/// chains are re-added, which is a no-op for existing ones, so the kernel does not unhook and
/// rehook them (that costs an RCU grace period, tens of milliseconds).
///
/// With `fresh`, the table is deleted and rebuilt instead, dropping whatever chains an older
/// berth left in it.
pub(crate) fn render(table: &str, rules: &RuleSet, fresh: bool) -> Value {
    let table_ref = json!({ "family": "inet", "name": table });
    let mut batch = vec![json!({ "add": { "table": table_ref } })];
    if rules.is_empty() || fresh {
        batch.push(json!({ "delete": { "table": table_ref } }));
    }
    if rules.is_empty() {
        return json!({ "nftables": batch });
    }
    if fresh {
        batch.push(json!({ "add": { "table": table_ref } }));
    }
    batch.push(json!({ "flush": { "table": table_ref } }));
    let base_chains = [
        ("prerouting", "nat", "prerouting", -100),
        ("output", "nat", "output", -100),
        ("postrouting", "nat", "postrouting", 100),
        ("forward", "filter", "forward", 0),
    ];
    for (name, kind, hook, prio) in base_chains {
        batch.push(json!({ "add": { "chain": {
            "family": "inet", "table": table, "name": name,
            "type": kind, "hook": hook, "prio": prio, "policy": "accept",
        } } }));
    }
    batch
        .push(json!({ "add": { "chain": { "family": "inet", "table": table, "name": "ports" } } }));

    let mut rule = |chain: &str, comment: String, expr: Vec<Value>| {
        batch.push(json!({ "add": { "rule": {
            "family": "inet", "table": table, "chain": chain, "comment": comment, "expr": expr,
        } } }));
    };

    let to_local = cmp(
        "==",
        json!({ "fib": { "result": "type", "flags": ["daddr"] } }),
        json!("local"),
    );
    for chain in ["prerouting", "output"] {
        rule(
            chain,
            "published ports".into(),
            vec![to_local.clone(), json!({ "jump": { "target": "ports" } })],
        );
    }
    for (owner, port) in rules.ports() {
        let mut expr = Vec::new();
        if let Some(ip) = port.host_ip.filter(|ip| !ip.is_unspecified()) {
            expr.push(cmp("==", payload("ip", "daddr"), json!(ip.to_string())));
        }
        expr.push(cmp(
            "==",
            payload(port.protocol.as_str(), "dport"),
            json!(port.host_port),
        ));
        expr.push(json!({ "dnat": {
            "family": "ip", "addr": port.container_ip.to_string(), "port": port.container_port,
        } }));
        rule("ports", format!("{owner} {port}"), expr);
    }

    let loopback: ipnet::Ipv4Net = "127.0.0.0/8".parse().expect("valid");
    for net in rules.networks() {
        let comment = format!("network {}", net.bridge);
        let saddr = cmp("==", payload("ip", "saddr"), prefix(&net.subnet));
        let out_bridge = cmp("==", meta("oifname"), json!(net.bridge));
        if !net.internal {
            let elsewhere = cmp("!=", meta("oifname"), json!(net.bridge));
            rule(
                "postrouting",
                comment.clone(),
                vec![saddr.clone(), elsewhere, json!({ "masquerade": null })],
            );
        }
        let from_loopback = cmp("==", payload("ip", "saddr"), prefix(&loopback));
        rule(
            "postrouting",
            comment.clone(),
            vec![
                from_loopback,
                out_bridge.clone(),
                json!({ "masquerade": null }),
            ],
        );
        rule(
            "postrouting",
            comment.clone(),
            vec![saddr, out_bridge, ct_dnat(), json!({ "masquerade": null })],
        );
    }

    for net in rules.networks().filter(|n| n.internal) {
        let comment = format!("internal network {}", net.bridge);
        for (this, other) in [("iifname", "oifname"), ("oifname", "iifname")] {
            rule(
                "forward",
                comment.clone(),
                vec![
                    cmp("==", meta(this), json!(net.bridge)),
                    cmp("!=", meta(other), json!(net.bridge)),
                    json!({ "drop": null }),
                ],
            );
        }
    }
    rule(
        "forward",
        "published ports".into(),
        vec![ct_dnat(), json!({ "accept": null })],
    );
    for net in rules.networks() {
        let others: Vec<&str> = rules
            .networks()
            .map(|n| n.bridge.as_str())
            .filter(|b| *b != net.bridge)
            .collect();
        if others.is_empty() {
            continue;
        }
        rule(
            "forward",
            format!("isolate network {}", net.bridge),
            vec![
                cmp("==", meta("iifname"), json!(net.bridge)),
                cmp("==", meta("oifname"), json!({ "set": others })),
                json!({ "drop": null }),
            ],
        );
    }
    json!({ "nftables": batch })
}

#[cfg(test)]
mod tests {
    use super::super::Protocol;
    use super::super::tests::{fwd, network};
    use super::*;

    fn rules_of(batch: &Value, chain: &str) -> Vec<Value> {
        batch["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c["add"]["rule"].as_object())
            .filter(|r| r["chain"] == chain)
            .map(|r| r["expr"].clone())
            .collect()
    }

    #[test]
    fn a_rule_set_refills_the_table_in_place() {
        let mut rules = RuleSet::default();
        rules
            .add_network(&network("br-a", "10.213.1.0/24", false))
            .unwrap();
        let batch = render("berth", &rules, false);
        let cmds = batch["nftables"].as_array().unwrap();
        assert_eq!(cmds[0]["add"]["table"]["name"], "berth");
        assert_eq!(cmds[1]["flush"]["table"]["name"], "berth");
        assert!(
            cmds.iter().all(|c| c.get("delete").is_none()),
            "no deletes: chains stay hooked"
        );
        let fresh = render("berth", &rules, true);
        assert_eq!(fresh["nftables"][1]["delete"]["table"]["name"], "berth");
        assert_eq!(fresh["nftables"][2]["add"]["table"]["name"], "berth");
        assert_eq!(fresh["nftables"].as_array().unwrap().len(), cmds.len() + 2);
    }

    #[test]
    fn an_empty_rule_set_only_deletes_the_table() {
        let batch = render("berth", &RuleSet::default(), false);
        let cmds = batch["nftables"].as_array().unwrap();
        assert_eq!(cmds.len(), 2);
        assert_eq!(cmds[0]["add"]["table"]["name"], "berth");
        assert_eq!(cmds[1]["delete"]["table"]["family"], "inet");
    }

    #[test]
    fn networks_get_masquerade_unless_internal_and_isolation_between_them() {
        let mut rules = RuleSet::default();
        rules
            .add_network(&network("br-a", "10.213.1.0/24", false))
            .unwrap();
        rules
            .add_network(&network("br-b", "10.213.2.0/24", false))
            .unwrap();
        rules
            .add_network(&network("br-i", "10.213.3.0/24", true))
            .unwrap();
        let batch = render("t", &rules, false);
        let post = rules_of(&batch, "postrouting");
        let masq_for = |net: &str| {
            post.iter().any(|e| {
                e[0]["match"]["right"]["prefix"]["addr"] == net
                    && e[1]["match"]["op"] == "!="
                    && e[2] == json!({"masquerade": null})
            })
        };
        assert!(masq_for("10.213.1.0") && masq_for("10.213.2.0"));
        assert!(!masq_for("10.213.3.0"), "internal networks are not NATed");
        // Loopback and hairpin masquerade for every bridge.
        assert_eq!(
            post.iter()
                .filter(|e| e[0]["match"]["right"]["prefix"]["addr"] == "127.0.0.0")
                .count(),
            3
        );
        assert_eq!(
            post.iter()
                .filter(|e| e
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|m| m["match"]["right"] == "dnat"))
                .count(),
            3
        );

        let fwd_rules = rules_of(&batch, "forward");
        let isolation: Vec<&Value> = fwd_rules
            .iter()
            .filter(|e| e[1]["match"]["right"]["set"].is_array())
            .collect();
        assert_eq!(isolation.len(), 3);
        assert_eq!(isolation[0][0]["match"]["right"], "br-a");
        assert_eq!(
            isolation[0][1]["match"]["right"]["set"],
            json!(["br-b", "br-i"])
        );
        let internal = fwd_rules
            .iter()
            .filter(|e| e[2] == json!({"drop": null}) && e[1]["match"]["op"] == "!=")
            .count();
        assert_eq!(internal, 2, "in and out of the internal bridge");
        // The internal drops come before the DNAT accept, which comes before isolation.
        let accept_at = fwd_rules
            .iter()
            .position(|e| e[1] == json!({"accept": null}))
            .unwrap();
        assert_eq!(accept_at, 2);
    }

    #[test]
    fn published_ports_become_dnat_rules() {
        let mut rules = RuleSet::default();
        rules
            .publish(
                "c1",
                &[
                    fwd(Some("127.0.0.1"), 8080, Protocol::Tcp),
                    fwd(None, 5353, Protocol::Udp),
                ],
            )
            .unwrap();
        let batch = render("t", &rules, false);
        let ports = rules_of(&batch, "ports");
        assert_eq!(ports.len(), 2);
        assert_eq!(ports[0][0]["match"]["left"]["payload"]["field"], "daddr");
        assert_eq!(ports[0][0]["match"]["right"], "127.0.0.1");
        assert_eq!(ports[0][1]["match"]["left"]["payload"]["protocol"], "tcp");
        assert_eq!(ports[0][1]["match"]["right"], 8080);
        assert_eq!(
            ports[0][2]["dnat"],
            json!({"family": "ip", "addr": "10.213.0.2", "port": 80})
        );
        assert_eq!(
            ports[1].as_array().unwrap().len(),
            2,
            "no address match for all addresses"
        );
        assert_eq!(ports[1][0]["match"]["left"]["payload"]["protocol"], "udp");
        for chain in ["prerouting", "output"] {
            let jump = rules_of(&batch, chain);
            assert_eq!(jump.len(), 1);
            assert_eq!(jump[0][1]["jump"]["target"], "ports");
        }
        // No network: no isolation rules at all.
        assert!(
            rules_of(&batch, "forward")
                .iter()
                .all(|e| !e[1]["match"]["right"]["set"].is_array())
        );
    }
}
