"""pyrhfos: Red Hat Piranha's pulse/fos failover daemon, reimplemented in Python."""

__version__ = "0.1.0"
