//! The recent samples of the host's metrics, in a fixed-size ring, and their rendering in
//! the Prometheus text format for the agent's `/metrics`.

use std::collections::VecDeque;
use understudy_common::prom;

use super::compute::Reading;
use super::schema::Schema;

/// Recent samples, oldest first, at most `capacity`.
#[derive(Debug)]
pub struct History {
    schema: Schema,
    capacity: usize,
    samples: VecDeque<(u64, Vec<Reading>)>,
}

impl History {
    /// An empty history holding up to `capacity` samples of `schema`'s metrics.
    pub fn new(schema: Schema, capacity: usize) -> Self {
        History {
            schema,
            capacity: capacity.max(1),
            samples: VecDeque::new(),
        }
    }

    /// Adds a sample taken at `unix_ms`, dropping the oldest when full.
    pub fn push(&mut self, unix_ms: u64, readings: Vec<Reading>) {
        if self.samples.len() == self.capacity {
            self.samples.pop_front();
        }
        self.samples.push_back((unix_ms, readings));
    }

    /// Number of samples held.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether no sample is held yet.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// The newest sample's readings.
    pub fn latest(&self) -> Option<&[Reading]> {
        self.samples.back().map(|(_, r)| r.as_slice())
    }

    /// The newest sample in the Prometheus text format: one gauge per available metric
    /// (`understudy_host_<name>`, its unit and meaning in HELP), and
    /// `understudy_host_metric_unavailable{metric,reason}` for the others.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let Some(latest) = self.latest() else {
            return out;
        };
        let mut missing = Vec::new();
        for (m, r) in self.schema.metric.iter().zip(latest) {
            match r {
                Ok(v) => {
                    let name = format!("understudy_host_{}", m.name);
                    prom::family(
                        &mut out,
                        &name,
                        "gauge",
                        &format!("{} ({}).", m.help, m.unit),
                    );
                    prom::sample(&mut out, &name, &[], *v);
                }
                Err(why) => missing.push((m.name.as_str(), why.as_str())),
            }
        }
        prom::family(
            &mut out,
            "understudy_host_metric_unavailable",
            "gauge",
            "Schema metrics this host cannot produce now, with the reason.",
        );
        for (name, why) in missing {
            prom::sample(
                &mut out,
                "understudy_host_metric_unavailable",
                &[("metric", name), ("reason", why)],
                1.0,
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_and_renders_values_and_reasons() {
        let schema = super::super::schema::parse(
            "version = 1\nstep_seconds = 1\nwindow = 2\n\
             [[metric]]\nname = \"a\"\nunit = \"ratio\"\nkind = \"gauge\"\nsource = \"s\"\nhelp = \"A\"\n\
             [[metric]]\nname = \"b\"\nunit = \"x\"\nkind = \"gauge\"\nsource = \"s\"\nhelp = \"B\"\n",
        )
        .unwrap();
        let mut h = History::new(schema, 2);
        for i in 0..3 {
            h.push(i, vec![Ok(i as f64), Err("no \"b\" here".into())]);
        }
        assert_eq!(h.len(), 2);
        let text = h.render();
        assert!(text.contains("understudy_host_a 2\n"), "{text}");
        assert!(
            text.contains(
                r#"understudy_host_metric_unavailable{metric="b",reason="no \"b\" here"} 1"#
            ),
            "{text}"
        );
    }
}
