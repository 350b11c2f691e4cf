//! The one place the actors read the clock (the process's monotonic clock as a runtime
//! `Time`), and the ticker that feeds an actor's core its sense of time.

use std::sync::OnceLock;
use std::time::Instant;
use understudy_runtime::Time;

static ORIGIN: OnceLock<Instant> = OnceLock::new();

/// Now, as microseconds since this process first asked.
pub fn now() -> Time {
    let origin = *ORIGIN.get_or_init(Instant::now);
    Time::from_micros(u64::try_from(origin.elapsed().as_micros()).unwrap_or(u64::MAX))
}

/// A periodic message to an actor, stopped when the ticker is dropped (with the actor's state,
/// so no actor needs a `post_stop` for it).
#[derive(Debug)]
pub struct Ticker(tokio::task::JoinHandle<()>);

impl Ticker {
    /// Send `msg()` to `actor` every `period`.
    pub fn start<M: ractor::Message>(
        actor: &ractor::ActorRef<M>,
        period: std::time::Duration,
        msg: fn() -> M,
    ) -> Ticker {
        Ticker(actor.send_interval(period, msg))
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.0.abort();
    }
}
