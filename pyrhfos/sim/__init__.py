"""A deterministic virtual-time simulation of a pulse pair: two real Daemon objects over a simulated
network, kernel address table and services; what `pulse simulate` and the schedule search run.

clock: virtual-time event loops; network: paths between the nodes; kernel: VIPs and their leases;
node: one Daemon on simulated parts; timeline: the administrator's event file; world: all of it.
"""
