//! Queries on `analyze --format json` documents and `run`'s verdicts.json
//! (the schema of docs/, CONTRACT.md of issue 11).

use serde_json::Value;

/// Not a stall: the verdicts that exit 0.
pub fn is_stall(verdict: &str) -> bool {
    !matches!(verdict, "healthy" | "idle" | "slow_but_healthy")
}

/// The document's verdicts.
pub fn verdicts_of(doc: &Value) -> Vec<&Value> {
    doc["verdicts"]
        .as_array()
        .expect("verdicts")
        .iter()
        .collect()
}

/// The top-level cause that lists verdict `index`.
pub fn cause_of(doc: &Value, index: usize) -> Option<&Value> {
    doc["causes"].as_array()?.iter().find(|c| {
        c["verdicts"]
            .as_array()
            .is_some_and(|ix| ix.iter().any(|i| i.as_u64() == Some(index as u64)))
    })
}

/// The publishes of every connection.
pub fn publishes(doc: &Value) -> u64 {
    doc["connections"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["publishes"].as_u64())
        .sum()
}
