// SPDX-License-Identifier: AGPL-3.0-only
//! Abuse resistance: the brute-force and scoring [`Guard`], per-session
//! command [`Pacer`], the structured security log, and the clock they use.

pub mod address;
pub mod blocklist;
pub mod clock;
pub mod events;
pub mod guard;
mod login_delay;
pub mod pacer;
pub mod shared;

pub use clock::{Clock, ManualClock, SystemClock};
pub use events::SecurityLog;
pub use guard::{FailureVerdict, Guard, LoginGate, Rule, UserGate};
pub use login_delay::LoginDelay;
pub use pacer::Pacer;
pub use shared::SharedLimits;
