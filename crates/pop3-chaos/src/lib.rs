// SPDX-License-Identifier: AGPL-3.0-only
//! The zero-loss gate's randomized fault campaign: what its clients did
//! ([`history`], one JSON object per line) and the program that reads a
//! history and says which of pop3d's promises about mail it broke
//! ([`checker`]), and the TCP fault proxy the nemesis puts between a node
//! and its database ([`proxy`]). The checker knows nothing of how the history was made,
//! so it can be run on any recorded run, and is tested on histories made
//! by hand, broken in each way it must catch.

pub mod checker;
pub mod history;
pub mod proxy;
