//! digestif: the newsroom's feeds in, a 5-minute briefing out, to every subscriber.
//!
//! The pipeline, one module per stage:
//! config → [`ingest`] → [`articles`] → [`select`] → [`render`] → [`archive`] →
//! [`deliver`] (with [`store`]) → service ([`schedule`], [`http`]).
//! [`pipeline`] is the single wiring point that the CLI and the scheduler share.

pub mod archive;
pub mod articles;
pub mod bounces;
pub mod cli;
pub mod clock;
pub mod cmd;
pub mod config;
pub mod deliver;
pub mod domain;
pub mod editor;
pub mod http;
pub mod ingest;
pub mod lease;
pub mod markup;
pub mod metrics;
pub mod pipeline;
pub mod render;
pub mod schedule;
pub mod select;
pub mod store;
pub mod subscribers;
