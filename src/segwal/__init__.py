"""segwal: a segmented write-ahead log."""
