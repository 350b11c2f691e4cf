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

/// Now on the wall clock, as microseconds since the Unix epoch: the stamp a group manager puts
/// on its control log, so that its successor on another process of the same host counts
/// leases on the same clock.
pub fn wall_now() -> Time {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Time::from_micros(u64::try_from(since_epoch.as_micros()).unwrap_or(u64::MAX))
}

/// A number for a new start of a node (its incarnation, also its Raft member id): different
/// from every earlier start's, as it grows with the wall clock and mixes in the process id
/// and a counter.
pub fn new_incarnation() -> u64 {
    static STARTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let micros = wall_now().as_micros();
    // Microseconds (modulo about nine years) in the high 48 bits, process id and counter in
    // the low 16.
    ((micros & 0xffff_ffff_ffff) << 16) | ((u64::from(std::process::id()) + n) & 0xffff)
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

/// A one-shot message to an actor at a time its core chose, stopped when dropped. Arming it for
/// a time later than the one armed keeps the earlier (the actor asks its core again when it
/// comes); arming it earlier replaces it.
#[derive(Debug, Default)]
pub struct Wakeup {
    armed: Option<(Time, tokio::task::JoinHandle<()>)>,
}

impl Wakeup {
    /// Nothing armed.
    pub fn new() -> Self {
        Self::default()
    }

    /// Make sure `msg()` reaches `actor` at `at` or earlier (`now` is the actor's clock).
    pub fn arm<M: ractor::Message>(
        &mut self,
        actor: &ractor::ActorRef<M>,
        now: Time,
        at: Time,
        msg: fn() -> M,
    ) {
        if self.armed.as_ref().is_some_and(|(armed, _)| *armed <= at) {
            return;
        }
        if let Some((_, old)) = self.armed.take() {
            old.abort();
        }
        let cell = actor.get_cell();
        let delay = if at > now {
            at.since(now)
        } else {
            std::time::Duration::ZERO
        };
        let handle = tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = cell.send_message::<M>(msg());
        });
        self.armed = Some((at, handle));
    }

    /// The message came at `now`: what was armed for then or earlier is spent.
    pub fn fired(&mut self, now: Time) {
        if self.armed.as_ref().is_some_and(|(armed, _)| *armed <= now) {
            self.armed = None;
        }
    }
}

impl Drop for Wakeup {
    fn drop(&mut self) {
        if let Some((_, handle)) = self.armed.take() {
            handle.abort();
        }
    }
}
