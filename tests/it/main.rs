//! Every integration test in one binary, one module each (one link instead of twenty). Tests that
//! need a global allocator of their own live in binaries beside this one (`tests/memory.rs`).

mod common;
mod examples_support;
mod token_support;

mod abuse;
mod clock_skew;
mod demo_smoke;
mod fuzz_regressions;
mod http_fetcher;
mod inspect_example;
mod limiter;
mod manager_builder;
mod manager_fanout;
mod manager_fetching;
mod manager_hardening;
mod manager_lifecycle;
mod manager_plugins;
mod manager_reads;
mod manager_session;
mod manager_store;
mod manager_stress;
mod manager_time;
mod manager_updates;
mod mint_vectors;
mod retry_after_overflow;
mod scale;
mod send_sync;
mod simulation;
mod store;
mod token_lazy_grants;
mod token_proptest;
mod token_rules;
mod token_server_example;
mod vectors;
