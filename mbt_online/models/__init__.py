"""Where a student comes from: hub ids, pretrained fetch, the user-level cache root."""
