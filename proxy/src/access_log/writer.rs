//! Access-log writers: lines are handed to a background thread per destination so a
//! slow disk never blocks a worker. As Envoy's access log manager opens each path once,
//! every logger writing to the same file (or stdout, stderr) shares one writer thread,
//! which ends when the last of them is gone.

use super::filter::Filter;
use super::format::Format;
use super::record::Record;
use crate::config::access_log::{AccessLogConfig, Sink};
use std::collections::HashMap;
use std::io::Write;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, Weak};

/// The queue of one destination's writer thread.
#[derive(Debug)]
struct Destination(mpsc::Sender<String>);

/// The destinations with a running writer, by sink.
static DESTINATIONS: Mutex<Option<HashMap<Sink, Weak<Destination>>>> = Mutex::new(None);

impl Destination {
    /// The running writer of `sink`, or a new one.
    fn of(sink: &Sink, flush_interval: std::time::Duration) -> std::io::Result<Arc<Self>> {
        let mut all = DESTINATIONS.lock().unwrap_or_else(|e| e.into_inner());
        let all = all.get_or_insert_with(HashMap::new);
        if let Some(running) = all.get(sink).and_then(Weak::upgrade) {
            return Ok(running);
        }
        let started = Arc::new(Destination(Self::spawn(sink, flush_interval)?));
        all.retain(|_, d| d.strong_count() > 0);
        all.insert(sink.clone(), Arc::downgrade(&started));
        Ok(started)
    }

    /// Opens `sink` and starts its writer thread: queued lines are written as they come
    /// and flushed once the queue is empty, or every `flush_interval`.
    fn spawn(
        sink: &Sink,
        flush_interval: std::time::Duration,
    ) -> std::io::Result<mpsc::Sender<String>> {
        let (tx, rx) = mpsc::channel::<String>();
        let mut out: Box<dyn Write + Send> = match sink {
            Sink::Stdout => Box::new(std::io::stdout()),
            Sink::Stderr => Box::new(std::io::stderr()),
            Sink::File(p) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)?,
            ),
        };
        std::thread::Builder::new()
            .name("access_log".into())
            .spawn(move || loop {
                match rx.recv_timeout(flush_interval) {
                    Ok(line) => {
                        let _ = out.write_all(line.as_bytes());
                        // Drain what is queued, then flush once.
                        while let Ok(line) = rx.try_recv() {
                            let _ = out.write_all(line.as_bytes());
                        }
                        let _ = out.flush();
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        let _ = out.flush();
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        let _ = out.flush();
                        return;
                    }
                }
            })?;
        Ok(tx)
    }
}

/// A running access logger.
#[derive(Debug, Clone)]
pub struct AccessLogger {
    format: Arc<Format>,
    filter: Option<Arc<Filter>>,
    destination: Arc<Destination>,
}

impl AccessLogger {
    /// Starts a configured logger (and its destination's writer, unless running).
    pub fn start(
        config: &AccessLogConfig,
        flush_interval: std::time::Duration,
    ) -> std::io::Result<Self> {
        Ok(AccessLogger {
            format: Arc::new(config.format.clone()),
            filter: config.filter.clone().map(Arc::new),
            destination: Destination::of(&config.sink, flush_interval)?,
        })
    }

    /// Formats and queues one line, if the logger's filter lets the record through.
    pub fn log(&self, record: &Record) {
        if self.filter.as_ref().is_some_and(|f| !f.allows(record)) {
            return;
        }
        let _ = self.destination.0.send(self.format.render(record));
    }
}
