"""The pure core: the failover machine (vocab, events, machine), the beat wire format (wire) and the
reload plan (reload). No socket, clock, thread or process anywhere in it (tests/test_layout.py)."""
