//! Access-log writers: lines are handed to a background thread per sink so a slow disk
//! never blocks a worker; files are opened in append mode and reopened on failure.

use super::filter::Filter;
use super::format::Format;
use super::record::Record;
use crate::config::access_log::{AccessLogConfig, Sink};
use std::io::Write;
use std::sync::mpsc;
use std::sync::Arc;

/// A running access logger.
#[derive(Debug, Clone)]
pub struct AccessLogger {
    format: Arc<Format>,
    filter: Option<Arc<Filter>>,
    tx: mpsc::Sender<String>,
}

impl AccessLogger {
    /// Starts the writer thread for a configured logger.
    pub fn start(
        config: &AccessLogConfig,
        flush_interval: std::time::Duration,
    ) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<String>();
        let mut out: Box<dyn Write + Send> = match &config.sink {
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
        Ok(AccessLogger {
            format: Arc::new(config.format.clone()),
            filter: config.filter.clone().map(Arc::new),
            tx,
        })
    }

    /// Formats and queues one line, if the logger's filter lets the record through.
    pub fn log(&self, record: &Record) {
        if self.filter.as_ref().is_some_and(|f| !f.allows(record)) {
            return;
        }
        let _ = self.tx.send(self.format.render(record));
    }
}
