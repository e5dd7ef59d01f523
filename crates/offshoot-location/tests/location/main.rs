//! offshoot-location's integration tests.

mod parse_cache;
