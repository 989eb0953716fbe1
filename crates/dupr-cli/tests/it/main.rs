//! dupr's integration tests, one binary (one link instead of one per
//! file): each module drives the real `dupr` binary on one subject. The
//! crash tests (`tests/crash.rs`) stay a binary of their own: they kill
//! dupr at chosen moments and time their triggers, so they run apart.

mod common;

mod backends;
mod bad_input;
mod cli_compat;
mod functional_suite;
mod fuzz_corpus;
mod harness_selftest;
mod incremental;
mod interop_chain;
mod interop_full;
mod json;
mod maintenance;
mod mount;
mod profile_import;
mod profile_schedule;
mod profiles;
mod pubkey;
mod safety;
mod seekable;
mod select_interop;
mod servers_selftest;
mod trust_cli;
mod trust_corpus;
mod trust_integrity;
mod trust_lock;
mod trust_restore;
