//! Comparisons that print where two texts part, not two walls of text.

use std::fmt::Write as _;

use serde_json::Value;

/// Lines shown before and after the first difference.
const CONTEXT: usize = 3;

/// Panics, showing the lines around the first one that differs, when `got`
/// is not `want`.
#[track_caller]
pub fn assert_same_text(what: &str, want: &str, got: &str) {
    if want == got {
        return;
    }
    let (w, g): (Vec<&str>, Vec<&str>) = (want.lines().collect(), got.lines().collect());
    let first = w.iter().zip(&g).take_while(|(a, b)| a == b).count();
    let mut s = format!(
        "{what}: differs from line {} (want {} lines, got {})\n",
        first + 1,
        w.len(),
        g.len()
    );
    let from = first.saturating_sub(CONTEXT);
    for (i, line) in w.iter().enumerate().take(first).skip(from) {
        let _ = writeln!(s, "  {:>5}   {line}", i + 1);
    }
    for (mark, lines) in [('-', &w), ('+', &g)] {
        for (i, line) in lines.iter().enumerate().skip(first).take(CONTEXT) {
            let _ = writeln!(s, "{mark} {:>5}   {line}", i + 1);
        }
    }
    if w.len() == g.len() && first == w.len() {
        s.push_str("  (the same lines: they differ in line endings)\n");
    }
    panic!("{s}");
}

/// [`assert_same_text`] on the two values pretty-printed.
#[track_caller]
pub fn assert_same_json(what: &str, want: &Value, got: &Value) {
    if want != got {
        let pretty = |v: &Value| serde_json::to_string_pretty(v).unwrap_or_default();
        assert_same_text(what, &pretty(want), &pretty(got));
    }
}

/// [`assert_same_text`] on two values' `{:#?}`.
#[track_caller]
pub fn assert_same_debug<T: std::fmt::Debug + PartialEq>(what: &str, want: &T, got: &T) {
    if want != got {
        assert_same_text(what, &format!("{want:#?}"), &format!("{got:#?}"));
    }
}
