"""The ``pulse`` command line: the daemon and --check (pulse.py), the client commands (client.py), sync."""
