"""Test assets that must be importable as a package (TFDS builders live inside a package)."""
