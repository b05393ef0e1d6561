//! The coordinator's event log: every decision, trigger, move, failure and operator action,
//! with its time, subject, reason and inputs. The newest [`MAX_EVENTS`] are kept (in the
//! store, and in memory for the API); each has a sequence number, so a follower asks for
//! what came after the last one it saw.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// How many events are kept.
pub const MAX_EVENTS: usize = 10_000;

/// One event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Its number, increasing.
    pub seq: u64,
    /// When, ms since the Unix epoch.
    pub unix_ms: u64,
    /// What kind: `trigger`, `decision`, `move`, `drain`, `cordon`, `maintenance`, …
    pub kind: String,
    /// The host it is about, if one.
    pub host: Option<String>,
    /// The workload it is about, if one.
    pub workload: Option<String>,
    /// What happened and why, for people.
    pub message: String,
    /// The inputs that decided it (scores, thresholds), by name.
    pub inputs: Vec<(String, String)>,
}

/// What a reader wants.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filter {
    /// Only events after this number.
    pub after: Option<u64>,
    /// Only about this host.
    pub host: Option<String>,
    /// Only about this workload.
    pub workload: Option<String>,
}

impl Filter {
    /// Whether `e` passes.
    pub fn passes(&self, e: &Event) -> bool {
        self.after.is_none_or(|a| e.seq > a)
            && self
                .host
                .as_ref()
                .is_none_or(|h| e.host.as_ref() == Some(h))
            && self
                .workload
                .as_ref()
                .is_none_or(|w| e.workload.as_ref() == Some(w))
    }
}

/// The newest events, in order.
#[derive(Debug, Default)]
pub struct Log {
    events: VecDeque<Event>,
    next_seq: u64,
}

impl Log {
    /// The log as loaded from the store (any order).
    pub fn new(mut loaded: Vec<Event>) -> Self {
        loaded.sort_by_key(|e| e.seq);
        let next_seq = loaded.last().map_or(1, |e| e.seq + 1);
        let skip = loaded.len().saturating_sub(MAX_EVENTS);
        Log {
            events: loaded.into_iter().skip(skip).collect(),
            next_seq,
        }
    }

    /// Adds an event; returns it numbered, and the number of the one that fell out, if any.
    pub fn push(
        &mut self,
        unix_ms: u64,
        kind: &str,
        (host, workload): (Option<&str>, Option<&str>),
        message: String,
        inputs: Vec<(String, String)>,
    ) -> (Event, Option<u64>) {
        let e = Event {
            seq: self.next_seq,
            unix_ms,
            kind: kind.to_owned(),
            host: host.map(str::to_owned),
            workload: workload.map(str::to_owned),
            message,
            inputs,
        };
        self.next_seq += 1;
        self.events.push_back(e.clone());
        let dropped = if self.events.len() > MAX_EVENTS {
            self.events.pop_front().map(|d| d.seq)
        } else {
            None
        };
        (e, dropped)
    }

    /// The events that pass `filter`, oldest first, at most `limit` of the newest.
    pub fn read(&self, filter: &Filter, limit: usize) -> Vec<Event> {
        let matching: Vec<&Event> = self.events.iter().filter(|e| filter.passes(e)).collect();
        let skip = matching.len().saturating_sub(limit);
        matching.into_iter().skip(skip).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_are_kept_numbered_and_filtered() {
        let mut log = Log::new(Vec::new());
        for i in 0..(MAX_EVENTS + 5) {
            let host = if i % 2 == 0 { "a" } else { "b" };
            let (e, dropped) = log.push(
                i as u64,
                "decision",
                (Some(host), None),
                format!("{i}"),
                vec![],
            );
            assert_eq!(e.seq, i as u64 + 1);
            assert_eq!(dropped.is_some(), i >= MAX_EVENTS);
        }
        let all = log.read(&Filter::default(), usize::MAX);
        assert_eq!(all.len(), MAX_EVENTS);
        assert_eq!(all[0].seq, 6);
        let after = log.read(
            &Filter {
                after: Some((MAX_EVENTS + 2) as u64),
                host: Some("a".into()),
                workload: None,
            },
            10,
        );
        assert!(after.iter().all(|e| e.host.as_deref() == Some("a")));
        assert_eq!(after.len(), 2, "{after:?}");
        // Reloaded, numbering goes on.
        let mut again = Log::new(all);
        assert_eq!(
            again
                .push(0, "x", (None, None), String::new(), vec![])
                .0
                .seq,
            (MAX_EVENTS + 6) as u64
        );
    }
}
