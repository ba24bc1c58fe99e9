"""The store: run identity and the SQLite file that holds runs, problems, samples, verdicts and traces.

Run identity
------------
A run is named by a hash of its :class:`RunSpec` (``run_id``): asking for a spec that is already
stored extends that run instead of starting a new one. What is part of the identity, because it
changes what a sample is:

* the model: the backend's identity, which carries the model file's checksum (or the served
  model's name), so another quantisation is another run;
* the task spec: task name, data source, prompt template, system prompt, few-shot examples, and
  the verifier the task declares;
* every sampling parameter: temperature, top-p, top-k, min-p, max_tokens, the stop sequences and
  the base seed.

What is not, because it changes how many samples there are or how they are drawn, not what one is:
the number of samples (more samples extend a run), the problem subset (``--limit``, ``--ids``),
the batch size, concurrency and number of processes, the executor, replicas, and an adaptive rule
that decides when to stop drawing. Whoever adds a field to the spec must keep existing ids: a new
field is left out of the hash while it has the value that reproduces what earlier releases did, and
``tests/test_store_migrations.py`` pins the ids of fixed specs. System runs (``ponder run``) name
their system's config, seed and resolved models in ``model`` (see :mod:`ponder.runs`).

The file
--------
The schema is versioned (``PRAGMA user_version``) and upgraded in place on open, in one
transaction; a file from a newer Ponder is refused. Each problem's exact prompt is stored with it
(runs stored before that have none; export rebuilds theirs). Processes sampling the same run
cooperate through claims on sample indices, see :meth:`Store.claim`. Adaptive sampling records where
and why it stopped each problem (:class:`AdaptiveStop`, :meth:`Store.stops`). Model completions kept
for reuse across systems (the generation cache of :mod:`ponder.systems`) live in their own table, keyed
by what was asked (:meth:`Store.generations`, :meth:`Store.add_generations`).
"""

from ponder.store._migrations import SCHEMA_VERSION
from ponder.store._owners import HEARTBEAT_S, LEASE_S, Owner
from ponder.store._spec import RunSpec, request_seed, run_spec
from ponder.store._store import (
    DEFAULT_DB,
    AdaptiveStop,
    RunInfo,
    RunSummary,
    ServerRequest,
    Store,
    StoredGeneration,
    TraceRow,
    default_db_path,
)

__all__ = [
    "DEFAULT_DB",
    "HEARTBEAT_S",
    "LEASE_S",
    "SCHEMA_VERSION",
    "AdaptiveStop",
    "Owner",
    "RunInfo",
    "RunSpec",
    "RunSummary",
    "ServerRequest",
    "Store",
    "StoredGeneration",
    "TraceRow",
    "default_db_path",
    "request_seed",
    "run_spec",
]
