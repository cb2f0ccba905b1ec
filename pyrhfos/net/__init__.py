"""Adapters to the kernel and the outside, one resource per module: VIPs (vip), gratuitous ARP (arp),
service probes (probe), start/stop commands (commands), this host's addresses and interfaces (host)."""
