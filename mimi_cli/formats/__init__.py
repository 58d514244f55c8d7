"""Bytes and files: audio in, token shards and stream framing out. Never the model."""
