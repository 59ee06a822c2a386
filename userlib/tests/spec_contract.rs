//! The YNL spec, the module's `kmod/uapi.rs` and this library's `uapi` must agree on
//! every name and number: this test reads all three.

use prism_sock::uapi::{
    Command, EventAttr, InfoAttr, StateAttr, FAMILY_NAME, MCGRP_EVENTS, MCGRP_RELEASES, PROTO_VERSION,
    STATE_ATTR_NAMES,
};
use serde_yaml::Value;
use std::collections::BTreeMap;

fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn spec() -> Value {
    let text = std::fs::read_to_string(root().join("docs/netlink/prism_sock.yaml")).unwrap();
    serde_yaml::from_str(&text).unwrap()
}

/// name -> number of the entries of a YNL list (numbering starts at 1 unless `value` says).
fn numbered(list: &Value) -> BTreeMap<String, u64> {
    let mut next = 1;
    let mut out = BTreeMap::new();
    for e in list.as_sequence().unwrap() {
        let n = e.get("value").and_then(Value::as_u64).unwrap_or(next);
        out.insert(e["name"].as_str().unwrap().to_string(), n);
        next = n + 1;
    }
    out
}

/// `NAME: TYPE = N;` constants of `pub(crate) mod <module>` in kmod/uapi.rs, kebab-cased.
fn kmod_consts(module: &str) -> BTreeMap<String, u64> {
    let text = std::fs::read_to_string(root().join("kmod/uapi.rs")).unwrap();
    let start = text.find(&format!("pub(crate) mod {module} {{")).unwrap();
    let body = &text[start..start + text[start..].find('}').unwrap()];
    body.lines()
        .filter_map(|l| {
            let l = l.trim().strip_prefix("pub(crate) const ")?;
            let (name, rest) = l.split_once(':')?;
            let value = rest
                .split('=')
                .nth(1)?
                .trim()
                .trim_end_matches(';')
                .parse()
                .ok()?;
            Some((name.to_lowercase().replace('_', "-"), value))
        })
        .collect()
}

#[test]
fn family_identity_matches() {
    let s = spec();
    assert_eq!(s["name"].as_str(), Some(FAMILY_NAME));
    // The module registers its groups in the spec's order: events, then releases.
    let groups: Vec<&str> = s["mcast-groups"]["list"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert_eq!(groups, [MCGRP_EVENTS, MCGRP_RELEASES]);
    let version = s["definitions"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "proto-version");
    assert_eq!(version.unwrap()["value"].as_u64(), Some(PROTO_VERSION as u64));
    let kmod = std::fs::read_to_string(root().join("kmod/uapi.rs")).unwrap();
    assert!(kmod.contains(&format!("PROTO_VERSION: u32 = {PROTO_VERSION};")));
    assert!(kmod.contains(&format!("c_str!(\"{FAMILY_NAME}\")")));
    for group in groups {
        assert!(kmod.contains(&format!("c_str!(\"{group}\")")), "{group}");
    }
    let family = std::fs::read_to_string(root().join("kmod/family.rs")).unwrap();
    assert!(family.contains("GROUP_EVENTS: u32 = 0;") && family.contains("GROUP_RELEASES: u32 = 1;"));
}

#[test]
fn operations_match() {
    let ops = numbered(&spec()["operations"]["list"]);
    assert_eq!(ops, kmod_consts("cmd"), "spec vs kmod/uapi.rs");
    assert_eq!(ops["get-info"], u8::from(Command::GetInfo) as u64);
    assert_eq!(ops["sock-export"], u8::from(Command::SockExport) as u64);
    assert_eq!(ops["sock-import"], u8::from(Command::SockImport) as u64);
    assert_eq!(ops["sock-imported"], u8::from(Command::SockImported) as u64);
    assert_eq!(ops["sock-exported"], u8::from(Command::SockExported) as u64);
    assert_eq!(ops["sock-released"], u8::from(Command::SockReleased) as u64);
    assert_eq!(ops["sock-forward"], u8::from(Command::SockForward) as u64);
    assert_eq!(ops["sock-list"], u8::from(Command::SockList) as u64);
}

#[test]
fn event_attributes_match() {
    let sets = spec()["attribute-sets"].clone();
    let set = sets
        .as_sequence()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "event")
        .unwrap();
    let attrs = numbered(&set["attributes"]);
    assert_eq!(attrs, kmod_consts("event"), "spec vs kmod/uapi.rs");
    for (name, n) in &attrs {
        let lib = EventAttr::from(*n as u16);
        assert_eq!(u16::from(lib) as u64, *n, "{name}");
        let debug = format!("{lib:?}").to_lowercase();
        assert_eq!(debug, name.replace('-', ""), "{name}");
    }
}

#[test]
fn info_attributes_match() {
    let sets = spec()["attribute-sets"].clone();
    let info = sets
        .as_sequence()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "info")
        .unwrap();
    let attrs = numbered(&info["attributes"]);
    assert_eq!(attrs, kmod_consts("attr"), "spec vs kmod/uapi.rs");
    let lib = [
        ("pad", InfoAttr::Pad),
        ("module-version", InfoAttr::ModuleVersion),
        ("proto-version", InfoAttr::ProtoVersion),
        ("exports", InfoAttr::Exports),
        ("imports", InfoAttr::Imports),
        ("releases", InfoAttr::Releases),
        ("errors", InfoAttr::Errors),
        ("max-queue-bytes", InfoAttr::MaxQueueBytes),
        ("departed-active", InfoAttr::DepartedActive),
        ("departed-capacity", InfoAttr::DepartedCapacity),
        ("departed-timeout-ms", InfoAttr::DepartedTimeoutMs),
        ("departed-dropped", InfoAttr::DepartedDropped),
        ("departed-expired", InfoAttr::DepartedExpired),
        ("departed-full", InfoAttr::DepartedFull),
        ("tracked", InfoAttr::Tracked),
        ("events-sent", InfoAttr::EventsSent),
        ("events-lost", InfoAttr::EventsLost),
        ("departed-forwarded", InfoAttr::DepartedForwarded),
        ("departed-forwarded-bytes", InfoAttr::DepartedForwardedBytes),
        ("departed-forward-failed", InfoAttr::DepartedForwardFailed),
        ("forwarded-unowned", InfoAttr::ForwardedUnowned),
        ("departed-quota", InfoAttr::DepartedQuota),
    ];
    assert_eq!(lib.len(), attrs.len());
    for (name, a) in lib {
        assert_eq!(attrs[name], u16::from(a) as u64, "{name}");
    }
}

#[test]
fn state_attributes_match() {
    let sets = spec()["attribute-sets"].clone();
    let set = sets
        .as_sequence()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "state")
        .unwrap();
    let attrs = numbered(&set["attributes"]);
    assert_eq!(attrs, kmod_consts("state"), "spec vs kmod/uapi.rs");
    assert_eq!(attrs.len(), STATE_ATTR_NAMES.len());
    for (i, name) in STATE_ATTR_NAMES.iter().enumerate() {
        let n = i as u16 + 1;
        assert_eq!(attrs[*name], n as u64, "{name}");
        assert_eq!(u16::from(StateAttr::from(n)), n, "{name}");
    }
    assert_eq!(u16::from(StateAttr::Fd), 1);
    assert_eq!(u16::from(StateAttr::ForwardTo), STATE_ATTR_NAMES.len() as u16);
}
