"""The archive: sealed segments in an object store, restore, and followers (issue 12).

A layer of its own above ``log``: it uses the Wal's public methods and documented hooks,
the pure ``format`` layer to check what it downloads, and never a private name.
"""
