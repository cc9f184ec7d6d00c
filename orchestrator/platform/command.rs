//! Platform: command (being written)
