//! Writing the Prometheus text exposition format by hand, for metrics whose label values
//! are only known at scrape time (hosts, workloads, schema metrics).

use std::fmt::Write;

/// Escapes a label value: backslash, double quote and newline, as the format requires.
pub fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Writes a metric family's `# HELP` and `# TYPE` lines.
pub fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    // Writing into a String cannot fail.
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Writes one sample; `labels` are (name, unescaped value) pairs.
pub fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: f64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{k}=\"{}\"", escape_label(v));
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// A family whose samples come one per item of some kind: its name, type, help, and the
/// item's value (none: no sample for that item).
pub type PerItem<T> = (
    &'static str,
    &'static str,
    &'static str,
    fn(&T) -> Option<f64>,
);

/// Writes each family of `families` with one sample per item of `items` that has a value,
/// labelled `label` = `name(item)`; each family's HELP and TYPE even with no items.
pub fn per_item<T>(
    out: &mut String,
    families: &[PerItem<T>],
    items: &[T],
    label: &str,
    name: fn(&T) -> &str,
) {
    for (family_name, kind, help, value) in families {
        family(out, family_name, kind, help);
        for item in items {
            if let Some(v) = value(item) {
                sample(out, family_name, &[(label, name(item))], v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        let mut out = String::new();
        sample(&mut out, "m", &[("a", "x\"y\\z\nw"), ("b", "ok")], 1.5);
        assert_eq!(out, "m{a=\"x\\\"y\\\\z\\nw\",b=\"ok\"} 1.5\n");
        out.clear();
        sample(&mut out, "m", &[], 0.0);
        assert_eq!(out, "m 0\n");
    }
}
