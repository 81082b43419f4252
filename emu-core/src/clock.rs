//! Time sources for devices with timers (PIT, RTC, ACPI PM timer), so
//! tests can drive time by hand.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// A monotonic clock in nanoseconds and a wall clock in seconds since the
/// Unix epoch.
pub trait Clock: Send + Sync {
    /// Monotonic nanoseconds since an arbitrary origin.
    fn monotonic_ns(&self) -> u64;
    /// Wall-clock time, seconds since 1970-01-01 00:00:00 UTC.
    fn unix_seconds(&self) -> i64;
}

/// A shareable clock.
pub type SharedClock = Arc<dyn Clock>;

/// The host's clocks.
#[derive(Debug)]
pub struct HostClock {
    origin: Instant,
}

impl Default for HostClock {
    fn default() -> Self {
        Self { origin: Instant::now() }
    }
}

impl Clock for HostClock {
    fn monotonic_ns(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
    fn unix_seconds(&self) -> i64 {
        match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
        }
    }
}

/// A clock that moves only when told to; for tests.
#[derive(Debug, Default)]
pub struct ManualClock {
    ns: AtomicU64,
    unix: AtomicU64,
}

impl ManualClock {
    /// A clock at monotonic 0 and the given wall time.
    pub fn new(unix_seconds: u64) -> Arc<Self> {
        Arc::new(Self { ns: AtomicU64::new(0), unix: AtomicU64::new(unix_seconds) })
    }
    /// Moves both clocks forward by `ns`.
    pub fn advance_ns(&self, ns: u64) {
        let before = self.ns.fetch_add(ns, Ordering::SeqCst);
        let secs = (before + ns) / 1_000_000_000 - before / 1_000_000_000;
        self.unix.fetch_add(secs, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn monotonic_ns(&self) -> u64 {
        self.ns.load(Ordering::SeqCst)
    }
    fn unix_seconds(&self) -> i64 {
        i64::try_from(self.unix.load(Ordering::SeqCst)).unwrap_or(i64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_carries_seconds() {
        let c = ManualClock::new(100);
        c.advance_ns(999_999_999);
        assert_eq!(c.unix_seconds(), 100);
        c.advance_ns(1);
        assert_eq!(c.unix_seconds(), 101);
        assert_eq!(c.monotonic_ns(), 1_000_000_000);
    }

    #[test]
    fn host_clock_is_monotonic() {
        let c = HostClock::default();
        let a = c.monotonic_ns();
        assert!(c.monotonic_ns() >= a);
        assert!(c.unix_seconds() > 1_600_000_000);
    }
}
