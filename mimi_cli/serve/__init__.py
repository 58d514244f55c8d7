"""`mimi serve`: many live streams through one batched codec, over WebSockets (docs/serve.md)."""
