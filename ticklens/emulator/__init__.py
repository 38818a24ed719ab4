"""The local Binance-compatible trade feed (`ticklens feed`), for demos, tests and benchmarks.

A WebSocket server on 127.0.0.1 that speaks Binance's routed paths and
wrapping (`/market/stream?streams=…` combined, `/market/ws/<stream>` raw, and
the legacy `/stream`, `/ws`). It replays recorded files (our readers in
`ticklens.ingest`: WS recordings and archive CSVs) paced by trade time × speed,
or simulates a market for any symbols. It can misbehave on request (drop
connections, skip id ranges, resend already sent trades, inject malformed
messages) so the client's recovery paths are tested against a real socket.

Modules: the pure "what to send next" part — `tape` (the input), `simulator`,
`timeline` (pacing), `session` (rendering, subscriptions, faults) — then `server`
(the picows server that only moves bytes) and `cli`. The whole input is held in memory (recordings are
small; a benchmark uses `--simulate`).

Stream types: a client asking `@aggTrade` of data recorded as plain trades
gets each trade as an aggTrade with a = f = l = t, and one asking `@trade` of
aggTrade data gets each aggTrade as one trade with t = a (Binance itself
would send the underlying trades; we do not have them).

Control over plain HTTP on the same port (tests): `GET /control/stats`
(JSON counters), `GET /control/drop` (drop every connection now). Per
connection, query parameters override the command line: `drop_after`,
`malformed_every`, `resend`, e.g. `/market/stream?streams=…&drop_after=500`.
"""
