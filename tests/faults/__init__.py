"""The fault-injection suite (issue 19): a run killed, starved of disk, refused, raced, served by a
failing teacher or fed broken data, each fault happening in a separate process as it would for
real, and each run afterwards ending exactly where an uninterrupted one ends."""
