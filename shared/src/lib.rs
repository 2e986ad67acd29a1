//! Plumbing every service of the meter-reading system uses once: the events on the
//! broker, the broker topology, a confirming publisher, the consumer loop with
//! ack / delayed retry / dead-letter, trace context across the broker, configuration,
//! telemetry, the HTTP server with its bounds and operational endpoints, bearer
//! tokens, the client behind a trusted proxy, bounded reads of peers' error answers
//! and graceful shutdown.

pub mod broker;
pub mod calendar;
pub mod client;
pub mod config;
pub mod consumer;
pub mod db;
pub mod events;
pub mod hex;
pub mod http;
pub mod metrics;
pub mod peer;
pub mod phone;
pub mod retention;
pub mod retry_after;
pub mod service;
pub mod shutdown;
pub mod telemetry;
pub mod tls;
pub mod token;
pub mod topology;
pub mod tracecontext;

pub mod cli;
#[cfg(feature = "testing")]
pub mod testing;
