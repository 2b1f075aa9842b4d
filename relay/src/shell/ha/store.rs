//! The store: any Redis-protocol server (Redis ≥ 7, Valkey) through redis-rs's connection
//! manager, which reconnects by itself. Every write is a Lua script that first checks the
//! identity's epoch (the fencing token): a process whose lease was taken over writes nothing.
//!
//! Keys, all under `srtp-relay:{IDENTITY}:` (the braces keep an identity in one cluster slot):
//! `lease` (the holder's epoch, expiring), `epoch` (incremented by each takeover), `clean` (the
//! epoch that released the lease after flushing exact counters), `calls` (a set of call-ids),
//! `log:CALL` (a hash: entry number → sealed entry) and `ctr:CALL` (a hash: counter field →
//! value, see `core::ha`).

use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{AsyncCommands as _, Script};

/// A store error, as logged and counted.
pub type StoreError = redis::RedisError;

/// What a takeover found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acquired {
    /// The new epoch.
    pub epoch: u64,
    /// The previous holder released the lease after flushing exact counters.
    pub clean: bool,
}

/// One call's record as read back: entries by number (sealed) and counter fields.
#[derive(Debug, Default)]
pub struct StoredCall {
    /// The call-id.
    pub call_id: String,
    /// `(number, sealed entry)`, in order.
    pub entries: Vec<(u32, Vec<u8>)>,
    /// Counter fields and values.
    pub counters: Vec<(String, String)>,
}

/// One write of a batch.
#[derive(Debug)]
pub enum Op {
    /// Adds an entry (if any) and counter fields to a call.
    Put {
        /// The call.
        call_id: String,
        /// `(number, sealed entry)`.
        entry: Option<(u32, Vec<u8>)>,
        /// Counter fields.
        counters: Vec<(String, String)>,
    },
    /// Removes the call's record.
    Forget {
        /// The call.
        call_id: String,
    },
}

/// The outcome of a fenced write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Durable.
    Done,
    /// Durable, but the store had lost the identity's keys (it came back without its data):
    /// calls recorded before are no longer durable.
    Lost,
    /// Another process holds the identity now: this one must stop.
    Fenced,
}

// An identity without an epoch yet (a new store, or one that lost its data) starts from the
// store's clock in microseconds: a new epoch is always above any a running holder may still
// have. Epochs are compared as the strings Redis keeps (Lua's numbers print inexactly).
const ACQUIRE: &str = r"
local p = ARGV[1]
if redis.call('EXISTS', p..'lease') == 1 then return {0, 0} end
local prev = redis.call('GET', p..'epoch')
if not prev then
  local t = redis.call('TIME')
  redis.call('SET', p..'epoch', t[1] .. string.format('%06d', tonumber(t[2])))
end
local e = redis.call('INCR', p..'epoch')
local es = redis.call('GET', p..'epoch')
redis.call('SET', p..'lease', es, 'PX', ARGV[2])
local clean = redis.call('GET', p..'clean')
redis.call('DEL', p..'clean')
if prev and clean == prev then return {e, 1} end
return {e, 0}
";

// A store that lost the identity's keys (restarted without its data) has no epoch: the
// holder writes its own back and goes on (2), rather than stopping every call it carries.
const RENEW: &str = r"
local p = ARGV[1]
local cur = redis.call('GET', p..'epoch')
local lost = 1
if not cur then
  redis.call('SET', p..'epoch', ARGV[2])
  lost = 2
elseif cur ~= ARGV[2] then
  return -1
end
redis.call('SET', p..'lease', ARGV[2], 'PX', ARGV[3])
return lost
";

const RELEASE: &str = r"
local p = ARGV[1]
if redis.call('GET', p..'epoch') ~= ARGV[2] then return -1 end
redis.call('DEL', p..'lease')
redis.call('SET', p..'clean', ARGV[2])
return 1
";

const WRITE: &str = r"
local p = ARGV[1]
local cur = redis.call('GET', p..'epoch')
local lost = 1
if not cur then
  redis.call('SET', p..'epoch', ARGV[2])
  redis.call('SET', p..'lease', ARGV[2], 'PX', ARGV[3])
  lost = 2
elseif cur ~= ARGV[2] then
  return -1
end
local i = 5
for c = 1, tonumber(ARGV[4]) do
  local cid, op = ARGV[i], ARGV[i + 1]
  i = i + 2
  local log, ctr = p..'log:'..cid, p..'ctr:'..cid
  if op == 'forget' then
    redis.call('SREM', p..'calls', cid)
    redis.call('DEL', log, ctr)
  else
    local keep = true
    if op == 'put' then
      redis.call('SADD', p..'calls', cid)
      -- A call's first entry starts its record: nothing of an earlier call of that id stays.
      if ARGV[i] == '0' then redis.call('DEL', log, ctr) end
      redis.call('HSET', log, ARGV[i], ARGV[i + 1])
      i = i + 2
    elseif redis.call('EXISTS', log) == 0 then
      keep = false
    end
    local n = tonumber(ARGV[i])
    i = i + 1
    for f = 1, n do
      if keep then redis.call('HSET', ctr, ARGV[i], ARGV[i + 1]) end
      i = i + 2
    end
  end
end
return lost
";

/// A connection to the store for one identity.
#[derive(Clone)]
pub struct Store {
    con: ConnectionManager,
    prefix: String,
    lease_ms: u64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl Store {
    /// Connects (redis-rs reconnects by itself afterwards). A request that gets no answer
    /// within half the lease (at least `timeout`) fails and is retried by its caller; the
    /// replies that wait for a write have their own, shorter limit.
    pub async fn connect(
        url: &str,
        identity: &str,
        lease: Duration,
        timeout: Duration,
    ) -> Result<Self, StoreError> {
        let client = redis::Client::open(url)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_response_timeout(Some((lease / 2).max(timeout)))
            .set_connection_timeout(Some(timeout.max(Duration::from_millis(500))))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let con = client.get_connection_manager_with_config(config).await?;
        Ok(Self {
            con,
            prefix: format!("srtp-relay:{{{identity}}}:"),
            lease_ms: lease.as_millis() as u64,
        })
    }

    /// Takes the lease if nobody holds it.
    pub async fn acquire(&self) -> Result<Option<Acquired>, StoreError> {
        let (epoch, clean): (u64, u8) = Script::new(ACQUIRE)
            .arg(&self.prefix)
            .arg(self.lease_ms)
            .invoke_async(&mut self.con.clone())
            .await?;
        Ok((epoch > 0).then_some(Acquired {
            epoch,
            clean: clean == 1,
        }))
    }

    /// Renews the lease of `epoch`.
    pub async fn renew(&self, epoch: u64) -> Result<Written, StoreError> {
        let r: i64 = Script::new(RENEW)
            .arg(&self.prefix)
            .arg(epoch)
            .arg(self.lease_ms)
            .invoke_async(&mut self.con.clone())
            .await?;
        Ok(match r {
            1 => Written::Done,
            2 => Written::Lost,
            _ => Written::Fenced,
        })
    }

    /// Releases the lease of `epoch`, marking it clean (exact counters were flushed).
    pub async fn release(&self, epoch: u64) -> Result<Written, StoreError> {
        let r: i64 = Script::new(RELEASE)
            .arg(&self.prefix)
            .arg(epoch)
            .invoke_async(&mut self.con.clone())
            .await?;
        Ok(if r == 1 {
            Written::Done
        } else {
            Written::Fenced
        })
    }

    /// Writes a batch in one script call, under `epoch`.
    pub async fn write(&self, epoch: u64, ops: &[Op]) -> Result<Written, StoreError> {
        let script = Script::new(WRITE);
        let mut inv = script.prepare_invoke();
        inv.arg(&self.prefix)
            .arg(epoch)
            .arg(self.lease_ms)
            .arg(ops.len());
        for op in ops {
            match op {
                Op::Forget { call_id } => {
                    inv.arg(call_id.as_bytes()).arg("forget");
                }
                Op::Put {
                    call_id,
                    entry,
                    counters,
                } => {
                    inv.arg(call_id.as_bytes());
                    match entry {
                        Some((n, sealed)) => {
                            inv.arg("put").arg(*n).arg(sealed.as_slice());
                        }
                        None => {
                            inv.arg("counters");
                        }
                    }
                    inv.arg(counters.len());
                    for (f, v) in counters {
                        inv.arg(f.as_str()).arg(v.as_str());
                    }
                }
            }
        }
        let r: i64 = inv.invoke_async(&mut self.con.clone()).await?;
        Ok(match r {
            1 => Written::Done,
            2 => Written::Lost,
            _ => Written::Fenced,
        })
    }

    /// Reads every call of the identity (a takeover or a restart).
    pub async fn load(&self) -> Result<Vec<StoredCall>, StoreError> {
        let mut con = self.con.clone();
        let ids: Vec<Vec<u8>> = con.smembers(format!("{}calls", self.prefix)).await?;
        let mut calls = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(64) {
            let mut pipe = redis::pipe();
            for id in chunk {
                let mut log = format!("{}log:", self.prefix).into_bytes();
                log.extend_from_slice(id);
                let mut ctr = format!("{}ctr:", self.prefix).into_bytes();
                ctr.extend_from_slice(id);
                pipe.hgetall(log).hgetall(ctr);
            }
            type Pairs = Vec<(Vec<u8>, Vec<u8>)>;
            let replies: Vec<Pairs> = pipe.query_async(&mut con).await?;
            for (id, pair) in chunk.iter().zip(replies.chunks(2)) {
                let Ok(call_id) = String::from_utf8(id.clone()) else {
                    continue;
                };
                let mut entries: Vec<(u32, Vec<u8>)> = pair[0]
                    .iter()
                    .filter_map(|(n, v)| {
                        Some((std::str::from_utf8(n).ok()?.parse().ok()?, v.clone()))
                    })
                    .collect();
                entries.sort_by_key(|(n, _)| *n);
                let counters = pair[1]
                    .iter()
                    .filter_map(|(f, v)| {
                        Some((
                            String::from_utf8(f.clone()).ok()?,
                            String::from_utf8(v.clone()).ok()?,
                        ))
                    })
                    .collect();
                calls.push(StoredCall {
                    call_id,
                    entries,
                    counters,
                });
            }
        }
        Ok(calls)
    }
}
