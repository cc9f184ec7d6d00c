//! Platform: env_file (being written)
