// SPDX-License-Identifier: AGPL-3.0-only
//! `[performance]`: session counts, buffers and the listing cache.
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[performance]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PerformanceConfig {
    /// Sessions served at once; more connections get `-ERR [SYS/TEMP]`.
    pub max_concurrent_sessions: usize,
    /// Chunk buffers kept for reuse between message transfers.
    pub connection_pool_size: usize,
    /// Block size of message reads from the store, and the size at which
    /// replies are written out: a session streaming a message holds about
    /// three of these (a block, the one read ahead, the output).
    pub io_buffer_size: usize,
    pub enable_response_caching: bool,
    #[serde(with = "humantime_serde")]
    pub cache_ttl: Duration,
    pub max_cached_responses: usize,
}

impl Default for PerformanceConfig {
    fn default() -> Self {
        PerformanceConfig {
            max_concurrent_sessions: 10_000,
            connection_pool_size: 64,
            io_buffer_size: 256 * 1024,
            enable_response_caching: false,
            cache_ttl: Duration::from_secs(300),
            max_cached_responses: 1000,
        }
    }
}
