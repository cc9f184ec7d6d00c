//! Platform: render (being written)
