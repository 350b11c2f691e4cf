//! The one place the actors read the clock: the process's monotonic clock as a runtime `Time`.

use std::sync::OnceLock;
use std::time::Instant;
use understudy_runtime::Time;

static ORIGIN: OnceLock<Instant> = OnceLock::new();

/// Now, as microseconds since this process first asked.
pub fn now() -> Time {
    let origin = *ORIGIN.get_or_init(Instant::now);
    Time::from_micros(u64::try_from(origin.elapsed().as_micros()).unwrap_or(u64::MAX))
}
