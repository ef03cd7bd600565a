//! The parsers that face the network never panic: arbitrary text, arbitrary JSON, and
//! mutations of real receipts and inputs get errors, not crashes. (Deeper, coverage-guided
//! runs of the same entry points live in fuzz/.)

use haca_core::claims::{Checker, Claim, TrustAnchors};
use haca_core::tensor::parse_input;
use haca_core::ParsedReceipt;
use proptest::prelude::*;
use serde_json::{json, Value};

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|i| json!(i)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        "[a-z0-9:._-]{0,70}".prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 128, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("version".to_owned()),
                    Just("run_id".to_owned()),
                    Just("boxes".to_owned()),
                    Just("evidence".to_owned()),
                    Just("status".to_owned()),
                    Just("shape".to_owned()),
                    Just("data".to_owned()),
                    Just("dtype".to_owned()),
                    Just("numbers".to_owned()),
                    Just("values".to_owned()),
                    "[a-z]{1,8}"
                ],
                inner,
                0..8
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn check_all(text: &str) {
    if let Ok(parsed) = ParsedReceipt::from_json_str(text) {
        let anchors = TrustAnchors::default();
        let c = Checker::new(&parsed, &anchors, 0);
        for claim in Claim::all(300, 86_400) {
            let _ = c.check(claim);
        }
        let _ = c.problems();
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn receipt_parser_survives_arbitrary_text(s in ".{0,400}") {
        check_all(&s);
    }

    #[test]
    fn receipt_parser_survives_arbitrary_json(v in arb_json()) {
        check_all(&v.to_string());
        let _ = parse_input(&v, "input");
    }

    #[test]
    fn tensor_parser_survives_arbitrary_json_shapes(shape in prop::collection::vec(any::<u64>(), 0..6), data in arb_json(), dtype in "[a-z0-9]{0,8}") {
        let _ = parse_input(&json!({"x": {"shape": shape, "data": data, "dtype": dtype}}), "input");
        let _ = parse_input(&json!({"numbers": [{"name": "x", "values": data, "shape": shape}]}), "input");
    }
}

#[test]
fn huge_declared_shapes_are_refused_without_allocating() {
    let e = parse_input(
        &json!({"x": {"shape": [4294967295u64, 4294967295u64, 4294967295u64], "data": [1]}}),
        "input",
    )
    .unwrap_err();
    assert_eq!(e.field, "input.x.data");
}

#[test]
fn deeply_nested_input_is_refused() {
    let mut v = json!(1);
    for _ in 0..100 {
        v = json!([v]);
    }
    let e = parse_input(&json!({"x": {"data": v}}), "input").unwrap_err();
    assert!(e.reason.contains("nested"), "{e}");
}
