"""The embedded local audit log: a Pangea-compatible Secure Audit Log on aiohttp and SQLite.

The gateway's default upstream and the test upstream.  Modules:

* ``server``   -- :class:`~gateway.local_audit.server.LocalAuditServer`, the HTTP routes and request validation
* ``store``    -- SQLite storage, one append-only table and Merkle tree per configuration
* ``hashing``  -- record hashes and Merkle proofs exactly as pangea-sdk verifies them
* ``query``    -- the search query syntax and time ranges
* ``faults``   -- fault injection (latency, 5xx, 429, outage, 202)
* ``settings`` -- pydantic configuration models
* ``cli``      -- ``audit-gateway local-audit serve``

Nothing is imported here so that reading the settings does not load the server.
"""
