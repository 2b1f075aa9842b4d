//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub)]

pub mod counting_alloc;
pub mod dialog;
pub mod ha;
pub mod netns;
pub mod relay;
pub mod sim;
