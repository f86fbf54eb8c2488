// SPDX-License-Identifier: AGPL-3.0-only
//! Abuse counters shared by every node (`[security] shared_state =
//! "redis://..."`). Each node keeps its own [`Guard`]; what must be seen by
//! all goes through Redis too: failed logins and suspicion points per
//! address group, counted in one Lua script with expiry on Redis's clock,
//! and the blocks they lead to, announced on a channel that every node
//! listens to (a block decided on one node refuses the address on all of
//! them within moments) and kept as keys a starting node reads. Redis away
//! is never a reason to refuse anyone: each node then decides with its own
//! counters, says so once in the log, and shows it in a metric and in
//! `/readyz`.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::ConnectionManager;

use super::Guard;
use crate::config::SecurityConfig;
use crate::telemetry::Metrics;

/// The channel blocks are announced on: `address milliseconds`.
const CHANNEL: &str = "pop3d:blocks";
/// Key prefixes.
const COUNT: &str = "pop3d:count:";
const BLOCK: &str = "pop3d:block:";
/// `pop3d:ok:LOGIN:GROUP`: the login succeeded from that address group
/// within the window (its devices skip the login's ration everywhere).
const SUCCESS: &str = "pop3d:ok:";
/// How long a node waits for Redis before deciding alone.
const ANSWER_WITHIN: Duration = Duration::from_millis(250);

/// KEYS[1] the counter, KEYS[2] the block key; ARGV: amount, window ms,
/// threshold, block ms, the address, the reason. Counts in a window that
/// starts at the first count (PEXPIRE on Redis's clock); at the threshold,
/// blocks (the key holds the reason), resets the count and announces the
/// block. Returns {count, blocked}.
const SCRIPT: &str = r"
local n = redis.call('INCRBY', KEYS[1], ARGV[1])
if n == tonumber(ARGV[1]) then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if n >= tonumber(ARGV[3]) then
  redis.call('SET', KEYS[2], ARGV[6], 'PX', ARGV[4])
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', KEYS[3], ARGV[5] .. ' ' .. ARGV[4])
  return {n, 1}
end
return {n, 0}
";

/// What a count is of.
#[derive(Debug, Clone, Copy)]
pub enum Count {
    FailedLogin,
    /// Suspicion points.
    Points(u32),
}

pub struct SharedLimits {
    /// Replaced by [`SharedLimits::rotate`] (a new password at SIGHUP).
    client: std::sync::RwLock<redis::Client>,
    /// The connection in use, made on demand from `client`.
    conn: std::sync::Mutex<Option<ConnectionManager>>,
    script: redis::Script,
    up: AtomicBool,
    metrics: Arc<Metrics>,
}

impl SharedLimits {
    pub fn new(info: redis::ConnectionInfo, metrics: Arc<Metrics>) -> Result<SharedLimits, String> {
        let client = redis::Client::open(info).map_err(|e| e.to_string())?;
        metrics.shared_state_up.set(0);
        Ok(SharedLimits {
            client: std::sync::RwLock::new(client),
            conn: std::sync::Mutex::new(None),
            script: redis::Script::new(SCRIPT),
            up: AtomicBool::new(false),
            metrics,
        })
    }

    /// Whether Redis answered last time it was asked.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    fn mark(&self, up: bool) {
        if self.up.swap(up, Ordering::Relaxed) != up {
            if up {
                tracing::info!("shared abuse counters (Redis) in use");
            } else {
                tracing::warn!(
                    "shared abuse counters (Redis) unavailable; this node decides alone"
                );
            }
        }
        self.metrics.shared_state_up.set(i64::from(up));
    }

    fn client(&self) -> redis::Client {
        self.client
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Where Redis is and the password, read again (SIGHUP): the next
    /// connection uses them; the one in use is let go.
    pub fn rotate(&self, info: redis::ConnectionInfo) -> Result<(), String> {
        let client = redis::Client::open(info).map_err(|e| e.to_string())?;
        *self.client.write().unwrap_or_else(|p| p.into_inner()) = client;
        *self.conn.lock().unwrap_or_else(|p| p.into_inner()) = None;
        Ok(())
    }

    async fn connection(&self) -> Option<ConnectionManager> {
        if let Some(c) = self.conn.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            return Some(c);
        }
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(ANSWER_WITHIN))
            .set_response_timeout(Some(ANSWER_WITHIN));
        let connect = ConnectionManager::new_with_config(self.client(), config);
        match tokio::time::timeout(ANSWER_WITHIN, connect).await {
            Ok(Ok(c)) => {
                *self.conn.lock().unwrap_or_else(|p| p.into_inner()) = Some(c.clone());
                Some(c)
            }
            _ => {
                self.mark(false);
                None
            }
        }
    }

    /// Count against `key` (an address group); Some(true) when that blocked
    /// it everywhere, None when Redis did not answer.
    pub async fn add(&self, key: IpAddr, what: Count, config: &SecurityConfig) -> Option<bool> {
        let (amount, threshold, kind, reason) = match what {
            Count::FailedLogin => (
                1,
                config.max_auth_attempts,
                "fail",
                "too many failed logins (all nodes)",
            ),
            Count::Points(p) => (
                p,
                config.suspicious_threshold,
                "score",
                "suspicious activity (all nodes)",
            ),
        };
        let counter = format!("{COUNT}{kind}:{key}");
        self.count(
            &counter,
            Some((key, reason)),
            amount,
            threshold.max(1),
            config,
        )
        .await
        .map(|(_, blocked)| blocked)
    }

    /// A failed login for `login` (from any address), counted by every
    /// node: the count in the window, None when Redis did not answer.
    pub async fn login_failed(&self, login: &str, config: &SecurityConfig) -> Option<u64> {
        let counter = format!("{COUNT}user:{}", login.to_lowercase());
        self.count(&counter, None, 1, u32::MAX, config)
            .await
            .map(|(n, _)| n)
    }

    /// The failed logins for `login` in the window, on every node.
    pub async fn login_failures(&self, login: &str) -> Option<u64> {
        let mut conn = self.connection().await?;
        let key = format!("{COUNT}user:{}", login.to_lowercase());
        let mut get = redis::cmd("GET");
        get.arg(key);
        let get = get.query_async::<Option<u64>>(&mut conn);
        match tokio::time::timeout(ANSWER_WITHIN, get).await {
            Ok(Ok(n)) => {
                self.mark(true);
                Some(n.unwrap_or(0))
            }
            _ => {
                self.mark(false);
                None
            }
        }
    }

    /// `login` logged in from the address group `key`: remembered for
    /// `auth_window` on every node.
    pub async fn login_succeeded(&self, login: &str, key: IpAddr, config: &SecurityConfig) {
        let Some(mut conn) = self.connection().await else {
            return;
        };
        let mut set = redis::cmd("SET");
        set.arg(format!("{SUCCESS}{}:{key}", login.to_lowercase()))
            .arg(1)
            .arg("PX")
            .arg(config.auth_window.as_millis().max(1) as u64);
        let set = set.query_async::<()>(&mut conn);
        let answered = matches!(tokio::time::timeout(ANSWER_WITHIN, set).await, Ok(Ok(())));
        self.mark(answered);
    }

    /// Whether any node saw `login` log in from the address group `key`
    /// within the window; None when Redis did not answer.
    pub async fn logged_in_from(&self, login: &str, key: IpAddr) -> Option<bool> {
        let mut conn = self.connection().await?;
        let mut exists = redis::cmd("EXISTS");
        exists.arg(format!("{SUCCESS}{}:{key}", login.to_lowercase()));
        let exists = exists.query_async::<u32>(&mut conn);
        match tokio::time::timeout(ANSWER_WITHIN, exists).await {
            Ok(Ok(n)) => {
                self.mark(true);
                Some(n > 0)
            }
            _ => {
                self.mark(false);
                None
            }
        }
    }

    /// Run the script on `counter`; `block` is the address to block at
    /// the threshold, and why (None: count only).
    async fn count(
        &self,
        counter: &str,
        block: Option<(IpAddr, &str)>,
        amount: u32,
        threshold: u32,
        config: &SecurityConfig,
    ) -> Option<(u64, bool)> {
        let mut conn = self.connection().await?;
        let mut call = self.script.prepare_invoke();
        let (target, reason) = block
            .map(|(ip, reason)| (ip.to_string(), reason))
            .unwrap_or_default();
        call.key(counter)
            .key(format!("{BLOCK}{target}"))
            .key(CHANNEL)
            .arg(amount)
            .arg(config.auth_window.as_millis() as u64)
            .arg(threshold)
            .arg(config.auto_block_duration.as_millis() as u64)
            .arg(target)
            .arg(reason);
        let answer: Result<(u64, u8), _> =
            match tokio::time::timeout(ANSWER_WITHIN, call.invoke_async(&mut conn)).await {
                Ok(r) => r,
                Err(_) => {
                    self.mark(false);
                    return None;
                }
            };
        match answer {
            Ok((n, blocked)) => {
                self.mark(true);
                Some((n, blocked == 1))
            }
            Err(e) => {
                tracing::debug!("Redis: {e}");
                self.mark(false);
                None
            }
        }
    }

    /// Listen for blocks decided anywhere and apply them to `guard`, after
    /// taking over the blocks in force; reconnects until `stop` fires.
    pub async fn follow(
        self: Arc<Self>,
        guard: Arc<Guard>,
        stop: tokio_util::sync::CancellationToken,
    ) {
        loop {
            let followed = async {
                let mut pubsub = self.client().get_async_pubsub().await?;
                pubsub.subscribe(CHANNEL).await?;
                self.adopt_existing(&guard).await?;
                self.mark(true);
                let mut messages = pubsub.on_message();
                while let Some(msg) = messages.next().await {
                    let Ok(text) = msg.get_payload::<String>() else {
                        continue;
                    };
                    // `ADDRESS 0` lifts a block (`pop3d unblock`).
                    match parse_announcement(&text) {
                        Some((ip, 0)) => {
                            guard.lift(ip);
                        }
                        Some((ip, ms)) => guard.adopt_block(ip, Duration::from_millis(ms)),
                        None => {}
                    }
                }
                Ok::<(), redis::RedisError>(())
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                r = followed => {
                    if let Err(e) = r {
                        tracing::debug!("Redis subscription: {e}");
                    }
                    self.mark(false);
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// The blocks in force now, with their time left.
    async fn adopt_existing(&self, guard: &Guard) -> Result<(), redis::RedisError> {
        let Some(mut conn) = self.connection().await else {
            return Err(redis::RedisError::from((
                redis::ErrorKind::Io,
                "no connection",
            )));
        };
        for (ip, left, _) in blocks_in_force(&mut conn).await? {
            guard.adopt_block(ip, left);
        }
        Ok(())
    }
}

fn parse_announcement(text: &str) -> Option<(IpAddr, u64)> {
    let (ip, ms) = text.split_once(' ')?;
    Some((ip.parse().ok()?, ms.parse().ok()?))
}

/// Where to reach Redis: `shared_state` with the password from
/// `shared_state_password_file`. A password in the URL is refused, as in
/// `storage.url`: the URL is printed by check-config and logged. Errors
/// name the key.
pub fn connection_info(
    config: &SecurityConfig,
) -> Result<Option<redis::ConnectionInfo>, crate::config::SetupError> {
    use redis::IntoConnectionInfo;
    let fail = |key: &str, why: String| {
        Err(crate::config::SetupError::new(
            format!("security.{key}"),
            why,
        ))
    };
    let Some(url) = &config.shared_state else {
        if config.shared_state_password_file.is_some() {
            return fail(
                "shared_state_password_file",
                "set without security.shared_state".into(),
            );
        }
        return Ok(None);
    };
    // The parser's message is not repeated: it could quote the URL.
    let info = match url.as_str().into_connection_info() {
        Ok(i) => i,
        Err(_) => {
            return fail(
                "shared_state",
                "not a Redis URL (redis://HOST:PORT, rediss://HOST:PORT for TLS)".into(),
            );
        }
    };
    if info.redis_settings().password().is_some() {
        return fail(
            "shared_state",
            "holds a password; put it in security.shared_state_password_file instead (the URL is printed by check-config and logged)".into(),
        );
    }
    let Some(file) = &config.shared_state_password_file else {
        return Ok(Some(info));
    };
    let password = crate::config::read_secret_file("security.shared_state_password_file", file)?;
    let redis = info.redis_settings().clone().set_password(password);
    Ok(Some(info.set_redis_settings(redis)))
}

/// Whether Redis answers PING (with the password, when one is set), within
/// a couple of seconds; the reason when it does not, never the password.
pub async fn ping(info: redis::ConnectionInfo) -> Result<(), String> {
    let client = redis::Client::open(info).map_err(|e| e.to_string())?;
    let asked = async {
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await
    };
    match tokio::time::timeout(Duration::from_secs(2), asked).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer within 2s".into()),
    }
}

/// A connection for one administration command.
async fn connect(info: redis::ConnectionInfo) -> Result<redis::aio::MultiplexedConnection, String> {
    let client = redis::Client::open(info).map_err(|e| e.to_string())?;
    client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| e.to_string())
}

/// The blocks in force on every node (`pop3d blocks`): address group,
/// time left, reason.
pub async fn list_blocks(
    info: redis::ConnectionInfo,
) -> Result<Vec<(IpAddr, Duration, String)>, String> {
    let mut conn = connect(info).await?;
    blocks_in_force(&mut conn).await.map_err(|e| e.to_string())
}

/// Every block Redis holds with its time left and reason (empty when the
/// node that set it gave none). SCAN, not KEYS: never one long command on
/// a busy Redis.
async fn blocks_in_force(
    conn: &mut impl redis::aio::ConnectionLike,
) -> Result<Vec<(IpAddr, Duration, String)>, redis::RedisError> {
    let mut keys: Vec<String> = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{BLOCK}*"))
            .arg("COUNT")
            .arg(500)
            .query_async(conn)
            .await?;
        keys.extend(batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    let mut out = Vec::new();
    for key in keys {
        let Some(ip) = key.strip_prefix(BLOCK).and_then(|a| a.parse().ok()) else {
            continue;
        };
        let (left, reason): (i64, Option<String>) = redis::pipe()
            .cmd("PTTL")
            .arg(&key)
            .cmd("GET")
            .arg(&key)
            .query_async(conn)
            .await?;
        if left > 0 {
            let reason = reason.filter(|r| r != "1").unwrap_or_default();
            out.push((ip, Duration::from_millis(left as u64), reason));
        }
    }
    Ok(out)
}

/// Lift the block of the address group `key` on every node: the key goes,
/// and the nodes hear `ADDRESS 0`. True if Redis held a block for it.
pub async fn lift_block(info: redis::ConnectionInfo, key: IpAddr) -> Result<bool, String> {
    let mut conn = connect(info).await?;
    let (removed, _): (u32, u32) = redis::pipe()
        .cmd("DEL")
        .arg(format!("{BLOCK}{key}"))
        .cmd("PUBLISH")
        .arg(CHANNEL)
        .arg(format!("{key} 0"))
        .query_async(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    Ok(removed > 0)
}

/// `[security] shared_state`, checked without connecting.
pub fn check_config(config: &crate::config::Pop3Config) -> Result<(), crate::config::SetupError> {
    connection_info(&config.security).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcements() {
        assert_eq!(
            parse_announcement("192.0.2.7 900000"),
            Some(("192.0.2.7".parse().unwrap(), 900_000))
        );
        assert_eq!(
            parse_announcement("2001:db8:: 5"),
            Some(("2001:db8::".parse().unwrap(), 5))
        );
        assert_eq!(parse_announcement("nonsense"), None);
    }
}
