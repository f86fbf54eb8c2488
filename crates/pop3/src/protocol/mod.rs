// SPDX-License-Identifier: AGPL-3.0-only
//! The sans-IO protocol core: command lines in, reply bytes out.

pub mod body;
pub mod command;
pub mod downgrade;
pub mod lmtp;
pub mod reply;

pub use body::{BodyEncoder, SizeCounter, crlf_size};
pub use command::{Command, MsgNum, ParseError, parse};
pub use reply::{Reply, RespCode};
