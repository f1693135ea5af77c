//! The end-to-end tests, one module per area (each a file of this folder), in
//! one test binary: the whole dependency tree is linked once instead of once
//! per file, which is most of what a test run costs on a small machine. The
//! helpers they share (servers, the site folder, the service on a port) are in
//! `tests/support/`, the fixtures in `tests/fixtures/`.
//!
//! Run one area with `cargo test --test it deliver::`, one test by its name.

#[path = "../support/mod.rs"]
mod support;

mod bounces;
mod browser;
mod build;
mod check;
mod deliver;
mod demo;
mod dkim;
mod postgres;
mod rebuild;
mod render;
mod security;
mod send;
mod service;
mod smtp_engine;
mod subscribers;
