//! Send times for the fixed-rate load generators. tokio's timer has a resolution of one
//! millisecond: sleeping on it until each intended send time releases the requests due
//! within a millisecond together, at the tick, up to a millisecond late, and that lateness
//! lands in every latency measured from the intended time. The pacer is a thread that
//! sleeps on the kernel's timer (tens of microseconds of slack) and hands each send time
//! to its lane as it falls due.

use std::time::{Duration, Instant};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

/// Starts a pacer for `total` sends at `rate` per second from `start`: send `i` falls due
/// at `start + i / rate` and goes to lane `i % lanes`. Each lane's receiver ends after
/// its last send; a lane whose receiver is dropped is skipped.
pub fn start(
    start: Instant,
    rate: f64,
    total: usize,
    lanes: usize,
) -> Vec<UnboundedReceiver<Instant>> {
    let interval = Duration::from_secs_f64(1.0 / rate);
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..lanes).map(|_| unbounded_channel()).unzip();
    std::thread::spawn(move || {
        for i in 0..total {
            let due = start + interval.mul_f64(i as f64);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            let _ = senders[i % lanes].send(due);
        }
    });
    receivers
}
