"""History: Binance's public archives (data.binance.vision) downloaded, verified and checked.

layout.py says where a file lives (remote and local), download.py fetches and verifies,
checksums.py reads `.CHECKSUM` files, manifest.py remembers what is verified, continuity.py
lists trade-id gaps in the archive, rest_fill.py covers the recent hours not archived yet,
commands.py is the `ticklens history` command group.
"""
