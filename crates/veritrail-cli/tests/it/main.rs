//! Integration tests of the `veritrail` binary: it is started as a real process on a temporary
//! data directory and driven over HTTP and through its CLI.

mod support;

mod access;
mod bad_input;
mod compression;
mod crash;
mod damage;
mod disk_full;
mod export_verify;
mod hardening;
mod holds;
mod import;
mod jwt;
mod kubernaut;
mod kubernaut_client;
mod migrate;
mod retention;
mod roundtrip;
mod tls;
mod webhook;
