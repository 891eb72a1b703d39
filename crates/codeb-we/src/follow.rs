//! `we logs -f` across reconnects without repeating or dropping lines: after a reconnect
//! the stream is asked again for as many lines as were last seen; when it comes from the same
//! container, the part that overlaps what was already shown is skipped (the longest suffix of
//! the lines seen that equals a prefix of the lines received). A different container (a
//! deploy switched slots) is shown from its own tail.

use std::collections::VecDeque;

use codeb_api::LogEvent;

/// Lines of the current container remembered for the overlap.
pub const MAX_SEEN: usize = 1000;
/// The API's largest `tail`.
pub const MAX_TAIL: usize = 10_000;

#[derive(Debug, Default)]
pub struct Follower {
    container: Option<String>,
    seen: VecDeque<String>,
    /// Asked for with this connection.
    tail: usize,
    reconnected: bool,
    /// After a reconnect to the same container: its tail, collected until complete.
    pending: Option<Vec<LogEvent>>,
}

impl Follower {
    pub fn new() -> Self {
        Self::default()
    }

    /// The `tail` to ask for on the next connection (`base` is the user's `--tail`).
    pub fn next_tail(&self, base: usize) -> usize {
        if self.reconnected || self.container.is_some() {
            base.max(self.seen.len()).min(MAX_TAIL)
        } else {
            base
        }
    }

    /// A new connection asked for `tail` lines.
    pub fn connected(&mut self, tail: usize, reconnect: bool) {
        self.tail = tail;
        self.reconnected = reconnect;
        self.pending = None;
    }

    fn remember(&mut self, ev: &LogEvent) {
        if let LogEvent::Line { line, .. } = ev {
            if self.seen.len() == MAX_SEEN {
                self.seen.pop_front();
            }
            self.seen.push_back(line.clone());
        }
    }

    /// What of `ev` to show, in order.
    pub fn event(&mut self, ev: LogEvent) -> Vec<LogEvent> {
        match &ev {
            LogEvent::Source { container, .. } => {
                if self.reconnected && self.container.as_ref() == Some(container) {
                    self.pending = (self.tail > 0).then(Vec::new);
                    Vec::new()
                } else {
                    self.container = Some(container.clone());
                    self.seen.clear();
                    self.pending = None;
                    vec![ev]
                }
            }
            LogEvent::Line { .. } => {
                if let Some(p) = &mut self.pending {
                    p.push(ev);
                    if p.len() >= self.tail {
                        return self.resolve();
                    }
                    return Vec::new();
                }
                self.remember(&ev);
                vec![ev]
            }
            LogEvent::End { .. } => {
                let mut out = self.resolve();
                out.push(ev);
                out
            }
        }
    }

    /// The stream ended without an `End`: show what was collected.
    pub fn flush(&mut self) -> Vec<LogEvent> {
        self.resolve()
    }

    fn resolve(&mut self) -> Vec<LogEvent> {
        let Some(got) = self.pending.take() else {
            return Vec::new();
        };
        let text = |e: &LogEvent| match e {
            LogEvent::Line { line, .. } => Some(line.clone()),
            _ => None,
        };
        let got_lines: Vec<Option<String>> = got.iter().map(text).collect();
        let seen: Vec<&String> = self.seen.iter().collect();
        let max = seen.len().min(got.len());
        let overlap = (0..=max)
            .rev()
            .find(|&k| {
                seen[seen.len() - k..]
                    .iter()
                    .zip(&got_lines[..k])
                    .all(|(s, g)| g.as_deref() == Some(s.as_str()))
            })
            .unwrap_or(0);
        let new: Vec<LogEvent> = got.into_iter().skip(overlap).collect();
        for e in &new {
            self.remember(e);
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use codeb_api::LogStream;

    fn line(s: &str) -> LogEvent {
        LogEvent::Line {
            stream: LogStream::Stdout,
            line: s.into(),
        }
    }
    fn source(c: &str) -> LogEvent {
        LogEvent::Source {
            container: c.into(),
            slot: None,
        }
    }
    fn texts(v: &[LogEvent]) -> Vec<String> {
        v.iter()
            .filter_map(|e| match e {
                LogEvent::Line { line, .. } => Some(line.clone()),
                _ => None,
            })
            .collect()
    }

    fn feed(f: &mut Follower, evs: Vec<LogEvent>) -> Vec<String> {
        let mut out = Vec::new();
        for e in evs {
            out.extend(texts(&f.event(e)));
        }
        out
    }

    #[test]
    fn a_reconnect_to_the_same_container_repeats_and_drops_nothing() {
        let mut f = Follower::new();
        f.connected(2, false);
        assert_eq!(
            feed(&mut f, vec![source("c"), line("a"), line("b"), line("c")]),
            ["a", "b", "c"]
        );
        // The connection broke; "d" and "e" were written meanwhile.
        let tail = f.next_tail(2);
        assert_eq!(tail, 3);
        f.connected(tail, true);
        assert_eq!(
            feed(
                &mut f,
                vec![source("c"), line("c"), line("d"), line("e"), line("f")]
            ),
            ["d", "e", "f"]
        );
        // Nothing new meanwhile: nothing is repeated.
        let tail = f.next_tail(2);
        f.connected(tail, true);
        let mut evs = vec![source("c")];
        evs.extend(["a", "b", "c", "d", "e", "f"].map(line));
        assert_eq!(feed(&mut f, evs), Vec::<String>::new());
        assert_eq!(feed(&mut f, vec![line("g")]), ["g"]);
    }

    #[test]
    fn a_new_container_is_shown_from_its_tail() {
        let mut f = Follower::new();
        f.connected(10, false);
        feed(&mut f, vec![source("blue"), line("v1 listening")]);
        let tail = f.next_tail(10);
        f.connected(tail, true);
        let shown = f.event(source("green"));
        assert_eq!(shown.len(), 1, "the new source is announced");
        assert_eq!(feed(&mut f, vec![line("v2 listening")]), ["v2 listening"]);
    }

    #[test]
    fn a_short_tail_is_flushed_when_the_stream_ends() {
        let mut f = Follower::new();
        f.connected(5, false);
        feed(&mut f, vec![source("c"), line("a"), line("b")]);
        f.connected(f.next_tail(5), true);
        assert!(feed(&mut f, vec![source("c"), line("b"), line("x")]).is_empty());
        assert_eq!(texts(&f.flush()), ["x"]);
    }
}
