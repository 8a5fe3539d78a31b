"""The stream worker's Redis side: users' states read and a batch committed, one call each.

A batch is two round trips, whatever its number of users:

* :meth:`StateStore.read`: one script reads every user's tiles, stamp and bookkeeping;
* :meth:`StateStore.commit`: one script checks that no user's stored stamp moved since it
  was read (another worker, or Feast's ``store.push``, wrote the user: the batch is
  recomputed), then writes every user's new values in Feast's layout (``EXPIRE`` as the
  store's ``key_ttl_seconds``), the batch's offline rows into the outbox, its dead letters,
  and acknowledges its entries (``XACK``). A script runs atomically: after a ``kill -9`` a
  batch is either all there, acknowledged, or not at all, and its entries are read again.

The outbox becomes Parquet parts through claims (:meth:`StateStore.claim`): a claim moves
outbox entries under a part's name, the part is written, then the claim is dropped. A
claim left by a crash is finished at start-up (its part written unless it already is), so
every offline row lands in exactly one part.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import pyarrow as pa

OFFLINE_SCHEMA = pa.schema(
    [
        ("user_id", pa.int64()),
        ("event_timestamp", pa.timestamp("us", tz="UTC")),
        ("tile_minutes", pa.list_(pa.int64())),
        ("tile_counts", pa.list_(pa.int64())),
    ]
)
# Dead letters keep at most this many of the malformed entry's fields (Lua's unpack limit).
MAX_LETTER_FIELDS = 500
_ACK_CHUNK = 1000

_READ = """#!lua
local out = {}
local n = 0
for i = 1, #KEYS do
  local values = redis.call('HMGET', KEYS[i], unpack(ARGV))
  for j = 1, #ARGV do
    n = n + 1
    out[n] = values[j]
  end
end
return out
"""

# KEYS: stream, outbox, dead-letter stream, then the users' hashes.
# ARGV: group, ttl, number of fields F, the F field names (the stamp's first), batch id,
#       outbox payload ('' for none), number of entries, entry ids, number of letters,
#       each letter as its length then its field/value pairs, then per user the expected
#       stamp ('' when none) and the F values.
_COMMIT = """#!lua
local group, ttl, nf = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local fields = {}
for j = 1, nf do fields[j] = ARGV[3 + j] end
local p = 4 + nf
local batch, payload = ARGV[p], ARGV[p + 1]
local nentries = tonumber(ARGV[p + 2])
local entries = p + 3
p = entries + nentries
local nletters = tonumber(ARGV[p])
local letters = p + 1
p = letters
for d = 1, nletters do p = p + 1 + tonumber(ARGV[p]) end
local users = p
local conflicts = {}
for i = 4, #KEYS do
  local stored = redis.call('HGET', KEYS[i], fields[1]) or ''
  if stored ~= ARGV[users + (i - 4) * (nf + 1)] then conflicts[#conflicts + 1] = i - 3 end
end
if #conflicts > 0 then return conflicts end
for i = 4, #KEYS do
  local at = users + (i - 4) * (nf + 1)
  local mapping = {}
  for j = 1, nf do
    mapping[2 * j - 1] = fields[j]
    mapping[2 * j] = ARGV[at + j]
  end
  redis.call('HSET', KEYS[i], unpack(mapping))
  if ttl > 0 then redis.call('EXPIRE', KEYS[i], ttl) end
end
if payload ~= '' then redis.call('HSET', KEYS[2], batch, payload) end
p = letters
for d = 1, nletters do
  local n = tonumber(ARGV[p])
  redis.call('XADD', KEYS[3], '*', unpack(ARGV, p + 1, p + n))
  p = p + 1 + n
end
local last = entries + nentries - 1
for first = entries, last, 1000 do
  redis.call('XACK', KEYS[1], group, unpack(ARGV, first, math.min(first + 999, last)))
end
return {}
"""

# KEYS: outbox, claims index, the claim. ARGV: the part's name, the outbox entries.
_CLAIM = """#!lua
local names, payloads = {}, {}
for i = 2, #ARGV do
  local payload = redis.call('HGET', KEYS[1], ARGV[i])
  if payload then
    redis.call('HSET', KEYS[3], ARGV[i], payload)
    redis.call('HDEL', KEYS[1], ARGV[i])
    names[#names + 1] = ARGV[i]
    payloads[#payloads + 1] = payload
  end
end
if #names > 0 then redis.call('SADD', KEYS[2], ARGV[1]) end
return {names, payloads}
"""


class UserWrite(NamedTuple):
    """One user's new online values and the stored stamp they replace (b"" when none)."""

    key: bytes
    expected_stamp: bytes
    values: tuple[bytes, ...]


class StateStore:
    """The worker's scripts on one Redis (see the module docstring).

    Args:
        redis: Client of the stream and the online store.
        stream: The stream key; ``group`` its consumer group.
        dead_letter_key: The dead-letter stream.
        outbox: Hash of offline rows committed but not yet in a Parquet part.
        fields: Hash fields of a user's state, the stamp's first.
        ttl_seconds: ``EXPIRE`` of written users (None: none).
    """

    def __init__(
        self,
        redis: Any,
        *,
        stream: str,
        group: str,
        dead_letter_key: str,
        outbox: str,
        fields: Sequence[bytes],
        ttl_seconds: int | None,
    ) -> None:
        self.redis = redis
        self.stream, self.group, self.dead_letter_key = stream, group, dead_letter_key
        self.outbox, self.claims = outbox, f"{outbox}:parts"
        self.fields = tuple(fields)
        self.ttl = int(ttl_seconds or 0)
        self._read = redis.register_script(_READ)
        self._commit = redis.register_script(_COMMIT)
        self._claim = redis.register_script(_CLAIM)

    def read(self, keys: Sequence[bytes]) -> list[list[bytes | None]]:
        """Each key's fields (None when missing), in the order of ``fields``."""
        if not keys:
            return []
        flat = self._read(keys=list(keys), args=list(self.fields))
        width = len(self.fields)
        return [flat[index : index + width] for index in range(0, len(flat), width)]

    def commit(
        self,
        *,
        batch_id: str,
        writes: Sequence[UserWrite],
        payload: bytes,
        entry_ids: Sequence[bytes],
        letters: Sequence[dict[bytes, bytes]],
    ) -> list[int]:
        """Write a batch atomically; return the positions in ``writes`` whose stamp moved.

        Nothing is written when a stamp moved (the caller re-reads and recomputes).
        """
        args: list[Any] = [self.group, self.ttl, len(self.fields), *self.fields]
        args += [batch_id, payload, len(entry_ids), *entry_ids, len(letters)]
        for letter in letters:
            pairs = [item for pair in list(letter.items())[:MAX_LETTER_FIELDS] for item in pair]
            args += [len(pairs), *pairs]
        for write in writes:
            args.append(write.expected_stamp)
            args.extend(write.values)
        keys = [self.stream, self.outbox, self.dead_letter_key, *(w.key for w in writes)]
        return [int(position) - 1 for position in self._commit(keys=keys, args=args)]

    def claim(self, part: str, names: Sequence[str]) -> list[tuple[str, bytes]]:
        """Move outbox entries under the part's claim; return those still in the outbox."""
        if not names:
            return []
        claimed, payloads = self._claim(
            keys=[self.outbox, self.claims, self.claim_key(part)], args=[part, *names]
        )
        return [(name.decode(), payload) for name, payload in zip(claimed, payloads, strict=True)]

    def claim_key(self, part: str) -> str:
        """The hash holding a claimed part's outbox entries."""
        return f"{self.claims}:{part}"

    def open_claims(self) -> dict[str, list[tuple[str, bytes]]]:
        """Claims a crashed flush left: part name to its outbox entries."""
        parts = sorted(name.decode() for name in self.redis.smembers(self.claims))
        return {
            part: sorted(
                (name.decode(), payload)
                for name, payload in self.redis.hgetall(self.claim_key(part)).items()
            )
            for part in parts
        }

    def release(self, part: str) -> None:
        """Drop a claim once its part is written."""
        with self.redis.pipeline(transaction=True) as transaction:
            transaction.delete(self.claim_key(part))
            transaction.srem(self.claims, part)
            transaction.execute()

    def outbox_names(self) -> list[str]:
        """Every outbox entry (of any worker), oldest batch first."""
        return sorted(name.decode() for name in self.redis.hkeys(self.outbox))


def ipc_bytes(table: pa.Table) -> bytes:
    """An Arrow table as one IPC stream."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def ipc_table(payload: bytes) -> pa.Table:
    """The table of :func:`ipc_bytes`."""
    return pa.ipc.open_stream(pa.py_buffer(payload)).read_all()
