//! Fronts: one wire protocol each, translating it to hub calls and hub
//! events back to it. None reaches into another.

pub mod api;
pub mod centrifuge;
pub mod sse;
