//! The host feature schema (`models/schema.toml`), compiled into the agent so the agent and
//! the training code read the same list of metrics in the same order.

use serde::Deserialize;

/// The schema file, as shipped.
pub const SCHEMA_TOML: &str = include_str!("../../../models/schema.toml");

/// Schema format this build reads.
pub const SCHEMA_VERSION: u32 = 1;

/// The whole schema.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schema {
    /// Format version.
    pub version: u32,
    /// Live sampling period.
    pub step_seconds: u32,
    /// Samples per model window.
    pub window: u32,
    /// The metrics, in model input order.
    pub metric: Vec<MetricDef>,
}

/// One metric.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricDef {
    /// Name (the feature's name everywhere).
    pub name: String,
    /// Unit of the value the agent reports.
    pub unit: String,
    /// gauge, counter or derived.
    pub kind: String,
    /// 1-based column in the Server Machine Dataset, if it has one.
    pub smd_column: Option<u32>,
    /// Where the kernel exposes it.
    pub source: String,
    /// What it means.
    pub help: String,
}

/// Parses and checks a schema text.
pub fn parse(text: &str) -> Result<Schema, String> {
    let schema: Schema = understudy_common::config::parse(text)
        .map_err(|(key, reason)| format!("models/schema.toml: {key}: {reason}"))?;
    if schema.version != SCHEMA_VERSION {
        return Err(format!(
            "models/schema.toml: version {} is not supported (this build reads {SCHEMA_VERSION})",
            schema.version
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for m in &schema.metric {
        if !seen.insert(m.name.as_str()) {
            return Err(format!(
                "models/schema.toml: metric {:?} is listed twice",
                m.name
            ));
        }
    }
    Ok(schema)
}

/// The shipped schema.
pub fn shipped() -> Result<Schema, String> {
    parse(SCHEMA_TOML)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_schema_starts_with_the_38_smd_columns_in_order() {
        let s = shipped().unwrap();
        let smd: Vec<u32> = s.metric.iter().filter_map(|m| m.smd_column).collect();
        assert_eq!(smd, (1..=38).collect::<Vec<_>>());
        assert!(s.metric[..38].iter().all(|m| m.smd_column.is_some()));
    }

    #[test]
    fn duplicates_and_other_versions_are_refused() {
        let dup = "version = 1\nstep_seconds = 1\nwindow = 2\n[[metric]]\nname = \"a\"\nunit = \"x\"\nkind = \"gauge\"\nsource = \"s\"\nhelp = \"h\"\n";
        assert!(parse(dup).is_ok());
        let twice = format!("{dup}[[metric]]\nname = \"a\"\nunit = \"x\"\nkind = \"gauge\"\nsource = \"s\"\nhelp = \"h\"\n");
        assert!(parse(&twice).unwrap_err().contains("twice"));
        assert!(parse(&dup.replace("version = 1", "version = 9"))
            .unwrap_err()
            .contains("version 9"));
    }
}
