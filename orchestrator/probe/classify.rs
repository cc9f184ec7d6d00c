//! Classifies Redis errors into failure classes. (being written)
