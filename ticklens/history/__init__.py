"""History: Binance's public archives (data.binance.vision) downloaded, verified and checked.

download.py fetches and verifies (where a file lives: ticklens/ingest/archive.py),
checksums.py reads `.CHECKSUM` files, manifest.py remembers what is verified, continuity.py
lists trade-id gaps in the archive, rest_fill.py covers the recent hours not archived yet,
ingest.py replays the files into the store through the flow, commands.py is the `ticklens
history` command group (verify audits the store against the klines: ticklens/domain/audit.py).
"""
