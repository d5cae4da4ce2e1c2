"""Pure-Python EROFS: an uncompressed writer (from tar streams or directories) and a reader."""
