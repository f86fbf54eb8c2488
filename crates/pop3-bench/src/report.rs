// SPDX-License-Identifier: AGPL-3.0-only
//! Totals and the printed report.

use std::fmt;
use std::time::Duration;

#[derive(Debug, Default)]
pub struct Totals {
    pub sessions: u64,
    pub errors: u64,
    pub bytes: u64,
    pub latencies: Vec<Duration>,
}

impl Totals {
    pub fn merge(&mut self, other: Totals) {
        self.sessions += other.sessions;
        self.errors += other.errors;
        self.bytes += other.bytes;
        self.latencies.extend(other.latencies);
    }
}

pub struct Report {
    pub totals: Totals,
    pub elapsed: Duration,
}

impl Report {
    pub fn new(mut totals: Totals, elapsed: Duration) -> Self {
        totals.latencies.sort_unstable();
        Report { totals, elapsed }
    }

    fn percentile(&self, p: f64) -> Duration {
        let l = &self.totals.latencies;
        if l.is_empty() {
            return Duration::ZERO;
        }
        let i = ((l.len() as f64 - 1.0) * p).round() as usize;
        l[i.min(l.len() - 1)]
    }

    pub fn per_second(&self) -> f64 {
        self.totals.sessions as f64 / self.elapsed.as_secs_f64()
    }

    pub fn mib_per_second(&self) -> f64 {
        self.totals.bytes as f64 / (1024.0 * 1024.0) / self.elapsed.as_secs_f64()
    }

    /// `sessions_per_s,mib_per_s,p50_ms,p99_ms,errors,sessions`
    pub fn csv(&self) -> String {
        format!(
            "{:.1},{:.1},{:.3},{:.3},{},{}",
            self.per_second(),
            self.mib_per_second(),
            self.percentile(0.5).as_secs_f64() * 1000.0,
            self.percentile(0.99).as_secs_f64() * 1000.0,
            self.totals.errors,
            self.totals.sessions
        )
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "sessions     {}", self.totals.sessions)?;
        writeln!(f, "errors       {}", self.totals.errors)?;
        writeln!(f, "elapsed      {:.2} s", self.elapsed.as_secs_f64())?;
        writeln!(f, "sessions/s   {:.1}", self.per_second())?;
        writeln!(f, "MiB/s        {:.1}", self.mib_per_second())?;
        writeln!(
            f,
            "p50 latency  {:.3} ms",
            self.percentile(0.5).as_secs_f64() * 1000.0
        )?;
        write!(
            f,
            "p99 latency  {:.3} ms",
            self.percentile(0.99).as_secs_f64() * 1000.0
        )
    }
}
