//! Test support shared by the unit tests and the integration tests (`tests/it`, through the
//! `test-hooks` feature): outside programs the tests start themselves. Not part of the API.

pub mod postgres;
