"""The namespace lab (lab.py), a pulse pair on it (testbed.py), its client (client.py), ``make demo``.

Test and demo infrastructure, run from a checkout: not part of the installed package.
"""
