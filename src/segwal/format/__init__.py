"""Layer 0, pure: the byte layouts of segwal's files, frame scanning and file naming.

Nothing here touches a file or a clock: every function maps bytes and values to bytes and
values, so writer, reader, recovery and verify share one definition of each layout.
``docs/FORMAT.md`` specifies the same layouts byte by byte.

Internal: not part of the public API (that is what ``segwal`` itself exports) and free to
change between releases.

- ``layout``: segment header, frames, seal; CRC32C checksum; encoding and decoding.
- ``scanner``: frame verdicts over a buffer (frame, need more, torn, corrupt).
- ``naming``: file-name grammar both ways (segments, temp, index, quarantine, META, LOCK).
- ``features``: format version 2's header and frame flags; ``frames``: opaque (compressed,
  encrypted) frames encoded and decoded; ``codecs``: zstd and lz4, bounded;
  ``cipher``: the frame AEAD and the contract the key ring implements.
"""
