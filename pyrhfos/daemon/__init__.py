"""The running pulse: the asyncio shell around the core (shell), its beat link, services, probe
monitor, control socket, status, metrics and start-up checks, one module each."""
