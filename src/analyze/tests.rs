//! Unit tests of the analyzer: events built in code, one test per verdict path.
