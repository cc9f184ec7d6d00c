//! Flush of stale keys: SCAN + UNLINK in batches. (being written)
