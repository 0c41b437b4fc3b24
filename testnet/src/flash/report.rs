//! The experiment's results: a row per second per run (CSV), the figures the summary
//! compares, and the summary itself (markdown).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use super::clients::{self, Record};
use super::sample::Sample;
use super::schedule::{Phase, Schedule};
use super::{FlashOptions, plot};
use crate::Error;
use crate::bench::Machine;

/// One arrangement the primary made, and its settlement if both ledgers agreed on one.
#[derive(Debug, Clone)]
pub struct Settled {
    pub id: String,
    pub peer: String,
    pub end_reason: String,
    pub requests: Option<u64>,
    pub bytes: Option<u64>,
    pub amount_micros: Option<u64>,
}

/// One second of one run.
#[derive(Debug, Clone, Default)]
pub struct Row {
    pub t: u64,
    pub phase: &'static str,
    pub offered: u64,
    pub ok: u64,
    pub errors: u64,
    /// Of `errors`, refused at once (503).
    pub refused: u64,
    pub via_peer: u64,
    /// Of the answers.
    pub p50_ms: u32,
    pub p95_ms: u32,
    pub p99_ms: u32,
    pub origin_requests: u64,
    pub origin_bytes: u64,
    pub utilisation: BTreeMap<String, u64>,
    pub demand: BTreeMap<String, u64>,
    pub events: Vec<String>,
}

impl Row {
    pub fn error_rate(&self) -> f64 {
        share(self.errors, self.ok + self.errors)
    }
}

/// One run's rows and figures.
#[derive(Debug, Clone)]
pub struct RunResult {
    pub label: &'static str,
    pub rows: Vec<Row>,
    /// Surge onset (the offered rate passing the primary's capacity) → the first answer
    /// from another provider's node.
    pub reaction: Option<Duration>,
    /// Of the hold's answers (failures are counted in the error rate instead).
    pub hold_p50_ms: u32,
    pub hold_p95_ms: u32,
    pub hold_p99_ms: u32,
    pub hold_error_rate: f64,
    /// Of the hold's requests, refused at once (503), a share of them.
    pub hold_refused_rate: f64,
    pub requests: u64,
    pub errors: u64,
    pub origin_requests: u64,
    pub objects_asked: usize,
    pub settlements: Vec<Settled>,
    pub sample_errors: Vec<String>,
}

impl RunResult {
    pub fn new(
        label: &'static str,
        opts: &FlashOptions,
        schedule: &Schedule,
        record: Record,
        samples: Vec<Sample>,
        origin_requests: u64,
        settlements: Vec<Settled>,
    ) -> RunResult {
        let by_t: BTreeMap<u64, Sample> = samples.into_iter().map(|s| (s.t, s)).collect();
        let (hold_start, hold_end) = schedule.hold_span();
        let mut hold_latencies = Vec::new();
        let (mut hold_ok, mut hold_errors, mut hold_refused) = (0, 0, 0);
        let rows: Vec<Row> = record
            .seconds
            .iter()
            .enumerate()
            .map(|(t, second)| {
                let t = t as u64;
                let at = Duration::from_secs(t);
                if at >= hold_start && at < hold_end {
                    hold_latencies.extend_from_slice(&second.latencies_ms);
                    hold_ok += second.ok;
                    hold_errors += second.errors;
                    hold_refused += second.refused;
                }
                let mut latencies = second.latencies_ms.clone();
                let sample = by_t.get(&t).cloned().unwrap_or_default();
                Row {
                    t,
                    phase: schedule.phase(at).0.label(),
                    offered: second.offered,
                    ok: second.ok,
                    errors: second.errors,
                    refused: second.refused,
                    via_peer: second.via_peer,
                    p50_ms: clients::quantile(&mut latencies, 0.5),
                    p95_ms: clients::quantile(&mut latencies, 0.95),
                    p99_ms: clients::quantile(&mut latencies, 0.99),
                    origin_requests: sample.origin_requests,
                    origin_bytes: sample.origin_bytes,
                    utilisation: sample.utilisation,
                    demand: sample.demand,
                    events: sample.events,
                }
            })
            .collect();
        let onset = schedule.onset(opts.primary_capacity_rps());
        RunResult {
            label,
            reaction: record
                .first_via_peer
                .zip(onset)
                .map(|(first, onset)| first.saturating_sub(onset)),
            hold_p50_ms: clients::quantile(&mut hold_latencies, 0.5),
            hold_p95_ms: clients::quantile(&mut hold_latencies, 0.95),
            hold_p99_ms: clients::quantile(&mut hold_latencies, 0.99),
            hold_error_rate: share(hold_errors, hold_ok + hold_errors),
            hold_refused_rate: share(hold_refused, hold_ok + hold_errors),
            requests: rows.iter().map(|r| r.ok + r.errors).sum(),
            errors: rows.iter().map(|r| r.errors).sum(),
            origin_requests,
            objects_asked: record.asked.len(),
            rows,
            settlements,
            sample_errors: record.sample_errors,
        }
    }

    pub fn origin_per_object(&self) -> f64 {
        self.origin_requests as f64 / self.objects_asked.max(1) as f64
    }

    /// The highest utilisation the primary reported during the surge's hold, permille.
    pub fn hold_peak(&self, provider: &str, of: fn(&Row) -> &BTreeMap<String, u64>) -> u64 {
        self.rows
            .iter()
            .filter(|r| r.phase == Phase::Surge.label())
            .filter_map(|r| of(r).get(provider).copied())
            .max()
            .unwrap_or(0)
    }

    fn csv(&self, providers: &[String]) -> String {
        let mut out = String::from(
            "t_s,phase,offered_rps,ok_rps,errors,refused,error_rate,via_peer_rps,p50_ms,p95_ms,p99_ms,origin_rps,origin_bytes_per_s",
        );
        for p in providers {
            let _ = write!(out, ",utilisation_{p},demand_{p}");
        }
        out.push_str(",events\n");
        for r in &self.rows {
            let _ = write!(
                out,
                "{},{},{},{},{},{},{:.4},{},{},{},{},{},{}",
                r.t,
                r.phase,
                r.offered,
                r.ok,
                r.errors,
                r.refused,
                r.error_rate(),
                r.via_peer,
                r.p50_ms,
                r.p95_ms,
                r.p99_ms,
                r.origin_requests,
                r.origin_bytes
            );
            for p in providers {
                let get = |m: &BTreeMap<String, u64>| m.get(p).copied().unwrap_or(0);
                let _ = write!(out, ",{},{}", get(&r.utilisation), get(&r.demand));
            }
            let _ = writeln!(out, ",\"{}\"", r.events.join("; "));
        }
        out
    }
}

/// Both runs, the options and the machine.
pub struct Report {
    pub opts: FlashOptions,
    pub machine: Machine,
    pub runs: Vec<RunResult>,
}

impl Report {
    fn providers(&self) -> Vec<String> {
        (0..self.opts.providers).map(|k| format!("p{k}")).collect()
    }

    /// Writes `<label>.csv` per run, the plots and `summary.md` into `dir`; the summary.
    pub fn write(&self, dir: &Path) -> Result<String, Error> {
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text)
                .map_err(|e| Error::io(format!("writing {}", path.display()), e))
        };
        for run in &self.runs {
            write(
                &format!("{}.csv", run.label.replace(' ', "-")),
                &run.csv(&self.providers()),
            )?;
        }
        let plots = plot::draw_all(self, dir);
        let summary = self.markdown(&plots);
        write("summary.md", &summary)?;
        Ok(summary)
    }

    /// The summary; `plots` lists the image files written (or why none were).
    fn markdown(&self, plots: &Result<Vec<String>, String>) -> String {
        let o = &self.opts;
        let m = &self.machine;
        let schedule = o.schedule();
        let mut out = String::from("# Flash crowd: with and without peering\n\n");
        let _ = writeln!(out, "Reproduce: `{}`\n", o.command);
        let _ = writeln!(
            out,
            "- Machine: {} CPUs, {}, {} MiB; `reef` {} build, everything on loopback.",
            m.nproc,
            m.cpu_model,
            m.mem_total_kib.unwrap_or(0) / 1024,
            m.build
        );
        let _ = writeln!(
            out,
            "- {} providers × {} nodes. p0 owns the service; each of its nodes has a {} link, the other providers' nodes {}; the origin's link is {}.",
            o.providers,
            o.nodes_per_provider,
            rate(o.primary_link),
            rate(o.peer_link),
            rate(o.origin_link)
        );
        let _ = writeln!(
            out,
            "- Catalogue: {} objects of {} bytes, Zipf s = {}. p0's capacity: {:.0} req/s (its links over the object size).",
            o.catalogue,
            o.object_size,
            o.zipf,
            o.primary_capacity_rps()
        );
        let _ = writeln!(
            out,
            "- Crowd (open loop, redirects followed, {} s client timeout): {:.0} req/s for {} s, ramp to {:.0} req/s ({}× p0's capacity) over {} s, hold {} s, ramp down, {:.0} req/s for {} s.",
            crate::crowd::CLIENT_TIMEOUT.as_secs(),
            schedule.baseline_rps,
            schedule.warmup.as_secs(),
            schedule.surge_rps,
            o.surge,
            schedule.ramp.as_secs(),
            schedule.hold.as_secs(),
            schedule.baseline_rps,
            schedule.calm.as_secs()
        );
        let _ = writeln!(
            out,
            "- With peering p0 may buy capacity (watermarks {} / {}, trigger window {} s, cool-down {} s, share 1.0); without, it may not.",
            o.high_watermark, o.low_watermark, o.trigger_window_s, o.cooldown_s
        );
        let _ = writeln!(
            out,
            "- {}\n",
            match o.ceiling {
                Some(c) => format!(
                    "p0's nodes serve at most {c}× their capacity themselves (`shed_above_capacity`); past it a request goes to a peer whatever the part, or is refused at once (503)."
                ),
                None => "p0's nodes have no ceiling: they take whatever arrives.".into(),
            }
        );
        out.push_str("| during the surge's hold | ");
        out.push_str(
            &self
                .runs
                .iter()
                .map(|r| r.label)
                .collect::<Vec<_>>()
                .join(" | "),
        );
        out.push_str(" |\n|---|");
        out.push_str(&"---:|".repeat(self.runs.len()));
        out.push('\n');
        let row = |out: &mut String, name: &str, f: &dyn Fn(&RunResult) -> String| {
            let cells: Vec<String> = self.runs.iter().map(f).collect();
            let _ = writeln!(out, "| {name} | {} |", cells.join(" | "));
        };
        row(&mut out, "latency of the answers p50 / p95 / p99", &|r| {
            format!(
                "{} / **{}** / {} ms",
                r.hold_p50_ms, r.hold_p95_ms, r.hold_p99_ms
            )
        });
        row(
            &mut out,
            "error rate (of which refused at once, 503)",
            &|r| {
                format!(
                    "**{:.2}%** ({:.2}%)",
                    r.hold_error_rate * 100.0,
                    r.hold_refused_rate * 100.0
                )
            },
        );
        row(&mut out, "p0's peak utilisation (served) / demand", &|r| {
            format!(
                "{}% / {}%",
                r.hold_peak("p0", |row| &row.utilisation) / 10,
                r.hold_peak("p0", |row| &row.demand) / 10
            )
        });
        out.push_str("| **whole run** | |\n");
        row(
            &mut out,
            "reaction: surge onset → first answer from a peer",
            &|r| {
                r.reaction
                    .map_or("—".into(), |d| format!("**{:.2} s**", d.as_secs_f64()))
            },
        );
        row(&mut out, "origin requests per object asked", &|r| {
            format!(
                "**{:.2}** ({} for {})",
                r.origin_per_object(),
                r.origin_requests,
                r.objects_asked
            )
        });
        row(&mut out, "requests / errors", &|r| {
            format!("{} / {}", r.requests, r.errors)
        });
        out.push('\n');
        for run in &self.runs {
            if run.settlements.is_empty() {
                continue;
            }
            let _ = writeln!(
                out,
                "Arrangements {} (settlements as both ledgers hold them):\n\n| arrangement | peer | ended | requests | bytes | amount |\n|---|---|---|---:|---:|---:|",
                run.label
            );
            for s in &run.settlements {
                let n = |v: Option<u64>| v.map_or("not agreed".into(), |v| v.to_string());
                let _ = writeln!(
                    out,
                    "| `{}` | {} | {} | {} | {} | {} |",
                    &s.id[..s.id.len().min(8)],
                    s.peer,
                    s.end_reason,
                    n(s.requests),
                    n(s.bytes),
                    s.amount_micros
                        .map_or("—".into(), |a| format!("{:.6}", a as f64 / 1e6))
                );
            }
            out.push('\n');
        }
        match plots {
            Ok(files) => {
                out.push_str("Plots (SVG and PNG beside this file):\n\n");
                for f in files.iter().filter(|f| f.ends_with(".svg")) {
                    let _ = writeln!(out, "![{f}]({f})");
                }
            }
            Err(why) => {
                let _ = writeln!(out, "No plots: {why}");
            }
        }
        out.push_str("\nPer-second series: ");
        out.push_str(
            &self
                .runs
                .iter()
                .map(|r| format!("`{}.csv`", r.label.replace(' ', "-")))
                .collect::<Vec<_>>()
                .join(", "),
        );
        out.push('\n');
        for run in &self.runs {
            if !run.sample_errors.is_empty() {
                let _ = writeln!(
                    out,
                    "\nSome client errors {}: {}",
                    run.label,
                    run.sample_errors
                        .iter()
                        .take(3)
                        .map(|e| format!("`{e}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
        out
    }
}

/// `part` of `whole`; 0 of nothing.
fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// Bytes/s as a link speed.
fn rate(bytes_per_s: u64) -> String {
    format!(
        "{:.1} Mbit/s ({:.2} MB/s)",
        bytes_per_s as f64 * 8.0 / 1e6,
        bytes_per_s as f64 / 1e6
    )
}
