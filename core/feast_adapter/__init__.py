"""The one place that touches Feast internals.

Feast's public API does not expose everything the platform needs: the bytes its online
stores hold (entity keys, murmur3 field names, ``_ts:<view>``), the engine hooks a custom
batch engine overrides, the arrow-to-protobuf conversion, Redis connection parsing, the raw
registry proto and on-demand views' functions. Every use of such a private name lives in
this package, so a Feast upgrade is checked here and nowhere else (a test fails if a
private Feast name appears outside it):

- :mod:`core.feast_adapter.layout`: the online layout (keys, field names) that the
  materialization engine writes and the serving reader reads.
- :mod:`core.feast_adapter.services`: feature-service resolution (one function for
  training, serving, monitoring and batch scoring) and on-demand view functions.
- :mod:`core.feast_adapter.engine`: the hooks of Feast's compute engine, store clients and
  paths, the arrow conversion and the registry proto.
- :mod:`core.feast_adapter.selfcheck`: encodes a sample row through Feast's own write path
  and compares the bytes with ours; on a difference the caller falls back to Feast.

Nothing here imports Feast at import time except :mod:`~core.feast_adapter.engine`, which
only the engine and command bodies import.
"""
