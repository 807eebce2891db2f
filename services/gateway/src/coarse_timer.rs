//! The header-read deadline of client connections, kept at a quarter-second granularity by
//! each serving thread.
//!
//! hyper arms a timer each time a keep-alive connection starts reading a request head and
//! drops it once the head has arrived, so the header timeout costs a timer per request.
//! tokio's timer is exact to the millisecond, and arming and disarming one (an allocation, a
//! wheel insertion and removal, a clock read) was 3 % of the instructions the gateway spends
//! on a proxied request. A deadline of seconds needs no such precision, and a serving thread
//! owns its connections outright (see `connections`), so here a deadline is a slot in a list
//! the thread owns: arming takes a free slot, disarming frees it, and a tick four times a
//! second wakes the connections whose deadline has passed (so a deadline holds to within a
//! tick, either way). No crate offers a timer of this shape (tokio-util's `DelayQueue` is
//! built on the same wheel), hence these lines.
//!
//! A deadline polled on a thread that does not tick (or on another thread than the one it was
//! armed on) falls back to a tokio sleep, so the timer is correct anywhere, just cheapest on
//! a serving thread.

use std::{
    cell::RefCell,
    future::Future,
    pin::Pin,
    sync::atomic::{AtomicU64, Ordering},
    task::{Context, Poll, Waker},
    time::{Duration, Instant},
};

/// How often a serving thread looks for passed deadlines: the most a deadline can be late by.
pub const TICK: Duration = Duration::from_millis(250);

/// Identifies a thread's list of deadlines (cheaper to compare than a `ThreadId`).
static NEXT_THREAD: AtomicU64 = AtomicU64::new(1);

/// A slot is freed only by the drop of the deadline that took it, so an index held by a
/// live deadline always names that deadline's slot.
struct Slot {
    deadline: Instant,
    waker: Option<Waker>,
}

struct Deadlines {
    thread: u64,
    ticking: bool,
    /// The time at the last tick (or when ticking began).
    now: Instant,
    slots: Vec<Slot>,
    free: Vec<u32>,
}

thread_local! {
    static DEADLINES: RefCell<Deadlines> = RefCell::new(Deadlines {
        thread: NEXT_THREAD.fetch_add(1, Ordering::Relaxed),
        ticking: false,
        now: Instant::now(),
        slots: Vec::new(),
        free: Vec::new(),
    });
}

/// Runs the calling thread's tick: spawn it once on each serving thread's runtime (a
/// current-thread runtime, so it stays on that thread). Deadlines armed on the thread are
/// coarse while it runs.
pub async fn tick_forever() {
    struct Stopped;
    impl Drop for Stopped {
        fn drop(&mut self) {
            let _ = DEADLINES.try_with(|d| {
                if let Ok(mut d) = d.try_borrow_mut() {
                    d.ticking = false;
                    // Whoever still waits is woken, re-polls and falls back to a tokio sleep.
                    for slot in &mut d.slots {
                        if let Some(waker) = slot.waker.take() {
                            waker.wake();
                        }
                    }
                }
            });
        }
    }
    let _stopped = Stopped;
    let started = DEADLINES.with(|d| {
        d.try_borrow_mut().map(|mut d| {
            d.ticking = true;
            d.now = Instant::now();
        })
    });
    if started.is_err() {
        return;
    }
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let due: Vec<Waker> = DEADLINES.with(|d| {
            let Ok(mut d) = d.try_borrow_mut() else {
                return Vec::new();
            };
            let now = Instant::now();
            d.now = now;
            d.slots
                .iter_mut()
                .filter(|s| s.deadline <= now)
                .filter_map(|s| s.waker.take())
                .collect()
        });
        // Woken outside the borrow: a waker may run code that arms a deadline.
        for waker in due {
            waker.wake();
        }
    }
}

/// The time at the calling thread's last tick, where it ticks (at most `TICK` old); the
/// clock elsewhere. For what a quarter second does not matter to (idle connections' ages)
/// and is read on every request.
pub fn now() -> Instant {
    DEADLINES
        .try_with(|d| d.try_borrow().ok().filter(|d| d.ticking).map(|d| d.now))
        .ok()
        .flatten()
        .unwrap_or_else(Instant::now)
}

/// A `hyper::rt::Timer` whose deadlines are kept by the serving thread (see the module).
#[derive(Clone, Copy, Debug, Default)]
pub struct CoarseTimer;

impl hyper::rt::Timer for CoarseTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.sleep_until(self.now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(Deadline {
            deadline,
            armed: None,
            fallback: None,
        })
    }

    /// The time at the thread's last tick where it ticks, so no clock read per request: at
    /// most `TICK` behind, so a deadline counted from it passes up to a tick early, and the
    /// tick that notices it comes up to a tick late; within a tick of the exact time either
    /// way, which a header timeout of seconds does not feel.
    fn now(&self) -> Instant {
        now()
    }
}

/// One deadline; `armed` is (thread, slot) once it waits in a thread's list.
struct Deadline {
    deadline: Instant,
    armed: Option<(u64, u32)>,
    fallback: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl hyper::rt::Sleep for Deadline {}

enum Polled {
    Ready,
    Waiting(u64, u32),
    /// The thread does not tick, or the deadline was armed on another thread.
    Elsewhere,
}

impl Future for Deadline {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if let Some(sleep) = self.fallback.as_mut() {
            return sleep.as_mut().poll(cx);
        }
        let (deadline, armed) = (self.deadline, self.armed);
        let polled = DEADLINES
            .try_with(|d| {
                let Ok(mut d) = d.try_borrow_mut() else {
                    return Polled::Elsewhere;
                };
                if !d.ticking {
                    return Polled::Elsewhere;
                }
                if d.now >= deadline {
                    return Polled::Ready;
                }
                match armed {
                    Some((thread, _)) if thread != d.thread => Polled::Elsewhere,
                    Some((thread, index)) => {
                        if let Some(slot) = d.slots.get_mut(index as usize) {
                            if !slot.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                                slot.waker = Some(cx.waker().clone());
                            }
                        }
                        Polled::Waiting(thread, index)
                    }
                    None => {
                        let waker = Some(cx.waker().clone());
                        let thread = d.thread;
                        let index = match d.free.pop() {
                            Some(index) => {
                                let slot = &mut d.slots[index as usize];
                                slot.deadline = deadline;
                                slot.waker = waker;
                                index
                            }
                            None => {
                                d.slots.push(Slot { deadline, waker });
                                (d.slots.len() - 1) as u32
                            }
                        };
                        Polled::Waiting(thread, index)
                    }
                }
            })
            .unwrap_or(Polled::Elsewhere);
        match polled {
            Polled::Ready => Poll::Ready(()),
            Polled::Waiting(thread, index) => {
                self.armed = Some((thread, index));
                Poll::Pending
            }
            Polled::Elsewhere => {
                let mut sleep = Box::pin(tokio::time::sleep_until(deadline.into()));
                let polled = sleep.as_mut().poll(cx);
                self.fallback = Some(sleep);
                polled
            }
        }
    }
}

impl Drop for Deadline {
    fn drop(&mut self) {
        let Some((thread, index)) = self.armed else {
            return;
        };
        // Freed by the thread that armed it; the gateway's connections never change threads.
        let _ = DEADLINES.try_with(|d| {
            let Ok(mut d) = d.try_borrow_mut() else {
                return;
            };
            if d.thread != thread {
                return;
            }
            if let Some(slot) = d.slots.get_mut(index as usize) {
                slot.waker = None;
                d.free.push(index);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    };

    use hyper::rt::Timer as _;

    use super::*;

    fn slots_in_use() -> usize {
        DEADLINES.with(|d| {
            let d = d.borrow();
            d.slots.len() - d.free.len()
        })
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_deadline_fires_on_a_ticking_thread_and_frees_its_slot() {
        let ticker = tokio::spawn(tick_forever());
        tokio::task::yield_now().await;
        let started = Instant::now();
        let timer = CoarseTimer;
        let sleep = timer.sleep(Duration::from_millis(700));
        sleep.await;
        // Not early (the deadline counts from the last tick, so a tick's worth of slack).
        let waited = started.elapsed();
        assert!(
            waited + TICK >= Duration::from_millis(700),
            "woke after {waited:?}"
        );
        assert_eq!(slots_in_use(), 0);
        ticker.abort();
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_dropped_deadline_never_fires_and_its_slot_is_reused() {
        let ticker = tokio::spawn(tick_forever());
        tokio::task::yield_now().await;
        let fired = Arc::new(AtomicBool::new(false));
        let timer = CoarseTimer;
        let waiting = {
            let fired = Arc::clone(&fired);
            let sleep = timer.sleep(Duration::from_secs(1));
            tokio::spawn(async move {
                sleep.await;
                fired.store(true, Ordering::SeqCst);
            })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(slots_in_use(), 1);
        waiting.abort();
        let _ = waiting.await;
        assert_eq!(slots_in_use(), 0);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(!fired.load(Ordering::SeqCst));

        // The freed slot is taken again.
        let again = timer.sleep(Duration::from_millis(300));
        again.await;
        assert_eq!(slots_in_use(), 0);
        DEADLINES.with(|d| assert_eq!(d.borrow().slots.len(), 1));
        ticker.abort();
    }

    #[tokio::test(flavor = "current_thread")]
    async fn without_a_tick_a_deadline_falls_back_to_a_tokio_sleep() {
        let started = Instant::now();
        CoarseTimer.sleep(Duration::from_millis(300)).await;
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert_eq!(slots_in_use(), 0);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_tick_that_stops_hands_its_waiters_to_tokio() {
        let ticker = tokio::spawn(tick_forever());
        tokio::task::yield_now().await;
        let started = Instant::now();
        let waiting = tokio::spawn(CoarseTimer.sleep(Duration::from_millis(900)));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(slots_in_use(), 1);
        ticker.abort();
        let _ = ticker.await;
        waiting.await.unwrap();
        assert!(started.elapsed() + TICK >= Duration::from_millis(900));
    }
}
