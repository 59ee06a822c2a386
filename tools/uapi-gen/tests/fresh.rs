//! The generated uapi files in the tree are what the spec gives: a spec change without
//! `make uapi` fails here, before the module or the library is built with stale numbers.

use std::path::Path;

#[test]
fn generated_files_match_the_spec() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let stale = prism_uapi_gen::sync(&root, true).expect("the spec generates");
    assert!(
        stale.is_empty(),
        "stale: {stale:?}; run `make uapi` and commit the result"
    );
}

#[test]
fn numbering_follows_ynl() {
    let spec = prism_uapi_gen::Spec::parse(
        "name: t\nprotocol: genetlink\ndefinitions:\n  - {type: enum, name: e, entries: [{name: a}, {name: b, value: 5}, {name: c}]}\n\
         attribute-sets:\n  - {name: s, attributes: [{name: x, type: u8}, {name: y, type: u32, value: 7}, {name: z, type: flag}]}\n\
         operations:\n  list:\n    - {name: op, attribute-set: s, do: {request: {attributes: [x, z]}}}\n\
         mcast-groups:\n  list:\n    - {name: g}\n",
    )
    .expect("parses");
    let values = |v: &[prism_uapi_gen::Entry]| v.iter().map(|e| e.value).collect::<Vec<_>>();
    assert_eq!(values(&spec.enums[0].entries), [0, 5, 6]);
    let attrs: Vec<_> = spec.sets[0].attrs.iter().map(|a| a.entry.clone()).collect();
    assert_eq!(values(&attrs), [1, 7, 8]);
    assert_eq!(spec.ops[0].entry.value, 1);
    assert!(!spec.ops[0].replies);
    let kmod = prism_uapi_gen::kmod(&spec).expect("generates");
    assert!(kmod.contains("pub(crate) const OP_MAXATTR: u16 = 8;"));
    assert!(kmod.contains("(super::s::Z, b::NLA_FLAG, 0),"));
}

#[test]
fn unknown_types_and_lengths_are_refused() {
    let spec = |attr: &str| {
        prism_uapi_gen::Spec::parse(&format!(
            "name: t\nattribute-sets:\n  - {{name: s, attributes: [{attr}]}}\n\
             operations:\n  list:\n    - {{name: op, attribute-set: s, do: {{request: {{attributes: [x]}}}}}}\n\
             mcast-groups:\n  list: []\n"
        ))
    };
    let nested = spec("{name: x, type: nest}").expect("parses");
    assert!(prism_uapi_gen::kmod(&nested).unwrap_err().contains("type nest"));
    let err = spec("{name: x, type: binary, checks: {max-len: nosuch}}").unwrap_err();
    assert!(err.contains("no const named nosuch"), "{err}");
}
