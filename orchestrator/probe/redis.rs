//! The real Redis probe. (being written)
pub struct RealRedis;
