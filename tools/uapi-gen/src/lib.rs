//! The `prism_sock` family's names, numbers and request policies, generated from its
//! YNL spec for both sides of the contract: `kmod/uapi_generated.rs` (constants and
//! `nla_policy` tables for the module) and `userlib/src/uapi_generated.rs` (typed neli
//! enums for the library). The spec is the single source; neither side keeps a copy.
//!
//! Numbering follows YNL: attributes and operations count from 1, enum entries from 0,
//! unless an entry gives its `value`; each later entry is one more than the one before.

use serde_yaml::Value;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Where the spec lives, from the repository's top folder.
pub const SPEC: &str = "docs/netlink/prism_sock.yaml";
/// The module's generated file.
pub const KMOD_OUT: &str = "kmod/uapi_generated.rs";
/// The library's generated file.
pub const USERLIB_OUT: &str = "userlib/src/uapi_generated.rs";

/// One named, numbered entry: an attribute, an operation or an enum entry.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The spec's name (kebab-case).
    pub name: String,
    /// Its number.
    pub value: u64,
    /// The spec's `doc`, if any.
    pub doc: Option<String>,
}

/// An attribute of an attribute set.
#[derive(Debug, Clone)]
pub struct Attr {
    /// Name, number and doc.
    pub entry: Entry,
    /// YNL type (`u8`, `u32`, `binary`, `flag`, `pad`, ...).
    pub ty: String,
    /// `checks: max-len`, resolved.
    pub max_len: Option<u64>,
    /// The enum its value takes, if any.
    pub enum_name: Option<String>,
}

/// An attribute set.
#[derive(Debug, Clone)]
pub struct Set {
    /// The set's name.
    pub name: String,
    /// The set's `doc`, if any.
    pub doc: Option<String>,
    /// Its attributes in spec order.
    pub attrs: Vec<Attr>,
}

/// An operation (a request, or an event of a multicast group).
#[derive(Debug, Clone)]
pub struct Op {
    /// Name, number and doc.
    pub entry: Entry,
    /// The attribute set its messages use.
    pub set: Option<String>,
    /// Attributes of a `do` request, when it takes a request.
    pub request: Option<Vec<String>>,
    /// Whether a `do` is answered with a message (others are acknowledged).
    pub replies: bool,
}

/// An enum definition.
#[derive(Debug, Clone)]
pub struct Enum {
    /// The enum's name.
    pub name: String,
    /// The enum's `doc`, if any.
    pub doc: Option<String>,
    /// Its entries.
    pub entries: Vec<Entry>,
}

/// What the generators read from the spec.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The family's name.
    pub name: String,
    /// `type: const` definitions.
    pub consts: Vec<Entry>,
    /// `type: enum` definitions.
    pub enums: Vec<Enum>,
    /// Attribute sets.
    pub sets: Vec<Set>,
    /// Operations, numbered.
    pub ops: Vec<Op>,
    /// Multicast group names, in registration order.
    pub groups: Vec<String>,
}

fn text(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(|s| s.trim().to_string())
}

fn list<'a>(v: &'a Value, what: &str) -> Result<&'a Vec<Value>, String> {
    v.as_sequence().ok_or_else(|| format!("{what}: not a list"))
}

/// Names with numbers: each entry's `value`, or one more than the entry before.
fn numbered(items: &[Value], first: u64, what: &str) -> Result<Vec<Entry>, String> {
    let mut next = first;
    items
        .iter()
        .map(|item| {
            let name = text(item, "name").ok_or_else(|| format!("{what}: an entry has no name"))?;
            let value = item.get("value").and_then(Value::as_u64).unwrap_or(next);
            next = value + 1;
            Ok(Entry {
                name,
                value,
                doc: text(item, "doc"),
            })
        })
        .collect()
}

impl Spec {
    /// Reads a spec from its YAML text.
    pub fn parse(yaml: &str) -> Result<Self, String> {
        let root: Value = serde_yaml::from_str(yaml).map_err(|e| format!("{SPEC}: {e}"))?;
        let name = text(&root, "name").ok_or("the spec has no name")?;
        let mut consts = Vec::new();
        let mut enums = Vec::new();
        let empty = Vec::new();
        let defs = match root.get("definitions") {
            Some(d) => list(d, "definitions")?,
            None => &empty,
        };
        for d in defs {
            let dname = text(d, "name").ok_or("a definition has no name")?;
            match d.get("type").and_then(Value::as_str) {
                Some("const") => consts.push(Entry {
                    value: d
                        .get("value")
                        .and_then(Value::as_u64)
                        .ok_or_else(|| format!("const {dname}: no value"))?,
                    name: dname,
                    doc: text(d, "doc"),
                }),
                Some("enum") => enums.push(Enum {
                    entries: numbered(list(&d["entries"], &dname)?, 0, &dname)?,
                    doc: text(d, "doc"),
                    name: dname,
                }),
                other => return Err(format!("definition {dname}: type {other:?} is not generated")),
            }
        }
        let resolve = |v: &Value, what: &str| -> Result<u64, String> {
            if let Some(n) = v.as_u64() {
                return Ok(n);
            }
            let define = v.as_str().ok_or_else(|| format!("{what}: not a length"))?;
            consts
                .iter()
                .find(|c| c.name == define)
                .map(|c| c.value)
                .ok_or_else(|| format!("{what}: no const named {define}"))
        };
        let mut sets = Vec::new();
        for s in list(&root["attribute-sets"], "attribute-sets")? {
            let sname = text(s, "name").ok_or("an attribute set has no name")?;
            let items = list(&s["attributes"], &sname)?;
            let entries = numbered(items, 1, &sname)?;
            let attrs = items
                .iter()
                .zip(entries)
                .map(|(item, entry)| {
                    let what = format!("{sname}.{}", entry.name);
                    let max_len = match item.get("checks").and_then(|c| c.get("max-len")) {
                        Some(v) => Some(resolve(v, &what)?),
                        None => None,
                    };
                    Ok(Attr {
                        ty: text(item, "type").ok_or_else(|| format!("{what}: no type"))?,
                        entry,
                        max_len,
                        enum_name: text(item, "enum"),
                    })
                })
                .collect::<Result<_, String>>()?;
            sets.push(Set {
                doc: text(s, "doc"),
                name: sname,
                attrs,
            });
        }
        let op_items = list(&root["operations"]["list"], "operations")?;
        let ops = op_items
            .iter()
            .zip(numbered(op_items, 1, "operations")?)
            .map(|(item, entry)| {
                let request = item["do"]["request"]["attributes"].as_sequence().map(|attrs| {
                    attrs
                        .iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                });
                Op {
                    set: text(item, "attribute-set"),
                    request,
                    replies: item.get("do").is_none() || item["do"].get("reply").is_some(),
                    entry,
                }
            })
            .collect();
        let groups = list(&root["mcast-groups"]["list"], "mcast-groups")?
            .iter()
            .map(|g| text(g, "name").ok_or_else(|| "a group has no name".to_string()))
            .collect::<Result<_, _>>()?;
        Ok(Spec {
            name,
            consts,
            enums,
            sets,
            ops,
            groups,
        })
    }

    fn set(&self, name: &str) -> Result<&Set, String> {
        self.sets
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| format!("no attribute set {name}"))
    }

    /// The integer type of the attributes that carry enum `name` (u32 when none does).
    fn enum_type(&self, name: &str) -> String {
        self.sets
            .iter()
            .flat_map(|s| s.attrs.iter())
            .find(|a| a.enum_name.as_deref() == Some(name))
            .map_or_else(|| "u32".to_string(), |a| a.ty.clone())
    }
}

/// `kebab-name` as `KEBAB_NAME`.
fn upper(name: &str) -> String {
    name.replace('-', "_").to_uppercase()
}

/// `kebab-name` as `KebabName`.
fn camel(name: &str) -> String {
    name.split('-')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_uppercase().chain(c).collect::<String>())
                .unwrap_or_default()
        })
        .collect()
}

/// `doc` as `///` lines at `indent`, or `fallback` as one line.
fn doc_lines(out: &mut String, indent: &str, doc: Option<&str>, fallback: &str) {
    let text = doc.unwrap_or(fallback);
    for line in text.lines() {
        let line = line.trim_end();
        if line.is_empty() {
            let _ = writeln!(out, "{indent}///");
        } else {
            let _ = writeln!(out, "{indent}/// {line}");
        }
    }
}

const HEADER: &str =
    "Generated by tools/uapi-gen from docs/netlink/prism_sock.yaml (`make uapi`): do not edit.";

/// The netlink policy type of a request attribute, and its length bound.
fn policy_of(a: &Attr) -> Result<(&'static str, u64), String> {
    let max = a.max_len.unwrap_or(0);
    Ok(match a.ty.as_str() {
        "u8" => ("NLA_U8", 0),
        "u16" => ("NLA_U16", 0),
        "u32" => ("NLA_U32", 0),
        "u64" => ("NLA_U64", 0),
        "flag" => ("NLA_FLAG", 0),
        // nla_put_64bit() aligns with an empty attribute of this type.
        "pad" => ("NLA_FLAG", 0),
        "binary" => ("NLA_BINARY", max),
        // The module checks a string's terminator itself, naming the attribute in its
        // message; the policy bounds the payload, NUL included.
        "string" => ("NLA_BINARY", if max == 0 { 0 } else { max + 1 }),
        other => return Err(format!("{}: type {other} has no policy here", a.entry.name)),
    })
}

/// The module's file: constants, and the request policy of each operation that takes
/// attributes.
pub fn kmod(spec: &Spec) -> Result<String, String> {
    let mut o = String::new();
    let _ = writeln!(o, "// SPDX-License-Identifier: GPL-2.0");
    let _ = writeln!(o, "// {HEADER}");
    o += "\n//! Names and numbers of the `prism_sock` generic netlink family, and the policies\n\
          //! genetlink validates its requests with, as the YNL spec defines them.\n\n";
    o += "use crate::bindings as b;\nuse kernel::c_str;\nuse kernel::str::CStr;\n\n";
    let _ = writeln!(o, "/// Family name, as resolved by `CTRL_CMD_GETFAMILY`.");
    let _ = writeln!(
        o,
        "pub(crate) const FAMILY_NAME: &CStr = c_str!(\"{}\");",
        spec.name
    );
    for c in &spec.consts {
        doc_lines(&mut o, "", c.doc.as_deref(), &format!("`{}`", c.name));
        let _ = writeln!(o, "pub(crate) const {}: u32 = {};", upper(&c.name), c.value);
    }
    for (i, g) in spec.groups.iter().enumerate() {
        let _ = writeln!(o, "/// Name of multicast group `{g}`.");
        let _ = writeln!(o, "pub(crate) const MCGRP_{}: &CStr = c_str!(\"{g}\");", upper(g));
        let _ = writeln!(o, "/// Index of group `{g}` in the family's group array.");
        let _ = writeln!(o, "pub(crate) const GROUP_{}: u32 = {i};", upper(g));
    }
    let _ = writeln!(o, "/// Multicast groups of the family.");
    let _ = writeln!(o, "pub(crate) const N_GROUPS: usize = {};", spec.groups.len());
    o += "\n/// Commands (`operations`).\npub(crate) mod cmd {\n";
    for op in &spec.ops {
        let _ = writeln!(o, "    /// `{}`", op.entry.name);
        let _ = writeln!(
            o,
            "    pub(crate) const {}: u8 = {};",
            upper(&op.entry.name),
            op.entry.value
        );
    }
    o += "}\n";
    for e in &spec.enums {
        let ty = spec.enum_type(&e.name);
        let _ = writeln!(o);
        doc_lines(&mut o, "", e.doc.as_deref(), &format!("Enum `{}`.", e.name));
        let _ = writeln!(o, "pub(crate) mod {} {{", e.name.replace('-', "_"));
        for v in &e.entries {
            doc_lines(&mut o, "    ", v.doc.as_deref(), &format!("`{}`", v.name));
            let _ = writeln!(o, "    pub(crate) const {}: {ty} = {};", upper(&v.name), v.value);
        }
        o += "}\n";
    }
    for s in &spec.sets {
        let _ = writeln!(o);
        doc_lines(
            &mut o,
            "",
            s.doc.as_deref(),
            &format!("Attributes of the `{}` set.", s.name),
        );
        let _ = writeln!(o, "pub(crate) mod {} {{", s.name.replace('-', "_"));
        for a in &s.attrs {
            let _ = writeln!(o, "    /// `{}`", a.entry.name);
            let _ = writeln!(
                o,
                "    pub(crate) const {}: u16 = {};",
                upper(&a.entry.name),
                a.entry.value
            );
        }
        o += "}\n";
    }
    o += "\n/// Request policies: for each operation that takes attributes, the highest one\n\
          /// (`MAXATTR`) and `(attribute, type, max length)` of each; what a request does\n\
          /// not list stays `NLA_UNSPEC`, which genetlink's strict validation refuses.\n\
          pub(crate) mod policy {\n    use super::b;\n";
    for op in &spec.ops {
        let (Some(request), Some(set)) = (&op.request, &op.set) else {
            continue;
        };
        let set = spec.set(set)?;
        let mut rows = Vec::new();
        for name in request {
            let a = set
                .attrs
                .iter()
                .find(|a| &a.entry.name == name)
                .ok_or_else(|| format!("{}: no attribute {name} in set {}", op.entry.name, set.name))?;
            let (ty, len) = policy_of(a)?;
            if len > u64::from(u16::MAX) {
                return Err(format!("{}: max-len {len} does not fit a policy", a.entry.name));
            }
            rows.push((a.entry.value, upper(&a.entry.name), ty, len));
        }
        let max = rows.iter().map(|r| r.0).max().unwrap_or(0);
        let op_name = upper(&op.entry.name);
        let module = set.name.replace('-', "_");
        let _ = writeln!(o, "\n    /// Highest attribute of a `{}` request.", op.entry.name);
        let _ = writeln!(o, "    pub(crate) const {op_name}_MAXATTR: u16 = {max};");
        let _ = writeln!(o, "    /// Policy of a `{}` request.", op.entry.name);
        let _ = writeln!(o, "    pub(crate) const {op_name}: &[(u16, u32, u16)] = &[");
        for (_, attr, ty, len) in rows {
            let _ = writeln!(o, "        (super::{module}::{attr}, b::{ty}, {len}),");
        }
        o += "    ];\n";
    }
    o += "}\n";
    Ok(o)
}

/// The library's file: typed constants for neli.
pub fn userlib(spec: &Spec) -> Result<String, String> {
    let mut o = String::new();
    let _ = writeln!(o, "// {HEADER}");
    o += "\n";
    let _ = writeln!(o, "/// Generic netlink family name.");
    let _ = writeln!(o, "pub const FAMILY_NAME: &str = \"{}\";", spec.name);
    for c in &spec.consts {
        doc_lines(&mut o, "", c.doc.as_deref(), &format!("`{}`", c.name));
        let _ = writeln!(o, "pub const {}: u32 = {};", upper(&c.name), c.value);
    }
    for g in &spec.groups {
        let _ = writeln!(o, "/// Name of multicast group `{g}`.");
        let _ = writeln!(o, "pub const MCGRP_{}: &str = \"{g}\";", upper(g));
    }
    o += "\n/// Commands of the family.\n#[neli::neli_enum(serialized_type = \"u8\")]\npub enum Command {\n";
    for op in &spec.ops {
        doc_lines(
            &mut o,
            "    ",
            op.entry.doc.as_deref(),
            &format!("`{}`", op.entry.name),
        );
        let _ = writeln!(o, "    {} = {},", camel(&op.entry.name), op.entry.value);
    }
    o += "}\nimpl neli::consts::genl::Cmd for Command {}\n\nimpl Command {\n\
          \x20   /// Whether the module answers the request with a message of its own; the others\n\
          \x20   /// are acknowledged.\n\
          \x20   pub fn replies(&self) -> bool {\n";
    let silent: Vec<String> = spec
        .ops
        .iter()
        .filter(|op| !op.replies)
        .map(|op| format!("Command::{}", camel(&op.entry.name)))
        .collect();
    if silent.is_empty() {
        o += "        true\n";
    } else {
        let _ = writeln!(o, "        !matches!(self, {})", silent.join(" | "));
    }
    o += "    }\n}\n";
    for e in &spec.enums {
        let ty = spec.enum_type(&e.name);
        let _ = writeln!(o);
        doc_lines(&mut o, "", e.doc.as_deref(), &format!("Enum `{}`.", e.name));
        let _ = writeln!(o, "pub mod {} {{", e.name.replace('-', "_"));
        for v in &e.entries {
            doc_lines(&mut o, "    ", v.doc.as_deref(), &format!("`{}`", v.name));
            let _ = writeln!(o, "    pub const {}: {ty} = {};", upper(&v.name), v.value);
        }
        o += "}\n";
    }
    for s in &spec.sets {
        let ty = format!("{}Attr", camel(&s.name));
        let _ = writeln!(o);
        doc_lines(
            &mut o,
            "",
            s.doc.as_deref(),
            &format!("Attributes of the `{}` set.", s.name),
        );
        let _ = writeln!(
            o,
            "#[neli::neli_enum(serialized_type = \"u16\")]\npub enum {ty} {{"
        );
        for a in &s.attrs {
            doc_lines(
                &mut o,
                "    ",
                a.entry.doc.as_deref(),
                &format!("`{}`", a.entry.name),
            );
            let _ = writeln!(o, "    {} = {},", camel(&a.entry.name), a.entry.value);
        }
        let _ = writeln!(o, "}}\nimpl neli::consts::genl::NlAttrType for {ty} {{}}");
        let _ = writeln!(
            o,
            "\n/// Names of the `{}` attributes, by number less one.",
            s.name
        );
        let _ = writeln!(
            o,
            "pub const {}_ATTR_NAMES: [&str; {}] = [",
            upper(&s.name),
            s.attrs.len()
        );
        for a in &s.attrs {
            let _ = writeln!(o, "    \"{}\",", a.entry.name);
        }
        o += "];\n";
    }
    Ok(o)
}

/// Both generated files' paths under `root`, with what they must hold.
pub fn outputs(root: &Path) -> Result<Vec<(PathBuf, String)>, String> {
    let path = root.join(SPEC);
    let yaml = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let spec = Spec::parse(&yaml)?;
    Ok(vec![
        (root.join(KMOD_OUT), kmod(&spec)?),
        (root.join(USERLIB_OUT), userlib(&spec)?),
    ])
}

/// Writes the generated files that differ (or, with `check`, writes nothing); returns
/// the paths that differed.
pub fn sync(root: &Path, check: bool) -> Result<Vec<PathBuf>, String> {
    let mut differ = Vec::new();
    for (path, text) in outputs(root)? {
        if std::fs::read_to_string(&path).ok().as_deref() == Some(text.as_str()) {
            continue;
        }
        if !check {
            std::fs::write(&path, &text).map_err(|e| format!("{}: {e}", path.display()))?;
        }
        differ.push(path);
    }
    Ok(differ)
}
