//! Shared helpers for the integration tests (`mod support;`).

pub mod limits;
pub mod logs;
pub mod python;
pub mod raw;
pub mod redis;
