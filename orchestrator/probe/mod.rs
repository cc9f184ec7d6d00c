//! Real probes of Redis: PING, latency sampling, INFO, BullMQ queue reads, failure
//! classification, and the flush.

pub mod classify;
pub mod conn;
pub mod flush;
pub mod redis;

pub use self::redis::RealRedis;
