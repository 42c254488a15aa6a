//! Veritrail's core: everything that decides what bytes mean, and nothing that touches a disk or a socket.
//!
//! The offline verifier needs only this crate.

pub mod bundle;
pub mod canonical;
pub mod checkpoint;
pub mod cloudtrail;
pub mod event;
pub mod hash;
pub mod hold;
pub mod json;
pub mod k8s;
pub mod merkle;
pub mod note;
pub mod query;
pub mod retention;
