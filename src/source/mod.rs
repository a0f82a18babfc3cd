//! Sources: every way events come in, side by side.

pub mod timeline;
