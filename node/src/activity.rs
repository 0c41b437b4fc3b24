//! What the dashboard shows over time: the request mix second by second over the last five
//! minutes, and the last peering events.
//!
//! Both are bounded rings filled by one task ([`Activity::spawn`]) that wakes once a second:
//! it takes the per-source request counters' deltas as one sample, and compares the
//! arrangements (with their SLA health) and the ledger's settlements with what it saw a second
//! before, turning each change into an event: an arrangement made or learnt, one ended (with
//! its reason), an SLA breached or kept again, a settlement written. The peering code does not
//! have to report anything; anything else that wants a line in the list calls
//! [`Activity::push`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::Serialize;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::load::Load;
use crate::metrics::{Requests, SOURCES};
use crate::peering::health::Health;
use crate::peering::ledger::{Ledger, LedgerView};
use crate::peering::{Arrangements, Role, Status, View};

/// Seconds of request mix kept: "the last minutes" of the chart.
pub const MIX_SECONDS: usize = 300;
/// Events kept, newest first; older ones fall off.
pub const MAX_EVENTS: usize = 50;
/// One sample and one look at the arrangements per tick.
const TICK: Duration = Duration::from_secs(1);
/// An event's text is a line for a person; longer is cut.
const MAX_EVENT_TEXT: usize = 240;
/// The first look waits this long after start: the other parties' names come with their load
/// reports (every second), and an event written before would name them by id only.
const FIRST_LOOK_AFTER: Duration = Duration::from_secs(3);

/// Requests answered in one second, by where the body came from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Sample {
    /// Unix ms at the end of the second.
    pub at_ms: u64,
    pub local: u64,
    pub peer: u64,
    pub origin: u64,
    /// Relayed from a peer provider's node, and answers without a source (errors,
    /// redirects, peers' object requests).
    pub other: u64,
}

/// One line in the dashboard's list of recent events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    pub at_ms: u64,
    /// `arranged`, `ended`, `sla_breach`, `sla_ok`, `settled`, or a caller's own.
    pub kind: &'static str,
    pub text: String,
}

#[derive(Default)]
pub struct Activity {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    mix: VecDeque<Sample>,
    events: VecDeque<Event>,
    last_totals: Option<[u64; SOURCES.len()]>,
    seen: Seen,
}

/// What the last look found, to compare the next one with.
#[derive(Default)]
struct Seen {
    /// Whether there was a first look (what exists then is the starting point, not news,
    /// except active arrangements, which are worth a line).
    primed: bool,
    /// Arrangement id → its status and the SLA breach measured, if any.
    arrangements: BTreeMap<String, (Status, Option<&'static str>)>,
    /// Settlements by (id, written_at).
    settlements: BTreeSet<(String, u64)>,
}

/// What the watcher reads each tick.
pub struct Watch {
    pub requests: Arc<Requests>,
    pub arrangements: Arc<Arrangements>,
    pub health: Arc<Health>,
    pub ledger: Arc<Ledger>,
    pub load: Load,
}

impl Activity {
    fn state(&self) -> MutexGuard<'_, State> {
        // Each critical section leaves the rings consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds an event (the newest); the oldest falls off past [`MAX_EVENTS`].
    pub fn push(&self, kind: &'static str, text: impl Into<String>) {
        let event = Event {
            at_ms: crate::provider::unix_ms(),
            kind,
            text: clip(text.into()),
        };
        push_event(&mut self.state(), event);
    }

    /// The request mix of the last [`MIX_SECONDS`], oldest first.
    pub fn mix(&self) -> Vec<Sample> {
        self.state().mix.iter().copied().collect()
    }

    /// The last events, newest first.
    pub fn events(&self) -> Vec<Event> {
        self.state().events.iter().cloned().collect()
    }

    /// Records one second of requests from the counters' totals (in `SOURCES` order).
    fn sample(&self, totals: [u64; SOURCES.len()], at_ms: u64) {
        let mut state = self.state();
        if let Some(last) = state.last_totals {
            let d = |i: usize| totals[i].saturating_sub(last[i]);
            if state.mix.len() >= MIX_SECONDS {
                state.mix.pop_front();
            }
            state.mix.push_back(Sample {
                at_ms,
                local: d(0),
                peer: d(1),
                origin: d(2),
                other: d(3) + d(4),
            });
        }
        state.last_totals = Some(totals);
    }

    /// Compares what arrangements and ledger hold now with the last look; one event per change.
    fn observe(
        &self,
        views: &[View],
        ledger: &LedgerView,
        name: &dyn Fn(&str) -> String,
        at_ms: u64,
    ) {
        let mut state = self.state();
        let primed = state.seen.primed;
        let mut news = Vec::new();
        let mut arrangements = BTreeMap::new();
        for v in views {
            let breach = v.sla.as_ref().and_then(|s| s.breach);
            let before = state.seen.arrangements.get(&v.id).copied();
            let other = name(if v.role == Role::Primary {
                &v.peer
            } else {
                &v.primary
            });
            let short = short(&v.id);
            match (before, v.status) {
                (None, Status::Active) => news.push(("arranged", arranged_text(v, &other))),
                (None, Status::Ended) if primed => {
                    news.push(("ended", ended_text(&short, &other, v.end_reason)))
                }
                (Some((Status::Active, _)), Status::Ended) => {
                    news.push(("ended", ended_text(&short, &other, v.end_reason)))
                }
                _ => {}
            }
            let breach_before = before.and_then(|(_, b)| b);
            match (breach_before, breach, v.sla.as_ref()) {
                (None, Some(what), Some(sla)) => news.push((
                    "sla_breach",
                    format!(
                        "{other} breaches the SLA of {short}: {what} (p95 {} ms of {} ms allowed, \
                         availability {} of {} ‰ required)",
                        sla.p95_ms.map_or("-".into(), |p| p.to_string()),
                        sla.max_p95_ms,
                        sla.availability_permille
                            .map_or("-".into(), |a| a.to_string()),
                        sla.min_availability_permille
                    ),
                )),
                (Some(_), None, _) if v.status == Status::Active => {
                    news.push(("sla_ok", format!("{other} keeps the SLA of {short} again")))
                }
                _ => {}
            }
            arrangements.insert(v.id.clone(), (v.status, breach));
        }
        let mut settlements = BTreeSet::new();
        for s in &ledger.settlements {
            let key = (s.id.clone(), s.written_at);
            if primed && !state.seen.settlements.contains(&key) {
                let other = name(&s.peer);
                news.push((
                    "settled",
                    format!(
                        "{} {} with {other}: {} requests, {} bytes, {:.6} due",
                        short(&s.id),
                        if s.kind == "final" {
                            "settled"
                        } else {
                            "stated"
                        },
                        s.requests,
                        s.bytes,
                        s.amount_micros as f64 / 1e6,
                    ),
                ));
            }
            settlements.insert(key);
        }
        state.seen = Seen {
            primed: true,
            arrangements,
            settlements,
        };
        for (kind, text) in news {
            let event = Event {
                at_ms,
                kind,
                text: clip(text),
            };
            push_event(&mut state, event);
        }
    }

    /// Samples and looks once a second until aborted.
    pub fn spawn(self: &Arc<Self>, watch: Watch) -> JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
            let first_look = tokio::time::Instant::now() + FIRST_LOOK_AFTER;
            loop {
                tick.tick().await;
                let now = crate::provider::unix_ms();
                this.sample(watch.requests.by_source(), now);
                if tokio::time::Instant::now() < first_look {
                    continue;
                }
                let names = provider_names(&watch.load);
                let name = |id: &str| {
                    names
                        .get(id)
                        .cloned()
                        .unwrap_or_else(|| format!("provider {}", short(id)))
                };
                let views = watch.arrangements.views(&watch.health);
                this.observe(&views, &watch.ledger.view(), &name, now);
            }
        })
    }
}

/// Provider id → name, as the load table knows them (certified names only).
pub fn provider_names(load: &Load) -> BTreeMap<String, String> {
    load.view()
        .providers
        .into_iter()
        .filter_map(|p| Some((p.id, p.name?)))
        .collect()
}

fn push_event(state: &mut State, event: Event) {
    if state.events.len() >= MAX_EVENTS {
        state.events.pop_back();
    }
    state.events.push_front(event);
}

fn arranged_text(v: &View, other: &str) -> String {
    let basis = match v.basis {
        crate::peering::Basis::LongTerm => "long-term",
        crate::peering::Basis::ShortTerm => "short-term",
    };
    let role = match v.role {
        Role::Primary => format!("{other} serves"),
        Role::Peer => format!("we serve {other}'s"),
    };
    format!(
        "{basis} arrangement {}: {role} {} with a share of {:.0}%",
        short(&v.id),
        v.services.join(", "),
        v.share * 100.0
    )
}

fn ended_text(short_id: &str, other: &str, reason: Option<&str>) -> String {
    format!(
        "arrangement {short_id} with {other} ended ({})",
        reason.unwrap_or("reason not heard")
    )
}

/// The first 8 characters of an id.
fn short(id: &str) -> String {
    id.chars().take(8).collect()
}

fn clip(mut text: String) -> String {
    if text.len() > MAX_EVENT_TEXT {
        let mut end = MAX_EVENT_TEXT;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peering::health::SlaView;
    use crate::peering::{Basis, Served};

    fn view(id: &str, status: Status, breach: Option<&'static str>) -> View {
        View {
            id: id.into(),
            basis: Basis::ShortTerm,
            role: Role::Primary,
            status,
            end_reason: (status == Status::Ended).then_some("low_load"),
            primary: "aa".repeat(32),
            peer: "bb".repeat(32),
            services: vec!["video.example".into()],
            share: 0.5,
            req_per_s: 100,
            end_ms: None,
            price_per_gb: 0.01,
            served: Served {
                requests: 0,
                bytes: 0,
            },
            redirected: 0,
            negotiation_ms: None,
            sla: Some(SlaView {
                max_p95_ms: 100,
                min_availability_permille: 990,
                breach,
                ..SlaView::default()
            }),
        }
    }

    fn name(id: &str) -> String {
        if id.starts_with("bb") {
            "beta".into()
        } else {
            short(id)
        }
    }

    fn no_ledger() -> LedgerView {
        LedgerView {
            settlements: Vec::new(),
            open: Vec::new(),
        }
    }

    #[test]
    fn changes_become_events_newest_first() {
        let activity = Activity::default();
        let id = "0123456789abcdef0123456789abcdef";
        activity.observe(&[view(id, Status::Active, None)], &no_ledger(), &name, 1);
        // Nothing changed: nothing new.
        activity.observe(&[view(id, Status::Active, None)], &no_ledger(), &name, 2);
        activity.observe(
            &[view(id, Status::Active, Some("latency"))],
            &no_ledger(),
            &name,
            3,
        );
        activity.observe(&[view(id, Status::Ended, None)], &no_ledger(), &name, 4);
        let ledger = LedgerView {
            settlements: vec![crate::peering::ledger::SettlementView {
                id: id.into(),
                primary: "aa".repeat(32),
                peer: "bb".repeat(32),
                requests: 10,
                bytes: 1000,
                amount_micros: 20,
                written_at: 5,
                agreed: true,
                kind: "final",
            }],
            open: Vec::new(),
        };
        activity.observe(&[view(id, Status::Ended, None)], &ledger, &name, 5);
        activity.observe(&[view(id, Status::Ended, None)], &ledger, &name, 6);
        let events = activity.events();
        let kinds: Vec<_> = events.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, ["settled", "ended", "sla_breach", "arranged"]);
        assert!(events[0].text.contains("beta"), "{:?}", events[0]);
        assert!(events[1].text.contains("low_load"), "{:?}", events[1]);
        assert!(events[2].text.contains("latency"), "{:?}", events[2]);
        assert!(
            events[3].text.contains("short-term arrangement 01234567"),
            "{:?}",
            events[3]
        );
        assert_eq!(events[3].at_ms, 1);
    }

    #[test]
    fn history_at_start_is_not_news_but_active_arrangements_are() {
        let activity = Activity::default();
        let ended = view("ee".repeat(16).as_str(), Status::Ended, None);
        let active = view("aa".repeat(16).as_str(), Status::Active, None);
        activity.observe(&[ended, active], &no_ledger(), &name, 1);
        let kinds: Vec<_> = activity.events().iter().map(|e| e.kind).collect();
        assert_eq!(kinds, ["arranged"]);
    }

    #[test]
    fn rings_are_bounded() {
        let activity = Activity::default();
        for i in 0..(MAX_EVENTS + 10) {
            activity.push("note", format!("event {i}"));
        }
        let events = activity.events();
        assert_eq!(events.len(), MAX_EVENTS);
        assert_eq!(events[0].text, format!("event {}", MAX_EVENTS + 9));
        activity.push("note", "x".repeat(1000));
        assert!(activity.events()[0].text.len() <= MAX_EVENT_TEXT + '…'.len_utf8());

        for s in 0..(MIX_SECONDS as u64 + 20) {
            activity.sample([s * 3, s, s * 2, 0, s], s);
        }
        let mix = activity.mix();
        assert_eq!(mix.len(), MIX_SECONDS);
        assert_eq!(
            mix.last().copied(),
            Some(Sample {
                at_ms: MIX_SECONDS as u64 + 19,
                local: 3,
                peer: 1,
                origin: 2,
                other: 1
            })
        );
    }
}
