"""The local Binance-compatible feed (`ticklens feed`), for demos, tests and benchmarks.

A WebSocket server on 127.0.0.1 that speaks Binance's routed paths and
wrapping (`/market/stream?streams=…` combined and `/market/ws/<stream>` raw for
trades, `/public/…` for the book streams, and the legacy `/stream`, `/ws`). It
replays recorded files (our readers in `ticklens.ingest`: WS recordings and
archive CSVs) paced by trade time × speed, or simulates a market for any
symbols. Recordings with book streams are served as `bookTicker` and
`depth@…ms` streams, and `GET /fapi/v1/depth` answers from the feed's own book
at the replay position. It can misbehave on request (drop connections, skip id
ranges, resend already sent trades, inject malformed messages, drop depth
events, fail or stale snapshots) so the client's recovery paths are tested
against a real socket.

Modules: the pure "what to send next" part — `tape` (the input), `books` (the
recorded depth chains and the feed's book along them), `simulator`, `timeline`
(pacing), `session` (rendering, subscriptions, routing, faults), `rest` (the
snapshot endpoint and the book ground truth) — then `server` (the picows server
that only moves bytes) and `cli`. The whole input is held in memory (recordings
are small; a benchmark uses `--simulate`).

Stream types: a client asking `@aggTrade` of data recorded as plain trades
gets each trade as an aggTrade with a = f = l = t, and one asking `@trade` of
aggTrade data gets each aggTrade as one trade with t = a (Binance itself
would send the underlying trades; we do not have them).

Control over plain HTTP on the same port (tests): `GET /control/stats`
(JSON counters), `GET /control/drop` (drop every connection now),
`GET /control/book` (the feed's book: ground truth), `GET /control/faults`
(arm book faults). Per connection, query parameters override the command
line: `drop_after`, `malformed_every`, `resend`, `depth_drop_every`,
`depth_drop_count`, e.g. `/market/stream?streams=…&drop_after=500`.
See docs/feed.md.
"""
